//! `notifications`: POST/GET /notifications/devices, DELETE /notifications/devices/{device_id},
//! GET/PUT /notifications/preferences, POST /notifications/unsubscribe.

use shared::{api, secrets::Part};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(&[Part::PublicKeys, Part::Unsubscribe], api::notifications::handle).await
}
