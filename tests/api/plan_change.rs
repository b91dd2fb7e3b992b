//! PATCH /subscriptions/{id}: a plan change asked of Stripe (the stand-in) with its proration
//! setting, noted as pending, and confirmed by the signed `customer.subscription.*` webhook.

use crate::common;

use crate::common::{TestApp, TestResponse, money::token, s};
use serde_json::{Value, json};
use shared::api::pay::handle;
use stripe_stand_in::{Failure, Received};

async fn subscribe(t: &TestApp, tokens: &Value, price: &str) -> String {
    let started =
        t.authed(handle, "POST", "/subscriptions", token(tokens), &[], Some(json!({"price_id": price}))).await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    started.body["subscription_id"].as_str().unwrap().to_owned()
}

async fn change(t: &TestApp, tokens: &Value, id: &str, body: Value) -> TestResponse {
    t.authed(handle, "PATCH", &format!("/subscriptions/{id}"), token(tokens), &[], Some(body)).await
}

/// The subscription as `GET /subscriptions` lists it.
async fn listed(t: &TestApp, tokens: &Value, id: &str) -> Value {
    let list = t.authed(handle, "GET", "/subscriptions", token(tokens), &[], None).await;
    assert_eq!(list.status, 200);
    list.body["items"].as_array().unwrap().iter().find(|s| s["subscription_id"] == id).cloned().expect("listed")
}

/// Stripe's event about the subscription as the stand-in holds it now, created at `created`.
async fn deliver_state(t: &TestApp, kind: &str, id: &str, created: i64) {
    let object = t.stand_in().object(id).expect("a subscription the stand-in made");
    let delivered = t.deliver(&common::stripe_event(kind, created, object)).await;
    assert_eq!(delivered.status, 200, "{:?}", delivered.body);
}

/// The plan-change (update) requests Stripe got for the subscription.
fn updates(t: &TestApp, id: &str) -> Vec<Received> {
    t.stand_in().posted(&format!("/v1/subscriptions/{id}"))
}

fn item_of(t: &TestApp, id: &str) -> Value {
    let sub = t.stand_in().object(id).unwrap();
    let items = sub["items"]["data"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one item: the price was replaced, not added to");
    items[0].clone()
}

#[tokio::test]
async fn a_plan_change_asks_stripe_with_its_proration_and_the_webhook_syncs_the_price() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, tokens) = t.logged_in("subscriber").await;
    let id = subscribe(&t, &tokens, "price_gold").await;
    let item = item_of(&t, &id)["id"].as_str().unwrap().to_owned();

    let changed =
        change(&t, &tokens, &id, json!({"price_id": "price_platinum", "proration_behavior": "always_invoice"})).await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    assert_eq!(changed.body["subscription_id"], id.as_str());
    assert_eq!(changed.body["price_id"], "price_gold", "until Stripe's event confirms it");
    assert_eq!(changed.body["pending_price_id"], "price_platinum");

    let sent = updates(&t, &id);
    assert_eq!(sent.len(), 1);
    let form = &sent[0].form;
    assert_eq!(form.get("items[0][id]"), Some(&item), "the existing item moves to the new price");
    assert_eq!(form.get("items[0][price]").map(String::as_str), Some("price_platinum"));
    assert_eq!(form.get("proration_behavior").map(String::as_str), Some("always_invoice"));
    assert!(sent[0].idempotency_key.as_deref().is_some_and(|k| k.starts_with(&format!("plan-change:{id}:"))));
    assert_eq!(item_of(&t, &id)["price"]["id"], "price_platinum", "Stripe has the new price");
    assert_eq!(item_of(&t, &id)["id"], item.as_str());

    let before = listed(&t, &tokens, &id).await;
    assert_eq!((&before["price_id"], &before["pending_price_id"]), (&json!("price_gold"), &json!("price_platinum")));
    let now = shared::time::now().unix_timestamp();
    deliver_state(&t, "customer.subscription.updated", &id, now).await;
    let after = listed(&t, &tokens, &id).await;
    assert_eq!((&after["price_id"], &after["pending_price_id"]), (&json!("price_platinum"), &Value::Null));

    // The default proration; an older event (still reporting gold) changes nothing; the
    // newer one confirms the second change.
    let again = change(&t, &tokens, &id, json!({"price_id": "price_silver"})).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    let sent = updates(&t, &id);
    assert_eq!(sent[1].form.get("proration_behavior").map(String::as_str), Some("create_prorations"));
    assert_ne!(sent[0].idempotency_key, sent[1].idempotency_key, "two changes, two keys");
    let mut stale = t.stand_in().object(&id).unwrap();
    stale["items"]["data"][0]["price"]["id"] = json!("price_gold");
    let old = t.deliver(&common::stripe_event("customer.subscription.updated", now - 60, stale)).await;
    assert_eq!(old.status, 200);
    let kept = listed(&t, &tokens, &id).await;
    assert_eq!((&kept["price_id"], &kept["pending_price_id"]), (&json!("price_platinum"), &json!("price_silver")));
    deliver_state(&t, "customer.subscription.updated", &id, now + 1).await;
    let synced = listed(&t, &tokens, &id).await;
    assert_eq!((&synced["price_id"], &synced["pending_price_id"]), (&json!("price_silver"), &Value::Null));

    let org = t.me(token(&tokens)).await.body["org_id"].as_str().unwrap().to_owned();
    let audit = t.partition(&format!("AUDIT#{org}")).await;
    let entries: Vec<_> = audit.iter().filter(|e| s(e, "action") == "subscription.plan_changed").collect();
    assert_eq!(entries.len(), 2);
    let details: Vec<Value> =
        entries.iter().map(|e| serde_dynamo::from_item::<_, Value>((*e).clone()).unwrap()["details"].clone()).collect();
    assert!(details.iter().any(|d| d["from_price_id"] == "price_gold"
        && d["price_id"] == "price_platinum"
        && d["proration_behavior"] == "always_invoice"));
}

#[tokio::test]
async fn changing_back_before_the_webhook_leaves_the_latest_change_pending() {
    let t = TestApp::with_stripe(&[]).await;
    let (email, tokens) = t.logged_in("subscriber").await;
    let id = subscribe(&t, &tokens, "price_gold").await;
    assert_eq!(change(&t, &tokens, &id, json!({"price_id": "price_platinum"})).await.status, 200);
    let back = change(&t, &tokens, &id, json!({"price_id": "price_gold"})).await;
    assert_eq!(back.status, 200, "{:?}", back.body);
    assert_eq!((&back.body["price_id"], &back.body["pending_price_id"]), (&json!("price_gold"), &json!("price_gold")));
    assert_eq!(item_of(&t, &id)["price"]["id"], "price_gold");

    // The first change's event, then the second's. Their times come from when the last
    // change was answered: the first is not after it, the second is.
    let user_id = common::s(&t.user_by_email(&email).await, "user_id");
    let stored = t.item(&format!("USER#{user_id}"), &format!("SUBSCRIPTION#{id}")).await.expect("subscription");
    let now: i64 = stored["pending_at"].as_n().unwrap().parse().unwrap();
    let mut first = t.stand_in().object(&id).unwrap();
    first["items"]["data"][0]["price"]["id"] = json!("price_platinum");
    assert_eq!(t.deliver(&common::stripe_event("customer.subscription.updated", now, first)).await.status, 200);
    let between = listed(&t, &tokens, &id).await;
    assert_eq!((&between["price_id"], &between["pending_price_id"]), (&json!("price_platinum"), &json!("price_gold")));
    deliver_state(&t, "customer.subscription.updated", &id, now + 1).await;
    let synced = listed(&t, &tokens, &id).await;
    assert_eq!((&synced["price_id"], &synced["pending_price_id"]), (&json!("price_gold"), &Value::Null));

    // Once confirmed, a change to the price it has leaves nothing pending.
    let same = change(&t, &tokens, &id, json!({"price_id": "price_gold"})).await;
    assert_eq!((same.status, &same.body["pending_price_id"]), (200, &Value::Null));
}

#[tokio::test]
async fn an_ended_subscription_cannot_change_plan() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, tokens) = t.logged_in("subscriber").await;

    // Cancelled through the API: 409, and Stripe is not asked.
    let id = subscribe(&t, &tokens, "price_gold").await;
    let cancelled = t.authed(handle, "DELETE", &format!("/subscriptions/{id}"), token(&tokens), &[], None).await;
    assert_eq!(cancelled.body["status"], "canceled");
    let refused = change(&t, &tokens, &id, json!({"price_id": "price_platinum"})).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (409, Some("conflict")));
    assert!(updates(&t, &id).is_empty());

    // Ended at Stripe while our record waits for the event: 409 too, and its pending note
    // goes when the event comes.
    let id = subscribe(&t, &tokens, "price_gold").await;
    assert_eq!(change(&t, &tokens, &id, json!({"price_id": "price_platinum"})).await.status, 200);
    let ended = common::http_client()
        .delete(format!("{}v1/subscriptions/{id}", t.stand_in().url()))
        .bearer_auth("sk_test_standin")
        .send()
        .await
        .unwrap();
    assert!(ended.status().is_success());
    let refused = change(&t, &tokens, &id, json!({"price_id": "price_silver"})).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (409, Some("conflict")));
    assert_eq!(updates(&t, &id).len(), 1, "only the first change reached Stripe");
    deliver_state(&t, "customer.subscription.deleted", &id, shared::time::now().unix_timestamp()).await;
    let gone = listed(&t, &tokens, &id).await;
    assert_eq!((&gone["status"], &gone["pending_price_id"]), (&json!("canceled"), &Value::Null));
}

#[tokio::test]
async fn bad_bodies_are_400_naming_the_field_and_only_the_owner_may_change_plan() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, tokens) = t.logged_in("subscriber").await;
    let id = subscribe(&t, &tokens, "price_gold").await;

    let fields = |response: &TestResponse| -> Vec<String> {
        assert_eq!((response.status, response.body["code"].as_str()), (400, Some("validation_failed")));
        response.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
    };
    for (body, expected) in [
        (json!({}), vec!["price_id"]),
        (json!({"price_id": "gold"}), vec!["price_id"]),
        (json!({"price_id": "price_gold bar"}), vec!["price_id"]),
        (json!({"price_id": 5}), vec!["price_id"]),
        (json!({"price_id": "price_platinum", "proration_behavior": "sometimes"}), vec!["proration_behavior"]),
        (json!({"price_id": "price_platinum", "proration_behavior": ""}), vec!["proration_behavior"]),
        (json!({"price_id": "nope", "proration_behavior": "never"}), vec!["price_id", "proration_behavior"]),
    ] {
        assert_eq!(fields(&change(&t, &tokens, &id, body.clone()).await), expected, "{body}");
    }
    let event = common::http_event(
        "PATCH",
        &format!("/subscriptions/{id}"),
        &[("authorization", &format!("Bearer {}", token(&tokens)))],
        Some("{not json"),
    );
    assert_eq!(t.invoke(handle, &event).await.body["code"], "malformed_json");

    let (_, stranger) = t.logged_in("stranger").await;
    let foreign = change(&t, &stranger, &id, json!({"price_id": "price_platinum"})).await;
    assert_eq!((foreign.status, foreign.body["code"].as_str()), (404, Some("not_found")));
    let unknown = change(&t, &tokens, "sub_unknown", json!({"price_id": "price_platinum"})).await;
    assert_eq!(unknown.status, 404);
    assert!(updates(&t, &id).is_empty(), "Stripe was asked nothing");

    // Stripe refusing the change: 502, and nothing pends.
    t.stand_in().fail(&format!("/v1/subscriptions/{id}"), Failure::Refused, 1);
    let refused = change(&t, &tokens, &id, json!({"price_id": "price_platinum"})).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (502, Some("payment_provider_error")));
    assert_eq!(listed(&t, &tokens, &id).await["pending_price_id"], Value::Null);

    // A member demoted to viewer can no longer change their plan (nor start one).
    let (admin, _, member, member_id) = t.org_with_member("member").await;
    let theirs = subscribe(&t, &member, "price_gold").await;
    let demoted = t
        .authed(
            shared::api::account::handle,
            "PATCH",
            &format!("/orgs/members/{member_id}"),
            token(&admin),
            &[],
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(demoted.status, 200, "{:?}", demoted.body);
    let viewer = change(&t, &member, &theirs, json!({"price_id": "price_platinum"})).await;
    assert_eq!((viewer.status, viewer.body["code"].as_str()), (403, Some("forbidden")));
}

#[tokio::test]
async fn a_plan_change_spends_the_callers_stripe_allowance() {
    let t = TestApp::with_stripe(&[("RATE_LIMIT_STRIPE", "2/60")]).await;
    let (_, tokens) = t.logged_in("subscriber").await;
    let id = subscribe(&t, &tokens, "price_gold").await;
    assert_eq!(change(&t, &tokens, &id, json!({"price_id": "gold"})).await.status, 400, "spends nothing");
    assert_eq!(change(&t, &tokens, &id, json!({"price_id": "price_platinum"})).await.status, 200);
    let limited = change(&t, &tokens, &id, json!({"price_id": "price_silver"})).await;
    assert_eq!((limited.status, limited.body["code"].as_str()), (429, Some("rate_limited")));
    assert!(limited.header("retry-after").is_some());
    assert_eq!(updates(&t, &id).len(), 1);
}

#[tokio::test]
async fn one_plan_change_at_a_time_and_a_retry_does_not_change_twice() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, tokens) = t.logged_in("one-at-a-time").await;
    let id = subscribe(&t, &tokens, "price_gold").await;
    let user_id = t.me(token(&tokens)).await.body["user_id"].as_str().unwrap().to_owned();

    // Another request holds the subscription: this one is refused before Stripe is asked.
    let held_until = shared::time::now().unix_timestamp() + 30;
    let key = (format!("USER#{user_id}"), format!("SUBSCRIPTION#{id}"));
    assert!(t.item(&key.0, &key.1).await.is_some(), "the subscription record's key");
    t.set(&key.0, &key.1, &[("plan_change_until", aws_sdk_dynamodb::types::AttributeValue::N(held_until.to_string()))])
        .await;
    let refused = change(&t, &tokens, &id, json!({"price_id": "price_platinum"})).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (409, Some("conflict")), "{:?}", refused.body);
    assert!(updates(&t, &id).is_empty(), "Stripe was not asked");

    // Once it has expired, changes go through, and leave no hold behind.
    let expired = (shared::time::now().unix_timestamp() - 1).to_string();
    t.set(&key.0, &key.1, &[("plan_change_until", aws_sdk_dynamodb::types::AttributeValue::N(expired))]).await;
    assert_eq!(change(&t, &tokens, &id, json!({"price_id": "price_platinum"})).await.status, 200);
    assert!(!t.item(&key.0, &key.1).await.unwrap().contains_key("plan_change_until"));
    assert_eq!(updates(&t, &id).len(), 1);

    // The same change again (a retry whose answer was lost): Stripe has that price already,
    // so it is not asked to change it a second time.
    let again = change(&t, &tokens, &id, json!({"price_id": "price_platinum"})).await;
    assert_eq!((again.status, again.body["pending_price_id"].as_str()), (200, Some("price_platinum")));
    assert_eq!(updates(&t, &id).len(), 1, "one change at Stripe");

    // Any event made after the change shows where it left the subscription: the note goes,
    // whatever price it reports.
    let later = shared::time::now().unix_timestamp() + 5;
    deliver_state(&t, "customer.subscription.updated", &id, later).await;
    let after = listed(&t, &tokens, &id).await;
    assert_eq!((&after["price_id"], &after["pending_price_id"]), (&json!("price_platinum"), &Value::Null));
}

#[tokio::test]
async fn an_ended_subscription_is_not_brought_back_by_an_older_event_of_the_same_second() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, tokens) = t.logged_in("ended-stays").await;
    let id = subscribe(&t, &tokens, "price_gold").await;
    let active = t.stand_in().object(&id).unwrap();
    let now = shared::time::now().unix_timestamp();
    let mut canceled = active.clone();
    canceled["status"] = json!("canceled");
    for object in [canceled, active] {
        let delivered = t.deliver(&common::stripe_event("customer.subscription.updated", now + 10, object)).await;
        assert_eq!(delivered.status, 200, "{:?}", delivered.body);
    }
    assert_eq!(listed(&t, &tokens, &id).await["status"], "canceled");
}
