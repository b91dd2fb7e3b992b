//! No double payout, ever: release and refund when Stripe's answer is unknown, reconciliation,
//! partial refunds, disputes and crashes. Each sequence ends with exactly one transfer (or
//! one refund) recorded by the Stripe stand-in and a consistent payment.

use crate::common;

use std::time::Duration;

use crate::common::{
    TestApp,
    money::{
        backdate_queue, held_payment, mark_succeeded, onboard, pay, pay_in, provider, reconcile, refund,
        refund_with_key, release, status_of, token,
    },
    s, stripe_event,
};
use serde_json::{Value, json};
use shared::{
    api::pay::{handle, handle_release},
    payments::reconcile::Reconciled,
};
use stripe_stand_in::Failure;

fn transfers(t: &TestApp) -> Vec<Value> {
    t.stand_in().created("tr_")
}

fn refund_posts(t: &TestApp) -> Vec<stripe_stand_in::Received> {
    t.stand_in().posted("/v1/refunds")
}

fn transfer_posts(t: &TestApp) -> usize {
    t.stand_in().posted("/v1/transfers").len()
}

async fn payment(
    t: &TestApp,
    payment_id: &str,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap()
}

async fn audit_count(t: &TestApp, payer: &Value, action: &str) -> usize {
    let org = t.me(token(payer)).await.body["org_id"].as_str().unwrap().to_owned();
    t.partition(&format!("AUDIT#{org}"))
        .await
        .iter()
        .filter(|e| s(e, "action") == action && s(e, "status") == "success")
        .count()
}

fn now() -> i64 {
    shared::time::now().unix_timestamp()
}

/// A queue time long past: due at once.
fn long_ago() -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S("2026-01-01T00:00:00.000000Z".into())
}

/// The PaymentIntent behind a payment.
async fn intent_of(t: &TestApp, payment_id: &str) -> String {
    s(&payment(t, payment_id).await, "stripe_payment_intent_id")
}

const SLOW: Duration = Duration::from_millis(2500);

#[tokio::test]
async fn a_release_that_timed_out_after_stripe_paid_is_finished_with_that_transfer() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::Timeout(SLOW), 100);

    let answer = release(&t, &payer, &payment_id).await;
    assert_eq!((answer.status, &answer.body), (202, &json!({"payment_id": payment_id, "status": "releasing"})));
    assert_eq!(transfers(&t).len(), 1, "Stripe made the transfer; we never heard");
    let refused = refund(&t, &payer, &payment_id, None).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (409, Some("conflict")));
    assert!(refund_posts(&t).is_empty());
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::NotDue), "the request may still be running");

    t.stand_in().heal();
    backdate_queue(&t, &payment_id).await;
    let made = transfers(&t)[0]["id"].as_str().unwrap().to_owned();
    match reconcile(&t, &payment_id).await {
        Reconciled::Released { transfer_id, found } => assert_eq!((transfer_id.as_str(), found), (made.as_str(), true)),
        other => panic!("not released: {other:?}"),
    }
    let stored = payment(&t, &payment_id).await;
    assert_eq!((s(&stored, "status"), s(&stored, "transfer_id")), ("released".into(), made.clone()));
    assert!(!stored.contains_key("GSI2PK"), "off the work queue");
    assert_eq!(transfers(&t).len(), 1);
    assert_eq!(audit_count(&t, &payer, "payment.released").await, 1);
    let again = release(&t, &payer, &payment_id).await;
    assert_eq!((again.status, again.body["already_released"].as_bool()), (200, Some(true)));
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::NotDue));
}

#[tokio::test]
async fn a_release_retried_after_stripe_forgot_the_key_still_pays_once() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::Timeout(SLOW), 100);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    let posts = transfer_posts(&t);

    // Days later: Stripe has forgotten the key, so only the lookup stands between a retry
    // and a second transfer.
    t.stand_in().heal();
    t.stand_in().forget_idempotency_keys();
    backdate_queue(&t, &payment_id).await;
    let later = release(&t, &payer, &payment_id).await;
    assert_eq!((later.status, later.body["already_released"].as_bool()), (200, Some(true)), "{:?}", later.body);
    assert_eq!(later.body["transfer_id"], transfers(&t)[0]["id"]);
    assert_eq!(transfers(&t).len(), 1, "still one transfer");
    assert_eq!(transfer_posts(&t), posts, "no transfer was even asked for");
    assert_eq!(status_of(&t, &payment_id).await, "released");
}

#[tokio::test]
async fn a_500_after_stripe_made_the_transfer_is_reconciled_to_it() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    // Stripe saves the 500 with the key, so retrying with the key can never find out.
    t.stand_in().fail("/v1/transfers", Failure::ServerErrorAfterWork, 1);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    assert_eq!(transfers(&t).len(), 1);
    backdate_queue(&t, &payment_id).await;
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::Released { found: true, .. }));
    assert_eq!(s(&payment(&t, &payment_id).await, "transfer_id"), transfers(&t)[0]["id"].as_str().unwrap());
    assert_eq!(transfers(&t).len(), 1);
}

#[tokio::test]
async fn fifty_releases_and_ten_refunds_at_once_move_the_money_once() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let auth = format!("Bearer {}", token(&payer));
    let mut tasks = Vec::new();
    for i in 0..60 {
        let is_refund = i % 6 == 3; // 10 refunds among 50 releases
        let action = if is_refund { "refund" } else { "release" };
        let event =
            common::http_event("POST", &format!("/payments/{payment_id}/{action}"), &[("authorization", &auth)], None);
        tasks.push(if is_refund {
            common::spawn_invoke(t.app, handle, event)
        } else {
            common::spawn_invoke(t.app, handle_release, event)
        });
    }
    let results: Vec<(u16, Value)> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    for (status, body) in &results {
        assert!(matches!(status, 200 | 409), "only successes and conflicts: {status} {body}");
    }
    let (transferred, refunded) = (transfers(&t).len(), t.stand_in().created("re_").len());
    assert_eq!(transferred + refunded, 1, "one transfer or one refund, never both: {results:?}");
    let stored = payment(&t, &payment_id).await;
    if transferred == 1 {
        assert_eq!(s(&stored, "status"), "released");
        assert_eq!(s(&stored, "transfer_id"), transfers(&t)[0]["id"].as_str().unwrap());
    } else {
        assert_eq!((s(&stored, "status"), s(&stored, "amount_refunded")), ("refunded".into(), "2500".into()));
    }
}

/// The same race while Stripe is slow: every transfer times out after Stripe made it. Each
/// answer is a success, a conflict or "pending"; then ten callers at once (reconcilers and
/// releases) finish it, and the money has moved once, the payment recording that transfer.
#[tokio::test]
async fn fifty_releases_while_stripe_times_out_still_move_the_money_once() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::Timeout(SLOW), 1_000);
    let auth = format!("Bearer {}", token(&payer));
    let mut tasks = Vec::new();
    for i in 0..60 {
        let is_refund = i % 6 == 3;
        let action = if is_refund { "refund" } else { "release" };
        let event =
            common::http_event("POST", &format!("/payments/{payment_id}/{action}"), &[("authorization", &auth)], None);
        tasks.push(if is_refund {
            common::spawn_invoke(t.app, handle, event)
        } else {
            common::spawn_invoke(t.app, handle_release, event)
        });
    }
    let results: Vec<(u16, Value)> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    for (status, body) in &results {
        assert!(matches!(status, 200 | 202 | 409), "only successes, pending and conflicts: {status} {body}");
    }
    assert!(transfers(&t).len() + t.stand_in().created("re_").len() <= 1, "{results:?}");

    t.stand_in().heal();
    backdate_queue(&t, &payment_id).await;
    let reconcilers = (0..5).map(|_| async { format!("{:?}", reconcile(&t, &payment_id).await) });
    let releases = (0..5).map(|_| async { format!("{}", release(&t, &payer, &payment_id).await.status) });
    let (reconciled, released) =
        futures::future::join(futures::future::join_all(reconcilers), futures::future::join_all(releases)).await;
    let (transferred, refunded) = (transfers(&t), t.stand_in().created("re_"));
    assert_eq!(transferred.len() + refunded.len(), 1, "{reconciled:?} {released:?}");
    let stored = payment(&t, &payment_id).await;
    if let [made] = &transferred[..] {
        assert_eq!((s(&stored, "status"), s(&stored, "transfer_id")), ("released".into(), s_of(made)));
        assert!(!stored.contains_key("GSI2PK"), "off the work queue");
        assert_eq!(audit_count(&t, &payer, "payment.released").await, 1);
    } else {
        assert_eq!(s(&stored, "status"), "refunded");
    }
}

fn s_of(object: &Value) -> String {
    object["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn partial_refunds_leave_the_rest_to_release() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, provider_tokens, _, payment_id) = held_payment(&t, true).await;

    for (body, field) in [
        (json!({"amount": 0}), "amount"),
        (json!({"amount": -5}), "amount"),
        (json!({"amount": 2501}), "amount"),
        (json!({"reason": "bored"}), "reason"),
    ] {
        let bad = refund(&t, &payer, &payment_id, Some(body.clone())).await;
        assert_eq!((bad.status, bad.body["code"].as_str()), (400, Some("validation_failed")), "{body}");
        assert_eq!(bad.body["errors"][0]["field"], field, "{body}");
    }
    let malformed = refund(&t, &payer, &payment_id, Some(json!({"amount": "ten"}))).await;
    assert_eq!(malformed.status, 400);
    assert_eq!(refund(&t, &provider_tokens, &payment_id, Some(json!({"amount": 100}))).await.status, 403);
    let (_, stranger) = t.logged_in("stranger").await;
    assert_eq!(refund(&t, &stranger, &payment_id, Some(json!({"amount": 100}))).await.status, 404);
    assert_eq!(refund(&t, &payer, "no-such-payment", None).await.status, 404);
    assert!(refund_posts(&t).is_empty(), "bad input asks Stripe nothing");
    assert_eq!(s(&payment(&t, &payment_id).await, "amount_refunded"), "0", "and changes nothing");

    let first = refund(&t, &payer, &payment_id, Some(json!({"amount": 1000}))).await;
    assert_eq!(
        (first.status, &first.body),
        (200, &json!({"payment_id": payment_id, "status": "succeeded", "amount_refunded": 1000}))
    );
    let second = refund(&t, &payer, &payment_id, Some(json!({"amount": 500, "reason": "duplicate"}))).await;
    assert_eq!((second.status, second.body["amount_refunded"].as_i64()), (200, Some(1500)));
    let too_much = refund(&t, &payer, &payment_id, Some(json!({"amount": 1001}))).await;
    assert_eq!(too_much.status, 400, "only 1000 is left");
    let requests = refund_posts(&t);
    let keys: Vec<_> = requests.iter().map(|r| r.idempotency_key.clone().unwrap()).collect();
    // Keys of their own, derived from the requests' (`refund:{id}:{attempt}:{digest}`).
    assert_eq!(keys.len(), 2);
    for (key, attempt) in keys.iter().zip(1..) {
        assert!(key.starts_with(&format!("refund:{payment_id}:{attempt}:")) && key.len() < 120, "{key}");
    }
    assert_eq!(requests[1].form.get("amount").map(String::as_str), Some("500"));
    assert_eq!(audit_count(&t, &payer, "payment.refunded").await, 2);

    let released = release(&t, &payer, &payment_id).await;
    assert_eq!(released.status, 200, "{:?}", released.body);
    let posts = t.stand_in().received("/v1/transfers");
    assert_eq!(transfers(&t).len(), 1);
    assert_eq!(posts[0].form.get("amount").map(String::as_str), Some("1000"), "the remainder");
    let stored = payment(&t, &payment_id).await;
    assert_eq!(posts[0].form.get("source_transaction"), Some(&s(&stored, "stripe_charge_id")));
    assert!(s(&stored, "stripe_charge_id").starts_with("ch_"));
    assert_eq!(posts[0].form.get("metadata[payment_id]"), Some(&payment_id));
    let shown = t.authed(handle, "GET", &format!("/payments/{payment_id}"), token(&payer), &[], None).await;
    assert_eq!((shown.body["status"].as_str(), shown.body["amount_refunded"].as_i64()), (Some("released"), Some(1500)));
    assert_eq!(refund(&t, &payer, &payment_id, Some(json!({"amount": 100}))).await.status, 409);
}

#[tokio::test]
async fn dashboard_refunds_arrive_by_webhook_whole_or_in_part() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let pi = intent_of(&t, &payment_id).await;
    let refunded = |created: i64, total: i64| {
        stripe_event(
            "charge.refunded",
            created,
            json!({"id": "ch_dash", "object": "charge", "payment_intent": pi, "amount": 2500, "amount_refunded": total}),
        )
    };
    // Stripe has the refunds the events report (a release asks it).
    t.stand_in().refund_directly(&pi, 300);
    t.stand_in().refund_directly(&pi, 400);
    let partial = refunded(now(), 700);
    assert_eq!(t.deliver(&partial).await.body, json!({"received": true}));
    assert_eq!(t.deliver(&partial).await.body["duplicate"], true);
    t.deliver(&refunded(now() - 60, 300)).await; // an older total changes nothing
    let stored = payment(&t, &payment_id).await;
    assert_eq!((s(&stored, "status"), s(&stored, "amount_refunded")), ("succeeded".into(), "700".into()));
    assert_eq!(audit_count(&t, &payer, "payment.refunded").await, 1);

    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    assert_eq!(t.stand_in().received("/v1/transfers")[0].form.get("amount").map(String::as_str), Some("1800"));

    // A whole refund of another payment makes it `refunded`.
    let (_, _, _, other) = held_payment(&t, true).await;
    let pi = intent_of(&t, &other).await;
    let whole = stripe_event(
        "charge.refunded",
        now(),
        json!({"id": "ch_x", "payment_intent": pi, "amount": 2500, "amount_refunded": 2500, "refunded": true}),
    );
    t.deliver(&whole).await;
    assert_eq!(status_of(&t, &other).await, "refunded");
}

#[tokio::test]
async fn a_refund_landing_during_an_unresolved_release_is_recorded_and_reconciled_for() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::ServerError, 100); // nothing made
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    let pi = intent_of(&t, &payment_id).await;
    let dashboard = stripe_event(
        "charge.refunded",
        now(),
        json!({"id": "ch_d", "payment_intent": pi, "amount": 2500, "amount_refunded": 1000}),
    );
    assert_eq!(t.deliver(&dashboard).await.status, 200);
    let stored = payment(&t, &payment_id).await;
    assert_eq!((s(&stored, "status"), s(&stored, "amount_refunded")), ("releasing".into(), "1000".into()));
    assert_eq!(audit_count(&t, &payer, "payment.refunded").await, 1, "recorded, not skipped");

    t.stand_in().heal();
    backdate_queue(&t, &payment_id).await;
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::Released { found: false, .. }));
    let made = transfers(&t);
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["amount"], 1500, "only what the refund left");
    let last = t.stand_in().received("/v1/transfers").into_iter().last().unwrap();
    assert_eq!(last.idempotency_key, Some(format!("release:{payment_id}:2")), "another amount, another key");
    assert_eq!(status_of(&t, &payment_id).await, "released");
}

#[tokio::test]
async fn a_release_refunded_in_full_meanwhile_is_called_off() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::ServerError, 100);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    let pi = intent_of(&t, &payment_id).await;
    t.deliver(&stripe_event(
        "charge.refunded",
        now(),
        json!({"id": "ch", "payment_intent": pi, "amount_refunded": 2500}),
    ))
    .await;
    t.stand_in().heal();
    backdate_queue(&t, &payment_id).await;
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::Settled));
    assert_eq!(status_of(&t, &payment_id).await, "refunded");
    assert!(transfers(&t).is_empty());
}

#[tokio::test]
async fn a_dispute_holds_the_funds_until_it_is_won() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let pi = intent_of(&t, &payment_id).await;
    let dispute = |kind: &str, created: i64, status: &str| {
        stripe_event(
            kind,
            created,
            json!({"id": "dp_1", "object": "dispute", "payment_intent": pi, "charge": "ch_1",
                                           "amount": 2500, "status": status, "reason": "fraudulent"}),
        )
    };
    t.deliver(&dispute("charge.dispute.created", now(), "needs_response")).await;
    let held = release(&t, &payer, &payment_id).await;
    assert_eq!((held.status, held.body["code"].as_str()), (409, Some("conflict")));
    assert_eq!(refund(&t, &payer, &payment_id, None).await.status, 409);
    assert!(t.stand_in().received("/v1/transfers").is_empty());
    // An older update arriving late does not reopen it, and a won dispute frees the funds.
    t.deliver(&dispute("charge.dispute.closed", now() + 1, "won")).await;
    t.deliver(&dispute("charge.dispute.updated", now() - 30, "under_review")).await;
    let shown = t.authed(handle, "GET", &format!("/payments/{payment_id}"), token(&payer), &[], None).await;
    assert_eq!(shown.body["dispute_status"], "won");
    let released = release(&t, &payer, &payment_id).await;
    assert_eq!(released.status, 200, "{:?}", released.body);
    assert_eq!(transfers(&t).len(), 1);

    // A lost dispute ends it (`disputed`): nothing to release.
    let (payer, _, _, lost) = held_payment(&t, true).await;
    let pi = intent_of(&t, &lost).await;
    let closed = stripe_event(
        "charge.dispute.closed",
        now(),
        json!({"id": "dp_2", "payment_intent": pi, "status": "lost", "amount": 2500}),
    );
    t.deliver(&closed).await;
    assert_eq!(release(&t, &payer, &lost).await.status, 409);
    assert_eq!(transfers(&t).len(), 1);
    assert_eq!(audit_count(&t, &payer, "payment.dispute_closed").await, 1);
}

#[tokio::test]
async fn a_crash_between_the_transfer_and_its_record_is_finished_by_reconciliation() {
    let t = TestApp::with_stripe_and_faults(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    // Stripe works; the table refuses the final `releasing → released` write.
    t.faults().fail("TransactWriteItems", r#"{"S":"released"}"#, u32::MAX);
    let answer = release(&t, &payer, &payment_id).await;
    assert_eq!((answer.status, answer.body["status"].as_str()), (202, Some("releasing")), "{:?}", answer.body);
    assert!(t.faults().failed() > 0);
    assert_eq!(status_of(&t, &payment_id).await, "releasing");
    assert_eq!(transfers(&t).len(), 1);

    let later = t.healthy_twin().await; // the next invocation, or the scheduled job
    backdate_queue(&later, &payment_id).await;
    match reconcile(&later, &payment_id).await {
        Reconciled::Released { transfer_id, found: true } => {
            assert_eq!(transfer_id, transfers(&t)[0]["id"].as_str().unwrap())
        }
        other => panic!("not released: {other:?}"),
    }
    assert_eq!(status_of(&t, &payment_id).await, "released");
    assert_eq!(transfers(&t).len(), 1);
}

#[tokio::test]
async fn reconciliation_retries_with_the_same_key_when_nothing_was_made() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::ServerError, 100);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    backdate_queue(&t, &payment_id).await;
    // Stripe still down: the payment stays queued, and is due again only later.
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::Pending));
    assert_eq!(status_of(&t, &payment_id).await, "releasing");
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::NotDue), "the lease moved the queue time on");
    let queued =
        shared::payments::reconcile::due(t.app, shared::payments::payment::RELEASING_QUEUE, 1000).await.unwrap();
    assert!(!queued.contains(&payment_id));
    backdate_queue(&t, &payment_id).await;
    let queued =
        shared::payments::reconcile::due(t.app, shared::payments::payment::RELEASING_QUEUE, 1000).await.unwrap();
    assert!(queued.contains(&payment_id), "due again");
    t.stand_in().heal();
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::Released { found: false, .. }));
    let keys: Vec<_> = t.stand_in().received("/v1/transfers").into_iter().filter_map(|r| r.idempotency_key).collect();
    assert!(keys.iter().all(|k| k == &format!("release:{payment_id}:1")));
    assert_eq!(transfers(&t).len(), 1);
}

/// A release request whose Lambda deadline is `ms` away.
fn release_with_deadline(payer: &Value, payment_id: &str, ms: u64) -> lambda_http::Request {
    use lambda_http::RequestExt;
    let event = common::http_event(
        "POST",
        &format!("/payments/{payment_id}/release"),
        &[("authorization", &format!("Bearer {}", token(payer)))],
        None,
    );
    let mut context = lambda_runtime::Context::default();
    let epoch_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    context.deadline = epoch_ms + ms;
    context.request_id = uuid::Uuid::new_v4().to_string();
    lambda_http::request::from_str(&event).unwrap().with_lambda_context(context)
}

#[tokio::test]
async fn stripe_calls_fit_inside_the_lambda_deadline() {
    let t = TestApp::with_stripe(&[]).await; // 1 s per Stripe call, 2 attempts
    let (payer, _, _, payment_id) = held_payment(&t, true).await;

    // Too close to the deadline for even one call: nothing is claimed or sent.
    let response = handle_release(t.app, release_with_deadline(&payer, &payment_id, 1000)).await;
    assert_eq!(response.status(), 503);
    assert_eq!(status_of(&t, &payment_id).await, "succeeded");
    assert!(t.stand_in().received("/v1/transfers").is_empty());

    // Room for one attempt, not two: the second is not started, and the answer comes
    // before the deadline with the payment left for reconciliation.
    t.stand_in().fail("/v1/transfers", Failure::Timeout(SLOW), 100);
    let response = handle_release(t.app, release_with_deadline(&payer, &payment_id, 2800)).await;
    assert_eq!(response.status(), 202);
    assert_eq!(transfer_posts(&t), 1, "one attempt only");
    assert_eq!(status_of(&t, &payment_id).await, "releasing");
}

#[tokio::test]
async fn the_refund_route_and_its_webhook_agree_in_either_order() {
    let t = TestApp::with_stripe(&[]).await;
    // The webhook first: it lands while the route still waits for Stripe's answer.
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let pi = intent_of(&t, &payment_id).await;
    t.stand_in().fail("/v1/refunds", Failure::Timeout(Duration::from_millis(900)), 1);
    let route = {
        let auth = format!("Bearer {}", token(&payer));
        let event =
            common::http_event("POST", &format!("/payments/{payment_id}/refund"), &[("authorization", &auth)], None);
        common::spawn_invoke(t.app, handle, event)
    };
    for _ in 0..100 {
        if !t.stand_in().created("re_").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status_of(&t, &payment_id).await, "refunding", "Stripe refunded; the route has not heard yet");
    let webhook = stripe_event(
        "charge.refunded",
        now(),
        json!({"id": "ch_r", "payment_intent": pi, "amount": 2500, "amount_refunded": 2500}),
    );
    assert_eq!(t.deliver(&webhook).await.status, 200);
    let (status, body) = route.await.unwrap();
    assert_eq!(
        (status, &body),
        (200, &json!({"payment_id": payment_id, "status": "refunded", "amount_refunded": 2500}))
    );
    assert_eq!(audit_count(&t, &payer, "payment.refunded").await, 1, "exactly one entry");

    // The route first: the webhook that follows changes nothing.
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let pi = intent_of(&t, &payment_id).await;
    assert_eq!(refund(&t, &payer, &payment_id, Some(json!({"amount": 1000}))).await.status, 200);
    let webhook = stripe_event(
        "charge.refunded",
        now(),
        json!({"id": "ch_s", "payment_intent": pi, "amount": 2500, "amount_refunded": 1000}),
    );
    assert_eq!(t.deliver(&webhook).await.status, 200);
    assert_eq!(audit_count(&t, &payer, "payment.refunded").await, 1);
    assert_eq!(s(&payment(&t, &payment_id).await, "amount_refunded"), "1000");
}

#[tokio::test]
async fn a_refund_with_an_unknown_outcome_is_found_and_recorded_once() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/refunds", Failure::Timeout(SLOW), 100);
    let answer = refund(&t, &payer, &payment_id, Some(json!({"amount": 2000}))).await;
    assert_eq!((answer.status, answer.body["status"].as_str()), (202, Some("refunding")), "{:?}", answer.body);
    assert_eq!(s(&payment(&t, &payment_id).await, "GSI2PK"), "REFUNDING");
    let blocked = release(&t, &payer, &payment_id).await;
    assert_eq!(blocked.status, 409, "no release while a refund is unresolved");
    // Its webhook raises the total; reconciliation then records the refund it finds.
    let pi = intent_of(&t, &payment_id).await;
    t.deliver(&stripe_event(
        "charge.refunded",
        now(),
        json!({"id": "ch", "payment_intent": pi, "amount_refunded": 2000}),
    ))
    .await;
    t.stand_in().heal();
    t.stand_in().forget_idempotency_keys();
    backdate_queue(&t, &payment_id).await;
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::Settled));
    let stored = payment(&t, &payment_id).await;
    assert_eq!((s(&stored, "status"), s(&stored, "amount_refunded")), ("succeeded".into(), "2000".into()));
    assert_eq!(t.stand_in().created("re_").len(), 1, "one refund");
    assert_eq!(audit_count(&t, &payer, "payment.refunded").await, 1);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    assert_eq!(transfers(&t)[0]["amount"], 500);
}

#[tokio::test]
async fn a_failure_after_the_payment_intent_exists_reuses_it() {
    let t = TestApp::with_stripe_and_faults(&[]).await;
    let (_, provider_id) = provider(&t, true).await;
    let (_, payer) = t.logged_in("payer").await;
    t.faults().fail("TransactWriteItems", "payment.created", u32::MAX);
    let failed = pay(&t, &payer, &provider_id, "retry-me", 1500).await;
    assert_eq!(failed.status, 500, "{:?}", failed.body);
    t.faults().heal();
    let retried = pay(&t, &payer, &provider_id, "retry-me", 1500).await;
    assert_eq!(retried.status, 201, "{:?}", retried.body);
    assert_eq!(t.stand_in().created("pi_").len(), 1, "one PaymentIntent");
    let keys: Vec<_> = t.stand_in().received("/v1/payment_intents").into_iter().map(|r| r.idempotency_key).collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "the Stripe key comes from the caller's key");
    assert_eq!(retried.body["stripe_payment_intent_id"], t.stand_in().created("pi_")[0]["id"]);
}

#[tokio::test]
async fn an_expired_idempotency_lock_is_taken_over_only_by_the_same_request() {
    use sha2::Digest;
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = provider(&t, true).await;
    let (_, payer) = t.logged_in("payer-takeover").await;
    let user_id = t.me(token(&payer)).await.body["user_id"].as_str().unwrap().to_owned();
    let pk = format!("IDEMP#payments#{user_id}#{}", hex::encode(sha2::Sha256::digest(b"taken")));
    let other = json!({"amount": 9999, "currency": "usd", "provider_id": provider_id, "description": "Lesson"});
    let hash = shared::payments::idempotency::request_hash("POST", "/payments", other.to_string().as_bytes());
    // As a crashed attempt left it (written as the service writes, expiry shard and all).
    t.app
        .table()
        .put_item(&json!({
            "PK": pk, "SK": "IDEMPOTENCY", "status": "in_progress", "request_hash": hash,
            "lock_expires": now() - 1, "ttl": now() + 86400,
        }))
        .await
        .unwrap();
    let different = pay(&t, &payer, &provider_id, "taken", 1200).await;
    assert_eq!((different.status, different.body["code"].as_str()), (422, Some("idempotency_mismatch")));
    assert!(t.stand_in().received("/v1/payment_intents").is_empty());
    let same = pay(&t, &payer, &provider_id, "taken", 9999).await;
    assert_eq!(same.status, 201, "{:?}", same.body);
}

#[tokio::test]
async fn subscription_requests_never_move_webhook_state_backwards() {
    let t = TestApp::with_stripe_and_faults(&[]).await;
    let (_, tokens) = t.logged_in("subscriber").await;
    let user_id = t.me(token(&tokens)).await.body["user_id"].as_str().unwrap().to_owned();
    let start = || {
        t.authed(
            handle,
            "POST",
            "/subscriptions",
            token(&tokens),
            &[("idempotency-key", "sub-key")],
            Some(json!({"price_id": "price_gold"})),
        )
    };
    // The first attempt reaches Stripe, then fails to store; its webhook arrives first.
    t.faults().fail("TransactWriteItems", "subscription.created", u32::MAX);
    assert_eq!(start().await.status, 500);
    t.faults().heal();
    let sub = t.stand_in().created("sub_")[0]["id"].as_str().unwrap().to_owned();
    let active = stripe_event(
        "customer.subscription.updated",
        now(),
        json!({"id": sub, "status": "active", "cancel_at_period_end": false,
               "metadata": {"user_id": user_id, "price_id": "price_gold"}}),
    );
    assert_eq!(t.deliver(&active).await.status, 200);
    let retried = start().await;
    assert_eq!((retried.status, retried.body["status"].as_str()), (201, Some("active")), "{:?}", retried.body);
    assert_eq!(t.stand_in().created("sub_").len(), 1);

    // A newer state from Stripe (deleted) is not overwritten by a cancel's older answer.
    let deleted = stripe_event("customer.subscription.deleted", now() + 60, json!({"id": sub, "status": "canceled"}));
    t.deliver(&deleted).await;
    let cancel = t
        .authed(
            handle,
            "DELETE",
            &format!("/subscriptions/{sub}"),
            token(&tokens),
            &[],
            Some(json!({"at_period_end": true})),
        )
        .await;
    assert_eq!((cancel.status, cancel.body["status"].as_str()), (200, Some("canceled")), "{:?}", cancel.body);
    let listed = t.authed(handle, "GET", "/subscriptions", token(&tokens), &[], None).await;
    assert_eq!(listed.body["items"][0]["status"], "canceled");
}

#[tokio::test]
async fn release_sms_formats_amounts_by_the_currency_minor_unit() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = provider(&t, true).await;
    let (_, payer) = t.logged_in("yen-payer").await;
    let created = pay_in(&t, &payer, &provider_id, "yen", 1999, "jpy").await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let payment_id = created.body["payment_id"].as_str().unwrap().to_owned();
    mark_succeeded(&t, &payment_id).await;
    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    let phone = s(&t.item(&format!("PROVIDER#{provider_id}"), "PROVIDER").await.unwrap(), "phone");
    let sms = t.sms_to(&phone).await;
    assert_eq!(sms.len(), 1);
    assert!(sms[0].contains("1999 JPY"), "{}", sms[0]);
}

#[tokio::test]
async fn a_refund_that_fails_at_stripe_later_is_undone_and_can_be_made_again() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/refunds", Failure::Timeout(SLOW), 100);
    assert_eq!(refund(&t, &payer, &payment_id, Some(json!({"amount": 1000}))).await.status, 202);
    let again = refund(&t, &payer, &payment_id, Some(json!({"amount": 300}))).await;
    assert_eq!((again.status, again.body["code"].as_str()), (409, Some("conflict")), "not somebody else's success");
    let first = t.stand_in().created("re_")[0]["id"].as_str().unwrap().to_owned();
    t.stand_in().fail_refund(&first);
    t.stand_in().heal();
    backdate_queue(&t, &payment_id).await;
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::ReturnedToSucceeded(_)));
    let stored = payment(&t, &payment_id).await;
    assert_eq!((s(&stored, "status"), s(&stored, "amount_refunded")), ("succeeded".into(), "0".into()));

    // The same amount again is a new refund under a new key, not the failed one replayed.
    let made = refund(&t, &payer, &payment_id, Some(json!({"amount": 1000}))).await;
    assert_eq!((made.status, made.body["amount_refunded"].as_i64()), (200, Some(1000)), "{:?}", made.body);
    let refunds = t.stand_in().created("re_");
    assert_eq!(refunds.len(), 2);
    assert_eq!(refunds.iter().filter(|r| r["status"] == "succeeded").count(), 1);
    let keys: Vec<_> = t
        .stand_in()
        .received("/v1/refunds")
        .into_iter()
        .filter(|r| r.method == "POST")
        .filter_map(|r| r.idempotency_key)
        .collect();
    assert!(keys.last().unwrap().starts_with(&format!("refund:{payment_id}:2:")), "{keys:?}");
}

#[tokio::test]
async fn a_dispute_opened_during_an_unresolved_release_stops_the_retry() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::ServerError, 100); // nothing made
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    let pi = intent_of(&t, &payment_id).await;
    t.deliver(&stripe_event(
        "charge.dispute.created",
        now(),
        json!({"id": "dp_9", "payment_intent": pi, "status": "needs_response", "amount": 2500}),
    ))
    .await;
    t.stand_in().heal();
    backdate_queue(&t, &payment_id).await;
    match reconcile(&t, &payment_id).await {
        Reconciled::ReturnedToSucceeded(error) => assert_eq!(shared::http::ApiError::from(error).code(), "conflict"),
        other => panic!("released a disputed charge: {other:?}"),
    }
    assert_eq!(status_of(&t, &payment_id).await, "succeeded");
    assert!(transfers(&t).is_empty());
}

#[tokio::test]
async fn refunds_stripe_already_has_count_before_their_webhook_arrives() {
    let t = TestApp::with_stripe(&[]).await;
    // A dashboard refund meanwhile, during our own refund: both are counted.
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let pi = intent_of(&t, &payment_id).await;
    t.stand_in().refund_directly(&pi, 500);
    let ours = refund(&t, &payer, &payment_id, Some(json!({"amount": 1000}))).await;
    assert_eq!((ours.status, ours.body["amount_refunded"].as_i64()), (200, Some(1500)), "{:?}", ours.body);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    assert_eq!(transfers(&t)[0]["amount"], 1000, "never the dashboard's 500 again");

    // A dashboard refund just before a release, its webhook late: the release moves the rest,
    // records the refund once, and the webhook then changes nothing.
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let pi = intent_of(&t, &payment_id).await;
    t.stand_in().refund_directly(&pi, 700);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    let made: Vec<_> = transfers(&t).into_iter().filter(|tr| tr["transfer_group"] == payment_id.as_str()).collect();
    assert_eq!(made[0]["amount"], 1800);
    let late =
        stripe_event("charge.refunded", now(), json!({"id": "ch", "payment_intent": pi, "amount_refunded": 700}));
    assert_eq!(t.deliver(&late).await.status, 200);
    assert_eq!(audit_count(&t, &payer, "payment.refunded").await, 1);
    assert_eq!(s(&payment(&t, &payment_id).await, "amount_refunded"), "700");
}

#[tokio::test]
async fn a_key_reused_after_its_record_expired_gets_its_payment_not_a_new_intent() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = provider(&t, true).await;
    let (_, payer) = t.logged_in("payer-old-key").await;
    let first = pay(&t, &payer, &provider_id, "old-key", 1500).await;
    assert_eq!(first.status, 201);
    // 24 hours on: the idempotency record is gone, and Stripe has forgotten the key.
    let user_id = t.me(token(&payer)).await.body["user_id"].as_str().unwrap().to_owned();
    use sha2::Digest;
    let record = format!("IDEMP#payments#{user_id}#{}", hex::encode(sha2::Sha256::digest(b"old-key")));
    t.app
        .table()
        .client()
        .delete_item()
        .table_name(t.app.table().name())
        .key("PK", aws_sdk_dynamodb::types::AttributeValue::S(record))
        .key("SK", aws_sdk_dynamodb::types::AttributeValue::S("IDEMPOTENCY".into()))
        .send()
        .await
        .unwrap();
    t.stand_in().forget_idempotency_keys();
    let same = pay(&t, &payer, &provider_id, "old-key", 1500).await;
    assert_eq!(same.status, 201, "{:?}", same.body);
    assert_eq!(same.body["payment_id"], first.body["payment_id"]);
    assert_eq!(same.body["client_secret"], first.body["client_secret"]);
    let other = pay(&t, &payer, &provider_id, "old-key", 1600).await;
    assert_eq!((other.status, other.body["code"].as_str()), (422, Some("idempotency_mismatch")));
    assert_eq!(t.stand_in().created("pi_").len(), 1, "no second PaymentIntent");
}

#[tokio::test]
async fn transfer_webhooks_finish_an_unresolved_release_and_record_reversals() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::Timeout(SLOW), 100);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    let made = transfers(&t)[0].clone();

    // Stripe's `transfer.created` arrives before any reconciliation: it finishes the release.
    let created = stripe_event("transfer.created", now(), made.clone());
    assert_eq!(t.deliver(&created).await.body, json!({"received": true}));
    let stored = payment(&t, &payment_id).await;
    assert_eq!(
        (s(&stored, "status"), s(&stored, "transfer_id")),
        ("released".into(), made["id"].as_str().unwrap().into())
    );
    assert!(!stored.contains_key("GSI2PK"));
    assert_eq!(audit_count(&t, &payer, "payment.released").await, 1);
    let phone = s(&t.item(&format!("PROVIDER#{}", s(&stored, "provider_id")), "PROVIDER").await.unwrap(), "phone");
    assert_eq!(t.sms_to(&phone).await.len(), 1, "the provider is told once");
    // The same transfer's event again (another id) changes nothing.
    t.deliver(&stripe_event("transfer.created", now(), made.clone())).await;
    assert_eq!(audit_count(&t, &payer, "payment.released").await, 1);

    // A reversal is recorded, and only ever grows.
    let mut reversed = made.clone();
    reversed["amount_reversed"] = json!(1000);
    t.deliver(&stripe_event("transfer.reversed", now(), reversed.clone())).await;
    reversed["amount_reversed"] = json!(400);
    t.deliver(&stripe_event("transfer.reversed", now() - 60, reversed)).await;
    assert_eq!(s(&payment(&t, &payment_id).await, "transfer_reversed_amount"), "1000");
    assert_eq!(audit_count(&t, &payer, "payment.transfer_reversed").await, 1);
    assert_eq!(transfers(&t).len(), 1);
}

#[tokio::test]
async fn refunds_found_by_reconciliation_are_recorded_once() {
    let t = TestApp::with_stripe(&[]).await;
    // Part refunded in the dashboard while the release was unresolved, webhook not yet in.
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::ServerError, 100);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    let pi = intent_of(&t, &payment_id).await;
    t.stand_in().refund_directly(&pi, 1000);
    t.stand_in().heal();
    backdate_queue(&t, &payment_id).await;
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::Released { found: false, .. }));
    assert_eq!(transfers(&t)[0]["amount"], 1500);
    let late =
        stripe_event("charge.refunded", now(), json!({"id": "ch", "payment_intent": pi, "amount_refunded": 1000}));
    t.deliver(&late).await;
    assert_eq!(audit_count(&t, &payer, "payment.refunded").await, 1);
    assert!(t.stand_in().created("trr_").is_empty(), "the transfer already left the refund out: nothing to reverse");

    // Refunded in full in the dashboard: the release is called off, the refund recorded once.
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::ServerError, 100);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    let pi = intent_of(&t, &payment_id).await;
    t.stand_in().refund_directly(&pi, 2500);
    t.stand_in().heal();
    backdate_queue(&t, &payment_id).await;
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::Settled));
    assert_eq!(status_of(&t, &payment_id).await, "refunded");
    t.deliver(&stripe_event(
        "charge.refunded",
        now(),
        json!({"id": "ch", "payment_intent": pi, "amount_refunded": 2500}),
    ))
    .await;
    assert_eq!(audit_count(&t, &payer, "payment.refunded").await, 1);
}

#[tokio::test]
async fn a_dashboard_refund_during_a_failed_refund_of_ours_is_still_recorded() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/refunds", Failure::Timeout(SLOW), 100);
    assert_eq!(refund(&t, &payer, &payment_id, Some(json!({"amount": 1000}))).await.status, 202);
    t.stand_in().heal();
    let pi = intent_of(&t, &payment_id).await;
    let ours = t.stand_in().created("re_")[0]["id"].as_str().unwrap().to_owned();
    t.stand_in().refund_directly(&pi, 300);
    // Its webhook lands while ours is unresolved: taken for ours, only the total is raised.
    t.deliver(&stripe_event(
        "charge.refunded",
        now(),
        json!({"id": "ch", "payment_intent": pi, "amount_refunded": 1300}),
    ))
    .await;
    t.stand_in().fail_refund(&ours);
    backdate_queue(&t, &payment_id).await;
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::ReturnedToSucceeded(_)));
    let stored = payment(&t, &payment_id).await;
    assert_eq!((s(&stored, "status"), s(&stored, "amount_refunded")), ("succeeded".into(), "300".into()));
    assert_eq!(audit_count(&t, &payer, "payment.refunded").await, 1, "the dashboard's 300, once");
    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    assert_eq!(transfers(&t)[0]["amount"], 2200);
}

/// A client that retries a partial refund (its answer lost, a double tap) refunds once: the
/// same key and body replay the first answer, even after Stripe has forgotten its key; the
/// same key with another body is 422; a partial refund without a key is refused.
#[tokio::test]
async fn a_retried_partial_refund_refunds_once() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let path = format!("/payments/{payment_id}/refund");
    let keyless = t.authed(handle, "POST", &path, token(&payer), &[], Some(json!({"amount": 300}))).await;
    assert_eq!((keyless.status, keyless.body["errors"][0]["field"].as_str()), (400, Some("Idempotency-Key")));

    let body = json!({"amount": 300, "reason": "requested_by_customer"});
    let first = refund_with_key(&t, &payer, &payment_id, "refund-300", Some(body.clone())).await;
    let expected = json!({"payment_id": payment_id, "status": "succeeded", "amount_refunded": 300});
    assert_eq!((first.status, &first.body), (200, &expected));
    // The same body spelled otherwise is the same request.
    let respelled = json!({"reason": "requested_by_customer", "amount": 300});
    let retried = refund_with_key(&t, &payer, &payment_id, "refund-300", Some(respelled)).await;
    assert_eq!((retried.status, &retried.body), (200, &expected), "replayed");
    t.stand_in().forget_idempotency_keys(); // a day later
    let late = refund_with_key(&t, &payer, &payment_id, "refund-300", Some(body.clone())).await;
    assert_eq!((late.status, &late.body), (200, &expected), "replayed after Stripe forgot its key");
    let other = refund_with_key(&t, &payer, &payment_id, "refund-300", Some(json!({"amount": 400}))).await;
    assert_eq!((other.status, other.body["code"].as_str()), (422, Some("idempotency_mismatch")));

    // A second refund, its first answer lost: the retry finds it and answers with it.
    t.stand_in().fail("/v1/refunds", Failure::Timeout(SLOW), 100);
    let lost = refund_with_key(&t, &payer, &payment_id, "refund-200", Some(json!({"amount": 200}))).await;
    assert_eq!((lost.status, lost.body["status"].as_str()), (202, Some("refunding")), "{:?}", lost.body);
    t.stand_in().heal();
    backdate_queue(&t, &payment_id).await;
    let found = refund_with_key(&t, &payer, &payment_id, "refund-200", Some(json!({"amount": 200}))).await;
    let expected = json!({"payment_id": payment_id, "status": "succeeded", "amount_refunded": 500});
    assert_eq!((found.status, &found.body), (200, &expected));

    assert_eq!(t.stand_in().created("re_").len(), 2, "two refunds, each made once");
    let stored = payment(&t, &payment_id).await;
    assert_eq!((s(&stored, "status"), s(&stored, "amount_refunded")), ("succeeded".into(), "500".into()));
    assert_eq!(audit_count(&t, &payer, "payment.refunded").await, 2);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    assert_eq!(transfers(&t)[0]["amount"], 2000, "the rest, once");
}

/// Audit entries of `action` in the payer's org, whatever their status.
async fn audit_entries(
    t: &TestApp,
    payer: &Value,
    action: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let org = t.me(token(payer)).await.body["org_id"].as_str().unwrap().to_owned();
    t.partition(&format!("AUDIT#{org}")).await.into_iter().filter(|e| s(e, "action") == action).collect()
}

/// Every event Stripe sends for a refund's failure, each delivered twice and out of order.
async fn deliver_twice_reversed(t: &TestApp, events: &[(String, Value)], created: i64) {
    let bodies: Vec<String> = events.iter().map(|(kind, object)| stripe_event(kind, created, object.clone())).collect();
    for body in bodies.iter().rev().chain(bodies.iter()) {
        let delivered = t.deliver(body).await;
        assert_eq!(delivered.status, 200, "{:?}", delivered.body);
    }
}

/// A refund Stripe holds `pending` counts while it is pending, holds any release, and once
/// it fails comes off: the payment is held in full again, the payer is told once, and one
/// release then transfers the whole amount. A charge total from before the failure,
/// delivered late, does not count the failed refund again.
#[tokio::test]
async fn a_refund_pending_at_release_holds_it_and_once_it_fails_the_full_amount_is_released() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let pi = intent_of(&t, &payment_id).await;
    t.stand_in().hold_refunds_pending(true);
    let partial = refund(&t, &payer, &payment_id, Some(json!({"amount": 1000}))).await;
    assert_eq!((partial.status, partial.body["amount_refunded"].as_i64()), (200, Some(1000)), "{:?}", partial.body);
    let before_failure = t.stand_in().charge_of(&pi);

    let held = release(&t, &payer, &payment_id).await;
    assert_eq!((held.status, held.body["code"].as_str()), (409, Some("conflict")), "{:?}", held.body);
    assert!(transfers(&t).is_empty(), "nothing moves while a refund may still fail");

    let refund_id = t.stand_in().created("re_")[0]["id"].as_str().unwrap().to_owned();
    let failure = t.stand_in().fail_refund(&refund_id);
    deliver_twice_reversed(&t, &failure, now() + 1).await;
    let late = stripe_event("charge.refunded", now() - 60, before_failure);
    assert_eq!(t.deliver(&late).await.status, 200);

    let stored = payment(&t, &payment_id).await;
    assert_eq!((s(&stored, "status"), s(&stored, "amount_refunded")), ("succeeded".into(), "0".into()));
    let failed = audit_entries(&t, &payer, "payment.refund_failed").await;
    assert_eq!(failed.len(), 1, "one failure, however many of its events arrive");
    let details = failed[0]["details"].as_m().unwrap();
    assert_eq!(details["refund_id"].as_s().unwrap(), &refund_id);
    let told: Vec<_> = t
        .published_events()
        .await
        .into_iter()
        .filter(|(kind, e)| kind == "payment.refund_failed" && e["data"]["payment_id"] == payment_id.as_str())
        .collect();
    assert_eq!(told.len(), 1, "the payer is told once");

    let released = release(&t, &payer, &payment_id).await;
    assert_eq!(released.status, 200, "{:?}", released.body);
    let made = transfers(&t);
    assert_eq!((made.len(), made[0]["amount"].as_i64()), (1, Some(2500)), "one transfer of the full amount");
}

/// A full refund that goes pending and then fails leaves a payment held again, not
/// `refunded`: it can be released, once, for the whole amount.
#[tokio::test]
async fn a_full_refund_that_fails_later_makes_the_payment_releasable_again() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let pi = intent_of(&t, &payment_id).await;
    t.stand_in().hold_refunds_pending(true);
    let full = refund(&t, &payer, &payment_id, None).await;
    assert_eq!((full.status, full.body["status"].as_str()), (200, Some("refunded")), "{:?}", full.body);
    let charge = t.stand_in().charge_of(&pi);
    assert_eq!(t.deliver(&stripe_event("charge.refunded", now(), charge)).await.status, 200);
    assert_eq!(release(&t, &payer, &payment_id).await.body["code"], "payment_not_succeeded");

    // Refunded, its hold timer has ended (as the cleanup ends it for a payment no longer held).
    let timer = format!("HOLD#{payment_id}");
    let ended = shared::store::Change::new(&timer, "HOLD").update("REMOVE GSI2PK, GSI2SK");
    t.app.table().update_item(ended).await.unwrap();

    let refund_id = t.stand_in().created("re_")[0]["id"].as_str().unwrap().to_owned();
    deliver_twice_reversed(&t, &t.stand_in().fail_refund(&refund_id), now() + 1).await;
    let stored = payment(&t, &payment_id).await;
    assert_eq!((s(&stored, "status"), s(&stored, "amount_refunded")), ("succeeded".into(), "0".into()));
    let restarted = t.item(&timer, "HOLD").await.unwrap();
    assert_eq!(s(&restarted, "GSI2PK"), "HOLD", "held again, never for good: {restarted:?}");
    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    assert_eq!(release(&t, &payer, &payment_id).await.body["already_released"], true);
    let made = transfers(&t);
    assert_eq!((made.len(), made[0]["amount"].as_i64()), (1, Some(2500)));
}

/// A refund that fails after the release (it had succeeded, then the card bank sent it
/// back) brings money back to the platform: it shows as `amount_unsettled`, once.
#[tokio::test]
async fn a_refund_failing_after_the_release_shows_as_unsettled() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    assert_eq!(refund(&t, &payer, &payment_id, Some(json!({"amount": 1000}))).await.status, 200);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    assert_eq!(transfers(&t)[0]["amount"], 1500);
    let refund_id = t.stand_in().created("re_")[0]["id"].as_str().unwrap().to_owned();
    deliver_twice_reversed(&t, &t.stand_in().fail_refund(&refund_id), now() + 1).await;
    let shown = t.authed(handle, "GET", &format!("/payments/{payment_id}"), token(&payer), &[], None).await;
    assert_eq!(
        (
            shown.body["status"].as_str(),
            shown.body["amount_refunded"].as_i64(),
            shown.body["amount_unsettled"].as_i64()
        ),
        (Some("released"), Some(0), Some(1000)),
        "{:?}",
        shown.body
    );
    assert_eq!(audit_entries(&t, &payer, "payment.refund_failed").await.len(), 1);
}

/// The payment a refund of `refunded` failed on after its release: the payer, the payment,
/// and the failed refund's id.
async fn unsettled_payment(t: &TestApp, refunded: i64) -> (Value, String, String) {
    let (payer, _, _, payment_id) = held_payment(t, true).await;
    assert_eq!(refund(t, &payer, &payment_id, Some(json!({"amount": refunded}))).await.status, 200);
    assert_eq!(release(t, &payer, &payment_id).await.status, 200);
    let pi = intent_of(t, &payment_id).await;
    let made = t.stand_in().created("re_");
    let refund_id =
        made.iter().find(|r| r["payment_intent"] == pi.as_str()).unwrap()["id"].as_str().unwrap().to_owned();
    deliver_twice_reversed(t, &t.stand_in().fail_refund(&refund_id), now() + 1).await;
    (payer, payment_id, refund_id)
}

async fn shown(t: &TestApp, payer: &Value, payment_id: &str) -> Value {
    t.authed(handle, "GET", &format!("/payments/{payment_id}"), token(payer), &[], None).await.body
}

/// Money that came back after the release, released: the provider is paid its share of it
/// (less the platform's percentage) by one more transfer, keyed by the failed refund, and
/// then nothing is left to settle. A part of it cannot be refunded.
#[tokio::test]
async fn unsettled_money_released_pays_the_provider_its_share_once_more() {
    let t = TestApp::with_stripe(&[("PLATFORM_FEE_BPS", "1000")]).await;
    let (payer, payment_id, refund_id) = unsettled_payment(&t, 1_000).await;
    assert_eq!(transfers(&t)[0]["amount"], 1_350, "1 500 left less 10 %");
    assert_eq!(shown(&t, &payer, &payment_id).await["amount_unsettled"], 1_000);

    let part = refund(&t, &payer, &payment_id, Some(json!({"amount": 500}))).await;
    assert_eq!((part.status, part.body["code"].as_str()), (409, Some("conflict")), "{:?}", part.body);
    let more = refund(&t, &payer, &payment_id, Some(json!({"amount": 1_001}))).await;
    assert_eq!((more.status, more.body["code"].as_str()), (400, Some("validation_failed")), "{:?}", more.body);
    let first = release(&t, &payer, &payment_id).await;
    assert_eq!((first.status, &first.body["already_released"]), (200, &json!(false)), "{:?}", first.body);
    let again = release(&t, &payer, &payment_id).await;
    assert_eq!((again.status, &again.body["already_released"]), (200, &json!(true)), "{:?}", again.body);

    let made = transfers(&t);
    assert_eq!(made.len(), 2, "the release and one more: {made:?}");
    let again: Vec<&Value> = made.iter().filter(|t| t["metadata"]["cause"] == refund_id.as_str()).collect();
    assert_eq!((again.len(), again[0]["amount"].as_i64()), (1, Some(900)), "{made:?}");
    assert!(again[0].get("source_transaction").is_none_or(Value::is_null), "from the platform's balance");
    let key = t.stand_in().posted("/v1/transfers").into_iter().filter_map(|r| r.idempotency_key).next_back();
    assert_eq!(key, Some(format!("release:{payment_id}:refund:{refund_id}")));
    let now_shown = shown(&t, &payer, &payment_id).await;
    assert_eq!((now_shown["status"].as_str(), now_shown["amount_unsettled"].as_i64()), (Some("released"), Some(0)));
    let after = refund(&t, &payer, &payment_id, None).await;
    assert_eq!(after.status, 409, "nothing is left to refund: {:?}", after.body);
    assert!(!payment(&t, &payment_id).await.contains_key("GSI2PK"), "off the unsettled queue");
}

/// A refund recovered from the provider that then fails: its money is the payer side's to
/// settle; refunded, it goes back to the payer once (one refund under the failed refund's
/// key, the answer replayed for the same `Idempotency-Key`), and nothing more is transferred.
#[tokio::test]
async fn unsettled_money_refunded_goes_back_to_the_payer_once() {
    let t = TestApp::with_stripe(&[("PLATFORM_FEE_BPS", "1000"), ("PLATFORM_FEE_FIXED", "30")]).await;
    let (payer, payment_id, _) = released_payment(&t, 10_000).await;
    let pi = intent_of(&t, &payment_id).await;
    let events = t.stand_in().dashboard_refund(&pi, 2_000);
    let refund_id = events[0].1["id"].as_str().unwrap().to_owned();
    deliver_twice_reversed(&t, &events, now()).await;
    assert_eq!(reversals(&t).0.len(), 1);
    deliver_twice_reversed(&t, &t.stand_in().fail_refund(&refund_id), now() + 1).await;
    let unsettled = shown(&t, &payer, &payment_id).await;
    assert_eq!(
        (unsettled["amount_refunded"].as_i64(), unsettled["amount_unsettled"].as_i64()),
        (Some(0), Some(2_000)),
        "{unsettled:?}"
    );

    let delete_me = || {
        t.authed(
            shared::api::account::handle,
            "DELETE",
            "/auth/me",
            token(&payer),
            &[],
            Some(json!({"password": common::STRONG_PASSWORD})),
        )
    };
    let refused = delete_me().await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (409, Some("conflict")),
        "money is held: {:?}",
        refused.body
    );

    let key = uuid::Uuid::new_v4().to_string();
    let first = refund_with_key(&t, &payer, &payment_id, &key, None).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(
        (first.body["status"].as_str(), first.body["amount_refunded"].as_i64()),
        (Some("released"), Some(2_000))
    );
    let replay = refund_with_key(&t, &payer, &payment_id, &key, None).await;
    assert_eq!((replay.status, &replay.body), (200, &first.body));
    let other = refund_with_key(&t, &payer, &payment_id, &key, Some(json!({"amount": 2_000}))).await;
    assert_eq!(other.status, 422, "{:?}", other.body);
    let posted = refund_posts(&t);
    assert_eq!(posted.len(), 1, "one refund of ours: {posted:?}");
    assert_eq!(posted[0].form.get("amount").map(String::as_str), Some("2000"));
    assert_eq!(posted[0].idempotency_key.as_deref(), Some(&*format!("refund:{payment_id}:again:{refund_id}")));

    let released = release(&t, &payer, &payment_id).await;
    assert_eq!(released.body["already_released"], true, "{:?}", released.body);
    assert_eq!(transfers(&t).len(), 1, "the provider is owed nothing");
    let settled = shown(&t, &payer, &payment_id).await;
    assert_eq!((settled["amount_refunded"].as_i64(), settled["amount_unsettled"].as_i64()), (Some(2_000), Some(0)));
    assert_eq!(delete_me().await.status, 202, "nothing is held any more");
}

/// A refund made after the release that fails before it went through took nothing from the
/// provider: nothing is unsettled, only the refunded total comes down.
#[tokio::test]
async fn a_pending_refund_after_release_that_fails_leaves_nothing_unsettled() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, payment_id, _) = released_payment(&t, 2_500).await;
    let pi = intent_of(&t, &payment_id).await;
    t.stand_in().hold_refunds_pending(true);
    let events = t.stand_in().dashboard_refund(&pi, 1_000);
    deliver_twice_reversed(&t, &events, now()).await;
    let refund_id = events[0].1["id"].as_str().unwrap().to_owned();
    deliver_twice_reversed(&t, &t.stand_in().fail_refund(&refund_id), now() + 1).await;
    let after = shown(&t, &payer, &payment_id).await;
    assert_eq!(
        (after["amount_refunded"].as_i64(), after["amount_unsettled"].as_i64()),
        (Some(0), Some(0)),
        "{after:?}"
    );
    assert!(reversals(&t).0.is_empty());
    assert_eq!(release(&t, &payer, &payment_id).await.body["already_released"], true);
    assert_eq!(transfers(&t).len(), 1);
}

/// Settling what came back while Stripe times out leaves it claimed (a refund is refused
/// meanwhile); the cleanup's next run finishes it with one transfer. Money left unsettled
/// for 7 days is counted for the alarm, daily.
#[tokio::test]
async fn unsettled_money_is_finished_by_the_cleanup_and_alarmed_after_seven_days() {
    let t = TestApp::with_stripe(&[]).await;
    let meta = shared::http::RequestMeta { request_id: "unsettled".into(), ..Default::default() };
    let watch = || shared::payments::unsettled::run(t.app, &meta, || false);
    let (payer, payment_id, refund_id) = unsettled_payment(&t, 1_000).await;
    t.stand_in().fail("/v1/transfers", Failure::Timeout(SLOW), 100); // made, answer lost
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    t.stand_in().heal();
    let meanwhile = refund(&t, &payer, &payment_id, None).await;
    assert_eq!((meanwhile.status, meanwhile.body["code"].as_str()), (409, Some("conflict")), "{:?}", meanwhile.body);

    watch().await;
    let paid: Vec<Value> = transfers(&t).into_iter().filter(|t| t["metadata"]["cause"] == refund_id.as_str()).collect();
    assert_eq!((paid.len(), paid[0]["amount"].as_i64()), (1, Some(1_000)), "{paid:?}");
    assert_eq!(shown(&t, &payer, &payment_id).await["amount_unsettled"], 0);
    assert!(refund_posts(&t).len() == 1, "only the first refund");

    // Left alone: counted once 7 days have passed, and looked at again a day on.
    let (other_payer, left_alone, _) = unsettled_payment(&t, 500).await;
    let pk = format!("PAYMENT#{left_alone}");
    let queued = payment(&t, &left_alone).await;
    assert_eq!(s(&queued, "GSI2PK"), "UNSETTLED");
    let in_7_days = shared::time::rfc3339(shared::time::now() + shared::time::Duration::days(7));
    assert_eq!(&s(&queued, "GSI2SK")[..10], &in_7_days[..10]);
    let eight_days_ago = (shared::time::now() - shared::time::Duration::days(8)).unix_timestamp();
    t.set(
        &pk,
        "PAYMENT",
        &[
            ("GSI2SK", long_ago()),
            ("unsettled_since", aws_sdk_dynamodb::types::AttributeValue::N(eight_days_ago.to_string())),
        ],
    )
    .await;
    assert!(watch().await.left >= 1);
    let tomorrow = shared::time::rfc3339(shared::time::now() + shared::time::Duration::days(1));
    assert_eq!(&s(&payment(&t, &left_alone).await, "GSI2SK")[..10], &tomorrow[..10]);
    assert_eq!(shown(&t, &other_payer, &left_alone).await["amount_unsettled"], 500, "alarmed, not settled by itself");

    // Never held for good: `HOLD_MAX_DAYS` (90) after it came back, it goes back to the payer.
    let ninety_one_days_ago = (shared::time::now() - shared::time::Duration::days(91)).unix_timestamp();
    t.set(
        &pk,
        "PAYMENT",
        &[
            ("GSI2SK", long_ago()),
            ("unsettled_since", aws_sdk_dynamodb::types::AttributeValue::N(ninety_one_days_ago.to_string())),
        ],
    )
    .await;
    watch().await;
    let refunded = shown(&t, &other_payer, &left_alone).await;
    assert_eq!((refunded["amount_unsettled"].as_i64(), refunded["amount_refunded"].as_i64()), (Some(0), Some(500)));
    let last = refund_posts(&t).into_iter().next_back().unwrap();
    assert!(last.idempotency_key.as_deref().is_some_and(|k| k.starts_with(&format!("refund:{left_alone}:again:"))));
    assert_eq!(audit_entries(&t, &other_payer, "payment.auto_refunded").await.len(), 1);
    assert!(!payment(&t, &left_alone).await.contains_key("GSI2PK"), "off the queue");
}

/// An org admin who owns the provider cannot release or partly refund a member's payment
/// to themselves (403); as the provider's owner they may give all of it back.
#[tokio::test]
async fn an_admin_who_owns_the_provider_cannot_release_to_themselves() {
    let t = TestApp::with_stripe(&[]).await;
    let (admin, _, member, _) = t.org_with_member("member").await;
    let created = t.authed(handle, "POST", "/providers", token(&admin), &[], Some(json!({"country": "US"}))).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let provider_id = created.body["provider_id"].as_str().unwrap().to_owned();
    onboard(&t, created.body["stripe_account_id"].as_str().unwrap()).await;
    let paid = pay(&t, &member, &provider_id, &uuid::Uuid::new_v4().to_string(), 2500).await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    let payment_id = paid.body["payment_id"].as_str().unwrap().to_owned();
    mark_succeeded(&t, &payment_id).await;

    let own = release(&t, &admin, &payment_id).await;
    assert_eq!((own.status, own.body["code"].as_str()), (403, Some("forbidden")), "{:?}", own.body);
    let part = refund(&t, &admin, &payment_id, Some(json!({"amount": 500}))).await;
    assert_eq!(part.status, 403, "{:?}", part.body);
    assert!(transfers(&t).is_empty() && refund_posts(&t).is_empty());
    let all = refund(&t, &admin, &payment_id, None).await;
    assert_eq!((all.status, all.body["status"].as_str()), (200, Some("refunded")), "{:?}", all.body);
}

/// An admin of the org a payment was made in may move it only while the payer is still a
/// member there: once the payer has left, only the payer may.
#[tokio::test]
async fn the_payers_org_admin_may_move_a_payment_only_while_the_payer_is_a_member() {
    let t = TestApp::with_stripe(&[]).await;
    let (admin, _, member, member_id) = t.org_with_member("member").await;
    let (_, provider_id) = provider(&t, true).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let paid = pay(&t, &member, &provider_id, &uuid::Uuid::new_v4().to_string(), 2500).await;
        assert_eq!(paid.status, 201, "{:?}", paid.body);
        let payment_id = paid.body["payment_id"].as_str().unwrap().to_owned();
        mark_succeeded(&t, &payment_id).await;
        held.push(payment_id);
    }
    assert_eq!(release(&t, &admin, &held[0]).await.status, 200, "the admin, while the payer is a member");

    // The payer leaves the org (their membership goes).
    let org = t.me(token(&admin)).await.body["org_id"].as_str().unwrap().to_owned();
    let table = t.app.table();
    table
        .client()
        .delete_item()
        .table_name(table.name())
        .key("PK", aws_sdk_dynamodb::types::AttributeValue::S(format!("ORG#{org}")))
        .key("SK", aws_sdk_dynamodb::types::AttributeValue::S(format!("MEMBER#{member_id}")))
        .send()
        .await
        .unwrap();
    let refused = release(&t, &admin, &held[1]).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (403, Some("forbidden")), "{:?}", refused.body);
    assert_eq!(refund(&t, &admin, &held[1], None).await.status, 403);
    assert_eq!(transfers(&t).len(), 1);
    assert_eq!(release(&t, &member, &held[1]).await.status, 200, "the payer still may");
}

/// The platform keeps its fee on what refunds leave, on the terms fixed when the payment was
/// made: of 10 000 with 2 000 refunded, 10 % + 30 of 8 000 is 830 and the provider is sent
/// 7 170. The payment shows the fee, the transfer and Stripe's fee on the charge (2.9 % + 30
/// of 10 000 is 320, read from its balance transaction).
#[tokio::test]
async fn the_platform_keeps_its_fee_on_what_refunds_leave() {
    let t = TestApp::with_stripe(&[("PLATFORM_FEE_BPS", "1000"), ("PLATFORM_FEE_FIXED", "30")]).await;
    let (_, provider_id) = provider(&t, true).await;
    let (_, payer) = t.logged_in("payer").await;
    let paid = pay(&t, &payer, &provider_id, &uuid::Uuid::new_v4().to_string(), 10_000).await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    let payment_id = paid.body["payment_id"].as_str().unwrap().to_owned();
    mark_succeeded(&t, &payment_id).await;
    let path = format!("/payments/{payment_id}");
    let held = t.authed(handle, "GET", &path, token(&payer), &[], None).await.body;
    assert_eq!((held["platform_fee_bps"].as_i64(), held["platform_fee_fixed"].as_i64()), (Some(1000), Some(30)));
    assert_eq!((held["platform_fee"].clone(), held["transfer_amount"].clone()), (Value::Null, Value::Null));

    assert_eq!(refund(&t, &payer, &payment_id, Some(json!({"amount": 2000}))).await.status, 200);
    let released = release(&t, &payer, &payment_id).await;
    assert_eq!(released.status, 200, "{:?}", released.body);
    let made = transfers(&t);
    assert_eq!((made.len(), made[0]["amount"].as_i64()), (1, Some(7170)), "the provider's share, once");
    assert_eq!(stripe_stand_in::card_fee(10_000), 320);
    let done = t.authed(handle, "GET", &path, token(&payer), &[], None).await.body;
    let fees = ["amount_refunded", "platform_fee", "transfer_amount", "stripe_fee"].map(|f| done[f].as_i64());
    assert_eq!(fees, [Some(2000), Some(830), Some(7170), Some(320)], "{done:?}");
    assert_eq!(release(&t, &payer, &payment_id).await.body["already_released"], true);
    assert_eq!(transfers(&t).len(), 1);
}

/// A dispute lost while the payment is held gives the money back through the dispute: the
/// payment ends `disputed`, nothing can be released or refunded, and the payer may delete
/// their account (a held payment would have kept them).
#[tokio::test]
async fn a_dispute_lost_before_release_ends_the_payment_disputed() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let pi = intent_of(&t, &payment_id).await;
    let dispute = |status: &str| json!({"id": "dp_lost", "object": "dispute", "payment_intent": pi, "amount": 2500, "status": status});
    assert_eq!(
        t.deliver(&stripe_event("charge.dispute.created", now() - 10, dispute("needs_response"))).await.status,
        200
    );
    assert_eq!(status_of(&t, &payment_id).await, "succeeded");
    assert_eq!(t.deliver(&stripe_event("charge.dispute.closed", now(), dispute("lost"))).await.status, 200);
    assert_eq!(status_of(&t, &payment_id).await, "disputed");
    assert_eq!(release(&t, &payer, &payment_id).await.body["code"], "payment_not_succeeded");
    assert_eq!(refund(&t, &payer, &payment_id, None).await.status, 409);
    assert!(transfers(&t).is_empty() && refund_posts(&t).is_empty());
    let deleted = t
        .authed(
            shared::api::account::handle,
            "DELETE",
            "/auth/me",
            token(&payer),
            &[],
            Some(json!({"password": common::STRONG_PASSWORD})),
        )
        .await;
    assert_eq!(deleted.status, 202, "{:?}", deleted.body);
}

/// Transfer reversals the stand-in made, and the keys they were asked for with.
fn reversals(t: &TestApp) -> (Vec<Value>, Vec<Option<String>>) {
    let keys = t
        .stand_in()
        .posted("/v1/transfers/")
        .into_iter()
        .filter(|r| r.path.ends_with("/reversals"))
        .map(|r| r.idempotency_key)
        .collect();
    (t.stand_in().created("trr_"), keys)
}

/// A payment of `amount` USD held and released under the app's fee terms: (payer, payment,
/// the provider's connected account).
async fn released_payment(t: &TestApp, amount: i64) -> (Value, String, String) {
    let (_, provider_id) = provider(t, true).await;
    let (_, payer) = t.logged_in("payer").await;
    let paid = pay(t, &payer, &provider_id, &uuid::Uuid::new_v4().to_string(), amount).await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    let payment_id = paid.body["payment_id"].as_str().unwrap().to_owned();
    mark_succeeded(t, &payment_id).await;
    let released = release(t, &payer, &payment_id).await;
    assert_eq!(released.status, 200, "{:?}", released.body);
    let account = t.stand_in().object(released.body["transfer_id"].as_str().unwrap()).unwrap()["destination"]
        .as_str()
        .unwrap()
        .to_owned();
    (payer, payment_id, account)
}

/// A refund made in Stripe's dashboard after the release sends three events, each here
/// delivered twice and out of order: the provider's share of it (the platform gives up its
/// percentage on that part) is reversed once, under the refund's own key.
#[tokio::test]
async fn a_dashboard_refund_after_release_is_recovered_from_the_provider_once() {
    let t = TestApp::with_stripe(&[("PLATFORM_FEE_BPS", "1000"), ("PLATFORM_FEE_FIXED", "30")]).await;
    let (payer, payment_id, account) = released_payment(&t, 10_000).await;
    assert_eq!(transfers(&t)[0]["amount"], 8_970);
    let pi = intent_of(&t, &payment_id).await;
    let events = t.stand_in().dashboard_refund(&pi, 2_000);
    let refund_id = events[0].1["id"].as_str().unwrap().to_owned();
    deliver_twice_reversed(&t, &events, now()).await;

    let (made, keys) = reversals(&t);
    assert_eq!(made.len(), 1, "one reversal however many events arrive: {made:?}");
    assert_eq!((made[0]["amount"].as_i64(), made[0]["metadata"]["cause"].as_str()), (Some(1_800), Some(&*refund_id)));
    assert!(keys.iter().all(|k| k.as_deref() == Some(&*format!("reversal:{payment_id}:{refund_id}"))), "{keys:?}");
    assert_eq!(t.stand_in().balance_of(&account), 8_970 - 1_800);
    let shown = t.authed(handle, "GET", &format!("/payments/{payment_id}"), token(&payer), &[], None).await.body;
    assert_eq!(
        (shown["status"].as_str(), shown["amount_refunded"].as_i64(), shown["amount_reversed"].as_i64()),
        (Some("released"), Some(2_000), Some(1_800)),
        "{shown:?}"
    );
    let audited = audit_entries(&t, &payer, "payment.transfer_reversed").await;
    assert_eq!(audited.len(), 1);
    assert_eq!(s(&audited[0], "status"), "success");
    assert_eq!(transfers(&t).len(), 1, "no new transfer");
}

/// A dispute opened while a release is unresolved: its funds' withdrawal waits (the delivery
/// fails, Stripe sends it again) until reconciliation records the one transfer; then one
/// reversal of the disputed amount, and when the dispute is won one transfer paying it back.
#[tokio::test]
async fn a_dispute_opened_mid_release_is_reversed_at_withdrawal_and_repaid_when_won() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::Timeout(SLOW), 100); // made, answer lost
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    t.stand_in().heal();
    let pi = intent_of(&t, &payment_id).await;
    let (dispute_id, opened) = t.stand_in().open_dispute(&pi, 2_500);
    let bodies: Vec<String> = opened.iter().map(|(kind, o)| stripe_event(kind, now(), o.clone())).collect();
    assert_eq!(t.deliver(&bodies[0]).await.status, 200);
    let waits = t.deliver(&bodies[1]).await;
    assert_ne!(waits.status, 200, "funds withdrawn mid-release wait for the release: {:?}", waits.body);
    assert!(t.stand_in().created("trr_").is_empty());

    backdate_queue(&t, &payment_id).await;
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::Released { found: true, .. }));
    for body in [&bodies[1], &bodies[1], &bodies[0]] {
        assert_eq!(t.deliver(body).await.status, 200);
    }
    let (made, keys) = reversals(&t);
    assert_eq!((made.len(), made[0]["amount"].as_i64()), (1, Some(2_500)), "{made:?}");
    assert_eq!(keys[0].as_deref(), Some(&*format!("reversal:{payment_id}:{dispute_id}")));

    deliver_twice_reversed(&t, &t.stand_in().win_dispute(&dispute_id), now() + 1).await;
    let made = transfers(&t);
    assert_eq!(made.len(), 2, "the release and one re-payment: {made:?}");
    let repaid: Vec<&Value> = made.iter().filter(|t| t["metadata"]["cause"] == dispute_id.as_str()).collect();
    assert_eq!((repaid.len(), repaid[0]["amount"].as_i64()), (1, Some(2_500)));
    let key = t.stand_in().posted("/v1/transfers").into_iter().filter_map(|r| r.idempotency_key).next_back();
    assert_eq!(key, Some(format!("release:{payment_id}:dispute:{dispute_id}")));
    assert_eq!(audit_entries(&t, &payer, "payment.repaid").await.len(), 1);
    let shown = t.authed(handle, "GET", &format!("/payments/{payment_id}"), token(&payer), &[], None).await.body;
    assert_eq!((shown["status"].as_str(), shown["dispute_status"].as_str()), (Some("released"), Some("won")));
}

/// A reversal Stripe refuses (the provider paid the money out) is audited once and queued;
/// the cleanup retries it a day later and it goes through once the account holds the money
/// again. One refused for longer than `REVERSAL_RETRY_DAYS` is given up on, audited.
#[tokio::test]
async fn a_refused_reversal_is_retried_daily_until_it_goes_through_or_is_given_up() {
    let t = TestApp::with_stripe(&[]).await;
    let meta = shared::http::RequestMeta { request_id: "retry".into(), ..Default::default() };
    let (payer, payment_id, account) = released_payment(&t, 2_500).await;
    t.stand_in().pay_out(&account, 2_500);
    let pi = intent_of(&t, &payment_id).await;
    let events = t.stand_in().dashboard_refund(&pi, 1_000);
    let refund_id = events[0].1["id"].as_str().unwrap().to_owned();
    deliver_twice_reversed(&t, &events, now()).await;
    assert!(t.stand_in().created("trr_").is_empty());
    let refused = audit_entries(&t, &payer, "payment.transfer_reversed").await;
    assert_eq!(refused.len(), 1, "audited once, not per event");
    assert_eq!(s(&refused[0], "status"), "failure");
    let queued = format!("RECOVERY#{payment_id}#{refund_id}");
    assert_eq!(s(&t.item(&queued, "RECOVERY").await.unwrap(), "GSI2PK"), "UNRECOVERED");

    // Not before a day has passed.
    shared::payments::recovery::retry_due(t.app, &meta, || false).await;
    assert!(t.stand_in().created("trr_").is_empty());
    t.stand_in().fund(&account, 1_000);
    // A day on, Stripe has forgotten the key (it would replay the saved refusal before).
    t.stand_in().forget_idempotency_keys();
    let a_day_ago = shared::time::rfc3339(shared::time::now() - shared::time::Duration::hours(25));
    t.set(&queued, "RECOVERY", &[("GSI2SK", aws_sdk_dynamodb::types::AttributeValue::S(a_day_ago.clone()))]).await;
    let retried = shared::payments::recovery::retry_due(t.app, &meta, || false).await;
    assert!(retried.recovered >= 1, "{retried:?}");
    let (made, _) = reversals(&t);
    assert_eq!((made.len(), made[0]["amount"].as_i64()), (1, Some(1_000)));
    assert!(!t.item(&queued, "RECOVERY").await.unwrap().contains_key("GSI2PK"), "off the queue");
    assert_eq!(s(&payment(&t, &payment_id).await, "transfer_reversed_amount"), "1000");

    // Refused for longer than the retry window: given up on.
    let (payer, payment_id, account) = released_payment(&t, 2_500).await;
    t.stand_in().pay_out(&account, 2_500);
    let pi = intent_of(&t, &payment_id).await;
    let events = t.stand_in().dashboard_refund(&pi, 500);
    let refund_id = events[0].1["id"].as_str().unwrap().to_owned();
    deliver_twice_reversed(&t, &events, now()).await;
    let queued = format!("RECOVERY#{payment_id}#{refund_id}");
    let long_ago = (shared::time::now() - shared::time::Duration::days(31)).unix_timestamp();
    t.set(
        &queued,
        "RECOVERY",
        &[
            ("GSI2SK", aws_sdk_dynamodb::types::AttributeValue::S(a_day_ago)),
            ("first_refused_at", aws_sdk_dynamodb::types::AttributeValue::N(long_ago.to_string())),
        ],
    )
    .await;
    shared::payments::recovery::retry_due(t.app, &meta, || false).await;
    assert_eq!(audit_entries(&t, &payer, "payment.recovery_abandoned").await.len(), 1);
    assert!(!t.item(&queued, "RECOVERY").await.unwrap().contains_key("GSI2PK"));
    assert_eq!(reversals(&t).0.len(), 1, "still only the first payment's reversal");
}

/// With `REVERSE_TRANSFERS=false` a loss after the transfer is only audited (and alarmed),
/// once per cause.
#[tokio::test]
async fn with_recovery_off_a_loss_after_the_transfer_is_only_audited() {
    let t = TestApp::with_stripe(&[("REVERSE_TRANSFERS", "false")]).await;
    let (payer, payment_id, _) = released_payment(&t, 2_500).await;
    let pi = intent_of(&t, &payment_id).await;
    deliver_twice_reversed(&t, &t.stand_in().dashboard_refund(&pi, 1_000), now()).await;
    assert!(reversals(&t).1.is_empty(), "Stripe was not asked");
    let told = audit_entries(&t, &payer, "payment.transfer_reversed").await;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0]["details"].as_m().unwrap()["reason"].as_s().unwrap(), "recovery_off");
}

/// A dashboard refund landing while a release's transfer was already made (its answer lost)
/// is recorded, but the transfer carried the amount before it: Stripe's `transfer.created`
/// for that transfer (sent for every transfer, retried until answered) recovers the
/// refund's share, once.
#[tokio::test]
async fn a_refund_landing_after_the_transfer_was_made_is_recovered_at_transfer_created() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::Timeout(SLOW), 100); // made, answer lost
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    t.stand_in().heal();
    let made = transfers(&t)[0].clone();
    assert_eq!(made["amount"], 2500);
    let pi = intent_of(&t, &payment_id).await;
    let events = t.stand_in().dashboard_refund(&pi, 1_000);
    let refund_id = events[0].1["id"].as_str().unwrap().to_owned();
    for (kind, object) in &events {
        assert_eq!(t.deliver(&stripe_event(kind, now(), object.clone())).await.status, 200);
    }
    backdate_queue(&t, &payment_id).await;
    assert!(matches!(reconcile(&t, &payment_id).await, Reconciled::Released { found: true, .. }));
    for _ in 0..2 {
        assert_eq!(t.deliver(&stripe_event("transfer.created", now(), made.clone())).await.status, 200);
    }
    let (reversed, _) = reversals(&t);
    assert_eq!(reversed.len(), 1, "{reversed:?}");
    assert_eq!(
        (reversed[0]["amount"].as_i64(), reversed[0]["metadata"]["cause"].as_str()),
        (Some(1_000), Some(&*refund_id))
    );
    assert_eq!(audit_count(&t, &payer, "payment.transfer_reversed").await, 1);
    assert_eq!(transfers(&t).len(), 1);
}

/// Money is never held for good: a payment held `HOLD_MAX_DAYS` without release is refunded
/// in full to the payer by the cleanup, both sides told 7 days before; a released payment's
/// hold ends with no refund.
#[tokio::test]
async fn a_payment_held_for_hold_max_days_is_refunded_after_both_sides_are_told() {
    let t = TestApp::with_stripe(&[]).await;
    let meta = shared::http::RequestMeta { request_id: "hold".into(), ..Default::default() };
    let hold = || shared::payments::hold::run(t.app, &meta, || false);
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let timer = format!("HOLD#{payment_id}");
    let started = t.item(&timer, "HOLD").await.expect("a hold timer from the success");
    let in_83_days = shared::time::rfc3339(shared::time::now() + shared::time::Duration::days(83));
    assert_eq!(&s(&started, "GSI2SK")[..10], &in_83_days[..10], "the warning is due 7 days before 90");

    hold().await;
    assert_eq!(s(&t.item(&timer, "HOLD").await.unwrap(), "step"), "warn", "nothing due yet");
    t.set(&timer, "HOLD", &[("GSI2SK", long_ago())]).await;
    hold().await;
    let told: Vec<_> = t
        .published_events()
        .await
        .into_iter()
        .filter(|(kind, e)| kind == "payment.auto_refund_scheduled" && e["data"]["payment_id"] == payment_id.as_str())
        .collect();
    assert_eq!(told.len(), 1, "told once");
    assert!(refund_posts(&t).is_empty(), "told, not refunded");
    assert_eq!(s(&t.item(&timer, "HOLD").await.unwrap(), "step"), "refund");

    t.set(&timer, "HOLD", &[("GSI2SK", long_ago())]).await;
    hold().await;
    t.set(&timer, "HOLD", &[("GSI2SK", long_ago())]).await;
    hold().await;
    let posted = refund_posts(&t);
    assert_eq!(posted.len(), 1, "refunded once");
    assert_eq!(posted[0].form.get("amount").map(String::as_str), Some("2500"));
    assert_eq!(status_of(&t, &payment_id).await, "refunded");
    assert_eq!(audit_count(&t, &payer, "payment.auto_refunded").await, 1);
    assert!(!t.item(&timer, "HOLD").await.unwrap().contains_key("GSI2PK"), "the timer is done");

    let (payer, _, _, released) = held_payment(&t, true).await;
    assert_eq!(release(&t, &payer, &released).await.status, 200);
    let timer = format!("HOLD#{released}");
    t.set(&timer, "HOLD", &[("GSI2SK", long_ago())]).await;
    hold().await;
    assert_eq!(refund_posts(&t).len(), 1, "a released payment is not refunded");
    assert!(!t.item(&timer, "HOLD").await.unwrap().contains_key("GSI2PK"));
}

/// A dashboard refund still `pending` after the release may yet fail: nothing is taken from
/// the provider until it goes through, and then once.
#[tokio::test]
async fn a_pending_refund_after_release_is_recovered_only_once_it_goes_through() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, payment_id, _) = released_payment(&t, 2_500).await;
    let pi = intent_of(&t, &payment_id).await;
    t.stand_in().hold_refunds_pending(true);
    let events = t.stand_in().dashboard_refund(&pi, 1_000);
    deliver_twice_reversed(&t, &events, now()).await;
    assert!(reversals(&t).0.is_empty(), "not while it may fail");
    let refund_id = events[0].1["id"].as_str().unwrap().to_owned();
    deliver_twice_reversed(&t, &t.stand_in().succeed_refund(&refund_id), now() + 1).await;
    let (made, _) = reversals(&t);
    assert_eq!((made.len(), made[0]["amount"].as_i64()), (1, Some(1_000)));
}

/// Stripe's `funds_withdrawn` delivered after the dispute was won (`funds_reinstated` and
/// `closed` first) takes nothing from the provider, and nothing is paid back twice.
#[tokio::test]
async fn a_dispute_won_before_its_withdrawal_is_handled_takes_nothing_from_the_provider() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, payment_id, _) = released_payment(&t, 2_500).await;
    let pi = intent_of(&t, &payment_id).await;
    let (dispute_id, opened) = t.stand_in().open_dispute(&pi, 2_500);
    let won = t.stand_in().win_dispute(&dispute_id);
    deliver_twice_reversed(&t, &won, now() + 1).await;
    deliver_twice_reversed(&t, &opened, now()).await;
    assert!(reversals(&t).0.is_empty(), "{:?}", reversals(&t).0);
    assert_eq!(transfers(&t).len(), 1, "no re-payment either");
}

/// The refund giving money that came back to the payer again, as `(id, object)` at the
/// stand-in: the one under the failed refund's key.
fn refund_again(t: &TestApp, payment_id: &str, refund_id: &str) -> (String, Value) {
    let key = format!("refund:{payment_id}:again:{refund_id}");
    let made = t.stand_in().created("re_");
    let found = made.into_iter().find(|r| r["metadata"]["refund_key"] == key.as_str()).expect("the refund again");
    (found["id"].as_str().unwrap().to_owned(), found)
}

/// A refund of the money that came back whose answer was lost is ours, not the dashboard's:
/// its events take nothing from the provider, the charge's total waits until the refund is
/// recorded, and it is counted once.
#[tokio::test]
async fn a_refund_of_unsettled_money_whose_answer_was_lost_is_neither_reversed_nor_counted_twice() {
    let t = TestApp::with_stripe(&[("PLATFORM_FEE_BPS", "1000")]).await;
    let (payer, payment_id, refund_id) = unsettled_payment(&t, 1_000).await;
    t.stand_in().fail("/v1/refunds", Failure::Timeout(SLOW), 100); // made, answer lost
    assert_eq!(refund(&t, &payer, &payment_id, None).await.status, 202);
    t.stand_in().heal();
    let (_, again) = refund_again(&t, &payment_id, &refund_id);
    let pi = intent_of(&t, &payment_id).await;
    let created = stripe_event("refund.created", now() + 2, again);
    let total = stripe_event("charge.refunded", now() + 2, t.stand_in().charge_of(&pi));
    assert_eq!(t.deliver(&created).await.status, 200);
    t.deliver(&total).await;
    assert!(reversals(&t).0.is_empty(), "nothing is taken from the provider for our own refund");

    let retried = refund(&t, &payer, &payment_id, None).await;
    assert_eq!(retried.status, 200, "{:?}", retried.body);
    assert_eq!(t.deliver(&total).await.status, 200, "Stripe's redelivery, once the refund is recorded");
    let settled = shown(&t, &payer, &payment_id).await;
    assert_eq!(
        (settled["amount_refunded"].as_i64(), settled["amount_unsettled"].as_i64()),
        (Some(1_000), Some(0)),
        "{settled:?}"
    );
    let made = t.stand_in().created("re_");
    assert_eq!(made.iter().filter(|r| r["payment_intent"] == pi.as_str()).count(), 2, "the first and one again");
    assert!(reversals(&t).0.is_empty());
}

/// A refund of the money that came back that Stripe made (answer lost) and that then failed
/// is not taken for done when the route is retried (Stripe would replay its first answer,
/// `pending`): the money stays unsettled and can be released instead.
#[tokio::test]
async fn a_refund_of_unsettled_money_that_failed_before_it_was_recorded_leaves_it_unsettled() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, payment_id, refund_id) = unsettled_payment(&t, 1_000).await;
    t.stand_in().hold_refunds_pending(true);
    t.stand_in().fail("/v1/refunds", Failure::Timeout(SLOW), 100); // made, answer lost
    assert_eq!(refund(&t, &payer, &payment_id, None).await.status, 202);
    t.stand_in().heal();
    let (again_id, _) = refund_again(&t, &payment_id, &refund_id);
    deliver_twice_reversed(&t, &t.stand_in().fail_refund(&again_id), now() + 2).await;

    let retried = refund(&t, &payer, &payment_id, None).await;
    assert_ne!(retried.status, 200, "{:?}", retried.body);
    let after = shown(&t, &payer, &payment_id).await;
    assert_eq!((after["amount_refunded"].as_i64(), after["amount_unsettled"].as_i64()), (Some(0), Some(1_000)));
    let released = release(&t, &payer, &payment_id).await;
    assert_eq!(released.status, 200, "{:?}", released.body);
    let made = transfers(&t);
    assert_eq!(made.iter().filter(|t| t["metadata"]["cause"] == refund_id.as_str()).count(), 1, "{made:?}");
    assert_eq!(shown(&t, &payer, &payment_id).await["amount_unsettled"], 0);
}

/// A reversal Stripe refused for a dashboard refund that then failed is owed by nobody: the
/// daily retry takes it off the queue and reverses nothing.
#[tokio::test]
async fn a_refused_reversal_is_not_retried_once_its_refund_failed() {
    let t = TestApp::with_stripe(&[]).await;
    let meta = shared::http::RequestMeta { request_id: "retry-failed".into(), ..Default::default() };
    let (_, payment_id, account) = released_payment(&t, 2_500).await;
    t.stand_in().pay_out(&account, 2_500);
    let pi = intent_of(&t, &payment_id).await;
    let events = t.stand_in().dashboard_refund(&pi, 1_000);
    let refund_id = events[0].1["id"].as_str().unwrap().to_owned();
    deliver_twice_reversed(&t, &events, now()).await;
    let queued = format!("RECOVERY#{payment_id}#{refund_id}");
    assert_eq!(s(&t.item(&queued, "RECOVERY").await.unwrap(), "GSI2PK"), "UNRECOVERED");
    deliver_twice_reversed(&t, &t.stand_in().fail_refund(&refund_id), now() + 1).await;

    t.stand_in().fund(&account, 1_000);
    t.stand_in().forget_idempotency_keys();
    let a_day_ago = shared::time::rfc3339(shared::time::now() - shared::time::Duration::hours(25));
    t.set(&queued, "RECOVERY", &[("GSI2SK", aws_sdk_dynamodb::types::AttributeValue::S(a_day_ago))]).await;
    shared::payments::recovery::retry_due(t.app, &meta, || false).await;
    assert!(reversals(&t).0.is_empty(), "the provider keeps what no refund took");
    assert!(!t.item(&queued, "RECOVERY").await.unwrap().contains_key("GSI2PK"), "off the queue");
}

/// Money that came back is not released while the charge is disputed (409), as a held
/// payment is not.
#[tokio::test]
async fn unsettled_money_is_not_released_under_an_open_dispute() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, payment_id, _) = unsettled_payment(&t, 1_000).await;
    let pi = intent_of(&t, &payment_id).await;
    let (_, opened) = t.stand_in().open_dispute(&pi, 500);
    let (kind, object) = &opened[0];
    assert_eq!(kind, "charge.dispute.created");
    assert_eq!(t.deliver(&stripe_event(kind, now() + 2, object.clone())).await.status, 200);
    let refused = release(&t, &payer, &payment_id).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (409, Some("conflict")), "{:?}", refused.body);
    assert_eq!(transfers(&t).len(), 1, "only the release");
    assert_eq!(shown(&t, &payer, &payment_id).await["amount_unsettled"], 1_000);
}

/// A won dispute's re-payment Stripe refuses (the platform's balance is short) is audited
/// once, queued, and retried daily under its key until it goes through, once.
#[tokio::test]
async fn a_refused_repayment_of_a_won_dispute_is_retried_daily_until_it_goes_through() {
    let t = TestApp::with_stripe(&[]).await;
    let meta = shared::http::RequestMeta { request_id: "repay".into(), ..Default::default() };
    let (payer, payment_id, _) = released_payment(&t, 2_500).await;
    let pi = intent_of(&t, &payment_id).await;
    let (dispute_id, opened) = t.stand_in().open_dispute(&pi, 2_500);
    for (kind, object) in &opened {
        assert_eq!(t.deliver(&stripe_event(kind, now(), object.clone())).await.status, 200);
    }
    assert_eq!(reversals(&t).0.len(), 1);
    t.stand_in().fail("/v1/transfers", Failure::RefusedSaved, 1);
    deliver_twice_reversed(&t, &t.stand_in().win_dispute(&dispute_id), now() + 1).await;
    assert_eq!(transfers(&t).len(), 1, "not paid back yet");
    let queued = format!("RECOVERY#{payment_id}#{dispute_id}#repay");
    assert_eq!(s(&t.item(&queued, "RECOVERY").await.unwrap(), "GSI2PK"), "UNRECOVERED");
    let refused = audit_entries(&t, &payer, "payment.repaid").await;
    assert_eq!(refused.len(), 1, "audited once, not per event");
    assert_eq!(s(&refused[0], "status"), "failure");

    // A day on, Stripe has forgotten the key (it would replay the saved refusal before).
    t.stand_in().forget_idempotency_keys();
    let a_day_ago = shared::time::rfc3339(shared::time::now() - shared::time::Duration::hours(25));
    t.set(&queued, "RECOVERY", &[("GSI2SK", aws_sdk_dynamodb::types::AttributeValue::S(a_day_ago))]).await;
    let retried = shared::payments::recovery::retry_due(t.app, &meta, || false).await;
    assert!(retried.recovered >= 1, "{retried:?}");
    let made = transfers(&t);
    let repaid: Vec<&Value> = made.iter().filter(|t| t["metadata"]["cause"] == dispute_id.as_str()).collect();
    assert_eq!((repaid.len(), repaid[0]["amount"].as_i64()), (1, Some(2_500)), "{made:?}");
    assert!(!t.item(&queued, "RECOVERY").await.unwrap().contains_key("GSI2PK"), "off the queue");
    let audited = audit_entries(&t, &payer, "payment.repaid").await;
    assert_eq!(audited.iter().filter(|e| s(e, "status") == "success").count(), 1);
}
