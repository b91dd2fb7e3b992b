//! GET /payments: the caller's payment history as payer or as provider, newest first, in
//! cursor pages of one Query each; payments made through the API and the Stripe stand-in.

use crate::common;

use std::collections::HashSet;

use crate::common::{
    TestApp, TestResponse,
    money::{mark_succeeded, pay, provider, token},
};
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use shared::api::pay::handle;

async fn history(t: &TestApp, tokens: &Value, query: &[(&str, &str)]) -> TestResponse {
    let raw: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut event: Value = serde_json::from_str(&common::http_event(
        "GET",
        "/payments",
        &[("authorization", &format!("Bearer {}", token(tokens)))],
        None,
    ))
    .unwrap();
    event["rawQueryString"] = json!(raw.join("&"));
    event["queryStringParameters"] =
        json!(query.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>());
    t.invoke(handle, &event.to_string()).await
}

/// Every page of a listing, following `next_cursor` to its end: the items in order, and
/// each page's size.
async fn all_pages(t: &TestApp, tokens: &Value, query: &[(&str, &str)]) -> (Vec<Value>, Vec<usize>) {
    let mut items = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = query.to_vec();
        if let Some(c) = &cursor {
            q.push(("cursor", c.as_str()));
        }
        let page = history(t, tokens, &q).await;
        assert_eq!(page.status, 200, "{q:?}: {:?}", page.body);
        let found = page.body["items"].as_array().unwrap();
        sizes.push(found.len());
        items.extend(found.iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(sizes.len() <= 200, "the pages never end");
    }
    (items, sizes)
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["payment_id"].as_str().unwrap().to_owned()).collect()
}

fn set(ids: &[String]) -> HashSet<String> {
    ids.iter().cloned().collect()
}

/// `n` payments from `payer` to `provider_id`, made through the API eight at a time: their ids.
async fn payments(t: &TestApp, payer: &Value, provider_id: &str, n: usize) -> Vec<String> {
    stream::iter(0..n)
        .map(|i| async move {
            let key = uuid::Uuid::new_v4().to_string();
            let made = pay(t, payer, provider_id, &key, 1000 + i as i64).await;
            assert_eq!(made.status, 201, "{:?}", made.body);
            made.body["payment_id"].as_str().unwrap().to_owned()
        })
        .buffer_unordered(8)
        .collect()
        .await
}

#[tokio::test]
async fn a_long_history_comes_back_once_each_newest_first_at_one_query_a_page() {
    let t = TestApp::with_stripe_and_faults(&[("RATE_LIMIT_STRIPE", "1000/60")]).await;
    let (provider_tokens, provider_id) = provider(&t, false).await;
    let (_, payer) = t.logged_in("history-payer").await;
    let made = payments(&t, &payer, &provider_id, 120).await;

    let queries_before = t.faults().seen("Query", "");
    let (items, sizes) = all_pages(&t, &payer, &[("limit", "7")]).await;
    assert_eq!(t.faults().seen("Query", "") - queries_before, sizes.len(), "one Query a page, nothing else");
    assert_eq!(t.faults().seen("Scan", ""), 0);
    assert_eq!(sizes.len(), 18, "{sizes:?}");
    assert!(sizes[..17].iter().all(|&n| n == 7), "full pages until the last: {sizes:?}");

    let listed = ids(&items);
    assert_eq!(listed.len(), 120, "each payment once");
    assert_eq!(set(&listed), set(&made), "exactly the payments made");
    let order: Vec<(&str, &str)> =
        items.iter().map(|i| (i["created_at"].as_str().unwrap(), i["payment_id"].as_str().unwrap())).collect();
    let misplaced = order.windows(2).find(|w| w[0] <= w[1]);
    assert!(misplaced.is_none(), "newest first, but {misplaced:?}");

    // Items are what GET /payments/{id} shows; the default page is 20.
    let one = t.authed(handle, "GET", &format!("/payments/{}", listed[0]), token(&payer), &[], None).await;
    assert_eq!(items[0], one.body);
    let first = history(&t, &payer, &[]).await;
    assert_eq!(ids(first.body["items"].as_array().unwrap()), listed[..20]);

    // The provider's side has them all too, in the same order.
    let (theirs, _) = all_pages(&t, &provider_tokens, &[("side", "provider"), ("limit", "100")]).await;
    assert_eq!(ids(&theirs), listed);
}

#[tokio::test]
async fn a_provider_sees_only_payments_to_them_and_others_see_none() {
    let t = TestApp::with_stripe(&[]).await;
    let (alice, alice_provider) = provider(&t, false).await;
    let (bob, bob_provider) = provider(&t, false).await;
    let (_, payer) = t.logged_in("payer").await;
    let to_alice = payments(&t, &payer, &alice_provider, 3).await;
    let to_bob = payments(&t, &payer, &bob_provider, 2).await;
    // Alice pays Bob: on her payer side, not on her provider side.
    let alice_paid = payments(&t, &alice, &bob_provider, 1).await;

    let side = |tokens: &Value, side: &'static str| {
        let tokens = tokens.clone();
        let t = &t;
        async move { all_pages(t, &tokens, &[("side", side), ("limit", "2")]).await.0 }
    };
    let alices = side(&alice, "provider").await;
    assert_eq!(set(&ids(&alices)), set(&to_alice));
    assert!(alices.iter().all(|p| p["provider_id"] == alice_provider.as_str()));
    let bobs = side(&bob, "provider").await;
    assert_eq!(set(&ids(&bobs)), set(&[to_bob.clone(), alice_paid.clone()].concat()));
    assert!(bobs.iter().all(|p| p["provider_id"] == bob_provider.as_str()));
    assert_eq!(set(&ids(&side(&alice, "payer").await)), set(&alice_paid));
    assert!(side(&bob, "payer").await.is_empty());

    let payers = side(&payer, "payer").await;
    assert_eq!(set(&ids(&payers)), set(&[to_alice, to_bob].concat()));
    assert!(side(&payer, "provider").await.is_empty(), "owns no provider account: an empty list");

    let (_, stranger) = t.logged_in("stranger").await;
    for which in ["payer", "provider"] {
        let page = history(&t, &stranger, &[("side", which)]).await;
        assert_eq!((page.status, &page.body), (200, &json!({"items": [], "next_cursor": null})), "{which}");
    }
}

#[tokio::test]
async fn the_status_filter_keeps_that_status_across_short_pages() {
    let t = TestApp::with_stripe(&[]).await;
    let (provider_tokens, provider_id) = provider(&t, false).await;
    let (_, payer) = t.logged_in("payer").await;
    let made = payments(&t, &payer, &provider_id, 10).await;
    for id in &made[..4] {
        mark_succeeded(&t, id).await;
    }

    let (succeeded, sizes) = all_pages(&t, &payer, &[("status", "succeeded"), ("limit", "3")]).await;
    assert_eq!(set(&ids(&succeeded)), set(&made[..4]));
    assert_eq!(succeeded.len(), 4, "each once");
    assert!(succeeded.iter().all(|p| p["status"] == "succeeded"));
    assert!(sizes.iter().all(|&n| n <= 3), "{sizes:?}");
    let (waiting, _) = all_pages(&t, &payer, &[("status", "requires_payment"), ("limit", "3")]).await;
    assert_eq!(set(&ids(&waiting)), set(&made[4..]));
    let (released, _) = all_pages(&t, &payer, &[("status", "released"), ("limit", "3")]).await;
    assert!(released.is_empty());
    let (as_provider, _) =
        all_pages(&t, &provider_tokens, &[("side", "provider"), ("status", "succeeded"), ("limit", "4")]).await;
    assert_eq!(set(&ids(&as_provider)), set(&made[..4]));
}

#[tokio::test]
async fn bad_parameters_and_foreign_cursors_are_400_naming_the_field() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = provider(&t, false).await;
    let (_, payer) = t.logged_in("payer").await;
    payments(&t, &payer, &provider_id, 3).await;

    let field_of = |response: &TestResponse| {
        assert_eq!((response.status, response.body["code"].as_str()), (400, Some("validation_failed")));
        assert_eq!(response.header("content-type"), Some("application/problem+json"));
        response.body["errors"][0]["field"].as_str().unwrap().to_owned()
    };
    for (query, field) in [
        (vec![("side", "payee")], "side"),
        (vec![("side", "")], "side"),
        (vec![("status", "paid")], "status"),
        (vec![("status", "")], "status"),
        (vec![("limit", "0")], "limit"),
        (vec![("limit", "101")], "limit"),
        (vec![("limit", "ten")], "limit"),
        (vec![("cursor", "garbage")], "cursor"),
    ] {
        assert_eq!(field_of(&history(&t, &payer, &query).await), field, "{query:?}");
    }

    let first = history(&t, &payer, &[("limit", "1")]).await;
    assert_eq!(first.status, 200);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = history(&t, &payer, &[("limit", "1"), ("cursor", &cursor)]).await;
    assert_eq!(second.status, 200);
    assert_ne!(second.body["items"][0]["payment_id"], first.body["items"][0]["payment_id"]);
    // The page size may change between pages; nothing else may.
    assert_eq!(history(&t, &payer, &[("limit", "5"), ("cursor", &cursor)]).await.status, 200);

    let (payload, mac) = cursor.split_once('.').unwrap();
    let swapped = if payload.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{swapped}{}.{mac}", &payload[1..]);
    assert_eq!(field_of(&history(&t, &payer, &[("cursor", &tampered)]).await), "cursor", "modified");
    for other in [vec![("side", "provider")], vec![("status", "requires_payment")]] {
        let mut query = other.clone();
        query.push(("cursor", &cursor));
        assert_eq!(field_of(&history(&t, &payer, &query).await), "cursor", "another query: {other:?}");
    }
    let (_, stranger) = t.logged_in("stranger").await;
    assert_eq!(field_of(&history(&t, &stranger, &[("cursor", &cursor)]).await), "cursor", "another caller");

    let anonymous = t.invoke(handle, &common::http_event("GET", "/payments", &[], None)).await;
    assert_eq!((anonymous.status, anonymous.body["code"].as_str()), (401, Some("unauthorized")));
}
