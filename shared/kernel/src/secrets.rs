//! Secrets, split by who reads them. Each [`Part`] is a Secrets Manager secret of its own
//! (a JSON document), named by its own environment variable, that only the functions
//! needing it may read: the token-signing keys only the function that issues tokens, the
//! Stripe key only those that call Stripe, the webhook secrets only the webhook. A function
//! declares the parts it reads (its `main`); the template gives it those variables and
//! `secretsmanager:GetSecretValue` on those secrets, and nothing else (`tests/api/iam.rs`).
//!
//! A function reads only what it declared, even where (as in the local stack) every
//! variable is set, so a part it uses without declaring fails its tests instead of its
//! first request in AWS. A part's document may hold only its own fields: a Stripe key
//! pasted into the public keys' secret would reach every function, so it is refused.
//!
//! `ENVIRONMENT=production` turns on the guards: a missing, placeholder or weak value is an
//! init error, so the function never serves a request in that state.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::RwLock;

use crate::config::error::ConfigError;

/// One secret and the fields of the document it alone holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// The token-signing keys' public halves: what every verifier checks tokens with.
    PublicKeys,
    /// The private token-signing keys: the function that issues tokens.
    Signing,
    /// The Stripe API key: functions that call Stripe.
    Stripe,
    /// Both Stripe webhook endpoints' signing secrets: the webhook.
    Webhook,
    /// What seals authenticator (TOTP) secrets.
    Mfa,
    /// The CAPTCHA provider's secret key.
    Captcha,
    /// What seals outbox items (their links and codes) and keys SMS code digests.
    Outbox,
    /// What seals stored idempotent answers (their `client_secret`s).
    Idempotency,
    /// What signs unsubscribe links.
    Unsubscribe,
    /// What signs page cursors.
    Cursor,
}

impl Part {
    pub const ALL: &'static [Part] = &[
        Part::PublicKeys,
        Part::Signing,
        Part::Stripe,
        Part::Webhook,
        Part::Mfa,
        Part::Captcha,
        Part::Outbox,
        Part::Idempotency,
        Part::Unsubscribe,
        Part::Cursor,
    ];

    /// The environment variable naming this part's secret (its ARN or name).
    pub fn env(self) -> &'static str {
        match self {
            Part::PublicKeys => "PUBLIC_KEYS_SECRET_ID",
            Part::Signing => "SIGNING_SECRET_ID",
            Part::Stripe => "STRIPE_SECRET_ID",
            Part::Webhook => "WEBHOOK_SECRET_ID",
            Part::Mfa => "MFA_SECRET_ID",
            Part::Captcha => "CAPTCHA_SECRET_ID",
            Part::Outbox => "OUTBOX_SECRET_ID",
            Part::Idempotency => "IDEMPOTENCY_SECRET_ID",
            Part::Unsubscribe => "UNSUBSCRIBE_SECRET_ID",
            Part::Cursor => "CURSOR_SECRET_ID",
        }
    }

    /// The document fields this part's secret holds, and no other secret may.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Part::PublicKeys => &["jwt_public_keys"],
            Part::Signing => &["jwt_signing_keys"],
            Part::Stripe => &["stripe_secret_key"],
            Part::Webhook => &["stripe_webhook_secrets", "stripe_connect_webhook_secrets"],
            Part::Mfa => &["mfa_encryption_keys"],
            Part::Captcha => &["captcha_secret"],
            Part::Outbox => &["outbox_sealing_keys"],
            Part::Idempotency => &["idempotency_sealing_keys"],
            Part::Unsubscribe => &["unsubscribe_signing_keys"],
            Part::Cursor => &["cursor_signing_keys"],
        }
    }

    /// The part whose secret holds `field`.
    pub fn of_field(field: &str) -> Option<Part> {
        Part::ALL.iter().copied().find(|part| part.fields().contains(&field))
    }
}

/// What a secrets store needs of the function's settings (`Settings::secrets_store`).
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub ids: SecretIds,
    /// How long a read secret is used before it is read again.
    pub refresh: Duration,
    /// Production's guards on the secrets' strength apply.
    pub production: bool,
    /// CAPTCHA may be off in production (its secret may then be absent).
    pub captcha_off_accepted: bool,
}

/// Where each part's secret is: from the environment, one variable per part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretIds(BTreeMap<Part, String>);

impl SecretIds {
    pub fn from_lookup(get: impl Fn(&'static str) -> Option<String>) -> Self {
        Self(Part::ALL.iter().filter_map(|&part| Some((part, get(part.env())?))).collect())
    }

    pub fn get(&self, part: Part) -> Option<&str> {
        self.0.get(&part).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Part, &str)> {
        self.0.iter().map(|(part, id)| (*part, id.as_str()))
    }
}

/// One RSA signing key for access tokens. The first key in the secret signs; the others
/// stay published in the JWKS so tokens they signed keep verifying during rotation.
#[derive(Clone, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    pub private_key_pem: SecretString,
}

/// The public half of a token-signing key: what verifiers check tokens with.
#[derive(Clone, Debug, Deserialize)]
pub struct PublicKey {
    pub kid: String,
    pub public_key_pem: String,
}

/// A 256-bit key (standard base64 of 32 bytes) that seals or signs. The first key seals
/// (or signs); the others still open (or verify) what they made, for rotation.
#[derive(Clone, Deserialize)]
pub struct EncryptionKey {
    pub kid: String,
    pub key: SecretString,
}

impl EncryptionKey {
    /// The key's 32 bytes, if it is standard base64 of exactly that many.
    pub fn decode(&self) -> Option<Vec<u8>> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(self.key.expose_secret().trim()).ok()?;
        (bytes.len() == 32).then_some(bytes)
    }
}

/// Why a list of keys cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyListError {
    Empty,
    /// This kid is listed twice.
    Twice(String),
    /// This key is not standard base64 of 32 bytes.
    Bad(String),
}

/// A list of keys' bytes by kid, first first: at least one, each 32 bytes, no kid twice
/// (what every sealer and signer needs).
pub fn key_list(keys: &[EncryptionKey]) -> Result<Vec<(String, Vec<u8>)>, KeyListError> {
    if keys.is_empty() {
        return Err(KeyListError::Empty);
    }
    if let Some(twice) = keys.iter().enumerate().find(|(i, k)| keys[..*i].iter().any(|o| o.kid == k.kid)) {
        return Err(KeyListError::Twice(twice.1.kid.clone()));
    }
    keys.iter()
        .map(|key| Ok((key.kid.clone(), key.decode().ok_or_else(|| KeyListError::Bad(key.kid.clone()))?)))
        .collect()
}

/// The secrets a function read, its parts' documents merged: a field of a part it does
/// not read is empty.
#[derive(Clone, Default, Deserialize)]
pub struct Secrets {
    #[serde(default)]
    pub jwt_signing_keys: Vec<SigningKey>,
    /// The signing keys' public halves, by kid: every key that signed a token still alive.
    #[serde(default)]
    pub jwt_public_keys: Vec<PublicKey>,
    #[serde(default)]
    pub stripe_secret_key: Option<SecretString>,
    /// The platform endpoint's signing secrets (events about our own payments, transfers
    /// and subscriptions). Several during rotation; any of them may sign a delivery.
    #[serde(default)]
    pub stripe_webhook_secrets: Vec<SecretString>,
    /// The Connect endpoint's signing secrets (connected accounts' events, which carry
    /// `account`): a separate endpoint at Stripe, with its own secret.
    #[serde(default)]
    pub stripe_connect_webhook_secrets: Vec<SecretString>,
    /// The CAPTCHA provider's secret key; absent: no CAPTCHA is asked for.
    #[serde(default)]
    pub captcha_secret: Option<SecretString>,
    /// Seals authenticator (TOTP) secrets; MFA routes answer 500 without one.
    #[serde(default)]
    pub mfa_encryption_keys: Vec<EncryptionKey>,
    /// Seals what outbox items would otherwise hold live (links and codes).
    #[serde(default)]
    pub outbox_sealing_keys: Vec<EncryptionKey>,
    /// Seals stored idempotent answers (their `client_secret`s).
    #[serde(default)]
    pub idempotency_sealing_keys: Vec<EncryptionKey>,
    /// Sign unsubscribe links (HMAC; the notifier signs, the notifications function checks).
    #[serde(default)]
    pub unsubscribe_signing_keys: Vec<EncryptionKey>,
    /// Sign page cursors (HMAC).
    #[serde(default)]
    pub cursor_signing_keys: Vec<EncryptionKey>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids = |keys: &[EncryptionKey]| keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>();
        f.debug_struct("Secrets")
            .field("jwt_signing_keys", &self.jwt_signing_keys.iter().map(|k| &k.kid).collect::<Vec<_>>())
            .field("jwt_public_keys", &self.jwt_public_keys.iter().map(|k| &k.kid).collect::<Vec<_>>())
            .field("stripe_secret_key", &self.stripe_secret_key.as_ref().map(|_| "[redacted]"))
            .field("stripe_webhook_secrets", &self.stripe_webhook_secrets.len())
            .field("stripe_connect_webhook_secrets", &self.stripe_connect_webhook_secrets.len())
            .field("captcha_secret", &self.captcha_secret.as_ref().map(|_| "[redacted]"))
            .field("mfa_encryption_keys", &kids(&self.mfa_encryption_keys))
            .field("outbox_sealing_keys", &kids(&self.outbox_sealing_keys))
            .field("idempotency_sealing_keys", &kids(&self.idempotency_sealing_keys))
            .field("unsubscribe_signing_keys", &kids(&self.unsubscribe_signing_keys))
            .field("cursor_signing_keys", &kids(&self.cursor_signing_keys))
            .finish()
    }
}

const PLACEHOLDERS: &[&str] = &["placeholder", "changeme", "change-me", "replace", "todo", "xxxx", "example", "dummy"];

fn looks_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    PLACEHOLDERS.iter().any(|p| lower.contains(p))
}

impl Secrets {
    /// Parses one part's document, which may hold only that part's fields.
    pub fn parse_part(part: Part, secret_id: &str, json: &str) -> Result<Self, ConfigError> {
        let malformed = |reason: String| ConfigError::SecretMalformed { secret_id: secret_id.to_owned(), reason };
        // Keys only: nothing of a value is kept, so nothing of one can be quoted.
        let fields: BTreeMap<String, serde::de::IgnoredAny> =
            serde_json::from_str(json).map_err(|e| malformed(describe(&e, "")))?;
        if let Some(foreign) = fields.keys().find(|field| !part.fields().contains(&field.as_str())) {
            return Err(ConfigError::MisplacedSecret {
                secret_id: secret_id.to_owned(),
                field: foreign.clone(),
                belongs: Part::of_field(foreign).map_or("no secret (not a field we read)", Part::env),
            });
        }
        let mut document = Self::parse(secret_id, json)?;
        let mut own = Self::default();
        own.take(part, &mut document);
        Ok(own)
    }

    /// Parses a whole document (tests and tools; functions read theirs part by part).
    pub fn parse(secret_id: &str, json: &str) -> Result<Self, ConfigError> {
        // serde's own message quotes the offending value ("invalid type: string \"sk_live_…\""),
        // which here is a secret: say where and what kind of problem, never what was there.
        let mut deserializer = serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| ConfigError::SecretMalformed {
            secret_id: secret_id.to_owned(),
            reason: describe(e.inner(), &e.path().to_string()),
        })
    }

    /// Moves `part`'s fields from `from` into `self`.
    fn take(&mut self, part: Part, from: &mut Secrets) {
        use std::mem::take;
        match part {
            Part::PublicKeys => self.jwt_public_keys = take(&mut from.jwt_public_keys),
            Part::Signing => self.jwt_signing_keys = take(&mut from.jwt_signing_keys),
            Part::Stripe => self.stripe_secret_key = from.stripe_secret_key.take(),
            Part::Webhook => {
                self.stripe_webhook_secrets = take(&mut from.stripe_webhook_secrets);
                self.stripe_connect_webhook_secrets = take(&mut from.stripe_connect_webhook_secrets);
            }
            Part::Mfa => self.mfa_encryption_keys = take(&mut from.mfa_encryption_keys),
            Part::Captcha => self.captcha_secret = from.captcha_secret.take(),
            Part::Outbox => self.outbox_sealing_keys = take(&mut from.outbox_sealing_keys),
            Part::Idempotency => self.idempotency_sealing_keys = take(&mut from.idempotency_sealing_keys),
            Part::Unsubscribe => self.unsubscribe_signing_keys = take(&mut from.unsubscribe_signing_keys),
            Part::Cursor => self.cursor_signing_keys = take(&mut from.cursor_signing_keys),
        }
    }

    /// The production guards for what a function reads: each of its parts present and
    /// strong (the CAPTCHA secret may be absent only if `captcha_off_accepted`).
    pub fn check_production(&self, parts: &[Part], captcha_off_accepted: bool) -> Result<(), ConfigError> {
        let weak = |field, reason: &str| Err(ConfigError::WeakSecret { field, reason: reason.into() });
        for &part in parts {
            match part {
                Part::PublicKeys => {
                    if self.jwt_public_keys.is_empty() {
                        return weak("jwt_public_keys", "missing");
                    }
                    for key in &self.jwt_public_keys {
                        if jsonwebtoken::DecodingKey::from_rsa_pem(key.public_key_pem.as_bytes()).is_err() {
                            return weak("jwt_public_keys", "not an RSA public key in PEM");
                        }
                    }
                }
                Part::Signing => self.check_signing_keys(parts)?,
                Part::Stripe => {
                    let Some(key) = &self.stripe_secret_key else { return weak("stripe_secret_key", "missing") };
                    let k = key.expose_secret();
                    if looks_placeholder(k) || k.len() < 24 || !(k.starts_with("sk_") || k.starts_with("rk_")) {
                        return weak("stripe_secret_key", "placeholder or not a Stripe secret key");
                    }
                }
                // Without the Connect endpoint's secret no provider is ever onboarded.
                Part::Webhook => {
                    for (field, secrets) in [
                        ("stripe_webhook_secrets", &self.stripe_webhook_secrets),
                        ("stripe_connect_webhook_secrets", &self.stripe_connect_webhook_secrets),
                    ] {
                        if secrets.is_empty() {
                            return weak(field, "missing");
                        }
                        for secret in secrets {
                            let s = secret.expose_secret();
                            if looks_placeholder(s) || s.len() < 32 {
                                return weak(field, "placeholder or shorter than 32 characters");
                            }
                        }
                    }
                }
                Part::Captcha => match &self.captcha_secret {
                    None if captcha_off_accepted => {}
                    None => {
                        return weak(
                            "captcha_secret",
                            "missing: without CAPTCHA, guesses on one account from many addresses are slowed \
                             only by an account-wide limit; set CAPTCHA_OFF_ACCEPTED=true to accept that",
                        );
                    }
                    Some(secret) => {
                        if looks_placeholder(secret.expose_secret()) || secret.expose_secret().len() < 16 {
                            return weak("captcha_secret", "placeholder or shorter than 16 characters");
                        }
                    }
                },
                Part::Mfa => check_keys("mfa_encryption_keys", &self.mfa_encryption_keys)?,
                Part::Outbox => check_keys("outbox_sealing_keys", &self.outbox_sealing_keys)?,
                Part::Idempotency => check_keys("idempotency_sealing_keys", &self.idempotency_sealing_keys)?,
                Part::Unsubscribe => check_keys("unsubscribe_signing_keys", &self.unsubscribe_signing_keys)?,
                Part::Cursor => check_keys("cursor_signing_keys", &self.cursor_signing_keys)?,
            }
        }
        Ok(())
    }

    fn check_signing_keys(&self, parts: &[Part]) -> Result<(), ConfigError> {
        let weak = |field, reason: &str| Err(ConfigError::WeakSecret { field, reason: reason.into() });
        if self.jwt_signing_keys.is_empty() {
            return weak("jwt_signing_keys", "missing: this function issues tokens");
        }
        for key in &self.jwt_signing_keys {
            let pem = key.private_key_pem.expose_secret();
            if looks_placeholder(pem) {
                return weak("jwt_signing_keys", "placeholder value");
            }
            // A 2048-bit RSA key is about 1190 bytes of DER; anything much smaller is weaker.
            match pem_der_len(pem) {
                Some(len) if len >= 1100 => {}
                Some(_) => return weak("jwt_signing_keys", "RSA key shorter than 2048 bits"),
                None => return weak("jwt_signing_keys", "not a PEM private key"),
            }
            if jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).is_err() {
                return weak("jwt_signing_keys", "not an RSA private key");
            }
        }
        // Whoever signs must have published the key it signs with, or every other function
        // refuses its tokens.
        let current = &self.jwt_signing_keys[0];
        if parts.contains(&Part::PublicKeys) && !self.jwt_public_keys.iter().any(|k| k.kid == current.kid) {
            return weak("jwt_public_keys", "lacks the current signing key's kid");
        }
        Ok(())
    }
}

/// A list of keys in the secret's `field`: there, random-looking, and usable.
fn check_keys(field: &'static str, keys: &[EncryptionKey]) -> Result<(), ConfigError> {
    let weak = |reason: &str| Err(ConfigError::WeakSecret { field, reason: reason.into() });
    if keys.is_empty() {
        return weak("missing");
    }
    for key in keys {
        match key.decode() {
            Some(bytes) if bytes.iter().collect::<std::collections::HashSet<_>>().len() >= 16 => {}
            Some(_) => return weak("not random (too few distinct bytes)"),
            None => return weak("not standard base64 of 32 bytes"),
        }
    }
    // Unique ids, 32-byte keys: what every sealer and signer needs.
    match key_list(keys) {
        Ok(_) => Ok(()),
        Err(KeyListError::Twice(kid)) => {
            weak(&format!("encryption key `{kid} (listed twice)` is not 32 bytes of base64"))
        }
        Err(KeyListError::Bad(kid)) => weak(&format!("encryption key `{kid}` is not 32 bytes of base64")),
        Err(KeyListError::Empty) => weak("missing"),
    }
}

/// What kind of problem a parse met, and where, without a byte of the value.
fn describe(error: &serde_json::Error, path: &str) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Eof => "cut short",
        serde_json::error::Category::Data => "a field of the wrong shape",
    };
    let at = if path.is_empty() { String::new() } else { format!(" at `{path}`") };
    format!("{kind}{at} (line {}, column {})", error.line(), error.column())
}

fn pem_der_len(pem: &str) -> Option<usize> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    if !pem.contains("-----BEGIN") {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(body).ok().map(|d| d.len())
}

/// Reads a function's parts once, serves them from memory, and re-reads them after
/// `refresh`.
pub struct SecretsStore {
    client: aws_sdk_secretsmanager::Client,
    parts: &'static [Part],
    ids: SecretIds,
    refresh: Duration,
    production: bool,
    captcha_off_accepted: bool,
    cached: RwLock<Option<(std::time::Instant, Arc<Secrets>)>>,
}

impl SecretsStore {
    /// The store of a function that reads `parts`.
    pub fn new(client: aws_sdk_secretsmanager::Client, settings: StoreSettings, parts: &'static [Part]) -> Self {
        let StoreSettings { ids, refresh, production, captcha_off_accepted } = settings;
        Self { client, parts, ids, refresh, production, captcha_off_accepted, cached: RwLock::new(None) }
    }

    pub async fn get(&self) -> Result<Arc<Secrets>, ConfigError> {
        if let Some((at, secrets)) = self.cached.read().await.as_ref()
            && at.elapsed() < self.refresh
        {
            return Ok(secrets.clone());
        }
        let mut slot = self.cached.write().await;
        if let Some((at, secrets)) = slot.as_ref()
            && at.elapsed() < self.refresh
        {
            return Ok(secrets.clone());
        }
        match self.fetch().await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *slot = Some((std::time::Instant::now(), fresh.clone()));
                Ok(fresh)
            }
            // A refresh that fails keeps serving the last good value rather than failing
            // every request while Secrets Manager is briefly unavailable.
            Err(error) => match slot.as_ref() {
                Some((_, stale)) => {
                    tracing::warn!(%error, "secret refresh failed; serving cached value");
                    Ok(stale.clone())
                }
                None => Err(error),
            },
        }
    }

    async fn read(&self, part: Part, secret_id: &str) -> Result<Secrets, ConfigError> {
        let out = self.client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| {
            ConfigError::SecretUnavailable {
                secret_id: secret_id.to_owned(),
                reason: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
            }
        })?;
        let json = out.secret_string().ok_or_else(|| ConfigError::SecretMalformed {
            secret_id: secret_id.to_owned(),
            reason: "secret has no string value".into(),
        })?;
        Secrets::parse_part(part, secret_id, json)
    }

    /// Every part at once (the round trips overlap). A part without a secret id is empty
    /// outside production and an error in it.
    async fn fetch(&self) -> Result<Secrets, ConfigError> {
        let mut reads = Vec::new();
        for &part in self.parts {
            match self.ids.get(part) {
                Some(id) => reads.push(async move { (part, self.read(part, id).await) }),
                None if self.production => return Err(ConfigError::Missing(part.env())),
                None => {}
            }
        }
        let mut merged = Secrets::default();
        for (part, read) in futures_util::future::join_all(reads).await {
            merged.take(part, &mut read?);
        }
        if self.production {
            merged.check_production(self.parts, self.captcha_off_accepted)?;
        }
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document with every field of every part set.
    const EVERY_FIELD: &str = r#"{
        "jwt_signing_keys": [{"kid": "s", "private_key_pem": "x"}],
        "jwt_public_keys": [{"kid": "s", "public_key_pem": "x"}],
        "stripe_secret_key": "sk_test_x",
        "stripe_webhook_secrets": ["whsec_a"],
        "stripe_connect_webhook_secrets": ["whsec_b"],
        "captcha_secret": "c",
        "mfa_encryption_keys": [{"kid": "m", "key": "k"}],
        "outbox_sealing_keys": [{"kid": "o", "key": "k"}],
        "idempotency_sealing_keys": [{"kid": "i", "key": "k"}],
        "unsubscribe_signing_keys": [{"kid": "u", "key": "k"}],
        "cursor_signing_keys": [{"kid": "c", "key": "k"}]
    }"#;

    /// The fields of `s` that hold something.
    fn present(s: &Secrets) -> Vec<&'static str> {
        let fields = [
            ("jwt_signing_keys", !s.jwt_signing_keys.is_empty()),
            ("jwt_public_keys", !s.jwt_public_keys.is_empty()),
            ("stripe_secret_key", s.stripe_secret_key.is_some()),
            ("stripe_webhook_secrets", !s.stripe_webhook_secrets.is_empty()),
            ("stripe_connect_webhook_secrets", !s.stripe_connect_webhook_secrets.is_empty()),
            ("captcha_secret", s.captcha_secret.is_some()),
            ("mfa_encryption_keys", !s.mfa_encryption_keys.is_empty()),
            ("outbox_sealing_keys", !s.outbox_sealing_keys.is_empty()),
            ("idempotency_sealing_keys", !s.idempotency_sealing_keys.is_empty()),
            ("unsubscribe_signing_keys", !s.unsubscribe_signing_keys.is_empty()),
            ("cursor_signing_keys", !s.cursor_signing_keys.is_empty()),
        ];
        fields.into_iter().filter(|(_, set)| *set).map(|(name, _)| name).collect()
    }

    #[test]
    fn each_part_takes_exactly_its_own_fields_and_every_field_has_one_part() {
        let every: BTreeMap<String, serde::de::IgnoredAny> = serde_json::from_str(EVERY_FIELD).unwrap();
        for field in every.keys() {
            assert_eq!(Part::ALL.iter().filter(|p| p.fields().contains(&field.as_str())).count(), 1, "{field}");
        }
        let mut merged = Secrets::default();
        for &part in Part::ALL {
            let mut whole = Secrets::parse("s", EVERY_FIELD).unwrap();
            let mut own = Secrets::default();
            own.take(part, &mut whole);
            assert_eq!(present(&own), part.fields(), "{part:?}");
            merged.take(part, &mut Secrets::parse("s", EVERY_FIELD).unwrap());
        }
        assert_eq!(present(&merged).len(), every.len(), "all parts together hold everything");
        let envs: std::collections::BTreeSet<_> = Part::ALL.iter().map(|p| p.env()).collect();
        assert_eq!(envs.len(), Part::ALL.len(), "one variable per part");
    }

    #[test]
    fn a_part_refuses_another_parts_field_and_names_where_it_belongs() {
        let error = Secrets::parse_part(
            Part::PublicKeys,
            "app/public",
            r#"{"jwt_public_keys":[],"stripe_secret_key":"sk_live_SECRETBYTES0123456789"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("stripe_secret_key") && error.contains("STRIPE_SECRET_ID"), "{error}");
        assert!(!error.contains("SECRETBYTES"), "{error}");
        let unknown = Secrets::parse_part(Part::Captcha, "c", r#"{"captcha_secrets":"x"}"#).unwrap_err().to_string();
        assert!(unknown.contains("captcha_secrets") && unknown.contains("not a field"), "{unknown}");
        let own = Secrets::parse_part(Part::Stripe, "s", r#"{"stripe_secret_key":"sk_test_x"}"#).unwrap();
        assert_eq!(present(&own), ["stripe_secret_key"]);
    }

    #[test]
    fn production_guard_checks_only_the_parts_a_function_reads() {
        let empty = Secrets::default();
        assert!(empty.check_production(&[], false).is_ok(), "nothing read, nothing to check");
        for (part, field) in [
            (Part::PublicKeys, "jwt_public_keys"),
            (Part::Signing, "jwt_signing_keys"),
            (Part::Stripe, "stripe_secret_key"),
            (Part::Webhook, "stripe_webhook_secrets"),
            (Part::Mfa, "mfa_encryption_keys"),
            (Part::Captcha, "captcha_secret"),
            (Part::Outbox, "outbox_sealing_keys"),
            (Part::Idempotency, "idempotency_sealing_keys"),
            (Part::Unsubscribe, "unsubscribe_signing_keys"),
            (Part::Cursor, "cursor_signing_keys"),
        ] {
            let error = empty.check_production(&[part], false).unwrap_err();
            assert!(matches!(error, ConfigError::WeakSecret { field: f, .. } if f == field), "{part:?}: {error}");
        }
        assert!(empty.check_production(&[Part::Captcha], true).is_ok(), "CAPTCHA off, in so many words");
    }

    #[test]
    fn production_guard_rejects_placeholder_and_weak_values() {
        let not_a_key = Secrets::parse("s", r#"{"jwt_public_keys":[{"kid":"k","public_key_pem":"PLACEHOLDER"}]}"#);
        assert!(matches!(
            not_a_key.unwrap().check_production(&[Part::PublicKeys], false),
            Err(ConfigError::WeakSecret { field: "jwt_public_keys", .. })
        ));
        let placeholder =
            Secrets::parse("s", r#"{"jwt_signing_keys":[{"kid":"k","private_key_pem":"PLACEHOLDER"}]}"#).unwrap();
        assert!(placeholder.check_production(&[Part::Signing], false).is_err());

        let short_pem =
            "-----BEGIN PRIVATE KEY-----\nMIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEA\n-----END PRIVATE KEY-----";
        let short = Secrets::parse(
            "s",
            &serde_json::json!({"jwt_signing_keys":[{"kid":"k","private_key_pem":short_pem}]}).to_string(),
        )
        .unwrap();
        assert!(matches!(
            short.check_production(&[Part::Signing], false),
            Err(ConfigError::WeakSecret { field: "jwt_signing_keys", .. })
        ));
        let webhook = Secrets::parse(
            "s",
            r#"{"stripe_webhook_secrets":["whsec_0123456789abcdef0123456789abcdef"],"stripe_connect_webhook_secrets":["whsec_CHANGEME_CHANGEME_CHANGEME_00"]}"#,
        )
        .unwrap();
        assert!(matches!(
            webhook.check_production(&[Part::Webhook], false),
            Err(ConfigError::WeakSecret { field: "stripe_connect_webhook_secrets", .. })
        ));
        let stripe = Secrets::parse("s", r#"{"stripe_secret_key":"sk_live_CHANGEME_placeholder_value"}"#).unwrap();
        assert!(stripe.check_production(&[Part::Stripe], false).is_err());
        let same_bytes = Secrets::parse(
            "s",
            &serde_json::json!({"cursor_signing_keys":[{"kid":"c","key":base64::engine::general_purpose::STANDARD.encode([7u8; 32])}]})
                .to_string(),
        )
        .unwrap();
        assert!(same_bytes.check_production(&[Part::Cursor], false).is_err(), "not random");
    }

    #[test]
    fn secrets_debug_output_redacts_values() {
        let s = Secrets::parse(
            "s",
            r#"{"stripe_secret_key":"sk_test_supersecretvalue123456","stripe_webhook_secrets":["whsec_abc"]}"#,
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("supersecret"));
        assert!(!shown.contains("whsec_abc"));
    }

    #[test]
    fn a_mis_shaped_secret_is_reported_without_a_byte_of_it() {
        for (part, json) in [
            (Part::Signing, r#"{"jwt_signing_keys":"sk_live_SECRETBYTES0123456789"}"#),
            (Part::Webhook, r#"{"stripe_webhook_secrets":"whsec_SECRETBYTES0123456789"}"#),
            (Part::Stripe, r#"{"stripe_secret_key":["sk_live_SECRETBYTES0123456789"]}"#),
            (Part::Stripe, r#"{"stripe_secret_key":"sk_live_SECRETBYTES0123456789""#),
            (Part::Stripe, r#"sk_live_SECRETBYTES0123456789"#),
        ] {
            let error = Secrets::parse_part(part, "app/secret", json).unwrap_err().to_string();
            assert!(!error.contains("SECRETBYTES") && !error.contains("sk_live"), "{error}");
            assert!(error.contains("app/secret"), "{error}");
        }
        let error =
            Secrets::parse_part(Part::Signing, "s", r#"{"jwt_signing_keys":"sk_live_x"}"#).unwrap_err().to_string();
        assert!(error.contains("jwt_signing_keys"), "names where: {error}");
    }
}
