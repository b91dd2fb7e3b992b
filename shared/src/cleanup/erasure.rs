//! Erasing accounts whose grace period has passed.
//!
//! The due accounts are one Query on the deletion index (`GSI1PK = DELETION`, `GSI1SK` the
//! erasure date). Each is claimed with a lease on its profile (a conditional update), so two
//! overlapping runs never erase one account together. Then, all idempotent, so a run that
//! dies midway leaves work the next one finishes: the user's other items go (sessions,
//! devices with their SNS endpoints, preferences, lockout, MFA secrets, live tokens; a
//! provider record stays, for the payments that name it, without the phone), their audit
//! entries lose `ip` and `user_agent`; and last, one transaction removes the profile
//! (under the lease), the email guard and the membership, hands the organisation on (or
//! deletes it when empty), and writes the `account.erased` audit entry, event and email.

use serde::Deserialize;
use serde_json::json;

use super::CleanupServices;
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    deadline::Deadline,
    identity::{Membership, Org, Role, User, account::DELETION_INDEX_KEY},
    notify::{DomainEvent, EmailKind, push::Device},
    outbox::{self, Message},
    payments::payment::Payment,
    services::Services,
    store::{Change, StoreError, Table, av, dynamo_error, keys},
    time,
};

/// How long a run holds an account it is erasing; far longer than one erasure takes.
const LEASE_SECONDS: i64 = 300;

/// Why an erasure stopped; whatever it did stays done, and the next run resumes it.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Stripe: {0}")]
    Stripe(String),
    #[error("push endpoint: {0}")]
    Push(String),
    #[error("out of time while scrubbing the audit log")]
    OutOfTime,
}

/// How one due account came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erased {
    Erased,
    /// Another run holds it, or it is gone or no longer due.
    Skipped,
    /// Its organisation changed under the final write; the next run tries again.
    Contended,
}

#[derive(Debug, Deserialize)]
struct Due {
    #[serde(rename = "PK")]
    pk: String,
}

/// User ids whose erasure date is at or before now, oldest first.
pub async fn due(table: &Table, limit: i32) -> Result<Vec<String>, StoreError> {
    let out = table
        .client()
        .query()
        .table_name(table.name())
        .index_name("GSI1")
        .key_condition_expression("GSI1PK = :deletion AND GSI1SK <= :now")
        .expression_attribute_values(":deletion", av::s(DELETION_INDEX_KEY))
        .expression_attribute_values(":now", av::s(time::rfc3339(time::now())))
        .limit(limit)
        .send()
        .await
        .map_err(dynamo_error)?;
    let mut ids = Vec::new();
    for item in out.items.unwrap_or_default() {
        let due: Due = serde_dynamo::from_item(item)?;
        if let Some(id) = due.pk.strip_prefix("USER#") {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

/// Erases `user_id` if it is due and no other run holds it.
#[tracing::instrument(skip(app, meta, deadline))]
pub async fn erase(
    app: &dyn CleanupServices,
    user_id: &str,
    meta: &RequestMeta,
    deadline: Deadline,
) -> Result<Erased, ErasureError> {
    let table = app.table();
    let Some(user) = User::find(table, user_id).await? else {
        return Ok(Erased::Skipped);
    };
    let now = time::now();
    let Some(scheduled) = user.deletion_scheduled_at.clone().filter(|at| *at <= time::rfc3339(now)) else {
        return Ok(Erased::Skipped);
    };
    let (pk, sk) = User::key(user_id);
    let lease = now.unix_timestamp() + LEASE_SECONDS;
    let claim = Change::new(&pk, &sk)
        .update("SET erasure_lease_until = :lease")
        .condition(
            "deletion_scheduled_at = :scheduled AND (attribute_not_exists(erasure_lease_until) OR erasure_lease_until < :now)",
        )
        .value(":lease", av::n(lease))
        .value(":scheduled", av::s(&scheduled))
        .value(":now", av::n(now.unix_timestamp()));
    match table.transact(vec![table.update(claim)?]).await {
        Ok(()) => {}
        Err(StoreError::TransactionConditionsFailed(_)) => return Ok(Erased::Skipped),
        Err(other) => return Err(other.into()),
    }

    let erased = async {
        refund_held_payments(app, &user, meta).await?;
        forget_at_stripe(app, &user, deadline).await?;
        remove_belongings(app, &user).await?;
        scrub_audit(table, &user, deadline).await?;
        for _ in 0..3 {
            match finish(app, &user, lease, meta).await? {
                Erased::Contended => continue,
                done => return Ok(done),
            }
        }
        Ok(Erased::Contended)
    }
    .await;
    if erased.is_err() {
        // Let the next run (or this one's retry) take it without waiting out the lease.
        let release = Change::new(&pk, &sk)
            .update("REMOVE erasure_lease_until")
            .condition("erasure_lease_until = :lease")
            .value(":lease", av::n(lease));
        if let Err(error) = table.update_item(release).await {
            tracing::warn!(%error, "erasure lease not released; it lapses");
        }
    }
    erased
}

/// Money is never held for an erased person: a payment of theirs still held (paid after the
/// deletion was scheduled; `DELETE /auth/me` refuses while one is) is refunded in full to the
/// payer first. One mid-release or mid-refund, a disputed one, or a refund whose outcome is
/// unknown makes the erasure wait for a later run.
async fn refund_held_payments(app: &dyn CleanupServices, user: &User, meta: &RequestMeta) -> Result<(), ErasureError> {
    let table = app.table();
    let waiting = |why: &str| ErasureError::Stripe(format!("a payment of theirs {why}; the erasure waits"));
    if !table.payments_of_party(&user.user_id, &["releasing", "refunding"]).await?.is_empty() {
        return Err(waiting("is being released or refunded"));
    }
    for pk in table.payments_of_party(&user.user_id, &["succeeded"]).await? {
        let Some(payment) = Payment::find(app, pk.trim_start_matches("PAYMENT#")).await? else { continue };
        if payment.dispute_blocks() {
            return Err(waiting("is disputed"));
        }
        match crate::payments::hold::auto_refund(app, payment, "erasure", meta).await {
            Ok(true) => {}
            Ok(false) => return Err(waiting("is being refunded")),
            Err(error) => return Err(ErasureError::Stripe(format!("held payment not refunded: {error}"))),
        }
    }
    // Money that came back after a release goes back to the payer too.
    let unsettled = crate::store::UNSETTLED_FILTER;
    for pk in table.payments_of_party_where(&user.user_id, &["released"], Some(unsettled)).await? {
        let Some(payment) = Payment::find(app, pk.trim_start_matches("PAYMENT#")).await? else { continue };
        match crate::payments::unsettled::refund_all(app, payment, meta).await {
            Ok(true) => {}
            Ok(false) => return Err(waiting("has money that came back being settled")),
            Err(error) => return Err(ErasureError::Stripe(format!("unsettled money not refunded: {error}"))),
        }
    }
    Ok(())
}

/// The user's Stripe customer (their email there, and the card on file) is deleted, which
/// also ends their subscriptions: nobody is left to cancel them, and billing an erased person
/// must stop. Stripe failing leaves the erasure for the next run.
async fn forget_at_stripe(app: &dyn CleanupServices, user: &User, deadline: Deadline) -> Result<(), ErasureError> {
    let Some(customer) = &user.stripe_customer_id else {
        return Ok(());
    };
    let stripe = app.stripe(deadline).await.map_err(|e| ErasureError::Stripe(e.to_string()))?;
    stripe
        .delete_customer(customer)
        .await
        .map_err(|e| ErasureError::Stripe(format!("customer {customer} not deleted: {e}")))
}

/// Everything of the user but the profile: their partition's items (SNS endpoints of
/// devices first) and the tokens the profile points at.
async fn remove_belongings(app: &dyn CleanupServices, user: &User) -> Result<(), ErasureError> {
    let table = app.table();
    let pk = keys::user(&user.user_id);
    for device in Device::list(table, &user.user_id).await? {
        device.forget(app).await.map_err(|e| ErasureError::Push(e.to_string()))?;
    }
    let mut start = None;
    loop {
        let out = table
            .client()
            .query()
            .table_name(table.name())
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", av::s(&pk))
            .projection_expression("PK, SK, current_hash, provider_id")
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(dynamo_error)?;
        let mut deletes = Vec::new();
        for item in out.items.unwrap_or_default() {
            let Some(sk) = item.get("SK").and_then(|v| v.as_s().ok()).cloned() else { continue };
            if sk == keys::PROFILE {
                continue;
            }
            // A provider keeps its record (payments name it) but not the person's phone.
            if let Some(provider_id) = item.get("provider_id").and_then(|v| v.as_s().ok()) {
                table
                    .update_item(
                        Change::new(&format!("PROVIDER#{provider_id}"), "PROVIDER")
                            .update("REMOVE phone")
                            .condition("attribute_exists(PK)"),
                    )
                    .await
                    .or_else(|e| match e {
                        StoreError::ConditionFailed => Ok(Default::default()),
                        other => Err(other),
                    })?;
            }
            // A session's live refresh token.
            if let Some(hash) = item.get("current_hash").and_then(|v| v.as_s().ok()) {
                deletes.push((format!("REFRESH#{hash}"), "REFRESH".to_owned()));
            }
            deletes.push((pk.clone(), sk));
        }
        for hash in [&user.verify_token_hash, &user.reset_token_hash].into_iter().flatten() {
            deletes.push((keys::token(hash), keys::TOKEN.to_owned()));
        }
        for chunk in deletes.chunks(25) {
            let items =
                chunk.iter().map(|(pk, sk)| table.delete(Change::new(pk, sk))).collect::<Result<Vec<_>, _>>()?;
            table.transact(items).await?;
        }
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(()),
        }
    }
}

/// The user's audit entries (as actor or target) lose the client address and user agent.
/// Entries hold ids, never emails, so nothing else needs rewriting.
async fn scrub_audit(table: &Table, user: &User, deadline: Deadline) -> Result<(), ErasureError> {
    let key = format!("{}#{}", user.org_id, user.user_id);
    for (index, attribute) in [("AuditByActor", "audit_actor"), ("AuditByTarget", "audit_target")] {
        let mut start = None;
        loop {
            if deadline.remaining().is_some_and(|left| left < std::time::Duration::from_secs(5)) {
                return Err(ErasureError::OutOfTime);
            }
            let out = table
                .client()
                .query()
                .table_name(table.name())
                .index_name(index)
                .key_condition_expression("#attribute = :key")
                .expression_attribute_names("#attribute", attribute)
                .expression_attribute_values(":key", av::s(&key))
                .projection_expression("PK, SK, ip, user_agent")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(dynamo_error)?;
            for item in out.items.unwrap_or_default() {
                if !item.contains_key("ip") && !item.contains_key("user_agent") {
                    continue;
                }
                let (Some(pk), Some(sk)) =
                    (item.get("PK").and_then(|v| v.as_s().ok()), item.get("SK").and_then(|v| v.as_s().ok()))
                else {
                    continue;
                };
                table
                    .update_item(Change::new(pk, sk).update("REMOVE ip, user_agent").condition("attribute_exists(PK)"))
                    .await?;
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
    }
    Ok(())
}

/// The final, all-or-nothing write.
async fn finish(app: &Services, user: &User, lease: i64, meta: &RequestMeta) -> Result<Erased, StoreError> {
    let table = app.table();
    let (pk, sk) = User::key(&user.user_id);
    let org_pk = keys::org(&user.org_id);
    let org: Option<Org> = table.get(&org_pk, keys::ORG).await?;
    let others: Vec<Membership> = crate::identity::invitations::members(table, &user.org_id)
        .await?
        .into_iter()
        .filter(|m| m.user_id != user.user_id)
        .collect();

    let mut items = vec![
        table.delete(Change::new(&pk, &sk).condition("erasure_lease_until = :lease").value(":lease", av::n(lease)))?,
        table.delete(
            Change::new(&keys::email(&user.email), keys::EMAIL)
                .condition("attribute_not_exists(PK) OR user_id = :id")
                .value(":id", av::s(&user.user_id)),
        )?,
        table.delete(Change::new(&org_pk, &keys::member(&user.user_id)))?,
    ];
    let mut promoted = None;
    match (&org, others.is_empty()) {
        (Some(org), true) => items.push(table.delete(
            Change::new(&org_pk, keys::ORG).condition("admin_count = :seen").value(":seen", av::n(org.admin_count)),
        )?),
        (Some(org), false) if user.role == Role::Admin && org.admin_count <= 1 => {
            // The last admin leaves: the longest-standing member who can act as one takes over.
            let heir = heir(table, &others).await?;
            items.push(
                table.update(
                    Change::new(&org_pk, &keys::member(&heir.user_id))
                        .update("SET #role = :admin")
                        .condition("attribute_exists(PK)")
                        .name("#role", "role")
                        .value(":admin", av::s(Role::Admin.as_str())),
                )?,
            );
            let (heir_pk, heir_sk) = User::key(&heir.user_id);
            items.push(
                table.update(
                    Change::new(&heir_pk, &heir_sk)
                        .update("SET #role = :admin")
                        .condition("attribute_exists(PK)")
                        .name("#role", "role")
                        .value(":admin", av::s(Role::Admin.as_str())),
                )?,
            );
            items.push(
                table.update(
                    Change::new(&org_pk, keys::ORG)
                        .update("SET admin_count = :seen")
                        .condition("admin_count = :seen")
                        .value(":seen", av::n(org.admin_count)),
                )?,
            );
            promoted = Some(heir.user_id.clone());
        }
        (Some(_), false) if user.role == Role::Admin => {
            items.push(crate::identity::adjust_admin_count(table, &user.org_id, -1)?);
        }
        _ => {}
    }
    let mut details = json!({ "deletion_scheduled_at": user.deletion_scheduled_at });
    if let Some(heir) = &promoted {
        details["promoted_admin"] = json!(heir);
    }
    let entry = AuditEntry::new("account.erased", AuditStatus::Success, &user.org_id, meta)
        .target(&user.user_id)
        .details(details);
    items.push(app.audit().put(&entry)?);
    items.push(outbox::put(
        table,
        Message::event(&DomainEvent::new(
            "account.erased",
            json!({ "user_id": user.user_id, "org_id": user.org_id, "org_deleted": others.is_empty() }),
        )),
    )?);
    let farewell = Message::email(EmailKind::AccountErased, &user.email, json!({}));
    items.push(outbox::put_sealed(table, &app.outbox_sealer().await?, farewell)?);
    match table.transact(items).await {
        Ok(()) => {
            tracing::info!(user_id = %user.user_id, promoted = ?promoted, "account erased");
            Ok(Erased::Erased)
        }
        // The profile's condition is first: losing it means the lease is no longer ours.
        Err(StoreError::TransactionConditionsFailed(failed)) if failed.contains(&0) => Ok(Erased::Skipped),
        Err(StoreError::TransactionConditionsFailed(_)) => Ok(Erased::Contended),
        Err(other) => Err(other),
    }
}

/// Who inherits an org's last admin role: the longest-standing member who is verified and
/// not scheduled for deletion, or, if none is, the longest-standing member.
async fn heir<'a>(table: &Table, others: &'a [Membership]) -> Result<&'a Membership, StoreError> {
    let mut by_seniority: Vec<&Membership> = others.iter().collect();
    by_seniority.sort_by(|a, b| a.joined_at.cmp(&b.joined_at));
    for member in &by_seniority {
        let (pk, sk) = User::key(&member.user_id);
        if table.get::<User>(&pk, &sk).await?.as_ref().is_some_and(crate::identity::invitations::is_active) {
            return Ok(member);
        }
    }
    Ok(by_seniority[0])
}
