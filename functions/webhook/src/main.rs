//! `webhook`: POST /stripe/webhook, on a Lambda function URL.

use shared::{api, app::Secrets};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(Secrets::Required, api::webhook::handle).await
}
