//! What a function builds once per cold start and borrows for every request: the
//! [`Services`] (settings, the table, the secrets) and the clients only some functions use
//! (SES, SNS, Stripe, the token keys, the CAPTCHA check). Clients are built on first use,
//! so a function pays only for the services it touches.

use std::future::Future;
#[cfg(any(feature = "mail", feature = "sns"))]
use std::sync::OnceLock;

use lambda_http::{Body, Request, Response, service_fn};

#[cfg(feature = "sns")]
use crate::notify::EventPublisher;
#[cfg(feature = "mail")]
use crate::notify::Mailer;
#[cfg(feature = "payments")]
use crate::payments::PaymentServices;
use crate::{
    config::{ConfigError, Settings},
    secrets::Part,
};

pub struct App {
    /// Settings, the table, the secrets, the token keys (and Stripe, in a payments
    /// function): what domain code takes.
    services: Base,
    #[cfg(feature = "mail")]
    mailer: OnceLock<Mailer>,
    #[cfg(feature = "sns")]
    events: OnceLock<EventPublisher>,
    #[cfg(feature = "sns")]
    sns: OnceLock<aws_sdk_sns::Client>,
}

/// What domain code borrows the app as: the services every function has, the token keys
/// and the CAPTCHA check, and Stripe in a function that takes payments.
#[cfg(feature = "payments")]
pub type Base = PaymentServices;
#[cfg(not(feature = "payments"))]
pub type Base = crate::identity::IdentityServices;

impl std::ops::Deref for App {
    type Target = Base;

    fn deref(&self) -> &Base {
        &self.services
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

    /// The whole backend in one process (tests, benchmarks): every secret. Every client
    /// made from `sdk` gets the settings' timeouts.
    pub fn new(settings: Settings, sdk: aws_config::SdkConfig) -> Self {
        Self {
            services: Base::new(settings, sdk),
            #[cfg(feature = "mail")]
            mailer: OnceLock::new(),
            #[cfg(feature = "sns")]
            events: OnceLock::new(),
            #[cfg(feature = "sns")]
            sns: OnceLock::new(),
        }
    }

    /// This app reading only `parts` of the secrets: what one function declares.
    pub fn reading(mut self, parts: &'static [Part]) -> Self {
        self.services = self.services.reading(parts);
        self
    }

    /// The browser-safety rules of this function's API Gateway routes.
    pub fn browser(&self) -> crate::http::Browser<'_> {
        crate::http::Browser::Guarded { allowed_origins: &self.settings().allowed_origins }
    }

    #[cfg(feature = "mail")]
    pub fn mailer(&self) -> &Mailer {
        self.mailer.get_or_init(|| {
            Mailer::new(
                aws_sdk_sesv2::Client::new(self.sdk()),
                &self.settings().email_from,
                self.settings().ses_configuration_set.clone(),
            )
        })
    }

    #[cfg(feature = "sns")]
    pub fn events(&self) -> &EventPublisher {
        self.events.get_or_init(|| EventPublisher::new(self.sns().clone(), self.settings().events_topic_arn.clone()))
    }

    /// SNS, for push endpoints (events and SMS go through [`App::events`]).
    #[cfg(feature = "sns")]
    pub fn sns(&self) -> &aws_sdk_sns::Client {
        self.sns.get_or_init(|| aws_sdk_sns::Client::new(self.sdk()))
    }

    /// What the first request would otherwise wait for, done during init (which Lambda
    /// runs at full CPU, and before anyone waits): the secrets fetched and the token keys
    /// parsed, while the DynamoDB client is built. Best effort: a failure here is the first
    /// request's to report.
    pub async fn warm_up(&self) {
        let token_keys = self.parts().iter().any(|p| matches!(p, Part::PublicKeys | Part::Signing));
        let (keys, ()) = tokio::join!(
            async {
                if token_keys {
                    self.keys().await.map(drop).map_err(crate::http::ApiError::from)
                } else if !self.parts().is_empty() {
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

#[cfg(feature = "sns")]
impl crate::notify::Channels for App {
    fn services(&self) -> &crate::services::Services {
        self
    }

    #[cfg(feature = "mail")]
    fn mailer(&self) -> &Mailer {
        App::mailer(self)
    }

    fn events(&self) -> &EventPublisher {
        App::events(self)
    }

    fn sns(&self) -> &aws_sdk_sns::Client {
        App::sns(self)
    }
}
