//! Who is calling: the bearer access token, checked against the live session, and the CSRF
//! rule for browser requests.

use lambda_http::Request;
use subtle::ConstantTimeEq;

use super::{Role, User, jwt::AccessClaims, session::SessionFamily};
use crate::{
    http::browser::{is_unsafe, origin_allowed},
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

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A browser request (it has an `Origin`) that changes state must come from an allowed
/// origin (which [`crate::http::browser`] checked for every route already) and prove it
/// read the CSRF token issued with the access token.
fn check_csrf(app: &Services, req: &Request, claims: &AccessClaims) -> Result<(), AccountError> {
    if !is_unsafe(req.method()) {
        return Ok(());
    }
    let Some(origin) = req.headers().get("origin") else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| AccountError::CsrfFailed)?;
    if !origin_allowed(origin, &app.settings().allowed_origins) {
        return Err(AccountError::CsrfFailed);
    }
    let presented = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(claims.csrf.as_bytes())) {
        return Err(AccountError::CsrfFailed);
    }
    Ok(())
}

pub async fn authenticate(app: &IdentityServices, req: &Request) -> Result<Principal, AccountError> {
    let token = bearer(req).ok_or(AccountError::Unauthorized)?;
    let claims = app.keys().await?.verify(token, app.settings()).ok_or(AccountError::Unauthorized)?;
    check_csrf(app, req, &claims)?;
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
