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
}

pub fn sort_key(subscription_id: &str) -> String {
    format!("SUBSCRIPTION#{subscription_id}")
}

impl Subscription {
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
    let gateway = app.payments().await?;
    let customer = customer_for(app, &principal.user).await?;
    let state: SubscriptionState =
        gateway.create_subscription(request_key, &customer, price_id, principal.user_id()).await?;
    let now = time::rfc3339(time::now());
    let subscription = Subscription {
        pk: keys::user(principal.user_id()),
        sk: sort_key(&state.id),
        subscription_id: state.id.clone(),
        user_id: principal.user_id().to_owned(),
        price_id: price_id.to_owned(),
        status: state.status.clone(),
        cancel_at_period_end: state.cancel_at_period_end,
        created_at: now.clone(),
        updated_at: now,
        gsi1pk: format!("SUB#{}", state.id),
        gsi1sk: "SUBSCRIPTION".into(),
    };
    let audit = AuditEntry::new("subscription.created", AuditStatus::Success, principal.org_id(), meta)
        .actor(principal.user_id())
        .details(json!({ "subscription_id": state.id, "price_id": price_id }));
    let table = app.table();
    // A put, not put_new: a retried request with the same key gets the same subscription.
    table.transact(vec![table.put(&subscription, None)?, app.audit().put(&audit)?]).await?;
    publish(app, &subscription).await;
    Ok((subscription, state.client_secret))
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
    let gateway = app.payments().await?;
    let state = gateway.cancel_subscription(&existing.subscription_id, at_period_end).await?;
    let now = time::rfc3339(time::now());
    let audit = AuditEntry::new("subscription.canceled", AuditStatus::Success, principal.org_id(), meta)
        .actor(principal.user_id())
        .details(json!({ "subscription_id": subscription_id, "at_period_end": at_period_end }));
    let update = table.update(
        Change::new(&pk, &sk)
            .update("SET #status = :status, cancel_at_period_end = :cape, updated_at = :now")
            .name("#status", "status")
            .value(":status", av::s(&state.status))
            .value(":cape", av::b(state.cancel_at_period_end))
            .value(":now", av::s(&now)),
    )?;
    table.transact(vec![update, app.audit().put(&audit)?]).await?;
    let updated = table.get::<Subscription>(&pk, &sk).await?.ok_or(ApiError::NotFound)?;
    publish(app, &updated).await;
    Ok(updated)
}

async fn publish(app: &App, subscription: &Subscription) {
    app.events()
        .publish_or_log(DomainEvent::new(
            "subscription.updated",
            json!({ "subscription_id": subscription.subscription_id, "user_id": subscription.user_id,
                    "status": subscription.status, "cancel_at_period_end": subscription.cancel_at_period_end }),
        ))
        .await;
}
