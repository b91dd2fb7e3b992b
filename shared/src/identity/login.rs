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

use super::{Email, EmailGuard, Password, PasswordHash, User, session};
use crate::{
    App,
    audit::{AuditEntry, AuditStatus},
    http::{ApiError, RequestMeta},
    rate_limit::Rule,
    store::{Change, StoreError, av, keys},
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
}

/// How long the `failures`-th consecutive failure locks the account for.
pub fn lock_seconds(failures: u32) -> Option<i64> {
    let over = failures.checked_sub(LOCK_AFTER)?;
    Some(FIRST_LOCK_SECONDS.saturating_mul(1i64 << over.min(20)).min(MAX_LOCK_SECONDS))
}

#[tracing::instrument(skip_all)]
pub async fn login(app: &App, email: &Email, password: &str, meta: &RequestMeta) -> Result<session::IssuedTokens, ApiError> {
    app.rate_limit(Rule::Login, meta.client_key()).await?;
    app.rate_limit(Rule::LoginAccount, email.as_str()).await?;
    let table = app.table();
    let user = match table.get::<EmailGuard>(&keys::email(email.as_str()), keys::EMAIL).await.map_err(ApiError::internal)? {
        Some(guard) => {
            let (pk, sk) = User::key(&guard.user_id);
            table.get::<User>(&pk, &sk).await.map_err(ApiError::internal)?
        }
        None => None,
    };
    let now = time::now().unix_timestamp();
    if let Some(user) = &user {
        let lockout = table.get::<Lockout>(&keys::user(&user.user_id), LOCKOUT_SK).await.map_err(ApiError::internal)?;
        if let Some(lockout) = lockout.filter(|l| l.locked_until > now) {
            return Err(ApiError::RateLimited { retry_after_seconds: (lockout.locked_until - now) as u64 });
        }
    }

    let stored = user.as_ref().map_or_else(PasswordHash::dummy, |u| PasswordHash::from_stored(&u.password_hash));
    let matches = stored.verify(Password::presented(password)).await.map_err(ApiError::internal)?;
    let Some(user) = user else {
        return Err(ApiError::InvalidCredentials);
    };
    if !matches {
        record_failure(app, &user, now, meta).await?;
        return Err(ApiError::InvalidCredentials);
    }

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

async fn record_failure(app: &App, user: &User, now: i64, meta: &RequestMeta) -> Result<(), ApiError> {
    let table = app.table();
    let pk = keys::user(&user.user_id);
    let ttl = now + FAILURE_MEMORY_SECONDS;
    // Count the failure atomically; a count older than a day starts over.
    let item = table
        .update_item(
            Change::new(&pk, LOCKOUT_SK)
                .update("SET failures = if_not_exists(failures, :zero) + :one, last_failure = :now, #ttl = :ttl")
                .condition("attribute_not_exists(last_failure) OR last_failure > :forget_before")
                .value(":zero", av::n(0))
                .value(":one", av::n(1))
                .value(":now", av::n(now))
                .value(":ttl", av::n(ttl))
                .value(":forget_before", av::n(now - FAILURE_MEMORY_SECONDS))
                .name("#ttl", "ttl"),
        )
        .await;
    let failures = match item {
        Ok(item) => serde_dynamo::from_item::<_, Lockout>(item).map_err(ApiError::internal)?.failures,
        Err(StoreError::ConditionFailed) => {
            let fresh = Lockout { pk: pk.clone(), sk: LOCKOUT_SK.to_owned(), failures: 1, locked_until: 0, last_failure: now };
            let mut item = serde_dynamo::to_item::<_, crate::store::Item>(&fresh).map_err(ApiError::internal)?;
            item.insert("ttl".into(), av::n(ttl));
            table.client().put_item().table_name(table.name()).set_item(Some(item)).send().await.map_err(ApiError::internal)?;
            1
        }
        Err(other) => return Err(ApiError::internal(other)),
    };
    let entry = AuditEntry::new("auth.login", AuditStatus::Failure, &user.org_id, meta)
        .target(&user.user_id)
        .details(json!({ "reason": "invalid_credentials", "consecutive_failures": failures }));
    app.audit().record_or_log(&entry).await;
    if let Some(seconds) = lock_seconds(failures) {
        table
            .update_item(Change::new(&pk, LOCKOUT_SK).update("SET locked_until = :until").value(":until", av::n(now + seconds)))
            .await
            .map_err(ApiError::internal)?;
        let entry = AuditEntry::new("auth.lockout", AuditStatus::Success, &user.org_id, meta)
            .target(&user.user_id)
            .details(json!({ "locked_seconds": seconds, "consecutive_failures": failures }));
        app.audit().record_or_log(&entry).await;
        tracing::warn!(user_id = %user.user_id, seconds, "account locked after repeated failures");
    }
    Ok(())
}

async fn clear_failures(app: &App, user: &User) {
    let table = app.table();
    let result = table
        .client()
        .delete_item()
        .table_name(table.name())
        .key("PK", av::s(keys::user(&user.user_id)))
        .key("SK", av::s(LOCKOUT_SK))
        .send()
        .await;
    if let Err(error) = result {
        tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&error), "could not clear login failures");
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
