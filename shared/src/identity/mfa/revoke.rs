//! "Two-step verification is on, and it was not me": whoever learns the password can turn
//! MFA on and lock the owner out with an authenticator the owner does not have, and a
//! password reset would leave that factor in place. So the notice of a new factor carries
//! a single-use link (7 days) that turns that factor off, ends every session and mails a
//! fresh reset link, all in one transaction.

use serde_json::json;

use super::SORT_KEY;
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::AccountError,
    identity::{OneTimeToken, OpaqueToken, TokenKind, User, reset},
    services::Services,
    store::{Change, av},
    time,
};

pub const REVOKE_LINK_DAYS: i64 = 7;

/// The revocation token for the factor `user` confirms at `confirmed_at`, and its link.
pub(super) fn link(app: &Services, user: &User, confirmed_at: &str) -> (OneTimeToken, String) {
    let token = OpaqueToken::generate();
    let mut item = OneTimeToken::new(
        TokenKind::FactorRevoke,
        &token.hash(),
        &user.user_id,
        time::Duration::days(REVOKE_LINK_DAYS),
    );
    item.factor_confirmed_at = Some(confirmed_at.to_owned());
    // In the fragment: it never reaches a server log or a Referer.
    let link = format!("{}/revoke-factor#token={}", app.settings().frontend_url, token.expose());
    (item, link)
}

/// `POST /auth/factors/revoke`: the link's token turns its factor off (if it is still the
/// one it was minted for), ends every session, and mails a reset link. Single use; any
/// other token, or a factor since turned off or replaced, is 400 `token_invalid`.
pub async fn revoke_by_link(app: &Services, presented: &str, meta: &RequestMeta) -> Result<(), AccountError> {
    let table = app.table();
    let (token, user) = OneTimeToken::find_live(table, presented, TokenKind::FactorRevoke).await?;
    let confirmed_at = token.factor_confirmed_at.clone().ok_or(AccountError::TokenInvalid)?;
    let (pk, sk) = User::key(&user.user_id);
    let now = time::rfc3339(time::now());
    let reset::ResetLink { item: reset_item, hash: reset_hash, message } =
        reset::reset_link(app, &user, &app.outbox_sealer().await?)?;
    let audit = AuditEntry::new("auth.mfa_revoked", AuditStatus::Success, &user.org_id, meta)
        .actor(&user.user_id)
        .target(&user.user_id)
        .details(json!({ "method": "totp", "sessions_revoked": true, "reset_link_sent": true }));
    let items = vec![
        token.consume(table, &now),
        table.delete(
            Change::new(&pk, SORT_KEY)
                .condition("enabled = :true AND confirmed_at = :confirmed")
                .value(":true", av::b(true))
                .value(":confirmed", av::s(&confirmed_at)),
        ),
        // Every session ends (none is kept: the caller is whoever holds the mailbox), the
        // password stops working (whoever turned MFA on knows it, and would sign straight
        // back in), and only the reset link sent now works.
        table.update(
            Change::new(&pk, &sk)
                .update(
                    "SET mfa_enabled = :false, password_hash = :unusable, reset_token_hash = :reset, \
                     updated_at = :now, session_version = if_not_exists(session_version, :zero) + :one",
                )
                .condition("attribute_exists(PK)")
                .value(":false", av::b(false))
                .value(":unusable", av::s(crate::identity::password::UNUSABLE_HASH))
                .value(":reset", av::s(reset_hash.as_str()))
                .value(":now", av::s(&now))
                .value(":zero", av::n(0))
                .value(":one", av::n(1)),
        ),
        table.put_new(&reset_item),
        app.audit().put(&audit),
        message.put(table),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    table.transact_or(items, AccountError::TokenInvalid).await?;
    tracing::info!(user_id = %user.user_id, "MFA revoked from the notice's link; all sessions ended");
    Ok(())
}
