//! Who is calling: an access token's claims, checked against the live session. Reading the
//! token off a request, and the CSRF rule for browsers, are the edge's (`http::auth`).

use super::{Role, User, jwt::AccessClaims, session::SessionFamily};
use crate::{
    identity::{AccountError, IdentityServices},
    services::Services,
};

/// An authenticated caller. `user` is read fresh, so role changes and revocations apply
/// to live access tokens immediately.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub claims: AccessClaims,
}

impl Principal {
    pub fn user_id(&self) -> &str {
        &self.user.user_id
    }
    pub fn org_id(&self) -> &str {
        &self.user.org_id
    }
    pub fn role(&self) -> Role {
        self.user.role
    }
    pub fn session_id(&self) -> &str {
        &self.claims.sid
    }

    pub fn require_admin(&self) -> Result<(), AccountError> {
        if self.role() == Role::Admin { Ok(()) } else { Err(AccountError::Forbidden) }
    }
}

/// The claims of a bearer access token this deployment signed and that has not expired;
/// [`AccountError::Unauthorized`] otherwise. Says nothing yet of the session.
pub async fn verify(app: &IdentityServices, token: &str) -> Result<AccessClaims, AccountError> {
    app.keys().await?.verify(token, app.settings()).ok_or(AccountError::Unauthorized)
}

/// The caller whose verified `claims` these are, while their session lives and their
/// account is not scheduled for deletion.
pub async fn principal(app: &Services, claims: AccessClaims) -> Result<Principal, AccountError> {
    let table = app.table();
    let (pk, sk) = User::key(&claims.sub);
    let family_sk = SessionFamily::sort_key(&claims.sid);
    let (user, family) = tokio::try_join!(table.get::<User>(&pk, &sk), table.get::<SessionFamily>(&pk, &family_sk))
        .map_err(AccountError::internal)?;
    match (user, family) {
        (Some(user), Some(family))
            // The family decides, not the token's `sv`: turning MFA off moves the user's
            // version and the caller's own family with it, so that one session lives on.
            if family.is_live(&user) && user.deletion_scheduled_at.is_none() =>
        {
            Ok(Principal { user, claims })
        }
        _ => Err(AccountError::Unauthorized),
    }
}
