//! Rate limits that hold across every concurrent function instance: fixed-window counters
//! in the table, bumped with one atomic `ADD` and dropped by TTL.
//!
//! Each rule is `RATE_LIMIT_<RULE>=<count>/<seconds>` in the environment (defaults below);
//! `RATE_LIMIT_ENABLED=false` turns them all off. Keys (addresses, emails) are stored
//! hashed, so the counters hold no personal data.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::{
    config::error::ConfigError,
    store::{Change, StoreError, Table, av, expiry},
};

/// A request the rule does not let through.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The window's count is spent (or, for a rule that fails closed, the counter cannot
    /// be kept): try again after this many seconds.
    #[error("too many requests; retry after {retry_after_seconds} s")]
    Limited { retry_after_seconds: u64 },
    #[error(transparent)]
    Store(StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Registrations per client address.
    Register,
    /// Password attempts (login, restore) per client address.
    Login,
    /// Password attempts on one account (email) from one client address: nobody else's
    /// attempts spend the owner's.
    LoginAccount,
    Refresh,
    VerifyEmail,
    /// Verification emails per address asked for.
    ResendVerification,
    /// Reset requests for one address from one client address.
    ForgotPassword,
    /// Reset requests from one client address, whatever the address asked for.
    ForgotPasswordClient,
    /// Verification emails asked for from one client address, whatever the address.
    ResendVerificationClient,
    /// Password attempts on one account from addresses it has never signed in from, where
    /// no CAPTCHA is configured to slow many addresses down (counted before Argon2, so a
    /// burst gets no more than the count).
    AccountNewAddresses,
    /// Reset emails one address receives, whoever asks.
    ForgotPasswordInbox,
    ResetPassword,
    Restore,
    /// Invitations sent per admin.
    Invite,
    /// Unsubscribe links honoured per client address.
    Unsubscribe,
    /// Push devices registered per user (each is an SNS call).
    RegisterDevice,
    /// Requests per user that call Stripe (providers, payments, subscriptions, refunds):
    /// each is an API call (and an account link or intent) made in our name.
    Stripe,
    /// MFA enrolments, confirmations and turnings-off per user.
    Mfa,
    /// Phone verification codes (SMS) sent per user, and to one number whoever asks.
    PhoneCode,
    PhoneCodeNumber,
}

impl Rule {
    pub const ALL: [Rule; 20] = [
        Rule::Register,
        Rule::Login,
        Rule::LoginAccount,
        Rule::Refresh,
        Rule::VerifyEmail,
        Rule::ResendVerification,
        Rule::ForgotPassword,
        Rule::ForgotPasswordClient,
        Rule::ResendVerificationClient,
        Rule::AccountNewAddresses,
        Rule::ForgotPasswordInbox,
        Rule::ResetPassword,
        Rule::Restore,
        Rule::Invite,
        Rule::Unsubscribe,
        Rule::RegisterDevice,
        Rule::Stripe,
        Rule::Mfa,
        Rule::PhoneCode,
        Rule::PhoneCodeNumber,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Register => "register",
            Rule::Login => "login",
            Rule::LoginAccount => "login_account",
            Rule::Refresh => "refresh",
            Rule::VerifyEmail => "verify_email",
            Rule::ResendVerification => "resend_verification",
            Rule::ForgotPassword => "forgot_password",
            Rule::ForgotPasswordClient => "forgot_password_client",
            Rule::ResendVerificationClient => "resend_verification_client",
            Rule::AccountNewAddresses => "account_new_addresses",
            Rule::ForgotPasswordInbox => "forgot_password_inbox",
            Rule::ResetPassword => "reset_password",
            Rule::Restore => "restore",
            Rule::Invite => "invite",
            Rule::Unsubscribe => "unsubscribe",
            Rule::RegisterDevice => "register_device",
            Rule::Stripe => "stripe",
            Rule::Mfa => "mfa",
            Rule::PhoneCode => "phone_code",
            Rule::PhoneCodeNumber => "phone_code_number",
        }
    }

    /// (count, window seconds).
    pub fn default_limit(self) -> Limit {
        let (count, window_seconds) = match self {
            Rule::Register => (3, 3600),
            Rule::Login => (20, 60),
            Rule::LoginAccount => (5, 60),
            Rule::Refresh => (60, 60),
            Rule::VerifyEmail => (10, 3600),
            Rule::ResendVerification => (3, 3600),
            Rule::ForgotPassword => (3, 3600),
            Rule::ForgotPasswordClient => (10, 3600),
            Rule::ResendVerificationClient => (10, 3600),
            Rule::AccountNewAddresses => (10, 60),
            Rule::ForgotPasswordInbox => (10, 3600),
            Rule::ResetPassword => (10, 3600),
            Rule::Restore => (5, 3600),
            Rule::Invite => (50, 3600),
            Rule::Unsubscribe => (30, 3600),
            Rule::RegisterDevice => (30, 3600),
            Rule::Stripe => (20, 60),
            Rule::Mfa => (20, 3600),
            Rule::PhoneCode => (3, 3600),
            Rule::PhoneCodeNumber => (5, 86_400),
        };
        Limit { count, window_seconds }
    }

    /// Whether a request is refused when its counter cannot be kept (DynamoDB throttling or
    /// down). Refused: everything that guards a password or token, or sends mail or SMS, or
    /// spends money at Stripe or SNS, since an attacker who can make the table throttle must
    /// not also lift the limit. Let through: refreshing a session and honouring an
    /// unsubscribe, which only help the user and have nothing to guess.
    pub fn fails_closed(self) -> bool {
        !matches!(self, Rule::Refresh | Rule::Unsubscribe)
    }

    pub fn env_var(self) -> String {
        format!("RATE_LIMIT_{}", self.name().to_ascii_uppercase())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub count: u32,
    pub window_seconds: u64,
}

impl Limit {
    fn parse(value: &str) -> Option<Self> {
        let (count, window) = value.split_once('/')?;
        let limit = Self { count: count.trim().parse().ok()?, window_seconds: window.trim().parse().ok()? };
        (limit.count > 0 && limit.window_seconds > 0).then_some(limit)
    }
}

#[derive(Debug, Clone)]
pub struct RateLimits {
    enabled: bool,
    limits: HashMap<Rule, Limit>,
}

impl RateLimits {
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let enabled = match lookup("RATE_LIMIT_ENABLED").as_deref().map(str::trim) {
            None | Some("") | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "RATE_LIMIT_ENABLED",
                    reason: format!("{other:?} is not true or false"),
                });
            }
        };
        let mut limits = HashMap::new();
        for rule in Rule::ALL {
            let limit = match lookup(&rule.env_var()) {
                None => rule.default_limit(),
                Some(value) => Limit::parse(&value).ok_or_else(|| ConfigError::Invalid {
                    name: "RATE_LIMIT_*",
                    reason: format!("{}={value:?} is not <count>/<seconds>", rule.env_var()),
                })?,
            };
            limits.insert(rule, limit);
        }
        Ok(Self { enabled, limits })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn limit(&self, rule: Rule) -> Limit {
        self.limits.get(&rule).copied().unwrap_or_else(|| rule.default_limit())
    }

    /// Counts one request for `key` under `rule`; 429 once the window's count is spent.
    pub async fn check(&self, table: &Table, rule: Rule, key: &str) -> Result<(), RateLimitError> {
        if !self.enabled {
            return Ok(());
        }
        let window = self.window(rule);
        let hits = match self.count_in(table, rule, key, &window).await {
            Ok(hits) => hits,
            Err(error) => return unavailable(rule, error),
        };
        if hits > u64::from(self.limit(rule).count) {
            tracing::warn!(rule = rule.name(), hits, "rate limited");
            return Err(RateLimitError::Limited { retry_after_seconds: window.retry_after() });
        }
        Ok(())
    }

    fn window(&self, rule: Rule) -> Window {
        let now = crate::time::now().unix_timestamp();
        let length = self.limit(rule).window_seconds as i64;
        let start = now - now.rem_euclid(length);
        Window { now, start, end: start + length }
    }

    async fn count_in(&self, table: &Table, rule: Rule, key: &str, window: &Window) -> Result<u64, StoreError> {
        let pk = window.pk(rule, key);
        let sk = window.start.to_string();
        let item = table
            .update_item(
                Change::new(&pk, &sk)
                    .update("ADD hits :one SET #ttl = :ttl, expiry_shard = :shard")
                    .value(":one", av::n(1))
                    .value(":shard", av::s(expiry::shard_of(&pk)))
                    .value(":ttl", av::n(window.end + 60))
                    .name("#ttl", "ttl"),
            )
            .await?;
        Ok(match item.get("hits") {
            Some(aws_sdk_dynamodb::types::AttributeValue::N(n)) => n.parse().unwrap_or(0),
            _ => 0,
        })
    }
}

/// The fixed window a count falls in.
struct Window {
    now: i64,
    start: i64,
    end: i64,
}

impl Window {
    fn pk(&self, rule: Rule, key: &str) -> String {
        format!("RATE#{}#{}", rule.name(), hex::encode(&Sha256::digest(key.as_bytes())[..16]))
    }

    fn retry_after(&self) -> u64 {
        (self.end - self.now).max(1) as u64
    }
}

/// A counter that cannot be kept: refused or let through as the rule says.
fn unavailable(rule: Rule, error: StoreError) -> Result<(), RateLimitError> {
    match error {
        error @ StoreError::Dynamo(_) if rule.fails_closed() => {
            tracing::error!(%error, rule = rule.name(), "rate limit counter unavailable; refusing");
            Err(RateLimitError::Limited { retry_after_seconds: 1 })
        }
        error @ StoreError::Dynamo(_) => {
            tracing::error!(%error, rule = rule.name(), "rate limit counter unavailable; allowing");
            Ok(())
        }
        other => Err(RateLimitError::Store(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_and_overrides() {
        let limits = RateLimits::from_lookup(&lookup(&[("RATE_LIMIT_LOGIN_ACCOUNT", "7/30")])).unwrap();
        assert!(limits.enabled());
        assert_eq!(limits.limit(Rule::LoginAccount), Limit { count: 7, window_seconds: 30 });
        assert_eq!(limits.limit(Rule::Register), Limit { count: 3, window_seconds: 3600 });
    }

    #[test]
    fn can_be_switched_off_and_rejects_nonsense() {
        assert!(!RateLimits::from_lookup(&lookup(&[("RATE_LIMIT_ENABLED", "false")])).unwrap().enabled());
        assert!(RateLimits::from_lookup(&lookup(&[("RATE_LIMIT_ENABLED", "maybe")])).is_err());
        assert!(RateLimits::from_lookup(&lookup(&[("RATE_LIMIT_LOGIN", "5 per minute")])).is_err());
        assert!(RateLimits::from_lookup(&lookup(&[("RATE_LIMIT_LOGIN", "0/60")])).is_err());
    }
}
