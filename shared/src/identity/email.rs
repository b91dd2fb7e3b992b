//! An email address as we store and compare it: trimmed, lower-cased, syntactically valid.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let normalised = raw.trim().to_lowercase();
        if normalised.is_empty() {
            return Err("is required");
        }
        if normalised.len() > 254 {
            return Err("must be at most 254 characters");
        }
        let parsed = email_address::EmailAddress::from_str(&normalised).map_err(|_| "is not a valid email address")?;
        let domain = parsed.domain();
        // Addresses we can actually deliver to have a dotted domain name.
        if !domain.contains('.') || domain.starts_with('[') || domain.ends_with('.') {
            return Err("is not a valid email address");
        }
        if parsed.display_part() != "" {
            return Err("is not a valid email address");
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }
}

impl TryFrom<String> for Email {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lowercases() {
        assert_eq!(Email::parse("  Alice.Smith+x@Example.COM ").unwrap().as_str(), "alice.smith+x@example.com");
    }

    #[test]
    fn rejects_invalid_addresses() {
        for bad in [
            "",
            "   ",
            "plain",
            "a@b",
            "@example.com",
            "a@",
            "a b@example.com",
            "Alice <a@example.com>",
            "a@example.com.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn accepts_ordinary_addresses() {
        for good in ["a@example.com", "first.last@sub.example.co.uk", "x+tag@example.io"] {
            assert!(Email::parse(good).is_ok(), "{good:?} should be accepted");
        }
    }
}
