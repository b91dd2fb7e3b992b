//! MFA secrets at rest: AES-256-GCM under a key from the secret document
//! (`mfa_encryption_keys`), bound to the user it belongs to. A copy of the table alone
//! (a backup, an export, a read-only role) yields no authenticator secrets, and a sealed
//! value moved to another user's item does not open.
//!
//! Sealed form: `{kid}:{base64url(nonce ‖ ciphertext ‖ tag)}`. The first key seals; every
//! key opens what it sealed, so keys rotate by putting the new one first and re-sealing at
//! leisure before the old one is dropped.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use secrecy::ExposeSecret;

use crate::config::EncryptionKey;

const NONCE_BYTES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("no MFA encryption key is configured (mfa_encryption_keys in the secret)")]
    NoKey,
    #[error("MFA encryption key `{0}` is not 32 bytes of base64")]
    BadKey(String),
    #[error("sealed with key `{0}`, which the secret no longer holds")]
    UnknownKey(String),
    #[error("sealed value is malformed or has been altered")]
    Corrupt,
}

pub struct SecretCipher {
    keys: Vec<(String, Aes256Gcm)>,
}

impl SecretCipher {
    pub fn from_keys(keys: &[EncryptionKey]) -> Result<Self, CipherError> {
        if keys.is_empty() {
            return Err(CipherError::NoKey);
        }
        if let Some(twice) = keys.iter().enumerate().find(|(i, k)| keys[..*i].iter().any(|o| o.kid == k.kid)) {
            return Err(CipherError::BadKey(format!("{} (listed twice)", twice.1.kid)));
        }
        let keys = keys
            .iter()
            .map(|key| {
                let bytes = key.decode().ok_or_else(|| CipherError::BadKey(key.kid.clone()))?;
                let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CipherError::BadKey(key.kid.clone()))?;
                Ok((key.kid.clone(), cipher))
            })
            .collect::<Result<_, CipherError>>()?;
        Ok(Self { keys })
    }

    /// Seals `plaintext` for `owner` (authenticated, not encrypted: the item's user id).
    pub fn seal(&self, plaintext: &[u8], owner: &str) -> Result<String, CipherError> {
        let (kid, cipher) = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: aad(owner).as_bytes() })
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
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: aad(owner).as_bytes() })
            .map_err(|_| CipherError::Corrupt)
    }
}

/// What a sealed value is bound to: its purpose and format version, and its owner.
fn aad(owner: &str) -> String {
    format!("mfa-totp/v1/{owner}")
}

impl EncryptionKey {
    /// The key's 32 bytes, if it is standard base64 of exactly that many.
    pub fn decode(&self) -> Option<Vec<u8>> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(self.key.expose_secret().trim()).ok()?;
        (bytes.len() == 32).then_some(bytes)
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
        let cipher = SecretCipher::from_keys(&[key("k1", 7)]).unwrap();
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
        let cipher = SecretCipher::from_keys(&[key("k1", 7)]).unwrap();
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
        let old = SecretCipher::from_keys(&[key("old", 1)]).unwrap();
        let sealed_before = old.seal(b"s", "u").unwrap();
        let rotated = SecretCipher::from_keys(&[key("new", 2), key("old", 1)]).unwrap();
        assert_eq!(rotated.open(&sealed_before, "u").unwrap(), b"s");
        assert!(rotated.seal(b"s", "u").unwrap().starts_with("new:"));
        let retired = SecretCipher::from_keys(&[key("new", 2)]).unwrap();
        assert!(matches!(retired.open(&sealed_before, "u"), Err(CipherError::UnknownKey(k)) if k == "old"));
    }

    #[test]
    fn keys_must_be_32_bytes() {
        let short = EncryptionKey { kid: "k".into(), key: "c2hvcnQ=".to_owned().into() };
        assert!(matches!(SecretCipher::from_keys(&[short]), Err(CipherError::BadKey(_))));
        assert!(matches!(SecretCipher::from_keys(&[]), Err(CipherError::NoKey)));
    }
}
