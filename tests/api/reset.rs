//! POST /auth/forgot-password and POST /auth/reset-password.

use crate::common;

use crate::common::{STRONG_PASSWORD, TestApp, s, unique_email};
use serde_json::json;
use shared::api::reset::handle;

const NEW_PASSWORD: &str = "a different long passphrase entirely";

async fn forgot(t: &TestApp, email: &str) -> common::TestResponse {
    t.post(handle, "/auth/forgot-password", json!({"email": email})).await
}

async fn reset_token(t: &TestApp, email: &str) -> String {
    let emails = t.emails_to(email).await;
    let mail = emails.iter().rev().find(|e| e.subject == "Reset your password").expect("reset email");
    mail.token_for("/reset-password").expect("reset link")
}

#[tokio::test]
async fn reset_changes_the_password_ends_every_session_and_tells_the_user() {
    let t = TestApp::new().await;
    let (email, tokens) = t.logged_in("reset").await;
    let answer = forgot(&t, &email).await;
    assert_eq!((answer.status, &answer.body), (202, &json!({"status": "sent_if_registered"})));
    let frontend = std::env::var("FRONTEND_URL").unwrap();
    let mails = t.emails_to(&email).await;
    assert!(mails.last().unwrap().body.contains(&format!("{frontend}/reset-password?token=")));
    let token = reset_token(&t, &email).await;

    let done = t.post(handle, "/auth/reset-password", json!({"token": token, "new_password": NEW_PASSWORD})).await;
    assert_eq!((done.status, &done.body), (200, &json!({"status": "password_reset"})), "{:?}", done.body);

    assert_eq!(t.login(&email, STRONG_PASSWORD).await.status, 401);
    assert_eq!(t.login(&email, NEW_PASSWORD).await.status, 200);
    // Tokens issued before the reset stop working.
    assert_eq!(t.me(tokens["access_token"].as_str().unwrap()).await.status, 401);
    let refresh =
        t.post(shared::api::login::handle, "/auth/refresh", json!({"refresh_token": tokens["refresh_token"]})).await;
    assert_eq!(refresh.status, 401);

    assert_eq!(t.emails_to(&email).await.last().unwrap().subject, "Your password was changed");
    let user = t.user_by_email(&email).await;
    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    for action in ["auth.password_reset_requested", "auth.password_reset"] {
        assert!(audit.iter().any(|e| s(e, "action") == action), "{action} audited");
    }

    let again = t
        .post(handle, "/auth/reset-password", json!({"token": token, "new_password": "yet another passphrase here"}))
        .await;
    assert_eq!((again.status, again.body["code"].as_str()), (400, Some("token_invalid")));
    assert_eq!(t.login(&email, NEW_PASSWORD).await.status, 200, "the second use changed nothing");
}

#[tokio::test]
async fn the_reset_token_lives_one_hour_and_only_the_newest_works() {
    let t = TestApp::new().await;
    let email = t.verified_user("reset-newest").await;
    forgot(&t, &email).await;
    let first = reset_token(&t, &email).await;
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(first.as_bytes()));
    let item = t.item(&format!("TOKEN#{hash}"), "TOKEN").await.expect("stored by hash");
    let ttl: i64 = s(&item, "ttl").parse().unwrap();
    let now = shared::time::now().unix_timestamp();
    assert!((ttl - now - 3600).abs() < 60);

    forgot(&t, &email).await;
    let second = reset_token(&t, &email).await;
    let old = t.post(handle, "/auth/reset-password", json!({"token": first, "new_password": NEW_PASSWORD})).await;
    assert_eq!(old.body["code"], "token_invalid");
    let new = t.post(handle, "/auth/reset-password", json!({"token": second, "new_password": NEW_PASSWORD})).await;
    assert_eq!(new.status, 200);
}

#[tokio::test]
async fn a_weak_new_password_is_refused_and_the_token_survives() {
    let t = TestApp::new().await;
    let email = t.verified_user("reset-weak").await;
    forgot(&t, &email).await;
    let token = reset_token(&t, &email).await;
    let weak = t.post(handle, "/auth/reset-password", json!({"token": token, "new_password": "password1234"})).await;
    assert_eq!((weak.status, weak.body["code"].as_str()), (400, Some("validation_failed")));
    assert_eq!(weak.body["errors"][0]["field"], "new_password");
    let ok = t.post(handle, "/auth/reset-password", json!({"token": token, "new_password": NEW_PASSWORD})).await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn forgot_answers_the_same_for_unknown_addresses_and_sends_nothing() {
    let t = TestApp::new().await;
    let unknown = unique_email("forgot-unknown");
    let answer = forgot(&t, &unknown).await;
    assert_eq!((answer.status, &answer.body), (202, &json!({"status": "sent_if_registered"})));
    assert!(t.emails_to(&unknown).await.is_empty());
    let bogus = t.post(handle, "/auth/reset-password", json!({"token": "nope", "new_password": NEW_PASSWORD})).await;
    assert_eq!((bogus.status, bogus.body["code"].as_str()), (400, Some("token_invalid")));
}

async fn forgot_from(t: &TestApp, ip: &str, email: &str) -> common::TestResponse {
    let event =
        common::http_event_from(ip, "POST", "/auth/forgot-password", &[], Some(&json!({"email": email}).to_string()));
    t.invoke(handle, &event).await
}

#[tokio::test]
async fn forgot_is_limited_per_client_and_nobody_spends_the_owners_requests() {
    let t =
        TestApp::with_env(&[("RATE_LIMIT_FORGOT_PASSWORD", "1/3600"), ("RATE_LIMIT_FORGOT_PASSWORD_INBOX", "2/3600")])
            .await;
    let email = t.verified_user("forgot-limit").await;
    let (attacker, owner) = (common::random_ip(), common::random_ip());
    assert_eq!(forgot_from(&t, &attacker, &email).await.status, 202);
    let limited = forgot_from(&t, &attacker, &email).await;
    assert_eq!((limited.status, limited.body["code"].as_str()), (429, Some("rate_limited")));
    assert_eq!(forgot_from(&t, &owner, &email).await.status, 202, "the attacker's requests spend only their own");
    // However many clients ask, one inbox gets at most the inbox cap.
    assert_eq!(forgot_from(&t, &common::random_ip(), &email).await.status, 429);
    let resets = t.emails_to(&email).await.into_iter().filter(|e| e.subject == "Reset your password").count();
    assert_eq!(resets, 2);
}

#[tokio::test]
async fn one_client_asking_for_many_addresses_is_limited_whatever_addresses_it_names() {
    let t = TestApp::with_env(&[("RATE_LIMIT_FORGOT_PASSWORD_CLIENT", "2/86400")]).await;
    let client = common::random_ip();
    for n in 0..2 {
        let asked = forgot_from(&t, &client, &common::unique_email(&format!("spray-{n}"))).await;
        assert_eq!(asked.status, 202, "{:?}", asked.body);
    }
    let limited = forgot_from(&t, &client, &common::unique_email("spray-2")).await;
    assert_eq!((limited.status, limited.body["code"].as_str()), (429, Some("rate_limited")));
    assert!(limited.header("retry-after").is_some());
    assert_eq!(
        forgot_from(&t, &common::random_ip(), &common::unique_email("spray-3")).await.status,
        202,
        "others are not"
    );
}
