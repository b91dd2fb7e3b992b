//! `account`: DELETE /auth/me, POST /auth/me/restore, POST /orgs/invitations,
//! PATCH /orgs/members/{user_id}.

use shared::{api, app::Secrets};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(Secrets::Required, api::account::handle).await
}
