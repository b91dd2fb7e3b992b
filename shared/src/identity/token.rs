//! One-time tokens (email verification, password reset, invitations): 256 random bits from
//! the OS-seeded CSPRNG, sent to the user once, stored only as a SHA-256 hash.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The token as the user sees it. Never logged, never stored.
pub struct OpaqueToken(SecretString);

/// What we store and look up by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(String);

impl OpaqueToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Wraps a token presented by a client.
    pub fn from_presented(value: &str) -> Self {
        Self(SecretString::from(value.to_owned()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(hex::encode(Sha256::digest(self.0.expose_secret().as_bytes())))
    }
}

impl TokenHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_url_safe_and_unique() {
        let a = OpaqueToken::generate();
        let b = OpaqueToken::generate();
        assert_eq!(a.expose().len(), 43); // 32 bytes, base64url without padding
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn hash_is_sha256_hex_of_the_token_and_stable() {
        let t = OpaqueToken::from_presented("abc");
        assert_eq!(t.hash().as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(t.hash(), OpaqueToken::from_presented("abc").hash());
        assert_ne!(t.hash().as_str(), "abc");
    }
}
