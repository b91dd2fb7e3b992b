//! `Idempotency-Key` for create routes, the way Stripe and Powertools do it.
//!
//! The first request with a key takes a record with a conditional put (`in_progress`, with
//! a lock expiry). When it finishes, the record keeps the response status and body and a
//! SHA-256 of the request. A repeat with the same request replays that response
//! (`Idempotent-Replayed: true`); with another request it is 422 `idempotency_mismatch`;
//! while the first still runs, 409 `idempotency_in_progress`. A request that fails gives
//! its key back, and a crashed one's lock expires, so the client can retry either (a
//! takeover must present the same request).
//! Records live 24 hours. Keys are scoped to the caller and the route. The stored response
//! is sealed ([`crate::seal::IDEMPOTENT_ANSWER`], bound to the record's key): it carries the
//! PaymentIntent's `client_secret`, which the table must not hold in clear.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    invalid::FieldError,
    payments::PaymentError,
    seal::Sealer,
    store::{Change, StoreError, Table, av},
    time,
};

const SK: &str = "IDEMPOTENCY";
/// How long an in-progress record holds its key before another attempt may take it over.
pub const LOCK_SECONDS: i64 = 60;
pub const RECORD_HOURS: i64 = 24;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    status: String,
    request_hash: String,
    lock_expires: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_status: Option<u16>,
    /// The response body, sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_sealed: Option<String>,
    ttl: i64,
}

/// A key taken by this request; finish it with [`Claim::complete`] or [`Claim::release`].
#[derive(Debug)]
pub struct Claim {
    pk: String,
    request_hash: String,
}

pub enum Begin {
    /// First time (or a takeover after a crash): do the work.
    Proceed(Claim),
    /// Done before: answer this.
    Replay { status: u16, body: serde_json::Value },
}

/// Validates the header value: 1 to 255 printable ASCII characters.
pub fn parse_key(value: Option<&str>) -> Result<String, PaymentError> {
    match value {
        Some(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x21..0x7f).contains(&b)) => {
            Ok(key.to_owned())
        }
        Some(_) => Err(PaymentError::Validation(vec![FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters",
        )])),
        None => Err(PaymentError::Validation(vec![FieldError::new("Idempotency-Key", "header is required")])),
    }
}

/// The idempotency key sent to Stripe for a caller's key within `scope` (`kind:user`): the
/// caller's key is hashed, so the result is always 64 hex digits after the scope and never
/// exceeds Stripe's 255 characters, whatever the caller sent.
pub fn stripe_key(scope: &str, key: &str) -> String {
    let stripe_key = format!("{scope}:{}", hex::encode(Sha256::digest(key.as_bytes())));
    debug_assert!(stripe_key.len() <= 255, "scopes are short: {stripe_key}");
    stripe_key
}

pub fn request_hash(method: &str, path: &str, body: &[u8]) -> String {
    // Hash the parsed JSON, not the bytes, so whitespace and key order don't matter.
    let canonical = serde_json::from_slice::<serde_json::Value>(body).map(|v| v.to_string()).unwrap_or_default();
    hex::encode(Sha256::digest(format!("{method} {path}\n{canonical}").as_bytes()))
}

pub async fn begin(
    table: &Table,
    sealer: &Sealer,
    scope: &str,
    key: &str,
    request_hash: &str,
) -> Result<Begin, PaymentError> {
    let key_hash = hex::encode(Sha256::digest(key.as_bytes()));
    let pk = format!("IDEMP#{scope}#{key_hash}");
    let now = time::now().unix_timestamp();
    let record = Record {
        pk: pk.clone(),
        sk: SK.to_owned(),
        status: "in_progress".into(),
        request_hash: request_hash.to_owned(),
        lock_expires: now + LOCK_SECONDS,
        response_status: None,
        response_sealed: None,
        ttl: now + RECORD_HOURS * 3600,
    };
    // A crashed attempt's key may be taken over, but only by the same request.
    let put = table
        .put_item_if(
            &record,
            "attribute_not_exists(PK) OR (#status = :in_progress AND lock_expires < :now AND request_hash = :hash)",
            &[("#status", "status")],
            &[(":in_progress", av::s("in_progress")), (":now", av::n(now)), (":hash", av::s(request_hash))],
        )
        .await;
    match put {
        Ok(()) => return Ok(Begin::Proceed(Claim { pk, request_hash: request_hash.to_owned() })),
        Err(StoreError::ConditionFailed) => {}
        Err(e) => return Err(PaymentError::internal(e)),
    }
    let existing = table.get::<Record>(&pk, SK).await?.ok_or(PaymentError::IdempotencyInProgress)?;
    if existing.request_hash != request_hash {
        return Err(PaymentError::IdempotencyMismatch);
    }
    match (existing.status.as_str(), existing.response_status, existing.response_sealed) {
        ("completed", Some(status), Some(sealed)) => {
            let body = sealer.open(&sealed, &pk).map_err(PaymentError::internal)?;
            Ok(Begin::Replay { status, body: serde_json::from_slice(&body).map_err(PaymentError::internal)? })
        }
        _ => Err(PaymentError::IdempotencyInProgress),
    }
}

impl Claim {
    /// Stores the response for replays.
    pub async fn complete(
        self,
        table: &Table,
        sealer: &Sealer,
        status: u16,
        body: &serde_json::Value,
    ) -> Result<(), PaymentError> {
        let sealed = sealer.seal(body.to_string().as_bytes(), &self.pk).map_err(PaymentError::internal)?;
        table
            .update_item(
                Change::new(&self.pk, SK)
                    .update("SET #status = :completed, response_status = :code, response_sealed = :body")
                    .condition("request_hash = :hash")
                    .name("#status", "status")
                    .value(":completed", av::s("completed"))
                    .value(":code", av::n(status))
                    .value(":body", av::s(sealed))
                    .value(":hash", av::s(&self.request_hash)),
            )
            .await?;
        Ok(())
    }

    /// Gives the key back after a failure, so the client may retry with it.
    pub async fn release(self, table: &Table) {
        let released = table
            .delete_item(
                Change::new(&self.pk, SK)
                    .condition("#status = :in_progress")
                    .name("#status", "status")
                    .value(":in_progress", av::s("in_progress")),
            )
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "idempotency key not released; it expires");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert!(parse_key(None).is_err());
        assert!(parse_key(Some("")).is_err());
        assert!(parse_key(Some("has space")).is_err());
        assert!(parse_key(Some(&"k".repeat(256))).is_err());
        assert_eq!(parse_key(Some("order-42")).unwrap(), "order-42");
        for bad in ["tab\t", "é", "new\nline"] {
            assert!(parse_key(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_stripe_key_of_the_longest_caller_key_fits_stripes_limit() {
        let longest = parse_key(Some(&"k".repeat(255))).unwrap();
        let scope = format!("subscription:{}", uuid::Uuid::new_v4());
        assert!(stripe_key(&scope, &longest).len() <= 255);
        assert_ne!(stripe_key(&scope, "a"), stripe_key(&scope, "b"));
        assert_eq!(stripe_key(&scope, "a"), stripe_key(&scope, "a"));
    }

    #[test]
    fn request_hash_ignores_formatting_but_not_content() {
        let a = request_hash("POST", "/payments", br#"{"amount":100,"currency":"usd"}"#);
        let b = request_hash("POST", "/payments", b"{ \"currency\": \"usd\", \"amount\": 100 }");
        let c = request_hash("POST", "/payments", br#"{"amount":101,"currency":"usd"}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
