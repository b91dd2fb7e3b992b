//! Input that does not parse: the fields at fault, each with what is wrong, so a caller
//! hears of every bad field at once. Domain parsers return [`Invalid`]; the edge answers it
//! as 400 `validation_failed`.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// A required field through its parser: the value, or `None` with the problem added to
/// `errors`, so a handler can report every bad field at once.
pub fn required_field<T, E: Into<String>>(
    field: &str,
    parsed: Option<Result<T, E>>,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match parsed {
        None => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
        Some(Err(message)) => {
            errors.push(FieldError::new(field, message));
            None
        }
        Some(Ok(value)) => Some(value),
    }
}

/// Fields that do not parse (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fields: {}", .0.iter().map(|e| format!("{} {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
pub struct Invalid(pub Vec<FieldError>);

impl Invalid {
    /// One field at fault.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![FieldError::new(field, message)])
    }

    /// `Ok(())` when `errors` is empty, else the fields at fault.
    pub fn check(errors: Vec<FieldError>) -> Result<(), Self> {
        if errors.is_empty() { Ok(()) } else { Err(Self(errors)) }
    }
}
