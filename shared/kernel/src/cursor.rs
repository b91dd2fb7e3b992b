//! Page cursors: a Query's `LastEvaluatedKey`, handed to the client opaque and signed.
//!
//! A cursor is the key as JSON and an HMAC-SHA256 over it and a fingerprint of the query that
//! issued it (who asked, and what for), both base64url. So a cursor that was modified, made up,
//! or carried over to another query or another caller is refused (400 `validation_failed` on
//! `cursor`), and a page can never start outside what the caller may read.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{
    invalid::{FieldError, Invalid},
    seal::CipherError,
    services::Services,
    store::av,
};

/// A page's last key: attribute name → value (string keys only, as all of ours are).
pub type Key = HashMap<String, AttributeValue>;

/// Signs and checks the cursors of one kind of listing.
pub struct Cursors {
    key: Vec<u8>,
}

impl Cursors {
    /// Cursors signed with `key` (tests; see [`Cursors::for_listing`]).
    pub fn with_key(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    /// Cursors for listings of `purpose` (`audit-cursor`, `payments-cursor`, ...). The key is
    /// derived from the current cursor key (`cursor_signing_keys`, a key of its own), so every
    /// instance agrees on it and it rotates with that key (cursors are short-lived anyway);
    /// `purpose` keeps one listing's cursors from being valid in another.
    pub async fn for_listing(services: &Services, purpose: &str) -> Result<Self, CipherError> {
        let secrets = services.secrets().get().await.map_err(|e| CipherError::KeysUnavailable(e.to_string()))?;
        let signer = crate::seal::Signer::from_secrets(&secrets, crate::seal::CURSOR)?;
        let key = Sha256::digest([purpose.as_bytes(), b"|", signer.current_key()].concat());
        Ok(Self { key: key.to_vec() })
    }

    fn mac(&self, fingerprint: &str, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(fingerprint.as_bytes());
        mac.update(b"|");
        mac.update(payload.as_bytes());
        mac
    }

    /// The cursor for a page that ended at `key`, in the query `fingerprint` names.
    pub fn encode(&self, fingerprint: &str, key: &Key) -> String {
        let plain: HashMap<&str, &str> =
            key.iter().filter_map(|(k, v)| v.as_s().ok().map(|s| (k.as_str(), s.as_str()))).collect();
        let payload = serde_json::to_string(&plain).expect("strings serialize");
        let mac = self.mac(fingerprint, &payload).finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(mac))
    }

    /// The key a cursor from [`Cursors::encode`] for the same query holds; anything else is
    /// 400 `validation_failed` on `cursor`.
    pub fn decode(&self, fingerprint: &str, cursor: &str) -> Result<Key, Invalid> {
        let invalid = || Invalid::field("cursor", "is not a cursor this query issued");
        let (payload, mac) = cursor.split_once('.').ok_or_else(invalid)?;
        let payload =
            String::from_utf8(URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?).map_err(|_| invalid())?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| invalid())?;
        self.mac(fingerprint, &payload).verify_slice(&mac).map_err(|_| invalid())?;
        let plain: HashMap<String, String> = serde_json::from_str(&payload).map_err(|_| invalid())?;
        Ok(plain.into_iter().map(|(k, v)| (k, av::s(v))).collect())
    }
}

/// A fingerprint of the parts of a query a cursor is bound to.
pub fn fingerprint(parts: &str) -> String {
    hex::encode(Sha256::digest(parts.as_bytes()))
}

/// A page size from the `limit` query parameter: `default` when absent, else a whole number
/// from 1 to `max` (otherwise a `limit` error, and `default` so the other fields still check).
pub fn page_limit(raw: Option<&str>, default: i32, max: i32, errors: &mut Vec<FieldError>) -> i32 {
    match raw.map(str::parse::<i32>) {
        None => default,
        Some(Ok(limit)) if (1..=max).contains(&limit) => limit,
        Some(_) => {
            errors.push(FieldError::new("limit", format!("must be a whole number from 1 to {max}")));
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_tamper_evident_and_bound_to_their_query() {
        let key: Key =
            HashMap::from([("PK".into(), av::s("AUDIT#o1")), ("SK".into(), av::s("2026-01-01T00:00:00.000000Z#x"))]);
        let cursors = Cursors::with_key(b"k");
        let cursor = cursors.encode("fp", &key);
        assert_eq!(cursors.decode("fp", &cursor).unwrap(), key);
        assert!(cursors.decode("other", &cursor).is_err(), "another query");
        assert!(Cursors::with_key(b"other").decode("fp", &cursor).is_err(), "another key");
        let (payload, mac) = cursor.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"PK":"AUDIT#o2","SK":"z"}"#);
        assert!(cursors.decode("fp", &format!("{forged}.{mac}")).is_err());
        assert!(cursors.decode("fp", &format!("{payload}x.{mac}")).is_err());
        assert!(cursors.decode("fp", "garbage").is_err());
        assert!(cursors.decode("fp", "").is_err());
    }
}
