//! Unsubscribe links: a token that names one user and one switch (`email.product`,
//! `email.payments`) and turns it off without a login. Signed (HMAC) with keys of their own
//! (`unsubscribe_signing_keys`), so the notifier, which mints them, holds no token-signing
//! key, and an unsubscribe token can never pass for anything else.

use serde::{Deserialize, Serialize};

use super::preferences::{Category, Channel, Preferences};
use crate::{
    seal::{CipherError, Signer},
    services::Services,
    store::StoreError,
    time,
};

/// Long enough for old newsletters; keys rotate more slowly than this.
const LIFETIME_DAYS: i64 = 180;
/// Real tokens are ~150 characters; anything far longer is not one of ours.
pub const MAX_TOKEN_LEN: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    channel: Channel,
    category: Category,
}

/// The route a mail client posts a one-click unsubscribe to (RFC 8058): emails link it, and
/// it takes a form where every other route takes JSON.
pub const ONE_CLICK_PATH: &str = "/notifications/unsubscribe/one-click";

/// Why an unsubscribe did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UnsubscribeError {
    /// Malformed, forged, expired, for an erased account, or for a switch there is not.
    #[error("the unsubscribe token is invalid")]
    TokenInvalid,
    #[error("unsubscribe keys: {0}")]
    Keys(#[from] CipherError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What signs and checks unsubscribe tokens.
pub async fn signer(app: &Services) -> Result<Signer, CipherError> {
    let secrets = app.secrets().get().await.map_err(|e| CipherError::KeysUnavailable(e.to_string()))?;
    Signer::from_secrets(&secrets, crate::seal::UNSUBSCRIBE)
}

/// A token that turns `channel`/`category` off for `user_id`.
pub fn issue(signer: &Signer, user_id: &str, channel: Channel, category: Category) -> String {
    let claims = Claims {
        sub: user_id.to_owned(),
        exp: time::now().unix_timestamp() + LIFETIME_DAYS * 86_400,
        channel,
        category,
    };
    signer.sign(&serde_json::to_vec(&claims).expect("claims serialize"))
}

/// What an unsubscribe turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Unsubscribed {
    pub channel: Channel,
    pub category: Category,
}

/// `POST /notifications/unsubscribe`: turns off the switch the token names. Idempotent; a
/// token that is malformed, forged, expired or for anything else is 400 `token_invalid`.
pub async fn unsubscribe(app: &Services, token: &str) -> Result<Unsubscribed, UnsubscribeError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(UnsubscribeError::TokenInvalid);
    }
    let payload = signer(app).await?.verify(token).ok_or(UnsubscribeError::TokenInvalid)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| UnsubscribeError::TokenInvalid)?;
    if claims.exp <= time::now().unix_timestamp() {
        return Err(UnsubscribeError::TokenInvalid);
    }
    let table = app.table();
    // An erased account keeps no preferences.
    if crate::identity::User::find(table, &claims.sub).await?.is_none() {
        return Err(UnsubscribeError::TokenInvalid);
    }
    Preferences::update(table, &claims.sub, |p| {
        if p.switch_off(claims.channel, claims.category) { Ok(()) } else { Err(UnsubscribeError::TokenInvalid) }
    })
    .await?;
    tracing::info!(user_id = %claims.sub, channel = ?claims.channel, category = ?claims.category, "unsubscribed");
    Ok(Unsubscribed { channel: claims.channel, category: claims.category })
}

/// Whether `body` is RFC 8058's one-click form: `List-Unsubscribe=One-Click`, sent
/// `application/x-www-form-urlencoded` or as a `multipart/form-data` field.
pub fn is_one_click_form(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else { return false };
    let urlencoded = text.trim().split('&').any(|pair| pair == "List-Unsubscribe=One-Click");
    let multipart = text
        .split_once("name=\"List-Unsubscribe\"")
        .is_some_and(|(_, rest)| rest.split_once("\r\n\r\n").is_some_and(|(_, value)| value.starts_with("One-Click")));
    urlencoded || multipart
}

#[cfg(test)]
mod tests {
    use super::is_one_click_form;

    #[test]
    fn only_the_one_click_form_is_a_one_click_request() {
        assert!(is_one_click_form(b"List-Unsubscribe=One-Click"));
        assert!(is_one_click_form(b"a=b&List-Unsubscribe=One-Click\r\n"));
        let multipart =
            "--x\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--x--\r\n";
        assert!(is_one_click_form(multipart.as_bytes()));
        assert!(!is_one_click_form(b""));
        assert!(!is_one_click_form(b"List-Unsubscribe=Other"));
        assert!(!is_one_click_form(b"{\"List-Unsubscribe\":\"One-Click\"}"));
    }
}
