//! `register`: POST /auth/register.

use shared::{api, app::Secrets};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(Secrets::Required, api::register::handle).await
}
