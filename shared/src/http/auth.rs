//! Who is calling, from the request: the bearer access token (verified by the account
//! code), the CSRF rule for browser requests, then the live session behind it.

use lambda_http::Request;
use subtle::ConstantTimeEq;

use super::browser::{is_unsafe, origin_allowed};
use crate::{
    identity::{
        AccountError, IdentityServices,
        auth::{self, Principal},
        jwt::AccessClaims,
    },
    services::Services,
};

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A browser request (it has an `Origin`) that changes state must come from an allowed
/// origin (which [`super::browser`] checked for every route already) and prove it read the
/// CSRF token issued with the access token.
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

/// The caller of `req`: 401 without a valid token or a live session, 403 for a browser
/// request that fails the CSRF rule.
pub async fn authenticate(app: &IdentityServices, req: &Request) -> Result<Principal, AccountError> {
    let token = bearer(req).ok_or(AccountError::Unauthorized)?;
    let claims = auth::verify(app, token).await?;
    check_csrf(app, req, &claims)?;
    auth::principal(app, claims).await
}
