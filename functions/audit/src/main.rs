//! `audit`: GET /admin/audit-logs.

use shared::{api, app::Secrets};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(Secrets::Required, api::audit::handle).await
}
