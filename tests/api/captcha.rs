//! CAPTCHA, when configured: `register` and `forgot-password` always ask for a solved one;
//! `login` and `restore` ask once an account has had many failures today from any address,
//! so the owner is slowed to a person's pace, never shut out. Checked against a stand-in of
//! Turnstile's `siteverify`.

use crate::common;

use crate::common::{STRONG_PASSWORD, TestApp, http_event_from, random_ip, unique_email};
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_string_contains, method, path},
};

const SECRET: &str = "0x4AAAAAAA-local-captcha-secret";
const SOLVED: &str = "solved-token";

/// Turnstile's `siteverify` as far as we use it: our secret with [`SOLVED`] passes, anything
/// else is refused with Turnstile's error codes.
async fn siteverify() -> (MockServer, String) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/siteverify"))
        .and(body_string_contains(format!("secret={SECRET}")))
        .and(body_string_contains(format!("response={SOLVED}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true, "error-codes": []})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/siteverify"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"success": false, "error-codes": ["invalid-input-response"]})),
        )
        .mount(&server)
        .await;
    let url = format!("{}/siteverify", server.uri());
    (server, url)
}

async fn captcha_app(overrides: &[(&str, &str)]) -> (TestApp, MockServer) {
    let (server, url) = siteverify().await;
    (TestApp::with_captcha(SECRET, &url, overrides).await, server)
}

async fn call<F, Fut>(t: &TestApp, handler: F, ip: &str, route: &str, body: Value) -> common::TestResponse
where
    F: Fn(&'static shared::App, lambda_http::Request) -> Fut,
    Fut: std::future::Future<Output = lambda_http::Response<lambda_http::Body>>,
{
    t.invoke(handler, &http_event_from(ip, "POST", route, &[], Some(&body.to_string()))).await
}

fn code(answer: &common::TestResponse) -> (u16, Option<&str>) {
    (answer.status, answer.body["code"].as_str())
}

#[tokio::test]
async fn register_needs_a_solved_captcha_and_changes_nothing_without_one() {
    let (t, server) = captcha_app(&[("RATE_LIMIT_REGISTER", "10/3600")]).await;
    let email = unique_email("captcha-register");
    let client = random_ip();
    let register = |token: Option<&str>| {
        let mut body = json!({"email": email, "password": STRONG_PASSWORD});
        if let Some(token) = token {
            body["captcha_token"] = json!(token);
        }
        call(&t, shared::api::register::handle, &client, "/auth/register", body)
    };
    assert_eq!(code(&register(None).await), (400, Some("captcha_required")));
    assert_eq!(code(&register(Some("forged")).await), (400, Some("captcha_required")));
    assert_eq!(code(&register(Some("")).await), (400, Some("captcha_required")));
    // Input errors answer first, without spending the (single-use) token.
    let calls_before = server.received_requests().await.unwrap().len();
    let bad = call(&t, shared::api::register::handle, &random_ip(), "/auth/register", json!({"email": "nope"})).await;
    assert_eq!(code(&bad), (400, Some("validation_failed")));
    assert_eq!(server.received_requests().await.unwrap().len(), calls_before);
    assert!(t.emails_to(&email).await.is_empty(), "a refused registration sends nothing");

    assert_eq!(register(Some(SOLVED)).await.status, 202);
    let subjects: Vec<String> = t.emails_to(&email).await.into_iter().map(|e| e.subject).collect();
    assert_eq!(subjects, ["Confirm your email address"], "the refused attempts did not take the address");
    let asked = server.received_requests().await.unwrap();
    let last = String::from_utf8_lossy(&asked.last().unwrap().body).into_owned();
    assert!(last.contains(&format!("remoteip={client}")) && last.contains("idempotency_key="), "{last}");
}

#[tokio::test]
async fn forgot_password_needs_a_solved_captcha() {
    let email = TestApp::new().await.verified_user("captcha-forgot").await;
    let (t, _server) = captcha_app(&[]).await;
    let forgot = |token: Option<&str>| {
        let mut body = json!({"email": email});
        if let Some(token) = token {
            body["captcha_token"] = json!(token);
        }
        let t = &t;
        async move { call(t, shared::api::reset::handle, &random_ip(), "/auth/forgot-password", body).await }
    };
    assert_eq!(code(&forgot(None).await), (400, Some("captcha_required")));
    assert_eq!(code(&forgot(Some("forged")).await), (400, Some("captcha_required")));
    let resets =
        || async { t.emails_to(&email).await.into_iter().filter(|e| e.subject == "Reset your password").count() };
    assert_eq!(resets().await, 0);
    assert_eq!(forgot(Some(SOLVED)).await.status, 202);
    assert_eq!(resets().await, 1);
}

/// Failures from `attackers` distinct addresses, each one wrong guess.
async fn guesses_from_many_addresses(t: &TestApp, email: &str, attackers: usize) {
    for _ in 0..attackers {
        let wrong = t.login_from(&random_ip(), email, "wrong-password-123").await;
        assert_eq!(code(&wrong), (401, Some("invalid_credentials")));
    }
}

#[tokio::test]
async fn many_addresses_failing_make_the_account_ask_for_a_captcha_not_lock_the_owner() {
    let plain = TestApp::new().await;
    let email = plain.verified_user("captcha-login").await;
    let (t, _server) = captcha_app(&[("CAPTCHA_AFTER_FAILURES", "4")]).await;
    let owner = random_ip();
    let login = |ip: String, password: &'static str, token: Option<&'static str>| {
        let mut body = json!({"email": email, "password": password});
        if let Some(token) = token {
            body["captcha_token"] = json!(token);
        }
        let t = &t;
        async move { call(t, shared::api::login::handle, &ip, "/auth/login", body).await }
    };
    // Below the threshold nobody is asked.
    guesses_from_many_addresses(&t, &email, 4).await;
    // Now everyone is, the owner too, but the owner is never refused for the attackers' sake.
    assert_eq!(code(&login(owner.clone(), STRONG_PASSWORD, None).await), (400, Some("captcha_required")));
    assert_eq!(code(&login(owner.clone(), STRONG_PASSWORD, Some("forged")).await), (400, Some("captcha_required")));
    // A solved CAPTCHA buys a guess, not a pass.
    assert_eq!(code(&login(random_ip(), "wrong-password-123", Some(SOLVED)).await), (401, Some("invalid_credentials")));
    let signed_in = login(owner, STRONG_PASSWORD, Some(SOLVED)).await;
    assert_eq!(signed_in.status, 200, "{:?}", signed_in.body);
    assert!(signed_in.body["access_token"].is_string());

    // Restore is the same password check, so the same flag applies.
    let restore = call(
        &t,
        shared::api::account::handle,
        &random_ip(),
        "/auth/me/restore",
        json!({"email": email, "password": STRONG_PASSWORD}),
    )
    .await;
    assert_eq!(code(&restore), (400, Some("captcha_required")));

    // Without CAPTCHA configured the same account is not asked (per-address locks only).
    assert_eq!(plain.login_from(&random_ip(), &email, STRONG_PASSWORD).await.status, 200);
}

#[tokio::test]
async fn unknown_addresses_are_flagged_alike() {
    let (t, _server) = captcha_app(&[("CAPTCHA_AFTER_FAILURES", "3")]).await;
    let unknown = unique_email("captcha-unknown");
    guesses_from_many_addresses(&t, &unknown, 3).await;
    let asked = t.login_from(&random_ip(), &unknown, "wrong-password-123").await;
    assert_eq!(code(&asked), (400, Some("captcha_required")), "no tell that the address has no account");
}

#[tokio::test]
async fn an_unreachable_captcha_service_refuses_and_changes_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).mount(&server).await;
    let t = TestApp::with_captcha(SECRET, &format!("{}/siteverify", server.uri()), &[]).await;
    let email = unique_email("captcha-down");
    let body = json!({"email": email, "password": STRONG_PASSWORD, "captcha_token": SOLVED});
    let answer = call(&t, shared::api::register::handle, &random_ip(), "/auth/register", body).await;
    assert_eq!(code(&answer), (503, Some("captcha_unavailable")));
    assert_eq!(server.received_requests().await.unwrap().len(), 2, "one retry, then refused");
    assert!(t.emails_to(&email).await.is_empty());
}

#[tokio::test]
async fn refused_requests_do_not_spend_the_inbox_cap() {
    let email = TestApp::new().await.verified_user("captcha-inbox").await;
    let (t, _server) = captcha_app(&[("RATE_LIMIT_FORGOT_PASSWORD_INBOX", "2/3600")]).await;
    for _ in 0..3 {
        let refused =
            call(&t, shared::api::reset::handle, &random_ip(), "/auth/forgot-password", json!({"email": email})).await;
        assert_eq!(code(&refused), (400, Some("captcha_required")));
    }
    let owner = json!({"email": email, "captcha_token": SOLVED});
    let answer = call(&t, shared::api::reset::handle, &random_ip(), "/auth/forgot-password", owner).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
}
