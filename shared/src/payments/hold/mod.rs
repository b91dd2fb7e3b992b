//! Money is never held for good: a payment held `HOLD_MAX_DAYS` without release is refunded
//! to the payer by the cleanup (`payment.auto_refunded`), and both sides are told 7 days
//! before.
//!
//! Each payment that succeeds gets a hold timer (`HOLD#{payment_id}`) on the `HOLD` queue,
//! written with the success itself, its `GSI2SK` the time its next step is due: first the
//! warning, then the refund. The cleanup takes due timers with a lease (the due time moved an
//! hour on, so overlapping runs take one once) and looks at the payment: still held, it warns
//! or refunds it in full through the refund route's own machinery; released, refunded or
//! otherwise ended, the timer is done; mid-release or mid-refund, it waits.

use serde_json::json;

use super::{
    payment::{Payment, PaymentStatus},
    refund::{RefundOutcome, refund_held},
};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    notify::{Category, DomainEvent},
    outbox::{self, Message},
    payments::PaymentError,
    payments::PaymentServices,
    services::Services,
    store::{Change, StoreError, av},
    time,
};

pub mod timer;

pub use self::timer::{HOLD_QUEUE, WARNING, start};
use self::timer::{SK, Step, Timer};

/// How long a taken timer is left before another run may take it again.
const LEASE: time::Duration = time::Duration::hours(1);

/// What one run did with the timers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub warned: u32,
    pub auto_refunded: u32,
    /// Timers whose payment was mid-release, mid-refund or disputed, or whose refund is
    /// unresolved at Stripe: the next run looks again.
    pub waiting: u32,
    pub failed: u32,
}

/// The due timers, one page per run.
pub async fn run(app: &PaymentServices, meta: &RequestMeta, out_of_time: impl Fn() -> bool) -> Held {
    let mut held = Held::default();
    let now = time::rfc3339(time::now());
    let due = match app.table().queue_due(HOLD_QUEUE, &now, 25).await {
        Ok(due) => due,
        Err(error) => {
            tracing::error!(%error, "cannot list hold timers");
            held.failed += 1;
            return held;
        }
    };
    for pk in due {
        if out_of_time() {
            break;
        }
        match step(app, &pk, &now, meta).await {
            Ok(Some(Stepped::Warned)) => held.warned += 1,
            Ok(Some(Stepped::Refunded)) => held.auto_refunded += 1,
            Ok(Some(Stepped::Waiting)) => held.waiting += 1,
            Ok(Some(Stepped::Done) | None) => {}
            Err(error) => {
                tracing::error!(%error, %pk, "hold timer not handled; the next run tries again");
                held.failed += 1;
            }
        }
    }
    held
}

enum Stepped {
    Warned,
    Refunded,
    Waiting,
    Done,
}

/// One due timer, leased. `None`: another run holds it.
async fn step(app: &PaymentServices, pk: &str, now: &str, meta: &RequestMeta) -> Result<Option<Stepped>, PaymentError> {
    let later = time::rfc3339(time::now() + LEASE);
    let Some(timer) = app.table().lease_queued::<Timer>(pk, SK, HOLD_QUEUE, now, &later).await? else {
        return Ok(None);
    };
    let Some(payment) = Payment::find(app, &timer.payment_id).await? else {
        finish(app, pk).await?;
        return Ok(Some(Stepped::Done));
    };
    match payment.status {
        PaymentStatus::Succeeded if !payment.dispute_blocks() => {}
        // Settled at Stripe through the dispute, or moving now: looked at again later.
        PaymentStatus::Succeeded | PaymentStatus::Releasing | PaymentStatus::Refunding => {
            return Ok(Some(Stepped::Waiting));
        }
        _ => {
            finish(app, pk).await?;
            return Ok(Some(Stepped::Done));
        }
    }
    let refund_at = ::time::OffsetDateTime::from_unix_timestamp(timer.held_since).map_err(PaymentError::internal)?
        + time::Duration::days(app.settings().hold_max_days);
    match timer.step {
        Step::Warn => {
            warn(app, &payment, pk, refund_at).await?;
            Ok(Some(Stepped::Warned))
        }
        Step::Refund => match auto_refund(app, payment.clone(), "hold_max_days", meta).await {
            Ok(true) => {
                finish(app, pk).await?;
                Ok(Some(Stepped::Refunded))
            }
            // Unresolved at Stripe: reconciliation finishes it; the timer then finds it ended.
            Ok(false) => Ok(Some(Stepped::Waiting)),
            Err(error) => {
                tracing::warn!(%error, payment_id = %payment.payment_id, "auto-refund refused; tried again later");
                Ok(Some(Stepped::Waiting))
            }
        },
    }
}

/// Refunds all that is left of a held payment to the payer, as the platform (no actor),
/// audited `payment.auto_refunded` with `why` (`hold_max_days`, `erasure`). `Ok(false)`: the
/// refund's outcome at Stripe is unknown (reconciliation finishes it).
pub(crate) async fn auto_refund(
    app: &PaymentServices,
    payment: Payment,
    why: &str,
    meta: &RequestMeta,
) -> Result<bool, PaymentError> {
    let before = payment.amount_refunded;
    let (org, payer, payment_id, currency) = (
        payment.payer_org_id.clone(),
        payment.payer_user_id.clone(),
        payment.payment_id.clone(),
        payment.currency.clone(),
    );
    match refund_held(app, payment, None, None, None, Vec::new(), None, meta).await? {
        RefundOutcome::Done(done) => {
            let entry = AuditEntry::new("payment.auto_refunded", AuditStatus::Success, &org, meta)
                .target(&payer)
                .details(json!({ "payment_id": payment_id, "amount": done.amount_refunded - before,
                                 "amount_refunded": done.amount_refunded, "currency": currency, "why": why,
                                 "hold_max_days": app.settings().hold_max_days }));
            app.audit().record_or_log(&entry).await;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Tells both sides the payment will be refunded at `refund_at`, and moves the timer to the
/// refund, in one transaction.
async fn warn(
    app: &Services,
    payment: &Payment,
    pk: &str,
    refund_at: ::time::OffsetDateTime,
) -> Result<(), PaymentError> {
    let table = app.table();
    let date = refund_at.date().to_string();
    let amount = super::money::format_amount(payment.amount - payment.amount_refunded, &payment.currency);
    let next = Change::new(pk, SK)
        .update("SET step = :refund, GSI2SK = :at")
        .condition("step = :warn")
        .value(":refund", av::s("refund"))
        .value(":warn", av::s("warn"))
        .value(":at", av::s(time::rfc3339(refund_at)));
    let event = DomainEvent::new(
        "payment.auto_refund_scheduled",
        json!({ "payment_id": payment.payment_id, "refund_at": time::rfc3339(refund_at),
                "amount": payment.amount - payment.amount_refunded, "currency": payment.currency }),
    );
    let data = json!({ "payment_id": payment.payment_id, "event": "payment.auto_refund_scheduled" });
    let items = vec![
        table.update(next)?,
        outbox::put(table, Message::event(&event))?,
        outbox::put(
            table,
            Message::push(
                &payment.payer_user_id,
                Category::Payments,
                "Your payment will be refunded",
                format!("{amount} has not been released; it will be refunded to you on {date}."),
                data.clone(),
            ),
        )?,
        outbox::put(
            table,
            Message::push(
                &payment.provider_user_id,
                Category::Payments,
                "A payment will be refunded",
                format!("{amount} held for you will be refunded to the payer on {date} unless it is released."),
                data,
            ),
        )?,
    ];
    match table.transact(items).await {
        Ok(()) | Err(StoreError::TransactionConditionsFailed(_)) => Ok(()),
        Err(other) => Err(other.into()),
    }
}

/// The timer is done: off the queue (kept, small, as the record that it ran).
async fn finish(app: &Services, pk: &str) -> Result<(), PaymentError> {
    let done = Change::new(pk, SK).update("REMOVE GSI2PK, GSI2SK").condition("attribute_exists(PK)");
    match app.table().update_item(done).await {
        Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
        Err(other) => Err(other.into()),
    }
}
