//! Recovery after a transfer: money that leaves the platform once the provider has been paid
//! (a refund made in Stripe's dashboard, a dispute) is taken back from the provider, once per
//! cause.
//!
//! A cause is a refund or a dispute, by its Stripe id. Its reversal has the key
//! `reversal:{payment_id}:{cause_id}` and the metadata `cause`, and the transfer's reversals are
//! listed before one is made: the webhook (any of a refund's several events, in any order,
//! redelivered), the cleanup's daily retry and any overlap between them compute the same key
//! and find what an earlier one made. The amount is the provider's share of the cause,
//! `min(R − floor(R × platform_fee_bps / 10 000), transfer_amount − amount_reversed)`: the
//! platform gives up its fee on that part. A dispute won after its reversal pays the provider
//! again with a transfer of what was reversed for it (key `release:{payment_id}:dispute:{id}`).
//!
//! A reversal Stripe refuses (the provider has paid the money out) is audited, alarmed and put
//! on the `UNRECOVERED` queue, which the cleanup retries daily for `REVERSAL_RETRY_DAYS`: a day,
//! because Stripe replays a refusal saved with its key for 24 hours, and the same key must be
//! used again (the reversals listed first keep a forgotten key from reversing twice). A
//! re-payment Stripe refuses (the platform's balance is short) is queued the same way, under
//! `RECOVERY#{payment_id}#{dispute_id}#repay`, and retried daily with its key.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Currency,
    gateway::{GatewayError, NewTransfer, RefundRecord, Stripe},
    payment::{Payment, SK},
    provider::Provider,
};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    notify::DomainEvent,
    outbox::{self, Message},
    payments::PaymentError,
    payments::PaymentServices,
    services::Services,
    store::{Change, StoreError, av},
    time,
};

/// Refused reversals waiting for their daily retry (`GSI2SK`: the last attempt).
pub const UNRECOVERED_QUEUE: &str = "UNRECOVERED";
const QUEUE_SK: &str = "RECOVERY";
/// The metric (a count, per function) of losses after a transfer left unrecovered.
pub const UNRECOVERED_METRIC: &str = "TransfersUnrecovered";

/// What took money back after the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    Refund,
    Dispute,
}

/// One cause of a loss after the transfer: a refund or a dispute of `amount` (minor units).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub id: String,
    pub kind: CauseKind,
    pub amount: i64,
}

/// How recovering one cause ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// Reversed now, for this amount.
    Reversed(i64),
    /// Reversed (or settled as nothing to take) before.
    Before,
    /// Nothing is left of the transfer to take back.
    NothingLeft,
    /// Stripe refused: audited, alarmed, queued for the daily retry.
    Refused,
    /// `REVERSE_TRANSFERS=false`: audited and alarmed only.
    Off,
}

/// The reversal's idempotency key: of the cause, never of an event.
pub fn reversal_key(payment_id: &str, cause_id: &str) -> String {
    format!("reversal:{payment_id}:{cause_id}")
}

/// The transfer that pays the provider again for a dispute won after its reversal.
pub fn repayment_key(payment_id: &str, dispute_id: &str) -> String {
    format!("release:{payment_id}:dispute:{dispute_id}")
}

/// The provider's share of a loss of `amount`: all of it but the platform's percentage fee
/// on it, which the platform gives up (its fixed fee stays earned).
pub fn provider_share_of(payment: &Payment, amount: i64) -> i64 {
    amount - amount * payment.platform_fee_bps / 10_000
}

/// Refunds that left after the transfer, by Stripe's list: ones that went through
/// (`succeeded`; a pending one may yet fail, and the provider would be owed it back) and that
/// the release neither counted nor made. A refund of ours after the release is of
/// `amount_unsettled`, money the platform holds: it carries our `refund_key`, which the
/// dashboard's never do, so it is known as ours before it is recorded too. Payments released
/// before the release kept its refunds have none.
pub fn refund_causes(payment: &Payment, refunds: &[RefundRecord]) -> Vec<Cause> {
    let Some(settled) = &payment.settled_refund_ids else { return Vec::new() };
    refunds
        .iter()
        .filter(|r| r.status == "succeeded" && r.refund_key.is_none())
        .filter(|r| !settled.contains(&r.id) && !payment.refund_ids.contains(&r.id))
        .map(|r| Cause { id: r.id.clone(), kind: CauseKind::Refund, amount: r.amount })
        .collect()
}

/// A refused reversal waiting for its retry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unrecovered {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub payment_id: String,
    pub cause_id: String,
    pub kind: CauseKind,
    pub amount: i64,
    /// When Stripe first refused (epoch seconds): retries stop `REVERSAL_RETRY_DAYS` later.
    pub first_refused_at: i64,
    #[serde(default)]
    pub attempts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(rename = "GSI2PK", default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// A won dispute's re-payment to the provider, not a reversal from them.
    #[serde(default)]
    pub repay: bool,
}

impl Unrecovered {
    pub fn key(payment_id: &str, cause_id: &str) -> String {
        format!("RECOVERY#{payment_id}#{cause_id}")
    }

    /// The re-payment of a won dispute waiting for its retry.
    pub fn repay_key(payment_id: &str, dispute_id: &str) -> String {
        format!("RECOVERY#{payment_id}#{dispute_id}#repay")
    }
}

/// Every refund that left after `payment`'s transfer, recovered. `Err` when Stripe's answer
/// is unknown: the caller fails so that it runs again (Stripe redelivers, the cleanup retries).
pub async fn recover_refunds(
    app: &Services,
    stripe: &Stripe,
    payment: &Payment,
    meta: &RequestMeta,
) -> Result<Vec<Recovered>, PaymentError> {
    if payment.settled_refund_ids.is_none() {
        return Ok(Vec::new()); // released before the release kept its refunds: nothing to tell apart
    }
    let refunds = stripe.refunds_for(&payment.stripe_payment_intent_id).await?;
    let mut outcomes = Vec::new();
    for cause in refund_causes(payment, &refunds) {
        outcomes.push(recover(app, stripe, payment, &cause, false, meta).await?);
    }
    Ok(outcomes)
}

/// Recovers one cause from the provider of a released payment. `retry`: the cleanup's daily
/// attempt (otherwise a cause already queued waits for it).
pub async fn recover(
    app: &Services,
    stripe: &Stripe,
    payment: &Payment,
    cause: &Cause,
    retry: bool,
    meta: &RequestMeta,
) -> Result<Recovered, PaymentError> {
    if payment.reversal_causes.contains(&cause.id) {
        return Ok(Recovered::Before);
    }
    // A dispute won before its withdrawal was handled (a redelivery after the reinstatement)
    // costs the provider nothing.
    let won = cause.kind == CauseKind::Dispute
        && payment.dispute_id.as_deref() == Some(cause.id.as_str())
        && payment.dispute.as_deref() == Some("won");
    if won {
        return Ok(Recovered::Before);
    }
    let Some(transfer_id) = payment.transfer_id.as_deref() else {
        return Err(PaymentError::internal("recovery for a payment without a transfer"));
    };
    let sent = payment.transfer_amount.or(payment.release_amount).unwrap_or(0);
    let queued = app.table().get::<Unrecovered>(&Unrecovered::key(&payment.payment_id, &cause.id), QUEUE_SK).await?;
    if !app.settings().recovery.reverse_transfers {
        // Told once per cause, however many of its events arrive.
        if queued.is_none() {
            let amount = provider_share_of(payment, cause.amount).min(sent);
            unrecovered(app, payment, cause, amount, "recovery_off", meta).await?;
        }
        return Ok(Recovered::Off);
    }
    if !retry && queued.as_ref().is_some_and(|q| q.queue.is_some()) {
        return Ok(Recovered::Refused);
    }
    let reversals = stripe.reversals_of(transfer_id).await?;
    let reversed: i64 = reversals.iter().map(|r| r.amount).sum();
    if let Some(found) = reversals.iter().find(|r| r.cause.as_deref() == Some(cause.id.as_str())) {
        record(app, payment, cause, found.amount, reversed, meta).await?;
        return Ok(Recovered::Before);
    }
    let amount = provider_share_of(payment, cause.amount).min(sent - reversed);
    if amount <= 0 {
        record(app, payment, cause, 0, reversed, meta).await?;
        return Ok(Recovered::NothingLeft);
    }
    let key = reversal_key(&payment.payment_id, &cause.id);
    match stripe.reverse_transfer(&key, transfer_id, amount, &payment.payment_id, &cause.id).await {
        Ok(reversal) => {
            record(app, payment, cause, reversal.amount, reversed + reversal.amount, meta).await?;
            Ok(Recovered::Reversed(reversal.amount))
        }
        // The key was first used for another amount (another cause was reversed between two
        // attempts): unknown, not refused; the key expires and a later attempt decides.
        Err(GatewayError::Refused { message, .. }) if message.contains("idempotent requests") => {
            Err(PaymentError::PaymentsUnavailable)
        }
        Err(error @ GatewayError::Refused { .. }) => {
            tracing::error!(%error, payment_id = %payment.payment_id, cause = %cause.id, "Stripe refused a reversal");
            unrecovered(app, payment, cause, amount, &error.reason(), meta).await?;
            Ok(Recovered::Refused)
        }
        Err(error) => Err(error.into()),
    }
}

/// Records a cause recovered (`amount` of it, `total` reversed of the transfer by Stripe's
/// list), once: the audit entry and event join the cause in one conditional write.
async fn record(
    app: &Services,
    payment: &Payment,
    cause: &Cause,
    amount: i64,
    total: i64,
    meta: &RequestMeta,
) -> Result<(), PaymentError> {
    let table = app.table();
    let pk = Payment::key(&payment.payment_id);
    let mark = cause_added(&pk, REVERSED, &cause.id);
    let details = json!({ "payment_id": payment.payment_id, "transfer_id": payment.transfer_id, "cause": cause.id,
                          "cause_kind": cause.kind, "cause_amount": cause.amount, "amount": amount,
                          "amount_reversed": total, "currency": payment.currency });
    let entry = AuditEntry::new("payment.transfer_reversed", AuditStatus::Success, &payment.payer_org_id, meta)
        .target(&payment.provider_user_id)
        .details(details.clone());
    let event = DomainEvent::new("payment.transfer_reversed", details);
    let items = vec![table.update(mark)?, app.audit().put(&entry)?, outbox::put(table, Message::event(&event))?];
    match table.transact(items).await {
        Ok(()) | Err(StoreError::TransactionConditionsFailed(_)) => {}
        Err(other) => return Err(other.into()),
    }
    // The total only grows (a `transfer.reversed` event may have written it first).
    let grow = Change::new(&pk, SK)
        .update("SET transfer_reversed_amount = :total")
        .condition("attribute_exists(PK) AND (attribute_not_exists(transfer_reversed_amount) OR transfer_reversed_amount < :total)")
        .value(":total", av::n(total));
    ignore_condition(table.update_item(grow).await)?;
    resolve(app, &payment.payment_id, &cause.id).await
}

/// Takes a cause off the retry queue (it was recovered, or no longer needs to be).
async fn resolve(app: &Services, payment_id: &str, cause_id: &str) -> Result<(), PaymentError> {
    resolve_item(app, &Unrecovered::key(payment_id, cause_id)).await
}

async fn resolve_item(app: &Services, pk: &str) -> Result<(), PaymentError> {
    let done = Change::new(pk, QUEUE_SK)
        .update("SET resolved_at = :now REMOVE GSI2PK, GSI2SK")
        .condition("attribute_exists(GSI2PK)")
        .value(":now", av::s(time::rfc3339(time::now())));
    ignore_condition(app.table().update_item(done).await)
}

/// Marks a cause as needing no reversal (a dispute won before its funds' withdrawal was
/// handled), without an audit entry: nothing was taken from anyone.
async fn settle_without_reversal(app: &Services, payment_id: &str, cause_id: &str) -> Result<(), PaymentError> {
    let pk = Payment::key(payment_id);
    ignore_condition(app.table().update_item(cause_added(&pk, REVERSED, cause_id)).await)
}

/// The payment's list of causes reversed, and of disputes paid back: (update, condition).
const REVERSED: (&str, &str) = (
    "SET updated_at = :now, reversal_causes = list_append(if_not_exists(reversal_causes, :none), :cause)",
    "attribute_exists(PK) AND NOT contains(reversal_causes, :id)",
);
const REPAID: (&str, &str) = (
    "SET updated_at = :now, repaid_causes = list_append(if_not_exists(repaid_causes, :none), :cause)",
    "attribute_exists(PK) AND NOT contains(repaid_causes, :id)",
);

/// `cause` added to one of those lists, once: the write fails if it is there already.
fn cause_added<'a>(pk: &'a str, (update, condition): (&'a str, &'a str), cause: &'a str) -> Change<'a> {
    Change::new(pk, SK)
        .update(update)
        .condition(condition)
        .value(":now", av::s(time::rfc3339(time::now())))
        .value(":none", aws_sdk_dynamodb::types::AttributeValue::L(vec![]))
        .value(":cause", aws_sdk_dynamodb::types::AttributeValue::L(vec![av::s(cause)]))
        .value(":id", av::s(cause))
}

fn ignore_condition<T>(result: Result<T, StoreError>) -> Result<(), PaymentError> {
    match result {
        Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
        Err(other) => Err(other.into()),
    }
}

/// A cause not recovered: audited (`payment.transfer_reversed`, failure), alarmed
/// (`TransfersUnrecovered`), and, unless recovery is off, queued for the daily retry.
///
/// A failure to queue it fails the caller, so that it runs again (Stripe redelivers the
/// event): a cause is never left neither recovered nor queued.
async fn unrecovered(
    app: &Services,
    payment: &Payment,
    cause: &Cause,
    amount: i64,
    reason: &str,
    meta: &RequestMeta,
) -> Result<(), PaymentError> {
    let entry = AuditEntry::new("payment.transfer_reversed", AuditStatus::Failure, &payment.payer_org_id, meta)
        .target(&payment.provider_user_id)
        .details(json!({ "payment_id": payment.payment_id, "transfer_id": payment.transfer_id, "cause": cause.id,
                         "cause_kind": cause.kind, "cause_amount": cause.amount, "amount": amount,
                         "currency": payment.currency, "reason": reason }));
    app.audit().record_or_log(&entry).await;
    if let Some(metrics) = crate::metrics::Metrics::get() {
        metrics.emit(&[(UNRECOVERED_METRIC, 1)], serde_json::Map::new());
    }
    tracing::error!(payment_id = %payment.payment_id, cause = %cause.id, reason, "a loss after the transfer is not recovered");
    // Recovery off: the item only marks the cause as told (off the queue, never retried).
    let queued = app.settings().recovery.reverse_transfers;
    let pk = Unrecovered::key(&payment.payment_id, &cause.id);
    let now = time::now();
    let update = format!(
        "SET payment_id = :payment, cause_id = :cause, kind = :kind, amount = :amount, reason = :reason, \
             {queue}first_refused_at = if_not_exists(first_refused_at, :epoch), \
             attempts = if_not_exists(attempts, :zero) + :one",
        queue = if queued { "GSI2PK = :queue, GSI2SK = :at, " } else { "" }
    );
    let mut change = Change::new(&pk, QUEUE_SK)
        .update(&update)
        .value(":payment", av::s(&payment.payment_id))
        .value(":cause", av::s(&cause.id))
        .value(
            ":kind",
            av::s(match cause.kind {
                CauseKind::Refund => "refund",
                CauseKind::Dispute => "dispute",
            }),
        )
        .value(":amount", av::n(cause.amount))
        .value(":reason", av::s(reason))
        .value(":epoch", av::n(now.unix_timestamp()))
        .value(":zero", av::n(0))
        .value(":one", av::n(1));
    if queued {
        change = change.value(":queue", av::s(UNRECOVERED_QUEUE)).value(":at", av::s(time::rfc3339(now)));
    }
    app.table().update_item(change).await?;
    Ok(())
}

/// How paying a won dispute back to the provider ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repaid {
    /// Paid again now (or found paid at Stripe), with this transfer.
    Paid(String),
    /// Recorded before.
    Before,
    /// Nothing was reversed for it: nothing to pay back.
    NothingOwed,
    /// Stripe refused: audited, alarmed, queued for the daily retry.
    Refused,
}

/// A dispute won after its reversal: the provider is paid what was reversed for it, by one
/// new transfer. `Err` when Stripe's answer is unknown (the caller runs again). `retry`: the
/// cleanup's daily attempt (otherwise a refused re-payment already queued waits for it).
pub async fn repay_dispute(
    app: &Services,
    stripe: &Stripe,
    payment: &Payment,
    dispute_id: &str,
    retry: bool,
    meta: &RequestMeta,
) -> Result<Repaid, PaymentError> {
    let queued = Unrecovered::repay_key(&payment.payment_id, dispute_id);
    if payment.repaid_causes.iter().any(|c| c == dispute_id) {
        resolve_item(app, &queued).await?;
        return Ok(Repaid::Before);
    }
    if !retry && app.table().get::<Unrecovered>(&queued, QUEUE_SK).await?.is_some_and(|q| q.queue.is_some()) {
        return Ok(Repaid::Refused);
    }
    // A reversal still queued is no longer owed.
    resolve(app, &payment.payment_id, dispute_id).await?;
    let Some(transfer_id) = payment.transfer_id.as_deref() else { return Ok(Repaid::NothingOwed) };
    let reversals = stripe.reversals_of(transfer_id).await?;
    let owed: i64 = reversals.iter().filter(|r| r.cause.as_deref() == Some(dispute_id)).map(|r| r.amount).sum();
    if owed <= 0 {
        // Won before anything was reversed: a withdrawal delivered later must not reverse it.
        settle_without_reversal(app, &payment.payment_id, dispute_id).await?;
        return Ok(Repaid::NothingOwed);
    }
    let transfers = stripe.transfers_for(&payment.payment_id).await?;
    let transfer = match transfers.iter().find(|t| t.cause.as_deref() == Some(dispute_id)) {
        Some(found) => found.id.clone(),
        None => {
            let provider = Provider::find(app, &payment.provider_id)
                .await?
                .ok_or_else(|| PaymentError::internal("provider missing"))?;
            let destination = provider.stripe_account_id.ok_or(PaymentError::OnboardingRequired)?;
            let currency = Currency::parse(&payment.currency).map_err(PaymentError::internal)?;
            let request = NewTransfer {
                payment_id: &payment.payment_id,
                amount: owed,
                currency: &currency,
                destination: &destination,
                // From the platform's balance: the reinstated funds are there, and the charge's
                // own funds were spent on the first transfer.
                source_transaction: None,
                cause: Some(dispute_id),
            };
            match stripe.create_transfer(&repayment_key(&payment.payment_id, dispute_id), &request).await {
                Ok(id) => id,
                Err(error @ GatewayError::Refused { .. }) => {
                    unrepaid(app, payment, dispute_id, owed, &error.reason(), meta).await?;
                    return Ok(Repaid::Refused);
                }
                Err(error) => return Err(error.into()),
            }
        }
    };
    let table = app.table();
    let pk = Payment::key(&payment.payment_id);
    let mark = cause_added(&pk, REPAID, dispute_id);
    let details = json!({ "payment_id": payment.payment_id, "transfer_id": transfer, "dispute_id": dispute_id,
                          "amount": owed, "currency": payment.currency });
    let entry = AuditEntry::new("payment.repaid", AuditStatus::Success, &payment.payer_org_id, meta)
        .target(&payment.provider_user_id)
        .details(details.clone());
    let event = DomainEvent::new("payment.repaid", details);
    let items = vec![table.update(mark)?, app.audit().put(&entry)?, outbox::put(table, Message::event(&event))?];
    let repaid = match table.transact(items).await {
        Ok(()) => Repaid::Paid(transfer),
        Err(StoreError::TransactionConditionsFailed(_)) => Repaid::Before,
        Err(other) => return Err(other.into()),
    };
    resolve_item(app, &queued).await?;
    Ok(repaid)
}

/// A re-payment Stripe refused: audited (`payment.repaid`, failure), alarmed
/// (`TransfersUnrecovered`: money not where it belongs) and queued for the daily retry. A
/// failure to queue it fails the caller, which runs again (Stripe redelivers the event).
async fn unrepaid(
    app: &Services,
    payment: &Payment,
    dispute_id: &str,
    owed: i64,
    reason: &str,
    meta: &RequestMeta,
) -> Result<(), PaymentError> {
    let entry = AuditEntry::new("payment.repaid", AuditStatus::Failure, &payment.payer_org_id, meta)
        .target(&payment.provider_user_id)
        .details(json!({ "payment_id": payment.payment_id, "dispute_id": dispute_id, "amount": owed,
                         "currency": payment.currency, "reason": reason }));
    app.audit().record_or_log(&entry).await;
    if let Some(metrics) = crate::metrics::Metrics::get() {
        metrics.emit(&[(UNRECOVERED_METRIC, 1)], serde_json::Map::new());
    }
    tracing::error!(payment_id = %payment.payment_id, dispute_id, reason, "a won dispute is not paid back to the provider");
    let now = time::now();
    let pk = Unrecovered::repay_key(&payment.payment_id, dispute_id);
    let change = Change::new(&pk, QUEUE_SK)
        .update(
            "SET payment_id = :payment, cause_id = :cause, kind = :kind, amount = :amount, reason = :reason, \
             repay = :repay, GSI2PK = :queue, GSI2SK = :at, \
             first_refused_at = if_not_exists(first_refused_at, :epoch), attempts = if_not_exists(attempts, :zero) + :one",
        )
        .value(":payment", av::s(&payment.payment_id))
        .value(":cause", av::s(dispute_id))
        .value(":kind", av::s("dispute"))
        .value(":amount", av::n(owed))
        .value(":reason", av::s(reason))
        .value(":repay", aws_sdk_dynamodb::types::AttributeValue::Bool(true))
        .value(":queue", av::s(UNRECOVERED_QUEUE))
        .value(":at", av::s(time::rfc3339(now)))
        .value(":epoch", av::n(now.unix_timestamp()))
        .value(":zero", av::n(0))
        .value(":one", av::n(1));
    app.table().update_item(change).await?;
    Ok(())
}

/// What the cleanup's retry of refused reversals did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Retried {
    pub recovered: u32,
    pub still_refused: u32,
    pub abandoned: u32,
    pub failed: u32,
}

/// The daily retry: each refused reversal last tried over a day ago is tried again, and given
/// up on (audited `payment.recovery_abandoned`) `REVERSAL_RETRY_DAYS` after its first refusal.
pub async fn retry_due(app: &PaymentServices, meta: &RequestMeta, out_of_time: impl Fn() -> bool) -> Retried {
    let mut retried = Retried::default();
    let cutoff = time::rfc3339(time::now() - time::Duration::days(1));
    let due = match app.table().queue_due(UNRECOVERED_QUEUE, &cutoff, 25).await {
        Ok(due) => due,
        Err(error) => {
            tracing::error!(%error, "cannot list refused reversals");
            retried.failed += 1;
            return retried;
        }
    };
    for pk in due {
        if out_of_time() {
            break;
        }
        match retry_one(app, &pk, &cutoff, meta).await {
            Ok(Some(Recovered::Refused)) => retried.still_refused += 1,
            Ok(Some(Recovered::Off)) => retried.abandoned += 1,
            Ok(Some(_)) => retried.recovered += 1,
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, %pk, "a refused reversal could not be retried; the next run tries again");
                retried.failed += 1;
            }
        }
    }
    retried
}

/// One retry, leased (its `GSI2SK` moved to now, so overlapping runs take it once). `None`:
/// another run holds it. `Some(Off)`: given up on.
async fn retry_one(
    app: &PaymentServices,
    pk: &str,
    cutoff: &str,
    meta: &RequestMeta,
) -> Result<Option<Recovered>, PaymentError> {
    let now = time::rfc3339(time::now());
    let Some(item) = app.table().lease_queued::<Unrecovered>(pk, QUEUE_SK, UNRECOVERED_QUEUE, cutoff, &now).await?
    else {
        return Ok(None);
    };
    let Some(payment) = Payment::find(app, &item.payment_id).await? else {
        resolve_item(app, pk).await?;
        return Ok(Some(Recovered::NothingLeft));
    };
    // A dispute won meanwhile no longer needs its reversal.
    let won = !item.repay
        && item.kind == CauseKind::Dispute
        && payment.dispute_id.as_deref() == Some(item.cause_id.as_str())
        && payment.dispute.as_deref() == Some("won");
    if won {
        resolve_item(app, pk).await?;
        return Ok(Some(Recovered::NothingLeft));
    }
    let given_up = time::now().unix_timestamp() - item.first_refused_at > app.settings().recovery.retry_days * 86_400;
    if given_up {
        let entry = AuditEntry::new("payment.recovery_abandoned", AuditStatus::Failure, &payment.payer_org_id, meta)
            .target(&payment.provider_user_id)
            .details(json!({ "payment_id": payment.payment_id, "cause": item.cause_id, "cause_kind": item.kind,
                             "cause_amount": item.amount, "attempts": item.attempts, "currency": payment.currency,
                             "repay": item.repay }));
        app.audit().record_or_log(&entry).await;
        resolve_item(app, pk).await?;
        return Ok(Some(Recovered::Off));
    }
    let stripe = app.stripe(meta.deadline).await?;
    if item.repay {
        return Ok(Some(match repay_dispute(app, &stripe, &payment, &item.cause_id, true, meta).await? {
            Repaid::Refused => Recovered::Refused,
            Repaid::Paid(_) | Repaid::Before | Repaid::NothingOwed => Recovered::Before,
        }));
    }
    // A refund that failed since its reversal was refused cost the provider nothing.
    if item.kind == CauseKind::Refund {
        let refunds = stripe.refunds_for(&payment.stripe_payment_intent_id).await?;
        if refunds.iter().any(|r| r.id == item.cause_id && !r.counts()) {
            resolve_item(app, pk).await?;
            return Ok(Some(Recovered::NothingLeft));
        }
    }
    let cause = Cause { id: item.cause_id.clone(), kind: item.kind, amount: item.amount };
    Ok(Some(recover(app, &stripe, &payment, &cause, true, meta).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_returns_its_share_and_the_platform_gives_up_its_percentage() {
        let payment: Payment = serde_json::from_value(json!({
            "PK": "PAYMENT#p", "SK": "PAYMENT", "payment_id": "p", "status": "released", "amount": 10_000,
            "currency": "usd", "provider_id": "v", "provider_user_id": "u", "payer_user_id": "w",
            "payer_org_id": "o", "stripe_payment_intent_id": "pi", "created_at": "", "updated_at": "",
            "GSI1PK": "PI#pi", "GSI1SK": "PAYMENT", "platform_fee_bps": 1_000, "platform_fee_fixed": 30
        }))
        .unwrap();
        assert_eq!(provider_share_of(&payment, 2_500), 2_250);
        assert_eq!(provider_share_of(&payment, 7), 7, "floor(0.7) of fee");
        assert_eq!(reversal_key("p", "re_1"), "reversal:p:re_1");
        assert_eq!(repayment_key("p", "dp_1"), "release:p:dispute:dp_1");
    }

    #[test]
    fn causes_are_refunds_the_release_neither_counted_nor_made() {
        let mut payment: Payment = serde_json::from_value(json!({
            "PK": "PAYMENT#p", "SK": "PAYMENT", "payment_id": "p", "status": "released", "amount": 10_000,
            "currency": "usd", "provider_id": "v", "provider_user_id": "u", "payer_user_id": "w",
            "payer_org_id": "o", "stripe_payment_intent_id": "pi", "created_at": "", "updated_at": "",
            "GSI1PK": "PI#pi", "GSI1SK": "PAYMENT", "refund_ids": ["re_ours"], "settled_refund_ids": ["re_before"]
        }))
        .unwrap();
        let refund = |id: &str, status: &str| RefundRecord {
            id: id.into(),
            amount: 100,
            status: status.into(),
            refund_key: None,
            payment_id: None,
            created: 0,
        };
        let refunds = [
            refund("re_before", "succeeded"),
            refund("re_ours", "succeeded"),
            refund("re_failed", "failed"),
            refund("re_pending", "pending"),
            refund("re_after", "succeeded"),
            RefundRecord { refund_key: Some("refund:p:again:re_x".into()), ..refund("re_again", "succeeded") },
        ];
        let causes = refund_causes(&payment, &refunds);
        assert_eq!(
            causes.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["re_after"],
            "a pending one may fail; one with our key is ours"
        );
        payment.settled_refund_ids = None;
        assert!(refund_causes(&payment, &refunds).is_empty(), "unknown at release: nothing is guessed");
    }
}
