//! `login`: POST /auth/login, /auth/refresh, /auth/logout; GET /auth/me,
//! /.well-known/jwks.json, /.well-known/openid-configuration.

// Its handler's future (login, MFA, refresh, each with their secrets) nests deeper than the
// compiler's default limit of 128 when a debug build computes its layout.
#![recursion_limit = "256"]

use shared::{api, secrets::Part};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(
        &[Part::PublicKeys, Part::Signing, Part::Mfa, Part::Captcha, Part::Outbox],
        api::login::handle,
    )
    .await
}
