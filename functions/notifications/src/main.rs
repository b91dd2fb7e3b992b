//! `notifications`: POST/GET /notifications/devices, DELETE /notifications/devices/{device_id},
//! GET/PUT /notifications/preferences, POST /notifications/unsubscribe.

use shared::{api, app::Secrets};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(Secrets::Required, api::notifications::handle).await
}
