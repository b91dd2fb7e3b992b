//! Reconciliation: finishing payments a request left `releasing` or `refunding`.
//!
//! One domain function, used by a later release or refund call and by the scheduled job.
//! A payment is due when its queued work was last driven more than [`RECONCILE_AFTER`] ago,
//! long after any request that drove it has hit its deadline. Whoever moves `GSI2SK` forward
//! under that condition owns the next attempt (a lease), so overlapping reconcilers never
//! drive one payment together.
//!
//! Stripe is asked first, never trusted by key alone (it forgets idempotency keys after
//! 24 hours): a transfer is looked up by `transfer_group` = payment id, a refund by its
//! `refund_key` metadata on the PaymentIntent. Found: the payment is finished with it.
//! Absent: the call is made again with the same key, for what is left to move now (a new
//! amount gets a new key, since Stripe refuses a key reused with other parameters; the
//! lookup is what makes the new key safe). A release whose charge came under dispute
//! meanwhile, with no transfer made, is returned to `succeeded` instead.

use serde_json::json;

use super::intent::IntentOutcome;

use super::{
    gateway::Stripe,
    payment::{
        AWAITING_PAYMENT_QUEUE, Payment, PaymentStatus, REFUNDING_QUEUE, RELEASING_QUEUE, SK, amount_refunded_is,
        number_is, refunded_elsewhere, release_key, return_to_succeeded, transition,
    },
    provider::Provider,
    refund::{Refunded, finish_refund, legacy_key, make_refund, refund_failed},
    release::{Transferred, charge_of, finish_release, transfer},
};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    outbox,
    payments::PaymentError,
    payments::PaymentServices,
    services::Services,
    store::{Change, StoreError, av},
    time,
};

/// How long a payment waits on Stripe before reconciliation takes it over.
pub const RECONCILE_AFTER: time::Duration = time::Duration::minutes(5);

/// What reconciling a payment came to.
#[derive(Debug)]
pub enum Reconciled {
    /// Not waiting, or not waiting long enough (or another reconciler holds it).
    NotDue,
    /// Still unknown at Stripe; the next run tries again.
    Pending,
    /// Released with this transfer; `found` when it existed at Stripe before this run.
    Released { transfer_id: String, found: bool },
    /// The refund was recorded, or a release was called off because refunds left nothing.
    Settled,
    /// Stripe definitely did nothing (or refused): the payment is `succeeded` again.
    ReturnedToSucceeded(PaymentError),
}

fn cutoff() -> String {
    time::rfc3339(time::now() - RECONCILE_AFTER)
}

/// Reconciles `payment` if it is due.
#[tracing::instrument(skip_all, fields(payment_id = %payment.payment_id, status = ?payment.status))]
pub async fn payment(app: &PaymentServices, payment: &Payment, meta: &RequestMeta) -> Result<Reconciled, PaymentError> {
    if !matches!(payment.status, PaymentStatus::Releasing | PaymentStatus::Refunding) {
        return Ok(Reconciled::NotDue);
    }
    let cutoff = cutoff();
    if payment.queued_at.as_deref().is_some_and(|at| at >= cutoff.as_str()) {
        return Ok(Reconciled::NotDue);
    }
    let stripe = app.stripe(meta.deadline).await?;
    if !stripe.has_time() {
        return Ok(Reconciled::Pending);
    }
    // The lease: this run drives the payment; others see it as freshly driven.
    let pk = Payment::key(&payment.payment_id);
    let now = time::rfc3339(time::now());
    let lease = Change::new(&pk, SK)
        .update("SET GSI2SK = :now")
        .condition("#status = :status AND (attribute_not_exists(GSI2SK) OR GSI2SK < :cutoff)")
        .name("#status", "status")
        .value(":status", av::s(payment.status.as_str()))
        .value(":now", av::s(&now))
        .value(":cutoff", av::s(&cutoff));
    let leased: Payment = match app.table().update_item(lease).await {
        Ok(item) => serde_dynamo::from_item(item).map_err(PaymentError::internal)?,
        Err(StoreError::ConditionFailed) => return Ok(Reconciled::NotDue),
        Err(other) => return Err(other.into()),
    };
    tracing::info!("reconciling a payment left waiting on Stripe");
    match leased.status {
        PaymentStatus::Releasing => Box::pin(release(app, &stripe, leased, meta)).await,
        _ => Box::pin(refund(app, &stripe, leased, meta)).await,
    }
}

/// Reconciles the payment `payment_id` if it is due (the scheduled job's entry point).
pub async fn payment_by_id(
    app: &PaymentServices,
    payment_id: &str,
    meta: &RequestMeta,
) -> Result<Reconciled, PaymentError> {
    match Payment::find(app, payment_id).await? {
        Some(found) => payment(app, &found, meta).await,
        None => Ok(Reconciled::NotDue),
    }
}

/// Ids of payments on `queue` ([`RELEASING_QUEUE`] or [`REFUNDING_QUEUE`]) that are due,
/// oldest first, at most `limit`.
pub async fn due(app: &Services, queue: &str, limit: i32) -> Result<Vec<String>, PaymentError> {
    debug_assert!(queue == RELEASING_QUEUE || queue == REFUNDING_QUEUE);
    due_before(app, queue, &cutoff(), limit).await
}

/// Ids of payments on `queue` last driven before `cutoff` (RFC 3339), oldest first.
async fn due_before(app: &Services, queue: &str, cutoff: &str, limit: i32) -> Result<Vec<String>, PaymentError> {
    let keys = app.table().queue_due(queue, cutoff, limit).await?;
    Ok(keys.iter().filter_map(|pk| pk.strip_prefix("PAYMENT#").map(str::to_owned)).collect())
}

async fn release(
    app: &Services,
    stripe: &Stripe,
    payment: Payment,
    meta: &RequestMeta,
) -> Result<Reconciled, PaymentError> {
    let payment_id = payment.payment_id.clone();
    let transfers = match stripe.transfers_for(&payment_id).await {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(%error, "transfers not listed; will try again");
            return Ok(Reconciled::Pending);
        }
    };
    // Re-payments (a dispute won after its reversal) carry a cause; the release is the other.
    let transfers: Vec<_> = transfers.into_iter().filter(|t| t.cause.is_none()).collect();
    if let Some(found) = transfers.first() {
        if transfers.len() > 1 {
            tracing::error!(count = transfers.len(), "more than one transfer in the payment's group");
        }
        return Ok(match finish_release(app, &payment, &found.id, None, meta).await? {
            Transferred::Now(transfer_id) | Transferred::Before(transfer_id) => {
                Reconciled::Released { transfer_id, found: true }
            }
            Transferred::Unknown | Transferred::Refused(_) => Reconciled::Pending,
        });
    }

    // No transfer exists, so nothing has been paid: the release may still be called off.
    // Claims made before keys were recorded used `release:{payment_id}`.
    let old_key = payment.release_key.clone().unwrap_or_else(|| format!("release:{payment_id}"));
    if payment.dispute_blocks() {
        return_to_succeeded(app, &payment_id, PaymentStatus::Releasing, "release_key", &old_key, None).await?;
        return Ok(Reconciled::ReturnedToSucceeded(super::release::disputed()));
    }
    let counted: Vec<_> = match stripe.refunds_for(&payment.stripe_payment_intent_id).await {
        Ok(refunds) => refunds.into_iter().filter(|r| r.counts()).collect(),
        Err(error) => {
            tracing::warn!(%error, "refunds not listed; will try again");
            return Ok(Reconciled::Pending);
        }
    };
    let at_stripe: i64 = counted.iter().map(|r| r.amount).sum();
    let settled: Vec<String> = counted.into_iter().map(|r| r.id).collect();
    let refunded = payment.amount_refunded.max(at_stripe).min(payment.amount);
    if payment.amount - refunded <= 0 {
        return cancel_release(app, &payment, &old_key, meta).await;
    }
    // What the provider is owed of what is left: the fee is the payment's own terms.
    let left = payment.provider_share(refunded);
    if left <= 0 {
        return_to_succeeded(app, &payment_id, PaymentStatus::Releasing, "release_key", &old_key, None).await?;
        return Ok(Reconciled::ReturnedToSucceeded(PaymentError::Conflict(
            "the platform fee takes all that refunds left, so there is nothing to transfer; refund it instead".into(),
        )));
    }
    let platform_fee = payment.amount - refunded - left;
    let payment = if payment.release_amount == Some(left) && payment.release_key.is_some() {
        payment
    } else {
        // Another amount needs another key: Stripe rejects a key reused with other parameters.
        // Refunds Stripe has that were not recorded yet are recorded with it, once.
        let attempt = payment.release_seq + 1;
        let key = release_key(&payment_id, attempt);
        let pk = Payment::key(&payment_id);
        let condition = format!(
            "#status = :releasing AND (attribute_not_exists(release_key) OR release_key = :old) AND {} AND {}",
            number_is("release_seq", ":seen_seq", payment.release_seq),
            amount_refunded_is(payment.amount_refunded)
        );
        let rekey = Change::new(&pk, SK)
            .update(
                "SET release_amount = :amount, release_key = :key, release_seq = :attempt, amount_refunded = :refunded, \
                 platform_fee = :fee, settled_refund_ids = :settled",
            )
            .condition(&condition)
            .name("#status", "status")
            .value(":releasing", av::s(PaymentStatus::Releasing.as_str()))
            .value(":amount", av::n(left))
            .value(":fee", av::n(platform_fee))
            .value(":settled", aws_sdk_dynamodb::types::AttributeValue::L(settled.iter().map(av::s).collect()))
            .value(":key", av::s(&key))
            .value(":old", av::s(&old_key))
            .value(":attempt", av::n(attempt))
            .value(":seen_seq", av::n(payment.release_seq))
            .value(":refunded", av::n(refunded))
            .value(":seen_refunded", av::n(payment.amount_refunded));
        let table = app.table();
        let mut items = vec![table.update(rekey)?];
        let found = (refunded > payment.amount_refunded).then(|| {
            refunded_elsewhere(&payment, refunded - payment.amount_refunded, refunded, "at_reconciliation", meta)
        });
        if let Some((entry, event)) = found {
            items.push(app.audit().put(&entry)?);
            items.push(outbox::put(table, event)?);
        }
        match table.transact(items).await {
            Ok(()) => Payment {
                release_amount: Some(left),
                platform_fee: Some(platform_fee),
                release_key: Some(key),
                release_seq: attempt,
                amount_refunded: refunded,
                settled_refund_ids: Some(settled),
                ..payment
            },
            Err(StoreError::TransactionConditionsFailed(_)) => return Ok(Reconciled::Pending),
            Err(other) => return Err(other.into()),
        }
    };
    let key = payment.release_key.clone().unwrap_or_default();
    let provider = Provider::find(app, &payment.provider_id).await?;
    let Some(destination) = provider.and_then(|p| p.stripe_account_id.filter(|_| p.payouts_enabled)) else {
        return_to_succeeded(app, &payment_id, PaymentStatus::Releasing, "release_key", &key, None).await?;
        return Ok(Reconciled::ReturnedToSucceeded(PaymentError::OnboardingRequired));
    };
    let payment = match charge_of(stripe, &payment).await {
        Ok(charge) => Payment { stripe_charge_id: Some(charge), ..payment },
        Err(error) => {
            tracing::warn!(?error, "charge not known; will try again");
            return Ok(Reconciled::Pending);
        }
    };
    Ok(match transfer(app, stripe, &payment, &destination, None, meta).await? {
        Transferred::Now(transfer_id) => Reconciled::Released { transfer_id, found: false },
        Transferred::Before(transfer_id) => Reconciled::Released { transfer_id, found: true },
        Transferred::Unknown => Reconciled::Pending,
        Transferred::Refused(error) => Reconciled::ReturnedToSucceeded(error),
    })
}

/// Refunds made while the release was unresolved left nothing to transfer: the release is
/// called off and the payment is `refunded`; refunds not recorded yet are recorded with it.
async fn cancel_release(
    app: &Services,
    payment: &Payment,
    key: &str,
    meta: &RequestMeta,
) -> Result<Reconciled, PaymentError> {
    let table = app.table();
    let pk = Payment::key(&payment.payment_id);
    let now = time::rfc3339(time::now());
    let condition = format!(
        "#status = :from AND (attribute_not_exists(release_key) OR release_key = :key) AND {}",
        amount_refunded_is(payment.amount_refunded)
    );
    let cancel = transition(&pk, PaymentStatus::Releasing, PaymentStatus::Refunded, &now)
        .update(
            "SET #status = :to, updated_at = :now, amount_refunded = :all \
             REMOVE GSI2PK, GSI2SK, release_amount, release_key",
        )
        .condition(&condition)
        .value(":key", av::s(key))
        .value(":all", av::n(payment.amount))
        .value(":seen_refunded", av::n(payment.amount_refunded));
    let entry = AuditEntry::new("payment.release_cancelled", AuditStatus::Success, &payment.payer_org_id, meta)
        .details(json!({ "payment_id": payment.payment_id, "reason": "refunded in full before any transfer" }));
    let mut items = vec![table.update(cancel)?, app.audit().put(&entry)?];
    let found = (payment.amount > payment.amount_refunded).then(|| {
        let amount = payment.amount - payment.amount_refunded;
        refunded_elsewhere(payment, amount, payment.amount, "at_reconciliation", meta)
    });
    if let Some((entry, event)) = found {
        items.push(app.audit().put(&entry)?);
        items.push(outbox::put(table, event)?);
    }
    match table.transact(items).await {
        Ok(()) => Ok(Reconciled::Settled),
        // The state moved (a webhook recorded the refund): the next run sees it.
        Err(StoreError::TransactionConditionsFailed(_)) => Ok(Reconciled::Pending),
        Err(other) => Err(other.into()),
    }
}

async fn refund(
    app: &Services,
    stripe: &Stripe,
    payment: Payment,
    meta: &RequestMeta,
) -> Result<Reconciled, PaymentError> {
    let key = payment.refund_key.clone().unwrap_or_else(|| legacy_key(&payment));
    let refunds = match stripe.refunds_for(&payment.stripe_payment_intent_id).await {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(%error, "refunds not listed; will try again");
            return Ok(Reconciled::Pending);
        }
    };
    let at_stripe: i64 = refunds.iter().filter(|r| r.counts()).map(|r| r.amount).sum();
    let ours = refunds.iter().find(|r| match &r.refund_key {
        Some(found) => found == &key,
        // Refunds made before keys went into metadata: ours if not recorded yet.
        None => {
            payment.refund_key.is_none()
                && r.payment_id.as_deref() == Some(payment.payment_id.as_str())
                && !payment.refund_ids.contains(&r.id)
        }
    });
    if let Some(found) = ours {
        if !found.counts() {
            let reason = format!("the refund {} at Stripe", found.status);
            refund_failed(app, &payment, &key, &reason, Some(at_stripe), None, meta).await?;
            return Ok(Reconciled::ReturnedToSucceeded(PaymentError::PaymentProvider(reason)));
        }
        finish_refund(app, &payment, found, Some(at_stripe), None, meta).await?;
        return Ok(Reconciled::Settled);
    }
    Ok(match make_refund(app, stripe, &payment, None, meta).await? {
        Refunded::Recorded(_) => Reconciled::Settled,
        Refunded::Unknown => Reconciled::Pending,
        Refunded::Refused(error) => Reconciled::ReturnedToSucceeded(error),
    })
}

/// A payment still `requires_payment` after this long is asked about at Stripe (its
/// `payment_intent.*` webhook may have been lost).
pub const AWAITING_PAYMENT_AFTER: time::Duration = time::Duration::hours(1);
/// What asking Stripe about an unpaid payment came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Awaited {
    /// Not due, or another run has it.
    NotDue,
    /// Stripe says it succeeded: recorded, as its webhook would have.
    Recorded,
    /// Its PaymentIntent is canceled (abandoned by the payer, canceled here after
    /// `PAYMENT_ABANDON_DAYS`, or in Stripe's dashboard): the payment is `canceled`.
    Canceled,
    /// Still waiting for the payer; asked again next run.
    StillWaiting,
}

/// Payments waiting for the payer (`requires_payment`, or `failed` and payable again with
/// another card) for over an hour, oldest first.
pub async fn awaiting_payment_due(app: &Services, limit: i32) -> Result<Vec<String>, PaymentError> {
    due_before(app, AWAITING_PAYMENT_QUEUE, &time::rfc3339(time::now() - AWAITING_PAYMENT_AFTER), limit).await
}

/// PaymentIntent statuses Stripe lets us cancel: nobody has paid, and nothing is moving.
fn cancelable(status: &str) -> bool {
    matches!(status, "requires_payment_method" | "requires_confirmation" | "requires_action")
}

/// Recovers a lost `payment_intent.*` webhook, and ends payments nobody pays: the
/// PaymentIntent's status at Stripe decides, written exactly as the webhook writes it (as of
/// now, so the lost event arriving later changes nothing). One unpaid for
/// `PAYMENT_ABANDON_DAYS` is canceled at Stripe first (key `cancel:{payment_id}`); a cancel
/// Stripe refuses because the payer paid meanwhile records the success instead. A lease on
/// the queue time keeps overlapping runs from asking twice.
#[tracing::instrument(skip(app, meta))]
pub async fn awaiting_payment(
    app: &PaymentServices,
    payment_id: &str,
    meta: &RequestMeta,
) -> Result<Awaited, PaymentError> {
    let Some(payment) = Payment::find(app, payment_id).await? else { return Ok(Awaited::NotDue) };
    let cutoff = time::rfc3339(time::now() - AWAITING_PAYMENT_AFTER);
    if !matches!(payment.status, PaymentStatus::RequiresPayment | PaymentStatus::Failed)
        || payment.queue.as_deref() != Some(AWAITING_PAYMENT_QUEUE)
        || payment.queued_at.as_deref().is_some_and(|at| at >= cutoff.as_str())
    {
        return Ok(Awaited::NotDue);
    }
    let stripe = app.stripe(meta.deadline).await?;
    if !stripe.has_time() {
        return Ok(Awaited::NotDue);
    }
    let pk = Payment::key(payment_id);
    let now = time::now();
    let lease = Change::new(&pk, SK)
        .update("SET GSI2SK = :now")
        .condition("#status = :status AND GSI2PK = :queue AND GSI2SK < :cutoff")
        .name("#status", "status")
        .value(":status", av::s(payment.status.as_str()))
        .value(":queue", av::s(AWAITING_PAYMENT_QUEUE))
        .value(":now", av::s(time::rfc3339(now)))
        .value(":cutoff", av::s(&cutoff));
    match app.table().update_item(lease).await {
        Ok(_) => {}
        Err(StoreError::ConditionFailed) => return Ok(Awaited::NotDue),
        Err(other) => return Err(other.into()),
    }
    let intent_id = payment.stripe_payment_intent_id.as_str();
    let mut intent = stripe.payment_intent(intent_id).await.map_err(PaymentError::from)?;
    let created = time::parse_rfc3339(&payment.created_at).unwrap_or(now);
    let abandoned =
        payment.abandon_requested || now - created > time::Duration::days(app.settings().payment_abandon_days);
    if abandoned && cancelable(&intent.status) {
        intent = match stripe.cancel_abandoned_intent(&format!("cancel:{payment_id}"), intent_id).await {
            Ok(canceled) => canceled,
            // Refused: it moved on (paid, say). What it is now decides.
            Err(error) if error.is_definite() => {
                tracing::warn!(%error, "cancel refused; reading the PaymentIntent again");
                stripe.payment_intent(intent_id).await.map_err(PaymentError::from)?
            }
            // Unknown: the next run asks again (the same key replays a cancel that happened).
            Err(error) => return Err(error.into()),
        };
    }
    let outcome = match intent.status.as_str() {
        "succeeded" => IntentOutcome::Succeeded,
        "canceled" => IntentOutcome::Canceled,
        _ => return Ok(Awaited::StillWaiting),
    };
    let effect = super::intent::apply_intent_outcome(
        app,
        &payment,
        outcome,
        intent.latest_charge.as_deref(),
        now.unix_timestamp(),
    )?;
    let mut changes = effect.changes;
    let (action, how) = match outcome {
        IntentOutcome::Succeeded => ("payment.succeeded", "reconciliation"),
        _ if abandoned => ("payment.canceled", "abandoned"),
        _ => ("payment.canceled", "reconciliation"),
    };
    let entry = crate::audit::AuditEntry::new(action, crate::audit::AuditStatus::Success, &payment.payer_org_id, meta)
        .details(serde_json::json!({ "payment_id": payment_id, "recovered_by": how,
                                     "stripe_status": intent.status }));
    changes.push(app.audit().put(&entry)?);
    match app.table().transact(changes).await {
        Ok(()) if outcome == IntentOutcome::Canceled => Ok(Awaited::Canceled),
        Ok(()) => {
            tracing::warn!("a lost PaymentIntent outcome was recovered from Stripe");
            Ok(Awaited::Recorded)
        }
        // The webhook got there in the meantime.
        Err(StoreError::TransactionConditionsFailed(_)) => Ok(Awaited::NotDue),
        Err(other) => Err(other.into()),
    }
}
