//! `pay`: providers, payments and refunds.

use shared::{api, secrets::Part};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(
        &[Part::PublicKeys, Part::Stripe, Part::Idempotency, Part::Cursor, Part::Outbox],
        api::pay::handle,
    )
    .await
}
