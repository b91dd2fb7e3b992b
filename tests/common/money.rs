//! Helpers of the payment tests: providers, payments, the payer paying, release and refund.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use shared::api::pay::{handle, handle_release};

use super::{TestApp, TestResponse, s};

pub fn token(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

/// A phone number no other test uses, so its SMS can be told apart.
pub fn unique_phone() -> String {
    let n = u128::from_be_bytes(*uuid::Uuid::new_v4().as_bytes()) % 10_000_000;
    format!("+1415{n:07}")
}

/// A logged-in provider with a connected account; onboarded (payouts on) if asked.
pub async fn provider(t: &TestApp, onboarded: bool) -> (Value, String) {
    let (_, tokens) = t.logged_in("provider").await;
    let phone = unique_phone();
    let created = t
        .authed(handle, "POST", "/providers", token(&tokens), &[], Some(json!({"country": "US", "phone": phone})))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    // The owner has verified the same number: release SMS go only to verified phones (the
    // verification itself is tested in tests/api/profile.rs).
    let user_id = t.me(token(&tokens)).await.body["user_id"].as_str().unwrap().to_owned();
    t.set(
        &format!("USER#{user_id}"),
        "PROFILE",
        &[("phone", AttributeValue::S(phone)), ("phone_verified", AttributeValue::Bool(true))],
    )
    .await;
    let provider_id = created.body["provider_id"].as_str().unwrap().to_owned();
    if onboarded {
        onboard(t, created.body["stripe_account_id"].as_str().expect("a connected account")).await;
    }
    (tokens, provider_id)
}

/// The provider finishes Stripe's onboarding: the stand-in's account has charges and payouts
/// on, and its signed `account.updated` reaches the webhook as the Connect endpoint's.
pub async fn onboard(t: &TestApp, account: &str) {
    let object = t.stand_in().onboard(account);
    let now = shared::time::now().unix_timestamp();
    let delivered = t.deliver(&super::connect_event("account.updated", now, object)).await;
    assert_eq!(delivered.status, 200, "{:?}", delivered.body);
}

pub async fn pay(t: &TestApp, payer: &Value, provider_id: &str, key: &str, amount: i64) -> TestResponse {
    pay_in(t, payer, provider_id, key, amount, "usd").await
}

pub async fn pay_in(
    t: &TestApp,
    payer: &Value,
    provider_id: &str,
    key: &str,
    amount: i64,
    currency: &str,
) -> TestResponse {
    let body = json!({"amount": amount, "currency": currency, "provider_id": provider_id, "description": "Lesson"});
    t.authed(handle, "POST", "/payments", token(payer), &[("idempotency-key", key)], Some(body)).await
}

/// The payer pays: Stripe (the stand-in) charges the PaymentIntent and the signed
/// `payment_intent.succeeded` event reaches the webhook, which holds the payment.
pub async fn mark_succeeded(t: &TestApp, payment_id: &str) {
    let item = t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap();
    let intent = t.stand_in().succeed_payment_intent(&s(&item, "stripe_payment_intent_id"));
    let now = shared::time::now().unix_timestamp();
    let delivered = t.deliver(&super::stripe_event("payment_intent.succeeded", now, intent)).await;
    assert_eq!(delivered.status, 200, "{:?}", delivered.body);
    assert_eq!(status_of(t, payment_id).await, "succeeded");
}

pub async fn release(t: &TestApp, tokens: &Value, payment_id: &str) -> TestResponse {
    t.authed(handle_release, "POST", &format!("/payments/{payment_id}/release"), token(tokens), &[], None).await
}

pub async fn status_of(t: &TestApp, payment_id: &str) -> String {
    s(&t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap(), "status")
}

/// A held (succeeded) payment from a fresh payer to a fresh provider.
pub async fn held_payment(t: &TestApp, onboarded: bool) -> (Value, Value, String, String) {
    let (provider_tokens, provider_id) = provider(t, onboarded).await;
    let (_, payer) = t.logged_in("payer").await;
    let created = pay(t, &payer, &provider_id, &uuid::Uuid::new_v4().to_string(), 2500).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let payment_id = created.body["payment_id"].as_str().unwrap().to_owned();
    mark_succeeded(t, &payment_id).await;
    (payer, provider_tokens, provider_id, payment_id)
}

/// A refund request; one naming an amount gets a fresh `Idempotency-Key`, as a client must
/// send one (see [`refund_with_key`] for retries).
pub async fn refund(t: &TestApp, tokens: &Value, payment_id: &str, body: Option<Value>) -> TestResponse {
    let partial = body.as_ref().is_some_and(|b| b.get("amount").is_some());
    let key = uuid::Uuid::new_v4().to_string();
    let headers: &[(&str, &str)] = if partial { &[("idempotency-key", &key)] } else { &[] };
    t.authed(handle, "POST", &format!("/payments/{payment_id}/refund"), token(tokens), headers, body).await
}

/// A refund request under `key`.
pub async fn refund_with_key(
    t: &TestApp,
    tokens: &Value,
    payment_id: &str,
    key: &str,
    body: Option<Value>,
) -> TestResponse {
    let headers = [("idempotency-key", key)];
    t.authed(handle, "POST", &format!("/payments/{payment_id}/refund"), token(tokens), &headers, body).await
}

/// Makes the payment's queued work look older than reconciliation's threshold, as if the
/// request that left it had died long ago.
pub async fn backdate_queue(t: &TestApp, payment_id: &str) {
    t.set(
        &format!("PAYMENT#{payment_id}"),
        "PAYMENT",
        &[("GSI2SK", AttributeValue::S("2026-01-01T00:00:00.000000Z".into()))],
    )
    .await;
}

/// What the scheduled job does for one payment: reconcile it if it is due.
pub async fn reconcile(t: &TestApp, payment_id: &str) -> shared::payments::reconcile::Reconciled {
    let meta =
        shared::http::RequestMeta { request_id: format!("reconcile-{}", uuid::Uuid::new_v4()), ..Default::default() };
    shared::payments::reconcile::payment_by_id(t.app, payment_id, &meta).await.expect("reconciliation runs")
}
