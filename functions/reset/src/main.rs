//! `reset`: POST /auth/forgot-password, POST /auth/reset-password.

use shared::{api, app::Secrets};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(Secrets::Required, api::reset::handle).await
}
