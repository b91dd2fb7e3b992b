//! Route handlers, one module per function: parse the request, call one domain function,
//! render the answer.

pub mod account;
pub mod audit;
pub mod login;
pub mod notifications;
pub mod pay;
pub mod register;
pub mod reset;
pub mod verify;
pub mod webhook;

use crate::{
    http::{ApiError, FieldError},
    identity::{Email, User},
};

/// The body of `GET /auth/me`.
pub(crate) fn me_body(user: &User) -> serde_json::Value {
    serde_json::json!({
        "user_id": user.user_id,
        "email": user.email,
        "email_verified": user.email_verified,
        "full_name": user.full_name,
        "org_id": user.org_id,
        "role": user.role,
        "created_at": user.created_at,
        "deletion_scheduled_at": user.deletion_scheduled_at,
    })
}

/// A required email field.
pub(crate) fn email_field(value: Option<String>) -> Result<Email, ApiError> {
    match value.as_deref().map(Email::parse) {
        None => Err(ApiError::Validation(vec![FieldError::new("email", "is required")])),
        Some(Err(message)) => Err(ApiError::Validation(vec![FieldError::new("email", message)])),
        Some(Ok(email)) => Ok(email),
    }
}

/// A required opaque token field. Anything that can't be one of ours is simply invalid.
pub(crate) fn token_field(field: &str, value: Option<String>) -> Result<String, ApiError> {
    match value {
        None => Err(ApiError::Validation(vec![FieldError::new(field, "is required")])),
        Some(token) if token.is_empty() || token.len() > 256 => Err(ApiError::TokenInvalid),
        Some(token) => Ok(token),
    }
}
