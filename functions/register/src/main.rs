//! `register`: POST /auth/register.

use shared::{api, secrets::Part};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(&[Part::Captcha, Part::Outbox], api::register::handle).await
}
