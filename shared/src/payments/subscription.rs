//! Subscriptions: started through Stripe Billing, listed as last synced (the webhook keeps
//! them current), cancelled now or at the end of the period.
//!
//! Item: `USER#{user_id}` / `SUBSCRIPTION#{id}`, with `GSI1PK = SUB#{id}` so the webhook
//! finds it by Stripe id.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{gateway::SubscriptionState, payment::customer_for};
use crate::{
    App,
    audit::{AuditEntry, AuditStatus},
    http::{ApiError, RequestMeta},
    identity::auth::Principal,
    notify::DomainEvent,
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
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({
            "subscription_id": self.subscription_id,
            "status": self.status,
            "price_id": self.price_id,
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

/// Starts a subscription; `request_key` makes a retried request reuse the same Stripe call.
pub async fn start(
    app: &App,
    principal: &Principal,
    price_id: &str,
    request_key: &str,
    meta: &RequestMeta,
) -> Result<(Subscription, Option<String>), ApiError> {
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
                table.get::<Subscription>(&subscription.pk, &subscription.sk).await?.ok_or(ApiError::NotFound)?;
            Ok((stored, state.client_secret))
        }
        Err(other) => Err(other.into()),
    }
}

pub async fn list(app: &App, principal: &Principal) -> Result<Vec<Subscription>, ApiError> {
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
        .map_err(|e| ApiError::internal(aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
    out.items
        .unwrap_or_default()
        .into_iter()
        .map(|item| serde_dynamo::from_item(item).map_err(ApiError::internal))
        .collect()
}

pub async fn cancel(
    app: &App,
    principal: &Principal,
    subscription_id: &str,
    at_period_end: bool,
    meta: &RequestMeta,
) -> Result<Subscription, ApiError> {
    let table = app.table();
    let pk = keys::user(principal.user_id());
    let sk = sort_key(subscription_id);
    let existing = table.get::<Subscription>(&pk, &sk).await?.ok_or(ApiError::NotFound)?;
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
    table.get::<Subscription>(&pk, &sk).await?.ok_or(ApiError::NotFound)
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
