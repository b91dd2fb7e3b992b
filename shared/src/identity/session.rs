//! Sessions: an access token (RS256, at most 15 minutes) plus a rotating refresh token.
//!
//! A login starts a *family*. Each refresh token works once and is replaced by the next;
//! presenting a used one means it was stolen or replayed, so the whole family is revoked,
//! newest token included. Families end absolutely 30 days after login, and all of a user's
//! families end at once when their `session_version` moves (password reset, deletion).
//!
//! Items: family `USER#{user_id}` / `SESSION#{session_id}`; refresh token
//! `REFRESH#{sha256}` / `REFRESH`. Both expire by TTL at the family's absolute end.

use aws_sdk_dynamodb::types::TransactWriteItem;
use serde::{Deserialize, Serialize};

use super::{
    OpaqueToken, User,
    jwt::{AccessClaims, TOKEN_USE_ACCESS},
};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::AccountError,
    identity::IdentityServices,
    services::Services,
    store::{Change, StoreError, av, keys},
    time,
};

pub const SESSION_LIFETIME_DAYS: i64 = 30;
const REFRESH_SK: &str = "REFRESH";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionFamily {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub session_id: String,
    pub user_id: String,
    pub created_at: String,
    pub expires_at: String,
    pub revoked: bool,
    /// Hash of the one refresh token of this family that may still be used.
    pub current_hash: String,
    pub session_version: u32,
    pub ttl: i64,
}

impl SessionFamily {
    pub fn sort_key(session_id: &str) -> String {
        format!("SESSION#{session_id}")
    }

    pub fn is_live(&self, user: &User) -> bool {
        !self.revoked
            && self.session_version == user.session_version
            && time::parse_rfc3339(&self.expires_at).is_some_and(|at| at > time::now())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefreshRecord {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    user_id: String,
    session_id: String,
    expires_at: String,
    ttl: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_at: Option<String>,
}

fn refresh_pk(hash: &str) -> String {
    format!("REFRESH#{hash}")
}

/// What login and refresh answer with.
#[derive(Debug, Serialize)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub csrf_token: String,
}

/// Signs an access token for `user` in session `session_id`, with a fresh CSRF token.
async fn access_token(
    app: &IdentityServices,
    user: &User,
    session_id: &str,
) -> Result<(String, String, u64), AccountError> {
    let settings = app.settings();
    let now = time::now().unix_timestamp();
    let ttl = settings.access_token_ttl.as_secs();
    let csrf = OpaqueToken::generate().expose().to_owned();
    let claims = AccessClaims {
        iss: settings.jwt_issuer.clone(),
        aud: settings.jwt_audience.clone(),
        sub: user.user_id.clone(),
        org: user.org_id.clone(),
        role: user.role,
        iat: now,
        exp: now + ttl as i64,
        jti: uuid::Uuid::new_v4().to_string(),
        token_use: TOKEN_USE_ACCESS.to_owned(),
        csrf: csrf.clone(),
        sid: session_id.to_owned(),
        sv: user.session_version,
    };
    let token = app.keys().await?.sign(&claims).map_err(AccountError::internal)?;
    Ok((token, csrf, ttl))
}

fn new_refresh_record(user_id: &str, session_id: &str, expires_at: &str, ttl: i64) -> (OpaqueToken, RefreshRecord) {
    let token = OpaqueToken::generate();
    let record = RefreshRecord {
        pk: refresh_pk(token.hash().as_str()),
        sk: REFRESH_SK.to_owned(),
        user_id: user_id.to_owned(),
        session_id: session_id.to_owned(),
        expires_at: expires_at.to_owned(),
        ttl,
        used_at: None,
    };
    (token, record)
}

/// Starts a new session family for `user`, committing `extra` (e.g. the audit entry) in the
/// same transaction.
pub async fn start(
    app: &IdentityServices,
    user: &User,
    extra: Vec<TransactWriteItem>,
) -> Result<IssuedTokens, AccountError> {
    start_guarded(app, user, extra, AccountError::InvalidCredentials).await
}

/// [`start`], where `extra` holds conditions (a one-time token, a code) of which any failing
/// means no session, answered with `refused`. The session also needs the account as `user`
/// was read: the same session version (no reset or deletion since), the same MFA state (a
/// login that saw MFA off does not outlive its turning on).
pub async fn start_guarded(
    app: &IdentityServices,
    user: &User,
    extra: Vec<TransactWriteItem>,
    refused: AccountError,
) -> Result<IssuedTokens, AccountError> {
    let now = time::now();
    let expires = now + time::Duration::days(SESSION_LIFETIME_DAYS);
    let expires_at = time::rfc3339(expires);
    let session_id = uuid::Uuid::new_v4().to_string();
    let (refresh, record) = new_refresh_record(&user.user_id, &session_id, &expires_at, time::epoch_seconds(expires));
    let family = SessionFamily {
        pk: keys::user(&user.user_id),
        sk: SessionFamily::sort_key(&session_id),
        session_id: session_id.clone(),
        user_id: user.user_id.clone(),
        created_at: time::rfc3339(now),
        expires_at,
        revoked: false,
        current_hash: refresh.hash().as_str().to_owned(),
        session_version: user.session_version,
        ttl: time::epoch_seconds(expires),
    };
    let table = app.table();
    // Nothing may fail after the commit that can fail before it.
    app.keys().await?;
    let (pk, sk) = User::key(&user.user_id);
    let unchanged = if user.mfa_enabled {
        "session_version = :sv AND attribute_not_exists(deletion_scheduled_at) AND mfa_enabled = :mfa"
    } else {
        "session_version = :sv AND attribute_not_exists(deletion_scheduled_at) \
         AND (attribute_not_exists(mfa_enabled) OR mfa_enabled = :mfa)"
    };
    let account = Change::new(&pk, &sk)
        .condition(unchanged)
        .value(":sv", av::n(user.session_version))
        .value(":mfa", av::b(user.mfa_enabled));
    let mut items = vec![
        table.put_new(&family).map_err(AccountError::internal)?,
        table.put_new(&record).map_err(AccountError::internal)?,
        table.check(account).map_err(AccountError::internal)?,
    ];
    items.extend(extra);
    table.transact_or(items, refused).await?;
    let (access_token, csrf_token, expires_in) = access_token(app, user, &session_id).await?;
    Ok(IssuedTokens {
        access_token,
        refresh_token: refresh.expose().to_owned(),
        token_type: "Bearer",
        expires_in,
        csrf_token,
    })
}

/// Revokes one family. Idempotent.
pub async fn revoke(app: &Services, user_id: &str, session_id: &str) -> Result<(), AccountError> {
    let pk = keys::user(user_id);
    let sk = SessionFamily::sort_key(session_id);
    match app
        .table()
        .update_item(
            Change::new(&pk, &sk)
                .update("SET revoked = :true")
                .condition("attribute_exists(PK)")
                .value(":true", av::b(true)),
        )
        .await
    {
        Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
        Err(other) => Err(AccountError::internal(other)),
    }
}

/// Revokes one family and records `entry` in the same transaction, so the revocation and
/// its audit entry exist together or not at all.
pub async fn revoke_recorded(
    app: &Services,
    user_id: &str,
    session_id: &str,
    entry: &AuditEntry,
) -> Result<(), AccountError> {
    let table = app.table();
    let pk = keys::user(user_id);
    let sk = SessionFamily::sort_key(session_id);
    let revoke = table.update(
        Change::new(&pk, &sk)
            .update("SET revoked = :true")
            .condition("attribute_exists(PK)")
            .value(":true", av::b(true)),
    )?;
    match table.transact(vec![revoke, app.audit().put(entry)?]).await {
        Ok(()) => Ok(()),
        // No such family (already gone): nothing to revoke, but the attempt is still recorded.
        Err(StoreError::TransactionConditionsFailed(_)) => Ok(app.audit().record(entry).await?),
        Err(other) => Err(other.into()),
    }
}

/// Revokes the family of a refresh token, if it is one of `user_id`'s.
pub async fn revoke_by_refresh_token(app: &Services, user_id: &str, presented: &str) -> Result<(), AccountError> {
    let hash = OpaqueToken::from_presented(presented).hash();
    let record = app
        .table()
        .get::<RefreshRecord>(&refresh_pk(hash.as_str()), REFRESH_SK)
        .await
        .map_err(AccountError::internal)?;
    match record {
        Some(record) if record.user_id == user_id => revoke(app, user_id, &record.session_id).await,
        _ => Ok(()),
    }
}

/// Exchanges a refresh token for a new pair. Exactly one of any number of concurrent
/// exchanges of one token wins; every other presentation of it revokes the family.
#[tracing::instrument(skip_all)]
pub async fn refresh(
    app: &IdentityServices,
    presented: &str,
    meta: &RequestMeta,
) -> Result<IssuedTokens, AccountError> {
    let hash = OpaqueToken::from_presented(presented).hash();
    let pk = refresh_pk(hash.as_str());
    let table = app.table();
    let record = table
        .get::<RefreshRecord>(&pk, REFRESH_SK)
        .await
        .map_err(AccountError::internal)?
        .ok_or(AccountError::Unauthorized)?;
    let (user_pk, user_sk) = User::key(&record.user_id);
    let family_sk = SessionFamily::sort_key(&record.session_id);
    let (user, family) =
        tokio::try_join!(table.get::<User>(&user_pk, &user_sk), table.get::<SessionFamily>(&user_pk, &family_sk))
            .map_err(AccountError::internal)?;
    let (Some(user), Some(family)) = (user, family) else {
        return Err(AccountError::Unauthorized);
    };
    // Used, or already superseded by a concurrent refresh: either way, a replay.
    if record.used_at.is_some() || family.current_hash != hash.as_str() {
        return reuse_detected(app, &user, &record.session_id, meta).await;
    }
    if !family.is_live(&user) || user.deletion_scheduled_at.is_some() {
        return Err(AccountError::Unauthorized);
    }

    let now = time::rfc3339(time::now());
    let (next, next_record) = new_refresh_record(&user.user_id, &family.session_id, &family.expires_at, family.ttl);
    let next_hash = next.hash();
    let items = vec![
        table.update(
            Change::new(&pk, REFRESH_SK)
                .update("SET used_at = :now")
                .condition("attribute_exists(PK) AND attribute_not_exists(used_at)")
                .value(":now", av::s(&now)),
        ),
        table.update(
            Change::new(&user_pk, &family_sk)
                .update("SET current_hash = :next")
                .condition("revoked = :false AND current_hash = :current AND expires_at > :now")
                .value(":next", av::s(next_hash.as_str()))
                .value(":false", av::b(false))
                .value(":current", av::s(hash.as_str()))
                .value(":now", av::s(&now)),
        ),
        table.put_new(&next_record),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(AccountError::internal)?;
    match table.transact(items).await {
        Ok(()) => {}
        // Lost a race with another use of the same token: that is reuse too.
        Err(StoreError::TransactionConditionsFailed(_)) => {
            return reuse_detected(app, &user, &record.session_id, meta).await;
        }
        Err(other) => return Err(AccountError::internal(other)),
    }
    let (access_token, csrf_token, expires_in) = access_token(app, &user, &family.session_id).await?;
    Ok(IssuedTokens {
        access_token,
        refresh_token: next.expose().to_owned(),
        token_type: "Bearer",
        expires_in,
        csrf_token,
    })
}

async fn reuse_detected(
    app: &Services,
    user: &User,
    session_id: &str,
    meta: &RequestMeta,
) -> Result<IssuedTokens, AccountError> {
    tracing::warn!(user_id = %user.user_id, %session_id, "refresh token reuse; revoking the session family");
    let entry = AuditEntry::new("auth.refresh_reuse", AuditStatus::Failure, &user.org_id, meta)
        .target(&user.user_id)
        .details(serde_json::json!({ "session_id": session_id }));
    revoke_recorded(app, &user.user_id, session_id, &entry).await?;
    Err(AccountError::TokenReused)
}
