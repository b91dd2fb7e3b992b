//! `verify`: POST /auth/verify-email, POST /auth/resend-verification.

use shared::{api, secrets::Part};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(&[Part::Outbox], api::verify::handle).await
}
