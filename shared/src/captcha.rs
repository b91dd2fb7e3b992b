//! CAPTCHA checks against a Turnstile-compatible `siteverify` endpoint: the token and our
//! secret go as a form, the answer is `{"success": bool, "error-codes": [...]}` (Cloudflare
//! Turnstile; hCaptcha and reCAPTCHA answer the same shape). Which routes ask for a token is
//! the caller's business; this module only says whether a token is good.

use std::{sync::OnceLock, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::invalid::Invalid;

/// Turnstile's own bound on a token's length; anything longer is not a token.
const MAX_TOKEN_BYTES: usize = 2048;
/// Calls per check: one retry when the service, not the token, failed.
const CALLS: usize = 2;

/// `captcha_token` as sent: longer than any provider's token is an input error, whether or
/// not CAPTCHA is on.
pub fn token_field(value: Option<String>) -> Result<Option<String>, Invalid> {
    match value {
        Some(token) if token.chars().count() > MAX_TOKEN_BYTES => {
            Err(Invalid::field("captcha_token", "must be at most 2048 characters"))
        }
        other => Ok(other),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptchaError {
    /// Missing, malformed, expired, already used, or refused by the provider.
    #[error("a solved CAPTCHA (captcha_token) is required")]
    Required,
    /// The provider could not give an answer (down, or our secret is wrong).
    #[error("the CAPTCHA service gave no answer: {0}")]
    Unavailable(String),
}

#[derive(Serialize)]
struct SiteverifyForm<'a> {
    secret: &'a str,
    response: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    remoteip: Option<&'a str>,
    /// Lets the retry re-check a token the first call may already have spent.
    idempotency_key: &'a str,
}

#[derive(Deserialize)]
struct Verdict {
    success: bool,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
}

/// Error codes that blame us or the provider rather than the person solving the CAPTCHA.
fn is_our_fault(code: &str) -> bool {
    matches!(code, "missing-input-secret" | "invalid-input-secret" | "internal-error" | "bad-request")
}

pub struct CaptchaVerifier {
    verify_url: String,
    timeout: Duration,
    client: OnceLock<reqwest::Client>,
}

impl CaptchaVerifier {
    pub fn new(settings: &crate::config::CaptchaSettings) -> Self {
        Self { verify_url: settings.verify_url.clone(), timeout: settings.timeout, client: OnceLock::new() }
    }

    /// Built on first use: most requests never need it, and its TLS setup is not free.
    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            // The one crypto provider this build has (the SDK and Stripe client use it too).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(self.timeout)
                .build()
                .expect("an HTTP client with the default TLS roots")
        })
    }

    /// Whether `token` is a solved, unspent CAPTCHA for our `secret`, solved from `remote_ip`.
    pub async fn verify(
        &self,
        secret: &SecretString,
        token: Option<&str>,
        remote_ip: Option<&str>,
    ) -> Result<(), CaptchaError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES);
        let token = token.ok_or(CaptchaError::Required)?;
        let idempotency_key = uuid::Uuid::new_v4().to_string();
        let form = SiteverifyForm {
            secret: secret.expose_secret(),
            response: token,
            remoteip: remote_ip,
            idempotency_key: &idempotency_key,
        };
        let mut failure = String::new();
        for _ in 0..CALLS {
            let answer = match self.client().post(&self.verify_url).form(&form).send().await {
                Ok(answer) => answer,
                Err(error) => {
                    failure = error.without_url().to_string();
                    continue;
                }
            };
            let status = answer.status();
            if !status.is_success() {
                failure = format!("siteverify answered {status}");
                if status.is_server_error() || status.as_u16() == 429 {
                    continue;
                }
                break;
            }
            let verdict: Verdict = match answer.json().await {
                Ok(verdict) => verdict,
                Err(error) => {
                    failure = format!("siteverify answer unreadable: {}", error.without_url());
                    continue;
                }
            };
            if verdict.success {
                return Ok(());
            }
            if let Some(code) = verdict.error_codes.iter().find(|c| is_our_fault(c)) {
                failure = format!("siteverify: {code}");
                continue;
            }
            tracing::info!(codes = ?verdict.error_codes, "CAPTCHA token refused");
            return Err(CaptchaError::Required);
        }
        Err(CaptchaError::Unavailable(failure))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> CaptchaVerifier {
        CaptchaVerifier::new(&crate::config::CaptchaSettings {
            verify_url: "http://127.0.0.1:9/siteverify".into(),
            after_failures: 10,
            timeout: Duration::from_millis(200),
            off_accepted: false,
        })
    }

    #[tokio::test]
    async fn missing_blank_or_oversized_tokens_are_refused_without_a_call() {
        let secret = SecretString::from("0x0000000000000000000000000000000AA");
        let long = "t".repeat(MAX_TOKEN_BYTES + 1);
        for token in [None, Some(""), Some("   "), Some(long.as_str())] {
            assert!(matches!(verifier().verify(&secret, token, None).await, Err(CaptchaError::Required)), "{token:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_service_is_unavailable_not_a_bad_token() {
        let secret = SecretString::from("0x0000000000000000000000000000000AA");
        let result = verifier().verify(&secret, Some("token"), None).await;
        assert!(matches!(result, Err(CaptchaError::Unavailable(_))), "{result:?}");
    }

    #[test]
    fn an_oversized_token_is_an_input_error_even_without_captcha() {
        assert!(token_field(Some("t".repeat(MAX_TOKEN_BYTES + 1))).is_err());
        assert_eq!(token_field(Some("t".repeat(MAX_TOKEN_BYTES))).unwrap().map(|t| t.len()), Some(MAX_TOKEN_BYTES));
        assert_eq!(token_field(None).unwrap(), None);
    }

    #[test]
    fn the_https_client_builds_with_the_bundled_provider() {
        let verifier = CaptchaVerifier::new(&crate::config::CaptchaSettings {
            verify_url: crate::config::TURNSTILE_SITEVERIFY.into(),
            after_failures: 10,
            timeout: Duration::from_secs(1),
            off_accepted: false,
        });
        verifier.client();
    }
}
