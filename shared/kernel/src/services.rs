//! What every function has, whatever it serves: its settings, the AWS SDK configuration, the
//! table and the secrets, with what derives from them (sealers, rate limits). Domain code
//! takes a `&Services`; a function's `App` (at the edge) holds one and adds the clients only
//! some functions use (SES, SNS, Stripe, the token keys), so a domain never names the edge.
//!
//! Clients are built on first use: a function pays only for the services it touches.

use std::sync::{Arc, OnceLock};

use crate::{
    config::{ConfigError, Settings},
    rate_limit::{RateLimitError, Rule},
    seal::{self, CipherError, Purpose, Sealer},
    secrets::{Part, Secrets, SecretsStore},
    store::Table,
};

pub struct Services {
    settings: Settings,
    /// The secrets this function reads (its `main` says which).
    parts: &'static [Part],
    sdk: aws_config::SdkConfig,
    table: OnceLock<Table>,
    secrets: OnceLock<SecretsStore>,
}

impl Services {
    /// From settings and the SDK configuration (which honours `AWS_ENDPOINT_URL` and the
    /// per-service `AWS_ENDPOINT_URL_*` variables); every client made from `sdk` gets the
    /// settings' timeouts. Reads every secret until [`Services::reading`] says less. Makes
    /// no network calls.
    pub fn new(settings: Settings, sdk: aws_config::SdkConfig) -> Self {
        let sdk = sdk.into_builder().timeout_config(settings.aws_timeouts.sdk_config()).build();
        Self { settings, parts: Part::ALL, sdk, table: OnceLock::new(), secrets: OnceLock::new() }
    }

    /// These services reading only `parts` of the secrets: what one function declares.
    pub fn reading(mut self, parts: &'static [Part]) -> Self {
        self.parts = parts;
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The SDK configuration, for the clients a function adds.
    pub fn sdk(&self) -> &aws_config::SdkConfig {
        &self.sdk
    }

    /// The parts of the secrets this function reads.
    pub fn parts(&self) -> &'static [Part] {
        self.parts
    }

    pub fn table(&self) -> &Table {
        self.table.get_or_init(|| Table::new(aws_sdk_dynamodb::Client::new(&self.sdk), &self.settings.table_name))
    }

    pub fn secrets(&self) -> &SecretsStore {
        self.secrets.get_or_init(|| {
            SecretsStore::new(aws_sdk_secretsmanager::Client::new(&self.sdk), self.settings.secrets_store(), self.parts)
        })
    }

    /// In production, reads and checks this function's secrets now, so a missing,
    /// placeholder or weak one fails the function's init instead of a request.
    pub async fn check_secrets(&self) -> Result<(), ConfigError> {
        if self.settings.environment.is_production() && !self.parts.is_empty() {
            self.secrets().get().await?;
        }
        Ok(())
    }

    /// Counts a request against a rate-limit rule; refused when the window is spent.
    pub async fn rate_limit(&self, rule: Rule, key: &str) -> Result<(), RateLimitError> {
        self.settings.rate_limits.check(self.table(), rule, key).await
    }

    /// What seals and opens values for `purpose`, from its keys.
    pub async fn sealer(&self, purpose: Purpose) -> Result<Sealer, CipherError> {
        let secrets = self.secrets().get().await.map_err(|e| CipherError::KeysUnavailable(e.to_string()))?;
        Sealer::from_secrets(&secrets, purpose)
    }

    /// What seals and opens MFA secrets, from `mfa_encryption_keys`.
    pub async fn mfa_cipher(&self) -> Result<Sealer, CipherError> {
        self.sealer(seal::MFA_TOTP).await
    }

    /// What seals and opens email and SMS outbox items.
    pub async fn outbox_sealer(&self) -> Result<Sealer, CipherError> {
        self.sealer(seal::OUTBOX).await
    }

    /// Whether CAPTCHA is configured: the secret holds a `captcha_secret`.
    pub async fn captcha_configured(&self) -> Result<bool, ConfigError> {
        Ok(self.secrets().get().await?.captcha_secret.is_some())
    }
}

/// A value built from the secrets, rebuilt only when they are re-read.
pub struct DerivedFromSecret<T>(tokio::sync::Mutex<Option<(Arc<Secrets>, T)>>);

impl<T: Clone> DerivedFromSecret<T> {
    pub fn new() -> Self {
        Self(tokio::sync::Mutex::new(None))
    }

    pub async fn get<E>(&self, secrets: Arc<Secrets>, build: impl FnOnce(&Secrets) -> Result<T, E>) -> Result<T, E> {
        let mut slot = self.0.lock().await;
        if let Some((from, value)) = slot.as_ref()
            && Arc::ptr_eq(from, &secrets)
        {
            return Ok(value.clone());
        }
        let value = build(&secrets)?;
        *slot = Some((secrets, value.clone()));
        Ok(value)
    }
}

impl<T: Clone> Default for DerivedFromSecret<T> {
    fn default() -> Self {
        Self::new()
    }
}
