//! Two-step verification with an authenticator app (TOTP, [`totp`]).
//!
//! One `MFA` item per user (`USER#{user_id}` / `MFA`) holds the sealed secret ([`crate::seal`]),
//! the last time step a code was accepted for, and the hashes of the unused recovery codes
//! ([`recovery`]) as a string set. Turning it on or off changes that item and the profile's
//! `mfa_enabled` in one transaction, with the audit entry and the security email.
//!
//! Every accepted code moves `last_step` forward with a condition (`last_step < :step`), and
//! every recovery code leaves the set with one (`contains(recovery, :code)`), inside the
//! transaction that does what the code was for: of two requests with the same code, exactly
//! one commits, and a code that has been used never works again (RFC 6238 §5.2).
//!
//! A login with MFA on ends its password step with an `mfa_token` (a one-time token, 5
//! minutes, [`CHALLENGE_TRIES`] codes). Wrong codes count toward a lockout per account and
//! client address kept apart from the password's (a right password must not wipe them) and
//! toward the account's day, which brings the CAPTCHA.

pub mod recovery;
mod revoke;
pub mod totp;

pub use revoke::{REVOKE_LINK_DAYS, revoke_by_link};

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    OneTimeToken, OpaqueToken, Password, PasswordHash, TokenKind, User,
    attempts::{self, Attempt},
    auth::Principal,
    session::{self, IssuedTokens, SessionFamily},
};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::AccountError,
    identity::IdentityServices,
    invalid::Invalid,
    notify::EmailKind,
    outbox::{self, Message},
    seal::Sealer,
    services::Services,
    store::{Change, StoreError, Table, av, keys},
    time,
};
use totp::{TotpCode, TotpSecret};

const SORT_KEY: &str = "MFA";
/// The client key of the per-account count of code failures, from any address.
const ACCOUNT_WIDE: &str = "mfa\nany address";
/// How long a started enrolment waits for its first code.
const ENROLMENT_MINUTES: i64 = 15;
pub const CHALLENGE_MINUTES: i64 = 5;
/// Codes one `mfa_token` may be tried with before the password must be given again.
pub const CHALLENGE_TRIES: u32 = 5;

/// The MFA item, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Factor {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(default)]
    enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_secret: Option<String>,
    #[serde(default)]
    pending_until: i64,
    #[serde(default)]
    last_step: u64,
    #[serde(default)]
    recovery: Vec<String>,
}

impl Factor {
    async fn find(table: &Table, user_id: &str) -> Result<Option<Self>, StoreError> {
        table.get(&keys::user(user_id), SORT_KEY).await
    }
}

/// What proves the second factor.
pub enum Proof {
    Code(TotpCode),
    /// The hash of a presented recovery code.
    RecoveryCode(String),
}

impl Proof {
    fn method(&self) -> &'static str {
        match self {
            Self::Code(_) => "totp",
            Self::RecoveryCode(_) => "recovery_code",
        }
    }
}

/// The second step of a login: to be completed with [`complete_login`].
#[derive(Debug, serde::Serialize)]
pub struct Challenge {
    pub mfa_required: bool,
    pub mfa_token: String,
    pub expires_in: i64,
}

/// A started enrolment: what the authenticator app needs.
#[derive(Debug, serde::Serialize)]
pub struct Enrolment {
    pub secret: String,
    pub otpauth_uri: String,
}

fn client_key(meta: &RequestMeta) -> String {
    // Apart from the password's counter, so that a right password does not clear it.
    format!("mfa\n{}", meta.client_key())
}

fn not_matching(field: &str) -> AccountError {
    AccountError::Invalid(Invalid::field(field, "does not match the authenticator app; check the device's clock"))
}

/// Starts (or restarts) enrolment: a fresh secret, sealed, waiting for its first code.
pub async fn enrol(app: &Services, principal: &Principal) -> Result<Enrolment, AccountError> {
    let user = &principal.user;
    if user.mfa_enabled {
        return Err(AccountError::Conflict("two-step verification is already on; turn it off first".into()));
    }
    let cipher = app.mfa_cipher().await?;
    let secret = TotpSecret::generate();
    let sealed = cipher.seal(secret.expose_bytes(), &user.user_id).map_err(AccountError::internal)?;
    let until = time::now().unix_timestamp() + ENROLMENT_MINUTES * 60;
    let pk = keys::user(&user.user_id);
    let started = app
        .table()
        .update_item(
            Change::new(&pk, SORT_KEY)
                .update("SET pending_secret = :sealed, pending_until = :until, enabled = :false")
                .condition("attribute_not_exists(PK) OR enabled = :false")
                .value(":sealed", av::s(sealed))
                .value(":until", av::n(until))
                .value(":false", av::b(false)),
        )
        .await;
    match started {
        Ok(_) => {}
        Err(StoreError::ConditionFailed) => {
            return Err(AccountError::Conflict("two-step verification is already on; turn it off first".into()));
        }
        Err(other) => return Err(other.into()),
    }
    Ok(Enrolment { otpauth_uri: secret.otpauth_uri(&app.settings().mfa_issuer, &user.email), secret: secret.base32() })
}

/// Finishes enrolment with a code from the app: MFA is on, and the recovery codes (shown
/// this once) are returned.
pub async fn confirm(
    app: &Services,
    principal: &Principal,
    password: &str,
    code: &TotpCode,
    meta: &RequestMeta,
) -> Result<Vec<String>, AccountError> {
    let user = &principal.user;
    let table = app.table();
    // The password again: an access token alone (stolen, or a device left signed in) must not
    // be able to put the account behind an authenticator its owner does not have.
    check_password(app, user, password, "auth.mfa_enabled", meta).await?;
    let now = time::now().unix_timestamp();
    let pending = match Factor::find(table, &user.user_id).await? {
        Some(Factor { enabled: false, pending_secret: Some(sealed), pending_until, .. }) if pending_until > now => {
            sealed
        }
        Some(Factor { enabled: true, .. }) => {
            return Err(AccountError::Conflict("two-step verification is already on".into()));
        }
        _ => return Err(AccountError::Conflict("no enrolment in progress; start one with POST /auth/mfa/totp".into())),
    };
    let cipher = app.mfa_cipher().await?;
    let secret = TotpSecret::from_bytes(cipher.open(&pending, &user.user_id).map_err(AccountError::internal)?);
    let step = secret.matching_step(code, now).ok_or_else(|| not_matching("code"))?;
    let sealed = cipher.seal(secret.expose_bytes(), &user.user_id).map_err(AccountError::internal)?;
    let (shown, hashes) = recovery::generate();

    let (pk, sk) = User::key(&user.user_id);
    let stamp = time::rfc3339(time::now());
    let (revoke_item, revoke_link) = revoke::link(app, user, &stamp);
    let audit = AuditEntry::new("auth.mfa_enabled", AuditStatus::Success, &user.org_id, meta)
        .actor(&user.user_id)
        .target(&user.user_id)
        .details(json!({ "method": "totp", "other_sessions_revoked": true }));
    let items = vec![
        table.update(
            Change::new(&pk, SORT_KEY)
                .update(
                    "SET enabled = :true, secret = :sealed, last_step = :step, recovery = :codes, confirmed_at = :now \
                     REMOVE pending_secret, pending_until",
                )
                .condition("pending_secret = :pending AND enabled = :false")
                .value(":true", av::b(true))
                .value(":false", av::b(false))
                .value(":sealed", av::s(sealed))
                .value(":step", av::n(step))
                .value(":codes", AttributeValue::Ss(hashes))
                .value(":now", av::s(&stamp))
                .value(":pending", av::s(&pending)),
        ),
        // Sessions started before MFA was on (a thief's, perhaps) end: this one goes on.
        table.update(
            Change::new(&pk, &sk)
                .update("SET mfa_enabled = :true, session_version = :next, updated_at = :now")
                .condition("attribute_not_exists(deletion_scheduled_at) AND session_version = :current")
                .value(":true", av::b(true))
                .value(":next", av::n(user.session_version + 1))
                .value(":current", av::n(user.session_version))
                .value(":now", av::s(&stamp)),
        ),
        keep_this_session(table, principal),
        app.audit().put(&audit),
        // The owner can undo what they did not do: the notice's link turns this factor off.
        table.put_new(&revoke_item),
        outbox::put_sealed(
            table,
            &app.outbox_sealer().await?,
            Message::email(EmailKind::MfaEnabled, &user.email, json!({ "revoke_link": revoke_link })),
        ),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    table.transact_or(items, AccountError::Conflict("the enrolment changed meanwhile; start again".into())).await?;
    tracing::info!(user_id = %user.user_id, "MFA turned on");
    Ok(shown)
}

/// Moves the caller's session family to the user's next session version, which the same
/// transaction gives the user: every other session, on the old version, ends at once.
fn keep_this_session(table: &Table, principal: &Principal) -> Result<TransactWriteItem, StoreError> {
    let current = principal.user.session_version;
    table.update(
        Change::new(&keys::user(principal.user_id()), &SessionFamily::sort_key(principal.session_id()))
            .update("SET session_version = :next")
            .condition("revoked = :false AND session_version = :current")
            .value(":next", av::n(current + 1))
            .value(":current", av::n(current))
            .value(":false", av::b(false)),
    )
}

/// The caller's password, counted and locked as login's attempts are.
async fn check_password(
    app: &Services,
    user: &User,
    password: &str,
    action: &str,
    meta: &RequestMeta,
) -> Result<(), AccountError> {
    let attempt = attempts::reserve(app, &user.user_id, &meta.client_key()).await?;
    let right = PasswordHash::from_stored(&user.password_hash)
        .verify(Password::presented(password))
        .await
        .map_err(AccountError::internal)?;
    if right {
        attempt.succeeded(app).await;
        Ok(())
    } else {
        attempt.failed(app, Some(user), action, meta).await;
        Err(AccountError::InvalidCredentials)
    }
}

/// The counts a second-factor try is held to: per account and client address, as
/// passwords' are but apart from them (a right password must not wipe them); and for
/// authenticator codes also per account from any address, since six digits can be guessed
/// and whoever is guessing already has the password, so addresses cannot be the limit.
/// Recovery codes (80 bits) are not held to the account-wide count, so the owner always has
/// a way in.
struct FactorAttempts {
    address: Attempt,
    account: Option<Attempt>,
}

impl FactorAttempts {
    async fn reserve(app: &Services, user_id: &str, proof: &Proof, meta: &RequestMeta) -> Result<Self, AccountError> {
        let address = attempts::reserve(app, user_id, &client_key(meta)).await?;
        let account = match proof {
            // A locked account leaves this address's reservation standing: one more failure.
            Proof::Code(_) => Some(attempts::reserve(app, user_id, ACCOUNT_WIDE).await?),
            Proof::RecoveryCode(_) => None,
        };
        Ok(Self { address, account })
    }

    async fn succeeded(self, app: &Services) {
        if let Some(account) = self.account {
            account.succeeded(app).await;
        }
        self.address.succeeded(app).await;
    }

    /// Audited (and counted toward the account's day) once, on the address's count; the
    /// account-wide reservation simply stands.
    async fn failed(self, app: &Services, user: &User, action: &str, meta: &RequestMeta) {
        if let Some(account) = self.account {
            account.stands();
        }
        self.address.failed(app, Some(user), action, meta).await;
    }
}

/// A second factor proven for an action other than login (restoring an account): the write
/// that spends it, for the action's transaction, and the counts to settle after it.
pub struct Proven {
    spend: TransactWriteItem,
    attempt: FactorAttempts,
}

impl Proven {
    /// The write that spends the proof, conditioned on nobody having spent it first.
    pub fn spend(&self) -> TransactWriteItem {
        self.spend.clone()
    }

    /// After the action's transaction: committed, the counts start over; refused (the code
    /// was spent meanwhile, say), it was a failed try.
    pub async fn settle(self, app: &Services, user: &User, committed: bool, action: &str, meta: &RequestMeta) {
        if committed {
            self.attempt.succeeded(app).await;
        } else {
            self.attempt.failed(app, user, action, meta).await;
        }
    }
}

/// The second factor `user` owes for `action`, if MFA is on: none given is 401
/// `mfa_required`, a wrong one 401 `invalid_credentials`, counted and locked as at login.
pub async fn prove(
    app: &Services,
    user: &User,
    proof: Option<Proof>,
    action: &str,
    meta: &RequestMeta,
) -> Result<Option<Proven>, AccountError> {
    if !user.mfa_enabled {
        return Ok(None);
    }
    let proof = proof.ok_or(AccountError::MfaRequired)?;
    let (attempt, _, spent) = check_proof(app, user, &proof, action, meta).await?;
    Ok(Some(Proven { spend: spent.spend(app.table(), &keys::user(&user.user_id))?, attempt }))
}

/// `user`'s enabled factor and what `proof` spends of it, counted against the attempt
/// limits: a wrong or already used proof is counted as a failure of `action` and is 401
/// `invalid_credentials`.
async fn check_proof(
    app: &Services,
    user: &User,
    proof: &Proof,
    action: &str,
    meta: &RequestMeta,
) -> Result<(FactorAttempts, Factor, Spent), AccountError> {
    let attempt = FactorAttempts::reserve(app, &user.user_id, proof, meta).await?;
    let cipher = app.mfa_cipher().await?;
    let factor = Factor::find(app.table(), &user.user_id).await?.filter(|f| f.enabled);
    let now = time::now().unix_timestamp();
    let spent = match &factor {
        Some(factor) => Spent::check(&cipher, factor, &user.user_id, proof, now)?,
        None => None,
    };
    match (factor, spent) {
        (Some(factor), Some(spent)) => Ok((attempt, factor, spent)),
        _ => {
            attempt.failed(app, user, action, meta).await;
            Err(AccountError::InvalidCredentials)
        }
    }
}

async fn security_notice(
    app: &Services,
    table: &Table,
    kind: EmailKind,
    user: &User,
) -> Result<TransactWriteItem, AccountError> {
    let reset_link = format!("{}/forgot-password", app.settings().frontend_url);
    let notice = Message::email(kind, &user.email, json!({ "reset_link": reset_link }));
    Ok(outbox::put_sealed(table, &app.outbox_sealer().await?, notice)?)
}

/// Issues the `mfa_token` that a right password earns when MFA is on.
pub async fn challenge(app: &Services, user: &User) -> Result<Challenge, AccountError> {
    let token = OpaqueToken::generate();
    let mut item = OneTimeToken::new(
        TokenKind::MfaLogin,
        &token.hash(),
        &user.user_id,
        time::Duration::minutes(CHALLENGE_MINUTES),
    );
    item.session_version = Some(user.session_version);
    app.table().put_item(&item).await?;
    Ok(Challenge { mfa_required: true, mfa_token: token.expose().to_owned(), expires_in: CHALLENGE_MINUTES * 60 })
}

/// A proof found right, and what spending it takes.
enum Spent {
    /// A code of this time step: later codes only from now on.
    Step(u64),
    /// This recovery code (its hash), which leaves the set.
    RecoveryCode(String),
}

impl Spent {
    /// `proof` checked against `factor`: `None` when it is wrong, or a code already used.
    fn check(
        cipher: &Sealer,
        factor: &Factor,
        user_id: &str,
        proof: &Proof,
        now: i64,
    ) -> Result<Option<Self>, AccountError> {
        Ok(match proof {
            Proof::Code(code) => {
                let sealed =
                    factor.secret.as_deref().ok_or_else(|| AccountError::internal("MFA on without a secret"))?;
                let secret = TotpSecret::from_bytes(cipher.open(sealed, user_id).map_err(AccountError::internal)?);
                secret.matching_step(code, now).filter(|step| *step > factor.last_step).map(Self::Step)
            }
            Proof::RecoveryCode(hash) => factor.recovery.contains(hash).then(|| Self::RecoveryCode(hash.clone())),
        })
    }

    /// The condition that this proof is still unspent (for [`Self::spend`] and the delete that
    /// turns MFA off), on a change to the factor item.
    fn unspent<'a>(&'a self, change: Change<'a>) -> Change<'a> {
        match self {
            Self::Step(step) => change
                .condition("enabled = :true AND last_step < :step")
                .value(":step", av::n(step))
                .value(":true", av::b(true)),
            Self::RecoveryCode(hash) => change
                .condition("enabled = :true AND contains(recovery, :code)")
                .value(":code", av::s(hash))
                .value(":true", av::b(true)),
        }
    }

    /// Spends the proof: the step moves forward, or the recovery code leaves the set, on
    /// condition nobody did so first.
    fn spend(&self, table: &Table, pk: &str) -> Result<TransactWriteItem, StoreError> {
        let change = match self {
            Self::Step(_) => Change::new(pk, SORT_KEY).update("SET last_step = :step"),
            Self::RecoveryCode(hash) => Change::new(pk, SORT_KEY)
                .update("DELETE recovery :codes")
                .value(":codes", AttributeValue::Ss(vec![hash.clone()])),
        };
        table.update(self.unspent(change))
    }
}

/// The second step of a login: the `mfa_token` and a code (or a recovery code) for tokens.
#[tracing::instrument(skip_all)]
pub async fn complete_login(
    app: &IdentityServices,
    mfa_token: &str,
    proof: Proof,
    meta: &RequestMeta,
) -> Result<IssuedTokens, AccountError> {
    let table = app.table();
    let token = take_try(table, mfa_token).await?;
    let user = match User::find(table, &token.user_id).await? {
        Some(user)
            if user.mfa_enabled
                && user.email_verified
                && user.deletion_scheduled_at.is_none()
                && token.session_version == Some(user.session_version) =>
        {
            user
        }
        // MFA turned off, a password reset or a deletion meanwhile: start over.
        _ => return Err(AccountError::MfaRequired),
    };
    let (attempt, factor, spent) = check_proof(app, &user, &proof, "auth.login_mfa", meta).await?;
    let left = factor.recovery.len().saturating_sub(usize::from(matches!(spent, Spent::RecoveryCode(_))));
    let audit = AuditEntry::new("auth.login", AuditStatus::Success, &user.org_id, meta)
        .actor(&user.user_id)
        .details(json!({ "mfa": proof.method(), "recovery_codes_left": left }));
    let consume = token.consume(table, &time::rfc3339(time::now()))?;
    let mut extra = vec![consume, spent.spend(table, &keys::user(&user.user_id))?, app.audit().put(&audit)?];
    if matches!(spent, Spent::RecoveryCode(_)) {
        // The owner hears of it: a recovery code in use means a lost device, or a thief.
        let reset_link = format!("{}/forgot-password", app.settings().frontend_url);
        let notice = json!({ "reset_link": reset_link, "codes_left": left });
        let notice = Message::email(EmailKind::MfaRecoveryUsed, &user.email, notice);
        extra.push(outbox::put_sealed(table, &app.outbox_sealer().await?, notice)?);
    }
    match session::start_guarded(app, &user, extra, AccountError::InvalidCredentials).await {
        Ok(tokens) => {
            attempt.succeeded(app).await;
            tracing::info!(user_id = %user.user_id, method = proof.method(), "login with MFA");
            Ok(tokens)
        }
        // Another request spent the token or the code first: this one is a replay.
        Err(AccountError::InvalidCredentials) => {
            attempt.failed(app, &user, "auth.login_mfa", meta).await;
            Err(AccountError::InvalidCredentials)
        }
        Err(other) => Err(other),
    }
}

/// Counts one try against a live `mfa_token` and returns it; 401 `mfa_required` once it is
/// spent, expired, or out of tries.
async fn take_try(table: &Table, presented: &str) -> Result<OneTimeToken, AccountError> {
    let hash = OpaqueToken::from_presented(presented).hash();
    let pk = keys::token(hash.as_str());
    let result = table
        .update_item(
            Change::new(&pk, keys::TOKEN)
                .update("SET tries = if_not_exists(tries, :zero) + :one")
                .condition(
                    "attribute_exists(PK) AND kind = :kind AND expires_at > :now \
                     AND (attribute_not_exists(tries) OR tries < :max)",
                )
                .value(":zero", av::n(0))
                .value(":one", av::n(1))
                .value(":kind", av::s("mfa_login"))
                .value(":now", av::s(time::rfc3339(time::now())))
                .value(":max", av::n(CHALLENGE_TRIES)),
        )
        .await;
    match result {
        Ok(item) => serde_dynamo::from_item(item).map_err(AccountError::internal),
        Err(StoreError::ConditionFailed) => Err(AccountError::MfaRequired),
        Err(other) => Err(other.into()),
    }
}

/// Turns MFA off, given the password and a current code (or a recovery code): the factor
/// goes, and every session but this one ends.
pub async fn disable(
    app: &Services,
    principal: &Principal,
    password: &str,
    proof: Proof,
    meta: &RequestMeta,
) -> Result<(), AccountError> {
    let user = &principal.user;
    if !user.mfa_enabled {
        return Err(AccountError::Conflict("two-step verification is not on".into()));
    }
    // A stolen access token must not make this a password or code oracle: both are counted.
    check_password(app, user, password, "auth.mfa_disabled", meta).await?;
    let table = app.table();
    let (attempt, _, spent) = check_proof(app, user, &proof, "auth.mfa_disabled", meta).await?;

    let (pk, sk) = User::key(&user.user_id);
    let current = user.session_version;
    let next = current + 1;
    let stamp = time::rfc3339(time::now());
    let audit = AuditEntry::new("auth.mfa_disabled", AuditStatus::Success, &user.org_id, meta)
        .actor(&user.user_id)
        .target(&user.user_id)
        .details(json!({ "method": proof.method(), "other_sessions_revoked": true }));
    let items = vec![
        // Removing the factor spends the proof: a code used meanwhile makes this fail.
        table.delete(spent.unspent(Change::new(&pk, SORT_KEY)))?,
        // Every session lives only while its version is the user's: moving the user's on,
        // and this session's with it, ends all the others at once.
        table.update(
            Change::new(&pk, &sk)
                .update("SET mfa_enabled = :false, session_version = :next, updated_at = :now")
                .condition("mfa_enabled = :true AND session_version = :current")
                .value(":false", av::b(false))
                .value(":true", av::b(true))
                .value(":next", av::n(next))
                .value(":current", av::n(current))
                .value(":now", av::s(&stamp)),
        )?,
        keep_this_session(table, principal)?,
        app.audit().put(&audit)?,
        security_notice(app, table, EmailKind::MfaDisabled, user).await?,
    ];
    if let Err(error) = table.transact_or(items, AccountError::InvalidCredentials).await {
        // A code spent meanwhile (a replay) is a failed try like any other.
        if matches!(error, AccountError::InvalidCredentials) {
            attempt.failed(app, user, "auth.mfa_disabled", meta).await;
        }
        return Err(error);
    }
    attempt.succeeded(app).await;
    tracing::info!(user_id = %user.user_id, "MFA turned off");
    Ok(())
}
