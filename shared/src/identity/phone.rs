//! A user's phone: an E.164 number that receives SMS only once it is verified, by a 6-digit
//! code sent to it (10 minutes, [`MAX_TRIES`] tries). The code itself is the one SMS an
//! unverified number gets, and those are rate limited per user and per number: without that,
//! a form that texts any number on request is a toll-fraud pump.
//!
//! The pending code is `USER#{user_id}` / `PHONE_CODE`, keyed to the number it was sent to,
//! holding only a salted hash of the code; it goes when the number is verified or replaced.

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{User, auth::Principal};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::AccountError,
    invalid::Invalid,
    notify::Category,
    outbox::{self, Message},
    rate_limit::Rule,
    services::Services,
    store::{Change, StoreError, av},
    time,
};

const SORT_KEY: &str = "PHONE_CODE";
pub const CODE_MINUTES: i64 = 10;
pub const MAX_TRIES: u32 = 5;

/// An E.164 number: `+`, a country code that does not start with 0, at most 15 digits.
/// Spaces, dashes, dots and parentheses people type are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let compact: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
        let digits = compact.strip_prefix('+').unwrap_or_default();
        if (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0') {
            Ok(Self(compact))
        } else {
            Err("must be an E.164 number such as +14155550123")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct PendingCode {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    phone: String,
    code_hash: String,
    #[serde(default)]
    tries: u32,
    expires_at: i64,
    ttl: i64,
}

/// The digest kept of a code: keyed (HMAC, a key from the secret) and bound to the user and
/// number, so a copy of the table cannot try the million codes against it.
fn code_hash(hasher: &crate::seal::Signer, user_id: &str, phone: &str, code: &str) -> String {
    hasher.digest(format!("{user_id}\n{phone}\n{code}").as_bytes())
}

async fn code_hasher(app: &Services) -> Result<crate::seal::Signer, AccountError> {
    let secrets = app.secrets().get().await.map_err(AccountError::internal)?;
    Ok(crate::seal::Signer::from_secrets(&secrets, crate::seal::PHONE_CODE)?)
}

/// A six-digit code, as typed.
pub fn parse_code(raw: &str) -> Result<String, &'static str> {
    let digits: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits)
    } else {
        Err("must be the 6-digit code sent by SMS")
    }
}

/// What `PATCH /auth/me` changes: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Default)]
pub struct ProfileChange {
    pub full_name: Option<Option<String>>,
    pub phone: Option<Option<Phone>>,
}

/// Applies `change` to the caller's profile, in one transaction with its audit entry. A new
/// number (or the same unverified one again) is stored unverified and gets a fresh code.
pub async fn update_profile(
    app: &Services,
    principal: &Principal,
    change: ProfileChange,
    meta: &RequestMeta,
) -> Result<User, AccountError> {
    let user = &principal.user;
    let table = app.table();
    let (pk, sk) = User::key(&user.user_id);
    let now = time::now();
    let stamp = time::rfc3339(now);

    let mut sets = vec!["updated_at = :now"];
    let mut removes = Vec::new();
    let mut changed = Vec::new();
    let mut extra = Vec::new();
    let mut values = vec![(":now", av::s(&stamp))];
    match &change.full_name {
        Some(Some(name)) if user.full_name.as_deref() != Some(name.as_str()) => {
            sets.push("full_name = :name");
            values.push((":name", av::s(name)));
            changed.push("full_name");
        }
        Some(None) if user.full_name.is_some() => {
            removes.push("full_name");
            changed.push("full_name");
        }
        _ => {}
    }
    match &change.phone {
        // A verified number stays as it is; anything else (new, or unverified) gets a code.
        Some(Some(phone)) if user.phone.as_deref() == Some(phone.as_str()) && user.phone_verified => {}
        Some(Some(phone)) => {
            app.rate_limit(Rule::PhoneCode, &user.user_id).await?;
            app.rate_limit(Rule::PhoneCodeNumber, phone.as_str()).await?;
            sets.extend(["phone = :phone", "phone_verified = :false"]);
            values.extend([(":phone", av::s(phone.as_str())), (":false", av::b(false))]);
            changed.push("phone");
            let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
            let expires = now.unix_timestamp() + CODE_MINUTES * 60;
            let pending = PendingCode {
                pk: pk.clone(),
                sk: SORT_KEY.to_owned(),
                phone: phone.as_str().to_owned(),
                code_hash: code_hash(&code_hasher(app).await?, &user.user_id, phone.as_str(), &code),
                tries: 0,
                expires_at: expires,
                ttl: expires,
            };
            let text = format!(
                "{code} is your {} verification code. It expires in {CODE_MINUTES} minutes. Do not share it.",
                app.settings().mfa_issuer
            );
            extra.push(table.put(&pending, None)?);
            let sms = Message::sms(phone.as_str(), text, &user.user_id, Category::Security);
            extra.push(outbox::put_sealed(table, &app.outbox_sealer().await?, sms)?);
        }
        Some(None) if user.phone.is_some() => {
            removes.extend(["phone", "phone_verified"]);
            changed.push("phone");
            extra.push(table.delete(Change::new(&pk, SORT_KEY))?);
        }
        _ => {}
    }
    if changed.is_empty() {
        return Ok(user.clone());
    }

    let expression = if removes.is_empty() {
        format!("SET {}", sets.join(", "))
    } else {
        format!("SET {} REMOVE {}", sets.join(", "), removes.join(", "))
    };
    let mut profile = Change::new(&pk, &sk).update(&expression).condition("attribute_exists(PK)");
    for (name, value) in values {
        profile = profile.value(name, value);
    }
    let audit = AuditEntry::new("account.updated", AuditStatus::Success, &user.org_id, meta)
        .actor(&user.user_id)
        .target(&user.user_id)
        .details(json!({ "fields": changed }));
    let mut items = vec![table.update(profile)?, app.audit().put(&audit)?];
    items.extend(extra);
    table.transact(items).await?;
    User::find(table, &user.user_id).await?.ok_or(AccountError::Unauthorized)
}

/// Checks the code sent to the caller's number; right, the number is verified.
pub async fn verify(
    app: &Services,
    principal: &Principal,
    code: &str,
    meta: &RequestMeta,
) -> Result<User, AccountError> {
    let user = &principal.user;
    let table = app.table();
    let (pk, sk) = User::key(&user.user_id);
    let expired =
        || AccountError::Invalid(Invalid::field("code", "has expired or was tried too often; ask for a new one"));
    let phone = match (&user.phone, user.phone_verified) {
        (Some(phone), false) => phone.clone(),
        _ => return Err(AccountError::Conflict("no phone number is waiting to be verified".into())),
    };
    // Each try is counted before the code is compared, with a condition: concurrent guesses
    // get no more than [`MAX_TRIES`] between them.
    let now = time::now().unix_timestamp();
    let counted = table
        .update_item(
            Change::new(&pk, SORT_KEY)
                .update("SET tries = tries + :one")
                .condition("phone = :phone AND tries < :max AND expires_at > :now")
                .value(":one", av::n(1))
                .value(":phone", av::s(&phone))
                .value(":max", av::n(MAX_TRIES))
                .value(":now", av::n(now)),
        )
        .await;
    let pending: PendingCode = match counted {
        Ok(item) => serde_dynamo::from_item(item).map_err(AccountError::internal)?,
        Err(StoreError::ConditionFailed) => return Err(expired()),
        Err(other) => return Err(other.into()),
    };
    let presented = code_hash(&code_hasher(app).await?, &user.user_id, &phone, code);
    if !bool::from(presented.as_bytes().ct_eq(pending.code_hash.as_bytes())) {
        return Err(AccountError::Invalid(Invalid::field("code", "is not the code we sent")));
    }
    let audit = AuditEntry::new("account.phone_verified", AuditStatus::Success, &user.org_id, meta)
        .actor(&user.user_id)
        .target(&user.user_id);
    let items = vec![
        table.delete(
            Change::new(&pk, SORT_KEY).condition("code_hash = :hash").value(":hash", av::s(&pending.code_hash)),
        )?,
        table.update(
            Change::new(&pk, &sk)
                .update("SET phone_verified = :true, updated_at = :now")
                .condition("phone = :phone")
                .value(":true", av::b(true))
                .value(":phone", av::s(&phone))
                .value(":now", av::s(time::rfc3339(time::now()))),
        )?,
        app.audit().put(&audit)?,
    ];
    // Losing means the number changed, or another request verified it, meanwhile.
    table.transact_or(items, expired()).await?;
    User::find(table, &user.user_id).await?.ok_or(AccountError::Unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_e164_and_typing_marks_are_dropped() {
        assert_eq!(Phone::parse("+1 (415) 555-0123").unwrap().as_str(), "+14155550123");
        assert_eq!(Phone::parse("+44.20.7946.0958").unwrap().as_str(), "+442079460958");
        for bad in ["14155550123", "+0123456789", "+1", "+1234567890123456", "+1415555012a", "", "+", "++14155550123"] {
            assert!(Phone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn codes_are_six_digits_and_hashes_depend_on_who_and_where() {
        assert_eq!(parse_code("123 456").unwrap(), "123456");
        assert!(parse_code("12345").is_err() && parse_code("abcdef").is_err());
        let hasher = |byte: u8| {
            let key = crate::secrets::EncryptionKey {
                kid: "k".into(),
                key: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [byte; 32]).into(),
            };
            let mut secrets: crate::secrets::Secrets = serde_json::from_str("{}").unwrap();
            secrets.outbox_sealing_keys = vec![key];
            crate::seal::Signer::from_secrets(&secrets, crate::seal::PHONE_CODE).unwrap()
        };
        let (ours, other_key) = (hasher(1), hasher(2));
        let h = code_hash(&ours, "u1", "+14155550123", "123456");
        assert_ne!(h, code_hash(&ours, "u2", "+14155550123", "123456"));
        assert_ne!(h, code_hash(&ours, "u1", "+14155550124", "123456"));
        assert_ne!(h, code_hash(&other_key, "u1", "+14155550123", "123456"), "without the key, no match");
        assert!(!h.contains("123456"));
    }
}
