//! The Stripe port: one client per cold start, timeouts, and bounded retries that reuse one
//! idempotency key, so a retried call can never create a second object at Stripe.

use std::{future::Future, time::Duration};

use secrecy::ExposeSecret;
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};

use super::money::{Amount, Currency};
use crate::config::{Secrets, Settings};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Stripe could not be reached or failed (5xx, 429, timeout) even after retries.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// Stripe answered and refused (4xx).
    #[error("Stripe refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
}

impl From<GatewayError> for crate::http::ApiError {
    fn from(error: GatewayError) -> Self {
        tracing::error!(%error, "Stripe call failed");
        match error {
            GatewayError::Unavailable(_) => crate::http::ApiError::PaymentsUnavailable,
            GatewayError::Refused { message, .. } => crate::http::ApiError::PaymentProvider(message),
        }
    }
}

fn classify(error: StripeError) -> (bool, GatewayError) {
    match error {
        StripeError::Stripe(details, status) => {
            let message = details.message.clone().unwrap_or_else(|| "no message".into());
            if status >= 500 || status == 429 || status == 409 {
                (true, GatewayError::Unavailable(format!("{status}: {message}")))
            } else {
                (false, GatewayError::Refused { status, message })
            }
        }
        StripeError::Timeout => (true, GatewayError::Unavailable("timeout".into())),
        StripeError::ClientError(e) => (true, GatewayError::Unavailable(e)),
        other => (false, GatewayError::Unavailable(other.to_string())),
    }
}

pub struct Gateway {
    client: stripe::Client,
    max_attempts: u32,
}

/// What a created PaymentIntent gives back.
pub struct CreatedIntent {
    pub id: String,
    pub client_secret: String,
}

impl Gateway {
    /// `None` when the secret holds no Stripe key.
    pub fn from_config(settings: &Settings, secrets: &Secrets) -> Result<Option<Self>, GatewayError> {
        let Some(key) = &secrets.stripe_secret_key else {
            return Ok(None);
        };
        let mut builder = stripe::ClientBuilder::new(key.expose_secret()).timeout(settings.stripe.timeout);
        if let Some(base) = &settings.stripe.api_base {
            builder = builder.url(base.clone());
        }
        let client = builder.build().map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        Ok(Some(Self { client, max_attempts: settings.stripe.max_attempts }))
    }

    /// Runs `make` until it succeeds, fails for good, or `max_attempts` is spent, every time
    /// with the same idempotency key.
    async fn call<T, F, Fut>(&self, key: &str, make: F) -> Result<T, GatewayError>
    where
        F: Fn(RequestStrategy) -> Fut,
        Fut: Future<Output = Result<T, StripeError>>,
    {
        let key =
            IdempotencyKey::new(key).map_err(|e| GatewayError::Unavailable(format!("bad idempotency key: {e}")))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match make(RequestStrategy::Idempotent(key.clone())).await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    let (retryable, error) = classify(error);
                    if !retryable || attempt >= self.max_attempts {
                        return Err(error);
                    }
                    tracing::warn!(%error, attempt, "Stripe call failed; retrying with the same idempotency key");
                    tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt - 1))).await;
                }
            }
        }
    }

    /// An Express connected account for a provider.
    pub async fn create_account(
        &self,
        key: &str,
        country: Option<&str>,
        business_type: Option<&str>,
        email: &str,
        provider_id: &str,
    ) -> Result<String, GatewayError> {
        use stripe_connect::account::{CreateAccount, CreateAccountType};
        use stripe_shared::AccountBusinessType as CreateAccountBusinessType;
        let account = self
            .call(key, |strategy| {
                let mut request = CreateAccount::new()
                    .type_(CreateAccountType::Express)
                    .email(email)
                    .metadata([("provider_id".to_owned(), provider_id.to_owned())]);
                if let Some(country) = country {
                    request = request.country(country);
                }
                if let Some(kind) = business_type {
                    request = request.business_type(match kind {
                        "company" => CreateAccountBusinessType::Company,
                        "non_profit" => CreateAccountBusinessType::NonProfit,
                        "government_entity" => CreateAccountBusinessType::GovernmentEntity,
                        _ => CreateAccountBusinessType::Individual,
                    });
                }
                async move { request.customize().request_strategy(strategy).send(&self.client).await }
            })
            .await?;
        Ok(account.id.as_str().to_owned())
    }

    /// A fresh onboarding link (links are single-use and short-lived, so never cached).
    pub async fn create_account_link(
        &self,
        account: &str,
        refresh_url: &str,
        return_url: &str,
    ) -> Result<String, GatewayError> {
        use stripe_connect::account_link::CreateAccountLink;
        use stripe_connect::account_link::CreateAccountLinkType;
        let key = format!("account-link:{}", uuid::Uuid::new_v4());
        let link = self
            .call(&key, |strategy| {
                let request = CreateAccountLink::new(account, CreateAccountLinkType::AccountOnboarding)
                    .refresh_url(refresh_url)
                    .return_url(return_url);
                async move { request.customize().request_strategy(strategy).send(&self.client).await }
            })
            .await?;
        Ok(link.url)
    }

    pub async fn create_customer(&self, key: &str, email: &str, user_id: &str) -> Result<String, GatewayError> {
        use stripe_core::customer::CreateCustomer;
        let customer = self
            .call(key, |strategy| {
                let request = CreateCustomer::new().email(email).metadata([("user_id".to_owned(), user_id.to_owned())]);
                async move { request.customize().request_strategy(strategy).send(&self.client).await }
            })
            .await?;
        Ok(customer.id.as_str().to_owned())
    }

    /// A PaymentIntent charged to the platform, grouped for the later transfer.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_payment_intent(
        &self,
        key: &str,
        amount: Amount,
        currency: &Currency,
        customer: &str,
        payment_id: &str,
        description: Option<&str>,
    ) -> Result<CreatedIntent, GatewayError> {
        use stripe_core::payment_intent::{CreatePaymentIntent, CreatePaymentIntentAutomaticPaymentMethods};
        let intent = self
            .call(key, |strategy| {
                let mut request = CreatePaymentIntent::new(amount.minor_units(), currency.to_stripe())
                    .customer(customer)
                    .transfer_group(payment_id)
                    .automatic_payment_methods(CreatePaymentIntentAutomaticPaymentMethods::new(true))
                    .metadata([("payment_id".to_owned(), payment_id.to_owned())]);
                if let Some(description) = description {
                    request = request.description(description);
                }
                async move { request.customize().request_strategy(strategy).send(&self.client).await }
            })
            .await?;
        let client_secret = intent
            .client_secret
            .clone()
            .ok_or_else(|| GatewayError::Unavailable("PaymentIntent without client_secret".into()))?;
        Ok(CreatedIntent { id: intent.id.as_str().to_owned(), client_secret })
    }

    /// Moves held funds to the provider's connected account.
    pub async fn create_transfer(
        &self,
        key: &str,
        amount: i64,
        currency: &Currency,
        destination: &str,
        payment_id: &str,
    ) -> Result<String, GatewayError> {
        use stripe_connect::transfer::CreateTransfer;
        let transfer = self
            .call(key, |strategy| {
                let request = CreateTransfer::new(currency.to_stripe(), destination)
                    .amount(amount)
                    .transfer_group(payment_id)
                    .metadata([("payment_id".to_owned(), payment_id.to_owned())]);
                async move { request.customize().request_strategy(strategy).send(&self.client).await }
            })
            .await?;
        Ok(transfer.id.as_str().to_owned())
    }

    pub async fn create_refund(
        &self,
        key: &str,
        payment_intent: &str,
        payment_id: &str,
        reason: Option<&str>,
    ) -> Result<String, GatewayError> {
        use stripe_core::refund::{CreateRefund, CreateRefundReason};
        let refund = self
            .call(key, |strategy| {
                let mut request = CreateRefund::new()
                    .payment_intent(payment_intent)
                    .metadata([("payment_id".to_owned(), payment_id.to_owned())]);
                if let Some(reason) = reason {
                    request = request.reason(match reason {
                        "duplicate" => CreateRefundReason::Duplicate,
                        "fraudulent" => CreateRefundReason::Fraudulent,
                        _ => CreateRefundReason::RequestedByCustomer,
                    });
                }
                async move { request.customize().request_strategy(strategy).send(&self.client).await }
            })
            .await?;
        Ok(refund.id.as_str().to_owned())
    }
}

/// What Stripe says of a subscription.
pub struct SubscriptionState {
    pub id: String,
    pub status: String,
    pub cancel_at_period_end: bool,
    pub client_secret: Option<String>,
}

fn subscription_state(sub: stripe_shared::Subscription) -> SubscriptionState {
    let client_secret = match &sub.latest_invoice {
        Some(stripe_types::Expandable::Object(invoice)) => {
            invoice.confirmation_secret.as_ref().map(|c| c.client_secret.clone())
        }
        _ => None,
    };
    SubscriptionState {
        id: sub.id.as_str().to_owned(),
        status: sub.status.as_str().to_owned(),
        cancel_at_period_end: sub.cancel_at_period_end,
        client_secret,
    }
}

impl Gateway {
    /// A subscription that waits for its first payment (`default_incomplete`), with the
    /// invoice's client secret expanded for the client to confirm.
    pub async fn create_subscription(
        &self,
        key: &str,
        customer: &str,
        price_id: &str,
        user_id: &str,
    ) -> Result<SubscriptionState, GatewayError> {
        use stripe_billing::subscription::{
            CreateSubscription, CreateSubscriptionItems, CreateSubscriptionPaymentBehavior,
        };
        let sub = self
            .call(key, |strategy| {
                let item =
                    CreateSubscriptionItems { price: Some(price_id.to_owned()), ..CreateSubscriptionItems::new() };
                let request = CreateSubscription::new()
                    .customer(customer)
                    .items(vec![item])
                    .payment_behavior(CreateSubscriptionPaymentBehavior::DefaultIncomplete)
                    .expand(vec!["latest_invoice.confirmation_secret".to_owned()])
                    .metadata([
                        ("user_id".to_owned(), user_id.to_owned()),
                        ("price_id".to_owned(), price_id.to_owned()),
                    ]);
                async move { request.customize().request_strategy(strategy).send(&self.client).await }
            })
            .await?;
        Ok(subscription_state(sub))
    }

    /// Cancels now, or at the end of the period.
    pub async fn cancel_subscription(&self, id: &str, at_period_end: bool) -> Result<SubscriptionState, GatewayError> {
        use stripe_billing::subscription::{CancelSubscription, UpdateSubscription};
        let key = format!("cancel:{id}:{at_period_end}");
        let sub = if at_period_end {
            self.call(&key, |strategy| {
                let request = UpdateSubscription::new(id).cancel_at_period_end(true);
                async move { request.customize().request_strategy(strategy).send(&self.client).await }
            })
            .await?
        } else {
            self.call(&key, |strategy| {
                let request = CancelSubscription::new(id);
                async move { request.customize().request_strategy(strategy).send(&self.client).await }
            })
            .await?
        };
        Ok(subscription_state(sub))
    }
}
