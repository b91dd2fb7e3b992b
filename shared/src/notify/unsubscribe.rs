//! Unsubscribe links: a token, signed with the JWT keys, that names one user and one switch
//! (`email.product`, `email.payments`) and turns it off without a login. Its audience and
//! `token_use` differ from access tokens', so neither passes for the other.

use serde::{Deserialize, Serialize};

use super::preferences::{Category, Channel, Preferences};
use crate::{App, http::ApiError, identity::jwt::KeySet, time};

/// Long enough for old newsletters; keys rotate more slowly than this.
const LIFETIME_DAYS: i64 = 180;
const TOKEN_USE: &str = "unsubscribe";
/// Real tokens are ~600 characters; anything far longer is not one of ours.
pub const MAX_TOKEN_LEN: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    iat: i64,
    exp: i64,
    token_use: String,
    channel: Channel,
    category: Category,
}

fn audience(app: &App) -> String {
    format!("{}:unsubscribe", app.settings().jwt_audience)
}

/// A token that turns `channel`/`category` off for `user_id`.
pub fn issue(
    app: &App,
    keys: &KeySet,
    user_id: &str,
    channel: Channel,
    category: Category,
) -> Result<String, ApiError> {
    let now = time::now().unix_timestamp();
    let claims = Claims {
        iss: app.settings().jwt_issuer.clone(),
        aud: audience(app),
        sub: user_id.to_owned(),
        iat: now,
        exp: now + LIFETIME_DAYS * 86_400,
        token_use: TOKEN_USE.to_owned(),
        channel,
        category,
    };
    keys.sign_claims(&claims).map_err(ApiError::internal)
}

/// What an unsubscribe turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Unsubscribed {
    pub channel: Channel,
    pub category: Category,
}

/// `POST /notifications/unsubscribe`: turns off the switch the token names. Idempotent; a
/// token that is malformed, forged, expired or for anything else is 400 `token_invalid`.
pub async fn unsubscribe(app: &App, token: &str) -> Result<Unsubscribed, ApiError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(ApiError::TokenInvalid);
    }
    let keys = app.keys().await?;
    let claims: Claims =
        keys.verify_claims(token, &app.settings().jwt_issuer, &audience(app)).ok_or(ApiError::TokenInvalid)?;
    if claims.token_use != TOKEN_USE {
        return Err(ApiError::TokenInvalid);
    }
    let table = app.table();
    // An erased account keeps no preferences.
    if crate::identity::User::find(table, &claims.sub).await?.is_none() {
        return Err(ApiError::TokenInvalid);
    }
    Preferences::update(table, &claims.sub, |p| {
        if p.switch_off(claims.channel, claims.category) { Ok(()) } else { Err(ApiError::TokenInvalid) }
    })
    .await?;
    tracing::info!(user_id = %claims.sub, channel = ?claims.channel, category = ?claims.category, "unsubscribed");
    Ok(Unsubscribed { channel: claims.channel, category: claims.category })
}

/// The API route a mail client posts a one-click unsubscribe to (RFC 8058).
pub const ONE_CLICK_PATH: &str = "/notifications/unsubscribe/one-click";

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
