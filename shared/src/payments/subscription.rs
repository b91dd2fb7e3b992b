//! Subscriptions: started through Stripe Billing, listed as last synced (the webhook keeps
//! them current), moved to another price (a plan change), cancelled now or at the end of the
//! period.
//!
//! Item: `USER#{user_id}` / `SUBSCRIPTION#{id}`, with `GSI1PK = SUB#{id}` so the webhook
//! finds it by Stripe id.
//!
//! A plan change is made at Stripe at once, but the record's `price_id` is Stripe's as the
//! webhook last reported it, in event order: the change only notes the new price as
//! `pending_price_id`, and the `customer.subscription.updated` event that carries it sets
//! `price_id` and clears the note.

use serde::{Deserialize, Serialize};
use serde_json::json;

pub use super::proration::Proration;
use super::{gateway::SubscriptionState, payment::customer_for};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::{Role, auth::Principal},
    invalid::FieldError,
    notify::DomainEvent,
    payments::PaymentError,
    payments::PaymentServices,
    services::Services,
    store::{Change, av, keys},
    time,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub subscription_id: String,
    pub user_id: String,
    pub price_id: String,
    pub status: String,
    pub cancel_at_period_end: bool,
    pub created_at: String,
    pub updated_at: String,
    #[serde(rename = "GSI1PK")]
    pub gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    pub gsi1sk: String,
    /// `created` (epoch seconds) of the newest state written: a Stripe event's, or the time
    /// of our own call for what Stripe answered it. Older states never overwrite it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_event_created: Option<i64>,
    /// The price of a plan change Stripe made that no event has reported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_price_id: Option<String>,
}

pub fn sort_key(subscription_id: &str) -> String {
    format!("SUBSCRIPTION#{subscription_id}")
}

impl Subscription {
    pub fn new(subscription_id: &str, user_id: &str, price_id: &str, status: &str, cancel_at_period_end: bool) -> Self {
        let now = time::rfc3339(time::now());
        Self {
            pk: keys::user(user_id),
            sk: sort_key(subscription_id),
            subscription_id: subscription_id.to_owned(),
            user_id: user_id.to_owned(),
            price_id: price_id.to_owned(),
            status: status.to_owned(),
            cancel_at_period_end,
            created_at: now.clone(),
            updated_at: now,
            gsi1pk: format!("SUB#{subscription_id}"),
            gsi1sk: "SUBSCRIPTION".into(),
            sub_event_created: None,
            pending_price_id: None,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({
            "subscription_id": self.subscription_id,
            "status": self.status,
            "price_id": self.price_id,
            "pending_price_id": self.pending_price_id,
            "cancel_at_period_end": self.cancel_at_period_end,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

pub fn valid_price_id(price_id: &str) -> bool {
    price_id.starts_with("price_")
        && price_id.len() <= 255
        && price_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether Stripe is done with a subscription in `status`: it can no longer change plan.
pub fn has_ended(status: &str) -> bool {
    matches!(status, "canceled" | "incomplete_expired")
}

/// The body of `PATCH /subscriptions/{id}`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChange {
    pub price_id: String,
    pub proration: Proration,
}

impl PlanChange {
    /// Every problem reported at once.
    pub fn parse(price_id: Option<String>, proration_behavior: Option<String>) -> Result<Self, PaymentError> {
        let mut errors = Vec::new();
        match &price_id {
            None => errors.push(FieldError::new("price_id", "is required")),
            Some(p) if !valid_price_id(p) => {
                errors.push(FieldError::new("price_id", "must be a Stripe price id (price_...)"));
            }
            Some(_) => {}
        }
        let proration = match proration_behavior.as_deref().map(Proration::parse) {
            None => Proration::default(),
            Some(Some(proration)) => proration,
            Some(None) => {
                errors.push(FieldError::new("proration_behavior", "must be create_prorations, none or always_invoice"));
                Proration::default()
            }
        };
        match price_id {
            Some(price_id) if errors.is_empty() => Ok(Self { price_id, proration }),
            _ => Err(PaymentError::Validation(errors)),
        }
    }
}

/// Starts a subscription; `request_key` makes a retried request reuse the same Stripe call.
pub async fn start(
    app: &PaymentServices,
    principal: &Principal,
    price_id: &str,
    request_key: &str,
    meta: &RequestMeta,
) -> Result<(Subscription, Option<String>), PaymentError> {
    let gateway = app.stripe(meta.deadline).await?;
    let customer = customer_for(app, &principal.user, &gateway).await?;
    let state: SubscriptionState =
        gateway.create_subscription(request_key, &customer, price_id, principal.user_id()).await?;
    let subscription =
        Subscription::new(&state.id, principal.user_id(), price_id, &state.status, state.cancel_at_period_end);
    let audit = AuditEntry::new("subscription.created", AuditStatus::Success, principal.org_id(), meta)
        .actor(principal.user_id())
        .details(json!({ "subscription_id": state.id, "price_id": price_id }));
    let table = app.table();
    let items = vec![table.put_new(&subscription)?, app.audit().put(&audit)?, announce(table, &subscription)?];
    match table.transact(items).await {
        Ok(()) => Ok((subscription, state.client_secret)),
        // A retried request with the same key got the same subscription, or its webhook got
        // here first: what is stored is as new or newer than Stripe's answer to the create.
        Err(crate::store::StoreError::TransactionConditionsFailed(_)) => {
            let stored =
                table.get::<Subscription>(&subscription.pk, &subscription.sk).await?.ok_or(PaymentError::NotFound)?;
            Ok((stored, state.client_secret))
        }
        Err(other) => Err(other.into()),
    }
}

pub async fn list(app: &Services, principal: &Principal) -> Result<Vec<Subscription>, PaymentError> {
    let table = app.table();
    let out = table
        .client()
        .query()
        .table_name(table.name())
        .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
        .expression_attribute_values(":pk", av::s(keys::user(principal.user_id())))
        .expression_attribute_values(":prefix", av::s("SUBSCRIPTION#"))
        .send()
        .await
        .map_err(|e| PaymentError::internal(aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
    out.items
        .unwrap_or_default()
        .into_iter()
        .map(|item| serde_dynamo::from_item(item).map_err(PaymentError::internal))
        .collect()
}

pub async fn cancel(
    app: &PaymentServices,
    principal: &Principal,
    subscription_id: &str,
    at_period_end: bool,
    meta: &RequestMeta,
) -> Result<Subscription, PaymentError> {
    let table = app.table();
    let pk = keys::user(principal.user_id());
    let sk = sort_key(subscription_id);
    let existing = table.get::<Subscription>(&pk, &sk).await?.ok_or(PaymentError::NotFound)?;
    let gateway = app.stripe(meta.deadline).await?;
    let state = gateway.cancel_subscription(&existing.subscription_id, at_period_end).await?;
    let now = time::rfc3339(time::now());
    let audit = AuditEntry::new("subscription.canceled", AuditStatus::Success, principal.org_id(), meta)
        .actor(principal.user_id())
        .details(json!({ "subscription_id": subscription_id, "at_period_end": at_period_end }));
    // Stripe's answer is the state as of now; a webhook that already wrote a newer one wins.
    let as_of = time::now().unix_timestamp();
    let update = table.update(
        Change::new(&pk, &sk)
            .update(
                "SET #status = :status, cancel_at_period_end = :cape, updated_at = :now, sub_event_created = :as_of",
            )
            .condition("attribute_not_exists(sub_event_created) OR sub_event_created <= :as_of")
            .name("#status", "status")
            .value(":status", av::s(&state.status))
            .value(":cape", av::b(state.cancel_at_period_end))
            .value(":now", av::s(&now))
            .value(":as_of", av::n(as_of)),
    )?;
    let cancelled = Subscription {
        status: state.status.clone(),
        cancel_at_period_end: state.cancel_at_period_end,
        ..existing.clone()
    };
    match table.transact(vec![update, app.audit().put(&audit)?, announce(table, &cancelled)?]).await {
        Ok(()) => {}
        // A newer state from Stripe is stored (and was announced by its webhook).
        Err(crate::store::StoreError::TransactionConditionsFailed(_)) => app.audit().record_or_log(&audit).await,
        Err(other) => return Err(other.into()),
    }
    table.get::<Subscription>(&pk, &sk).await?.ok_or(PaymentError::NotFound)
}

/// Moves the caller's subscription to another price. Stripe is asked for the subscription
/// first: a plan change replaces its item's price, which takes the item's id, and a
/// subscription Stripe has ended (while our record waits for its event) is 409 too. Then the
/// item is moved, with a fresh idempotency key (the same change asked twice is two changes to
/// Stripe, as it is to the caller) reused by the gateway's retries. The record notes the
/// pending price with the audit entry, unless the webhook already reported it and nothing
/// else pends.
pub async fn change_plan(
    app: &PaymentServices,
    principal: &Principal,
    subscription_id: &str,
    change: &PlanChange,
    meta: &RequestMeta,
) -> Result<Subscription, PaymentError> {
    if principal.role() == Role::Viewer {
        return Err(PaymentError::Forbidden);
    }
    let table = app.table();
    let pk = keys::user(principal.user_id());
    let sk = sort_key(subscription_id);
    let existing = table.get::<Subscription>(&pk, &sk).await?.ok_or(PaymentError::NotFound)?;
    let ended = || PaymentError::Conflict("the subscription has ended; start a new one".into());
    if has_ended(&existing.status) {
        return Err(ended());
    }
    // One change at a time: the database, not the order of Stripe's answers, decides which
    // of two concurrent requests asks Stripe. The lease ends with the request, or by itself.
    let lease_until = time::now().unix_timestamp() + PLAN_CHANGE_LEASE_SECONDS;
    let claimed = table
        .update_item(
            Change::new(&pk, &sk)
                .update("SET plan_change_until = :until")
                .condition("attribute_not_exists(plan_change_until) OR plan_change_until < :now")
                .value(":until", av::n(lease_until))
                .value(":now", av::n(time::now().unix_timestamp())),
        )
        .await;
    match claimed {
        Ok(_) => {}
        Err(crate::store::StoreError::ConditionFailed) => {
            return Err(PaymentError::Conflict("another plan change of this subscription is in progress".into()));
        }
        Err(other) => return Err(other.into()),
    }
    let changed = Box::pin(ask_stripe_and_note(app, principal, &existing, change, meta)).await;
    let release = Change::new(&pk, &sk)
        .update("REMOVE plan_change_until")
        .condition("plan_change_until = :until")
        .value(":until", av::n(lease_until));
    if let Err(error) = table.update_item(release).await {
        tracing::info!(%error, "plan change lease left to expire");
    }
    changed?;
    table.get::<Subscription>(&pk, &sk).await?.ok_or(PaymentError::NotFound)
}

/// How long a plan change holds its subscription: longer than a request can run.
const PLAN_CHANGE_LEASE_SECONDS: i64 = 60;

/// The plan change itself, under the lease: Stripe first, then the note.
async fn ask_stripe_and_note(
    app: &PaymentServices,
    principal: &Principal,
    existing: &Subscription,
    change: &PlanChange,
    meta: &RequestMeta,
) -> Result<(), PaymentError> {
    let table = app.table();
    let pk = keys::user(principal.user_id());
    let sk = sort_key(&existing.subscription_id);
    let ended = || PaymentError::Conflict("the subscription has ended; start a new one".into());
    let gateway = app.stripe(meta.deadline).await?;
    let current = gateway.subscription(&existing.subscription_id).await?;
    if has_ended(&current.status) {
        return Err(ended());
    }
    // Already on that price at Stripe (a retry after an answer that was lost, say): asking
    // again would be a second change, so only the note is made.
    if current.price_id.as_deref() != Some(change.price_id.as_str()) {
        let item = current.item_id.ok_or_else(|| PaymentError::internal("a Stripe subscription without items"))?;
        let key = format!("plan-change:{}:{}", existing.subscription_id, uuid::Uuid::new_v4());
        gateway
            .change_subscription_price(&key, &existing.subscription_id, &item, &change.price_id, change.proration)
            .await?;
    }
    let audit = AuditEntry::new("subscription.plan_changed", AuditStatus::Success, principal.org_id(), meta)
        .actor(principal.user_id())
        .details(json!({
            "subscription_id": existing.subscription_id, "from_price_id": current.price_id,
            "price_id": change.price_id, "proration_behavior": change.proration.as_str(),
        }));
    let pending = table.update(
        Change::new(&pk, &sk)
            .update("SET pending_price_id = :price, pending_at = :at, updated_at = :now")
            .condition(
                "attribute_exists(PK) AND (price_id <> :price OR \
                 (attribute_exists(pending_price_id) AND pending_price_id <> :price))",
            )
            .value(":price", av::s(&change.price_id))
            .value(":at", av::n(time::now().unix_timestamp()))
            .value(":now", av::s(time::rfc3339(time::now()))),
    )?;
    match table.transact(vec![pending, app.audit().put(&audit)?]).await {
        Ok(()) => Ok(()),
        // The record has this price and no other change pending (its event came first, or
        // it was already this price): there is nothing to wait for. Back to the confirmed
        // price while another change pends, this one is noted, as that one's event will
        // report the other price first.
        Err(crate::store::StoreError::TransactionConditionsFailed(_)) => {
            app.audit().record_or_log(&audit).await;
            Ok(())
        }
        Err(other) => {
            // Stripe has the change; the note can wait for the webhook, the record cannot.
            app.audit().record_or_log(&audit).await;
            Err(other.into())
        }
    }
}

/// The `subscription.updated` event for `subscription`, as an outbox item for its change.
fn announce(
    table: &crate::store::Table,
    subscription: &Subscription,
) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, crate::store::StoreError> {
    let event = DomainEvent::new(
        "subscription.updated",
        json!({ "subscription_id": subscription.subscription_id, "user_id": subscription.user_id,
                "status": subscription.status, "cancel_at_period_end": subscription.cancel_at_period_end }),
    );
    crate::outbox::put(table, crate::outbox::Message::event(&event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: Result<PlanChange, PaymentError>) -> Vec<String> {
        match result {
            Err(PaymentError::Validation(errors)) => errors.iter().map(|e| e.field.clone()).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_plan_change_needs_a_price_and_takes_stripes_proration_behaviors() {
        let change = PlanChange::parse(Some("price_gold".into()), None).unwrap();
        assert_eq!(change.proration, Proration::CreateProrations, "Stripe's default");
        for (name, proration) in [
            ("create_prorations", Proration::CreateProrations),
            ("none", Proration::None),
            ("always_invoice", Proration::AlwaysInvoice),
        ] {
            assert_eq!(PlanChange::parse(Some("price_gold".into()), Some(name.into())).unwrap().proration, proration);
            assert_eq!(proration.as_str(), name);
        }
        assert_eq!(fields(PlanChange::parse(None, None)), ["price_id"]);
        assert_eq!(fields(PlanChange::parse(Some("gold".into()), None)), ["price_id"]);
        assert_eq!(fields(PlanChange::parse(Some("price_gold".into()), Some("None".into()))), ["proration_behavior"]);
        assert_eq!(fields(PlanChange::parse(Some("x".into()), Some("".into()))), ["price_id", "proration_behavior"]);
    }

    #[test]
    fn only_canceled_and_expired_subscriptions_have_ended() {
        assert!(has_ended("canceled") && has_ended("incomplete_expired"));
        for live in ["active", "trialing", "incomplete", "past_due", "unpaid", "paused"] {
            assert!(!has_ended(live), "{live}");
        }
    }
}
