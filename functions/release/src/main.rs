//! `release`: POST /payments/{payment_id}/release.

use shared::{api, app::Secrets};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(Secrets::RequiredWithStripe, api::pay::handle_release).await
}
