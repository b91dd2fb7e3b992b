//! Secrets at rest: AES-256-GCM under keys from the secrets ([`crate::secrets`]), each sealed value
//! bound to its purpose and its owner (authenticated, not encrypted). A copy of the table
//! alone (a backup, an export, the stream, a read-only role) yields no authenticator secret,
//! no live link or code from the outbox and no stored `client_secret`; a sealed value moved
//! to another item, or used for another purpose, does not open.
//!
//! Sealed form: `{kid}:{base64url(nonce ‖ ciphertext ‖ tag)}`. The first key seals; every
//! key opens what it sealed, so keys rotate by putting the new one first and, once nothing
//! sealed under the old one is still kept (outbox items and idempotent answers live days;
//! MFA secrets until re-sealed), dropping it.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::secrets::{EncryptionKey, KeyListError, Secrets};

const NONCE_BYTES: usize = 12;

/// What a sealed value is for: part of what it is bound to, and where its keys live.
#[derive(Clone, Copy)]
pub struct Purpose {
    /// Bound into every value (with a format version).
    label: &'static str,
    /// The secret document's field with the keys.
    pub keys_field: &'static str,
    keys: fn(&Secrets) -> &[EncryptionKey],
}

/// Authenticator (TOTP) secrets, owned by their user.
pub const MFA_TOTP: Purpose =
    Purpose { label: "mfa-totp/v1", keys_field: "mfa_encryption_keys", keys: |s| &s.mfa_encryption_keys };
/// The content of email and SMS outbox items (links and codes), owned by the item's id.
pub const OUTBOX: Purpose =
    Purpose { label: "outbox/v1", keys_field: "outbox_sealing_keys", keys: |s| &s.outbox_sealing_keys };
/// Stored idempotent answers (they hold `client_secret`s), owned by their record's key.
pub const IDEMPOTENT_ANSWER: Purpose = Purpose {
    label: "idempotent-answer/v1",
    keys_field: "idempotency_sealing_keys",
    keys: |s| &s.idempotency_sealing_keys,
};

impl Purpose {
    /// Its keys in `secrets`.
    pub fn keys_of(self, secrets: &Secrets) -> &[EncryptionKey] {
        (self.keys)(secrets)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("no encryption key is configured ({0} in its secret)")]
    NoKey(&'static str),
    #[error("encryption key `{0}` is not 32 bytes of base64")]
    BadKey(String),
    #[error("sealed with key `{0}`, which its secret no longer holds")]
    UnknownKey(String),
    #[error("sealed value is malformed or has been altered")]
    Corrupt,
    #[error("the keys could not be read: {0}")]
    KeysUnavailable(String),
}

/// The keys' bytes by kid, first first (see [`crate::secrets::key_list`]).
fn key_bytes(keys: &[EncryptionKey], purpose: Purpose) -> Result<Vec<(String, Vec<u8>)>, CipherError> {
    crate::secrets::key_list(keys).map_err(|error| match error {
        KeyListError::Empty => CipherError::NoKey(purpose.keys_field),
        KeyListError::Twice(kid) => CipherError::BadKey(format!("{kid} (listed twice)")),
        KeyListError::Bad(kid) => CipherError::BadKey(kid),
    })
}

pub struct Sealer {
    purpose: Purpose,
    keys: Vec<(String, Aes256Gcm)>,
}

impl Sealer {
    pub fn new(keys: &[EncryptionKey], purpose: Purpose) -> Result<Self, CipherError> {
        let keys = key_bytes(keys, purpose)?
            .into_iter()
            .map(|(kid, bytes)| {
                let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CipherError::BadKey(kid.clone()))?;
                Ok((kid, cipher))
            })
            .collect::<Result<_, CipherError>>()?;
        Ok(Self { purpose, keys })
    }

    /// The sealer for `purpose` from its keys in `secrets`.
    pub fn from_secrets(secrets: &Secrets, purpose: Purpose) -> Result<Self, CipherError> {
        Self::new(purpose.keys_of(secrets), purpose)
    }

    /// Seals `plaintext` for `owner` (authenticated, not encrypted: a user id, an item id).
    pub fn seal(&self, plaintext: &[u8], owner: &str) -> Result<String, CipherError> {
        let (kid, cipher) = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: self.aad(owner).as_bytes() })
            .map_err(|_| CipherError::Corrupt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{kid}:{}", URL_SAFE_NO_PAD.encode(out)))
    }

    pub fn open(&self, sealed: &str, owner: &str) -> Result<Vec<u8>, CipherError> {
        let (kid, body) = sealed.rsplit_once(':').ok_or(CipherError::Corrupt)?;
        let (_, cipher) =
            self.keys.iter().find(|(k, _)| k == kid).ok_or_else(|| CipherError::UnknownKey(kid.to_owned()))?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| CipherError::Corrupt)?;
        if bytes.len() <= NONCE_BYTES {
            return Err(CipherError::Corrupt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: self.aad(owner).as_bytes() })
            .map_err(|_| CipherError::Corrupt)
    }
}

impl Sealer {
    /// What a sealed value is bound to: its purpose and format version, and its owner.
    fn aad(&self, owner: &str) -> String {
        format!("{}/{owner}", self.purpose.label)
    }
}

/// Tokens that must be unforgeable but hold nothing secret (unsubscribe links): the payload
/// in clear and an HMAC-SHA256 over it, under keys of their own. Form:
/// `{kid}.{base64url(payload)}.{base64url(mac)}`. The first key signs; every key verifies,
/// so keys rotate like the sealing keys.
pub struct Signer {
    label: &'static str,
    keys: Vec<(String, Vec<u8>)>,
}

/// Unsubscribe links.
pub const UNSUBSCRIBE: Purpose =
    Purpose { label: "unsubscribe/v1", keys_field: "unsubscribe_signing_keys", keys: |s| &s.unsubscribe_signing_keys };
/// Digests of short codes (SMS codes): keyed, so a copy of the table cannot try all million.
pub const PHONE_CODE: Purpose =
    Purpose { label: "phone-code/v1", keys_field: "outbox_sealing_keys", keys: |s| &s.outbox_sealing_keys };
/// Page cursors (each listing's are told apart by its own label as well).
pub const CURSOR: Purpose =
    Purpose { label: "cursor/v1", keys_field: "cursor_signing_keys", keys: |s| &s.cursor_signing_keys };

impl Signer {
    pub fn from_secrets(secrets: &Secrets, purpose: Purpose) -> Result<Self, CipherError> {
        Ok(Self { label: purpose.label, keys: key_bytes(purpose.keys_of(secrets), purpose)? })
    }

    fn mac(&self, key: &[u8], kid: &str, payload: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(self.label.as_bytes());
        mac.update(b"|");
        mac.update(kid.as_bytes());
        mac.update(b"|");
        mac.update(payload.as_bytes());
        mac
    }

    pub fn sign(&self, payload: &[u8]) -> String {
        let (kid, key) = &self.keys[0];
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let tag = URL_SAFE_NO_PAD.encode(self.mac(key, kid, &payload).finalize().into_bytes());
        format!("{kid}.{payload}.{tag}")
    }

    /// The payload of a token one of the keys signed, in constant time per key.
    pub fn verify(&self, token: &str) -> Option<Vec<u8>> {
        // From the right: base64url has no '.', a key id may.
        let (rest, tag) = token.rsplit_once('.')?;
        let (kid, payload) = rest.rsplit_once('.')?;
        let (_, key) = self.keys.iter().find(|(k, _)| k == kid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(key, kid, payload).verify_slice(&tag).ok()?;
        URL_SAFE_NO_PAD.decode(payload).ok()
    }

    /// A keyed digest of `payload` under the current key (hex), for values kept only to be
    /// compared, such as a code's.
    pub fn digest(&self, payload: &[u8]) -> String {
        let (kid, key) = &self.keys[0];
        let payload = URL_SAFE_NO_PAD.encode(payload);
        hex::encode(self.mac(key, kid, &payload).finalize().into_bytes())
    }

    /// The current key, for what derives a key of its own from it.
    pub fn current_key(&self) -> &[u8] {
        &self.keys[0].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, byte: u8) -> EncryptionKey {
        EncryptionKey { kid: kid.into(), key: base64::engine::general_purpose::STANDARD.encode([byte; 32]).into() }
    }

    #[test]
    fn seals_and_opens_for_the_same_owner_only() {
        let cipher = Sealer::new(&[key("k1", 7)], MFA_TOTP).unwrap();
        let sealed = cipher.seal(b"authenticator secret", "user-1").unwrap();
        assert!(sealed.starts_with("k1:"));
        assert!(!sealed.contains("authenticator"));
        assert_eq!(cipher.open(&sealed, "user-1").unwrap(), b"authenticator secret");
        assert!(matches!(cipher.open(&sealed, "user-2"), Err(CipherError::Corrupt)));
        // Fresh nonce each time.
        assert_ne!(sealed, cipher.seal(b"authenticator secret", "user-1").unwrap());
    }

    #[test]
    fn altered_values_do_not_open() {
        let cipher = Sealer::new(&[key("k1", 7)], MFA_TOTP).unwrap();
        let sealed = cipher.seal(b"secret", "u").unwrap();
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(cipher.open(std::str::from_utf8(&altered).unwrap(), "u").is_err());
        assert!(cipher.open("k1:", "u").is_err());
        assert!(cipher.open("no-separator", "u").is_err());
    }

    #[test]
    fn rotation_keeps_old_values_open_and_seals_with_the_first_key() {
        let old = Sealer::new(&[key("old", 1)], MFA_TOTP).unwrap();
        let sealed_before = old.seal(b"s", "u").unwrap();
        let rotated = Sealer::new(&[key("new", 2), key("old", 1)], MFA_TOTP).unwrap();
        assert_eq!(rotated.open(&sealed_before, "u").unwrap(), b"s");
        assert!(rotated.seal(b"s", "u").unwrap().starts_with("new:"));
        let retired = Sealer::new(&[key("new", 2)], MFA_TOTP).unwrap();
        assert!(matches!(retired.open(&sealed_before, "u"), Err(CipherError::UnknownKey(k)) if k == "old"));
    }

    #[test]
    fn a_value_sealed_for_one_purpose_does_not_open_for_another() {
        let keys = [key("k1", 7)];
        let sealed = Sealer::new(&keys, OUTBOX).unwrap().seal(b"https://x/reset#token=t", "id-1").unwrap();
        assert!(Sealer::new(&keys, IDEMPOTENT_ANSWER).unwrap().open(&sealed, "id-1").is_err());
        assert!(Sealer::new(&keys, MFA_TOTP).unwrap().open(&sealed, "id-1").is_err());
        assert_eq!(Sealer::new(&keys, OUTBOX).unwrap().open(&sealed, "id-1").unwrap(), b"https://x/reset#token=t");
    }

    #[test]
    fn keys_must_be_32_bytes() {
        let short = EncryptionKey { kid: "k".into(), key: "c2hvcnQ=".to_owned().into() };
        assert!(matches!(Sealer::new(&[short], MFA_TOTP), Err(CipherError::BadKey(_))));
        assert!(matches!(Sealer::new(&[], MFA_TOTP), Err(CipherError::NoKey("mfa_encryption_keys"))));
    }

    fn secrets_with_unsubscribe(keys: Vec<EncryptionKey>) -> Secrets {
        let mut secrets: Secrets = serde_json::from_str("{}").unwrap();
        secrets.unsubscribe_signing_keys = keys;
        secrets
    }

    #[test]
    fn signed_tokens_verify_until_altered_and_across_a_rotation() {
        let old = Signer::from_secrets(&secrets_with_unsubscribe(vec![key("old", 1)]), UNSUBSCRIBE).unwrap();
        let token = old.sign(br#"{"sub":"u1"}"#);
        assert_eq!(old.verify(&token).unwrap(), br#"{"sub":"u1"}"#);
        let rotated =
            Signer::from_secrets(&secrets_with_unsubscribe(vec![key("new", 2), key("old", 1)]), UNSUBSCRIBE).unwrap();
        assert!(rotated.verify(&token).is_some(), "the old key still verifies");
        assert!(rotated.sign(b"x").starts_with("new."));
        let (head, _) = token.rsplit_once('.').unwrap();
        assert!(old.verify(&format!("{head}.AAAA")).is_none(), "another tag");
        let forged_payload = token.replace(&token.split('.').nth(1).unwrap().to_owned(), "eyJzdWIiOiJ1MiJ9");
        assert!(old.verify(&forged_payload).is_none(), "another payload");
        let retired = Signer::from_secrets(&secrets_with_unsubscribe(vec![key("new", 2)]), UNSUBSCRIBE).unwrap();
        assert!(retired.verify(&token).is_none(), "a retired key verifies nothing");
        assert!(Signer::from_secrets(&secrets_with_unsubscribe(vec![]), UNSUBSCRIBE).is_err());
    }
}
