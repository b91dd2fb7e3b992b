//! What account code takes: the services every function has, the token keys built from the
//! secret, and the CAPTCHA check. Every function's `App` stands on this.

use std::{ops::Deref, sync::Arc, sync::OnceLock};

use super::jwt::KeySet;
use crate::{
    caller::RequestMeta,
    captcha::CaptchaVerifier,
    config::Settings,
    identity::AccountError,
    secrets::Part,
    services::{DerivedFromSecret, Services},
};

pub struct IdentityServices {
    services: Services,
    keys: DerivedFromSecret<Arc<KeySet>>,
    captcha: OnceLock<CaptchaVerifier>,
}

impl Deref for IdentityServices {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

impl IdentityServices {
    /// See [`Services::new`]; the keys and the CAPTCHA check are built on first use.
    pub fn new(settings: Settings, sdk: aws_config::SdkConfig) -> Self {
        Self { services: Services::new(settings, sdk), keys: DerivedFromSecret::new(), captcha: OnceLock::new() }
    }

    /// These services reading only `parts` of the secrets: what one function declares.
    pub fn reading(mut self, parts: &'static [Part]) -> Self {
        self.services = self.services.reading(parts);
        self
    }

    /// The JWT key set for the current secret.
    pub async fn keys(&self) -> Result<Arc<KeySet>, AccountError> {
        let secrets = self.secrets().get().await.map_err(AccountError::internal)?;
        self.keys.get(secrets, |s| KeySet::from_secrets(s).map(Arc::new).map_err(AccountError::internal)).await
    }

    /// When CAPTCHA is configured, `token` must be a solved CAPTCHA: 400 `captcha_required`
    /// if not, 503 `captcha_unavailable` if the provider cannot say. Without it, nothing.
    pub async fn require_captcha(&self, token: Option<&str>, meta: &RequestMeta) -> Result<(), AccountError> {
        let secrets = self.secrets().get().await.map_err(AccountError::internal)?;
        let Some(secret) = &secrets.captcha_secret else { return Ok(()) };
        let verifier = self.captcha.get_or_init(|| CaptchaVerifier::new(&self.settings().captcha));
        Ok(verifier.verify(secret, token, meta.source_ip.as_deref()).await?)
    }
}
