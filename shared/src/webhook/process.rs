//! What a verified Stripe event does to our state.
//!
//! Each event id is processed once: its marker (`EVENT#{id}`) is written with
//! `attribute_not_exists` in the same transaction as the state change, so a crash mid-way
//! leaves neither and Stripe's retry finishes the work, while a redelivery finds the marker
//! and changes nothing. Events can arrive out of order: every change is conditioned on the
//! event being at least as new (`created`) as the one that last wrote the item, so an older
//! event never overwrites a newer one; such a stale event is marked processed and skipped.

use aws_sdk_dynamodb::types::TransactWriteItem;
use serde::Serialize;
use serde_json::json;

pub use crate::payments::stripe_event::{Effect, StripeEvent};
use crate::{
    caller::RequestMeta,
    notify::DomainEvent,
    outbox::{self, Message},
    payments::PaymentError,
    payments::PaymentServices,
    services::Services,
    store::{Change, StoreError, av},
    time,
};

const EVENT_MEMORY_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Processed,
    /// Seen before: nothing done.
    Duplicate,
    /// Older than what we hold, or about nothing we know: marked, nothing changed.
    Skipped,
    /// A type we don't handle: marked, logged.
    Ignored,
}

/// What handles an event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handler {
    IntentOutcome,
    ChargeRefunded,
    RefundChanged,
    Dispute,
    TransferCreated,
    TransferReversed,
    AccountUpdated,
    SubscriptionChanged,
}

/// Every event type we act on, and who sends it: the platform's endpoint, or the Connect
/// endpoint (connected accounts' events). The deploy guide's two subscription lists are
/// exactly these (a unit test compares them).
const HANDLED: &[(&str, Endpoint, Handler)] = {
    use {Endpoint::*, Handler::*};
    &[
        ("payment_intent.succeeded", Platform, IntentOutcome),
        ("payment_intent.payment_failed", Platform, IntentOutcome),
        ("payment_intent.canceled", Platform, IntentOutcome),
        ("charge.refunded", Platform, ChargeRefunded),
        ("refund.created", Platform, RefundChanged),
        ("refund.updated", Platform, RefundChanged),
        ("refund.failed", Platform, RefundChanged),
        ("charge.refund.updated", Platform, RefundChanged),
        ("charge.dispute.created", Platform, Dispute),
        ("charge.dispute.updated", Platform, Dispute),
        ("charge.dispute.closed", Platform, Dispute),
        ("charge.dispute.funds_withdrawn", Platform, Dispute),
        ("charge.dispute.funds_reinstated", Platform, Dispute),
        ("transfer.created", Platform, TransferCreated),
        ("transfer.reversed", Platform, TransferReversed),
        ("customer.subscription.created", Platform, SubscriptionChanged),
        ("customer.subscription.updated", Platform, SubscriptionChanged),
        ("customer.subscription.deleted", Platform, SubscriptionChanged),
        ("account.updated", Connect, AccountUpdated),
    ]
};

/// The endpoint an event type is subscribed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Platform,
    Connect,
}

/// The effect of `event`, or `None` for a type we don't handle.
async fn effect_of(
    app: &PaymentServices,
    event: &StripeEvent,
    meta: &RequestMeta,
) -> Result<Option<Effect>, PaymentError> {
    use crate::payments::lifecycle as payments;
    let Some(&(_, _, handler)) = HANDLED.iter().find(|(kind, ..)| *kind == event.kind) else {
        return Ok(None);
    };
    Ok(Some(match handler {
        Handler::IntentOutcome => payments::intent_outcome(app, event).await?,
        Handler::ChargeRefunded => payments::charge_refunded(app, event, meta).await?,
        Handler::RefundChanged => payments::refund_changed(app, event, meta).await?,
        Handler::Dispute => payments::dispute(app, event, meta).await?,
        Handler::TransferCreated => payments::transfer_created(app, event, meta).await?,
        Handler::TransferReversed => payments::transfer_reversed(app, event, meta).await?,
        Handler::AccountUpdated => account_updated(app, event, meta).await?,
        Handler::SubscriptionChanged => subscription_changed(app, event, meta).await?,
    }))
}

/// Whether an event shares its `created` second with the one that last wrote the object:
/// then which of the two Stripe made first is unknown, and the object is read from Stripe.
fn same_second(last_written: Option<i64>, event: &StripeEvent) -> bool {
    last_written == Some(event.created)
}

async fn account_updated(
    app: &PaymentServices,
    event: &StripeEvent,
    meta: &RequestMeta,
) -> Result<Effect, PaymentError> {
    let object = &event.object;
    let Some(account) = object["id"].as_str() else { return Ok(Effect::none()) };
    // A connected account's flags come only from the Connect endpoint, about that account
    // itself: the platform endpoint's `account.updated` is about the platform's own account.
    if event.account.as_deref() != Some(account) {
        tracing::warn!(
            account,
            about = event.account.as_deref(),
            "account.updated not from the account itself; skipped"
        );
        return Ok(Effect::none());
    }
    let Some((pk, sk)) = app.table().find_by_gsi1(&format!("ACCOUNT#{account}")).await? else {
        return Ok(Effect::none());
    };
    #[derive(serde::Deserialize)]
    struct Written {
        account_event_created: Option<i64>,
    }
    let written = app.table().get::<Written>(&pk, &sk).await?.and_then(|w| w.account_event_created);
    let (charges, payouts) = if same_second(written, event) {
        let flags = app.stripe(meta.deadline).await?.account_flags(account).await?;
        (flags.charges_enabled, flags.payouts_enabled)
    } else {
        (object["charges_enabled"].as_bool().unwrap_or(false), object["payouts_enabled"].as_bool().unwrap_or(false))
    };
    let change = Change::new(&pk, &sk)
        .update("SET charges_enabled = :charges, payouts_enabled = :payouts, account_event_created = :created, updated_at = :now")
        .condition("attribute_not_exists(account_event_created) OR account_event_created <= :created")
        .value(":charges", av::b(charges))
        .value(":payouts", av::b(payouts))
        .value(":created", av::n(event.created))
        .value(":now", av::s(time::rfc3339(time::now())));
    Ok(Effect::new(vec![app.table().update(change)?]))
}

/// Subscriptions follow Stripe in event order. One we have not stored yet (its event beat
/// the request that started it) is created from the `user_id` in its metadata, so the
/// request then finds it instead of writing an older state over it.
///
/// The price is the first item's (what a plan change moves), else the metadata's. An event
/// that reports the pending price of a plan change, or the end of the subscription, clears
/// the pending note; that choice rests on the note as read, so the write is conditioned on
/// it and a plan change noted meanwhile makes the effect be computed again.
async fn subscription_changed(
    app: &PaymentServices,
    event: &StripeEvent,
    meta: &RequestMeta,
) -> Result<Effect, PaymentError> {
    use crate::payments::subscription::{Subscription, has_ended};
    let object = &event.object;
    let Some(id) = object["id"].as_str().filter(|id| id.starts_with("sub_") && id.len() <= 255) else {
        return Ok(Effect::none());
    };
    let mut status = object["status"].as_str().unwrap_or("unknown").to_owned();
    let mut cancel_at_period_end = object["cancel_at_period_end"].as_bool().unwrap_or(false);
    let mut price_id = object["items"]["data"][0]["price"]["id"]
        .as_str()
        .or_else(|| object["metadata"]["price_id"].as_str())
        .filter(|p| crate::payments::subscription::valid_price_id(p))
        .map(str::to_owned);
    let announce = |status: &str, cancel_at_period_end: bool, price_id: Option<&str>| {
        outbox::put(
            app.table(),
            Message::event(&DomainEvent::new(
                "subscription.updated",
                json!({ "subscription_id": id, "status": status, "cancel_at_period_end": cancel_at_period_end,
                        "price_id": price_id }),
            )),
        )
    };
    let Some((pk, sk)) = app.table().find_by_gsi1(&format!("SUB#{id}")).await? else {
        let (status, price_id) = (status.as_str(), price_id.as_deref());
        let announce = announce(status, cancel_at_period_end, price_id)?;
        let Some(user_id) = object["metadata"]["user_id"].as_str().filter(|u| u.len() <= 64) else {
            tracing::info!(subscription = id, "subscription not ours; skipped");
            return Ok(Effect::none());
        };
        // An erased account's subscriptions end with its Stripe customer (and one being
        // erased is on its way there); their last events must not bring the person back.
        let owner = crate::identity::User::find(app.table(), user_id).await?;
        if owner.is_none_or(|u| u.deletion_scheduled_at.is_some()) {
            tracing::info!(subscription = id, "subscription of an erased account; skipped");
            return Ok(Effect::none());
        }
        let mut item = Subscription::new(id, user_id, price_id.unwrap_or_default(), status, cancel_at_period_end);
        item.sub_event_created = Some(event.created);
        return Ok(Effect::new(vec![app.table().put_new(&item)?, announce]));
    };
    /// What of the stored subscription decides the write.
    #[derive(serde::Deserialize)]
    struct Synced {
        sub_event_created: Option<i64>,
        pending_price_id: Option<String>,
        /// When our last plan change was answered by Stripe: any event created after it
        /// shows the subscription as that change left it (or later), pending or not.
        pending_at: Option<i64>,
        status: Option<String>,
    }
    let Some(stored) = app.table().get::<Synced>(&pk, &sk).await? else { return Ok(Effect::none()) };
    if stored.sub_event_created.is_some_and(|newest| newest > event.created) {
        return Ok(Effect::none());
    }
    if same_second(stored.sub_event_created, event) {
        let at_stripe = app.stripe(meta.deadline).await?.subscription(id).await?;
        status = at_stripe.status;
        cancel_at_period_end = at_stripe.cancel_at_period_end;
        price_id = at_stripe.price_id.filter(|p| crate::payments::subscription::valid_price_id(p)).or(price_id);
    }
    let (status, price_id) = (status.as_str(), price_id.as_deref());
    let announce = announce(status, cancel_at_period_end, price_id)?;
    if stored.status.as_deref().is_some_and(has_ended) && !has_ended(status) {
        return Ok(Effect::none());
    }
    let mut update = "SET #status = :status, cancel_at_period_end = :cape, sub_event_created = :created, \
                      updated_at = :now"
        .to_owned();
    let mut condition = "(attribute_not_exists(sub_event_created) OR sub_event_created <= :created)".to_owned();
    if price_id.is_some() {
        update.push_str(", price_id = :price");
    }
    let after_the_change = stored.pending_at.is_some_and(|at| event.created > at);
    let confirmed = stored
        .pending_price_id
        .as_deref()
        .is_some_and(|p| Some(p) == price_id || has_ended(status) || after_the_change);
    // An ended subscription never comes back (Stripe cannot reactivate one): an older
    // event of the same second must not make it active again.
    if !has_ended(status) {
        condition.push_str(" AND NOT (#status IN (:canceled, :expired))");
    }
    if confirmed {
        update.push_str(" REMOVE pending_price_id, pending_at");
        condition.push_str(" AND pending_price_id = :pending");
    } else if price_id.is_some() {
        condition.push_str(" AND (attribute_not_exists(pending_price_id) OR pending_price_id <> :price)");
    }
    let mut change = Change::new(&pk, &sk)
        .update(&update)
        .condition(&condition)
        .name("#status", "status")
        .value(":status", av::s(status))
        .value(":cape", av::b(cancel_at_period_end))
        .value(":created", av::n(event.created))
        .value(":now", av::s(time::rfc3339(time::now())));
    if let Some(price) = price_id {
        change = change.value(":price", av::s(price));
    }
    if !has_ended(status) {
        change = change.value(":canceled", av::s("canceled")).value(":expired", av::s("incomplete_expired"));
    }
    if let (true, Some(pending)) = (confirmed, &stored.pending_price_id) {
        change = change.value(":pending", av::s(pending));
    }
    Ok(Effect { read_dependent: true, ..Effect::new(vec![app.table().update(change)?, announce]) })
}

fn marker(app: &Services, event: &StripeEvent, outcome: &str) -> Result<TransactWriteItem, StoreError> {
    let now = time::now();
    app.table().put_new(&json!({
        "PK": format!("EVENT#{}", event.id),
        "SK": "EVENT",
        "type": event.kind,
        "created": event.created,
        "outcome": outcome,
        "received_at": time::rfc3339(now),
        "ttl": time::epoch_seconds(now + time::Duration::days(EVENT_MEMORY_DAYS)),
    }))
}

/// How often an effect is recomputed when what it read changed under it.
const EFFECT_ATTEMPTS: usize = 3;

#[tracing::instrument(skip_all, fields(event_id = %event.id, event_type = %event.kind))]
pub async fn process(app: &PaymentServices, event: &StripeEvent, meta: &RequestMeta) -> Result<Outcome, PaymentError> {
    if !event.applies() {
        tracing::info!(account = event.account.as_deref(), "a connected account's event other than account.*; ignored");
        return mark_only(app, event, Outcome::Ignored).await;
    }
    let table = app.table();
    let mut contended = false;
    for _ in 0..EFFECT_ATTEMPTS {
        let Some(effect) = effect_of(app, event, meta).await? else {
            tracing::info!("unhandled Stripe event type; acknowledged");
            return mark_only(app, event, Outcome::Ignored).await;
        };
        if effect.changes.is_empty() {
            return mark_only(app, event, Outcome::Skipped).await;
        }
        contended = effect.read_dependent;
        let mut items = vec![marker(app, event, "processed")?];
        items.extend(effect.changes);
        match table.transact(items).await {
            Ok(()) => {
                if let Some(measure) = &effect.measure {
                    crate::metrics::record(measure);
                }
                return Ok(Outcome::Processed);
            }
            Err(StoreError::TransactionConditionsFailed(failed)) if failed.contains(&0) => {
                return Ok(Outcome::Duplicate);
            }
            // A change's own condition failed: the state moved since it was read (compute
            // again), or the event is older than the state it would change (skipped below).
            Err(StoreError::TransactionConditionsFailed(_)) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    if contended {
        return Err(PaymentError::internal("the state kept changing under the event; Stripe will deliver it again"));
    }
    tracing::info!("event older than the state it would change; skipped");
    mark_only(app, event, Outcome::Skipped).await
}

/// Marks the event seen without changing anything else: `outcome`, or `Duplicate` if it
/// was already marked.
async fn mark_only(app: &Services, event: &StripeEvent, outcome: Outcome) -> Result<Outcome, PaymentError> {
    let label = match outcome {
        Outcome::Ignored => "ignored",
        _ => "skipped",
    };
    match app.table().transact(vec![marker(app, event, label)?]).await {
        Ok(()) => Ok(outcome),
        Err(StoreError::TransactionConditionsFailed(_)) => Ok(Outcome::Duplicate),
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{Endpoint, HANDLED};

    /// The event types named in backticks in `text` (`a.b`, `a.b.c`).
    fn event_types(text: &str) -> BTreeSet<&str> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| t.contains('.') && t.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '.'))
            .collect()
    }

    fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
        let from = text.find(start).unwrap_or_else(|| panic!("deploy.md has {start:?}"));
        let to = from + text[from..].find(end).unwrap_or_else(|| panic!("deploy.md has {end:?} after {start:?}"));
        &text[from..to]
    }

    /// Stripe sends only what an endpoint subscribes to, and a connected account's events only
    /// to a Connect endpoint: a type we handle but the guide leaves out never arrives.
    #[test]
    fn the_deploy_guide_subscribes_each_endpoint_to_exactly_the_types_handled() {
        let guide = include_str!("../../../docs/deploy.md");
        let platform = event_types(between(guide, "1. **The platform", "2. **The Connect"));
        let connect = event_types(between(guide, "2. **The Connect", "These are exactly"));
        let handled = |endpoint: Endpoint| -> BTreeSet<&str> {
            HANDLED.iter().filter(|(_, e, _)| *e == endpoint).map(|(kind, ..)| *kind).collect()
        };
        assert_eq!(platform, handled(Endpoint::Platform), "the platform endpoint's list in docs/deploy.md");
        assert_eq!(connect, handled(Endpoint::Connect), "the Connect endpoint's list in docs/deploy.md");
    }

    #[test]
    fn event_types_are_read_from_backticks_only() {
        let text = "- `charge.refunded`, `a.b_c.d` and `stripe/webhook`, `charges_enabled`, charge.x";
        assert_eq!(event_types(text), BTreeSet::from(["a.b_c.d", "charge.refunded"]));
    }
}
