//! The Stripe webhook on its function URL: signatures, exactly-once, ordering.

use crate::common;

use crate::common::{TestApp, TestResponse, s};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use shared::{api::webhook::handle, webhook::signature::sign};

fn secret() -> String {
    common::webhook_secret()
}

fn delivery(body: &str, signature: Option<&str>) -> String {
    common::webhook_delivery(body, signature)
}

fn event(kind: &str, created: i64, object: Value) -> String {
    common::stripe_event(kind, created, object)
}

fn connect_event(kind: &str, created: i64, object: Value) -> String {
    common::connect_event(kind, created, object)
}

async fn deliver(t: &TestApp, body: &str) -> TestResponse {
    t.deliver(body).await
}

/// A payment in `requires_payment` with a known PaymentIntent id.
async fn payment(t: &TestApp, status: &str) -> (String, String) {
    let payment_id = uuid::Uuid::new_v4().to_string();
    let pi = format!("pi_{}", uuid::Uuid::new_v4().simple());
    t.app
        .table()
        .client()
        .put_item()
        .table_name(t.app.table().name())
        .item("PK", AttributeValue::S(format!("PAYMENT#{payment_id}")))
        .item("SK", AttributeValue::S("PAYMENT".into()))
        .item("payment_id", AttributeValue::S(payment_id.clone()))
        .item("status", AttributeValue::S(status.into()))
        .item("amount", AttributeValue::N("2500".into()))
        .item("currency", AttributeValue::S("usd".into()))
        .item("provider_id", AttributeValue::S("prov".into()))
        .item("provider_user_id", AttributeValue::S("provider-user".into()))
        .item("payer_user_id", AttributeValue::S("payer-user".into()))
        .item("payer_org_id", AttributeValue::S(format!("org-{}", uuid::Uuid::new_v4())))
        .item("stripe_payment_intent_id", AttributeValue::S(pi.clone()))
        .item("created_at", AttributeValue::S("2026-11-23T00:00:00.000000Z".into()))
        .item("updated_at", AttributeValue::S("2026-11-23T00:00:00.000000Z".into()))
        .item("GSI1PK", AttributeValue::S(format!("PI#{pi}")))
        .item("GSI1SK", AttributeValue::S("PAYMENT".into()))
        .send()
        .await
        .unwrap();
    (payment_id, pi)
}

async fn status(t: &TestApp, pk: &str, sk: &str) -> String {
    s(&t.item(pk, sk).await.unwrap(), "status")
}

#[tokio::test]
async fn a_signed_payment_intent_succeeded_holds_the_payment_once() {
    let t = TestApp::new().await;
    let (payment_id, pi) = payment(&t, "requires_payment").await;
    let now = shared::time::now().unix_timestamp();
    let body = event(
        "payment_intent.succeeded",
        now,
        json!({"id": pi, "object": "payment_intent", "amount": 2500, "currency": "usd"}),
    );
    let first = deliver(&t, &body).await;
    assert_eq!((first.status, &first.body), (200, &json!({"received": true})));
    assert_eq!(status(&t, &format!("PAYMENT#{payment_id}"), "PAYMENT").await, "succeeded");
    let again = deliver(&t, &body).await;
    assert_eq!((again.status, &again.body), (200, &json!({"received": true, "duplicate": true})));
    let announced = t
        .published_events()
        .await
        .into_iter()
        .filter(|(k, m)| k == "payment.succeeded" && m["data"]["payment_id"] == payment_id.as_str())
        .count();
    assert_eq!(announced, 1);
}

#[tokio::test]
async fn bad_signatures_are_403_and_change_nothing() {
    let t = TestApp::new().await;
    let (payment_id, pi) = payment(&t, "requires_payment").await;
    let now = shared::time::now().unix_timestamp();
    let body = event("payment_intent.succeeded", now, json!({"id": pi, "object": "payment_intent"}));
    let tampered = body.replace("payment_intent.succeeded", "payment_intent.payment_failed");
    let cases = [
        ("tampered body", delivery(&tampered, Some(&sign(body.as_bytes(), &secret(), now)))),
        ("wrong secret", delivery(&body, Some(&sign(body.as_bytes(), "whsec_not_ours", now)))),
        ("missing header", delivery(&body, None)),
        ("expired", delivery(&body, Some(&sign(body.as_bytes(), &secret(), now - 301)))),
        ("junk header", delivery(&body, Some("t=abc,v1=nothex"))),
    ];
    for (name, request) in cases {
        let response = t.invoke(handle, &request).await;
        assert_eq!((response.status, response.body["code"].as_str()), (403, Some("signature_invalid")), "{name}");
    }
    assert_eq!(status(&t, &format!("PAYMENT#{payment_id}"), "PAYMENT").await, "requires_payment");
    let audit = t.partition("AUDIT#platform").await;
    assert!(audit.iter().any(|e| s(e, "action") == "webhook.signature_failure"));
}

/// A provider row for `account`, not onboarded: (provider PK).
async fn provider_for(t: &TestApp, account: &str) -> String {
    let provider_pk = format!("PROVIDER#{}", uuid::Uuid::new_v4());
    t.set(
        &provider_pk,
        "PROVIDER",
        &[
            ("charges_enabled", AttributeValue::Bool(false)),
            ("payouts_enabled", AttributeValue::Bool(false)),
            ("GSI1PK", AttributeValue::S(format!("ACCOUNT#{account}"))),
            ("GSI1SK", AttributeValue::S("PROVIDER".into())),
        ],
    )
    .await;
    provider_pk
}

#[tokio::test]
async fn each_stripe_endpoint_is_verified_with_its_own_secret_and_connect_applies_only_account_events() {
    let t = TestApp::new().await;
    let now = shared::time::now().unix_timestamp();
    let account = format!("acct_{}", uuid::Uuid::new_v4().simple());
    let provider_pk = provider_for(&t, &account).await;
    let onboarded = json!({"id": account, "object": "account", "charges_enabled": true, "payouts_enabled": true});
    let payouts = || async { s(&t.item(&provider_pk, "PROVIDER").await.unwrap(), "payouts_enabled") };

    // A connected account's event signed with the platform's secret is not Stripe's.
    let connected = connect_event("account.updated", now, onboarded.clone());
    let forged = t.invoke(handle, &delivery(&connected, Some(&sign(connected.as_bytes(), &secret(), now)))).await;
    assert_eq!((forged.status, forged.body["code"].as_str()), (403, Some("signature_invalid")));
    assert_eq!(payouts().await, "false");
    // Nor is a platform event signed with the Connect endpoint's secret.
    let (payment_id, pi) = payment(&t, "requires_payment").await;
    let platform = event("payment_intent.succeeded", now, json!({"id": pi, "object": "payment_intent"}));
    let connect_secret = common::connect_webhook_secret();
    let forged = t.invoke(handle, &delivery(&platform, Some(&sign(platform.as_bytes(), &connect_secret, now)))).await;
    assert_eq!((forged.status, forged.body["code"].as_str()), (403, Some("signature_invalid")));
    assert_eq!(status(&t, &format!("PAYMENT#{payment_id}"), "PAYMENT").await, "requires_payment");

    // From the Connect endpoint, a connected account's payment event changes nothing of ours
    // (it is the account's own business), nor does an account event about another account.
    let mut elsewhere: Value = serde_json::from_str(&connect_event(
        "payment_intent.succeeded",
        now,
        json!({"id": pi, "object": "payment_intent"}),
    ))
    .unwrap();
    elsewhere["account"] = json!(account);
    let ignored = deliver(&t, &elsewhere.to_string()).await;
    assert_eq!(ignored.status, 200, "{:?}", ignored.body);
    assert_eq!(status(&t, &format!("PAYMENT#{payment_id}"), "PAYMENT").await, "requires_payment");
    let mut about_another: Value = serde_json::from_str(&connected).unwrap();
    about_another["id"] = json!(format!("evt_{}", uuid::Uuid::new_v4().simple()));
    about_another["account"] = json!(format!("acct_{}", uuid::Uuid::new_v4().simple()));
    assert_eq!(deliver(&t, &about_another.to_string()).await.status, 200);
    assert_eq!(payouts().await, "false");

    // Nor does an account.updated the platform endpoint signed (it would be about the
    // platform's own account), whatever account its object names.
    let platform_signed = event("account.updated", now, onboarded.clone());
    assert_eq!(deliver(&t, &platform_signed).await.status, 200);
    assert_eq!(payouts().await, "false");

    // Signed by the Connect endpoint, the account's own event onboards the provider.
    let applied = deliver(&t, &connected).await;
    assert_eq!((applied.status, &applied.body), (200, &json!({"received": true})));
    assert_eq!(payouts().await, "true");
}

#[tokio::test]
async fn a_verified_but_unparsable_body_is_400_and_unknown_types_are_acknowledged() {
    let t = TestApp::new().await;
    let junk = deliver(&t, "this is not json").await;
    assert_eq!((junk.status, junk.body["code"].as_str()), (400, Some("malformed_json")));
    let unknown = deliver(&t, &event("invoice.finalized", 1, json!({"id": "in_1"}))).await;
    assert_eq!((unknown.status, &unknown.body), (200, &json!({"received": true})));
}

#[tokio::test]
async fn twenty_concurrent_deliveries_of_one_event_are_processed_once() {
    let t = TestApp::new().await;
    let (payment_id, pi) = payment(&t, "requires_payment").await;
    let now = shared::time::now().unix_timestamp();
    let body = event("payment_intent.succeeded", now, json!({"id": pi, "object": "payment_intent"}));
    let header = sign(body.as_bytes(), &secret(), now);
    let tasks = (0..20).map(|_| {
        let request = delivery(&body, Some(&header));
        common::spawn_invoke(t.app, handle, request)
    });
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    assert!(results.iter().all(|(st, _)| *st == 200), "{results:?}");
    assert_eq!(results.iter().filter(|(_, b)| b.get("duplicate").is_none()).count(), 1, "{results:?}");
    let announced = t
        .published_events()
        .await
        .into_iter()
        .filter(|(k, m)| k == "payment.succeeded" && m["data"]["payment_id"] == payment_id.as_str())
        .count();
    assert_eq!(announced, 1);
}

#[tokio::test]
async fn older_events_never_overwrite_newer_state() {
    let t = TestApp::new().await;
    let now = shared::time::now().unix_timestamp();

    // Payments: the failure (newer) lands first; the older success must not revive it.
    let (payment_id, pi) = payment(&t, "requires_payment").await;
    deliver(&t, &event("payment_intent.payment_failed", now, json!({"id": pi}))).await;
    deliver(&t, &event("payment_intent.succeeded", now - 60, json!({"id": pi}))).await;
    assert_eq!(status(&t, &format!("PAYMENT#{payment_id}"), "PAYMENT").await, "failed");
    // ...while a newer success (a retry with another card) does.
    deliver(&t, &event("payment_intent.succeeded", now + 60, json!({"id": pi}))).await;
    assert_eq!(status(&t, &format!("PAYMENT#{payment_id}"), "PAYMENT").await, "succeeded");

    // Accounts: payouts enabled (newer) then an older update without them.
    let account = format!("acct_{}", uuid::Uuid::new_v4().simple());
    let provider_pk = format!("PROVIDER#{}", uuid::Uuid::new_v4());
    t.app
        .table()
        .client()
        .put_item()
        .table_name(t.app.table().name())
        .item("PK", AttributeValue::S(provider_pk.clone()))
        .item("SK", AttributeValue::S("PROVIDER".into()))
        .item("charges_enabled", AttributeValue::Bool(false))
        .item("payouts_enabled", AttributeValue::Bool(false))
        .item("GSI1PK", AttributeValue::S(format!("ACCOUNT#{account}")))
        .item("GSI1SK", AttributeValue::S("PROVIDER".into()))
        .send()
        .await
        .unwrap();
    deliver(
        &t,
        &connect_event(
            "account.updated",
            now,
            json!({"id": account, "charges_enabled": true, "payouts_enabled": true}),
        ),
    )
    .await;
    deliver(
        &t,
        &connect_event(
            "account.updated",
            now - 60,
            json!({"id": account, "charges_enabled": false, "payouts_enabled": false}),
        ),
    )
    .await;
    let provider = t.item(&provider_pk, "PROVIDER").await.unwrap();
    assert_eq!((s(&provider, "charges_enabled"), s(&provider, "payouts_enabled")), ("true".into(), "true".into()));

    // Subscriptions: deleted (newer) then an older update.
    let sub = format!("sub_{}", uuid::Uuid::new_v4().simple());
    let owner_pk = format!("USER#{}", uuid::Uuid::new_v4());
    let sub_sk = format!("SUBSCRIPTION#{sub}");
    t.app
        .table()
        .client()
        .put_item()
        .table_name(t.app.table().name())
        .item("PK", AttributeValue::S(owner_pk.clone()))
        .item("SK", AttributeValue::S(sub_sk.clone()))
        .item("status", AttributeValue::S("incomplete".into()))
        .item("GSI1PK", AttributeValue::S(format!("SUB#{sub}")))
        .item("GSI1SK", AttributeValue::S("SUBSCRIPTION".into()))
        .send()
        .await
        .unwrap();
    deliver(&t, &event("customer.subscription.deleted", now, json!({"id": sub, "status": "canceled"}))).await;
    deliver(&t, &event("customer.subscription.updated", now - 60, json!({"id": sub, "status": "active"}))).await;
    assert_eq!(status(&t, &owner_pk, &sub_sk).await, "canceled");
    deliver(&t, &event("customer.subscription.created", now - 120, json!({"id": sub, "status": "incomplete"}))).await;
    assert_eq!(status(&t, &owner_pk, &sub_sk).await, "canceled");

    // Refunds from the Stripe side.
    let (refunded, pi) = payment(&t, "succeeded").await;
    deliver(
        &t,
        &event(
            "charge.refunded",
            now,
            json!({"id": "ch_1", "payment_intent": pi, "amount": 2500, "amount_refunded": 2500}),
        ),
    )
    .await;
    assert_eq!(status(&t, &format!("PAYMENT#{refunded}"), "PAYMENT").await, "refunded");
    let announced = t.published_events().await;
    assert!(announced.iter().any(|(k, m)| k == "payment.refunded" && m["data"]["payment_id"] == refunded.as_str()));
}

#[tokio::test]
async fn webhook_events_drive_a_payment_from_creation_to_release() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_tokens) = t.logged_in("e2e-provider").await;
    let provider = t
        .authed(
            shared::api::pay::handle,
            "POST",
            "/providers",
            provider_tokens["access_token"].as_str().unwrap(),
            &[],
            None,
        )
        .await;
    let account = provider.body["stripe_account_id"].as_str().unwrap().to_owned();
    let (_, payer) = t.logged_in("e2e-payer").await;
    let payer_token = payer["access_token"].as_str().unwrap();
    let created = t
        .authed(
            shared::api::pay::handle,
            "POST",
            "/payments",
            payer_token,
            &[("idempotency-key", "e2e")],
            Some(json!({"amount": 5000, "currency": "usd", "provider_id": provider.body["provider_id"]})),
        )
        .await;
    let payment_id = created.body["payment_id"].as_str().unwrap().to_owned();
    let pi = created.body["stripe_payment_intent_id"].as_str().unwrap().to_owned();
    let now = shared::time::now().unix_timestamp();

    let path = format!("/payments/{payment_id}/release");
    let release = || t.authed(shared::api::pay::handle_release, "POST", &path, payer_token, &[], None);
    assert_eq!(release().await.body["code"], "payment_not_succeeded");
    let intent = t.stand_in().succeed_payment_intent(&pi);
    deliver(&t, &event("payment_intent.succeeded", now, intent)).await;
    assert_eq!(release().await.body["code"], "onboarding_required");
    // Onboarding finishes at Stripe after the release looked; its event then arrives.
    let onboarded = t.stand_in().onboard(&account);
    deliver(&t, &connect_event("account.updated", shared::time::now().unix_timestamp(), onboarded)).await;
    let released = release().await;
    assert_eq!(
        (released.status, released.body["already_released"].as_bool()),
        (200, Some(false)),
        "{:?}",
        released.body
    );
}

/// Two events of one second about one account, in either order: which Stripe made first is
/// unknown, so the second is not applied from its payload; the account is read from Stripe
/// and its flags are written.
#[tokio::test]
async fn same_second_account_events_are_settled_by_what_stripe_returns() {
    let t = TestApp::with_stripe(&[]).await;
    let now = shared::time::now().unix_timestamp();
    for stale_last in [true, false] {
        let (_, provider_id) = common::money::provider(&t, false).await;
        let item = t.item(&format!("PROVIDER#{provider_id}"), "PROVIDER").await.unwrap();
        let account = s(&item, "stripe_account_id");
        let enabled = t.stand_in().onboard(&account);
        let mut stale = enabled.clone();
        stale["payouts_enabled"] = json!(false);
        stale["charges_enabled"] = json!(false);
        let order = if stale_last { [&enabled, &stale] } else { [&stale, &enabled] };
        for object in order {
            let delivered = deliver(&t, &connect_event("account.updated", now, object.clone())).await;
            assert_eq!(delivered.status, 200, "{:?}", delivered.body);
        }
        let stored = t.item(&format!("PROVIDER#{provider_id}"), "PROVIDER").await.unwrap();
        assert_eq!(stored["payouts_enabled"], AttributeValue::Bool(true), "stale last: {stale_last}");
        assert_eq!(stored["charges_enabled"], AttributeValue::Bool(true));
    }
}

/// `customer.subscription.created` (incomplete) and `.updated` (active) of one second, in
/// either order, end as Stripe has the subscription.
#[tokio::test]
async fn same_second_subscription_events_are_settled_by_what_stripe_returns() {
    let t = TestApp::with_stripe(&[]).await;
    let now = shared::time::now().unix_timestamp();
    for created_last in [true, false] {
        let (_, tokens) = t.logged_in("subscriber").await;
        let started = t
            .authed(
                shared::api::pay::handle,
                "POST",
                "/subscriptions",
                common::money::token(&tokens),
                &[("idempotency-key", &uuid::Uuid::new_v4().to_string())],
                Some(json!({"price_id": "price_gold"})),
            )
            .await;
        assert_eq!(started.status, 201, "{:?}", started.body);
        let sub = started.body["subscription_id"].as_str().unwrap().to_owned();
        let incomplete = t.stand_in().object(&sub).unwrap();
        let active = t.stand_in().activate_subscription(&sub);
        let created = event("customer.subscription.created", now, incomplete);
        let updated = event("customer.subscription.updated", now, active);
        let order = if created_last { [&updated, &created] } else { [&created, &updated] };
        for body in order {
            assert_eq!(deliver(&t, body).await.status, 200);
        }
        let listed =
            t.authed(shared::api::pay::handle, "GET", "/subscriptions", common::money::token(&tokens), &[], None).await;
        assert_eq!(listed.body["items"][0]["status"], "active", "created last: {created_last}: {:?}", listed.body);
    }
}
