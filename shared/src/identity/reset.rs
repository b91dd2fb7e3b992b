//! Forgotten passwords: a one-hour, single-use reset link by email, and the reset itself,
//! which ends every session of the user and tells them by email.

use serde_json::json;

use super::{AccountTask, Email, OneTimeToken, OpaqueToken, Password, PasswordHash, TokenKind, User};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::{Origin, RequestMeta},
    identity::AccountError,
    invalid::Invalid,
    notify::EmailKind,
    outbox::{self, Message, OutboxItem},
    seal::Sealer,
    services::Services,
    store::{Change, av},
    time,
};

pub const RESET_TOKEN_HOURS: i64 = 1;

/// Asks for a reset link for `email`. The request only hands the work to the notifier (an
/// outbox task, [`send_password_reset`]), so it does the same thing, in the same time,
/// whether or not the address has an account.
#[tracing::instrument(skip_all)]
pub async fn forgot_password(app: &Services, email: &Email, meta: &RequestMeta) -> Result<(), AccountError> {
    let task = AccountTask::SendPasswordReset { email: email.as_str().to_owned(), origin: meta.origin() };
    let table = app.table();
    table.transact(vec![outbox::put(table, Message::Task(task))?]).await?;
    Ok(())
}

/// The notifier's half of [`forgot_password`]: if `email` has an account (not being
/// deleted), a fresh one-hour link replaces any older one, by email, audited. The outbox
/// items it committed, for the notifier to send at once.
pub(super) async fn send_password_reset(
    app: &Services,
    email: &str,
    origin: &Origin,
) -> Result<Vec<OutboxItem>, AccountError> {
    let table = app.table();
    let Some(user) = User::find_by_email(table, email).await? else {
        return Ok(Vec::new());
    };
    let (user_pk, user_sk) = User::key(&user.user_id);
    if user.deletion_scheduled_at.is_some() {
        return Ok(Vec::new());
    }
    let ResetLink { item, hash, message } = reset_link(app, &user, &app.outbox_sealer().await?)?;
    let audit = AuditEntry::new("auth.password_reset_requested", AuditStatus::Success, &user.org_id, &origin.meta())
        .target(&user.user_id);
    let items = vec![
        table.put_new(&item),
        // Only the newest link works.
        table.update(
            Change::new(&user_pk, &user_sk)
                .update("SET reset_token_hash = :hash")
                .condition("attribute_exists(PK)")
                .value(":hash", av::s(hash.as_str())),
        ),
        app.audit().put(&audit),
        message.put(table),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    table.transact(items).await?;
    Ok(vec![message])
}

/// A fresh reset link for `user`: its token item, the hash the user item must name (only
/// the newest link works) and the email that carries it.
pub(super) struct ResetLink {
    pub item: OneTimeToken,
    pub hash: super::TokenHash,
    pub message: OutboxItem,
}

pub(super) fn reset_link(app: &Services, user: &User, sealer: &Sealer) -> Result<ResetLink, AccountError> {
    let token = OpaqueToken::generate();
    let hash = token.hash();
    let item = OneTimeToken::new(TokenKind::ResetPassword, &hash, &user.user_id, time::hours(RESET_TOKEN_HOURS));
    let link = format!("{}/reset-password?token={}", app.settings().frontend_url, token.expose());
    let message =
        OutboxItem::sealed(Message::email(EmailKind::ResetPassword, &user.email, json!({ "link": link })), sealer)?;
    Ok(ResetLink { item, hash, message })
}

/// Sets a new password with a reset token. Single use; bumps the session version so every
/// access and refresh token issued before stops working; marks the address verified (the
/// token proves the user reads it).
#[tracing::instrument(skip_all)]
pub async fn reset_password(
    app: &Services,
    presented: &str,
    new_password: &str,
    meta: &RequestMeta,
) -> Result<(), AccountError> {
    let table = app.table();
    let (token, user) = OneTimeToken::find_live(table, presented, TokenKind::ResetPassword).await?;
    let hash = OpaqueToken::from_presented(presented).hash();
    let (user_pk, user_sk) = User::key(&user.user_id);
    if user.reset_token_hash.as_deref() != Some(hash.as_str()) {
        return Err(AccountError::TokenInvalid);
    }
    let email = Email::parse(&user.email).map_err(AccountError::internal)?;
    let mut context = vec![email.as_str(), email.local_part()];
    if let Some(name) = &user.full_name {
        context.extend(name.split_whitespace());
    }
    let password = Password::parse(new_password, &context)
        .map_err(|message| AccountError::Invalid(Invalid::field("new_password", message)))?;
    let password_hash = PasswordHash::compute(password).await.map_err(AccountError::internal)?;

    let now = time::rfc3339(time::now());
    let audit = AuditEntry::new("auth.password_reset", AuditStatus::Success, &user.org_id, meta)
        .actor(&user.user_id)
        .target(&user.user_id);
    let reset_link = format!("{}/forgot-password", app.settings().frontend_url);
    let notice = Message::email(EmailKind::PasswordChanged, &user.email, json!({ "reset_link": reset_link }));
    let items = vec![
        token.consume(table, &now),
        table.update(
            Change::new(&user_pk, &user_sk)
                .update(
                    "SET password_hash = :hash, email_verified = :true, updated_at = :now, \
                     session_version = if_not_exists(session_version, :zero) + :one REMOVE reset_token_hash",
                )
                .condition("reset_token_hash = :token")
                .value(":hash", av::s(password_hash.as_str()))
                .value(":true", av::b(true))
                .value(":now", av::s(&now))
                .value(":zero", av::n(0))
                .value(":one", av::n(1))
                .value(":token", av::s(hash.as_str())),
        ),
        // The owner proved themselves from this address: its count starts over (the counts
        // of other addresses, an attacker's say, stay).
        table.delete(Change::new(&user_pk, &super::attempts::counter_sort_key(&meta.client_key()))),
        // ...and it is an address the account knows: a cap on new addresses (no CAPTCHA)
        // never keeps the owner out once they have proved the mailbox from here.
        super::attempts::known_client(table, &user.user_id, &meta.client_key()),
        app.audit().put(&audit),
        outbox::put_sealed(table, &app.outbox_sealer().await?, notice),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    table.transact_or(items, AccountError::TokenInvalid).await?;
    tracing::info!(user_id = %user.user_id, "password reset; all sessions revoked");
    Ok(())
}
