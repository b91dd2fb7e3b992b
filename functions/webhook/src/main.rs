//! `webhook`: POST /stripe/webhook, on a Lambda function URL.

use shared::{api, secrets::Part};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(&[Part::Webhook, Part::Stripe], api::webhook::handle).await
}
