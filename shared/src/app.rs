//! What a function builds once per cold start and borrows for every request: settings, the
//! AWS SDK configuration, and the clients built from it. Clients are built on first use,
//! so a function pays only for the services it touches.

use std::{
    future::Future,
    sync::{Arc, OnceLock},
};

use lambda_http::{Body, Request, Response, service_fn};

#[cfg(feature = "sns")]
use crate::notify::EventPublisher;
#[cfg(feature = "mail")]
use crate::notify::Mailer;
use crate::{
    audit::AuditLog,
    captcha::CaptchaVerifier,
    config::{ConfigError, SecretsStore, Settings},
    identity::jwt::KeySet,
    store::Table,
};
#[cfg(feature = "payments")]
use crate::{
    deadline::Deadline,
    payments::{Gateway, gateway::Stripe},
};

pub struct App {
    settings: Settings,
    sdk: aws_config::SdkConfig,
    table: OnceLock<Table>,
    #[cfg(feature = "mail")]
    mailer: OnceLock<Mailer>,
    #[cfg(feature = "sns")]
    events: OnceLock<EventPublisher>,
    #[cfg(feature = "sns")]
    sns: OnceLock<aws_sdk_sns::Client>,
    secrets: OnceLock<SecretsStore>,
    captcha: OnceLock<CaptchaVerifier>,
    keys: DerivedFromSecret<Arc<KeySet>>,
    /// `None` inside: the secret holds no Stripe key.
    #[cfg(feature = "payments")]
    gateway: DerivedFromSecret<Option<Arc<Gateway>>>,
}

/// A value built from the secret, rebuilt only when the secret is re-read.
struct DerivedFromSecret<T>(tokio::sync::Mutex<Option<(Arc<crate::config::Secrets>, T)>>);

impl<T: Clone> DerivedFromSecret<T> {
    fn new() -> Self {
        Self(tokio::sync::Mutex::new(None))
    }

    async fn get<E>(
        &self,
        secrets: Arc<crate::config::Secrets>,
        build: impl FnOnce(&crate::config::Secrets) -> Result<T, E>,
    ) -> Result<T, E> {
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

impl App {
    /// Reads settings and the SDK configuration (which honours `AWS_ENDPOINT_URL` and the
    /// per-service `AWS_ENDPOINT_URL_*` variables). Makes no network calls.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let settings = Settings::from_env()?;
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(Self::new(settings, sdk))
    }

    /// For functions that use the secret: in production, reads and checks it now, so a
    /// missing, placeholder or weak secret fails the function's init instead of a request.
    pub async fn check_secrets(&self) -> Result<(), ConfigError> {
        if self.settings.environment.is_production() {
            self.secrets().get().await?;
        }
        Ok(())
    }

    /// Every client made from `sdk` gets the settings' timeouts.
    pub fn new(settings: Settings, sdk: aws_config::SdkConfig) -> Self {
        let sdk = sdk.into_builder().timeout_config(settings.aws_timeouts.sdk_config()).build();
        Self {
            settings,
            sdk,
            table: OnceLock::new(),
            #[cfg(feature = "mail")]
            mailer: OnceLock::new(),
            #[cfg(feature = "sns")]
            events: OnceLock::new(),
            #[cfg(feature = "sns")]
            sns: OnceLock::new(),
            secrets: OnceLock::new(),
            captcha: OnceLock::new(),
            keys: DerivedFromSecret::new(),
            #[cfg(feature = "payments")]
            gateway: DerivedFromSecret::new(),
        }
    }

    /// Counts a request against a rate-limit rule; 429 `rate_limited` when spent.
    pub async fn rate_limit(&self, rule: crate::rate_limit::Rule, key: &str) -> Result<(), crate::http::ApiError> {
        self.settings.rate_limits.check(self.table(), rule, key).await
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The browser-safety rules of this function's API Gateway routes.
    pub fn browser(&self) -> crate::http::Browser<'_> {
        crate::http::Browser::Guarded { allowed_origins: &self.settings.allowed_origins }
    }

    pub fn table(&self) -> &Table {
        self.table.get_or_init(|| Table::new(aws_sdk_dynamodb::Client::new(&self.sdk), &self.settings.table_name))
    }

    pub fn audit(&self) -> AuditLog {
        AuditLog::new(self.table().clone())
    }

    #[cfg(feature = "mail")]
    pub fn mailer(&self) -> &Mailer {
        self.mailer.get_or_init(|| {
            Mailer::new(
                aws_sdk_sesv2::Client::new(&self.sdk),
                &self.settings.email_from,
                self.settings.ses_configuration_set.clone(),
            )
        })
    }

    #[cfg(feature = "sns")]
    pub fn events(&self) -> &EventPublisher {
        self.events.get_or_init(|| EventPublisher::new(self.sns().clone(), self.settings.events_topic_arn.clone()))
    }

    /// SNS, for push endpoints (events and SMS go through [`App::events`]).
    #[cfg(feature = "sns")]
    pub fn sns(&self) -> &aws_sdk_sns::Client {
        self.sns.get_or_init(|| aws_sdk_sns::Client::new(&self.sdk))
    }

    /// The init-time guard of a function that uses the secret as `use_`: in production, a
    /// missing, placeholder or weak secret (or a missing Stripe key, for payment functions)
    /// is an error.
    pub async fn check_secrets_for(&self, use_: Secrets) -> Result<(), ConfigError> {
        if use_ == Secrets::Unused || !self.settings.environment.is_production() {
            return Ok(());
        }
        let loaded = self.secrets().get().await?;
        if use_ == Secrets::RequiredWithStripe && loaded.stripe_secret_key.is_none() {
            return Err(ConfigError::WeakSecret { field: "stripe_secret_key", reason: "missing".into() });
        }
        if use_ == Secrets::RequiredToSign && loaded.jwt_signing_keys.is_empty() {
            return Err(ConfigError::WeakSecret {
                field: "jwt_signing_keys",
                reason: "missing: this function issues tokens (SIGNING_SECRET_ID names their secret)".into(),
            });
        }
        Ok(())
    }

    /// What the first request would otherwise wait for, done during init (which Lambda
    /// runs at full CPU, and before anyone waits): the secret fetched and the signing key
    /// parsed, while the DynamoDB client is built. Best effort: a failure here is the first
    /// request's to report.
    pub async fn warm_up(&self, secrets: Secrets) {
        if secrets == Secrets::Unused {
            self.table();
            return;
        }
        let (keys, ()) = tokio::join!(self.keys(), async {
            self.table();
        });
        if let Err(error) = keys {
            tracing::warn!(%error, "signing keys not loaded at init; the first request will try again");
        }
    }

    /// The JWT key set for the current secret.
    pub async fn keys(&self) -> Result<Arc<KeySet>, crate::http::ApiError> {
        let secrets = self.secrets().get().await.map_err(crate::http::ApiError::internal)?;
        self.keys.get(secrets, |s| KeySet::from_secrets(s).map(Arc::new).map_err(crate::http::ApiError::internal)).await
    }

    #[cfg(feature = "payments")]
    /// The Stripe client, for calls made within `deadline`. Without a Stripe key in the
    /// secret: 503 `payments_unavailable` (production functions that take payments refuse to
    /// start instead).
    pub async fn stripe(&self, deadline: Deadline) -> Result<Stripe, crate::http::ApiError> {
        let secrets = self.secrets().get().await.map_err(crate::http::ApiError::internal)?;
        let gateway = self
            .gateway
            .get(secrets, |s| {
                Gateway::from_config(&self.settings, s)
                    .map(|g| g.map(Arc::new))
                    .map_err(crate::http::ApiError::internal)
            })
            .await?;
        gateway.map(|g| g.within(deadline)).ok_or(crate::http::ApiError::PaymentsUnavailable)
    }

    /// What seals and opens MFA secrets, from the secret's `mfa_encryption_keys`.
    pub async fn mfa_cipher(&self) -> Result<crate::seal::Sealer, crate::seal::CipherError> {
        self.sealer(crate::seal::MFA_TOTP).await
    }

    /// What seals and opens email and SMS outbox items.
    pub async fn outbox_sealer(&self) -> Result<crate::seal::Sealer, crate::seal::CipherError> {
        self.sealer(crate::seal::OUTBOX).await
    }

    /// What seals and opens values for `purpose`, from the secret's keys for it.
    pub async fn sealer(&self, purpose: crate::seal::Purpose) -> Result<crate::seal::Sealer, crate::seal::CipherError> {
        let secrets =
            self.secrets().get().await.map_err(|e| crate::seal::CipherError::KeysUnavailable(e.to_string()))?;
        crate::seal::Sealer::from_secrets(&secrets, purpose)
    }

    /// Whether CAPTCHA is configured: the secret holds a `captcha_secret`.
    pub async fn captcha_configured(&self) -> Result<bool, crate::http::ApiError> {
        let secrets = self.secrets().get().await.map_err(crate::http::ApiError::internal)?;
        Ok(secrets.captcha_secret.is_some())
    }

    /// When CAPTCHA is configured, `token` must be a solved CAPTCHA: 400 `captcha_required`
    /// if not, 503 `captcha_unavailable` if the provider cannot say. Without it, nothing.
    pub async fn require_captcha(
        &self,
        token: Option<&str>,
        meta: &crate::http::RequestMeta,
    ) -> Result<(), crate::http::ApiError> {
        let secrets = self.secrets().get().await.map_err(crate::http::ApiError::internal)?;
        let Some(secret) = &secrets.captcha_secret else { return Ok(()) };
        let verifier = self.captcha.get_or_init(|| CaptchaVerifier::new(&self.settings.captcha));
        Ok(verifier.verify(secret, token, meta.source_ip.as_deref()).await?)
    }

    pub fn secrets(&self) -> &SecretsStore {
        self.secrets.get_or_init(|| SecretsStore::new(aws_sdk_secretsmanager::Client::new(&self.sdk), &self.settings))
    }
}

/// Whether a function reads the Secrets Manager secret (and so is guarded by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Unused,
    Required,
    /// The secret and the signing secret (`SIGNING_SECRET_ID`): the function that issues
    /// access tokens.
    RequiredToSign,
    /// The secret, including the Stripe API key.
    RequiredWithStripe,
}

/// The whole `main` of an HTTP function: logging, the app, and the Lambda loop.
pub async fn run_http<F, Fut>(secrets: Secrets, handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(&'static App, Request) -> Fut,
    Fut: Future<Output = Response<Body>> + Send,
{
    crate::telemetry::init();
    let app = async {
        let app = App::from_env().await?;
        app.check_secrets_for(secrets).await?;
        app.warm_up(secrets).await;
        Ok::<_, ConfigError>(app)
    };
    // Leaked on purpose: it lives as long as the process, and handlers borrow it freely.
    let app: &'static App = match app.await {
        Ok(app) => Box::leak(Box::new(app)),
        Err(error) => {
            tracing::error!(%error, "function init failed");
            return Err(error.into());
        }
    };
    lambda_http::run(service_fn(|req| {
        let response = handler(app, req);
        async move {
            let response = response.await;
            // A 500 we answer is not a Lambda error: the 5xx alarms watch this metric.
            crate::metrics::record_response(response.status());
            Ok::<_, std::convert::Infallible>(response)
        }
    }))
    .await
}
