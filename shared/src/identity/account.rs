//! Account lifecycle and organisation administration: scheduled deletion and restore, and
//! role changes that never leave an organisation without an active, verified admin.

use serde_json::json;

use super::{
    Email, Membership, Password, PasswordHash, Role, User, attempts, auth::Principal, invitations, mfa,
    model::adjust_admin_count,
};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::AccountError,
    identity::IdentityServices,
    notify::{DomainEvent, EmailKind},
    outbox::{self, Message},
    services::Services,
    store::{Change, StoreError, av, keys},
    time,
};

/// `GSI1PK` of users awaiting erasure; `GSI1SK` is the erasure date, so the cleanup job
/// finds the due ones with one Query.
pub const DELETION_INDEX_KEY: &str = "DELETION";

/// Schedules the caller's account for erasure after the grace period (`DELETION_GRACE_DAYS`,
/// 30 by default) and ends all their sessions.
pub async fn schedule_deletion(
    app: &Services,
    principal: &Principal,
    password: &str,
    meta: &RequestMeta,
) -> Result<String, AccountError> {
    let user = &principal.user;
    // A stolen access token must not make this a password oracle: login's count and lock.
    let attempt = attempts::reserve(app, &user.user_id, &meta.client_key()).await?;
    let stored = PasswordHash::from_stored(&user.password_hash);
    if !stored.verify(Password::presented(password)).await.map_err(AccountError::internal)? {
        attempt.failed(app, Some(user), "account.deletion_scheduled", meta).await;
        return Err(AccountError::InvalidCredentials);
    }
    attempt.succeeded(app).await;
    if holds_money(app, &user.user_id).await? {
        return Err(AccountError::Conflict(
            "money is held in a payment you made or are owed (succeeded, releasing or refunding); release or \
             refund it first"
                .into(),
        ));
    }
    let now = time::now();
    let scheduled_at = time::rfc3339(now + time::Duration::days(app.settings().deletion_grace_days));
    let (pk, sk) = User::key(&user.user_id);
    let audit = AuditEntry::new("account.deletion_scheduled", AuditStatus::Success, &user.org_id, meta)
        .actor(&user.user_id)
        .target(&user.user_id)
        .details(json!({ "deletion_scheduled_at": scheduled_at }));
    let table = app.table();
    let sealer = app.outbox_sealer().await?;
    let items = vec![
        table.update(
            Change::new(&pk, &sk)
                .update(
                    "SET deletion_scheduled_at = :at, GSI1PK = :index, GSI1SK = :at, updated_at = :now, \
                     session_version = if_not_exists(session_version, :zero) + :one",
                )
                .condition("attribute_exists(PK) AND attribute_not_exists(deletion_scheduled_at)")
                .value(":at", av::s(&scheduled_at))
                .value(":index", av::s(DELETION_INDEX_KEY))
                .value(":now", av::s(time::rfc3339(now)))
                .value(":zero", av::n(0))
                .value(":one", av::n(1)),
        ),
        app.audit().put(&audit),
        outbox::put(
            table,
            Message::event(&DomainEvent::new(
                "account.deletion_scheduled",
                json!({ "user_id": user.user_id, "org_id": user.org_id, "deletion_scheduled_at": scheduled_at }),
            )),
        ),
        outbox::put_sealed(
            table,
            &sealer,
            Message::email(
                EmailKind::DeletionScheduled,
                &user.email,
                json!({ "deletion_date": &scheduled_at[..10],
                        "restore_link": format!("{}/restore-account", app.settings().frontend_url) }),
            ),
        ),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    table.transact_or(items, AccountError::Conflict("the account is already scheduled for deletion".into())).await?;
    if let Err(error) = abandon_unpaid(app, &user.user_id).await {
        tracing::warn!(%error, "unpaid payments not marked for cancel; they are canceled once abandoned");
    }
    Ok(scheduled_at)
}

/// Whether `user_id` is the payer or the provider's owner of a payment that holds money
/// (`succeeded`, `releasing` or `refunding`, or `released` with money that came back
/// unsettled): erasing them would leave it with nobody to move it.
async fn holds_money(app: &Services, user_id: &str) -> Result<bool, AccountError> {
    let table = app.table();
    let (holding, unsettled) = tokio::try_join!(
        table.payments_of_party(user_id, &["succeeded", "releasing", "refunding"]),
        table.payments_of_party_where(user_id, &["released"], Some(crate::store::UNSETTLED_FILTER)),
    )?;
    Ok(!holding.is_empty() || !unsettled.is_empty())
}

/// A party to these payments scheduled their account's deletion: those nobody has paid are
/// marked to be canceled at the cleanup's next run (their PaymentIntents canceled at Stripe,
/// as abandoned ones are), so nothing is paid into an account about to go. One paid
/// meanwhile is held, and refunded at the erasure; one not marked (a fault here) is canceled
/// after `PAYMENT_ABANDON_DAYS` anyway.
async fn abandon_unpaid(app: &Services, user_id: &str) -> Result<(), AccountError> {
    let table = app.table();
    for pk in table.payments_of_party(user_id, &["requires_payment", "failed"]).await? {
        let mark = Change::new(&pk, "PAYMENT")
            .update("SET abandon_requested = :yes, GSI2SK = :due")
            .condition("#status IN (:requires_payment, :failed) AND GSI2PK = :queue")
            .name("#status", "status")
            .value(":yes", aws_sdk_dynamodb::types::AttributeValue::Bool(true))
            .value(":due", av::s("2000-01-01T00:00:00Z"))
            .value(":requires_payment", av::s("requires_payment"))
            .value(":failed", av::s("failed"))
            .value(":queue", av::s("AWAITING_PAYMENT"));
        match table.update_item(mark).await {
            Ok(_) | Err(crate::store::StoreError::ConditionFailed) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}

/// The deletion was cancelled: the user's unpaid payments marked to be canceled are kept again
/// (due for the cleanup's usual look now), unless the other party is leaving too.
async fn keep_unpaid(app: &Services, user_id: &str) -> Result<(), AccountError> {
    #[derive(serde::Deserialize)]
    struct Parties {
        payer_user_id: String,
        provider_user_id: String,
        #[serde(default)]
        abandon_requested: bool,
    }
    let table = app.table();
    for pk in table.payments_of_party(user_id, &["requires_payment", "failed"]).await? {
        let Some(parties) = table.get::<Parties>(&pk, "PAYMENT").await? else { continue };
        if !parties.abandon_requested {
            continue;
        }
        let other = if parties.payer_user_id == user_id { &parties.provider_user_id } else { &parties.payer_user_id };
        let (other_pk, other_sk) = User::key(other);
        if table.get::<User>(&other_pk, &other_sk).await?.is_none_or(|u| u.deletion_scheduled_at.is_some()) {
            continue;
        }
        let keep = Change::new(&pk, "PAYMENT")
            .update("SET GSI2SK = :now REMOVE abandon_requested")
            .condition("abandon_requested = :yes AND GSI2PK = :queue")
            .value(":yes", aws_sdk_dynamodb::types::AttributeValue::Bool(true))
            .value(":now", av::s(time::rfc3339(time::now())))
            .value(":queue", av::s("AWAITING_PAYMENT"));
        match table.update_item(keep).await {
            Ok(_) | Err(StoreError::ConditionFailed) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}

/// Cancels a scheduled deletion inside the grace period. Unknown addresses and wrong
/// passwords answer alike, after the same Argon2 work.
pub async fn restore(
    app: &IdentityServices,
    email: &Email,
    password: &str,
    captcha_token: Option<&str>,
    second_factor: Option<mfa::Proof>,
    meta: &RequestMeta,
) -> Result<(), AccountError> {
    // A password check like login's: the same limits, CAPTCHA, count and lock, audited.
    let (user, attempt) = attempts::begin(app, email, captcha_token, meta).await?;
    let table = app.table();
    let stored = user.as_ref().map_or_else(PasswordHash::dummy, |u| PasswordHash::from_stored(&u.password_hash));
    let matches = stored.verify(Password::presented(password)).await.map_err(AccountError::internal)?;
    let user = match user {
        Some(user) if matches => user,
        user => {
            attempt.failed(app, user.as_ref(), "account.restored", meta).await;
            return Err(AccountError::InvalidCredentials);
        }
    };
    attempt.succeeded(app).await;
    let now = time::rfc3339(time::now());
    let Some(scheduled) = user.deletion_scheduled_at.clone().filter(|at| *at > now) else {
        return Err(AccountError::Conflict("the account is not scheduled for deletion".into()));
    };
    // With MFA on, the password alone must not undo what the owner asked for.
    let proven = mfa::prove(app, &user, second_factor, "account.restored", meta).await?;
    let (pk, sk) = User::key(&user.user_id);
    let audit = AuditEntry::new("account.restored", AuditStatus::Success, &user.org_id, meta)
        .actor(&user.user_id)
        .target(&user.user_id);
    let base = &app.settings().frontend_url;
    let notice = Message::email(
        EmailKind::DeletionCancelled,
        &user.email,
        json!({ "login_link": format!("{base}/login"), "reset_link": format!("{base}/forgot-password") }),
    );
    let items = vec![
        table.update(
            Change::new(&pk, &sk)
                .update("SET updated_at = :now REMOVE deletion_scheduled_at, GSI1PK, GSI1SK")
                .condition("deletion_scheduled_at = :scheduled AND deletion_scheduled_at > :now")
                .value(":scheduled", av::s(&scheduled))
                .value(":now", av::s(&now)),
        ),
        app.audit().put(&audit),
        outbox::put_sealed(table, &app.outbox_sealer().await?, notice),
    ]
    .into_iter()
    .chain(proven.as_ref().map(|p| Ok(p.spend())))
    .collect::<Result<Vec<_>, _>>()?;
    let restored = table.transact(items).await;
    if let Some(proven) = proven {
        let committed = restored.is_ok();
        proven.settle(app, &user, committed, "account.restored", meta).await;
    }
    match restored {
        Ok(()) => {
            if let Err(error) = keep_unpaid(app, &user.user_id).await {
                tracing::warn!(%error, "unpaid payments still marked for cancel; the cleanup cancels them");
            }
            Ok(())
        }
        Err(StoreError::TransactionConditionsFailed(_)) => Err(AccountError::Conflict(
            "the account is not scheduled for deletion, or the code was used meanwhile".into(),
        )),
        Err(other) => Err(other.into()),
    }
}

/// Changes a member's role. The admin count moves in the same transaction, conditioned on
/// staying at least one, so concurrent demotions can never empty an organisation of admins.
pub async fn change_role(
    app: &Services,
    principal: &Principal,
    target_user_id: &str,
    role: Role,
    meta: &RequestMeta,
) -> Result<Membership, AccountError> {
    principal.require_admin()?;
    let table = app.table();
    let org_pk = keys::org(principal.org_id());
    let member_sk = keys::member(target_user_id);
    let mut member = table
        .get::<Membership>(&org_pk, &member_sk)
        .await
        .map_err(AccountError::internal)?
        .ok_or(AccountError::NotFound)?;
    let previous = member.role;
    if previous == role {
        return Ok(member);
    }
    let (user_pk, user_sk) = User::key(target_user_id);
    let audit = AuditEntry::new("org.role_changed", AuditStatus::Success, principal.org_id(), meta)
        .actor(principal.user_id())
        .target(target_user_id)
        .details(json!({ "from": previous.as_str(), "to": role.as_str() }));
    let mut items = vec![
        table.update(
            Change::new(&org_pk, &member_sk)
                .update("SET #role = :new")
                .condition("#role = :old")
                .name("#role", "role")
                .value(":new", av::s(role.as_str()))
                .value(":old", av::s(previous.as_str())),
        ),
        table.update(
            Change::new(&user_pk, &user_sk)
                .update("SET #role = :new")
                .condition("org_id = :org")
                .name("#role", "role")
                .value(":new", av::s(role.as_str()))
                .value(":org", av::s(principal.org_id())),
        ),
        app.audit().put(&audit),
    ];
    let demotes_admin = previous == Role::Admin;
    if demotes_admin {
        items.push(adjust_admin_count(table, principal.org_id(), -1));
        // Another admin who counts (verified, not scheduled for deletion) must remain, and
        // still be one when this commits.
        let Some(witness) =
            invitations::active_admins(table, principal.org_id(), target_user_id).await?.into_iter().next()
        else {
            return Err(last_admin(app, principal, target_user_id, previous, role, meta).await);
        };
        items.extend(invitations::still_active_admin(table, principal.org_id(), &witness.user_id)?.map(Ok));
    } else if role == Role::Admin {
        items.push(adjust_admin_count(table, principal.org_id(), 1));
    }
    let items = items.into_iter().collect::<Result<Vec<_>, _>>()?;
    match table.transact(items).await {
        Ok(()) => {}
        Err(StoreError::TransactionConditionsFailed(failed)) => {
            if demotes_admin && failed.iter().any(|&i| i >= 3) {
                return Err(last_admin(app, principal, target_user_id, previous, role, meta).await);
            }
            let message = "the member's role changed concurrently; read it again and retry";
            return Err(refused(app, principal, target_user_id, previous, role, message, meta).await);
        }
        Err(other) => return Err(AccountError::internal(other)),
    }
    member.role = role;
    Ok(member)
}

const LAST_ADMIN: &str = "an organisation must keep at least one active, verified admin";

async fn last_admin(
    app: &Services,
    principal: &Principal,
    target_user_id: &str,
    from: Role,
    to: Role,
    meta: &RequestMeta,
) -> AccountError {
    refused(app, principal, target_user_id, from, to, LAST_ADMIN, meta).await
}

/// Audits a refused role change and answers 409 with `message`.
async fn refused(
    app: &Services,
    principal: &Principal,
    target_user_id: &str,
    from: Role,
    to: Role,
    message: &str,
    meta: &RequestMeta,
) -> AccountError {
    let entry = AuditEntry::new("org.role_changed", AuditStatus::Failure, principal.org_id(), meta)
        .actor(principal.user_id())
        .target(target_user_id)
        .details(json!({ "from": from.as_str(), "to": to.as_str(), "reason": message }));
    app.audit().record_or_log(&entry).await;
    AccountError::Conflict(message.into())
}
