//! `account`: DELETE /auth/me, POST /auth/me/restore, POST /orgs/invitations,
//! PATCH /orgs/members/{user_id}.

use shared::{api, secrets::Part};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(&[Part::PublicKeys, Part::Mfa, Part::Captcha, Part::Outbox], api::account::handle).await
}
