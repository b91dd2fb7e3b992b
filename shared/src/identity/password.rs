//! Passwords: the policy (length, not common or guessable) and Argon2id hashing, which runs
//! on the blocking pool so it never stalls the async runtime.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};

pub const MIN_CHARS: usize = 12;
pub const MAX_CHARS: usize = 128;
/// zxcvbn's score runs 0..=4; 3 is "safely unguessable: moderate protection from offline
/// slow-hash scenario", which is what NIST 800-63B's blocklist advice amounts to here.
const MIN_SCORE: u8 = 3;

/// A password that meets the policy. Only ever exposed to the hasher.
pub struct Password(SecretString);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl Password {
    /// Checks the policy. `context` holds words the user gave us (email, name), which make
    /// a password easier to guess if it contains them.
    pub fn parse(raw: &str, context: &[&str]) -> Result<Self, &'static str> {
        let chars = raw.chars().count();
        if chars < MIN_CHARS {
            return Err("must be at least 12 characters");
        }
        if chars > MAX_CHARS {
            return Err("must be at most 128 characters");
        }
        if u8::from(zxcvbn::zxcvbn(raw, context).score()) < MIN_SCORE {
            return Err("is too common or too easy to guess; try a longer passphrase");
        }
        Ok(Self(SecretString::from(raw.to_owned())))
    }

    /// For verifying a presented password against a stored hash: no policy applies there.
    pub fn presented(raw: &str) -> Self {
        Self(SecretString::from(raw.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the hashing task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A PHC-format Argon2id hash (`$argon2id$v=19$m=19456,t=2,p=1$...`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

/// The hash of a random password nobody knows, with the current parameters. Login verifies
/// it for unknown emails so they cost the same time as wrong passwords.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$i8KZZD+EIOecga8nic1/cQ$lorjLtuC50DEaFMg8q2BFsWfrHHu+87HMcWzDPbU1oQ";

/// A stored value no password verifies against (not a PHC string, so Argon2 refuses every
/// password): an account whose owner must choose a new password, by reset, before anyone
/// signs in with one again.
pub const UNUSABLE_HASH: &str = "!unusable";

impl PasswordHash {
    pub fn from_stored(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Stands in for a user's hash when there is no user.
    pub fn dummy() -> Self {
        Self(DUMMY_HASH.to_owned())
    }

    /// True when the hash was made with other parameters (or algorithm) than we use now,
    /// so a successful login should replace it.
    pub fn needs_rehash(&self) -> bool {
        let Ok(parsed) = argon2::password_hash::phc::PasswordHash::new(&self.0) else {
            return true;
        };
        let current = argon2::Params::default();
        let param = |name: &str| parsed.params.get_decimal(name);
        parsed.algorithm.as_str() != "argon2id"
            || parsed.version != Some(0x13)
            || param("m") != Some(current.m_cost())
            || param("t") != Some(current.t_cost())
            || param("p") != Some(current.p_cost())
    }

    /// Argon2id with the crate defaults, which are OWASP's (m=19456 KiB, t=2, p=1).
    pub async fn compute(password: Password) -> Result<Self, PasswordError> {
        tokio::task::spawn_blocking(move || {
            Argon2::default()
                .hash_password(password.0.expose_secret().as_bytes())
                .map(|h| Self(h.to_string()))
                .map_err(|e| PasswordError::Hash(e.to_string()))
        })
        .await?
    }

    /// True when `password` matches. Runs the full Argon2 cost either way, an unusable hash
    /// included (against the dummy), so the time tells nothing.
    pub async fn verify(&self, password: Password) -> Result<bool, PasswordError> {
        let hash = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let presented = password.0.expose_secret().as_bytes();
            if argon2::password_hash::phc::PasswordHash::new(&hash).is_err() {
                let _ = Argon2::default().verify_password(presented, DUMMY_HASH);
                return Ok(false);
            }
            Ok(Argon2::default().verify_password(presented, hash.as_str()).is_ok())
        })
        .await?
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_limits_count_characters_not_bytes() {
        assert!(Password::parse("short", &[]).is_err());
        assert_eq!(Password::parse(&"x".repeat(129), &[]).unwrap_err(), "must be at most 128 characters");
        // 11 two-byte characters are 22 bytes but still too short.
        assert_eq!(Password::parse(&"ñ".repeat(11), &[]).unwrap_err(), "must be at least 12 characters");
        assert!(Password::parse("ünïcødé-fjørd-Kraken-77", &[]).is_ok());
    }

    #[test]
    fn common_and_guessable_passwords_are_rejected() {
        for weak in ["password1234", "123456789012", "qwertyuiopas", "aaaaaaaaaaaa", "iloveyou1234"] {
            assert!(Password::parse(weak, &[]).is_err(), "{weak} should be rejected");
        }
        // Built from the user's own email.
        assert!(Password::parse("alice.smith@example.com", &["alice.smith@example.com", "alice.smith"]).is_err());
    }

    #[test]
    fn passphrases_are_accepted() {
        assert!(Password::parse("correct horse battery staple", &[]).is_ok());
        assert!(Password::parse("Tr0ub4dor&3-velvet-otter", &[]).is_ok());
    }

    #[tokio::test]
    async fn hash_is_argon2id_with_owasp_parameters_and_verifies() {
        let hash = PasswordHash::compute(Password::presented("correct horse battery staple")).await.unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", hash.as_str());
        assert!(hash.verify(Password::presented("correct horse battery staple")).await.unwrap());
        assert!(!hash.verify(Password::presented("correct horse battery stable")).await.unwrap());
        let again = PasswordHash::compute(Password::presented("correct horse battery staple")).await.unwrap();
        assert_ne!(hash, again, "salts must differ");
    }

    #[tokio::test]
    async fn the_dummy_hash_is_current_and_matches_nothing_obvious() {
        let dummy = PasswordHash::dummy();
        assert!(!dummy.needs_rehash());
        assert!(!dummy.verify(Password::presented("")).await.unwrap());
        assert!(!dummy.verify(Password::presented("correct horse battery staple")).await.unwrap());
    }

    #[tokio::test]
    async fn an_unusable_hash_verifies_no_password() {
        let unusable = PasswordHash::from_stored(UNUSABLE_HASH);
        for presented in ["", "!unusable", "correct horse battery staple"] {
            assert!(!unusable.verify(Password::presented(presented)).await.unwrap(), "{presented:?}");
        }
    }

    #[test]
    fn outdated_parameters_need_a_rehash() {
        let old = PasswordHash::from_stored(
            "$argon2id$v=19$m=4096,t=3,p=1$i8KZZD+EIOecga8nic1/cQ$lorjLtuC50DEaFMg8q2BFsWfrHHu+87HMcWzDPbU1oQ",
        );
        assert!(old.needs_rehash());
        let argon2i = PasswordHash::from_stored(
            "$argon2i$v=19$m=19456,t=2,p=1$i8KZZD+EIOecga8nic1/cQ$lorjLtuC50DEaFMg8q2BFsWfrHHu+87HMcWzDPbU1oQ",
        );
        assert!(argon2i.needs_rehash());
        assert!(PasswordHash::from_stored("garbage").needs_rehash());
    }

    #[test]
    fn debug_output_hides_the_password() {
        let p = Password::presented("hunter2hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
