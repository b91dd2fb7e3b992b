//! Errors as RFC 9457 problem documents. Only [`ApiError`] knows statuses: the kernel's errors
//! convert into it here, and each domain's in `domain_errors`.

use lambda_http::{Body, Response, http::StatusCode};

pub use crate::invalid::{FieldError, required_field};

/// Every error a client can see. `code` strings are part of the contract (API.md).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the token is invalid, expired or already used")]
    TokenInvalid,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("a valid access token is required")]
    Unauthorized,
    #[error("this refresh token was already used; the session has been revoked")]
    TokenReused,
    /// The second step of a login can no longer be finished with this `mfa_token`.
    #[error("this sign-in has expired or was tried too often; sign in with your password again")]
    MfaRequired,
    #[error("the email address has not been verified")]
    EmailNotVerified,
    #[error("you are not allowed to do this")]
    Forbidden,
    /// `forbidden`, with a reason the caller may be told.
    #[error("{0}")]
    ForbiddenBecause(&'static str),
    #[error("cross-site request check failed")]
    CsrfFailed,
    /// A body not declared `application/json`.
    #[error("the request body must be sent as Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("signature verification failed")]
    SignatureInvalid,
    #[error("not found")]
    NotFound,
    /// A route of ours, asked with a method it does not take; holds the `Allow` value.
    #[error("this route takes only {0}")]
    MethodNotAllowed(String),
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
    /// Stripe refused the call; nothing was left half-done. The reason (Stripe's own text)
    /// goes to the logs, never to the client.
    #[error("the payment provider refused the request")]
    PaymentProvider(String),
    #[error("too many requests")]
    RateLimited { retry_after_seconds: u64 },
    #[error("payments are not available")]
    PaymentsUnavailable,
    #[error("a solved CAPTCHA (captcha_token) is required")]
    CaptchaRequired,
    /// The CAPTCHA provider could not be asked; the request is refused, not waved through.
    #[error("the CAPTCHA check is unavailable; try again shortly")]
    CaptchaUnavailable,
    /// Never shown to the client beyond a generic message; logged with the request id.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::MalformedJson(_) | Self::TokenInvalid | Self::CaptchaRequired => {
                StatusCode::BAD_REQUEST
            }
            Self::InvalidCredentials | Self::Unauthorized | Self::TokenReused | Self::MfaRequired => {
                StatusCode::UNAUTHORIZED
            }
            Self::EmailNotVerified
            | Self::Forbidden
            | Self::ForbiddenBecause(_)
            | Self::CsrfFailed
            | Self::SignatureInvalid => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Conflict(_)
            | Self::ReleaseInProgress
            | Self::PaymentNotSucceeded
            | Self::OnboardingRequired
            | Self::IdempotencyInProgress => StatusCode::CONFLICT,
            Self::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PaymentProvider(_) => StatusCode::BAD_GATEWAY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::PaymentsUnavailable | Self::CaptchaUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) => "validation_failed",
            Self::MalformedJson(_) => "malformed_json",
            Self::TokenInvalid => "token_invalid",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Unauthorized => "unauthorized",
            Self::TokenReused => "token_reused",
            Self::MfaRequired => "mfa_required",
            Self::EmailNotVerified => "email_not_verified",
            Self::Forbidden | Self::ForbiddenBecause(_) => "forbidden",
            Self::CsrfFailed => "csrf_failed",
            Self::SignatureInvalid => "signature_invalid",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Conflict(_) => "conflict",
            Self::ReleaseInProgress => "release_in_progress",
            Self::PaymentNotSucceeded => "payment_not_succeeded",
            Self::OnboardingRequired => "onboarding_required",
            Self::IdempotencyMismatch => "idempotency_mismatch",
            Self::IdempotencyInProgress => "idempotency_in_progress",
            Self::PaymentProvider(_) => "payment_provider_error",
            Self::RateLimited { .. } => "rate_limited",
            Self::PaymentsUnavailable => "payments_unavailable",
            Self::CaptchaRequired => "captcha_required",
            Self::CaptchaUnavailable => "captcha_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::Validation(_) => "Validation failed",
            Self::MalformedJson(_) => "Malformed JSON",
            Self::TokenInvalid => "Invalid token",
            Self::InvalidCredentials => "Invalid credentials",
            Self::Unauthorized => "Unauthorized",
            Self::TokenReused => "Token reused",
            Self::MfaRequired => "Second factor required",
            Self::EmailNotVerified => "Email not verified",
            Self::Forbidden | Self::ForbiddenBecause(_) => "Forbidden",
            Self::CsrfFailed => "CSRF check failed",
            Self::SignatureInvalid => "Invalid signature",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed(_) => "Method not allowed",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::Conflict(_) => "Conflict",
            Self::ReleaseInProgress => "Release in progress",
            Self::PaymentNotSucceeded => "Payment not succeeded",
            Self::OnboardingRequired => "Onboarding required",
            Self::IdempotencyMismatch => "Idempotency key reused",
            Self::IdempotencyInProgress => "Idempotent request in progress",
            Self::PaymentProvider(_) => "Payment provider error",
            Self::RateLimited { .. } => "Too many requests",
            Self::PaymentsUnavailable => "Payments unavailable",
            Self::CaptchaRequired => "CAPTCHA required",
            Self::CaptchaUnavailable => "CAPTCHA unavailable",
            Self::Internal(_) => "Internal error",
        }
    }

    /// What the client reads in `detail`. Internal details stay in the logs.
    fn detail(&self) -> String {
        match self {
            Self::Internal(_) => "An unexpected error occurred. Quote the request id if you contact support.".into(),
            other => other.to_string(),
        }
    }

    pub fn to_response(&self, request_id: &str) -> Response<Body> {
        let status = self.status();
        match self {
            Self::Internal(detail) => tracing::error!(code = self.code(), %detail, "request failed"),
            Self::PaymentProvider(reason) => tracing::warn!(code = self.code(), %reason, "Stripe refused"),
            _ => tracing::info!(code = self.code(), status = status.as_u16(), "request rejected"),
        }
        let mut doc = serde_json::json!({
            "type": format!("https://errors.serverless-backend.dev/{}", self.code()),
            "title": self.title(),
            "status": status.as_u16(),
            "detail": self.detail(),
            "code": self.code(),
            "request_id": request_id,
        });
        if let Self::Validation(errors) = self {
            doc["errors"] = serde_json::to_value(errors).expect("field errors serialize");
        }
        let mut builder = Response::builder()
            .status(status)
            .header("content-type", "application/problem+json")
            .header("cache-control", "no-store");
        if let Self::RateLimited { retry_after_seconds } = self {
            builder = builder.header("retry-after", retry_after_seconds.to_string());
        }
        if let Self::MethodNotAllowed(allow) = self {
            builder = builder.header("allow", allow.as_str());
        }
        builder.body(Body::from(doc.to_string())).expect("static headers are valid")
    }
}

/// Storage and sealing failures are ours, never the caller's: 500 (their detail is logged,
/// not answered).
impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        ApiError::internal(error)
    }
}

impl From<crate::rate_limit::RateLimitError> for ApiError {
    fn from(error: crate::rate_limit::RateLimitError) -> Self {
        use crate::rate_limit::RateLimitError;
        match error {
            RateLimitError::Limited { retry_after_seconds } => ApiError::RateLimited { retry_after_seconds },
            RateLimitError::Store(error) => ApiError::internal(error),
        }
    }
}

/// Fields that do not parse: 400 `validation_failed`, naming each.
impl From<crate::invalid::Invalid> for ApiError {
    fn from(invalid: crate::invalid::Invalid) -> Self {
        ApiError::Validation(invalid.0)
    }
}

/// Secrets that cannot be read or are not as they must be: ours, 500.
impl From<crate::config::ConfigError> for ApiError {
    fn from(error: crate::config::ConfigError) -> Self {
        ApiError::internal(error)
    }
}

impl From<crate::seal::CipherError> for ApiError {
    fn from(error: crate::seal::CipherError) -> Self {
        ApiError::internal(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_json(resp: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(resp.body().as_ref()).unwrap()
    }

    #[test]
    fn validation_problem_lists_fields() {
        let resp =
            ApiError::Validation(vec![FieldError::new("email", "is not a valid email address")]).to_response("req-1");
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let doc = body_json(&resp);
        assert_eq!(doc["code"], "validation_failed");
        assert_eq!(doc["request_id"], "req-1");
        assert_eq!(doc["errors"][0]["field"], "email");
        for key in ["type", "title", "status", "detail"] {
            assert!(doc.get(key).is_some(), "missing {key}");
        }
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let resp = ApiError::internal("dynamodb said: table arn:aws:... missing").to_response("r");
        assert_eq!(resp.status(), 500);
        let text = String::from_utf8(resp.body().as_ref().to_vec()).unwrap();
        assert!(!text.contains("dynamodb"));
        assert!(text.contains("\"code\":\"internal\""));
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let resp = ApiError::RateLimited { retry_after_seconds: 42 }.to_response("r");
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "42");
    }
}
