//! Password login. Unknown emails and wrong passwords answer the same 401 after the same
//! Argon2 work (a dummy hash is verified when there is no user); only a correct password
//! learns that the address is unverified. Attempts are counted, and locked out, per account
//! and client address before the password is checked ([`super::attempts`]).

use serde_json::json;

use super::{Email, Password, PasswordHash, User, attempts, mfa, session};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::AccountError,
    identity::IdentityServices,
    services::Services,
    store::{Change, av},
};

pub use super::attempts::{FIRST_LOCK_SECONDS, LOCK_AFTER, MAX_LOCK_SECONDS, lock_seconds};

/// What a right password earns: a session, or with MFA on, the way to the second step.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum LoginOutcome {
    Tokens(session::IssuedTokens),
    MfaRequired(mfa::Challenge),
}

#[tracing::instrument(skip_all)]
pub async fn login(
    app: &IdentityServices,
    email: &Email,
    password: &str,
    captcha_token: Option<&str>,
    meta: &RequestMeta,
) -> Result<LoginOutcome, AccountError> {
    let (user, attempt) = attempts::begin(app, email, captcha_token, meta).await?;
    let stored = user.as_ref().map_or_else(PasswordHash::dummy, |u| PasswordHash::from_stored(&u.password_hash));
    let matches = stored.verify(Password::presented(password)).await.map_err(AccountError::internal)?;
    let user = match user {
        Some(user) if matches => user,
        user => {
            attempt.failed(app, user.as_ref(), "auth.login", meta).await;
            return Err(AccountError::InvalidCredentials);
        }
    };
    attempt.succeeded(app).await;
    if !user.email_verified {
        let entry = AuditEntry::new("auth.login", AuditStatus::Failure, &user.org_id, meta)
            .actor(&user.user_id)
            .details(json!({ "reason": "email_not_verified" }));
        app.audit().record_or_log(&entry).await;
        return Err(AccountError::EmailNotVerified);
    }
    if user.deletion_scheduled_at.is_some() {
        return Err(AccountError::ForbiddenBecause(
            "this account is scheduled for deletion; restore it with POST /auth/me/restore",
        ));
    }
    if stored.needs_rehash() {
        rehash(app, &user, password).await;
    }
    if user.mfa_enabled {
        // The password is known to whoever this is: worth a line in the log either way.
        let entry = AuditEntry::new("auth.login_password", AuditStatus::Success, &user.org_id, meta)
            .actor(&user.user_id)
            .details(json!({ "next": "mfa" }));
        app.audit().record_or_log(&entry).await;
        return Ok(LoginOutcome::MfaRequired(mfa::challenge(app, &user).await?));
    }
    let entry = AuditEntry::new("auth.login", AuditStatus::Success, &user.org_id, meta).actor(&user.user_id);
    let audit = app.audit().put(&entry).map_err(AccountError::internal)?;
    let tokens = session::start(app, &user, vec![audit]).await?;
    tracing::info!(user_id = %user.user_id, "login");
    Ok(LoginOutcome::Tokens(tokens))
}

/// Replaces a hash made with outdated parameters. Best effort: the login goes on either way,
/// and the condition keeps a concurrent password change from being overwritten.
async fn rehash(app: &Services, user: &User, password: &str) {
    let fresh = match PasswordHash::compute(Password::presented(password)).await {
        Ok(hash) => hash,
        Err(error) => return tracing::warn!(%error, "rehash failed"),
    };
    let (pk, sk) = User::key(&user.user_id);
    let result = app
        .table()
        .update_item(
            Change::new(&pk, &sk)
                .update("SET password_hash = :new")
                .condition("password_hash = :old")
                .value(":new", av::s(fresh.as_str()))
                .value(":old", av::s(&user.password_hash)),
        )
        .await;
    match result {
        Ok(_) => tracing::info!(user_id = %user.user_id, "password rehashed with current parameters"),
        Err(error) => tracing::warn!(%error, "rehash not stored"),
    }
}
