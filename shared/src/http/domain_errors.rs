//! How each domain's errors are answered: the one place a domain error becomes an
//! [`ApiError`] (and so a status and a `code`). Domains know nothing of HTTP; the edge
//! maps them here, once.

use super::ApiError;
use crate::identity::{AccountError, RegisterError};

impl From<AccountError> for ApiError {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::Invalid(invalid) => invalid.into(),
            AccountError::TokenInvalid => ApiError::TokenInvalid,
            AccountError::InvalidCredentials => ApiError::InvalidCredentials,
            AccountError::Unauthorized => ApiError::Unauthorized,
            AccountError::TokenReused => ApiError::TokenReused,
            AccountError::MfaRequired => ApiError::MfaRequired,
            AccountError::EmailNotVerified => ApiError::EmailNotVerified,
            AccountError::Forbidden => ApiError::Forbidden,
            AccountError::ForbiddenBecause(reason) => ApiError::ForbiddenBecause(reason),
            AccountError::CsrfFailed => ApiError::CsrfFailed,
            AccountError::NotFound => ApiError::NotFound,
            AccountError::Conflict(reason) => ApiError::Conflict(reason),
            AccountError::RateLimited(error) => error.into(),
            AccountError::Captcha(error) => error.into(),
            AccountError::Store(error) => error.into(),
            AccountError::Seal(error) => error.into(),
            AccountError::Config(error) => error.into(),
            AccountError::Internal(reason) => ApiError::Internal(reason),
        }
    }
}

#[cfg(feature = "payments")]
impl From<crate::payments::PaymentError> for ApiError {
    fn from(error: crate::payments::PaymentError) -> Self {
        use crate::payments::PaymentError;
        match error {
            PaymentError::Validation(errors) => ApiError::Validation(errors),
            PaymentError::Forbidden => ApiError::Forbidden,
            PaymentError::NotFound => ApiError::NotFound,
            PaymentError::Conflict(reason) => ApiError::Conflict(reason),
            PaymentError::ReleaseInProgress => ApiError::ReleaseInProgress,
            PaymentError::PaymentNotSucceeded => ApiError::PaymentNotSucceeded,
            PaymentError::OnboardingRequired => ApiError::OnboardingRequired,
            PaymentError::IdempotencyMismatch => ApiError::IdempotencyMismatch,
            PaymentError::IdempotencyInProgress => ApiError::IdempotencyInProgress,
            PaymentError::PaymentProvider(reason) => ApiError::PaymentProvider(reason),
            PaymentError::PaymentsUnavailable => ApiError::PaymentsUnavailable,
            PaymentError::Gateway(error) => gateway_answer(error),
            PaymentError::Account(error) => error.into(),
            PaymentError::RateLimited(error) => error.into(),
            PaymentError::Store(error) => error.into(),
            PaymentError::Seal(error) => error.into(),
            PaymentError::Config(error) => error.into(),
            PaymentError::Internal(reason) => ApiError::Internal(reason),
        }
    }
}

impl From<RegisterError> for ApiError {
    fn from(error: RegisterError) -> Self {
        AccountError::from(error).into()
    }
}

/// Stripe's failures, as the caller sees them: unknown (or not tried) is 503, a refusal is
/// the payment provider's error.
#[cfg(feature = "payments")]
impl From<crate::payments::gateway::GatewayError> for ApiError {
    fn from(error: crate::payments::gateway::GatewayError) -> Self {
        tracing::error!(%error, "Stripe call failed");
        gateway_answer(error)
    }
}

/// Stripe's failure as the caller sees it (logged where it was made).
#[cfg(feature = "payments")]
fn gateway_answer(error: crate::payments::gateway::GatewayError) -> ApiError {
    use crate::payments::gateway::GatewayError;
    match error {
        GatewayError::Unavailable(_) | GatewayError::NotSent(_) => ApiError::PaymentsUnavailable,
        GatewayError::Refused { message, .. } => ApiError::PaymentProvider(message),
    }
}

impl From<crate::audit::query::QueryError> for ApiError {
    fn from(error: crate::audit::query::QueryError) -> Self {
        use crate::audit::query::QueryError;
        match error {
            QueryError::Invalid(invalid) => invalid.into(),
            QueryError::Keys(error) => ApiError::internal(error),
            QueryError::Store(error) => ApiError::internal(error),
        }
    }
}

impl From<crate::notify::unsubscribe::UnsubscribeError> for ApiError {
    fn from(error: crate::notify::unsubscribe::UnsubscribeError) -> Self {
        use crate::notify::unsubscribe::UnsubscribeError;
        match error {
            UnsubscribeError::TokenInvalid => ApiError::TokenInvalid,
            UnsubscribeError::Keys(error) => ApiError::internal(error),
            UnsubscribeError::Store(error) => ApiError::internal(error),
        }
    }
}

#[cfg(feature = "sns")]
impl From<crate::notify::push::DeviceError> for ApiError {
    fn from(error: crate::notify::push::DeviceError) -> Self {
        use crate::notify::push::DeviceError;
        match error {
            DeviceError::Invalid(invalid) => invalid.into(),
            DeviceError::TooMany => ApiError::Conflict(error.to_string()),
            DeviceError::NotFound => ApiError::NotFound,
            DeviceError::Notify(error) => ApiError::internal(error),
            DeviceError::Store(error) => ApiError::internal(error),
        }
    }
}

/// A CAPTCHA not solved is the caller's to fix (400); one the provider could not check is
/// refused, not waved through (503).
impl From<crate::captcha::CaptchaError> for ApiError {
    fn from(error: crate::captcha::CaptchaError) -> Self {
        use crate::captcha::CaptchaError;
        match error {
            CaptchaError::Required => ApiError::CaptchaRequired,
            CaptchaError::Unavailable(reason) => {
                tracing::error!(%reason, "CAPTCHA check failed; refusing the request");
                ApiError::CaptchaUnavailable
            }
        }
    }
}
