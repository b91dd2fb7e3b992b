//! `reset`: POST /auth/forgot-password, POST /auth/reset-password.

use shared::{api, secrets::Part};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(&[Part::Captcha, Part::Outbox], api::reset::handle).await
}
