//! Password attempts (login, account restore), counted before the password is checked.
//!
//! The count is kept per account *and* client address (`USER#{subject}` /
//! `ATTEMPTS#{address hash}`), so failures from other addresses never stop the owner from
//! signing in from theirs. Each attempt reserves its place with a compare-and-set on that
//! counter *before* Argon2 runs, counted as a failure until the password proves right: the
//! database serialises concurrent guesses, so a burst gets no more tries than the same
//! guesses one after another. After [`LOCK_AFTER`] consecutive failures the pair is locked
//! for 30 s, doubling with each further failure up to [`MAX_LOCK_SECONDS`]; every lock
//! expires by itself and a success clears the count. A count whose last failure is a day
//! old starts over (and its item expires).
//!
//! Every failure also counts toward the account's day (`ATTEMPTS#DAY#{date}`, any address):
//! the pressure on one account from many addresses, which no per-address lock can show.
//! When CAPTCHA is configured, an account with [`CaptchaSettings::after_failures`] failures
//! today needs a solved CAPTCHA for every attempt until the day ends: many addresses slow
//! down to a person's pace, and the owner is never locked out of their own account.
//! Without CAPTCHA (which production allows only when told to accept the risk), attempts on
//! one account from addresses it has never signed in from are capped per minute instead
//! ([`Rule::AccountNewAddresses`], counted atomically before Argon2, so a burst from many
//! addresses gets no more guesses than the cap); an address the account has signed in or
//! reset its password from is not counted, so the owner still gets in.
//!
//! [`CaptchaSettings::after_failures`]: crate::config::CaptchaSettings::after_failures

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Email, User};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::AccountError,
    identity::IdentityServices,
    rate_limit::RateLimitError,
    rate_limit::Rule,
    services::Services,
    store::{Change, StoreError, av, expiry, keys},
    time,
};

pub const LOCK_AFTER: u32 = 5;
pub const FIRST_LOCK_SECONDS: i64 = 30;
pub const MAX_LOCK_SECONDS: i64 = 900;
const FAILURE_MEMORY_SECONDS: i64 = 24 * 3600;
/// Compare-and-set rounds before a contended attempt is told to come back.
const RESERVE_ROUNDS: usize = 16;

/// How long the `failures`-th consecutive failure locks the pair for.
pub fn lock_seconds(failures: u32) -> Option<i64> {
    let over = failures.checked_sub(LOCK_AFTER)?;
    Some(FIRST_LOCK_SECONDS.saturating_mul(1i64 << over.min(20)).min(MAX_LOCK_SECONDS))
}

/// The counter's sort key for a client address (hashed: the table keeps no addresses here).
pub fn counter_sort_key(client: &str) -> String {
    format!("ATTEMPTS#{}", hex::encode(&Sha256::digest(client.as_bytes())[..12]))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Counter {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    failures: u32,
    #[serde(default)]
    locked_until: i64,
    #[serde(default)]
    last_failure: i64,
    ttl: i64,
}

/// An attempt that holds its place in the count; it must end as [`Attempt::succeeded`] or
/// [`Attempt::failed`].
#[derive(Debug)]
#[must_use]
pub struct Attempt {
    pk: String,
    sk: String,
    /// The client address it came from (known to the account once it succeeds).
    client: String,
    /// The lock this attempt's failure brings, if it fails.
    lock_seconds: Option<i64>,
    now: i64,
}

/// The rate limits every password attempt spends, whatever the route: per client address,
/// and per account *from* that address (so nobody else can spend the owner's).
async fn limit(app: &Services, email: &Email, meta: &RequestMeta) -> Result<(), AccountError> {
    app.rate_limit(Rule::Login, &meta.client_key()).await?;
    Ok(app.rate_limit(Rule::LoginAccount, &format!("{}\n{}", email.as_str(), meta.client_key())).await?)
}

/// Everything a password attempt on `email` passes before Argon2 runs: the rate limits, the
/// CAPTCHA of a flagged account, and a reserved place in the count. Returns the account
/// (`None` for an unknown address) and the attempt to settle.
pub async fn begin(
    app: &IdentityServices,
    email: &Email,
    captcha_token: Option<&str>,
    meta: &RequestMeta,
) -> Result<(Option<User>, Attempt), AccountError> {
    limit(app, email, meta).await?;
    let (user, subject) = subject(app, email).await?;
    if app.captcha_configured().await? {
        challenge(app, &subject, captcha_token, meta).await?;
    } else {
        slow_down(app, &subject, &meta.client_key()).await?;
    }
    let attempt = reserve(app, &subject, &meta.client_key()).await?;
    Ok((user, attempt))
}

/// When CAPTCHA is configured and `subject` has had many failures today, `captcha_token`
/// must be a solved CAPTCHA (400 `captcha_required`). Unknown addresses' stand-ins are
/// counted and flagged alike, so the question reveals nothing either.
async fn challenge(
    app: &IdentityServices,
    subject: &str,
    captcha_token: Option<&str>,
    meta: &RequestMeta,
) -> Result<(), AccountError> {
    let now = time::now().unix_timestamp();
    let today: Option<DayCount> = app.table().get(&keys::user(subject), &day_sort_key(now)).await?;
    if today.is_some_and(|day| day.failures >= app.settings().captcha.after_failures) {
        app.require_captcha(captcha_token, meta).await?;
    }
    Ok(())
}

/// Without CAPTCHA: an attempt from an address `subject` does not know spends the account's
/// count of such attempts this minute (429 once spent); one from a known address does not.
async fn slow_down(app: &Services, subject: &str, client: &str) -> Result<(), AccountError> {
    let known: Option<KnownClient> = app.table().get(&keys::user(subject), &known_sort_key(client)).await?;
    if known.is_some_and(|k| k.ttl > time::now().unix_timestamp()) {
        return Ok(());
    }
    Ok(app.rate_limit(Rule::AccountNewAddresses, subject).await?)
}

/// The item that makes `client` an address the account `user_id` knows (after a sign-in or
/// a password reset from it), for [`KNOWN_CLIENT_DAYS`].
pub fn known_client(
    table: &crate::store::Table,
    user_id: &str,
    client: &str,
) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, StoreError> {
    table.put(&KnownClient::new(&keys::user(user_id), client, time::now().unix_timestamp()), None)
}

/// An address that signed in to the account, remembered for [`KNOWN_CLIENT_DAYS`].
#[derive(Debug, Serialize, Deserialize)]
struct KnownClient {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    ttl: i64,
}

const KNOWN_CLIENT_DAYS: i64 = 30;

impl KnownClient {
    fn new(user_pk: &str, client: &str, now: i64) -> Self {
        Self { pk: user_pk.to_owned(), sk: known_sort_key(client), ttl: now + KNOWN_CLIENT_DAYS * 86_400 }
    }
}

fn known_sort_key(client: &str) -> String {
    format!("KNOWN#{}", &counter_sort_key(client)["ATTEMPTS#".len()..])
}

/// The account behind `email`, and the subject its attempts count against. Unknown
/// addresses take the same path as known ones, against a stand-in subject: the same reads,
/// the same Argon2 work, the same counting and locks. Neither timing nor a lock tells an
/// attacker whether the address has an account.
async fn subject(app: &Services, email: &Email) -> Result<(Option<User>, String), AccountError> {
    let table = app.table();
    let user = User::find_by_email(table, email.as_str()).await?;
    let subject = match &user {
        Some(user) => user.user_id.clone(),
        None => {
            let stand_in = format!("unknown-{}", hex::encode(&Sha256::digest(email.as_str().as_bytes())[..16]));
            User::find(table, &stand_in).await?;
            stand_in
        }
    };
    Ok((user, subject))
}

/// Reserves an attempt on `subject` (a user id, or an unknown address's stand-in) from
/// `client`, or answers 429 with the time left while the pair is locked.
pub async fn reserve(app: &Services, subject: &str, client: &str) -> Result<Attempt, AccountError> {
    let table = app.table();
    let pk = keys::user(subject);
    let sk = counter_sort_key(client);
    for _ in 0..RESERVE_ROUNDS {
        let now = time::now().unix_timestamp();
        let current: Option<Counter> = table.get(&pk, &sk).await?;
        if let Some(locked_until) = current.as_ref().map(|c| c.locked_until).filter(|until| *until > now) {
            return Err(RateLimitError::Limited { retry_after_seconds: (locked_until - now) as u64 }.into());
        }
        let failures =
            current.as_ref().filter(|c| c.last_failure > now - FAILURE_MEMORY_SECONDS).map_or(0, |c| c.failures);
        let next = failures + 1;
        let lock_seconds = lock_seconds(next);
        let counter = Counter {
            pk: pk.clone(),
            sk: sk.clone(),
            failures: next,
            locked_until: lock_seconds.map_or(0, |s| now + s),
            last_failure: now,
            ttl: now + FAILURE_MEMORY_SECONDS,
        };
        let put = match &current {
            None => table.put_item_if(&counter, "attribute_not_exists(PK)", &[], &[]).await,
            Some(seen) => {
                table
                    .put_item_if(
                        &counter,
                        "failures = :failures AND last_failure = :last",
                        &[],
                        &[(":failures", av::n(seen.failures)), (":last", av::n(seen.last_failure))],
                    )
                    .await
            }
        };
        match put {
            Ok(()) => return Ok(Attempt { pk, sk, client: client.to_owned(), lock_seconds, now }),
            // Another attempt moved the count first: look again.
            Err(StoreError::ConditionFailed) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(RateLimitError::Limited { retry_after_seconds: 1 }.into())
}

impl Attempt {
    /// The attempt failed, and is already counted as such; nothing more is recorded (for a
    /// second count of a try whose failure is recorded through another attempt).
    pub fn stands(self) {}

    /// The password was right: the count starts over, and the address is one the account
    /// knows.
    pub async fn succeeded(self, app: &Services) {
        let known = KnownClient::new(&self.pk, &self.client, self.now);
        let table = app.table();
        let (cleared, remembered) =
            tokio::join!(table.delete_item(Change::new(&self.pk, &self.sk)), table.put_item(&known));
        if let Err(error) = cleared {
            tracing::warn!(%error, "could not clear password failures");
        }
        if let Err(error) = remembered {
            tracing::warn!(%error, "could not remember the address as known");
        }
    }

    /// The password was wrong (or the account unknown): the reserved failure stands, and
    /// counts toward the account's day. A real account's failure is audited as `action`
    /// (and its lock as `auth.lockout`), alongside the day's count, so that known and unknown
    /// addresses cost about the same.
    pub async fn failed(self, app: &Services, user: Option<&User>, action: &str, meta: &RequestMeta) {
        let failure = async {
            let Some(user) = user else { return };
            let entry = AuditEntry::new(action, AuditStatus::Failure, &user.org_id, meta)
                .target(&user.user_id)
                .details(json!({ "reason": "invalid_credentials" }));
            app.audit().record_or_log(&entry).await;
        };
        let lock = async {
            let (Some(user), Some(seconds)) = (user, self.lock_seconds) else { return };
            let entry = AuditEntry::new("auth.lockout", AuditStatus::Success, &user.org_id, meta)
                .target(&user.user_id)
                .details(json!({ "locked_seconds": seconds }));
            app.audit().record_or_log(&entry).await;
            tracing::warn!(user_id = %user.user_id, seconds, "account locked for one client address");
        };
        // All at once: a real account's failure then costs one write's time, as an unknown one's does.
        let ((), (), counted) = tokio::join!(failure, lock, count_day(app, &self.pk, self.now));
        if let Err(error) = counted {
            tracing::warn!(%error, "failure not counted toward the account's day");
        }
    }
}

#[derive(Debug, Deserialize)]
struct DayCount {
    #[serde(default)]
    failures: u32,
}

/// The sort key of the account's count for the (UTC) day holding `now`.
fn day_sort_key(now: i64) -> String {
    format!("ATTEMPTS#DAY#{}", now - now.rem_euclid(86_400))
}

/// The account's failures today, from any address.
async fn count_day(app: &Services, pk: &str, now: i64) -> Result<(), StoreError> {
    let day_start = now - now.rem_euclid(86_400);
    let sk = day_sort_key(now);
    app.table()
        .update_item(
            Change::new(pk, &sk)
                .update("ADD failures :one SET #ttl = :ttl, expiry_shard = :shard")
                .value(":one", av::n(1))
                .value(":ttl", av::n(day_start + 2 * 86_400))
                .value(":shard", av::s(expiry::shard_of(pk)))
                .name("#ttl", "ttl"),
        )
        .await
        .map(|_| ())
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

    #[test]
    fn addresses_get_their_own_counters() {
        assert_ne!(counter_sort_key("10.0.0.1"), counter_sort_key("10.0.0.2"));
        assert!(!counter_sort_key("10.0.0.1").contains("10.0.0.1"), "addresses are not stored");
    }
}
