//! Refunds of held funds, whole or in parts, before anything is transferred.
//!
//! Same shape as release: conditional `succeeded → refunding` (recording the amount, the
//! refunded total it starts from, and a key of its own, `refund:{payment_id}:{attempt}`,
//! which also goes into the refund's metadata), the Stripe refund, then the final write,
//! which sets the new total and goes back to `succeeded` (something left) or `refunded`.
//! A definite refusal returns the payment to `succeeded`; an unknown outcome leaves it
//! `refunding` on the work queue, and [`super::reconcile`] looks the refund up on the
//! PaymentIntent by its key before making it again.
//!
//! The new total is Stripe's (every refund of the charge that did not fail), never just
//! ours added to what we knew: a dashboard refund made meanwhile is counted, not lost. The
//! `charge.refunded` webhook of our own refund can land before or after the final write:
//! while `refunding` it only raises `amount_refunded`; the final write writes the one
//! `payment.refunded` audit entry.
//!
//! A refund asked for under an `Idempotency-Key` ([`RefundRequest`]) is made exactly once:
//! its Stripe key is derived from ours, and the final write keeps its answer beside the
//! payment for the payment's life, so the same key and body replay it at any time (not
//! only for Stripe's 24 hours) and another body is 422.

use serde_json::json;

use super::{
    gateway::{NewRefund, RefundRecord, Stripe},
    payment::{
        NOT_HELD_BY_DISPUTE, Payment, PaymentStatus, REFUNDING_QUEUE, amount_refunded_is, number_is, refund_key,
        refunded_elsewhere, return_to_succeeded, transition,
    },
};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    invalid::FieldError,
    notify::{Category, DomainEvent},
    outbox::{self, Message},
    payments::PaymentError,
    payments::PaymentServices,
    services::Services,
    store::{StoreError, av},
    time,
};

pub use super::outcome::{RefundAnswer, RefundOutcome, RefundRequest};

/// Another refund of the payment is unresolved: this call's refund is another one, for the
/// caller to ask again once the payment shows the outcome.
pub(super) fn in_progress() -> PaymentError {
    PaymentError::Conflict("another refund of this payment is in progress; read it again".into())
}

/// Refunds `amount` (default: all that is left) of a held payment, for `actor` (`None`: the
/// platform itself, as the cleanup's auto-refund). `still_may_move`: condition checks that
/// join the claim.
#[allow(clippy::too_many_arguments)]
pub(super) async fn refund_held(
    app: &PaymentServices,
    payment: Payment,
    amount: Option<i64>,
    reason: Option<&str>,
    request: Option<&RefundRequest>,
    still_may_move: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
    actor: Option<&str>,
    meta: &RequestMeta,
) -> Result<RefundOutcome, PaymentError> {
    let payment_id = payment.payment_id.clone();
    let payment_id = payment_id.as_str();
    match payment.status {
        PaymentStatus::Refunded if amount.is_none() => return Ok(RefundOutcome::Done(payment)),
        PaymentStatus::Refunded => return Err(PaymentError::Conflict("the payment is already fully refunded".into())),
        PaymentStatus::Succeeded => {}
        PaymentStatus::Released => {
            return Err(PaymentError::Conflict(
                "the payment has been released to the provider and can no longer be refunded".into(),
            ));
        }
        PaymentStatus::Releasing => {
            return Err(PaymentError::Conflict(
                "a release of this payment is unresolved; it cannot be refunded now".into(),
            ));
        }
        // Another refund is unresolved (the route drives it first, `super::moves::refund`).
        PaymentStatus::Refunding => return Err(in_progress()),
        _ => return Err(PaymentError::PaymentNotSucceeded),
    }
    if payment.dispute_blocks() {
        return Err(PaymentError::Conflict("the charge is disputed; Stripe settles it through the dispute".into()));
    }
    let left = payment.releasable_amount();
    let amount = amount.unwrap_or(left);
    if amount > left {
        return Err(PaymentError::Validation(vec![FieldError::new(
            "amount",
            format!("is more than is left to refund ({left})"),
        )]));
    }
    // Stripe refunds in the steps it charges in (tens of a three-decimal currency).
    if let Ok(currency) = super::Currency::parse(&payment.currency) {
        currency
            .check_step(amount)
            .map_err(|reason| PaymentError::Validation(vec![FieldError::new("amount", reason)]))?;
    }
    let stripe = app.stripe(meta.deadline).await?;
    if !stripe.has_time() {
        return Err(PaymentError::PaymentsUnavailable);
    }

    // 1. succeeded → refunding, for this amount on top of this total, under a key of its own.
    let base = payment.amount_refunded;
    let attempt = payment.refund_seq + 1;
    let key = match request {
        Some(request) => request.stripe_key(payment_id, attempt),
        None => refund_key(payment_id, attempt),
    };
    let pk = Payment::key(payment_id);
    let now = time::rfc3339(time::now());
    let condition = format!(
        "#status = :from AND {} AND {} AND {NOT_HELD_BY_DISPUTE}",
        amount_refunded_is(base),
        number_is("refund_seq", ":seen_seq", payment.refund_seq)
    );
    let mut update = String::from(
        "SET #status = :to, updated_at = :now, GSI2PK = :queue, GSI2SK = :now, refund_pending = :amount, \
         refund_base = :seen_refunded, refund_key = :key, refund_seq = :attempt",
    );
    if reason.is_some() {
        update.push_str(", refund_reason = :reason");
    }
    if request.is_some() {
        update.push_str(", refund_request = :request, refund_request_hash = :request_hash");
    }
    let mut claim = transition(&pk, PaymentStatus::Succeeded, PaymentStatus::Refunding, &now)
        .update(&update)
        .condition(&condition)
        .value(":queue", av::s(REFUNDING_QUEUE))
        .value(":amount", av::n(amount))
        .value(":key", av::s(&key))
        .value(":attempt", av::n(attempt))
        .value(":seen_seq", av::n(payment.refund_seq))
        .value(":seen_refunded", av::n(base))
        .value(":dispute_won", av::s("won"))
        .value(":dispute_warning_closed", av::s("warning_closed"));
    if let Some(reason) = reason {
        claim = claim.value(":reason", av::s(reason));
    }
    if let Some(request) = request {
        claim =
            claim.value(":request", av::s(&request.key_digest)).value(":request_hash", av::s(&request.request_hash));
    }
    let claimed = if still_may_move.is_empty() {
        app.table().update_item(claim).await.map(drop)
    } else {
        let mut items = vec![app.table().update(claim)?];
        items.extend(still_may_move);
        app.table().transact(items).await
    };
    match claimed {
        Ok(()) => {}
        Err(StoreError::ConditionFailed | StoreError::TransactionConditionsFailed(_)) => {
            let current = Payment::find(app, payment_id).await?.ok_or(PaymentError::NotFound)?;
            return Err(PaymentError::Conflict(match current.status {
                PaymentStatus::Refunding => "a refund of this payment is in progress".into(),
                PaymentStatus::Releasing | PaymentStatus::Released => {
                    "the payment is being released to the provider and can no longer be refunded".into()
                }
                _ => "the payment changed while refunding; read it again".into(),
            }));
        }
        Err(other) => return Err(other.into()),
    }
    let claimed = Payment {
        status: PaymentStatus::Refunding,
        refund_pending: Some(amount),
        refund_base: Some(base),
        refund_key: Some(key),
        refund_seq: attempt,
        refund_reason: reason.map(str::to_owned),
        refund_request: request.map(|r| r.key_digest.clone()),
        refund_request_hash: request.map(|r| r.request_hash.clone()),
        ..payment
    };
    match Box::pin(make_refund(app, &stripe, &claimed, actor, meta)).await? {
        Refunded::Recorded(done) => Ok(RefundOutcome::Done(*done)),
        Refunded::Unknown => Ok(RefundOutcome::Pending(claimed)),
        Refunded::Refused(error) => Err(error),
    }
}

/// How a refund attempt ended.
pub(super) enum Refunded {
    /// Made and recorded: the payment as it is now.
    Recorded(Box<Payment>),
    /// Unknown at Stripe, or not recorded: left `refunding` for reconciliation.
    Unknown,
    /// Stripe definitely did nothing; the payment is `succeeded` again.
    Refused(PaymentError),
}

/// The Stripe refund for a payment this caller holds in `refunding`, then the final write.
pub(super) async fn make_refund(
    app: &Services,
    stripe: &Stripe,
    payment: &Payment,
    actor: Option<&str>,
    meta: &RequestMeta,
) -> Result<Refunded, PaymentError> {
    let payment_id = payment.payment_id.as_str();
    let key = payment.refund_key.clone().unwrap_or_else(|| legacy_key(payment));
    let request = NewRefund {
        payment_id,
        payment_intent: &payment.stripe_payment_intent_id,
        amount: payment.refund_pending.unwrap_or_else(|| payment.releasable_amount()),
        reason: payment.refund_reason.as_deref(),
    };
    match stripe.create_refund(&key, &request).await {
        Ok(refund) => {
            // Stripe's total, with any refund made elsewhere meanwhile; if it can't be read,
            // the webhook that follows raises what is recorded now.
            let at_stripe = stripe.refunded_total(&payment.stripe_payment_intent_id).await.ok();
            match finish_refund(app, payment, &refund, at_stripe, actor, meta).await {
                Ok(done) => Ok(Refunded::Recorded(Box::new(done))),
                Err(error) => {
                    tracing::error!(%error, %payment_id, refund_id = %refund.id,
                        "refund made but not recorded; reconciliation will record it");
                    Ok(Refunded::Unknown)
                }
            }
        }
        Err(error) if error.is_definite() => {
            refund_failed(app, payment, &key, &error.reason(), None, actor, meta).await?;
            Ok(Refunded::Refused(error.into()))
        }
        Err(error) => {
            tracing::warn!(%error, %payment_id, "refund outcome unknown; the payment stays refunding");
            Ok(Refunded::Unknown)
        }
    }
}

/// The key of a refund claimed before keys were recorded.
pub(super) fn legacy_key(payment: &Payment) -> String {
    format!("refund:{}", payment.payment_id)
}

/// Undoes a refund claim after Stripe refused (or failed) the refund, with an audit entry.
/// `at_stripe` is Stripe's refunded total when known (a refund that failed after it was
/// counted comes off). What the total gained since the claim, beyond this refund, came from
/// elsewhere (the dashboard; its webhook only raised the total) and is recorded now.
pub(super) async fn refund_failed(
    app: &Services,
    payment: &Payment,
    key: &str,
    reason: &str,
    at_stripe: Option<i64>,
    actor: Option<&str>,
    meta: &RequestMeta,
) -> Result<(), PaymentError> {
    let before =
        return_to_succeeded(app, &payment.payment_id, PaymentStatus::Refunding, "refund_key", key, at_stripe).await?;
    let entry = AuditEntry::new("payment.refunded", AuditStatus::Failure, &payment.payer_org_id, meta)
        .details(json!({ "payment_id": payment.payment_id, "reason": reason }))
        .actor_if(actor);
    app.audit().record_or_log(&entry).await;
    if let Some(before) = before {
        let base = before.refund_base.unwrap_or(before.amount_refunded);
        let total = at_stripe.unwrap_or(before.amount_refunded).min(before.amount);
        if total > base {
            let (entry, event) = refunded_elsewhere(&before, total - base, total, "while_refunding", meta);
            let table = app.table();
            table.transact(vec![app.audit().put(&entry)?, outbox::put(table, event)?]).await?;
        }
    }
    Ok(())
}

/// Records a refund Stripe made: `refunding → succeeded | refunded` with the new total and
/// one audit entry. The total is the largest of what is recorded, what this refund adds to
/// the total it started from, and Stripe's own (`at_stripe`). Conditioned on the refund key
/// and on the total it read, so a webhook raising the total meanwhile makes it read again.
pub async fn finish_refund(
    app: &Services,
    claimed: &Payment,
    refund: &RefundRecord,
    at_stripe: Option<i64>,
    actor: Option<&str>,
    meta: &RequestMeta,
) -> Result<Payment, PaymentError> {
    let table = app.table();
    let payment_id = claimed.payment_id.as_str();
    let key = claimed.refund_key.clone().unwrap_or_else(|| legacy_key(claimed));
    let pk = Payment::key(payment_id);
    for _ in 0..5 {
        let current = Payment::find(app, payment_id).await?.ok_or(PaymentError::NotFound)?;
        if current.refund_ids.contains(&refund.id) {
            return Ok(current); // recorded by another finisher
        }
        let ours_key = current.refund_key.clone().unwrap_or_else(|| legacy_key(&current));
        if current.status != PaymentStatus::Refunding || ours_key != key {
            return Err(PaymentError::internal("refund finished against a payment not refunding under its key"));
        }
        let ours = current.refund_base.unwrap_or(current.amount_refunded) + refund.amount;
        let total = current.amount_refunded.max(ours).max(at_stripe.unwrap_or(0)).min(current.amount);
        let to = if total >= current.amount { PaymentStatus::Refunded } else { PaymentStatus::Succeeded };
        let now = time::rfc3339(time::now());
        let condition = format!(
            "#status = :from AND (attribute_not_exists(refund_key) OR refund_key = :key) AND {}",
            amount_refunded_is(current.amount_refunded)
        );
        let done = transition(&pk, PaymentStatus::Refunding, to, &now)
            .update(
                "SET #status = :to, updated_at = :now, amount_refunded = :total, \
                 refund_ids = list_append(if_not_exists(refund_ids, :none), :ids) \
                 REMOVE GSI2PK, GSI2SK, refund_pending, refund_base, refund_key, refund_reason, \
                 refund_request, refund_request_hash",
            )
            .condition(&condition)
            .value(":key", av::s(&key))
            .value(":seen_refunded", av::n(current.amount_refunded))
            .value(":total", av::n(total))
            .value(":none", aws_sdk_dynamodb::types::AttributeValue::L(vec![]))
            .value(":ids", aws_sdk_dynamodb::types::AttributeValue::L(vec![av::s(&refund.id)]));
        let mut details = json!({ "payment_id": payment_id, "refund_id": refund.id, "amount": refund.amount,
                                  "amount_refunded": total, "currency": current.currency,
                                  "reason": current.refund_reason });
        if total > ours {
            // Refunds made elsewhere (Stripe's dashboard) while this one was in flight.
            details["refunded_elsewhere"] = json!(total - ours);
        }
        let entry = AuditEntry::new("payment.refunded", AuditStatus::Success, &current.payer_org_id, meta)
            .actor_if(actor)
            .details(details);
        let announcement = DomainEvent::new(
            "payment.refunded",
            json!({ "payment_id": payment_id, "refund_id": refund.id, "amount": refund.amount,
                    "refunded_elsewhere": (total - ours).max(0), "amount_refunded": total,
                    "currency": current.currency }),
        );
        let told = Message::push(
            &current.payer_user_id,
            Category::Payments,
            "Refund on its way",
            format!("{} is being refunded to you.", super::money::format_amount(refund.amount, &current.currency)),
            json!({ "payment_id": payment_id, "event": "payment.refunded" }),
        );
        let mut items = vec![
            table.update(done)?,
            app.audit().put(&entry)?,
            outbox::put(table, Message::event(&announcement))?,
            outbox::put(table, told)?,
        ];
        // The answer to a keyed request, kept for the payment's life.
        if let (Some(key_digest), Some(request_hash)) = (&current.refund_request, &current.refund_request_hash) {
            let answer = RefundAnswer {
                pk: pk.clone(),
                sk: RefundAnswer::sk(key_digest),
                request_hash: request_hash.clone(),
                payment_id: payment_id.to_owned(),
                status: to,
                amount_refunded: total,
                refund_id: refund.id.clone(),
            };
            items.push(table.put(&answer, None)?);
        }
        match table.transact(items).await {
            Ok(()) => {
                let mut ids = current.refund_ids.clone();
                ids.push(refund.id.clone());
                return Ok(Payment {
                    status: to,
                    amount_refunded: total,
                    refund_ids: ids,
                    refund_pending: None,
                    refund_base: None,
                    refund_key: None,
                    refund_reason: None,
                    refund_request: None,
                    refund_request_hash: None,
                    queue: None,
                    queued_at: None,
                    updated_at: now,
                    ..current
                });
            }
            Err(StoreError::TransactionConditionsFailed(_)) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(PaymentError::internal("the payment kept changing while its refund was recorded"))
}
