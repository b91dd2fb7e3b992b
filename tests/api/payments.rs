//! Providers, payments, Idempotency-Key, release and refunds, against the Stripe stand-in.

use crate::common;

use crate::common::{
    TestApp,
    money::{backdate_queue, held_payment, mark_succeeded, pay, provider, release, status_of, token},
    s,
};
use serde_json::json;
use shared::api::pay::{handle, handle_release};
use stripe_stand_in::Failure;

#[tokio::test]
async fn without_stripe_configured_payment_routes_answer_503() {
    let t = TestApp::new().await; // the stack's secret has no Stripe key
    let (_, tokens) = t.logged_in("no-stripe").await;
    let response = t.authed(handle, "POST", "/providers", token(&tokens), &[], None).await;
    assert_eq!((response.status, response.body["code"].as_str()), (503, Some("payments_unavailable")));
}

#[tokio::test]
async fn a_provider_gets_one_connected_account_and_a_fresh_link_each_time() {
    let t = TestApp::with_stripe(&[]).await;
    let (tokens, provider_id) = provider(&t, false).await;
    let again = t.authed(handle, "POST", "/providers", token(&tokens), &[], None).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body["provider_id"], provider_id.as_str());
    assert_eq!(again.body["charges_enabled"], false);
    assert_eq!(again.body["payouts_enabled"], false);
    let accounts = t.stand_in().created("acct_");
    assert_eq!(accounts.len(), 1, "one connected account");
    assert_eq!(again.body["stripe_account_id"], accounts[0]["id"]);
    let links = t.stand_in().received("/v1/account_links");
    assert_eq!(links.len(), 2);
    assert_ne!(links[0].idempotency_key, links[1].idempotency_key, "links are fresh");
    let account_request = &t.stand_in().received("/v1/accounts")[0];
    assert_eq!(account_request.idempotency_key.as_deref(), Some(format!("account:{provider_id}").as_str()));
    assert_eq!(account_request.form.get("type").map(String::as_str), Some("express"));

    let own = t.authed(handle, "GET", &format!("/providers/{provider_id}"), token(&tokens), &[], None).await;
    assert_eq!(own.status, 200);
    let (_, stranger) = t.logged_in("stranger").await;
    let other = t.authed(handle, "GET", &format!("/providers/{provider_id}"), token(&stranger), &[], None).await;
    assert_eq!(other.status, 404);

    let invalid = t
        .authed(handle, "POST", "/providers", token(&stranger), &[], Some(json!({"country": "usa", "phone": "12"})))
        .await;
    let unassigned =
        t.authed(handle, "POST", "/providers", token(&stranger), &[], Some(json!({"country": "YY"}))).await;
    assert_eq!((unassigned.status, unassigned.body["errors"][0]["field"].as_str()), (400, Some("country")));
    assert_eq!((invalid.status, invalid.body["code"].as_str()), (400, Some("validation_failed")));
}

#[tokio::test]
async fn routes_that_call_stripe_are_rate_limited_per_user() {
    let t = TestApp::with_stripe(&[("RATE_LIMIT_STRIPE", "2/60")]).await;
    let (_, tokens) = t.logged_in("stripe-limit").await;
    for _ in 0..2 {
        assert_eq!(t.authed(handle, "POST", "/providers", token(&tokens), &[], None).await.status, 201);
    }
    let limited = t.authed(handle, "POST", "/providers", token(&tokens), &[], None).await;
    assert_eq!((limited.status, limited.body["code"].as_str()), (429, Some("rate_limited")));
    assert!(limited.header("retry-after").is_some());
    let subscription =
        t.authed(handle, "POST", "/subscriptions", token(&tokens), &[], Some(json!({"price_id": "price_gold"}))).await;
    assert_eq!(subscription.status, 429, "one budget across the Stripe routes");
    assert_eq!(t.stand_in().received("/v1/account_links").len(), 2, "no Stripe call past the limit");
    let (_, other) = t.logged_in("stripe-limit-other").await;
    assert_eq!(t.authed(handle, "POST", "/providers", token(&other), &[], None).await.status, 201, "per user");
}

#[tokio::test]
async fn concurrent_provider_creation_makes_one_account() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, tokens) = t.logged_in("provider-race").await;
    let access = token(&tokens).to_owned();
    let tasks = (0..8).map(|_| {
        let event = common::http_event("POST", "/providers", &[("authorization", &format!("Bearer {access}"))], None);
        common::spawn_invoke(t.app, handle, event)
    });
    let results: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.map(|(status, body)| (status, body["provider_id"].as_str().map(str::to_owned))).unwrap())
        .collect();
    assert!(results.iter().all(|(status, _)| *status == 201), "{results:?}");
    assert!(results.iter().all(|(_, id)| id == &results[0].1));
    assert_eq!(t.stand_in().created("acct_").len(), 1);
}

#[tokio::test]
async fn a_payment_is_created_once_per_idempotency_key() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = provider(&t, true).await;
    let (_, payer) = t.logged_in("payer").await;

    let missing = t
        .authed(
            handle,
            "POST",
            "/payments",
            token(&payer),
            &[],
            Some(json!({"amount": 2500, "currency": "usd", "provider_id": provider_id})),
        )
        .await;
    assert_eq!((missing.status, missing.body["code"].as_str()), (400, Some("validation_failed")));

    let first = pay(&t, &payer, &provider_id, "order-1", 2500).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.body["status"], "requires_payment");
    assert_eq!(first.body["amount"], 2500);
    assert_eq!(first.body["currency"], "usd");
    assert_eq!(first.body["provider_id"], provider_id.as_str());
    assert!(first.body["client_secret"].as_str().unwrap().contains("_secret_"));
    assert!(first.header("idempotent-replayed").is_none());
    let payment_id = first.body["payment_id"].as_str().unwrap();

    let intents = t.stand_in().received("/v1/payment_intents");
    assert_eq!(intents.len(), 1);
    assert_eq!(intents[0].form.get("transfer_group").map(String::as_str), Some(payment_id));
    assert_eq!(intents[0].form.get("metadata[payment_id]").map(String::as_str), Some(payment_id));
    assert_eq!(intents[0].form.get("amount").map(String::as_str), Some("2500"));
    assert!(intents[0].form.get("customer").is_some_and(|c| c.starts_with("cus_")));

    let replay = pay(&t, &payer, &provider_id, "order-1", 2500).await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(t.stand_in().received("/v1/payment_intents").len(), 1, "a replay asks Stripe nothing");

    let mismatch = pay(&t, &payer, &provider_id, "order-1", 9999).await;
    assert_eq!((mismatch.status, mismatch.body["code"].as_str()), (422, Some("idempotency_mismatch")));

    // A second payment reuses the customer.
    assert_eq!(pay(&t, &payer, &provider_id, "order-2", 1000).await.status, 201);
    assert_eq!(t.stand_in().created("cus_").len(), 1);

    let stored = t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap();
    assert_eq!(s(&stored, "status"), "requires_payment");
    let audit = t.partition(&format!("AUDIT#{}", t.me(token(&payer)).await.body["org_id"].as_str().unwrap())).await;
    assert_eq!(audit.iter().filter(|e| s(e, "action") == "payment.created").count(), 2);
}

#[tokio::test]
async fn concurrent_duplicates_of_one_key_create_one_payment() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = provider(&t, true).await;
    let (_, payer) = t.logged_in("payer-race").await;
    let access = token(&payer).to_owned();
    let body = json!({"amount": 1500, "currency": "usd", "provider_id": provider_id}).to_string();
    let tasks = (0..10).map(|_| {
        let event = common::http_event(
            "POST",
            "/payments",
            &[("authorization", &format!("Bearer {access}")), ("idempotency-key", "dup-key")],
            Some(&body),
        );
        common::spawn_invoke(t.app, handle, event)
    });
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    let created: Vec<_> = results.iter().filter(|(status, _)| *status == 201).collect();
    assert!(!created.is_empty());
    assert!(created.iter().all(|(_, b)| b["payment_id"] == created[0].1["payment_id"]), "{results:?}");
    assert!(
        results.iter().filter(|(st, _)| *st != 201).all(|(st, b)| *st == 409 && b["code"] == "idempotency_in_progress"),
        "{results:?}"
    );
    assert_eq!(t.stand_in().received("/v1/payment_intents").len(), 1);
}

#[tokio::test]
async fn viewers_cannot_pay_and_strangers_cannot_see_payments() {
    let t = TestApp::with_stripe(&[]).await;
    let (provider_tokens, provider_id) = provider(&t, true).await;
    let (admin, _, viewer, _) = t.org_with_member("viewer").await;
    let denied = pay(&t, &viewer, &provider_id, "viewer-key", 1000).await;
    assert_eq!((denied.status, denied.body["code"].as_str()), (403, Some("forbidden")));

    // A member pays; the member, the provider and the member's org admin can see it.
    let (member_admin, _, member, _) = t.org_with_member("member").await;
    let created = pay(&t, &member, &provider_id, "member-key", 1000).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let path = format!("/payments/{}", created.body["payment_id"].as_str().unwrap());
    for (who, tokens, expected) in [
        ("payer", &member, 200),
        ("provider", &provider_tokens, 200),
        ("payer's admin", &member_admin, 200),
        ("other org's admin", &admin, 404),
        ("viewer elsewhere", &viewer, 404),
    ] {
        let response = t.authed(handle, "GET", &path, token(tokens), &[], None).await;
        assert_eq!(response.status, expected, "{who}");
        if expected == 200 {
            for key in [
                "payment_id",
                "status",
                "amount",
                "currency",
                "provider_id",
                "payer_user_id",
                "stripe_payment_intent_id",
                "created_at",
                "updated_at",
            ] {
                assert!(response.body.get(key).is_some(), "{key}");
            }
        }
    }
}

#[tokio::test]
async fn release_needs_a_succeeded_payment_and_an_onboarded_provider() {
    let t = TestApp::with_stripe(&[]).await;
    let (provider_tokens, provider_id) = provider(&t, false).await;
    let (_, payer) = t.logged_in("payer").await;
    let created = pay(&t, &payer, &provider_id, "k", 2500).await;
    let payment_id = created.body["payment_id"].as_str().unwrap().to_owned();

    let early = release(&t, &payer, &payment_id).await;
    assert_eq!((early.status, early.body["code"].as_str()), (409, Some("payment_not_succeeded")));
    mark_succeeded(&t, &payment_id).await;
    let not_onboarded = release(&t, &payer, &payment_id).await;
    assert_eq!((not_onboarded.status, not_onboarded.body["code"].as_str()), (409, Some("onboarding_required")));
    assert!(t.stand_in().received("/v1/transfers").is_empty(), "no transfer was attempted");
    assert_eq!(status_of(&t, &payment_id).await, "succeeded");

    let by_provider = release(&t, &provider_tokens, &payment_id).await;
    assert_eq!(by_provider.status, 403, "the provider can see but not release");
    let (_, stranger) = t.logged_in("stranger").await;
    assert_eq!(release(&t, &stranger, &payment_id).await.status, 404);
}

#[tokio::test]
async fn a_release_asks_stripe_about_a_provider_whose_account_event_was_lost_at_most_once_a_minute() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, provider_id, payment_id) = held_payment(&t, false).await;
    let provider_pk = format!("PROVIDER#{provider_id}");
    let account = s(&t.item(&provider_pk, "PROVIDER").await.unwrap(), "stripe_account_id");
    let asked = || t.stand_in().received(&format!("/v1/accounts/{account}")).len();

    // Not onboarded at Stripe either: concurrent releases ask Stripe once between them.
    let access = token(&payer).to_owned();
    let tasks = (0..5).map(|_| {
        let path = format!("/payments/{payment_id}/release");
        let event = common::http_event("POST", &path, &[("authorization", &format!("Bearer {access}"))], None);
        common::spawn_invoke(t.app, handle_release, event)
    });
    for result in futures::future::join_all(tasks).await {
        let (status, body) = result.unwrap();
        assert_eq!((status, body["code"].as_str()), (409, Some("onboarding_required")), "{body}");
    }
    assert_eq!(asked(), 1, "one look at Stripe for all of them");

    // Onboarding finishes at Stripe, and its account.updated is lost. Within the minute the
    // release still refuses without asking again...
    t.stand_in().onboard(&account);
    assert_eq!(release(&t, &payer, &payment_id).await.body["code"], "onboarding_required");
    assert_eq!(asked(), 1);
    assert!(t.stand_in().received("/v1/transfers").is_empty());
    // ...and once the last look is a minute old, it asks, finds the account enabled and pays.
    let minute_ago = shared::time::now().unix_timestamp() - shared::payments::provider::ONBOARDING_RECHECK_SECONDS;
    t.set(&provider_pk, "PROVIDER", &[("account_checked_at", AttributeValue::N(minute_ago.to_string()))]).await;
    let released = release(&t, &payer, &payment_id).await;
    assert_eq!((released.status, released.body["status"].as_str()), (200, Some("released")), "{:?}", released.body);
    assert_eq!(asked(), 2);
    let stored = t.item(&provider_pk, "PROVIDER").await.unwrap();
    assert_eq!((s(&stored, "charges_enabled"), s(&stored, "payouts_enabled")), ("true".into(), "true".into()));
}

#[tokio::test]
async fn fifty_concurrent_releases_make_exactly_one_transfer() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, provider_id, payment_id) = held_payment(&t, true).await;
    let access = token(&payer).to_owned();
    let tasks = (0..50).map(|_| {
        let event = common::http_event(
            "POST",
            &format!("/payments/{payment_id}/release"),
            &[("authorization", &format!("Bearer {access}"))],
            None,
        );
        common::spawn_invoke(t.app, handle_release, event)
    });
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    let fresh: Vec<_> = results.iter().filter(|(st, b)| *st == 200 && b["already_released"] == false).collect();
    assert_eq!(fresh.len(), 1, "{results:?}");
    let transfer_id = fresh[0].1["transfer_id"].as_str().unwrap();
    for (status, body) in &results {
        match status {
            200 => assert_eq!(body["transfer_id"], transfer_id, "no other success with another transfer"),
            409 => assert_eq!(body["code"], "release_in_progress"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let transfers = t.stand_in().received("/v1/transfers");
    assert_eq!(transfers.len(), 1, "exactly one transfer request");
    assert_eq!(transfers[0].idempotency_key.as_deref(), Some(format!("release:{payment_id}:1").as_str()));
    assert_eq!(transfers[0].form.get("amount").map(String::as_str), Some("2500"));
    assert_eq!(transfers[0].form.get("transfer_group").map(String::as_str), Some(payment_id.as_str()));
    let provider = t.item(&format!("PROVIDER#{provider_id}"), "PROVIDER").await.unwrap();
    assert_eq!(transfers[0].form.get("destination"), Some(&s(&provider, "stripe_account_id")));

    let stored = t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap();
    assert_eq!(s(&stored, "status"), "released");
    assert_eq!(s(&stored, "transfer_id"), transfer_id);
    assert!(!stored.contains_key("GSI2PK"), "off the releasing queue");

    let again = release(&t, &payer, &payment_id).await;
    assert_eq!((again.status, again.body["already_released"].as_bool()), (200, Some(true)));
    assert_eq!(again.body["transfer_id"], transfer_id);

    // Told about it: an event, an SMS to the provider, an audit entry.
    let phone = s(&provider, "phone");
    let sms = t.sms_to(&phone).await;
    assert_eq!(sms.len(), 1, "one SMS to the provider: {sms:?}");
    assert!(sms[0].contains("25.00 USD"), "{}", sms[0]);
    assert!(
        t.published_events()
            .await
            .iter()
            .any(|(k, m)| k == "payment.released" && m["data"]["payment_id"] == payment_id.as_str())
    );
    let payer_org = t.me(token(&payer)).await.body["org_id"].as_str().unwrap().to_owned();
    let audit = t.partition(&format!("AUDIT#{payer_org}")).await;
    assert_eq!(audit.iter().filter(|e| s(e, "action") == "payment.released" && s(e, "status") == "success").count(), 1);
}

/// A Stripe failure whose outcome is unknown leaves the payment `releasing` (202), refunds
/// are refused meanwhile, and a later release call (once reconciliation is due) finishes it
/// with exactly one transfer.
async fn release_survives(t: &TestApp, failure: Failure) {
    let (payer, _, _, payment_id) = held_payment(t, true).await;
    t.stand_in().fail("/v1/transfers", failure, 100);
    let unknown = release(t, &payer, &payment_id).await;
    assert_eq!((unknown.status, &unknown.body), (202, &json!({"payment_id": payment_id, "status": "releasing"})));
    assert_eq!(status_of(t, &payment_id).await, "releasing", "the transfer may exist: stays releasing");
    let stored = t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap();
    assert_eq!(s(&stored, "GSI2PK"), "RELEASING", "on the work queue");
    let refund = t.authed(handle, "POST", &format!("/payments/{payment_id}/refund"), token(&payer), &[], None).await;
    assert_eq!((refund.status, refund.body["code"].as_str()), (409, Some("conflict")), "no refund while unresolved");
    let early = release(t, &payer, &payment_id).await;
    assert_eq!(early.body["code"], "release_in_progress", "not due yet");

    t.stand_in().heal();
    backdate_queue(t, &payment_id).await;
    let ok = release(t, &payer, &payment_id).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let keys: Vec<_> = t
        .stand_in()
        .received("/v1/transfers")
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.idempotency_key)
        .collect();
    assert!(
        keys.iter().all(|k| k.as_deref() == Some(format!("release:{payment_id}:1").as_str())),
        "one key throughout"
    );
    assert_eq!(t.stand_in().created("tr_").len(), 1, "one transfer in all");
    assert_eq!(ok.body["transfer_id"], t.stand_in().created("tr_")[0]["id"]);
    assert_eq!(status_of(t, &payment_id).await, "released");
    assert!(!t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap().contains_key("GSI2PK"));
}

#[tokio::test]
async fn a_stripe_server_error_leaves_the_payment_releasing_and_reconciliation_pays_once() {
    let t = TestApp::with_stripe(&[]).await;
    release_survives(&t, Failure::ServerError).await;
}

#[tokio::test]
async fn a_stripe_timeout_leaves_the_payment_releasing_and_reconciliation_pays_once() {
    let t = TestApp::with_stripe(&[]).await;
    release_survives(&t, Failure::Timeout(std::time::Duration::from_millis(2500))).await;
}

#[tokio::test]
async fn a_definite_refusal_returns_the_payment_to_succeeded() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    // Stripe saves this refusal with its key, as for requests that started executing.
    t.stand_in().fail("/v1/transfers", Failure::RefusedSaved, 1);
    let refused = release(&t, &payer, &payment_id).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (502, Some("payment_provider_error")));
    assert!(!refused.body["detail"].as_str().unwrap().contains("declined"), "Stripe's text is not passed through");
    assert_eq!(status_of(&t, &payment_id).await, "succeeded");
    assert!(!t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap().contains_key("GSI2PK"));
    // Once the cause is fixed, a new attempt gets a new key, not the saved refusal.
    let ok = release(&t, &payer, &payment_id).await;
    assert_eq!((ok.status, ok.body["already_released"].as_bool()), (200, Some(false)), "{:?}", ok.body);
    assert_eq!(t.stand_in().created("tr_").len(), 1);
    let keys: Vec<_> = t.stand_in().received("/v1/transfers").into_iter().filter_map(|r| r.idempotency_key).collect();
    assert_eq!(keys, [format!("release:{payment_id}:1"), format!("release:{payment_id}:2")]);
}

#[tokio::test]
async fn refunds_work_only_before_release() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, provider_tokens, _, payment_id) = held_payment(&t, true).await;
    let path = format!("/payments/{payment_id}/refund");
    // The provider's owner may give all of it back, never decide a part.
    let key = [("idempotency-key", "provider-part")];
    let part = Some(json!({"amount": 100}));
    let by_provider = t.authed(handle, "POST", &path, token(&provider_tokens), &key, part).await;
    assert_eq!(by_provider.status, 403);
    let refunded =
        t.authed(handle, "POST", &path, token(&payer), &[], Some(json!({"reason": "requested_by_customer"}))).await;
    assert_eq!(
        (refunded.status, &refunded.body),
        (200, &json!({"payment_id": payment_id, "status": "refunded", "amount_refunded": 2500}))
    );
    let refunds = t.stand_in().posted("/v1/refunds");
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].idempotency_key.as_deref(), Some(format!("refund:{payment_id}:1").as_str()));
    assert_eq!(refunds[0].form.get("amount").map(String::as_str), Some("2500"));
    assert_eq!(status_of(&t, &payment_id).await, "refunded");
    assert_eq!(release(&t, &payer, &payment_id).await.body["code"], "payment_not_succeeded");

    // After release, no refund.
    let (payer, _, _, released) = held_payment(&t, true).await;
    assert_eq!(release(&t, &payer, &released).await.status, 200);
    let late = t.authed(handle, "POST", &format!("/payments/{released}/refund"), token(&payer), &[], None).await;
    assert_eq!((late.status, late.body["code"].as_str()), (409, Some("conflict")));
    assert_eq!(t.stand_in().posted("/v1/refunds").len(), 1, "no second refund request");
}

#[tokio::test]
async fn subscriptions_start_list_and_cancel() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, tokens) = t.logged_in("subscriber").await;
    let bad = t.authed(handle, "POST", "/subscriptions", token(&tokens), &[], Some(json!({"price_id": "gold"}))).await;
    assert_eq!((bad.status, bad.body["code"].as_str()), (400, Some("validation_failed")));

    let started = t
        .authed(
            handle,
            "POST",
            "/subscriptions",
            token(&tokens),
            &[("idempotency-key", "sub-1")],
            Some(json!({"price_id": "price_gold"})),
        )
        .await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    let id = started.body["subscription_id"].as_str().unwrap().to_owned();
    assert_eq!(started.body["status"], "incomplete");
    let replay = t
        .authed(
            handle,
            "POST",
            "/subscriptions",
            token(&tokens),
            &[("idempotency-key", "sub-1")],
            Some(json!({"price_id": "price_gold"})),
        )
        .await;
    assert_eq!((replay.status, replay.header("idempotent-replayed")), (201, Some("true")));
    let requests = t.stand_in().received("/v1/subscriptions");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].form.get("items[0][price]").map(String::as_str), Some("price_gold"));
    assert_eq!(requests[0].form.get("payment_behavior").map(String::as_str), Some("default_incomplete"));
    assert!(requests[0].form.get("customer").is_some_and(|c| c.starts_with("cus_")));

    let listed = t.authed(handle, "GET", "/subscriptions", token(&tokens), &[], None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["items"][0]["subscription_id"], id.as_str());

    let (_, stranger) = t.logged_in("stranger").await;
    let foreign = t.authed(handle, "DELETE", &format!("/subscriptions/{id}"), token(&stranger), &[], None).await;
    assert_eq!(foreign.status, 404);
    assert!(
        t.authed(handle, "GET", "/subscriptions", token(&stranger), &[], None).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let later = t
        .authed(
            handle,
            "DELETE",
            &format!("/subscriptions/{id}"),
            token(&tokens),
            &[],
            Some(json!({"at_period_end": true})),
        )
        .await;
    assert_eq!(later.status, 200, "{:?}", later.body);
    assert_eq!(later.body["cancel_at_period_end"], true);
    let now = t.authed(handle, "DELETE", &format!("/subscriptions/{id}"), token(&tokens), &[], None).await;
    assert_eq!(now.body["status"], "canceled");
    assert!(t.stand_in().received("/v1/subscriptions").iter().any(|r| r.method == "DELETE"));
    assert!(
        t.published_events()
            .await
            .iter()
            .any(|(k, m)| k == "subscription.updated" && m["data"]["subscription_id"] == id.as_str())
    );
}

#[tokio::test]
async fn a_crashed_attempt_frees_its_key_after_the_lock_expires() {
    use sha2::Digest;
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = provider(&t, true).await;
    let (_, payer) = t.logged_in("payer-crash").await;
    let user_id = t.me(token(&payer)).await.body["user_id"].as_str().unwrap().to_owned();
    let pk = format!("IDEMP#payments#{user_id}#{}", hex::encode(sha2::Sha256::digest(b"crash-key")));
    let body = json!({"amount": 1200, "currency": "usd", "provider_id": provider_id, "description": "Lesson"});
    let hash = shared::payments::idempotency::request_hash("POST", "/payments", body.to_string().as_bytes());
    // An attempt that took the key and died: still locked, then expired.
    let now = shared::time::now().unix_timestamp();
    let put = |lock: i64| {
        let record = json!({
            "PK": pk, "SK": "IDEMPOTENCY", "status": "in_progress", "request_hash": hash,
            "lock_expires": lock, "ttl": now + 86400,
        });
        async move { t.app.table().put_item(&record).await }
    };
    put(now + 60).await.unwrap();
    let locked = pay(&t, &payer, &provider_id, "crash-key", 1200).await;
    assert_eq!((locked.status, locked.body["code"].as_str()), (409, Some("idempotency_in_progress")));
    put(now - 1).await.unwrap();
    let reclaimed = pay(&t, &payer, &provider_id, "crash-key", 1200).await;
    assert_eq!(reclaimed.status, 201, "{:?}", reclaimed.body);
    assert!(reclaimed.header("idempotent-replayed").is_none());
}

#[tokio::test]
async fn a_failed_payment_request_gives_its_key_back() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = provider(&t, true).await;
    let (_, payer) = t.logged_in("payer-retry").await;
    t.stand_in().fail("/v1/payment_intents", Failure::ServerError, 100);
    let failed = pay(&t, &payer, &provider_id, "retry-key", 1200).await;
    assert_eq!(failed.status, 503);
    t.stand_in().heal();
    let retried = pay(&t, &payer, &provider_id, "retry-key", 1200).await;
    assert_eq!(retried.status, 201, "{:?}", retried.body);
    assert!(retried.header("idempotent-replayed").is_none());
}

#[tokio::test]
async fn a_refusal_from_stripe_is_502_payment_provider_error_and_frees_the_key() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = provider(&t, true).await;
    let (_, payer) = t.logged_in("payer-refused").await;
    t.stand_in().fail("/v1/payment_intents", Failure::Refused, 1);
    let refused = pay(&t, &payer, &provider_id, "refused-key", 1200).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (502, Some("payment_provider_error")));
    assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    assert_eq!(t.stand_in().received("/v1/payment_intents").len(), 1, "a refusal is not retried");
    let retried = pay(&t, &payer, &provider_id, "refused-key", 1200).await;
    assert_eq!(retried.status, 201, "{:?}", retried.body);
}

#[tokio::test]
async fn the_longest_idempotency_key_is_taken_and_what_reaches_stripe_fits_its_255_characters() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, tokens) = t.logged_in("longkey").await;
    let longest = "k".repeat(255);
    let body = Some(json!({"price_id": "price_gold"}));
    let started = t
        .authed(handle, "POST", "/subscriptions", token(&tokens), &[("idempotency-key", &longest)], body.clone())
        .await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    let sent = t.stand_in().received("/v1/subscriptions");
    let key = sent[0].idempotency_key.as_deref().expect("an idempotency key");
    assert!(key.len() <= stripe_stand_in::MAX_IDEMPOTENCY_KEY_LEN, "{} characters", key.len());
    assert!(!key.contains(&longest), "the caller's key is hashed into ours");

    for bad in ["k".repeat(256), "has space".to_owned(), "tab\tkey".to_owned()] {
        let refused = t
            .authed(handle, "POST", "/subscriptions", token(&tokens), &[("idempotency-key", &bad)], body.clone())
            .await;
        assert_eq!((refused.status, refused.body["code"].as_str()), (400, Some("validation_failed")), "{bad:.20}");
    }
    assert_eq!(t.stand_in().received("/v1/subscriptions").len(), 1, "nothing more reached Stripe");
}

/// As Stripe does: a key replays its first answer only for the same request; with other
/// parameters, or on another endpoint, it is 400 `idempotency_error` and nothing is done.
#[tokio::test]
async fn the_stand_in_refuses_a_key_reused_with_other_parameters_as_stripe_does() {
    let t = TestApp::with_stripe(&[]).await;
    let http = common::http_client();
    let post = |path: &str, key: &str, form: &[(&str, &str)]| {
        let request = http
            .post(format!("{}v1/{path}", t.stand_in().url()))
            .bearer_auth("sk_test_standin")
            .header("idempotency-key", key)
            .form(form);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let params = [("amount", "1200"), ("currency", "usd")];
    let (status, first) = post("payment_intents", "key-1", &params).await;
    assert_eq!(status, 200, "{first}");
    let (status, replayed) = post("payment_intents", "key-1", &params).await;
    assert_eq!((status, &replayed["id"]), (200, &first["id"]), "the same request replays");
    let (status, other) = post("payment_intents", "key-1", &[("amount", "1300"), ("currency", "usd")]).await;
    assert_eq!((status, other["error"]["type"].as_str()), (400, Some("idempotency_error")), "{other}");
    let (status, elsewhere) = post("customers", "key-1", &[]).await;
    assert_eq!((status, elsewhere["error"]["type"].as_str()), (400, Some("idempotency_error")), "{elsewhere}");
    assert_eq!(t.stand_in().created("pi_").len(), 1, "nothing more was created");
}

/// Amounts are checked against the currency, as Stripe would check them, before anything
/// reaches Stripe: its minimum charge (0.30 GBP, 15.00 CZK), and the steps it charges in
/// (whole krónur in ISK, which the API keeps in two decimals). A refund likewise.
#[tokio::test]
async fn amounts_follow_stripes_rules_for_their_currency() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = provider(&t, true).await;
    let (_, payer) = t.logged_in("currency-payer").await;
    let pay = |amount: i64, currency: &'static str| {
        let body = json!({"amount": amount, "currency": currency, "provider_id": provider_id});
        let key = uuid::Uuid::new_v4().to_string();
        let payer = payer.clone();
        let t = &t;
        async move { t.authed(handle, "POST", "/payments", token(&payer), &[("idempotency-key", &key)], Some(body)).await }
    };
    for (amount, currency, why) in [
        (29, "gbp", "at least 30 (0.30 GBP)"),
        (1_499, "czk", "at least 1500 (15.00 CZK)"),
        (49, "jpy", "at least 50 (50 JPY)"),
        (50_050, "isk", "a multiple of 100 in ISK"),
        (100_000_000, "usd", "at most 99999999"),
    ] {
        let refused = pay(amount, currency).await;
        assert_eq!((refused.status, refused.body["errors"][0]["field"].as_str()), (400, Some("amount")), "{currency}");
        let message = refused.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(why), "{amount} {currency}: {message}");
    }
    assert!(t.stand_in().received("/v1/payment_intents").is_empty(), "nothing reached Stripe");

    for (amount, currency) in [(30, "gbp"), (1_500, "czk"), (50_000, "isk")] {
        assert_eq!(pay(amount, currency).await.status, 201, "{amount} {currency}");
    }
    let isk = pay(500_000, "isk").await;
    let payment_id = isk.body["payment_id"].as_str().unwrap().to_owned();
    mark_succeeded(&t, &payment_id).await;
    let path = format!("/payments/{payment_id}/refund");
    let odd = t
        .authed(handle, "POST", &path, token(&payer), &[("idempotency-key", "isk-odd")], Some(json!({"amount": 1_050})))
        .await;
    assert_eq!((odd.status, odd.body["errors"][0]["field"].as_str()), (400, Some("amount")), "{:?}", odd.body);
    assert!(t.stand_in().posted("/v1/refunds").is_empty());
    let even = t
        .authed(
            handle,
            "POST",
            &path,
            token(&payer),
            &[("idempotency-key", "isk-even")],
            Some(json!({"amount": 1_000})),
        )
        .await;
    assert_eq!((even.status, even.body["amount_refunded"].as_i64()), (200, Some(1_000)), "{:?}", even.body);
}
