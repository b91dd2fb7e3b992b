//! Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA-1, 6 digits, 30-second
//! steps, accepted one step either side of now for clock drift. That is what every
//! authenticator app (Google Authenticator, 1Password, Authy) assumes when the otpauth URI
//! names nothing else.

use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretSlice};
use sha1::Sha1;
use subtle::ConstantTimeEq;

pub const DIGITS: u32 = 6;
pub const PERIOD_SECONDS: i64 = 30;
/// Steps accepted either side of the current one.
pub const DRIFT_STEPS: i64 = 1;
/// 160 bits, the length RFC 4226 recommends and HMAC-SHA-1's block-friendly size.
pub const SECRET_BYTES: usize = 20;

/// The shared secret of one authenticator.
pub struct TotpSecret(SecretSlice<u8>);

impl TotpSecret {
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes.into())
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes.into())
    }

    pub fn expose_bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The secret as authenticator apps take it when typed in: unpadded RFC 4648 base32.
    pub fn base32(&self) -> String {
        data_encoding::BASE32_NOPAD.encode(self.expose_bytes())
    }

    /// The `otpauth://` URI a QR code carries (Key Uri Format).
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let label = format!("{}:{}", encode_component(issuer), encode_component(account));
        format!(
            "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={PERIOD_SECONDS}",
            self.base32(),
            encode_component(issuer)
        )
    }

    /// The code for time step `step` (RFC 4226 dynamic truncation).
    pub fn code_at(&self, step: u64) -> u32 {
        let mut mac = Hmac::<Sha1>::new_from_slice(self.expose_bytes()).expect("HMAC takes keys of any length");
        mac.update(&step.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let offset = usize::from(digest[digest.len() - 1] & 0x0f);
        let binary =
            u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
        binary % 10u32.pow(DIGITS)
    }

    /// The step among now ± [`DRIFT_STEPS`] whose code is `code`, if any. Every candidate is
    /// compared, in constant time, so the answer's timing says nothing about which matched.
    pub fn matching_step(&self, code: &TotpCode, unix_seconds: i64) -> Option<u64> {
        let now = unix_seconds.div_euclid(PERIOD_SECONDS);
        let mut found = None;
        for step in (now - DRIFT_STEPS..=now + DRIFT_STEPS).filter_map(|s| u64::try_from(s).ok()) {
            let expected = format!("{:0width$}", self.code_at(step), width = DIGITS as usize);
            if bool::from(expected.as_bytes().ct_eq(code.0.as_bytes())) {
                found = Some(step);
            }
        }
        found
    }
}

/// A presented code: exactly six digits (spaces, as apps show "123 456", are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpCode(String);

impl TotpCode {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let digits: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        if digits.len() == DIGITS as usize && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(digits))
        } else {
            Err("must be the 6-digit code from the authenticator app")
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_component(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows: the 8-digit codes' last six digits are our codes,
    /// since truncation keeps the same 31-bit value and takes it modulo 10^digits.
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        for (time, eight_digits) in [
            (59i64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            let step = (time / PERIOD_SECONDS) as u64;
            assert_eq!(secret.code_at(step), eight_digits % 1_000_000, "T = {time}");
        }
    }

    #[test]
    fn accepts_one_step_of_drift_either_way_and_no_more() {
        let secret = TotpSecret::generate();
        let now = 1_700_000_000i64;
        let step = (now / PERIOD_SECONDS) as u64;
        let code = |s: u64| TotpCode::parse(&format!("{:06}", secret.code_at(s))).unwrap();
        assert_eq!(secret.matching_step(&code(step), now), Some(step));
        assert_eq!(secret.matching_step(&code(step - 1), now), Some(step - 1));
        assert_eq!(secret.matching_step(&code(step + 1), now), Some(step + 1));
        // Codes two steps away can collide by chance (one in a million); these don't here.
        if ![step - 1, step, step + 1].iter().any(|s| secret.code_at(*s) == secret.code_at(step - 2)) {
            assert_eq!(secret.matching_step(&code(step - 2), now), None);
        }
    }

    #[test]
    fn codes_are_six_digits() {
        assert!(TotpCode::parse("123456").is_ok());
        assert_eq!(TotpCode::parse("123 456"), TotpCode::parse("123456"));
        for bad in ["", "12345", "1234567", "12345a", "１２３４５６"] {
            assert!(TotpCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uri_names_issuer_account_and_parameters() {
        let secret = TotpSecret::from_bytes(vec![0; 20]);
        let uri = secret.otpauth_uri("Acme Market", "a+b@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/Acme%20Market:a%2Bb%40example.com?secret=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\
             &issuer=Acme%20Market&algorithm=SHA1&digits=6&period=30"
        );
    }
}
