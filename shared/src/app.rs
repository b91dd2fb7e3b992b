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
    config::{ConfigError, Settings},
    identity::jwt::KeySet,
    secrets::{Part, Secrets, SecretsStore},
    store::Table,
};
#[cfg(feature = "payments")]
use crate::{
    deadline::Deadline,
    payments::{Gateway, gateway::Stripe},
};

pub struct App {
    settings: Settings,
    /// The secrets this function reads (its `main` says which).
    parts: &'static [Part],
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
    /// `None` inside: the Stripe secret holds no key.
    #[cfg(feature = "payments")]
    gateway: DerivedFromSecret<Option<Arc<Gateway>>>,
}

/// A value built from the secrets, rebuilt only when they are re-read.
struct DerivedFromSecret<T>(tokio::sync::Mutex<Option<(Arc<Secrets>, T)>>);

impl<T: Clone> DerivedFromSecret<T> {
    fn new() -> Self {
        Self(tokio::sync::Mutex::new(None))
    }

    async fn get<E>(&self, secrets: Arc<Secrets>, build: impl FnOnce(&Secrets) -> Result<T, E>) -> Result<T, E> {
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
    /// The app of a function that reads the secrets `parts`, from settings and the SDK
    /// configuration (which honours `AWS_ENDPOINT_URL` and the per-service
    /// `AWS_ENDPOINT_URL_*` variables). Makes no network calls.
    pub async fn from_env(parts: &'static [Part]) -> Result<Self, ConfigError> {
        let settings = Settings::from_env()?;
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(Self::new(settings, sdk).reading(parts))
    }

    /// In production, reads and checks this function's secrets now, so a missing,
    /// placeholder or weak one fails the function's init instead of a request.
    pub async fn check_secrets(&self) -> Result<(), ConfigError> {
        if self.settings.environment.is_production() && !self.parts.is_empty() {
            self.secrets().get().await?;
        }
        Ok(())
    }

    /// The whole backend in one process (tests, benchmarks): every secret. Every client
    /// made from `sdk` gets the settings' timeouts.
    pub fn new(settings: Settings, sdk: aws_config::SdkConfig) -> Self {
        let sdk = sdk.into_builder().timeout_config(settings.aws_timeouts.sdk_config()).build();
        Self {
            settings,
            parts: Part::ALL,
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
        Ok(self.settings.rate_limits.check(self.table(), rule, key).await?)
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

    /// This app reading only `parts` of the secrets: what one function declares.
    pub fn reading(mut self, parts: &'static [Part]) -> Self {
        self.parts = parts;
        self
    }

    /// What the first request would otherwise wait for, done during init (which Lambda
    /// runs at full CPU, and before anyone waits): the secrets fetched and the token keys
    /// parsed, while the DynamoDB client is built. Best effort: a failure here is the first
    /// request's to report.
    pub async fn warm_up(&self) {
        let token_keys = self.parts.iter().any(|p| matches!(p, Part::PublicKeys | Part::Signing));
        let (keys, ()) = tokio::join!(
            async {
                if token_keys {
                    self.keys().await.map(drop)
                } else if !self.parts.is_empty() {
                    self.secrets().get().await.map(drop).map_err(crate::http::ApiError::internal)
                } else {
                    Ok(())
                }
            },
            async {
                self.table();
            }
        );
        if let Err(error) = keys {
            tracing::warn!(%error, "secrets not loaded at init; the first request will try again");
        }
    }

    /// The JWT key set for the current secret.
    pub async fn keys(&self) -> Result<Arc<KeySet>, crate::http::ApiError> {
        let secrets = self.secrets().get().await.map_err(crate::http::ApiError::internal)?;
        self.keys.get(secrets, |s| KeySet::from_secrets(s).map(Arc::new).map_err(crate::http::ApiError::internal)).await
    }

    #[cfg(feature = "payments")]
    /// The Stripe client, for calls made within `deadline`. Without a Stripe key in its
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

    /// What seals and opens MFA secrets, from `mfa_encryption_keys`.
    pub async fn mfa_cipher(&self) -> Result<crate::seal::Sealer, crate::seal::CipherError> {
        self.sealer(crate::seal::MFA_TOTP).await
    }

    /// What seals and opens email and SMS outbox items.
    pub async fn outbox_sealer(&self) -> Result<crate::seal::Sealer, crate::seal::CipherError> {
        self.sealer(crate::seal::OUTBOX).await
    }

    /// What seals and opens values for `purpose`, from its keys.
    pub async fn sealer(&self, purpose: crate::seal::Purpose) -> Result<crate::seal::Sealer, crate::seal::CipherError> {
        let secrets =
            self.secrets().get().await.map_err(|e| crate::seal::CipherError::KeysUnavailable(e.to_string()))?;
        crate::seal::Sealer::from_secrets(&secrets, purpose)
    }

    /// Whether CAPTCHA is configured: its secret holds a `captcha_secret`.
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
        self.secrets.get_or_init(|| {
            SecretsStore::new(aws_sdk_secretsmanager::Client::new(&self.sdk), self.settings.secrets_store(), self.parts)
        })
    }
}

/// The whole `main` of an HTTP function that reads the secrets `parts`: logging, the app,
/// and the Lambda loop.
pub async fn run_http<F, Fut>(parts: &'static [Part], handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(&'static App, Request) -> Fut,
    Fut: Future<Output = Response<Body>> + Send,
{
    crate::telemetry::init();
    let app = async {
        let app = App::from_env(parts).await?;
        app.check_secrets().await?;
        app.warm_up().await;
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
            crate::metrics::record_response(response.status().as_u16());
            Ok::<_, std::convert::Infallible>(response)
        }
    }))
    .await
}
