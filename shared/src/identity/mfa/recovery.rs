//! Recovery codes: ten single-use codes shown once when MFA is turned on, for a lost
//! authenticator. Each is 80 random bits (`xxxx-xxxx-xxxx-xxxx`, base32), so a plain SHA-256
//! is enough to store it: unlike a password there is nothing to guess from a dictionary.

use rand::RngCore;
use sha2::{Digest, Sha256};

pub const COUNT: usize = 10;
const CODE_BYTES: usize = 10;
const CODE_CHARS: usize = 16;

/// The codes to show, and the hashes to keep.
pub fn generate() -> (Vec<String>, Vec<String>) {
    (0..COUNT)
        .map(|_| {
            let mut bytes = [0u8; CODE_BYTES];
            rand::rng().fill_bytes(&mut bytes);
            let plain = data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase();
            let shown =
                plain.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("-");
            let hash = hash_normalised(&plain);
            (shown, hash)
        })
        .unzip()
}

/// The stored hash of a presented code (case, dashes and spaces ignored), or why it cannot
/// be one of ours.
pub fn hash(presented: &str) -> Result<String, &'static str> {
    let plain: String =
        presented.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_lowercase()).collect();
    let alphabet = |c: char| c.is_ascii_lowercase() || ('2'..='7').contains(&c);
    if plain.len() != CODE_CHARS || !plain.chars().all(alphabet) {
        return Err("must be one of the recovery codes, like abcd-efgh-ijkl-mnop");
    }
    Ok(hash_normalised(&plain))
}

fn hash_normalised(plain: &str) -> String {
    hex::encode(Sha256::digest(plain.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_distinct_codes_whose_hashes_match_what_is_kept() {
        let (shown, kept) = generate();
        assert_eq!(shown.len(), COUNT);
        assert_eq!(kept.len(), COUNT);
        let unique: std::collections::HashSet<_> = shown.iter().collect();
        assert_eq!(unique.len(), COUNT);
        for (code, stored) in shown.iter().zip(&kept) {
            assert_eq!(code.len(), 19, "{code}");
            assert_eq!(&hash(code).unwrap(), stored);
            assert_eq!(&hash(&code.to_uppercase().replace('-', " ")).unwrap(), stored);
            assert!(!stored.contains(&code.replace('-', "")));
        }
    }

    #[test]
    fn malformed_codes_are_refused_before_any_lookup() {
        for bad in ["", "abcd", "abcd-efgh-ijkl-mno1", "abcd-efgh-ijkl-mnopq", "abcd-efgh-ijkl-mnö"] {
            assert!(hash(bad).is_err(), "{bad}");
        }
    }
}
