//! Money as the API takes it: an integer amount in the currency's minor unit and a
//! lower-case ISO 4217 code Stripe knows.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Stripe's smallest charge is about 50 cents; its largest 8 digits.
pub const MIN_AMOUNT: i64 = 50;
pub const MAX_AMOUNT: i64 = 99_999_999;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    pub fn parse(value: i64) -> Result<Self, &'static str> {
        if value < MIN_AMOUNT {
            return Err("must be at least 50 (minor units)");
        }
        if value > MAX_AMOUNT {
            return Err("must be at most 99999999 (minor units)");
        }
        Ok(Self(value))
    }

    pub fn minor_units(self) -> i64 {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err("must be a lower-case ISO 4217 code such as \"usd\"");
        }
        match stripe_types::Currency::from_str(value) {
            Ok(stripe_types::Currency::Unknown(_)) | Err(_) => Err("is not a currency Stripe supports"),
            Ok(_) => Ok(Self(value.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn to_stripe(&self) -> stripe_types::Currency {
        stripe_types::Currency::from_str(&self.0).expect("parsing is infallible")
    }

    /// Digits after the decimal point in this currency's minor unit, as Stripe counts them:
    /// none for zero-decimal currencies (¥1999 is `amount: 1999`), three for the
    /// three-decimal ones, two otherwise.
    pub fn minor_unit_digits(&self) -> u32 {
        minor_unit_digits(&self.0)
    }
}

/// See [`Currency::minor_unit_digits`]; works on any stored code.
pub fn minor_unit_digits(code: &str) -> u32 {
    const ZERO_DECIMAL: [&str; 16] = [
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    ];
    const THREE_DECIMAL: [&str; 5] = ["bhd", "jod", "kwd", "omr", "tnd"];
    let code = code.to_ascii_lowercase();
    if ZERO_DECIMAL.contains(&code.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&code.as_str()) {
        3
    } else {
        2
    }
}

/// `amount` minor units of `currency` for people: `25.00 USD`, `1999 JPY`, `1.500 KWD`.
pub fn format_amount(amount: i64, currency: &str) -> String {
    let digits = minor_unit_digits(currency);
    let code = currency.to_ascii_uppercase();
    let sign = if amount < 0 { "-" } else { "" };
    let amount = amount.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{amount} {code}");
    }
    let scale = 10u64.pow(digits);
    format!("{sign}{}.{:0width$} {code}", amount / scale, amount % scale, width = digits as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_bounded_minor_units() {
        assert!(Amount::parse(49).is_err());
        assert!(Amount::parse(-100).is_err());
        assert_eq!(Amount::parse(1999).unwrap().minor_units(), 1999);
        assert!(Amount::parse(100_000_000).is_err());
    }

    #[test]
    fn amounts_format_by_the_currency_minor_unit() {
        assert_eq!(format_amount(2500, "usd"), "25.00 USD");
        assert_eq!(format_amount(5, "eur"), "0.05 EUR");
        assert_eq!(format_amount(1999, "jpy"), "1999 JPY");
        assert_eq!(format_amount(1500, "kwd"), "1.500 KWD");
        assert_eq!(Currency::parse("krw").unwrap().minor_unit_digits(), 0);
    }

    #[test]
    fn currencies_are_known_lowercase_codes() {
        assert!(Currency::parse("usd").is_ok());
        assert!(Currency::parse("eur").is_ok());
        assert!(Currency::parse("USD").is_err());
        assert!(Currency::parse("dollars").is_err());
        assert!(Currency::parse("zzz").is_err());
    }
}
