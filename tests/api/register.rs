//! POST /auth/register, black-box over the local stack.

use crate::common;

use crate::common::{STRONG_PASSWORD, TestApp, http_event, http_event_from, s, unique_email};
use serde_json::json;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn new_address_gets_202_an_account_an_org_a_token_an_email_an_event_and_an_audit_entry() {
    let t = TestApp::new().await;
    let email = unique_email("new");
    let response = t
        .register(
            json!({"email": email, "password": STRONG_PASSWORD, "full_name": "Ada Lovelace", "org_name": "Engines"}),
        )
        .await;

    assert_eq!(response.status, 202);
    assert_eq!(response.body, json!({"status": "pending_verification"}));
    assert!(response.header("x-request-id").is_some_and(|id| !id.is_empty()));

    // The guard points at the user; the user is unverified admin of a new org.
    let guard = t.item(&format!("EMAIL#{email}"), "EMAIL").await.expect("email guard");
    let user_id = s(&guard, "user_id");
    let user = t.item(&format!("USER#{user_id}"), "PROFILE").await.expect("user");
    assert_eq!(s(&user, "email"), email);
    assert_eq!(s(&user, "email_verified"), "false");
    assert_eq!(s(&user, "role"), "admin");
    assert_eq!(s(&user, "full_name"), "Ada Lovelace");
    let hash = s(&user, "password_hash");
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    assert!(!hash.contains(STRONG_PASSWORD));

    let org_id = s(&user, "org_id");
    let org = t.item(&format!("ORG#{org_id}"), "ORG").await.expect("org");
    assert_eq!(s(&org, "name"), "Engines");
    assert_eq!(s(&org, "admin_count"), "1");
    let member = t.item(&format!("ORG#{org_id}"), &format!("MEMBER#{user_id}")).await.expect("membership");
    assert_eq!(s(&member, "role"), "admin");

    // Exactly one verification email, whose token is stored only as its SHA-256.
    let emails = t.emails_to(&email).await;
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert_eq!(emails[0].subject, "Confirm your email address");
    assert_eq!(emails[0].source, "no-reply@example.com");
    let frontend = std::env::var("FRONTEND_URL").unwrap();
    assert!(emails[0].body.contains(&format!("{frontend}/verify-email?token=")), "{}", emails[0].body);
    let token = emails[0].token_for("/verify-email").expect("token in link");
    assert!(token.len() >= 22, "at least 128 bits");
    let token_hash = hex::encode(Sha256::digest(token.as_bytes()));
    assert!(t.item(&format!("TOKEN#{token}"), "TOKEN").await.is_none(), "raw token must not be a key");
    let stored = t.item(&format!("TOKEN#{token_hash}"), "TOKEN").await.expect("token stored by hash");
    assert_eq!(s(&stored, "kind"), "verify_email");
    assert_eq!(s(&stored, "user_id"), user_id);
    assert_eq!(s(&user, "verify_token_hash"), token_hash);
    let ttl: i64 = s(&stored, "ttl").parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((ttl - now - 24 * 3600).abs() < 120, "ttl is 24 h out");
    let raw_item = format!("{stored:?}{user:?}");
    assert!(!raw_item.contains(&token));

    // A user.registered event with the event_type attribute, carrying ids, not the email.
    let events = t.published_events().await;
    let event =
        events.iter().find(|(_, m)| m["data"]["user_id"] == user_id.as_str()).expect("user.registered published");
    assert_eq!(event.0, "user.registered");
    assert_eq!(event.1["event_type"], "user.registered");
    assert!(!event.1.to_string().contains(&email));

    // An audit entry in the new org, with ids only.
    let audit = t.partition(&format!("AUDIT#{org_id}")).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(s(&audit[0], "action"), "auth.register");
    assert_eq!(s(&audit[0], "status"), "success");
    assert_eq!(s(&audit[0], "actor_user_id"), user_id);
    assert!(s(&audit[0], "ip").starts_with("10."), "the client address is recorded");
    assert!(!format!("{:?}", audit[0]).contains(&email));
}

#[tokio::test]
async fn already_registered_address_gets_the_same_202_and_an_account_exists_email() {
    let t = TestApp::new().await;
    let email = unique_email("twice");
    let first = t.register(json!({"email": email, "password": STRONG_PASSWORD})).await;
    let guard = t.item(&format!("EMAIL#{email}"), "EMAIL").await.unwrap();

    let second = t.register(json!({"email": email.to_uppercase(), "password": "another quite long passphrase"})).await;
    assert_eq!(first.status, second.status);
    assert_eq!(first.body, second.body);

    let guard_after = t.item(&format!("EMAIL#{email}"), "EMAIL").await.unwrap();
    assert_eq!(s(&guard, "user_id"), s(&guard_after, "user_id"), "the first account is untouched");
    let subjects: Vec<String> = t.emails_to(&email).await.into_iter().map(|e| e.subject).collect();
    assert_eq!(subjects, ["Confirm your email address", "You already have an account"]);

    // The attempt is audited as a failure in the owner's org.
    let user = t.item(&format!("USER#{}", s(&guard, "user_id")), "PROFILE").await.unwrap();
    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    assert!(audit.iter().any(|e| s(e, "status") == "failure" && s(e, "action") == "auth.register"));
}

#[tokio::test]
async fn email_is_trimmed_and_lower_cased() {
    let t = TestApp::new().await;
    let email = unique_email("norm");
    let response =
        t.register(json!({"email": format!("  {}  ", email.to_uppercase()), "password": STRONG_PASSWORD})).await;
    assert_eq!(response.status, 202);
    assert!(t.item(&format!("EMAIL#{email}"), "EMAIL").await.is_some());
    assert_eq!(t.emails_to(&email).await.len(), 1);
}

#[tokio::test]
async fn invalid_fields_get_400_validation_failed_and_change_nothing() {
    let t = TestApp::new().await;
    let cases = [
        (json!({"email": "not-an-email", "password": STRONG_PASSWORD}), vec!["email"]),
        (json!({"password": STRONG_PASSWORD}), vec!["email"]),
        (json!({"email": unique_email("short"), "password": "short"}), vec!["password"]),
        (json!({"email": unique_email("common"), "password": "password1234"}), vec!["password"]),
        (json!({"email": unique_email("long"), "password": "x".repeat(129)}), vec!["password"]),
        (json!({"email": "bad", "password": "bad"}), vec!["email", "password"]),
        (json!({"email": 42, "password": STRONG_PASSWORD}), vec!["email"]),
    ];
    for (body, fields) in cases {
        let response = t.register(body.clone()).await;
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(response.header("content-type"), Some("application/problem+json"));
        assert_eq!(response.body["code"], "validation_failed");
        assert_eq!(response.body["status"], 400);
        assert!(response.body["request_id"].is_string());
        let got: Vec<&str> =
            response.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(got, fields, "{body}");
        if let Some(email) = body["email"].as_str() {
            assert!(t.item(&format!("EMAIL#{email}"), "EMAIL").await.is_none());
            assert!(t.emails_to(email).await.is_empty());
        }
    }
}

#[tokio::test]
async fn malformed_json_gets_400_malformed_json() {
    let t = TestApp::new().await;
    for body in ["{\"email\":", "", "[]", "nope"] {
        let event = http_event("POST", "/auth/register", &[], Some(body));
        let response = t.invoke(shared::api::register::handle, &event).await;
        assert_eq!(response.status, 400, "{body:?}");
        assert_eq!(response.body["code"], "malformed_json", "{body:?}");
    }
}

#[tokio::test]
async fn unknown_invitation_token_is_token_invalid_and_creates_nothing() {
    let t = TestApp::new().await;
    let email = unique_email("invite");
    let response = t
        .register(
            json!({"email": email, "password": STRONG_PASSWORD, "invitation_token": "not-a-real-invitation-token"}),
        )
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body["code"], "token_invalid");
    assert!(t.item(&format!("EMAIL#{email}"), "EMAIL").await.is_none());
    assert!(t.emails_to(&email).await.is_empty());
}

#[tokio::test]
async fn a_sane_caller_request_id_is_echoed_and_an_unsafe_one_replaced() {
    let t = TestApp::new().await;
    let body = json!({"email": "bad"}).to_string();
    let event = http_event("POST", "/auth/register", &[("X-Request-Id", "client-abc-123")], Some(&body));
    let response = t.invoke(shared::api::register::handle, &event).await;
    assert_eq!(response.header("x-request-id"), Some("client-abc-123"));
    assert_eq!(response.body["request_id"], "client-abc-123");

    let event = http_event("POST", "/auth/register", &[("X-Request-Id", "bad id with spaces")], Some(&body));
    let response = t.invoke(shared::api::register::handle, &event).await;
    let id = response.header("x-request-id").unwrap();
    assert_ne!(id, "bad id with spaces");
    assert!(id.starts_with("apigw-"), "falls back to API Gateway's request id: {id}");
}

#[tokio::test]
async fn twenty_parallel_registrations_of_one_address_create_exactly_one_user() {
    let t = TestApp::new().await;
    let email = unique_email("race");
    let body = json!({"email": email, "password": STRONG_PASSWORD});
    // Each request on its own task, so they really run concurrently.
    let tasks = (0..20).map(|_| {
        let event = http_event("POST", "/auth/register", &[], Some(&body.to_string()));
        common::spawn_invoke(t.app, shared::api::register::handle, event)
    });
    let responses: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    for (status, body) in &responses {
        assert_eq!(*status, 202);
        assert_eq!(body, &responses[0].1, "identical bodies");
    }
    let emails = t.emails_to(&email).await;
    let verifications = emails.iter().filter(|e| e.subject == "Confirm your email address").count();
    let exists = emails.iter().filter(|e| e.subject == "You already have an account").count();
    assert_eq!((verifications, exists), (1, 19), "exactly one account was created");

    let guard = t.item(&format!("EMAIL#{email}"), "EMAIL").await.unwrap();
    let user = t.item(&format!("USER#{}", s(&guard, "user_id")), "PROFILE").await.unwrap();
    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    assert_eq!(audit.iter().filter(|e| s(e, "status") == "success").count(), 1);
}

#[tokio::test]
async fn the_sample_event_in_events_is_accepted() {
    let t = TestApp::new().await;
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/events/register.json")).unwrap();
    let email = unique_email("sample");
    let event = sample.replace("ada@example.com", &email);
    let response = t.invoke(shared::api::register::handle, &event).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    assert_eq!(response.header("x-request-id"), Some("example-register-1"));
    assert_eq!(t.emails_to(&email).await.len(), 1);
}

#[tokio::test]
async fn registrations_per_client_address_are_rate_limited() {
    let t = TestApp::with_env(&[("RATE_LIMIT_REGISTER", "2/3600")]).await;
    let ip = common::random_ip();
    let mut last = None;
    for i in 0..3 {
        let email = unique_email(&format!("limited{i}"));
        let body = json!({"email": email, "password": STRONG_PASSWORD}).to_string();
        let event = http_event_from(&ip, "POST", "/auth/register", &[], Some(&body));
        last = Some((email, t.invoke(shared::api::register::handle, &event).await));
    }
    let (email, response) = last.unwrap();
    assert_eq!(response.status, 429);
    assert_eq!(response.body["code"], "rate_limited");
    let retry_after: u64 = response.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry_after));
    assert!(t.item(&format!("EMAIL#{email}"), "EMAIL").await.is_none(), "a limited request changes nothing");

    // Another address is not affected, and the switch turns limits off.
    let other = t.register(json!({"email": unique_email("other"), "password": STRONG_PASSWORD})).await;
    assert_eq!(other.status, 202);
    let off = TestApp::with_env(&[("RATE_LIMIT_REGISTER", "1/3600"), ("RATE_LIMIT_ENABLED", "false")]).await;
    for i in 0..3 {
        let body = json!({"email": unique_email(&format!("off{i}")), "password": STRONG_PASSWORD}).to_string();
        let event = http_event_from(&ip, "POST", "/auth/register", &[], Some(&body));
        assert_eq!(off.invoke(shared::api::register::handle, &event).await.status, 202);
    }
}
