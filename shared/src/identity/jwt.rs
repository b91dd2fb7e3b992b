//! RS256 access tokens: signing with the current key, verification against every published
//! key, and the JWKS that lets any standard JWT library (or API Gateway's JWT authorizer)
//! verify them.
//!
//! Verification allow-lists RS256, requires a known `kid`, and checks `iss`, `aud`, `exp`,
//! `iat`, `token_use` and a lifetime of at most 15 minutes. `alg: none`, HS256 keyed with
//! the public key, and foreign keys all fail here.

use std::collections::HashMap;

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    jwk::{Jwk, JwkSet, PublicKeyUse},
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::Role;
use crate::{config::Settings, secrets::Secrets};

pub const TOKEN_USE_ACCESS: &str = "access";
const MAX_LIFETIME_SECONDS: i64 = 900;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub org: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub token_use: String,
    pub csrf: String,
    /// The session (refresh-token family) the token belongs to.
    pub sid: String,
    /// The user's session version when issued; bumping it revokes every session at once.
    pub sv: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the secrets hold no JWT key, private or public")]
    NoSigningKey,
    #[error("signing key {kid} is unusable: {reason}")]
    BadKey { kid: String, reason: String },
}

/// The keys derived from the secret: the first private key signs; every private key and
/// every published public key verifies. A function without the signing secret has public
/// keys only: it verifies, and cannot sign.
pub struct KeySet {
    signing: Option<(String, EncodingKey)>,
    verifying: HashMap<String, DecodingKey>,
    jwks: JwkSet,
}

impl KeySet {
    pub fn from_secrets(secrets: &Secrets) -> Result<Self, KeyError> {
        let mut verifying = HashMap::new();
        let mut jwks = Vec::new();
        let mut signing = None;
        for key in &secrets.jwt_signing_keys {
            let bad = |reason: String| KeyError::BadKey { kid: key.kid.clone(), reason };
            let encoding = EncodingKey::from_rsa_pem(key.private_key_pem.expose_secret().as_bytes())
                .map_err(|e| bad(e.to_string()))?;
            let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).map_err(|e| bad(e.to_string()))?;
            jwk.common.key_id = Some(key.kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| bad(e.to_string()))?;
            verifying.insert(key.kid.clone(), decoding);
            jwks.push(jwk);
            if signing.is_none() {
                signing = Some((key.kid.clone(), encoding));
            }
        }
        for key in &secrets.jwt_public_keys {
            let decoding = DecodingKey::from_rsa_pem(key.public_key_pem.as_bytes())
                .map_err(|e| KeyError::BadKey { kid: key.kid.clone(), reason: e.to_string() })?;
            verifying.entry(key.kid.clone()).or_insert(decoding);
        }
        if verifying.is_empty() {
            return Err(KeyError::NoSigningKey);
        }
        Ok(Self { signing, verifying, jwks: JwkSet { keys: jwks } })
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign_claims(claims)
    }

    /// Signs other tokens with the current key (each kind sets its own `aud` and
    /// `token_use`, so no kind of token passes for another).
    pub fn sign_claims<T: Serialize>(&self, claims: &T) -> Result<String, jsonwebtoken::errors::Error> {
        let Some((kid, key)) = &self.signing else {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into());
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key)
    }

    /// The claims of a token this key set signed for `issuer` and `audience`, unexpired;
    /// `None` for anything else.
    pub fn verify_claims<T: DeserializeOwned>(&self, token: &str, issuer: &str, audience: &str) -> Option<T> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::RS256 {
            return None;
        }
        let key = self.verifying.get(header.kid.as_deref()?)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 30;
        jsonwebtoken::decode::<T>(token, key, &validation).ok().map(|t| t.claims)
    }

    /// The claims of a valid access token, or `None` for anything else.
    pub fn verify(&self, token: &str, settings: &Settings) -> Option<AccessClaims> {
        let claims: AccessClaims = self.verify_claims(token, &settings.jwt_issuer, &settings.jwt_audience)?;
        let lifetime = claims.exp - claims.iat;
        let now = crate::time::now().unix_timestamp();
        if claims.token_use != TOKEN_USE_ACCESS
            || !(1..=MAX_LIFETIME_SECONDS).contains(&lifetime)
            || claims.iat > now + 30
        {
            return None;
        }
        Some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh 2048-bit key per test run, so no private key lives in the repository.
    pub(crate) fn test_key_pem() -> String {
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
        use base64::Engine as _;
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der: Pkcs8V1Der = key.as_der().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
    }

    /// A key pair's private PEM and its public (SubjectPublicKeyInfo) PEM.
    fn key_pair_pems() -> (String, String) {
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
        use aws_lc_rs::signature::KeyPair as _;
        use base64::Engine as _;
        let pem = |label: &str, der: &[u8]| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
            format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
        };
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let private: Pkcs8V1Der = key.as_der().unwrap();
        let public: PublicKeyX509Der = key.public_key().as_der().unwrap();
        (pem("PRIVATE KEY", private.as_ref()), pem("PUBLIC KEY", public.as_ref()))
    }

    #[test]
    fn a_function_with_public_keys_only_verifies_and_cannot_sign() {
        let (private, public) = key_pair_pems();
        let issuer = KeySet::from_secrets(&secrets(&[("k1", &private)])).unwrap();
        let token = issuer.sign(&claims(crate::time::now().unix_timestamp())).unwrap();
        let verifier_secrets = Secrets::parse(
            "t",
            &serde_json::json!({"jwt_public_keys": [{"kid": "k1", "public_key_pem": public}]}).to_string(),
        )
        .unwrap();
        let verifier = KeySet::from_secrets(&verifier_secrets).unwrap();
        assert_eq!(verifier.verify(&token, &settings()).map(|c| c.sub), Some("u1".to_owned()));
        assert!(verifier.sign(&claims(0)).is_err(), "no private key, no token");
        let empty = Secrets::parse("t", "{}").unwrap();
        assert!(KeySet::from_secrets(&empty).is_err());
    }

    /// The rotation of docs/operations.md: publish the new public half, then sign with the
    /// new key, then (once the old key's tokens have expired) drop the old one. No live
    /// token stops verifying at any step, at the issuer or at a verifier.
    #[test]
    fn a_signing_key_rotates_without_breaking_a_live_token() {
        let ((old_private, old_public), (new_private, new_public)) = (key_pair_pems(), key_pair_pems());
        let public = |keys: &[(&str, &str)]| {
            let keys: Vec<_> =
                keys.iter().map(|(kid, pem)| serde_json::json!({"kid": kid, "public_key_pem": pem})).collect();
            let document = serde_json::json!({ "jwt_public_keys": keys }).to_string();
            KeySet::from_secrets(&Secrets::parse("t", &document).unwrap()).unwrap()
        };
        let now = crate::time::now().unix_timestamp();
        let old_token = KeySet::from_secrets(&secrets(&[("old", &old_private)])).unwrap().sign(&claims(now)).unwrap();

        // 1. Publish: verifiers know both before anything is signed with the new key.
        let verifier = public(&[("new", &new_public), ("old", &old_public)]);
        assert!(verifier.verify(&old_token, &settings()).is_some());
        // 2. Switch: the issuer signs with the new key and still verifies the old one's tokens.
        let issuer = KeySet::from_secrets(&secrets(&[("new", &new_private), ("old", &old_private)])).unwrap();
        let new_token = issuer.sign(&claims(now)).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&new_token).unwrap().kid.as_deref(), Some("new"));
        for token in [&old_token, &new_token] {
            assert!(issuer.verify(token, &settings()).is_some() && verifier.verify(token, &settings()).is_some());
        }
        // 3. Retire: the old key's tokens stop verifying, the new key's do not.
        let retired = public(&[("new", &new_public)]);
        assert!(retired.verify(&old_token, &settings()).is_none());
        assert!(retired.verify(&new_token, &settings()).is_some());
    }

    #[test]
    fn production_refuses_a_signing_key_whose_public_half_is_not_published() {
        let (private, public) = key_pair_pems();
        let unpublished = Secrets::parse(
            "t",
            &serde_json::json!({"jwt_signing_keys": [{"kid": "k1", "private_key_pem": private}],
                                "jwt_public_keys": [{"kid": "k0", "public_key_pem": public}]})
            .to_string(),
        )
        .unwrap();
        use crate::secrets::Part;
        let refused = unpublished.check_production(&[Part::PublicKeys, Part::Signing], false).unwrap_err();
        assert!(refused.to_string().contains("jwt_public_keys"), "{refused}");
    }

    fn secrets(keys: &[(&str, &str)]) -> Secrets {
        let keys: Vec<_> =
            keys.iter().map(|(kid, pem)| serde_json::json!({"kid": kid, "private_key_pem": pem})).collect();
        Secrets::parse("t", &serde_json::json!({ "jwt_signing_keys": keys }).to_string()).unwrap()
    }

    fn settings() -> Settings {
        Settings::from_lookup(|k| {
            Some(
                match k {
                    "TABLE_NAME" => "t",
                    "FRONTEND_URL" => "http://localhost:3000",
                    "EMAIL_FROM" => "a@example.com",
                    "JWT_ISSUER" => "http://issuer.test",
                    _ => return None,
                }
                .to_owned(),
            )
        })
        .unwrap()
    }

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: "http://issuer.test".into(),
            aud: "backend-api".into(),
            sub: "u1".into(),
            org: "o1".into(),
            role: Role::Admin,
            iat: now,
            exp: now + 900,
            jti: "j".into(),
            token_use: TOKEN_USE_ACCESS.into(),
            csrf: "c".into(),
            sid: "s".into(),
            sv: 0,
        }
    }

    #[test]
    fn signs_with_kid_and_verifies_and_publishes_the_public_key() {
        let pem = test_key_pem();
        let keys = KeySet::from_secrets(&secrets(&[("k1", &pem)])).unwrap();
        let now = crate::time::now().unix_timestamp();
        let token = keys.sign(&claims(now)).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(), Some("k1"));
        assert_eq!(keys.verify(&token, &settings()), Some(claims(now)));
        let jwks = serde_json::to_value(keys.jwks()).unwrap();
        let key = &jwks["keys"][0];
        assert_eq!(
            (key["kty"].as_str(), key["alg"].as_str(), key["use"].as_str(), key["kid"].as_str()),
            (Some("RSA"), Some("RS256"), Some("sig"), Some("k1"))
        );
        assert!(key.get("d").is_none(), "no private parts");
    }

    #[test]
    fn rejects_wrong_claims_long_lifetimes_and_unknown_kids() {
        let pem = test_key_pem();
        let keys = KeySet::from_secrets(&secrets(&[("k1", &pem)])).unwrap();
        let now = crate::time::now().unix_timestamp();
        let s = settings();
        let mut c = claims(now);
        c.token_use = "refresh".into();
        assert!(keys.verify(&keys.sign(&c).unwrap(), &s).is_none());
        let mut c = claims(now);
        c.exp = now + 3600;
        assert!(keys.verify(&keys.sign(&c).unwrap(), &s).is_none());
        let mut c = claims(now);
        c.aud = "other".into();
        assert!(keys.verify(&keys.sign(&c).unwrap(), &s).is_none());
        let mut c = claims(now - 2000);
        c.exp = now - 1100;
        assert!(keys.verify(&keys.sign(&c).unwrap(), &s).is_none());
        // Same key published under another kid is not the key the verifier knows.
        let other = KeySet::from_secrets(&secrets(&[("k2", &pem)])).unwrap();
        assert!(keys.verify(&other.sign(&claims(now)).unwrap(), &s).is_none());
        assert!(keys.verify("not.a.jwt", &s).is_none());
    }
}
