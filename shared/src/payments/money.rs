//! Money as the API takes it: an integer amount in the currency's minor unit and a
//! lower-case ISO 4217 code Stripe knows.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The smallest charge in a currency Stripe publishes no minimum for (Stripe's rule is "$0.50
/// or the equivalent"); Stripe itself decides the rest.
pub const MIN_AMOUNT: i64 = 50;
/// Stripe's largest amount: eight digits of minor units, in every currency.
pub const MAX_AMOUNT: i64 = 99_999_999;

/// Stripe's published minimum charge per settlement currency, in minor units
/// (docs.stripe.com/currencies, "Minimum and maximum charge amounts", as of 2026).
const MINIMUMS: [(&str, i64); 24] = [
    ("usd", 50),
    ("aed", 200),
    ("aud", 50),
    ("bgn", 100),
    ("brl", 50),
    ("cad", 50),
    ("chf", 50),
    ("czk", 1_500),
    ("dkk", 250),
    ("eur", 50),
    ("gbp", 30),
    ("hkd", 400),
    ("huf", 17_500),
    ("inr", 50),
    ("jpy", 50),
    ("mxn", 1_000),
    ("myr", 200),
    ("nok", 300),
    ("nzd", 50),
    ("pln", 200),
    ("ron", 200),
    ("sek", 300),
    ("sgd", 50),
    ("thb", 1_000),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    /// An amount Stripe would charge in `currency`: at least its minimum, at most eight
    /// digits, and a whole number of the units Stripe charges in (see [`Currency::step`]).
    pub fn parse(value: i64, currency: &Currency) -> Result<Self, String> {
        let minimum = currency.minimum_charge();
        if value < minimum {
            return Err(format!(
                "must be at least {minimum} ({}), Stripe's minimum charge",
                format_amount(minimum, currency.as_str())
            ));
        }
        if value > MAX_AMOUNT {
            return Err(format!("must be at most {MAX_AMOUNT} (minor units)"));
        }
        currency.check_step(value)?;
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

    /// Stripe's minimum charge in this currency (minor units).
    pub fn minimum_charge(&self) -> i64 {
        MINIMUMS.iter().find(|(code, _)| *code == self.0).map_or(MIN_AMOUNT, |(_, minimum)| *minimum)
    }

    /// The granularity Stripe charges and refunds in, in minor units: three-decimal
    /// currencies in tens (1.230 KWD, never 1.234), ISK in whole krónur (a multiple of 100,
    /// though the API keeps two decimals), everything else in single minor units.
    pub fn step(&self) -> i64 {
        match (self.0.as_str(), self.minor_unit_digits()) {
            ("isk", _) => 100,
            (_, 3) => 10,
            _ => 1,
        }
    }

    /// `Err` with the reason when `amount` is not a whole number of [`Currency::step`]s.
    pub fn check_step(&self, amount: i64) -> Result<(), String> {
        let step = self.step();
        if amount % step == 0 {
            return Ok(());
        }
        let down = amount - amount.rem_euclid(step);
        Err(format!(
            "must be a multiple of {step} in {}: Stripe charges it in steps of {} ({} or {})",
            self.0.to_ascii_uppercase(),
            format_amount(step, &self.0),
            format_amount(down, &self.0),
            format_amount(down + step, &self.0)
        ))
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

    fn parse(value: i64, currency: &str) -> Result<i64, String> {
        Amount::parse(value, &Currency::parse(currency).unwrap()).map(Amount::minor_units)
    }

    #[test]
    fn amounts_are_bounded_minor_units() {
        assert!(parse(49, "usd").is_err());
        assert!(parse(-100, "usd").is_err());
        assert_eq!(parse(1999, "usd"), Ok(1999));
        assert_eq!(parse(99_999_999, "usd"), Ok(99_999_999));
        assert!(parse(100_000_000, "usd").is_err());
    }

    #[test]
    fn each_currency_has_stripes_minimum() {
        assert_eq!(parse(30, "gbp"), Ok(30));
        assert_eq!(parse(29, "gbp").unwrap_err(), "must be at least 30 (0.30 GBP), Stripe's minimum charge");
        assert!(parse(1_499, "czk").is_err() && parse(1_500, "czk").is_ok());
        assert!(parse(17_499, "huf").is_err() && parse(17_500, "huf").is_ok());
        assert!(parse(49, "jpy").is_err() && parse(50, "jpy").is_ok(), "¥50, a zero-decimal currency");
        assert!(parse(999, "mxn").is_err() && parse(1_000, "mxn").is_ok());
        assert!(parse(49, "krw").is_err() && parse(50, "krw").is_ok(), "no published minimum: the default");
    }

    #[test]
    fn three_decimal_currencies_charge_in_tens_and_isk_in_whole_kronur() {
        // Not offered (the Stripe client's currency list has none of them), but stored codes
        // and the rule are ready for them.
        assert!(Currency::parse("kwd").is_err());
        let kwd = Currency("kwd".to_owned());
        assert_eq!(Amount::parse(1_230, &kwd).map(Amount::minor_units), Ok(1_230));
        assert_eq!(
            Amount::parse(1_234, &kwd).unwrap_err(),
            "must be a multiple of 10 in KWD: Stripe charges it in steps of 0.010 KWD (1.230 KWD or 1.240 KWD)"
        );
        assert!(parse(50_050, "isk").is_err() && parse(50_000, "isk").is_ok());
        assert_eq!(Currency::parse("jpy").unwrap().step(), 1);
        assert_eq!(Currency::parse("usd").unwrap().step(), 1);
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
