//! `verify`: POST /auth/verify-email, POST /auth/resend-verification.

use shared::{api, app::Secrets};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(Secrets::Required, api::verify::handle).await
}
