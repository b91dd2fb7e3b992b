//! Route handlers, one module per function: parse the request, call one domain function,
//! render the answer.

pub mod account;
pub mod audit;
pub mod login;
#[cfg(feature = "sns")]
pub mod notifications;
#[cfg(feature = "payments")]
pub mod pay;
pub mod register;
pub mod reset;
pub mod verify;
#[cfg(feature = "payments")]
pub mod webhook;

use crate::{
    http::{ApiError, FieldError},
    identity::{Email, User, mfa},
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
        "phone": user.phone,
        "phone_verified": user.phone_verified,
        "mfa_enabled": user.mfa_enabled,
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

/// The second factor of a request: exactly one of `code` (from the authenticator app) and
/// `recovery_code`.
pub(crate) fn mfa_proof(code: Option<String>, recovery_code: Option<String>) -> Result<mfa::Proof, ApiError> {
    let invalid = |field: &str, message: &str| ApiError::Validation(vec![FieldError::new(field, message)]);
    match (code, recovery_code) {
        (Some(code), None) => mfa::totp::TotpCode::parse(&code).map(mfa::Proof::Code).map_err(|m| invalid("code", m)),
        (None, Some(recovery)) => {
            mfa::recovery::hash(&recovery).map(mfa::Proof::RecoveryCode).map_err(|m| invalid("recovery_code", m))
        }
        (Some(_), Some(_)) => Err(invalid("recovery_code", "give either code or recovery_code, not both")),
        (None, None) => Err(invalid("code", "is required (or recovery_code)")),
    }
}

/// A required authenticator code.
pub(crate) fn totp_code(value: Option<String>) -> Result<mfa::totp::TotpCode, ApiError> {
    let invalid = |message: &str| ApiError::Validation(vec![FieldError::new("code", message)]);
    mfa::totp::TotpCode::parse(&value.ok_or_else(|| invalid("is required"))?).map_err(invalid)
}

const MAX_NAME_CHARS: usize = 200;

/// An optional free-text field (a name): trimmed, empty is absent, at most 200 characters,
/// and nothing that reorders or hides text.
pub(crate) fn optional_text(field: &str, value: Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())?;
    if value.chars().count() > MAX_NAME_CHARS {
        errors.push(FieldError::new(field, "must be at most 200 characters"));
    } else if value.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        errors.push(FieldError::new(field, "must not contain control or text-direction characters"));
    }
    Some(value)
}

/// Unicode's explicit direction marks, embeddings, overrides and isolates: in a name they
/// end up in email subjects and admin screens, where they can reorder the text around them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}
