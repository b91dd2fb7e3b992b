//! What Stripe's payment events do to a payment: charges succeeding or failing, refunds
//! (ours and the dashboard's, whole or partial), disputes, and transfers.
//!
//! The payments domain owns these rules; the webhook (`crate::webhook::process`) verifies and
//! dedupes each event and hands it here. Each effect is computed from the payment as read
//! now and conditioned on what was read, so a concurrent change makes the webhook compute it
//! again rather than lose it.

use serde_json::{Value, json};

pub(crate) use super::intent::{IntentOutcome, apply_intent_outcome};
use super::stripe_event::{Effect, StripeEvent};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    notify::DomainEvent,
    outbox::{self, Message},
    payments::PaymentError,
    payments::PaymentServices,
    payments::{
        payment::{Payment, PaymentStatus, RefundFailure, number_is, refund_failed_notice},
        recovery::{self, Cause, CauseKind},
    },
    services::Services,
    store::{Change, av},
    time,
};

/// A released payment that lost money after its transfer (a refund in Stripe's dashboard):
/// the provider's share of each such refund is taken back, once per refund, by Stripe's
/// list of refunds. Any of a refund's events may bring this on; the first does the work.
async fn recover_refunds(app: &PaymentServices, payment: &Payment, meta: &RequestMeta) -> Result<(), PaymentError> {
    let stripe = app.stripe(meta.deadline).await?;
    recovery::recover_refunds(app, &stripe, payment, meta).await?;
    Ok(())
}

/// The payment a Stripe object points at: by PaymentIntent (`PI#` on GSI1) or by id.
async fn payment_by_intent(app: &Services, payment_intent: Option<&str>) -> Result<Option<Payment>, PaymentError> {
    let Some(pi) = payment_intent else { return Ok(None) };
    let Some((pk, _)) = app.table().find_by_gsi1(&format!("PI#{pi}")).await? else { return Ok(None) };
    Ok(Payment::find(app, pk.trim_start_matches("PAYMENT#")).await?)
}

/// `payment_intent.succeeded` / `payment_intent.payment_failed`: the charge's outcome, if
/// the event is not older than the last one that wrote it.
pub async fn intent_outcome(app: &Services, event: &StripeEvent) -> Result<Effect, PaymentError> {
    let object = &event.object;
    let Some(payment) = payment_by_intent(app, object["id"].as_str()).await? else { return Ok(Effect::none()) };
    let outcome = match event.kind.as_str() {
        "payment_intent.succeeded" => IntentOutcome::Succeeded,
        "payment_intent.canceled" => IntentOutcome::Canceled,
        _ => IntentOutcome::Failed,
    };
    let charge = object["latest_charge"].as_str();
    apply_intent_outcome(app, &payment, outcome, charge, event.created)
}

/// `charge.refunded`: Stripe's running total of refunds on the charge. The total only
/// grows, so the write is conditioned on it growing: a redelivered or older event, or the
/// event for a refund we already recorded, changes nothing.
pub async fn charge_refunded(
    app: &PaymentServices,
    event: &StripeEvent,
    meta: &RequestMeta,
) -> Result<Effect, PaymentError> {
    let object = &event.object;
    let Some(payment) = payment_by_intent(app, object["payment_intent"].as_str()).await? else {
        return Ok(Effect::none());
    };
    if payment.status == PaymentStatus::Released {
        recover_refunds(app, &payment, meta).await?;
        // A refund of the money that came back, made and not yet recorded, is in Stripe's
        // total: recording it counts it, so the total waits (Stripe delivers it again).
        if payment.unsettled_claims.values().any(|way| *way == crate::payments::unsettled::Way::Refund) {
            return Err(PaymentError::Conflict(
                "a refund of the money that came back is unresolved; the charge's total waits for it".into(),
            ));
        }
    }
    let total = match object["amount_refunded"].as_i64() {
        Some(total) => total,
        // An event without the total: only a full refund can be read from it.
        None if object["refunded"].as_bool() == Some(true) => payment.amount,
        None => return Ok(Effect::none()),
    };
    let total = total.min(payment.amount);
    // A charge's total from before a refund failure we applied still counts the failed one.
    if total <= payment.amount_refunded || payment.refund_failed_created.is_some_and(|failed| event.created < failed) {
        return Ok(Effect::none());
    }
    let pk = Payment::key(&payment.payment_id);
    let now = time::rfc3339(time::now());
    let to = match payment.status {
        PaymentStatus::Succeeded if total >= payment.amount => PaymentStatus::Refunded,
        PaymentStatus::Succeeded | PaymentStatus::Releasing | PaymentStatus::Released | PaymentStatus::Refunding => {
            payment.status
        }
        _ => return Ok(Effect::none()),
    };
    let condition = format!(
        "#status = :seen_status AND {} AND (attribute_not_exists(refund_failed_created) OR refund_failed_created <= :created)",
        number_is("amount_refunded", ":seen_refunded", payment.amount_refunded)
    );
    let as_of = payment.refund_total_created.unwrap_or(0).max(event.created);
    let change = Change::new(&pk, "PAYMENT")
        .update("SET #status = :to, amount_refunded = :total, refund_total_created = :as_of, updated_at = :now")
        .condition(&condition)
        .name("#status", "status")
        .value(":created", av::n(event.created))
        .value(":as_of", av::n(as_of))
        .value(":seen_status", av::s(payment.status.as_str()))
        .value(":seen_refunded", av::n(payment.amount_refunded))
        .value(":to", av::s(to.as_str()))
        .value(":total", av::n(total))
        .value(":now", av::s(&now));
    let mut changes = vec![app.table().update(change)?];
    // While `refunding`, this is (most likely) our own refund: the refund route or the
    // reconciler records it with its one audit entry.
    if payment.status == PaymentStatus::Refunding {
        return Ok(Effect { read_dependent: true, ..Effect::new(changes) });
    }
    let amount = total - payment.amount_refunded;
    let mut details = json!({ "payment_id": payment.payment_id, "amount": amount, "amount_refunded": total,
                              "currency": payment.currency, "source": "stripe", "charge": object["id"] });
    match payment.status {
        PaymentStatus::Releasing => details["during_release"] = json!(true),
        // The provider's share was taken back above (`payment.transfer_reversed`).
        PaymentStatus::Released => details["after_release"] = json!(true),
        _ => {}
    }
    let entry = AuditEntry::new("payment.refunded", AuditStatus::Success, &payment.payer_org_id, meta).details(details);
    changes.push(app.audit().put(&entry)?);
    let announce = DomainEvent::new(
        "payment.refunded",
        json!({ "payment_id": payment.payment_id, "amount": amount, "amount_refunded": total,
                "currency": payment.currency }),
    );
    changes.push(outbox::put(app.table(), Message::event(&announce))?);
    Ok(Effect { read_dependent: true, ..Effect::new(changes) })
}

/// `refund.updated`, `charge.refund.updated`, `refund.failed`: a refund that failed or was
/// canceled after it was counted comes off `amount_refunded`, once per refund (Stripe sends
/// all three for one failure, in any order, maybe twice). A `refunded` payment holds money
/// again (`succeeded`); on a `released` one the money came back after the provider was paid
/// the rest, so it shows as `amount_unsettled` for the payer side to release or refund.
///
/// A refund counts once recorded: ours by id, the dashboard's once a charge total taken
/// after it was made and before it failed is recorded (`refund_total_created`). While a
/// release or refund is unresolved the failure waits (Stripe delivers it again), since the
/// amount in flight was computed with the refund counted.
pub async fn refund_changed(
    app: &PaymentServices,
    event: &StripeEvent,
    meta: &RequestMeta,
) -> Result<Effect, PaymentError> {
    let object = &event.object;
    if !matches!(object["status"].as_str(), Some("failed" | "canceled")) {
        // A refund made (or going through) after the release: its reversal.
        if let Some(payment) = payment_by_intent(app, object["payment_intent"].as_str()).await?
            && payment.status == PaymentStatus::Released
        {
            recover_refunds(app, &payment, meta).await?;
        }
        return Ok(Effect::none());
    }
    let (Some(refund_id), Some(amount)) =
        (object["id"].as_str().filter(|id| id.len() <= 255), object["amount"].as_i64().filter(|a| *a > 0))
    else {
        return Ok(Effect::none());
    };
    let Some(payment) = payment_by_intent(app, object["payment_intent"].as_str()).await? else {
        return Ok(Effect::none());
    };
    if payment.failed_refund_ids.iter().any(|id| id == refund_id) {
        return Ok(Effect::none());
    }
    match payment.status {
        PaymentStatus::Succeeded | PaymentStatus::Refunded | PaymentStatus::Released => {}
        PaymentStatus::Refunding | PaymentStatus::Releasing => {
            return Err(PaymentError::Conflict(
                "a release or refund of this payment is unresolved; the refund's failure waits for it".into(),
            ));
        }
        _ => return Ok(Effect::none()),
    }
    let made = object["created"].as_i64().unwrap_or(i64::MAX);
    let counted = payment.refund_ids.iter().any(|id| id == refund_id)
        || payment.refund_total_created.is_some_and(|as_of| as_of >= made && as_of <= event.created);
    let back = if counted { amount.min(payment.amount_refunded) } else { 0 };
    let total = payment.amount_refunded - back;
    // Of a released payment, the money is the provider's again only if the provider was
    // paid less for the refund (or it was recovered from them): then it is unsettled.
    let owed = payment.status == PaymentStatus::Released
        && back > 0
        && crate::payments::unsettled::owed_after_failure(&payment, refund_id);
    let (to, unsettled) = match payment.status {
        PaymentStatus::Released if owed => (PaymentStatus::Released, payment.amount_unsettled + back),
        PaymentStatus::Refunded if total < payment.amount => (PaymentStatus::Succeeded, payment.amount_unsettled),
        status => (status, payment.amount_unsettled),
    };
    let pk = Payment::key(&payment.payment_id);
    let condition = format!(
        "#status = :seen_status AND {} AND {} AND \
         (attribute_not_exists(failed_refund_ids) OR NOT contains(failed_refund_ids, :refund))",
        number_is("amount_refunded", ":seen_refunded", payment.amount_refunded),
        number_is("amount_unsettled", ":seen_unsettled", payment.amount_unsettled),
    );
    let failed_as_of = payment.refund_failed_created.unwrap_or(0).max(event.created);
    let mut update = String::from(
        "SET #status = :to, amount_refunded = :total, amount_unsettled = :unsettled, \
         refund_failed_created = :failed_as_of, updated_at = :now, \
         failed_refund_ids = list_append(if_not_exists(failed_refund_ids, :none), :ids)",
    );
    let mut condition = condition;
    let mut unsettled_values = Vec::new();
    if owed {
        let (clause, also, values) = crate::payments::unsettled::added(&payment, refund_id, back);
        update.push_str(clause);
        condition = format!("{condition} AND {also}");
        unsettled_values = values;
    }
    let mut change = Change::new(&pk, "PAYMENT")
        .update(&update)
        .condition(&condition)
        .name("#status", "status")
        .value(":seen_status", av::s(payment.status.as_str()))
        .value(":seen_refunded", av::n(payment.amount_refunded))
        .value(":seen_unsettled", av::n(payment.amount_unsettled))
        .value(":refund", av::s(refund_id))
        .value(":to", av::s(to.as_str()))
        .value(":total", av::n(total))
        .value(":unsettled", av::n(unsettled))
        .value(":failed_as_of", av::n(failed_as_of))
        .value(":now", av::s(time::rfc3339(time::now())))
        .value(":none", aws_sdk_dynamodb::types::AttributeValue::L(vec![]))
        .value(":ids", aws_sdk_dynamodb::types::AttributeValue::L(vec![av::s(refund_id)]));
    for (name, value) in unsettled_values {
        change = change.value(name, value);
    }
    let mut changes = vec![app.table().update(change)?];
    if payment.status == PaymentStatus::Refunded && to == PaymentStatus::Succeeded {
        // Held again: never for good, so its hold timer starts again (the one it had may have
        // ended while it was refunded).
        changes.push(crate::payments::hold::timer::start(app, &payment.payment_id, time::now())?);
    }
    if back > 0 {
        let failure = RefundFailure {
            refund_id,
            amount: back,
            total,
            unsettled,
            failure_reason: object["failure_reason"].as_str().filter(|r| r.len() <= 64),
            found: "webhook",
        };
        let (entry, messages) = refund_failed_notice(&payment, &failure, meta);
        changes.push(app.audit().put(&entry)?);
        for message in messages {
            changes.push(outbox::put(app.table(), message)?);
        }
    }
    Ok(Effect { read_dependent: true, ..Effect::new(changes) })
}

/// `charge.dispute.*`: the dispute's status holds or frees the funds (see
/// `Payment::dispute_blocks`), in event order.
pub async fn dispute(app: &PaymentServices, event: &StripeEvent, meta: &RequestMeta) -> Result<Effect, PaymentError> {
    let object = &event.object;
    let Some(payment) = payment_by_intent(app, object["payment_intent"].as_str()).await? else {
        return Ok(Effect::none());
    };
    let Some(status) = object["status"].as_str().filter(|s| s.len() <= 40) else { return Ok(Effect::none()) };
    after_transfer(app, &payment, event, status, meta).await?;
    let pk = Payment::key(&payment.payment_id);
    // Lost while held: the cardholder has the money back through the dispute, so the
    // payment holds nothing and ends `disputed` (it blocks no deletion, and there is nothing
    // to release or refund). Conditioned on it still being held.
    let ends = status == "lost" && payment.status == PaymentStatus::Succeeded;
    let mut change = Change::new(&pk, "PAYMENT")
        .update(if ends {
            "SET dispute = :dispute, dispute_id = :id, dispute_event_created = :created, updated_at = :now, \
             #status = :disputed"
        } else {
            "SET dispute = :dispute, dispute_id = :id, dispute_event_created = :created, updated_at = :now"
        })
        .condition(if ends {
            "(attribute_not_exists(dispute_event_created) OR dispute_event_created <= :created) AND #status = :held"
        } else {
            "attribute_not_exists(dispute_event_created) OR dispute_event_created <= :created"
        })
        .value(":dispute", av::s(status))
        .value(":id", av::s(object["id"].as_str().unwrap_or_default()))
        .value(":created", av::n(event.created))
        .value(":now", av::s(time::rfc3339(time::now())));
    if ends {
        change = change
            .name("#status", "status")
            .value(":disputed", av::s(PaymentStatus::Disputed.as_str()))
            .value(":held", av::s(PaymentStatus::Succeeded.as_str()));
    }
    let action = if event.kind == "charge.dispute.closed" { "payment.dispute_closed" } else { "payment.disputed" };
    let entry = AuditEntry::new(action, AuditStatus::Success, &payment.payer_org_id, meta).details(json!({
        "payment_id": payment.payment_id, "dispute_id": object["id"], "dispute_status": status,
        "amount": object["amount"], "reason": object["reason"],
        "payment_status": if ends { PaymentStatus::Disputed } else { payment.status },
    }));
    let mut changes = vec![app.table().update(change)?, app.audit().put(&entry)?];
    if ends {
        let lost = DomainEvent::new(
            "payment.dispute_lost",
            json!({ "payment_id": payment.payment_id, "dispute_id": object["id"], "amount": payment.amount,
                    "currency": payment.currency }),
        );
        changes.push(outbox::put(app.table(), Message::event(&lost))?);
    }
    // Read-dependent when it ends the payment: a lost race (a release claimed it) is
    // computed again rather than skipped as an old event.
    Ok(Effect { read_dependent: ends, ..Effect::new(changes) })
}

/// A dispute's money after the transfer: the provider's share is reversed when Stripe
/// withdraws the funds (or, with `REVERSE_DISPUTES=on_loss`, once the dispute is lost), and
/// paid again when Stripe reinstates them. While a release is unresolved this waits: the
/// delivery fails and Stripe sends it again.
async fn after_transfer(
    app: &PaymentServices,
    payment: &Payment,
    event: &StripeEvent,
    status: &str,
    meta: &RequestMeta,
) -> Result<(), PaymentError> {
    let on_loss = app.settings().recovery.disputes_on_loss;
    let kind = event.kind.as_str();
    let takes = (kind == "charge.dispute.funds_withdrawn" && !on_loss)
        || (kind == "charge.dispute.closed" && status == "lost" && on_loss);
    let gives = kind == "charge.dispute.funds_reinstated";
    if !(takes || gives) {
        return Ok(());
    }
    match payment.status {
        PaymentStatus::Released => {}
        PaymentStatus::Releasing => {
            return Err(PaymentError::Conflict(
                "a release of this payment is unresolved; the dispute's funds wait for it".into(),
            ));
        }
        _ => return Ok(()),
    }
    let Some(dispute_id) = event.object["id"].as_str().filter(|id| id.len() <= 255) else { return Ok(()) };
    let stripe = app.stripe(meta.deadline).await?;
    if gives {
        recovery::repay_dispute(app, &stripe, payment, dispute_id, false, meta).await?;
    } else {
        let amount = event.object["amount"].as_i64().unwrap_or(0).clamp(0, payment.amount);
        let cause = Cause { id: dispute_id.to_owned(), kind: CauseKind::Dispute, amount };
        recovery::recover(app, &stripe, payment, &cause, false, meta).await?;
    }
    Ok(())
}

/// The payment a transfer belongs to: its metadata, else its `transfer_group`.
fn transfer_payment_id(object: &Value) -> Option<&str> {
    object["metadata"]["payment_id"].as_str().or_else(|| object["transfer_group"].as_str()).filter(|id| id.len() <= 64)
}

/// `transfer.created`: a transfer for a payment still `releasing` finishes the release (this
/// is reconciliation arriving by webhook); for one already released it is the record we
/// hold; anything else is logged.
pub async fn transfer_created(
    app: &PaymentServices,
    event: &StripeEvent,
    meta: &RequestMeta,
) -> Result<Effect, PaymentError> {
    let object = &event.object;
    let (Some(payment_id), Some(transfer_id)) = (transfer_payment_id(object), object["id"].as_str()) else {
        return Ok(Effect::none());
    };
    let Some(payment) = Payment::find(app, payment_id).await? else { return Ok(Effect::none()) };
    // A re-payment (a dispute won after its reversal) is recorded by what made it.
    if object["metadata"]["cause"].is_string() {
        return Ok(Effect::none());
    }
    match payment.status {
        PaymentStatus::Releasing => {}
        PaymentStatus::Released if payment.transfer_id.as_deref() == Some(transfer_id) => {
            // Stripe sends this for every release, and retries it until answered: a refund
            // that landed while the release was under way (its amount fixed before) is
            // recovered here.
            recover_refunds(app, &payment, meta).await?;
            return Ok(Effect::none());
        }
        other => {
            tracing::error!(%payment_id, %transfer_id, status = ?other, "a transfer for a payment that is not releasing");
            return Ok(Effect::none());
        }
    }
    let amount = object["amount"]
        .as_i64()
        .or(payment.release_amount)
        .unwrap_or_else(|| payment.provider_share(payment.amount_refunded));
    let pk = Payment::key(payment_id);
    let done = Change::new(&pk, "PAYMENT")
        .update(
            "SET #status = :released, updated_at = :now, transfer_id = :transfer, release_amount = :amount, \
             transfer_amount = :amount REMOVE GSI2PK, GSI2SK, release_key",
        )
        .condition("#status = :releasing")
        .name("#status", "status")
        .value(":released", av::s(PaymentStatus::Released.as_str()))
        .value(":releasing", av::s(PaymentStatus::Releasing.as_str()))
        .value(":now", av::s(time::rfc3339(time::now())))
        .value(":transfer", av::s(transfer_id))
        .value(":amount", av::n(amount));
    let entry = AuditEntry::new("payment.released", AuditStatus::Success, &payment.payer_org_id, meta)
        .target(&payment.provider_user_id)
        .details(json!({ "payment_id": payment_id, "transfer_id": transfer_id, "amount": amount,
                         "currency": payment.currency, "source": "stripe" }));
    // The same for a release this event finishes, against the transfer as Stripe made it.
    let released = Payment {
        status: PaymentStatus::Released,
        transfer_id: Some(transfer_id.to_owned()),
        transfer_amount: Some(amount),
        ..payment.clone()
    };
    recover_refunds(app, &released, meta).await?;
    let mut changes = vec![app.table().update(done)?, app.audit().put(&entry)?];
    changes.extend(crate::payments::release::release_messages(app, &payment, amount, transfer_id).await?);
    Ok(Effect { measure: crate::payments::release::margin_of(&payment), ..Effect::new(changes) })
}

/// `transfer.reversed`: how much of the transfer came back, recorded and audited.
pub async fn transfer_reversed(
    app: &Services,
    event: &StripeEvent,
    meta: &RequestMeta,
) -> Result<Effect, PaymentError> {
    let object = &event.object;
    let Some(payment_id) = transfer_payment_id(object) else { return Ok(Effect::none()) };
    let Some(payment) = Payment::find(app, payment_id).await? else { return Ok(Effect::none()) };
    let Some(reversed) = object["amount_reversed"].as_i64() else { return Ok(Effect::none()) };
    let pk = Payment::key(payment_id);
    let change = Change::new(&pk, "PAYMENT")
        .update("SET transfer_reversed_amount = :reversed, updated_at = :now")
        .condition("attribute_not_exists(transfer_reversed_amount) OR transfer_reversed_amount < :reversed")
        .value(":reversed", av::n(reversed))
        .value(":now", av::s(time::rfc3339(time::now())));
    let entry = AuditEntry::new("payment.transfer_reversed", AuditStatus::Success, &payment.payer_org_id, meta)
        .target(&payment.provider_user_id)
        .details(json!({ "payment_id": payment_id, "transfer_id": object["id"], "amount_reversed": reversed,
                         "currency": payment.currency }));
    Ok(Effect::new(vec![app.table().update(change)?, app.audit().put(&entry)?]))
}
