//! Why payment code refused or failed, in payment terms: the state, the caller's rights,
//! Stripe's answer, or what broke underneath. The edge answers each as problem+json
//! (`http::domain_errors`); no payment code knows a status.

use super::GatewayError;
use crate::{
    config::ConfigError,
    identity::AccountError,
    invalid::{FieldError, Invalid},
    rate_limit::RateLimitError,
    seal::CipherError,
    store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// Fields that do not parse, every one.
    #[error("invalid fields")]
    Validation(Vec<FieldError>),
    #[error("you are not allowed to do this")]
    Forbidden,
    #[error("not found")]
    NotFound,
    /// The payment's state does not allow it; the reason may be told.
    #[error("{0}")]
    Conflict(String),
    #[error("the payment is being released by another request")]
    ReleaseInProgress,
    #[error("the payment has not succeeded yet")]
    PaymentNotSucceeded,
    #[error("the provider has not finished onboarding (payouts are not enabled)")]
    OnboardingRequired,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyInProgress,
    /// Stripe refused; its reason is for the logs, not the caller.
    #[error("the payment provider refused the request: {0}")]
    PaymentProvider(String),
    /// No Stripe key in this deployment's secret.
    #[error("payments are not available")]
    PaymentsUnavailable,
    #[error(transparent)]
    Gateway(GatewayError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    RateLimited(#[from] RateLimitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] CipherError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Ours, never the caller's: logged, answered as a generic 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl PaymentError {
    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }
}

/// Logged where it happens, as before it was answered: background work (the cleanup's
/// reconciliation) may drop the error after counting it, and the log is then all there is.
impl From<GatewayError> for PaymentError {
    fn from(error: GatewayError) -> Self {
        tracing::error!(%error, "Stripe call failed");
        Self::Gateway(error)
    }
}

impl From<Invalid> for PaymentError {
    fn from(invalid: Invalid) -> Self {
        Self::Validation(invalid.0)
    }
}
