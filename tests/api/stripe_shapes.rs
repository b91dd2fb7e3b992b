//! The stand-in answers as Stripe does: every object it holds after the payment, refund,
//! release, recovery, dispute and subscription flows, and every list it answers, parses into
//! Stripe's own types (async-stripe's, generated from Stripe's published OpenAPI document for
//! the API version the client sends, `stripe_shared::version::VERSION`): a field Stripe always
//! sends that the stand-in leaves out, a wrong type or an unknown enum value fails here.
//!
//! The other half, that our parsers need nothing Stripe does not send, is the gateway's unit
//! test against Stripe's published fixtures (`infra/stripe-stand-in/fixtures`).

use crate::common;

use crate::common::{
    TestApp,
    money::{held_payment, refund, release, token},
    stripe_event,
};
use miniserde::Deserialize;
use serde_json::{Value, json};
use shared::api::pay::handle;

/// Why `object` does not parse as `T`, with the fields of Stripe's fixture for its resource
/// that it lacks (miniserde's error names none).
fn parses_as<T: Deserialize>(object: &Value) -> Result<(), String> {
    match miniserde::json::from_str::<T>(&object.to_string()) {
        Ok(_) => Ok(()),
        Err(_) => {
            let kind = object["object"].as_str().unwrap_or_default();
            let fixture = &stripe_stand_in::fixture(kind);
            let missing: Vec<&String> = fixture
                .as_object()
                .map(|f| f.keys().filter(|k| object.get(k.as_str()).is_none()).collect())
                .unwrap_or_default();
            Err(format!("{kind} {} is not Stripe's shape; fields it lacks: {missing:?}\n{object:#}", object["id"]))
        }
    }
}

fn check(object: &Value) -> Result<(), String> {
    use stripe_shared::*;
    match (object["object"].as_str().unwrap_or_default(), object["deleted"] == true) {
        ("customer", true) => parses_as::<DeletedCustomer>(object),
        ("account", _) => parses_as::<Account>(object),
        ("balance_transaction", _) => parses_as::<BalanceTransaction>(object),
        ("charge", _) => parses_as::<Charge>(object),
        ("customer", _) => parses_as::<Customer>(object),
        ("dispute", _) => parses_as::<Dispute>(object),
        ("invoice", _) => parses_as::<Invoice>(object),
        ("payment_intent", _) => parses_as::<PaymentIntent>(object),
        ("refund", _) => parses_as::<Refund>(object),
        ("subscription", _) => parses_as::<Subscription>(object),
        ("transfer", _) => parses_as::<Transfer>(object),
        ("transfer_reversal", _) => parses_as::<TransferReversal>(object),
        (other, _) => Err(format!("the stand-in holds a {other:?}, which this test does not know: add it")),
    }
}

/// A GET of the stand-in, as our client makes it.
async fn get(t: &TestApp, path: &str) -> Value {
    let answer = common::http_client()
        .get(format!("{}{}", t.stand_in().url(), path.trim_start_matches('/')))
        .bearer_auth("sk_test_standin")
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "GET {path}: {}", answer.status());
    answer.json().await.unwrap()
}

fn list_of<T: Deserialize>(page: &Value) -> Result<(), String> {
    miniserde::json::from_str::<stripe_types::List<T>>(&page.to_string())
        .map(drop)
        .map_err(|_| format!("not Stripe's list shape: {page:#}"))
}

#[tokio::test]
async fn every_object_and_list_the_stand_in_answers_is_stripes_shape() {
    let t = TestApp::with_stripe(&[("PLATFORM_FEE_BPS", "1000")]).await;
    // A payment partly refunded, released, refunded in the dashboard (its reversal), disputed.
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    assert_eq!(refund(&t, &payer, &payment_id, Some(json!({"amount": 500}))).await.status, 200);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    let shown = t.authed(handle, "GET", &format!("/payments/{payment_id}"), token(&payer), &[], None).await.body;
    let pi = shown["stripe_payment_intent_id"].as_str().unwrap().to_owned();
    let now = shared::time::now().unix_timestamp();
    for (kind, object) in t.stand_in().dashboard_refund(&pi, 300) {
        assert_eq!(t.deliver(&stripe_event(&kind, now, object)).await.status, 200);
    }
    assert_eq!(t.stand_in().created("trr_").len(), 1, "the dashboard refund was recovered");
    let (_, events) = t.stand_in().open_dispute(&pi, 200);
    for (kind, object) in events {
        assert_eq!(t.deliver(&stripe_event(&kind, now + 1, object)).await.status, 200);
    }
    // A subscription, changed.
    let (_, tokens) = t.logged_in("subscriber").await;
    let started =
        t.authed(handle, "POST", "/subscriptions", token(&tokens), &[], Some(json!({"price_id": "price_gold"}))).await;
    assert_eq!(started.status, 201, "{:?}", started.body);

    let mut wrong = Vec::new();
    for object in t.stand_in().created("") {
        if let Err(why) = check(&object) {
            wrong.push(why);
        }
    }
    let transfer = t.stand_in().created("tr_").into_iter().find(|t| t["object"] == "transfer").unwrap();
    let lists = [
        (format!("/v1/refunds?payment_intent={pi}"), list_of::<stripe_shared::Refund> as fn(&Value) -> _),
        (format!("/v1/transfers?transfer_group={payment_id}"), list_of::<stripe_shared::Transfer>),
        (
            format!("/v1/transfers/{}/reversals", transfer["id"].as_str().unwrap()),
            list_of::<stripe_shared::TransferReversal>,
        ),
    ];
    for (path, parses) in lists {
        if let Err(why) = parses(&get(&t, &path).await) {
            wrong.push(format!("GET {path}: {why}"));
        }
    }
    let expanded = get(&t, &format!("/v1/payment_intents/{pi}?expand[]=latest_charge.balance_transaction")).await;
    if let Err(why) = check(&expanded) {
        wrong.push(format!("expanded: {why}"));
    }
    assert!(wrong.is_empty(), "{} answers are not Stripe's:\n{}", wrong.len(), wrong.join("\n\n"));
}
