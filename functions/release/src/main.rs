//! `release`: POST /payments/{payment_id}/release.

use shared::{api, secrets::Part};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(&[Part::PublicKeys, Part::Stripe, Part::Outbox], api::pay::handle_release).await
}
