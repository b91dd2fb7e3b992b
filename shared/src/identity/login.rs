//! Password login with per-account progressive lockout.
//!
//! Unknown emails and wrong passwords answer the same 401 after the same Argon2 work (a
//! dummy hash is verified when there is no user). Only a correct password learns that the
//! address is unverified. After [`LOCK_AFTER`] consecutive failures an account is locked
//! for 30 s, doubling with each further failure up to [`MAX_LOCK_SECONDS`]; every lock
//! expires by itself and a success clears the count, so an attacker can slow a user down
//! but never lock them out for good. The counter item expires a day after the last failure.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Email, Password, PasswordHash, User, session};
use crate::{
    App,
    audit::{AuditEntry, AuditStatus},
    http::{ApiError, RequestMeta},
    rate_limit::Rule,
    store::{Change, StoreError, av, expiry, keys},
    time,
};

pub const LOCK_AFTER: u32 = 5;
pub const FIRST_LOCK_SECONDS: i64 = 30;
pub const MAX_LOCK_SECONDS: i64 = 900;
const LOCKOUT_SK: &str = "LOCKOUT";
const FAILURE_MEMORY_SECONDS: i64 = 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lockout {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    failures: u32,
    #[serde(default)]
    locked_until: i64,
    #[serde(default)]
    last_failure: i64,
    #[serde(default)]
    ttl: i64,
}

/// How long the `failures`-th consecutive failure locks the account for.
pub fn lock_seconds(failures: u32) -> Option<i64> {
    let over = failures.checked_sub(LOCK_AFTER)?;
    Some(FIRST_LOCK_SECONDS.saturating_mul(1i64 << over.min(20)).min(MAX_LOCK_SECONDS))
}

#[tracing::instrument(skip_all)]
pub async fn login(
    app: &App,
    email: &Email,
    password: &str,
    meta: &RequestMeta,
) -> Result<session::IssuedTokens, ApiError> {
    app.rate_limit(Rule::Login, meta.client_key()).await?;
    app.rate_limit(Rule::LoginAccount, email.as_str()).await?;
    let table = app.table();
    let user = User::find_by_email(table, email.as_str()).await?;
    // Unknown addresses take the same path as known ones, against a stand-in subject: the
    // same reads, the same Argon2 work, the same failure counting and lockout. Neither the
    // timing nor a lockout tells an attacker whether the address has an account.
    let subject = match &user {
        Some(user) => user.user_id.clone(),
        None => {
            let stand_in = format!("unknown-{}", hex::encode(&Sha256::digest(email.as_str().as_bytes())[..16]));
            User::find(table, &stand_in).await?;
            stand_in
        }
    };
    let now = time::now().unix_timestamp();
    let lockout = table.get::<Lockout>(&keys::user(&subject), LOCKOUT_SK).await?;
    if let Some(lockout) = lockout.filter(|l| l.locked_until > now) {
        return Err(ApiError::RateLimited { retry_after_seconds: (lockout.locked_until - now) as u64 });
    }

    let stored = user.as_ref().map_or_else(PasswordHash::dummy, |u| PasswordHash::from_stored(&u.password_hash));
    let matches = stored.verify(Password::presented(password)).await.map_err(ApiError::internal)?;
    let user = match user {
        Some(user) if matches => user,
        user => {
            record_failure(app, &subject, user.as_ref(), now, meta).await?;
            return Err(ApiError::InvalidCredentials);
        }
    };

    clear_failures(app, &user).await;
    if !user.email_verified {
        let entry = AuditEntry::new("auth.login", AuditStatus::Failure, &user.org_id, meta)
            .actor(&user.user_id)
            .details(json!({ "reason": "email_not_verified" }));
        app.audit().record_or_log(&entry).await;
        return Err(ApiError::EmailNotVerified);
    }
    if user.deletion_scheduled_at.is_some() {
        return Err(ApiError::ForbiddenBecause(
            "this account is scheduled for deletion; restore it with POST /auth/me/restore",
        ));
    }
    if stored.needs_rehash() {
        rehash(app, &user, password).await;
    }
    let entry = AuditEntry::new("auth.login", AuditStatus::Success, &user.org_id, meta).actor(&user.user_id);
    let audit = app.audit().put(&entry).map_err(ApiError::internal)?;
    let tokens = session::start(app, &user, vec![audit]).await?;
    tracing::info!(user_id = %user.user_id, "login");
    Ok(tokens)
}

/// Counts a failed attempt against `subject` (a user id, or the stand-in of an unknown
/// address), locking it once the count reaches [`LOCK_AFTER`]. Real users' failures are
/// audited, concurrently with the count so both paths cost about the same.
async fn record_failure(
    app: &App,
    subject: &str,
    user: Option<&User>,
    now: i64,
    meta: &RequestMeta,
) -> Result<(), ApiError> {
    let audit_failure = async {
        if let Some(user) = user {
            let entry = AuditEntry::new("auth.login", AuditStatus::Failure, &user.org_id, meta)
                .target(&user.user_id)
                .details(json!({ "reason": "invalid_credentials" }));
            app.audit().record_or_log(&entry).await;
        }
    };
    let (failures, ()) = tokio::join!(count_failure(app, subject, now), audit_failure);
    let Some(seconds) = lock_seconds(failures?) else {
        return Ok(());
    };
    let pk = keys::user(subject);
    let table = app.table();
    let lock = table.update(
        Change::new(&pk, LOCKOUT_SK).update("SET locked_until = :until").value(":until", av::n(now + seconds)),
    )?;
    match user {
        // The lock and its audit entry commit together.
        Some(user) => {
            let entry = AuditEntry::new("auth.lockout", AuditStatus::Success, &user.org_id, meta)
                .target(&user.user_id)
                .details(json!({ "locked_seconds": seconds }));
            table.transact(vec![lock, app.audit().put(&entry)?]).await?;
            tracing::warn!(user_id = %user.user_id, seconds, "account locked after repeated failures");
        }
        None => table.transact(vec![lock]).await?,
    }
    Ok(())
}

/// Adds one to the subject's consecutive failures and returns the count; a count whose last
/// failure is more than a day old starts over.
async fn count_failure(app: &App, subject: &str, now: i64) -> Result<u32, ApiError> {
    let table = app.table();
    let pk = keys::user(subject);
    let ttl = now + FAILURE_MEMORY_SECONDS;
    let item = table
        .update_item(
            Change::new(&pk, LOCKOUT_SK)
                .update(
                    "SET failures = if_not_exists(failures, :zero) + :one, last_failure = :now, #ttl = :ttl, \
                     expiry_shard = :shard",
                )
                .condition("attribute_not_exists(last_failure) OR last_failure > :forget_before")
                .value(":zero", av::n(0))
                .value(":one", av::n(1))
                .value(":now", av::n(now))
                .value(":ttl", av::n(ttl))
                .value(":shard", av::s(expiry::shard_of(&pk)))
                .value(":forget_before", av::n(now - FAILURE_MEMORY_SECONDS))
                .name("#ttl", "ttl"),
        )
        .await;
    match item {
        Ok(item) => Ok(serde_dynamo::from_item::<_, Lockout>(item).map_err(ApiError::internal)?.failures),
        Err(StoreError::ConditionFailed) => {
            let fresh = Lockout { pk, sk: LOCKOUT_SK.to_owned(), failures: 1, locked_until: 0, last_failure: now, ttl };
            table.put_item(&fresh).await?;
            Ok(1)
        }
        Err(other) => Err(other.into()),
    }
}

async fn clear_failures(app: &App, user: &User) {
    let table = app.table();
    let pk = keys::user(&user.user_id);
    if let Err(error) = table.delete_item(Change::new(&pk, LOCKOUT_SK)).await {
        tracing::warn!(%error, "could not clear login failures");
    }
}

/// Replaces a hash made with outdated parameters. Best effort: the login goes on either way,
/// and the condition keeps a concurrent password change from being overwritten.
async fn rehash(app: &App, user: &User, password: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_grows_and_is_capped() {
        assert_eq!(lock_seconds(4), None);
        assert_eq!(lock_seconds(5), Some(30));
        assert_eq!(lock_seconds(6), Some(60));
        assert_eq!(lock_seconds(9), Some(480));
        assert_eq!(lock_seconds(10), Some(900));
        assert_eq!(lock_seconds(1000), Some(900));
    }
}
