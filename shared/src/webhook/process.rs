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
use serde_json::{Value, json};

use crate::{
    App,
    http::ApiError,
    notify::DomainEvent,
    store::{Change, StoreError, av},
    time,
};

const EVENT_MEMORY_DAYS: i64 = 30;

#[derive(Debug, Clone)]
pub struct StripeEvent {
    pub id: String,
    pub kind: String,
    pub created: i64,
    pub object: Value,
}

impl StripeEvent {
    /// The fields we rely on, or `None` for a body that is not a Stripe event.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(body).ok()?;
        Some(Self {
            id: value["id"].as_str().filter(|id| id.starts_with("evt_") && id.len() <= 255)?.to_owned(),
            kind: value["type"].as_str()?.to_owned(),
            created: value["created"].as_i64()?,
            object: value["data"]["object"].clone(),
        })
    }
}

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

/// A state change for one event, and what to announce once it commits.
struct Effect {
    change: Option<TransactWriteItem>,
    announce: Option<DomainEvent>,
}

impl Effect {
    fn none() -> Self {
        Self { change: None, announce: None }
    }
}

async fn find_by_gsi1(app: &App, key: &str) -> Result<Option<(String, String)>, ApiError> {
    let table = app.table();
    let out = table
        .client()
        .query()
        .table_name(table.name())
        .index_name("GSI1")
        .key_condition_expression("GSI1PK = :k")
        .expression_attribute_values(":k", av::s(key))
        .limit(1)
        .send()
        .await
        .map_err(|e| ApiError::internal(aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
    Ok(out.items.unwrap_or_default().into_iter().next().and_then(|item| match (item.get("PK"), item.get("SK")) {
        (
            Some(aws_sdk_dynamodb::types::AttributeValue::S(pk)),
            Some(aws_sdk_dynamodb::types::AttributeValue::S(sk)),
        ) => Some((pk.clone(), sk.clone())),
        _ => None,
    }))
}

/// `status` moves to `to` from one of `from`, if the event is not older than the last one.
fn payment_change(
    app: &App,
    pk: &str,
    sk: &str,
    to: &str,
    from: &[&str],
    event: &StripeEvent,
) -> Result<TransactWriteItem, StoreError> {
    const NAMES: [&str; 3] = [":from0", ":from1", ":from2"];
    let allowed = &NAMES[..from.len()];
    let condition = format!(
        "#status IN ({}) AND (attribute_not_exists(stripe_event_created) OR stripe_event_created <= :created)",
        allowed.join(", ")
    );
    let mut change = Change::new(pk, sk)
        .update("SET #status = :to, stripe_event_created = :created, updated_at = :now")
        .condition(&condition)
        .name("#status", "status")
        .value(":to", av::s(to))
        .value(":created", av::n(event.created))
        .value(":now", av::s(time::rfc3339(time::now())));
    for (name, status) in allowed.iter().zip(from) {
        change = change.value(name, av::s(*status));
    }
    app.table().update(change)
}

async fn effect_of(app: &App, event: &StripeEvent) -> Result<Option<Effect>, ApiError> {
    let object = &event.object;
    let payment = |pi: Option<&str>| pi.map(|pi| format!("PI#{pi}"));
    Ok(Some(match event.kind.as_str() {
        "payment_intent.succeeded" | "payment_intent.payment_failed" => {
            let Some(key) = payment(object["id"].as_str()) else { return Ok(Some(Effect::none())) };
            let Some((pk, sk)) = find_by_gsi1(app, &key).await? else { return Ok(Some(Effect::none())) };
            let payment_id = pk.trim_start_matches("PAYMENT#").to_owned();
            if event.kind == "payment_intent.succeeded" {
                Effect {
                    change: Some(payment_change(app, &pk, &sk, "succeeded", &["requires_payment", "failed"], event)?),
                    announce: Some(DomainEvent::new(
                        "payment.succeeded",
                        json!({ "payment_id": payment_id, "amount": object["amount"], "currency": object["currency"] }),
                    )),
                }
            } else {
                Effect {
                    change: Some(payment_change(app, &pk, &sk, "failed", &["requires_payment"], event)?),
                    announce: None,
                }
            }
        }
        "charge.refunded" => {
            let Some(key) = payment(object["payment_intent"].as_str()) else { return Ok(Some(Effect::none())) };
            let Some((pk, sk)) = find_by_gsi1(app, &key).await? else { return Ok(Some(Effect::none())) };
            Effect {
                change: Some(payment_change(app, &pk, &sk, "refunded", &["succeeded", "refunding"], event)?),
                announce: Some(DomainEvent::new(
                    "payment.refunded",
                    json!({ "payment_id": pk.trim_start_matches("PAYMENT#"), "amount": object["amount_refunded"],
                            "currency": object["currency"] }),
                )),
            }
        }
        "account.updated" => {
            let Some(account) = object["id"].as_str() else { return Ok(Some(Effect::none())) };
            let Some((pk, sk)) = find_by_gsi1(app, &format!("ACCOUNT#{account}")).await? else {
                return Ok(Some(Effect::none()));
            };
            let change = Change::new(&pk, &sk)
                .update("SET charges_enabled = :charges, payouts_enabled = :payouts, account_event_created = :created, updated_at = :now")
                .condition("attribute_not_exists(account_event_created) OR account_event_created <= :created")
                .value(":charges", av::b(object["charges_enabled"].as_bool().unwrap_or(false)))
                .value(":payouts", av::b(object["payouts_enabled"].as_bool().unwrap_or(false)))
                .value(":created", av::n(event.created))
                .value(":now", av::s(time::rfc3339(time::now())));
            Effect { change: Some(app.table().update(change)?), announce: None }
        }
        "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
            let Some(id) = object["id"].as_str() else { return Ok(Some(Effect::none())) };
            let Some((pk, sk)) = find_by_gsi1(app, &format!("SUB#{id}")).await? else {
                tracing::info!(subscription = id, "subscription not ours (yet); skipped");
                return Ok(Some(Effect::none()));
            };
            let status = object["status"].as_str().unwrap_or("unknown");
            let cancel_at_period_end = object["cancel_at_period_end"].as_bool().unwrap_or(false);
            let change = Change::new(&pk, &sk)
                .update("SET #status = :status, cancel_at_period_end = :cape, sub_event_created = :created, updated_at = :now")
                .condition("attribute_not_exists(sub_event_created) OR sub_event_created <= :created")
                .name("#status", "status")
                .value(":status", av::s(status))
                .value(":cape", av::b(cancel_at_period_end))
                .value(":created", av::n(event.created))
                .value(":now", av::s(time::rfc3339(time::now())));
            Effect {
                change: Some(app.table().update(change)?),
                announce: Some(DomainEvent::new(
                    "subscription.updated",
                    json!({ "subscription_id": id, "status": status, "cancel_at_period_end": cancel_at_period_end }),
                )),
            }
        }
        _ => return Ok(None),
    }))
}

fn marker(app: &App, event: &StripeEvent, outcome: &str) -> Result<TransactWriteItem, StoreError> {
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

#[tracing::instrument(skip_all, fields(event_id = %event.id, event_type = %event.kind))]
pub async fn process(app: &App, event: &StripeEvent) -> Result<Outcome, ApiError> {
    let table = app.table();
    let Some(effect) = effect_of(app, event).await? else {
        tracing::info!("unhandled Stripe event type; acknowledged");
        return mark_only(app, event, Outcome::Ignored).await;
    };
    let Some(change) = effect.change else {
        return mark_only(app, event, Outcome::Skipped).await;
    };
    match table.transact(vec![marker(app, event, "processed")?, change]).await {
        Ok(()) => {
            if let Some(announcement) = effect.announce {
                app.events().publish_or_log(announcement).await;
            }
            Ok(Outcome::Processed)
        }
        Err(StoreError::TransactionConditionsFailed(failed)) if failed.contains(&0) => Ok(Outcome::Duplicate),
        // The change's own condition failed: an older event, or a state it cannot apply to.
        Err(StoreError::TransactionConditionsFailed(_)) => {
            tracing::info!("event older than the state it would change; skipped");
            mark_only(app, event, Outcome::Skipped).await
        }
        Err(other) => Err(other.into()),
    }
}

/// Marks the event seen without changing anything else: `outcome`, or `Duplicate` if it
/// was already marked.
async fn mark_only(app: &App, event: &StripeEvent, outcome: Outcome) -> Result<Outcome, ApiError> {
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
