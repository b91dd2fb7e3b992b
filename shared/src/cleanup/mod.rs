//! The scheduled cleanup (EventBridge, hourly): erases accounts whose grace has passed,
//! settles payments stuck mid-release or mid-refund, and asks Stripe about payments whose
//! outcome webhook never came, delivers messages the stream gave up on, and removes expired
//! items TTL has not got to. Every piece of work is claimed
//! conditionally, so overlapping runs never do one thing twice; work stops while there is
//! still time before the invocation's deadline, and the rest waits for the next run. A run
//! ends with one summary log line and the same counts as CloudWatch metrics (EMF).

mod drain;
pub mod erasure;
pub mod expired;
pub mod undelivered;

use std::{ops::Deref, time::Duration};

use serde::Serialize;

use self::drain::Due;
use crate::{
    caller::RequestMeta,
    notify::Channels,
    payments::{
        PaymentServices,
        payment::{REFUNDING_QUEUE, RELEASING_QUEUE},
        reconcile::{self, Reconciled},
    },
};

/// What the cleanup runs on: the payment services (with the account code's and the
/// services every function has) and the notification channels. The cleanup function's
/// `App` is one.
pub trait CleanupServices: Channels + Deref<Target = PaymentServices> {}

impl<T: Channels + Deref<Target = PaymentServices>> CleanupServices for T {}

/// Left unused at the end of a run: what one more item could take, plus the summary.
pub const STOP_BEFORE_DEADLINE: Duration = Duration::from_secs(30);

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub accounts_erased: u32,
    pub accounts_skipped: u32,
    pub accounts_contended: u32,
    pub accounts_failed: u32,
    pub payments_released: u32,
    pub payments_settled: u32,
    pub payments_returned: u32,
    pub payments_pending: u32,
    pub payments_failed: u32,
    /// Unpaid payments whose outcome was recovered from Stripe (a lost webhook).
    pub payments_recovered: u32,
    /// Unpaid payments still waiting for the payer at Stripe.
    pub payments_awaiting: u32,
    /// Unpaid payments canceled: abandoned for `PAYMENT_ABANDON_DAYS` (their PaymentIntent
    /// canceled now), or canceled at Stripe.
    pub payments_canceled: u32,
    /// Unpaid payments whose outcome could not be asked of Stripe (the next run retries).
    pub payments_unchecked: u32,
    /// Refused reversals (losses after a transfer) recovered on their daily retry.
    pub transfers_recovered: u32,
    /// Refused reversals still refused, given up on after `REVERSAL_RETRY_DAYS`, or not
    /// retried for a fault: money the platform carries, alarmed.
    pub transfers_unrecovered: u32,
    /// Payments held `HOLD_MAX_DAYS` without release, refunded to the payer now.
    pub payments_auto_refunded: u32,
    /// Held payments whose auto-refund is 7 days away, both sides told now.
    pub payments_hold_warned: u32,
    /// Released payments with money that came back (a refund failed after the release) left
    /// unsettled for 7 days or more: counted in `PaymentsUnsettled` daily until settled.
    pub payments_unsettled_left: u32,
    /// Settlements of such money whose outcome had been unknown, finished now.
    pub payments_unsettled_finished: u32,
    /// Messages the stream gave up on, delivered now.
    pub outbox_redelivered: u32,
    /// Messages that failed again (the next run retries).
    pub outbox_failed: u32,
    /// Messages undelivered for days, given up on: what the outbox alarm watches.
    pub outbox_abandoned: u32,
    /// Expired items removed (TTL had not yet).
    pub expired_removed: u32,
    /// Expired items already gone, or renewed, when their turn came.
    pub expired_kept: u32,
    /// Expired items that could not be removed this run.
    pub expired_failed: u32,
    /// Whether the run stopped for its deadline with work left.
    pub stopped_early: bool,
}

impl Summary {
    /// Payments stuck mid-release or mid-refund that the run could not settle, and money left
    /// unsettled after a release for 7 days.
    pub fn unsettled(&self) -> u32 {
        self.payments_pending + self.payments_failed + self.payments_unsettled_left
    }

    /// The counts the alarms watch, as metrics; every count rides along as a property, for
    /// Logs Insights.
    pub fn metrics(&self) -> ([(&'static str, u64); 3], serde_json::Map<String, serde_json::Value>) {
        let counts = [
            ("PaymentsUnsettled", u64::from(self.unsettled())),
            ("PaymentsUnrecovered", u64::from(self.payments_unchecked + self.transfers_unrecovered)),
            ("OutboxAbandoned", u64::from(self.outbox_abandoned)),
        ];
        let serde_json::Value::Object(mut properties) = serde_json::to_value(self).expect("counts serialise") else {
            unreachable!("a summary serialises as an object")
        };
        properties.insert("stopped_early".to_owned(), serde_json::json!(u8::from(self.stopped_early)));
        (counts, properties)
    }
}

/// One cleanup run, within `meta.deadline`.
pub async fn run(app: &dyn CleanupServices, meta: &RequestMeta) -> Summary {
    let mut summary = Summary::default();
    let out_of_time = || meta.deadline.remaining().is_some_and(|left| left < STOP_BEFORE_DEADLINE);

    // Erasure: accounts another run holds (or that keep contending) wait for the next run.
    let mut due = Due::new(|limit| erasure::due(app.table(), limit));
    while let Some(next) = due.next().await {
        if out_of_time() {
            summary.stopped_early = true;
            break;
        }
        let user_id = match next {
            Ok(user_id) => user_id,
            Err(error) => {
                tracing::error!(%error, "cannot list accounts due for erasure");
                summary.accounts_failed += 1;
                break;
            }
        };
        match erasure::erase(app, &user_id, meta, meta.deadline).await {
            Ok(erasure::Erased::Erased) => summary.accounts_erased += 1,
            Ok(erasure::Erased::Skipped) => summary.accounts_skipped += 1,
            Ok(erasure::Erased::Contended) => summary.accounts_contended += 1,
            Err(error) => {
                tracing::error!(%error, %user_id, "erasure failed; the next run resumes it");
                summary.accounts_failed += 1;
            }
        }
    }

    // Payments stuck mid-release or mid-refund.
    for queue in [RELEASING_QUEUE, REFUNDING_QUEUE] {
        let mut due = Due::new(|limit| reconcile::due(app, queue, limit));
        while let Some(next) = due.next().await {
            if out_of_time() {
                summary.stopped_early = true;
                break;
            }
            let payment_id = match next {
                Ok(payment_id) => payment_id,
                Err(error) => {
                    tracing::error!(%error, queue, "cannot list payments to reconcile");
                    summary.payments_failed += 1;
                    break;
                }
            };
            match Box::pin(reconcile::payment_by_id(app, &payment_id, meta)).await {
                Ok(Reconciled::Released { .. }) => summary.payments_released += 1,
                Ok(Reconciled::Settled) => summary.payments_settled += 1,
                Ok(Reconciled::ReturnedToSucceeded(_)) => summary.payments_returned += 1,
                Ok(Reconciled::Pending) => summary.payments_pending += 1,
                Ok(Reconciled::NotDue) => {}
                Err(error) => {
                    tracing::error!(%error, %payment_id, "reconciliation failed; the next run retries");
                    summary.payments_failed += 1;
                }
            }
        }
    }

    // Payments whose payer paid (or gave up) at Stripe without the webhook telling us.
    let mut due = Due::new(|limit| reconcile::awaiting_payment_due(app, limit));
    while let Some(next) = due.next().await {
        if out_of_time() {
            summary.stopped_early = true;
            break;
        }
        let payment_id = match next {
            Ok(payment_id) => payment_id,
            Err(error) => {
                tracing::error!(%error, "cannot list unpaid payments");
                summary.payments_unchecked += 1;
                break;
            }
        };
        match reconcile::awaiting_payment(app, &payment_id, meta).await {
            Ok(reconcile::Awaited::Recorded) => summary.payments_recovered += 1,
            Ok(reconcile::Awaited::StillWaiting) => summary.payments_awaiting += 1,
            Ok(reconcile::Awaited::Canceled) => summary.payments_canceled += 1,
            Ok(reconcile::Awaited::NotDue) => {}
            Err(error) => {
                tracing::error!(%error, %payment_id, "unpaid payment not checked; the next run retries");
                summary.payments_unchecked += 1;
            }
        }
    }

    // Losses after a transfer that Stripe refused to reverse, retried daily.
    let retried = crate::payments::recovery::retry_due(app, meta, out_of_time).await;
    summary.transfers_recovered = retried.recovered;
    summary.transfers_unrecovered = retried.still_refused + retried.abandoned + retried.failed;

    // Money never held for good.
    let held = crate::payments::hold::run(app, meta, out_of_time).await;
    summary.payments_auto_refunded = held.auto_refunded;
    summary.payments_hold_warned = held.warned;
    summary.payments_failed += held.failed;

    let watched = crate::payments::unsettled::run(app, meta, &out_of_time).await;
    summary.payments_unsettled_left = watched.left;
    summary.payments_unsettled_finished = watched.settled;
    summary.payments_failed += watched.failed;

    let redelivered = undelivered::redeliver(app, out_of_time).await;
    summary.outbox_redelivered = redelivered.delivered;
    summary.outbox_failed = redelivered.failed;
    summary.outbox_abandoned = redelivered.abandoned;
    summary.stopped_early |= redelivered.stopped_early;

    // Last, as the least urgent: reads already ignore what has expired.
    let swept = expired::sweep(app.table(), crate::time::now().unix_timestamp(), out_of_time).await;
    summary.expired_removed = swept.removed;
    summary.expired_kept = swept.kept;
    summary.expired_failed = swept.failed;
    summary.stopped_early |= swept.stopped_early;

    tracing::info!(summary = ?summary, "cleanup run finished");
    if let Some(metrics) = crate::metrics::Metrics::get() {
        let (counts, properties) = summary.metrics();
        metrics.emit(&counts, properties);
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alarmed_counts_are_metrics_and_every_count_a_property() {
        let summary = Summary {
            accounts_erased: 2,
            payments_pending: 1,
            payments_failed: 2,
            payments_unchecked: 3,
            transfers_unrecovered: 1,
            outbox_abandoned: 5,
            stopped_early: true,
            ..Summary::default()
        };
        let (counts, properties) = summary.metrics();
        assert_eq!(counts, [("PaymentsUnsettled", 3), ("PaymentsUnrecovered", 4), ("OutboxAbandoned", 5)]);
        assert_eq!(properties["accounts_erased"], 2);
        assert_eq!(properties["stopped_early"], 1, "a flag is a 0/1 property, not a metric");
    }
}
