//! Configuration: non-secret settings from the environment (secrets are in
//! [`crate::secrets`], which the environment only says where to find).
//!
//! `ENVIRONMENT=production` turns on the guards: a setting unsafe in production is an init
//! error, so the function never serves a request in that state.

use std::time::Duration;

pub mod error;

pub use error::ConfigError;

/// Cloudflare Turnstile's siteverify endpoint: where CAPTCHA tokens are checked unless
/// `CAPTCHA_VERIFY_URL` says otherwise.
pub const TURNSTILE_SITEVERIFY: &str = "https://challenges.cloudflare.com/turnstile/v0/siteverify";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl Environment {
    fn parse(value: &str) -> Result<Self, ConfigError> {
        match value {
            "production" | "prod" => Ok(Self::Production),
            "development" | "dev" | "local" | "test" | "staging" => Ok(Self::Development),
            other => {
                Err(ConfigError::Invalid { name: "ENVIRONMENT", reason: format!("unknown environment {other:?}") })
            }
        }
    }

    pub fn is_production(self) -> bool {
        self == Self::Production
    }
}

/// Settings every function reads from its environment (set in `template.yaml`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: Environment,
    pub table_name: String,
    /// Base of links in emails; never derived from request headers.
    pub frontend_url: String,
    pub email_from: String,
    /// SNS topic for domain events. Optional outside production.
    pub events_topic_arn: Option<String>,
    /// SNS platform applications for push (FCM, APNs); a platform without one takes no devices.
    pub push_fcm_application_arn: Option<String>,
    pub push_apns_application_arn: Option<String>,
    /// The SES configuration set whose bounce and complaint events reach the notifier.
    pub ses_configuration_set: Option<String>,
    /// Days between a deletion request and the erasure (`0`: due at the next cleanup run).
    pub deletion_grace_days: i64,
    /// Where each secret is (`PUBLIC_KEYS_SECRET_ID`, `SIGNING_SECRET_ID`, ...); a function
    /// reads only the ones it declares.
    pub secret_ids: crate::secrets::SecretIds,
    pub secret_refresh: Duration,
    pub rate_limits: crate::rate_limit::RateLimits,
    /// `iss` of access tokens, and the base of the JWKS URL (the API's public base URL).
    pub jwt_issuer: String,
    /// `aud` of access tokens (the API Gateway JWT authorizer's audience).
    pub jwt_audience: String,
    /// Access token lifetime; at most 15 minutes.
    pub access_token_ttl: Duration,
    /// Browser origins allowed to make credentialed unsafe requests (CSRF check).
    pub allowed_origins: Vec<String>,
    pub stripe: StripeSettings,
    pub captcha: CaptchaSettings,
    pub aws_timeouts: AwsTimeouts,
    /// The name authenticator apps show beside a user's codes (`MFA_ISSUER`, by default the
    /// frontend's host).
    pub mfa_issuer: String,
    /// Days after which a payment nobody paid is canceled, its PaymentIntent with it
    /// (`PAYMENT_ABANDON_DAYS`, 7 by default).
    pub payment_abandon_days: i64,
    /// What the platform keeps of each payment (`PLATFORM_FEE_BPS`, `PLATFORM_FEE_FIXED`),
    /// fixed on a payment when it is made.
    pub platform_fee: PlatformFee,
    /// Recovering from the provider what leaves the platform after a transfer.
    pub recovery: Recovery,
    /// Days a payment may stay held without release before the cleanup refunds it to the
    /// payer (`HOLD_MAX_DAYS`, 90 by default); both sides are told 7 days before.
    pub hold_max_days: i64,
}

/// What is recovered after a transfer (`REVERSE_TRANSFERS`, `REVERSE_DISPUTES`,
/// `REVERSAL_RETRY_DAYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Whether transfers are reversed at all (`false`: only audited and alarmed).
    pub reverse_transfers: bool,
    /// A dispute is reversed when Stripe withdraws its funds (`at_withdrawal`, the
    /// default), or only once it is lost (`on_loss`).
    pub disputes_on_loss: bool,
    /// How long a refused reversal is retried, daily.
    pub retry_days: i64,
}

/// The platform's fee: basis points of what is left after refunds, plus a fixed part in the
/// payment's minor units, never more than what is left. The platform pays Stripe's
/// processing and dispute fees; the provider shares them only through this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlatformFee {
    /// 0 to [`PlatformFee::MAX_BPS`].
    pub bps: i64,
    pub fixed: i64,
}

impl PlatformFee {
    /// Half of every payment at most: more would be a typo.
    pub const MAX_BPS: i64 = 5_000;

    /// The fee on `net` minor units: `min(net, floor(net × bps / 10 000) + fixed)`.
    pub fn on(self, net: i64) -> i64 {
        if net <= 0 {
            return 0;
        }
        // i128: a net of 10^8 times 5 000 fits i64, but nothing here should need to know.
        let share = (i128::from(net) * i128::from(self.bps) / 10_000) as i64;
        (share + self.fixed).min(net)
    }

    /// What the provider is paid of `net`: the rest after the fee.
    pub fn provider_share(self, net: i64) -> i64 {
        net.max(0) - self.on(net)
    }

    pub fn is_zero(self) -> bool {
        self.bps == 0 && self.fixed == 0
    }
}

/// Where CAPTCHA tokens are checked and when login asks for one. The CAPTCHA secret itself
/// is in its own secret (`captcha_secret`); without it no route asks for a token.
#[derive(Debug, Clone)]
pub struct CaptchaSettings {
    /// A Turnstile-compatible `siteverify` URL.
    pub verify_url: String,
    /// Failed password attempts on one account in a day (from any address) after which its
    /// login and restore need a solved CAPTCHA.
    pub after_failures: u32,
    pub timeout: Duration,
    /// `CAPTCHA_OFF_ACCEPTED=true`: production may run without a CAPTCHA secret, and then
    /// guesses on one account from many addresses are slowed only by the account-wide limit
    /// (`RATE_LIMIT_ACCOUNT_FAILURES`). Without it, production refuses to start with no
    /// CAPTCHA.
    pub off_accepted: bool,
}

/// Timeouts of every AWS SDK call (DynamoDB, SES, SNS, Secrets Manager). Without them a
/// stalled connection waits for the function's own timeout, which kills the invocation
/// without an answer or a log line. Defaults fit the HTTP functions' 10 seconds: a call
/// with its retries gives up with time left to answer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsTimeouts {
    /// Establishing a connection (`AWS_CONNECT_TIMEOUT_MS`, default 1 s).
    pub connect: Duration,
    /// One attempt of a call (`AWS_ATTEMPT_TIMEOUT_MS`, default 2 s).
    pub attempt: Duration,
    /// A call with all its retries (`AWS_OPERATION_TIMEOUT_MS`, default 5 s; never less than
    /// one attempt).
    pub operation: Duration,
}

impl AwsTimeouts {
    pub fn sdk_config(&self) -> aws_config::timeout::TimeoutConfig {
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }
}

/// How we talk to Stripe. The API key itself is in its own secret.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// Another base URL (the local stand-in); `None` is Stripe itself.
    pub api_base: Option<String>,
    pub timeout: Duration,
    /// Attempts per call, all with the same idempotency key.
    pub max_attempts: u32,
    /// How old a webhook signature may be.
    pub webhook_tolerance_seconds: i64,
}

impl Settings {
    /// What the secrets store of a function needs of these settings.
    pub fn secrets_store(&self) -> crate::secrets::StoreSettings {
        crate::secrets::StoreSettings {
            ids: self.secret_ids.clone(),
            refresh: self.secret_refresh,
            production: self.environment.is_production(),
            captcha_off_accepted: self.captcha.off_accepted,
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The API's public base URL. It is the token issuer (`JWT_ISSUER`): the JWKS and the
    /// discovery document are served under it.
    pub fn api_url(&self) -> &str {
        &self.jwt_issuer
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Lookup(&lookup);
        let environment = Environment::parse(&env.get("ENVIRONMENT").unwrap_or_else(|| "development".into()))?;
        let production = environment.is_production();
        let frontend_url = frontend_url(&env, production)?;
        let events_topic_arn = env.get("EVENTS_TOPIC_ARN");
        if production && events_topic_arn.is_none() {
            return Err(ConfigError::Missing("EVENTS_TOPIC_ARN"));
        }
        let secret_refresh = Duration::from_secs(
            env.number("SECRET_REFRESH_SECONDS", 300)
                .map_err(|_| invalid("SECRET_REFRESH_SECONDS", "must be a whole number of seconds"))?,
        );
        let jwt_issuer = env.require("JWT_ISSUER")?.trim_end_matches('/').to_owned();
        if production && !jwt_issuer.starts_with("https://") {
            return Err(invalid("JWT_ISSUER", "must be an https URL in production"));
        }
        let access_token_ttl = match env.number("ACCESS_TOKEN_TTL_SECONDS", 900) {
            Ok(secs) if (1..=900).contains(&secs) => Duration::from_secs(secs),
            _ => return Err(invalid("ACCESS_TOKEN_TTL_SECONDS", "must be between 1 and 900 seconds")),
        };
        // The frontend's own origin always, and any others listed.
        let mut allowed_origins: Vec<String> = vec![frontend_origin(&frontend_url)];
        for origin in env.get("ALLOWED_ORIGINS").unwrap_or_default().split(',') {
            let origin = origin.trim().trim_end_matches('/').to_owned();
            if !origin.is_empty() && !allowed_origins.contains(&origin) {
                allowed_origins.push(origin);
            }
        }
        let settings = Self {
            recovery: Recovery::from_lookup(&env)?,
            hold_max_days: env.number("HOLD_MAX_DAYS", 90)?.clamp(1, 3650) as i64,
            payment_abandon_days: env.number("PAYMENT_ABANDON_DAYS", 7)?.clamp(1, 365) as i64,
            platform_fee: PlatformFee::from_lookup(&env, production)?,
            mfa_issuer: mfa_issuer(&env, &frontend_url)?,
            environment,
            table_name: env.require("TABLE_NAME")?,
            email_from: env.require("EMAIL_FROM")?,
            events_topic_arn,
            push_fcm_application_arn: env.get("PUSH_FCM_APPLICATION_ARN"),
            push_apns_application_arn: env.get("PUSH_APNS_APPLICATION_ARN"),
            ses_configuration_set: env.get("SES_CONFIGURATION_SET"),
            deletion_grace_days: env.number("DELETION_GRACE_DAYS", 30)?.min(3650) as i64,
            secret_ids: crate::secrets::SecretIds::from_lookup(|name| env.get(name)),
            secret_refresh,
            rate_limits: crate::rate_limit::RateLimits::from_lookup(&lookup)?,
            jwt_issuer,
            jwt_audience: env.get("JWT_AUDIENCE").unwrap_or_else(|| "backend-api".into()),
            access_token_ttl,
            allowed_origins,
            stripe: StripeSettings::from_lookup(&env, production)?,
            captcha: CaptchaSettings::from_lookup(&env, production)?,
            aws_timeouts: AwsTimeouts::from_lookup(&env)?,
            frontend_url,
        };
        // Without CAPTCHA the rate limits are all that slows guessing from many addresses.
        if production && settings.captcha.off_accepted && !settings.rate_limits.enabled() {
            return Err(invalid("RATE_LIMIT_ENABLED", "cannot be false in production with CAPTCHA_OFF_ACCEPTED=true"));
        }
        Ok(settings)
    }
}

/// The environment, read: blank counts as unset.
struct Lookup<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Lookup<'_, F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn require(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    fn number(&self, name: &'static str, default: u64) -> Result<u64, ConfigError> {
        self.get(name).map_or(Ok(default), |v| v.parse().map_err(|_| invalid(name, "must be a whole number")))
    }

    /// `true` or `false`, nothing else (a typo must not quietly mean the default).
    fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).as_deref().map(str::trim) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(invalid(name, &format!("{other:?} is not true or false"))),
        }
    }
}

fn invalid(name: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid { name, reason: reason.into() }
}

/// `FRONTEND_URL`, without its trailing `/`: https (http outside production), and only plain
/// URL characters, since links built from it go into email HTML unescaped (escaping would
/// mangle them).
fn frontend_url<F: Fn(&str) -> Option<String>>(env: &Lookup<'_, F>, production: bool) -> Result<String, ConfigError> {
    let url = env.require("FRONTEND_URL")?.trim_end_matches('/').to_owned();
    if !(url.starts_with("https://") || (!production && url.starts_with("http://"))) {
        return Err(invalid("FRONTEND_URL", "must be an absolute https URL (http allowed outside production)"));
    }
    if url.chars().any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | '\\')) {
        return Err(invalid("FRONTEND_URL", "must not contain spaces, quotes or angle brackets"));
    }
    Ok(url)
}

/// `MFA_ISSUER`, else the frontend's host. The otpauth label is `issuer:account`; apps split
/// it at the first colon.
fn mfa_issuer<F: Fn(&str) -> Option<String>>(env: &Lookup<'_, F>, frontend_url: &str) -> Result<String, ConfigError> {
    let issuer = env.get("MFA_ISSUER").unwrap_or_else(|| {
        let origin = frontend_origin(frontend_url);
        let host = origin.split_once("://").map_or(origin.as_str(), |(_, host)| host);
        host.split(':').next().unwrap_or(host).to_owned()
    });
    if issuer.contains(':') || issuer.chars().count() > 64 {
        return Err(invalid("MFA_ISSUER", "must be at most 64 characters, without ':'"));
    }
    Ok(issuer)
}

impl PlatformFee {
    fn from_lookup<F: Fn(&str) -> Option<String>>(env: &Lookup<'_, F>, production: bool) -> Result<Self, ConfigError> {
        let bps = env.number("PLATFORM_FEE_BPS", 0)?;
        if bps > Self::MAX_BPS as u64 {
            return Err(invalid("PLATFORM_FEE_BPS", &format!("must be between 0 and {} basis points", Self::MAX_BPS)));
        }
        let fixed = env.number("PLATFORM_FEE_FIXED", 0)?;
        if fixed > MAX_FIXED_FEE as u64 {
            return Err(invalid(
                "PLATFORM_FEE_FIXED",
                &format!("must be a whole number of minor units, at most {MAX_FIXED_FEE}"),
            ));
        }
        let fee = Self { bps: bps as i64, fixed: fixed as i64 };
        let zero_allowed = env.flag("ALLOW_ZERO_PLATFORM_FEE", false)?;
        // A platform that keeps nothing still pays Stripe's fees on every charge and loses
        // them on every refund: only on purpose.
        if production && fee.is_zero() && !zero_allowed {
            return Err(invalid(
                "PLATFORM_FEE_BPS",
                "PLATFORM_FEE_BPS and PLATFORM_FEE_FIXED are both 0 in production; set a fee, or \
                 ALLOW_ZERO_PLATFORM_FEE=true to pay Stripe's fees from the platform's own money",
            ));
        }
        Ok(fee)
    }
}

impl Recovery {
    fn from_lookup<F: Fn(&str) -> Option<String>>(env: &Lookup<'_, F>) -> Result<Self, ConfigError> {
        Ok(Self {
            reverse_transfers: env.flag("REVERSE_TRANSFERS", true)?,
            disputes_on_loss: match env.get("REVERSE_DISPUTES").as_deref().map(str::trim) {
                None | Some("at_withdrawal") => false,
                Some("on_loss") => true,
                Some(other) => {
                    return Err(invalid("REVERSE_DISPUTES", &format!("{other:?} is not at_withdrawal or on_loss")));
                }
            },
            retry_days: env.number("REVERSAL_RETRY_DAYS", 30)?.clamp(1, 365) as i64,
        })
    }
}

impl StripeSettings {
    fn from_lookup<F: Fn(&str) -> Option<String>>(env: &Lookup<'_, F>, production: bool) -> Result<Self, ConfigError> {
        let api_base = env.get("STRIPE_API_BASE");
        if production && api_base.is_some() {
            return Err(invalid("STRIPE_API_BASE", "must not be set in production"));
        }
        Ok(Self {
            api_base: api_base.map(|b| if b.ends_with('/') { b } else { format!("{b}/") }),
            timeout: Duration::from_millis(env.number("STRIPE_TIMEOUT_MS", 10_000)?),
            max_attempts: env.number("STRIPE_MAX_ATTEMPTS", 3)?.clamp(1, 10) as u32,
            webhook_tolerance_seconds: env.number("STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300)?.clamp(1, 3600) as i64,
        })
    }
}

impl CaptchaSettings {
    fn from_lookup<F: Fn(&str) -> Option<String>>(env: &Lookup<'_, F>, production: bool) -> Result<Self, ConfigError> {
        let verify_url = env.get("CAPTCHA_VERIFY_URL").unwrap_or_else(|| TURNSTILE_SITEVERIFY.into());
        if !(verify_url.starts_with("https://") || (!production && verify_url.starts_with("http://"))) {
            return Err(invalid("CAPTCHA_VERIFY_URL", "must be an https URL (http allowed outside production)"));
        }
        Ok(Self {
            verify_url,
            after_failures: env.number("CAPTCHA_AFTER_FAILURES", 10)?.clamp(1, 10_000) as u32,
            // Two calls at most must fit the functions' 10 s timeout with room to answer.
            timeout: Duration::from_millis(env.number("CAPTCHA_TIMEOUT_MS", 3_000)?.clamp(100, 4_000)),
            off_accepted: env.flag("CAPTCHA_OFF_ACCEPTED", false)?,
        })
    }
}

impl AwsTimeouts {
    fn from_lookup<F: Fn(&str) -> Option<String>>(env: &Lookup<'_, F>) -> Result<Self, ConfigError> {
        let attempt = env.number("AWS_ATTEMPT_TIMEOUT_MS", 2_000)?.clamp(100, 900_000);
        Ok(Self {
            connect: Duration::from_millis(env.number("AWS_CONNECT_TIMEOUT_MS", 1_000)?.clamp(50, 60_000)),
            attempt: Duration::from_millis(attempt),
            operation: Duration::from_millis(env.number("AWS_OPERATION_TIMEOUT_MS", 5_000)?.clamp(attempt, 900_000)),
        })
    }
}

/// The largest fixed fee part: 100.00 in a two-decimal currency.
const MAX_FIXED_FEE: i64 = 10_000;

/// `scheme://host[:port]` of a URL.
fn frontend_origin(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => url[..after_scheme + i].to_owned(),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("TABLE_NAME", "t"),
        ("FRONTEND_URL", "http://localhost:3000/"),
        ("EMAIL_FROM", "no-reply@example.com"),
        ("JWT_ISSUER", "http://127.0.0.1:9000"),
    ];

    #[test]
    fn development_settings_parse_and_trim_the_frontend_url() {
        let s = Settings::from_lookup(env(BASE)).unwrap();
        assert_eq!(s.environment, Environment::Development);
        assert_eq!(s.frontend_url, "http://localhost:3000");
        assert!(s.events_topic_arn.is_none());
        assert_eq!(s.allowed_origins, ["http://localhost:3000"]);
        assert_eq!(s.access_token_ttl, Duration::from_secs(900));
    }

    #[test]
    fn aws_calls_time_out_within_an_http_functions_ten_seconds() {
        let s = Settings::from_lookup(env(BASE)).unwrap();
        let t = s.aws_timeouts;
        assert_eq!(
            (t.connect, t.attempt, t.operation),
            (Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(5))
        );
        let sdk = t.sdk_config();
        assert_eq!(sdk.connect_timeout(), Some(Duration::from_secs(1)));
        assert_eq!(sdk.operation_attempt_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(sdk.operation_timeout(), Some(Duration::from_secs(5)));

        let mut pairs = BASE.to_vec();
        pairs.extend([("AWS_ATTEMPT_TIMEOUT_MS", "3000"), ("AWS_OPERATION_TIMEOUT_MS", "1000")]);
        let t = Settings::from_lookup(env(&pairs)).unwrap().aws_timeouts;
        assert_eq!(t.operation, Duration::from_secs(3), "a call's budget holds at least one attempt");
    }

    #[test]
    fn production_without_captcha_keeps_its_rate_limits() {
        let production = [
            ("ENVIRONMENT", "production"),
            ("FRONTEND_URL", "https://app.example.com"),
            ("JWT_ISSUER", "https://api.example.com"),
            ("EVENTS_TOPIC_ARN", "arn:aws:sns:us-east-1:1:t"),
            ("PLATFORM_FEE_BPS", "1000"),
        ];
        let mut pairs = BASE.to_vec();
        pairs.retain(|(k, _)| !production.iter().any(|(p, _)| p == k));
        pairs.extend(production);
        pairs.push(("CAPTCHA_OFF_ACCEPTED", "true"));
        assert!(Settings::from_lookup(env(&pairs)).is_ok());
        pairs.push(("RATE_LIMIT_ENABLED", "false"));
        assert!(matches!(
            Settings::from_lookup(env(&pairs)),
            Err(ConfigError::Invalid { name: "RATE_LIMIT_ENABLED", .. })
        ));
    }

    #[test]
    fn access_tokens_live_at_most_fifteen_minutes() {
        let mut pairs = BASE.to_vec();
        pairs.push(("ACCESS_TOKEN_TTL_SECONDS", "901"));
        assert!(Settings::from_lookup(env(&pairs)).is_err());
        pairs.pop();
        pairs.push(("ALLOWED_ORIGINS", "https://a.example.com, https://b.example.com/"));
        let s = Settings::from_lookup(env(&pairs)).unwrap();
        assert_eq!(
            s.allowed_origins,
            ["http://localhost:3000", "https://a.example.com", "https://b.example.com"],
            "the frontend's own origin always, then the others"
        );
    }

    #[test]
    fn production_requires_https_and_a_topic() {
        let mut pairs = BASE.to_vec();
        pairs.push(("ENVIRONMENT", "production"));
        pairs.push(("PLATFORM_FEE_FIXED", "30"));
        assert!(matches!(Settings::from_lookup(env(&pairs)), Err(ConfigError::Invalid { name: "FRONTEND_URL", .. })));
        pairs[1] = ("FRONTEND_URL", "https://app.example.com");
        assert!(matches!(Settings::from_lookup(env(&pairs)), Err(ConfigError::Missing("EVENTS_TOPIC_ARN"))));
        pairs.push(("EVENTS_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:events"));
        assert!(matches!(Settings::from_lookup(env(&pairs)), Err(ConfigError::Invalid { name: "JWT_ISSUER", .. })));
        pairs[4] = ("JWT_ISSUER", "https://api.example.com");
        assert!(Settings::from_lookup(env(&pairs)).is_ok());
    }

    #[test]
    fn the_platform_fee_is_a_share_of_what_is_left_plus_a_fixed_part_never_more_than_it() {
        let fee = PlatformFee { bps: 1_000, fixed: 30 };
        assert_eq!((fee.on(10_000), fee.provider_share(10_000)), (1_030, 8_970));
        assert_eq!(fee.on(8_000), 830, "after a refund of 2 000");
        assert_eq!(fee.on(999), 129, "floor(99.9) + 30");
        assert_eq!((fee.on(20), fee.provider_share(20)), (20, 0), "never more than what is left");
        assert_eq!((fee.on(0), fee.on(-5), fee.provider_share(-5)), (0, 0, 0));
        let most = PlatformFee { bps: PlatformFee::MAX_BPS, fixed: MAX_FIXED_FEE };
        assert_eq!(most.on(99_999_999), 49_999_999 + MAX_FIXED_FEE);
        assert_eq!(PlatformFee::default().provider_share(2_500), 2_500);
    }

    #[test]
    fn fee_settings_are_bounded_and_production_refuses_none_unless_accepted() {
        let mut pairs = BASE.to_vec();
        pairs.extend([("PLATFORM_FEE_BPS", "250"), ("PLATFORM_FEE_FIXED", "30")]);
        assert_eq!(Settings::from_lookup(env(&pairs)).unwrap().platform_fee, PlatformFee { bps: 250, fixed: 30 });
        for (name, bad) in [("PLATFORM_FEE_BPS", "5001"), ("PLATFORM_FEE_BPS", "-1"), ("PLATFORM_FEE_FIXED", "10001")] {
            let mut pairs = BASE.to_vec();
            pairs.push((name, bad));
            assert!(
                matches!(Settings::from_lookup(env(&pairs)), Err(ConfigError::Invalid { name: n, .. }) if n == name),
                "{name}={bad}"
            );
        }
        assert_eq!(
            Settings::from_lookup(env(BASE)).unwrap().platform_fee,
            PlatformFee::default(),
            "0 outside production"
        );

        let production = [
            ("ENVIRONMENT", "production"),
            ("FRONTEND_URL", "https://app.example.com"),
            ("JWT_ISSUER", "https://api.example.com"),
            ("EVENTS_TOPIC_ARN", "arn:aws:sns:us-east-1:1:t"),
        ];
        let mut pairs = BASE.to_vec();
        pairs.retain(|(k, _)| !production.iter().any(|(p, _)| p == k));
        pairs.extend(production);
        assert!(matches!(
            Settings::from_lookup(env(&pairs)),
            Err(ConfigError::Invalid { name: "PLATFORM_FEE_BPS", .. })
        ));
        pairs.push(("ALLOW_ZERO_PLATFORM_FEE", "yes"));
        assert!(matches!(
            Settings::from_lookup(env(&pairs)),
            Err(ConfigError::Invalid { name: "ALLOW_ZERO_PLATFORM_FEE", .. })
        ));
        pairs.pop();
        pairs.push(("ALLOW_ZERO_PLATFORM_FEE", "true"));
        assert!(Settings::from_lookup(env(&pairs)).is_ok());
        pairs.pop();
        pairs.push(("PLATFORM_FEE_FIXED", "30"));
        assert!(Settings::from_lookup(env(&pairs)).is_ok(), "a fixed part alone is a fee");
    }

    #[test]
    fn frontend_url_must_be_plain() {
        let mut pairs = BASE.to_vec();
        pairs[1] = ("FRONTEND_URL", "https://app.example.com/\"><script>");
        assert!(matches!(Settings::from_lookup(env(&pairs)), Err(ConfigError::Invalid { name: "FRONTEND_URL", .. })));
    }

    #[test]
    fn missing_required_setting_is_named() {
        let err = Settings::from_lookup(env(&BASE[1..])).unwrap_err();
        assert!(matches!(err, ConfigError::Missing("TABLE_NAME")));
    }
}
