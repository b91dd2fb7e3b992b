//! `audit`: GET /admin/audit-logs.

use shared::{api, secrets::Part};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(&[Part::PublicKeys, Part::Cursor], api::audit::handle).await
}
