//! Why account code refused or failed: what a caller did wrong, said in account terms, or
//! what broke underneath. The edge answers each as problem+json (`http::domain_errors`); no
//! account code knows a status.

use crate::{
    captcha::CaptchaError, config::ConfigError, invalid::Invalid, rate_limit::RateLimitError, seal::CipherError,
    store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Fields that do not parse.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A one-time token (verification, reset, invitation, revoke link) that is unknown,
    /// expired or used.
    #[error("the token is invalid, expired or already used")]
    TokenInvalid,
    #[error("invalid email or password")]
    InvalidCredentials,
    /// No valid access token (or its session is gone).
    #[error("a valid access token is required")]
    Unauthorized,
    /// A rotated refresh token presented again: the session was revoked.
    #[error("this refresh token was already used; the session has been revoked")]
    TokenReused,
    /// The second step of a login can no longer be finished with this `mfa_token`.
    #[error("this sign-in has expired or was tried too often; sign in with your password again")]
    MfaRequired,
    #[error("the email address has not been verified")]
    EmailNotVerified,
    #[error("you are not allowed to do this")]
    Forbidden,
    /// Forbidden, with a reason the caller may be told.
    #[error("{0}")]
    ForbiddenBecause(&'static str),
    /// A cookie-carried credential without the cross-site request check.
    #[error("cross-site request check failed")]
    CsrfFailed,
    #[error("not found")]
    NotFound,
    /// The state does not allow it; the reason may be told.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    RateLimited(#[from] RateLimitError),
    #[error(transparent)]
    Captcha(#[from] CaptchaError),
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

impl AccountError {
    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }
}
