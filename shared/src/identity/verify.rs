//! Email verification and re-sending the verification email.

use serde_json::json;

use super::{AccountTask, Email, OneTimeToken, OpaqueToken, TokenKind, User, register::VERIFY_TOKEN_HOURS};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::AccountError,
    notify::{DomainEvent, EmailKind},
    outbox::{self, Message, OutboxItem},
    services::Services,
    store::{Change, StoreError, av},
    time,
};

/// Verifies the address the token was sent to. Single use: the token item is deleted in the
/// same transaction that marks the user verified, under conditions, so of N concurrent calls
/// exactly one succeeds. Only the newest token of a user works.
#[tracing::instrument(skip_all)]
pub async fn verify_email(app: &Services, presented: &str, meta: &RequestMeta) -> Result<(), AccountError> {
    let table = app.table();
    let (token, user) = OneTimeToken::find_live(table, presented, TokenKind::VerifyEmail).await?;
    let hash = OpaqueToken::from_presented(presented).hash();
    let (user_pk, user_sk) = User::key(&user.user_id);
    let now = time::rfc3339(time::now());
    let audit = AuditEntry::new("auth.verify_email", AuditStatus::Success, &user.org_id, meta)
        .actor(&user.user_id)
        .target(&user.user_id);
    let sealer = app.outbox_sealer().await?;
    let items = vec![
        token.consume(table, &now),
        table.update(
            Change::new(&user_pk, &user_sk)
                .update("SET email_verified = :true, updated_at = :now REMOVE verify_token_hash")
                .condition("verify_token_hash = :hash")
                .value(":true", av::b(true))
                .value(":now", av::s(&now))
                .value(":hash", av::s(hash.as_str())),
        ),
        app.audit().put(&audit),
        outbox::put(
            table,
            Message::event(&DomainEvent::new(
                "user.verified",
                json!({ "user_id": user.user_id, "org_id": user.org_id }),
            )),
        ),
        outbox::put_sealed(
            table,
            &sealer,
            Message::email(
                EmailKind::Welcome,
                &user.email,
                json!({ "name": user.full_name, "login_link": format!("{}/login", app.settings().frontend_url) }),
            ),
        ),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    table.transact_or(items, AccountError::TokenInvalid).await?;
    tracing::info!(user_id = %user.user_id, "email verified");
    Ok(())
}

/// Asks for a fresh verification email for `email`. Like [`super::forgot_password`], the
/// request only hands the work to the notifier ([`send_verification`]), so it answers the
/// same, in the same time, whatever the address.
#[tracing::instrument(skip_all)]
pub async fn resend_verification(app: &Services, email: &Email) -> Result<(), AccountError> {
    let task = AccountTask::ResendVerification { email: email.as_str().to_owned() };
    let table = app.table();
    table.transact(vec![outbox::put(table, Message::Task(task))?]).await?;
    Ok(())
}

/// The notifier's half of [`resend_verification`]: if `email` belongs to an account that
/// still needs verifying, a new token replaces the user's current one (older links stop
/// working) and is emailed. The outbox items it committed.
pub(super) async fn send_verification(app: &Services, email: &str) -> Result<Vec<OutboxItem>, AccountError> {
    let table = app.table();
    let Some(user) = User::find_by_email(table, email).await? else {
        return Ok(Vec::new());
    };
    let (user_pk, user_sk) = User::key(&user.user_id);
    if user.email_verified || user.deletion_scheduled_at.is_some() {
        return Ok(Vec::new());
    }
    let token = OpaqueToken::generate();
    let hash = token.hash();
    let item = OneTimeToken::new(TokenKind::VerifyEmail, &hash, &user.user_id, time::hours(VERIFY_TOKEN_HOURS));
    let link = format!("{}/verify-email?token={}", app.settings().frontend_url, token.expose());
    let message = OutboxItem::sealed(
        Message::email(EmailKind::VerifyEmail, &user.email, json!({ "link": link, "name": user.full_name })),
        &app.outbox_sealer().await?,
    )?;
    let items = vec![
        table.put_new(&item),
        table.update(
            Change::new(&user_pk, &user_sk)
                .update("SET verify_token_hash = :hash")
                .condition("attribute_exists(PK) AND email_verified = :false")
                .value(":hash", av::s(hash.as_str()))
                .value(":false", av::b(false)),
        ),
        message.put(table),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    match table.transact(items).await {
        Ok(()) => Ok(vec![message]),
        // Verified in the meantime: nothing to send.
        Err(StoreError::TransactionConditionsFailed(_)) => Ok(Vec::new()),
        Err(other) => Err(AccountError::internal(other)),
    }
}
