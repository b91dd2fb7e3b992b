//! What a PaymentIntent's outcome does to its payment: the one rule the webhook's
//! `payment_intent.*` events and the cleanup's check of unpaid payments share, in its own
//! module so that neither needs the other.

use serde_json::json;

use super::stripe_event::Effect;
use crate::{
    notify::{Category, DomainEvent},
    outbox::{self, Message},
    payments::PaymentError,
    payments::{money::format_amount, payment::Payment},
    services::Services,
    store::{Change, av},
    time,
};

/// What became of a PaymentIntent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntentOutcome {
    Succeeded,
    /// An attempt failed; the payer may still pay it (another card), so it stays watched.
    Failed,
    Canceled,
}

/// The change a PaymentIntent's outcome makes to its payment, as of `created` (the event's
/// time, or when the cleanup asked Stripe): a webhook and the cleanup share it, and the
/// older of the two changes nothing.
pub(crate) fn apply_intent_outcome(
    app: &Services,
    payment: &Payment,
    outcome: IntentOutcome,
    charge: Option<&str>,
    created: i64,
) -> Result<Effect, PaymentError> {
    let pk = Payment::key(&payment.payment_id);
    let succeeded = outcome == IntentOutcome::Succeeded;
    let (to, from): (&str, &[&str]) = match outcome {
        IntentOutcome::Succeeded => ("succeeded", &["requires_payment", "failed"]),
        IntentOutcome::Failed => ("failed", &["requires_payment"]),
        IntentOutcome::Canceled => ("canceled", &["requires_payment", "failed"]),
    };
    let charge = charge.filter(|c| c.starts_with("ch_") || c.starts_with("py_"));
    // A failed payment stays on the awaiting-payment queue until it succeeds or is canceled
    // (a payer who then pays with another card, and whose webhook is lost, is found there);
    // the other outcomes leave it (the release or refund queues come later, from
    // `succeeded`).
    let queue = if outcome == IntentOutcome::Failed { "GSI2PK = :queue, GSI2SK = :now" } else { "" };
    let mut update = String::from("SET #status = :to, stripe_event_created = :created, updated_at = :now");
    if charge.is_some() {
        update.push_str(", stripe_charge_id = :charge");
    }
    if queue.is_empty() {
        update.push_str(" REMOVE GSI2PK, GSI2SK");
    } else {
        update.push_str(", ");
        update.push_str(queue);
    }
    let condition = "#status IN (:from0, :from1) AND \
                     (attribute_not_exists(stripe_event_created) OR stripe_event_created <= :created)";
    let now = time::rfc3339(time::now());
    let mut change = Change::new(&pk, "PAYMENT")
        .update(&update)
        .condition(condition)
        .name("#status", "status")
        .value(":to", av::s(to))
        .value(":from0", av::s(from[0]))
        .value(":from1", av::s(*from.last().expect("one at least")))
        .value(":created", av::n(created))
        .value(":now", av::s(&now));
    if let Some(charge) = charge {
        change = change.value(":charge", av::s(charge));
    }
    if !queue.is_empty() {
        change = change.value(":queue", av::s(crate::payments::payment::AWAITING_PAYMENT_QUEUE));
    }
    let mut changes = vec![app.table().update(change)?];
    if succeeded {
        let event = DomainEvent::new(
            "payment.succeeded",
            json!({ "payment_id": payment.payment_id, "amount": payment.amount, "currency": payment.currency }),
        );
        changes.push(outbox::put(app.table(), Message::event(&event))?);
        let receipt = Message::push(
            &payment.payer_user_id,
            Category::Payments,
            "Payment confirmed",
            format!("Your payment of {} went through.", format_amount(payment.amount, &payment.currency)),
            json!({ "payment_id": payment.payment_id, "event": "payment.succeeded" }),
        );
        changes.push(outbox::put(app.table(), receipt)?);
        // Never held for good: the hold's timer starts with the success.
        changes.push(crate::payments::hold::timer::start(app, &payment.payment_id, time::now())?);
    }
    if outcome == IntentOutcome::Canceled {
        let event = DomainEvent::new(
            "payment.canceled",
            json!({ "payment_id": payment.payment_id, "amount": payment.amount, "currency": payment.currency }),
        );
        changes.push(outbox::put(app.table(), Message::event(&event))?);
    }
    Ok(Effect::new(changes))
}
