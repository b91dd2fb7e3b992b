//! `login`: POST /auth/login, /auth/refresh, /auth/logout; GET /auth/me,
//! /.well-known/jwks.json, /.well-known/openid-configuration.

use shared::{api, app::Secrets};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(Secrets::RequiredToSign, api::login::handle).await
}
