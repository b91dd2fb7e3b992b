//! POST /auth/verify-email and POST /auth/resend-verification.

use crate::common;

use crate::common::{TestApp, s, unique_email};
use serde_json::json;
use shared::api::verify::handle;

#[tokio::test]
async fn a_verification_token_verifies_once() {
    let t = TestApp::new().await;
    let (email, token) = t.registered("verify").await;

    let ok = t.post(handle, "/auth/verify-email", json!({"token": token})).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.body, json!({"status": "verified"}));
    let user = t.user_by_email(&email).await;
    assert_eq!(s(&user, "email_verified"), "true");
    assert!(!user.contains_key("verify_token_hash"));

    let again = t.post(handle, "/auth/verify-email", json!({"token": token})).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.body["code"], "token_invalid");

    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    assert!(audit.iter().any(|e| s(e, "action") == "auth.verify_email" && s(e, "status") == "success"));
    let user_id = s(&user, "user_id");
    assert!(
        t.published_events()
            .await
            .iter()
            .any(|(kind, m)| kind == "user.verified" && m["data"]["user_id"] == user_id.as_str())
    );
}

#[tokio::test]
async fn unknown_missing_and_expired_tokens_are_rejected() {
    let t = TestApp::new().await;
    let unknown = t.post(handle, "/auth/verify-email", json!({"token": "x".repeat(43)})).await;
    assert_eq!((unknown.status, unknown.body["code"].as_str()), (400, Some("token_invalid")));
    let missing = t.post(handle, "/auth/verify-email", json!({})).await;
    assert_eq!((missing.status, missing.body["code"].as_str()), (400, Some("validation_failed")));

    // Age the stored token past its expiry: it must stop working even before TTL removes it.
    let (email, token) = t.registered("expired").await;
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    t.app
        .table()
        .client()
        .update_item()
        .table_name(t.app.table().name())
        .key("PK", aws_sdk_dynamodb::types::AttributeValue::S(format!("TOKEN#{hash}")))
        .key("SK", aws_sdk_dynamodb::types::AttributeValue::S("TOKEN".into()))
        .update_expression("SET expires_at = :past")
        .expression_attribute_values(
            ":past",
            aws_sdk_dynamodb::types::AttributeValue::S("2020-01-01T00:00:00.000000Z".into()),
        )
        .send()
        .await
        .unwrap();
    let expired = t.post(handle, "/auth/verify-email", json!({"token": token})).await;
    assert_eq!((expired.status, expired.body["code"].as_str()), (400, Some("token_invalid")));
    assert_eq!(s(&t.user_by_email(&email).await, "email_verified"), "false");
}

#[tokio::test]
async fn concurrent_verifications_of_one_token_succeed_exactly_once() {
    let t = TestApp::new().await;
    let (email, token) = t.registered("verify-race").await;
    let tasks = (0..12).map(|_| {
        let event = common::http_event("POST", "/auth/verify-email", &[], Some(&json!({"token": token}).to_string()));
        common::spawn_invoke(t.app, handle, event)
    });
    let results: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.map(|(status, body)| (status, body["code"].as_str().map(str::to_owned))).unwrap())
        .collect();
    assert_eq!(results.iter().filter(|(status, _)| *status == 200).count(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|(status, _)| *status != 200)
            .all(|(status, code)| *status == 400 && code.as_deref() == Some("token_invalid"))
    );
    let user = t.user_by_email(&email).await;
    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    assert_eq!(audit.iter().filter(|e| s(e, "action") == "auth.verify_email").count(), 1);
}

#[tokio::test]
async fn resend_sends_a_new_token_that_replaces_the_old_one() {
    let t = TestApp::new().await;
    let (email, old_token) = t.registered("resend").await;
    let resent = t.post(handle, "/auth/resend-verification", json!({"email": email.to_uppercase()})).await;
    assert_eq!(resent.status, 202);
    assert_eq!(resent.body, json!({"status": "sent_if_pending"}));
    let emails = t.emails_to(&email).await;
    assert_eq!(emails.len(), 2);
    let new_token = emails[1].token_for("/verify-email").unwrap();
    assert_ne!(new_token, old_token);

    let old = t.post(handle, "/auth/verify-email", json!({"token": old_token})).await;
    assert_eq!((old.status, old.body["code"].as_str()), (400, Some("token_invalid")));
    let new = t.post(handle, "/auth/verify-email", json!({"token": new_token})).await;
    assert_eq!(new.status, 200);
}

#[tokio::test]
async fn resend_answers_the_same_for_unknown_and_verified_addresses_and_sends_nothing() {
    let t = TestApp::new().await;
    let (verified, token) = t.registered("resend-verified").await;
    assert_eq!(t.post(handle, "/auth/verify-email", json!({"token": token})).await.status, 200);
    let unknown = unique_email("resend-unknown");
    let a = t.post(handle, "/auth/resend-verification", json!({"email": unknown})).await;
    let b = t.post(handle, "/auth/resend-verification", json!({"email": verified})).await;
    assert_eq!((a.status, &a.body), (b.status, &b.body));
    assert_eq!(a.status, 202);
    assert!(t.emails_to(&unknown).await.is_empty());
    let subjects: Vec<String> = t.emails_to(&verified).await.into_iter().map(|e| e.subject).collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert_eq!(subjects[1], "Welcome aboard", "the original verification email, then the welcome after it");

    let bad = t.post(handle, "/auth/resend-verification", json!({"email": "nope"})).await;
    assert_eq!((bad.status, bad.body["code"].as_str()), (400, Some("validation_failed")));
}

#[tokio::test]
async fn resend_is_rate_limited_per_address() {
    let t = TestApp::with_env(&[("RATE_LIMIT_RESEND_VERIFICATION", "2/3600")]).await;
    let (email, _) = t.registered("resend-limit").await;
    for _ in 0..2 {
        assert_eq!(t.post(handle, "/auth/resend-verification", json!({"email": email})).await.status, 202);
    }
    let limited = t.post(handle, "/auth/resend-verification", json!({"email": email})).await;
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    assert_eq!(t.emails_to(&email).await.len(), 3, "the limited request sent nothing");
}

#[tokio::test]
async fn resend_is_limited_per_client_whatever_addresses_it_names() {
    let t = TestApp::with_env(&[("RATE_LIMIT_RESEND_VERIFICATION_CLIENT", "2/86400")]).await;
    let client = common::random_ip();
    let t = &t;
    let resend = |email: String| {
        let event = common::http_event_from(
            &client,
            "POST",
            "/auth/resend-verification",
            &[],
            Some(&json!({"email": email}).to_string()),
        );
        async move { t.invoke(handle, &event).await }
    };
    for n in 0..2 {
        assert_eq!(resend(unique_email(&format!("resend-spray-{n}"))).await.status, 202);
    }
    let limited = resend(unique_email("resend-spray-2")).await;
    assert_eq!((limited.status, limited.body["code"].as_str()), (429, Some("rate_limited")));
}
