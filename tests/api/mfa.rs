//! Two-step verification (TOTP) end to end. Codes are computed by `totp-rs` from the
//! `otpauth_uri` the API hands out, never by the code under test.

use crate::common;

use crate::common::{STRONG_PASSWORD, TestApp, http_event_from, random_ip, s, unique_email};
use serde_json::{Value, json};
use shared::api::{account, login};
use totp_rs::TOTP;

fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

fn now() -> u64 {
    shared::time::now().unix_timestamp() as u64
}

/// The app's view of the secret, as an authenticator app would read the QR code.
fn authenticator(enrolment: &Value) -> TOTP {
    TOTP::from_url(enrolment["otpauth_uri"].as_str().unwrap()).expect("a valid otpauth URI")
}

/// A six-digit code that is none of the codes valid now (±1 step).
fn wrong_code(app: &TOTP) -> String {
    let valid: Vec<String> = [now() - 30, now(), now() + 30].iter().map(|t| app.generate(*t)).collect();
    (0..).map(|n| format!("{:06}", (n * 7919 + 123) % 1_000_000)).find(|c| !valid.contains(c)).unwrap()
}

async fn enrol(t: &TestApp, tokens: &Value) -> common::TestResponse {
    t.authed(account::handle, "POST", "/auth/mfa/totp", access(tokens), &[], None).await
}

async fn confirm(t: &TestApp, tokens: &Value, code: &str) -> common::TestResponse {
    let body = json!({"password": STRONG_PASSWORD, "code": code});
    t.authed(account::handle, "POST", "/auth/mfa/totp/confirm", access(tokens), &[], Some(body)).await
}

async fn mfa_login(t: &TestApp, ip: &str, body: Value) -> common::TestResponse {
    let event = http_event_from(ip, "POST", "/auth/login/mfa", &[], Some(&body.to_string()));
    t.invoke(login::handle, &event).await
}

/// The first step of a login with MFA on: the `mfa_token`.
async fn password_step(t: &TestApp, ip: &str, email: &str) -> String {
    let response = t.login_from(ip, email, STRONG_PASSWORD).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    assert_eq!(response.body["mfa_required"], true, "{:?}", response.body);
    assert!(response.body.get("access_token").is_none(), "no session before the second factor");
    response.body["mfa_token"].as_str().unwrap().to_owned()
}

/// A logged-in user who has turned MFA on: (email, tokens of the session that did it, the
/// authenticator, the recovery codes).
async fn with_mfa(t: &TestApp, tag: &str) -> (String, Value, TOTP, Vec<String>) {
    let (email, tokens) = t.logged_in(tag).await;
    let enrolment = enrol(t, &tokens).await;
    assert_eq!(enrolment.status, 200, "{:?}", enrolment.body);
    let app = authenticator(&enrolment.body);
    let confirmed = confirm(t, &tokens, &app.generate(now())).await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.body);
    let codes = confirmed.body["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned());
    (email, tokens, app, codes.collect())
}

#[tokio::test]
async fn mfa_end_to_end_with_codes_computed_independently() {
    let t = TestApp::new().await;
    let (email, tokens) = t.logged_in("mfa-e2e").await;
    assert_eq!(t.me(access(&tokens)).await.body["mfa_enabled"], false);

    let enrolment = enrol(&t, &tokens).await;
    assert_eq!(enrolment.status, 200, "{:?}", enrolment.body);
    assert_eq!(enrolment.header("cache-control"), Some("no-store"));
    let app = authenticator(&enrolment.body);
    assert_eq!(app.account_name, email);
    assert_eq!(app.get_secret_base32(), enrolment.body["secret"].as_str().unwrap());
    assert_eq!(t.me(access(&tokens)).await.body["mfa_enabled"], false, "not on until confirmed");

    let wrong = confirm(&t, &tokens, &wrong_code(&app)).await;
    assert_eq!((wrong.status, wrong.body["errors"][0]["field"].as_str()), (400, Some("code")), "{:?}", wrong.body);

    let no_password = t
        .authed(
            account::handle,
            "POST",
            "/auth/mfa/totp/confirm",
            access(&tokens),
            &[],
            Some(json!({"code": app.generate(now())})),
        )
        .await;
    assert_eq!((no_password.status, no_password.body["errors"][0]["field"].as_str()), (400, Some("password")));
    let body = json!({"password": "not the password at all", "code": app.generate(now())});
    let bad_password =
        t.authed(account::handle, "POST", "/auth/mfa/totp/confirm", access(&tokens), &[], Some(body)).await;
    assert_eq!((bad_password.status, bad_password.body["code"].as_str()), (401, Some("invalid_credentials")));
    assert_eq!(t.me(access(&tokens)).await.body["mfa_enabled"], false);

    let confirmed_at = now();
    let confirming_code = app.generate(confirmed_at);
    let confirmed = confirm(&t, &tokens, &confirming_code).await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.body);
    let codes = confirmed.body["recovery_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    assert_eq!(t.me(access(&tokens)).await.body["mfa_enabled"], true);

    // At rest the secret is sealed, and the recovery codes are hashes.
    let user_id = t.me(access(&tokens)).await.body["user_id"].as_str().unwrap().to_owned();
    let factor = t.item(&format!("USER#{user_id}"), "MFA").await.expect("the factor item");
    let stored = format!("{factor:?}");
    assert!(!stored.contains(enrolment.body["secret"].as_str().unwrap()), "secret stored in the clear");
    for code in codes {
        assert!(!stored.contains(&code.as_str().unwrap().replace('-', "")), "recovery code stored in the clear");
    }
    assert!(t.emails_to(&email).await.iter().any(|m| m.subject.to_lowercase().contains("two-step")));

    // Login: the password alone earns only the way to the second step.
    let ip = random_ip();
    let first = password_step(&t, &ip, &email).await;
    let confirming = mfa_login(&t, &ip, json!({"mfa_token": first, "code": confirming_code})).await;
    assert_eq!(
        (confirming.status, confirming.body["code"].as_str()),
        (401, Some("invalid_credentials")),
        "spent on confirming"
    );
    let mfa_token = password_step(&t, &ip, &email).await;
    // The next step's code: the current one was spent on confirming.
    let code = app.generate(now() + 30);
    let session = mfa_login(&t, &ip, json!({"mfa_token": mfa_token, "code": code})).await;
    assert_eq!(session.status, 200, "{:?}", session.body);
    assert_eq!(t.me(access(&session.body)).await.status, 200);

    // The same code again, with a fresh token: refused.
    let again = password_step(&t, &ip, &email).await;
    let replay = mfa_login(&t, &ip, json!({"mfa_token": again, "code": code})).await;
    assert_eq!((replay.status, replay.body["code"].as_str()), (401, Some("invalid_credentials")));
    // The token that was used is spent too, whatever comes with it.
    let unused = codes[0].as_str().unwrap();
    let reused = mfa_login(&t, &ip, json!({"mfa_token": mfa_token, "recovery_code": unused})).await;
    assert_eq!((reused.status, reused.body["code"].as_str()), (401, Some("mfa_required")));

    let audit = t.partition(&format!("AUDIT#{}", s(&t.user_by_email(&email).await, "org_id"))).await;
    let actions: Vec<String> = audit.iter().map(|e| s(e, "action")).collect();
    assert!(actions.contains(&"auth.mfa_enabled".to_owned()), "{actions:?}");
}

#[tokio::test]
async fn concurrent_uses_of_one_code_get_one_session() {
    let t = TestApp::new().await;
    let (email, _, app, _) = with_mfa(&t, "mfa-race").await;
    let ips: Vec<String> = (0..4).map(|_| random_ip()).collect();
    let tokens: Vec<String> = futures::future::join_all(ips.iter().map(|ip| password_step(&t, ip, &email))).await;
    let code = app.generate(now() + 30);
    let answers = futures::future::join_all(
        tokens.iter().zip(&ips).map(|(token, ip)| mfa_login(&t, ip, json!({"mfa_token": token, "code": code}))),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    // The others are replays (401), or lost the race for the account's count (429).
    assert!(statuses.iter().all(|s| [200, 401, 429].contains(s)), "{statuses:?}");
}

#[tokio::test]
async fn a_recovery_code_works_once() {
    let t = TestApp::new().await;
    let (email, _, _, codes) = with_mfa(&t, "mfa-recovery").await;
    let ip = random_ip();
    let token = password_step(&t, &ip, &email).await;
    // Case and separators do not matter.
    let typed = codes[3].to_uppercase().replace('-', " ");
    let session = mfa_login(&t, &ip, json!({"mfa_token": token, "recovery_code": typed})).await;
    assert_eq!(session.status, 200, "{:?}", session.body);

    let token = password_step(&t, &ip, &email).await;
    let again = mfa_login(&t, &ip, json!({"mfa_token": token, "recovery_code": codes[3]})).await;
    assert_eq!((again.status, again.body["code"].as_str()), (401, Some("invalid_credentials")));
    let other = mfa_login(&t, &ip, json!({"mfa_token": token, "recovery_code": codes[4]})).await;
    assert_eq!(other.status, 200, "another code still works: {:?}", other.body);

    let audit = t.partition(&format!("AUDIT#{}", s(&t.user_by_email(&email).await, "org_id"))).await;
    let lefts: Vec<String> = audit
        .iter()
        .filter(|e| s(e, "action") == "auth.login" && s(e, "status") == "success")
        .filter_map(|e| e.get("details")?.as_m().ok()?.get("recovery_codes_left")?.as_n().ok().cloned())
        .collect();
    assert!(lefts.contains(&"9".to_owned()) && lefts.contains(&"8".to_owned()), "{lefts:?}");
    let notices: Vec<String> = t
        .emails_to(&email)
        .await
        .into_iter()
        .filter(|m| m.subject.contains("recovery code was used"))
        .map(|m| m.body)
        .collect();
    assert_eq!(notices.len(), 2, "one notice per recovery code used");
    assert!(notices.iter().any(|b| b.contains("8 unused codes")), "{notices:?}");
}

#[tokio::test]
async fn wrong_codes_spend_the_token_and_lock_the_address() {
    let t = TestApp::new().await;
    let (email, _, app, _) = with_mfa(&t, "mfa-lockout").await;
    let ip = random_ip();
    let token = password_step(&t, &ip, &email).await;
    for _ in 0..shared::identity::mfa::CHALLENGE_TRIES {
        let wrong = mfa_login(&t, &ip, json!({"mfa_token": token, "code": wrong_code(&app)})).await;
        assert_eq!((wrong.status, wrong.body["code"].as_str()), (401, Some("invalid_credentials")));
    }
    // Out of tries: even the right code is refused with this token, and says to start over.
    let spent = mfa_login(&t, &ip, json!({"mfa_token": token, "code": app.generate(now() + 30)})).await;
    assert_eq!((spent.status, spent.body["code"].as_str()), (401, Some("mfa_required")));

    // The right password again does not wipe the code failures: this address is locked.
    let token = password_step(&t, &ip, &email).await;
    let locked = mfa_login(&t, &ip, json!({"mfa_token": token, "code": app.generate(now() + 30)})).await;
    assert_eq!(locked.status, 429, "{:?}", locked.body);
    assert!(locked.header("retry-after").is_some());
    let audit = t.partition(&format!("AUDIT#{}", s(&t.user_by_email(&email).await, "org_id"))).await;
    assert!(audit.iter().any(|e| s(e, "action") == "auth.lockout"));
    assert!(audit.iter().any(|e| s(e, "action") == "auth.login_mfa" && s(e, "status") == "failure"));
    assert!(audit.iter().any(|e| s(e, "action") == "auth.login_password"), "the password step is on record");
}

#[tokio::test]
async fn code_guesses_from_many_addresses_lock_codes_but_not_recovery_codes() {
    let t = TestApp::new().await;
    let (email, _, app, recovery) = with_mfa(&t, "mfa-spread").await;
    // One wrong code from each of many addresses: no address is locked, the account is.
    for _ in 0..5 {
        let ip = random_ip();
        let token = password_step(&t, &ip, &email).await;
        let wrong = mfa_login(&t, &ip, json!({"mfa_token": token, "code": wrong_code(&app)})).await;
        assert_eq!(wrong.status, 401);
    }
    let ip = random_ip();
    let token = password_step(&t, &ip, &email).await;
    let locked = mfa_login(&t, &ip, json!({"mfa_token": token, "code": app.generate(now() + 30)})).await;
    assert_eq!((locked.status, locked.body["code"].as_str()), (429, Some("rate_limited")), "{:?}", locked.body);
    // The owner still has a way in.
    let fine = mfa_login(&t, &ip, json!({"mfa_token": token, "recovery_code": recovery[0]})).await;
    assert_eq!(fine.status, 200, "{:?}", fine.body);
}

#[tokio::test]
async fn turning_mfa_on_ends_the_other_sessions() {
    let t = TestApp::new().await;
    let (email, here) = t.logged_in("mfa-on-ends").await;
    let there = t.login(&email, STRONG_PASSWORD).await.body;
    let enrolment = enrol(&t, &here).await;
    assert_eq!(confirm(&t, &here, &authenticator(&enrolment.body).generate(now())).await.status, 200);
    assert_eq!(t.me(access(&here)).await.status, 200, "the session that turned it on goes on");
    assert_eq!(t.me(access(&there)).await.status, 401);
    let refreshed = t.post(login::handle, "/auth/refresh", json!({"refresh_token": there["refresh_token"]})).await;
    assert_eq!(refreshed.status, 401, "no way around the second factor through an old session");
}

#[tokio::test]
async fn turning_mfa_off_needs_password_and_code_and_ends_other_sessions() {
    let t = TestApp::new().await;
    let (email, here, app, codes) = with_mfa(&t, "mfa-off").await;
    let ip = random_ip();
    let token = password_step(&t, &ip, &email).await;
    let there = mfa_login(&t, &ip, json!({"mfa_token": token, "recovery_code": codes[0]})).await;
    assert_eq!(there.status, 200, "{:?}", there.body);

    let off = |body: Value| {
        let here = here.clone();
        let t = &t;
        async move { t.authed(account::handle, "DELETE", "/auth/mfa/totp", access(&here), &[], Some(body)).await }
    };
    let wrong_password = off(json!({"password": "not the password at all", "code": app.generate(now() + 30)})).await;
    assert_eq!((wrong_password.status, wrong_password.body["code"].as_str()), (401, Some("invalid_credentials")));
    let wrong_code = off(json!({"password": STRONG_PASSWORD, "code": wrong_code(&app)})).await;
    assert_eq!(wrong_code.status, 401);
    let missing = off(json!({"password": STRONG_PASSWORD})).await;
    assert_eq!((missing.status, missing.body["errors"][0]["field"].as_str()), (400, Some("code")));
    assert_eq!(t.me(access(&here)).await.body["mfa_enabled"], true, "failures change nothing");
    assert_eq!(t.me(access(&there.body)).await.status, 200);

    let done = off(json!({"password": STRONG_PASSWORD, "code": app.generate(now() + 30)})).await;
    assert_eq!(done.status, 204, "{:?}", done.body);

    // This session lives on; the other one is over, refresh token included.
    let me = t.me(access(&here)).await;
    assert_eq!((me.status, me.body["mfa_enabled"].as_bool()), (200, Some(false)), "{:?}", me.body);
    assert_eq!(t.me(access(&there.body)).await.status, 401);
    let refresh =
        |tokens: &Value| t.post(login::handle, "/auth/refresh", json!({"refresh_token": tokens["refresh_token"]}));
    assert_eq!(refresh(&there.body).await.status, 401);
    let renewed = refresh(&here).await;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    assert_eq!(t.me(access(&renewed.body)).await.status, 200);

    // The password alone logs in again, and the factor is gone.
    let plain = t.login(&email, STRONG_PASSWORD).await;
    assert_eq!(plain.status, 200);
    assert!(plain.body["access_token"].is_string(), "{:?}", plain.body);
    let user_id = me.body["user_id"].as_str().unwrap();
    assert!(t.item(&format!("USER#{user_id}"), "MFA").await.is_none());
    let subjects: Vec<String> = t.emails_to(&email).await.into_iter().map(|m| m.subject).collect();
    assert!(subjects.iter().any(|s| s.to_lowercase().contains("turned off")), "{subjects:?}");
    let audit = t.partition(&format!("AUDIT#{}", s(&t.user_by_email(&email).await, "org_id"))).await;
    assert!(audit.iter().any(|e| s(e, "action") == "auth.mfa_disabled" && s(e, "status") == "success"));
}

#[tokio::test]
async fn bad_input_is_named_and_changes_nothing() {
    let t = TestApp::new().await;
    let (_, tokens) = t.logged_in("mfa-input").await;
    let ip = random_ip();

    let cases = [
        (json!({"code": "123456"}), "mfa_token"),
        (json!({"mfa_token": "abc", "code": "12ab56"}), "code"),
        (json!({"mfa_token": "abc"}), "code"),
        (json!({"mfa_token": "abc", "recovery_code": "nope"}), "recovery_code"),
        (json!({"mfa_token": "abc", "code": "123456", "recovery_code": "abcd-efgh-ijkl-mnop"}), "recovery_code"),
    ];
    for (body, field) in cases {
        let answer = mfa_login(&t, &ip, body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.body);
        assert_eq!(answer.body["code"], "validation_failed");
        assert_eq!(answer.body["errors"][0]["field"], field, "{body}: {:?}", answer.body);
    }
    let unknown = mfa_login(&t, &ip, json!({"mfa_token": "not-a-token", "code": "123456"})).await;
    assert_eq!((unknown.status, unknown.body["code"].as_str()), (401, Some("mfa_required")));

    // Confirming with nothing started, and enrolling without a session.
    let nothing = confirm(&t, &tokens, "123456").await;
    assert_eq!((nothing.status, nothing.body["code"].as_str()), (409, Some("conflict")));
    let bad = confirm(&t, &tokens, "12345").await;
    assert_eq!((bad.status, bad.body["errors"][0]["field"].as_str()), (400, Some("code")));
    let anonymous = t.post(account::handle, "/auth/mfa/totp", json!({})).await;
    assert_eq!(anonymous.status, 401);
    let off = t
        .authed(
            account::handle,
            "DELETE",
            "/auth/mfa/totp",
            access(&tokens),
            &[],
            Some(json!({"password": STRONG_PASSWORD, "code": "123456"})),
        )
        .await;
    assert_eq!((off.status, off.body["code"].as_str()), (409, Some("conflict")), "MFA is not on");
    assert_eq!(t.me(access(&tokens)).await.body["mfa_enabled"], false);

    // Enrolling twice replaces the pending secret; once on, enrolling again is refused.
    let first = authenticator(&enrol(&t, &tokens).await.body);
    let second = authenticator(&enrol(&t, &tokens).await.body);
    let stale = confirm(&t, &tokens, &first.generate(now())).await;
    if first.generate(now()) != second.generate(now()) {
        assert_eq!(stale.status, 400, "the replaced secret's code: {:?}", stale.body);
    }
    assert_eq!(confirm(&t, &tokens, &second.generate(now())).await.status, 200);
    assert_eq!(enrol(&t, &tokens).await.status, 409);
}

#[tokio::test]
async fn a_wrong_password_on_an_mfa_account_answers_as_an_unknown_address_does() {
    let t = TestApp::new().await;
    let (email, _, _, _) = with_mfa(&t, "mfa-wrong-password").await;
    let known = t.login(&email, "not the password at all").await;
    let unknown = t.login(&unique_email("mfa-nobody"), "not the password at all").await;
    for response in [&known, &unknown] {
        assert_eq!((response.status, response.body["code"].as_str()), (401, Some("invalid_credentials")));
        assert!(response.body.get("mfa_required").is_none() && response.body.get("mfa_token").is_none());
    }
    assert_eq!(known.body["detail"], unknown.body["detail"]);
}

#[tokio::test]
async fn restoring_an_account_with_mfa_on_needs_the_second_factor() {
    let t = TestApp::new().await;
    let (email, tokens, app, recovery) = with_mfa(&t, "mfa-restore").await;
    let scheduled = t
        .authed(account::handle, "DELETE", "/auth/me", access(&tokens), &[], Some(json!({"password": STRONG_PASSWORD})))
        .await;
    assert_eq!(scheduled.status, 202, "{:?}", scheduled.body);
    let restore = |body: Value| t.post(account::handle, "/auth/me/restore", body);

    let password_only = restore(json!({"email": email, "password": STRONG_PASSWORD})).await;
    assert_eq!((password_only.status, password_only.body["code"].as_str()), (401, Some("mfa_required")));
    let wrong = restore(json!({"email": email, "password": STRONG_PASSWORD, "code": wrong_code(&app)})).await;
    assert_eq!((wrong.status, wrong.body["code"].as_str()), (401, Some("invalid_credentials")));
    let user = t.user_by_email(&email).await;
    assert!(user.contains_key("deletion_scheduled_at"), "still scheduled");

    let done = restore(json!({"email": email, "password": STRONG_PASSWORD, "recovery_code": recovery[1]})).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert!(!t.user_by_email(&email).await.contains_key("deletion_scheduled_at"));
    // The recovery code is spent.
    let ip = random_ip();
    let token = password_step(&t, &ip, &email).await;
    let reused = mfa_login(&t, &ip, json!({"mfa_token": token, "recovery_code": recovery[1]})).await;
    assert_eq!(reused.status, 401);
}

/// The token of the link in the "two-step verification is on" email.
async fn revoke_link_token(t: &TestApp, email: &str) -> String {
    let notices: Vec<_> = t
        .emails_to(email)
        .await
        .into_iter()
        .filter(|m| m.subject.to_lowercase().contains("two-step verification is on"))
        .collect();
    notices.last().expect("the notice").token_for("/revoke-factor").expect("a revoke link in the notice")
}

async fn revoke(t: &TestApp, token: &str) -> common::TestResponse {
    t.post(shared::api::reset::handle, "/auth/factors/revoke", json!({"token": token})).await
}

#[tokio::test]
async fn an_owner_undoes_mfa_someone_else_turned_on_from_the_notice_and_gets_a_reset_link() {
    let t = TestApp::new().await;
    // Someone with the password puts the account behind their own authenticator.
    let (email, thief, _thiefs_app, _) = with_mfa(&t, "notme").await;
    let user_id = t.me(access(&thief)).await.body["user_id"].as_str().unwrap().to_owned();
    let token = revoke_link_token(&t, &email).await;

    for bad in ["not-a-token", &token[..token.len() - 2]] {
        let refused = revoke(&t, bad).await;
        assert_eq!((refused.status, refused.body["code"].as_str()), (400, Some("token_invalid")), "{bad}");
    }
    assert_eq!(t.me(access(&thief)).await.status, 200, "a bad token changes nothing");

    let done = revoke(&t, &token).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    // The factor is gone and every session with it, the thief's included.
    assert!(t.item(&format!("USER#{user_id}"), "MFA").await.is_none(), "the factor item is removed");
    assert_eq!(t.me(access(&thief)).await.status, 401, "every session ended");
    let refresh = t.post(login::handle, "/auth/refresh", json!({"refresh_token": thief["refresh_token"]})).await;
    assert_eq!(refresh.status, 401, "the refresh token is dead too");
    // The thief knows the password: it no longer signs anyone in.
    let back = t.login(&email, STRONG_PASSWORD).await;
    assert_eq!((back.status, back.body["code"].as_str()), (401, Some("invalid_credentials")), "{:?}", back.body);
    // Single use.
    let again = revoke(&t, &token).await;
    assert_eq!((again.status, again.body["code"].as_str()), (400, Some("token_invalid")));

    // A reset link came with it, and it works: the thief's password is no more.
    let reset_mail =
        t.emails_to(&email).await.into_iter().rev().find(|m| m.subject.contains("Reset your password")).expect("reset");
    let reset_token = reset_mail.token_for("/reset-password").expect("a reset link");
    let new_password = "an entirely new passphrase 7";
    let reset = t
        .post(
            shared::api::reset::handle,
            "/auth/reset-password",
            json!({"token": reset_token, "new_password": new_password}),
        )
        .await;
    assert_eq!(reset.status, 200, "{:?}", reset.body);
    let owner = t.login(&email, new_password).await;
    assert_eq!(owner.status, 200, "{:?}", owner.body);
    assert!(owner.body.get("access_token").is_some(), "no second factor asked: {:?}", owner.body);

    let audit = t.partition(&format!("AUDIT#{}", s(&t.user_by_email(&email).await, "org_id"))).await;
    assert!(audit.iter().any(|e| s(e, "action") == "auth.mfa_revoked"), "audited");
}

#[tokio::test]
async fn a_revoke_link_dies_with_its_factor_and_never_removes_a_later_one() {
    let t = TestApp::new().await;
    let (email, tokens, app, _) = with_mfa(&t, "relink").await;
    let first_link = revoke_link_token(&t, &email).await;
    let body = json!({"password": STRONG_PASSWORD, "code": app.generate(now() + 30)});
    let off = t.authed(account::handle, "DELETE", "/auth/mfa/totp", access(&tokens), &[], Some(body)).await;
    assert_eq!(off.status, 204, "{:?}", off.body);
    let dead = revoke(&t, &first_link).await;
    assert_eq!((dead.status, dead.body["code"].as_str()), (400, Some("token_invalid")), "its factor is gone");

    // On again, with a new authenticator: the first link still can't touch it.
    let enrolment = enrol(&t, &tokens).await;
    assert_eq!(enrolment.status, 200, "{:?}", enrolment.body);
    let second = authenticator(&enrolment.body);
    let confirmed = confirm(&t, &tokens, &second.generate(now())).await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.body);
    let stale = revoke(&t, &first_link).await;
    assert_eq!(stale.status, 400);
    assert_eq!(t.me(access(&tokens)).await.body["mfa_enabled"], true, "the later factor stays");
}
