//! Login, tokens, sessions, JWKS and CSRF.

use crate::common;

use crate::common::{STRONG_PASSWORD, TestApp, http_event_from, random_ip, s, unique_email};
use aws_sdk_dynamodb::types::AttributeValue;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use serde_json::{Value, json};
use shared::api::login::handle;

async fn get(t: &TestApp, path: &str) -> common::TestResponse {
    let event = common::http_event("GET", path, &[], None);
    t.invoke(handle, &event).await
}

async fn refresh(t: &TestApp, token: &str) -> common::TestResponse {
    t.post(handle, "/auth/refresh", json!({"refresh_token": token})).await
}

async fn set_attribute(t: &TestApp, pk: &str, sk: &str, name: &str, value: AttributeValue) {
    t.app
        .table()
        .client()
        .update_item()
        .table_name(t.app.table().name())
        .key("PK", AttributeValue::S(pk.into()))
        .key("SK", AttributeValue::S(sk.into()))
        .update_expression("SET #n = :v")
        .expression_attribute_names("#n", name)
        .expression_attribute_values(":v", value)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn login_issues_rs256_tokens_that_verify_with_only_the_published_jwks() {
    let t = TestApp::new().await;
    let (email, tokens) = t.logged_in("login").await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["expires_in"].as_u64().unwrap() <= 900);
    let access = tokens["access_token"].as_str().unwrap();
    assert!(tokens["refresh_token"].as_str().unwrap().len() >= 43);

    let jwks = get(&t, "/.well-known/jwks.json").await;
    assert_eq!(jwks.status, 200);
    let set: JwkSet = serde_json::from_value(jwks.body.clone()).unwrap();
    for key in &jwks.body["keys"].as_array().unwrap()[..] {
        assert_eq!(
            (key["kty"].as_str(), key["alg"].as_str(), key["use"].as_str()),
            (Some("RSA"), Some("RS256"), Some("sig"))
        );
        assert!(key["kid"].is_string() && key.get("d").is_none());
    }
    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let jwk = set.find(header.kid.as_deref().unwrap()).expect("kid is published");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[std::env::var("JWT_ISSUER").unwrap()]);
    validation.set_audience(&["backend-api"]);
    let claims =
        jsonwebtoken::decode::<Value>(access, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap().claims;
    let user = t.user_by_email(&email).await;
    assert_eq!(claims["sub"], s(&user, "user_id").as_str());
    assert_eq!(claims["org"], s(&user, "org_id").as_str());
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["token_use"], "access");
    assert_eq!(claims["csrf"], tokens["csrf_token"]);
    assert!(claims["jti"].is_string());
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(lifetime > 0 && lifetime <= 900);

    let oidc = get(&t, "/.well-known/openid-configuration").await;
    assert_eq!(oidc.body["issuer"], std::env::var("JWT_ISSUER").unwrap().as_str());
    assert_eq!(
        oidc.body["jwks_uri"],
        format!("{}/.well-known/jwks.json", std::env::var("JWT_ISSUER").unwrap()).as_str()
    );

    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    assert!(audit.iter().any(|e| s(e, "action") == "auth.login" && s(e, "status") == "success"));
}

#[tokio::test]
async fn me_describes_the_caller() {
    let t = TestApp::new().await;
    let (email, tokens) = t.logged_in("me").await;
    let me = t.me(tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(me.status, 200);
    for key in
        ["user_id", "email", "email_verified", "full_name", "org_id", "role", "created_at", "deletion_scheduled_at"]
    {
        assert!(me.body.get(key).is_some(), "missing {key}");
    }
    assert_eq!(me.body["email"], email.as_str());
    assert_eq!(me.body["email_verified"], true);
    assert_eq!(me.body["deletion_scheduled_at"], Value::Null);
    assert_eq!(t.me("not-a-token").await.status, 401);
    let no_auth = get(&t, "/auth/me").await;
    assert_eq!((no_auth.status, no_auth.body["code"].as_str()), (401, Some("unauthorized")));
}

#[tokio::test]
async fn unknown_email_and_wrong_password_look_the_same() {
    let t = TestApp::new().await;
    let email = t.verified_user("wrong").await;
    let unknown = t.login(&unique_email("nobody"), STRONG_PASSWORD).await;
    let wrong = t.login(&email, "not the right password at all").await;
    assert_eq!(unknown.status, 401);
    assert_eq!(wrong.status, 401);
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("request_id");
        v
    };
    assert_eq!(strip(unknown.body.clone()), strip(wrong.body.clone()));
    assert_eq!(unknown.body["code"], "invalid_credentials");
    let user = t.user_by_email(&email).await;
    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    assert!(audit.iter().any(|e| s(e, "action") == "auth.login" && s(e, "status") == "failure"));
}

#[tokio::test]
async fn unverified_accounts_learn_it_only_with_the_right_password() {
    let t = TestApp::new().await;
    let (email, _) = t.registered("unverified").await;
    let wrong = t.login(&email, "not the right password at all").await;
    assert_eq!((wrong.status, wrong.body["code"].as_str()), (401, Some("invalid_credentials")));
    let right = t.login(&email, STRONG_PASSWORD).await;
    assert_eq!((right.status, right.body["code"].as_str()), (403, Some("email_not_verified")));
}

#[tokio::test]
async fn repeated_failures_lock_the_account_for_that_address_progressively_and_the_lock_releases() {
    let t = TestApp::with_env(&[("RATE_LIMIT_ENABLED", "false")]).await;
    let email = t.verified_user("lockout").await;
    let attacker = random_ip();
    for _ in 0..5 {
        assert_eq!(t.login_from(&attacker, &email, "wrong password, definitely").await.status, 401);
    }
    // Locked now for that address: even the right password is refused, with a Retry-After.
    let locked = t.login_from(&attacker, &email, STRONG_PASSWORD).await;
    assert_eq!((locked.status, locked.body["code"].as_str()), (429, Some("rate_limited")));
    let retry: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "first lock is 30 s: {retry}");
    // The owner, from their own address, is not.
    assert_eq!(t.login_from(&random_ip(), &email, STRONG_PASSWORD).await.status, 200);

    let user = t.user_by_email(&email).await;
    let user_pk = format!("USER#{}", s(&user, "user_id"));
    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    assert!(audit.iter().any(|e| s(e, "action") == "auth.lockout"));

    // Once the window has passed (simulated), the right password works and clears the count.
    let counter = shared::identity::attempts::counter_sort_key(&attacker);
    set_attribute(&t, &user_pk, &counter, "locked_until", AttributeValue::N("0".into())).await;
    let after = t.login_from(&attacker, &email, STRONG_PASSWORD).await;
    assert_eq!(after.status, 200, "{:?}", after.body);
    assert!(t.item(&user_pk, &counter).await.is_none());
}

#[tokio::test]
async fn the_owner_logs_in_from_their_address_while_an_attacker_hammers_the_account_from_many() {
    let t = TestApp::new().await;
    let email = t.verified_user("hammered").await;
    let owner_ip = random_ip();
    assert_eq!(t.login_from(&owner_ip, &email, STRONG_PASSWORD).await.status, 200, "the owner's usual address");
    let mut refused = 0;
    for _ in 0..8 {
        let attacker = random_ip();
        for _ in 0..7 {
            let answer = t.login_from(&attacker, &email, "wrong password, definitely").await;
            assert!(matches!(answer.status, 401 | 429), "{:?}", answer.body);
            refused += u32::from(answer.status == 429);
        }
    }
    assert!(refused >= 8, "each attacking address was stopped");
    let owner = t.login_from(&owner_ip, &email, STRONG_PASSWORD).await;
    assert_eq!(owner.status, 200, "{:?}", owner.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_captcha_attempts_from_new_addresses_are_capped_but_the_owner_gets_in() {
    // The stack has no CAPTCHA secret; a day-long window keeps the test off the boundary.
    let t = TestApp::with_env(&[("RATE_LIMIT_ACCOUNT_NEW_ADDRESSES", "3/86400")]).await;
    assert!(!t.app.captcha_configured().await.unwrap());
    let email = t.verified_user("capped").await;
    let owner_ip = random_ip();
    assert_eq!(t.login_from(&owner_ip, &email, STRONG_PASSWORD).await.status, 200);
    // A burst from ten new addresses at once: the cap holds under concurrency, counted
    // before any password is checked.
    let body = json!({"email": email, "password": "wrong password, definitely"}).to_string();
    let guesses: Vec<_> = (0..10)
        .map(|_| {
            let event = http_event_from(&random_ip(), "POST", "/auth/login", &[], Some(&body));
            common::spawn_invoke(t.app, handle, event)
        })
        .collect();
    let mut checked = 0;
    for guess in guesses {
        let (status, answer) = guess.await.unwrap();
        assert!(matches!(status, 401 | 429), "{answer}");
        checked += usize::from(status == 401);
    }
    // The owner's first sign-in, from an address the account did not know yet, took one.
    assert_eq!(checked, 2, "exactly the cap's worth of attempts was tried");
    // A new address waits now, even with the right password (nothing is learnt from it)...
    let fresh = t.login_from(&random_ip(), &email, STRONG_PASSWORD).await;
    assert_eq!((fresh.status, fresh.body["code"].as_str()), (429, Some("rate_limited")), "{:?}", fresh.body);
    assert!(fresh.header("retry-after").is_some());
    // ...while the address the owner signs in from is not counted.
    let owner = t.login_from(&owner_ip, &email, STRONG_PASSWORD).await;
    assert_eq!(owner.status, 200, "{:?}", owner.body);
    // Another account is not affected.
    let other = t.verified_user("capped-other").await;
    assert_eq!(t.login_from(&random_ip(), &other, STRONG_PASSWORD).await.status, 200);
    // The owner on a new address proves the mailbox with a reset, and that address is known.
    let travelling = random_ip();
    let forgot = json!({"email": email}).to_string();
    let asked = http_event_from(&travelling, "POST", "/auth/forgot-password", &[], Some(&forgot));
    assert_eq!(t.invoke(shared::api::reset::handle, &asked).await.status, 202);
    t.outbox_delivered().await;
    let emails = t.emails_to(&email).await;
    let token = emails.iter().rev().find_map(|e| e.token_for("/reset-password")).expect("a reset link");
    let new_password = "an entirely new passphrase for travel";
    let reset = json!({"token": token, "new_password": new_password}).to_string();
    let reset = http_event_from(&travelling, "POST", "/auth/reset-password", &[], Some(&reset));
    let done = t.invoke(shared::api::reset::handle, &reset).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    let back = t.login_from(&travelling, &email, new_password).await;
    assert_eq!(back.status, 200, "{:?}", back.body);
}

#[tokio::test]
async fn login_attempts_per_account_and_address_are_rate_limited() {
    let t = TestApp::with_env(&[("RATE_LIMIT_LOGIN_ACCOUNT", "2/60")]).await;
    let email = unique_email("login-limit");
    let ip = random_ip();
    for _ in 0..2 {
        assert_eq!(t.login_from(&ip, &email, STRONG_PASSWORD).await.status, 401);
    }
    let limited = t.login_from(&ip, &email, STRONG_PASSWORD).await;
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    // Somebody else's attempts don't spend the owner's.
    assert_eq!(t.login_from(&random_ip(), &email, STRONG_PASSWORD).await.status, 401);
}

#[tokio::test]
async fn limits_refuse_when_their_counter_cannot_be_kept_except_refresh() {
    let t = TestApp::with_stripe_and_faults(&[]).await;
    let email = t.verified_user("limiter-down").await;
    t.faults().fail("UpdateItem", "RATE#login", u32::MAX);
    let refused = t.login(&email, STRONG_PASSWORD).await;
    assert_eq!((refused.status, refused.header("retry-after")), (429, Some("1")), "{:?}", refused.body);
    t.faults().heal();
    t.faults().fail("UpdateItem", "RATE#register", u32::MAX);
    let registered = t.register(json!({"email": unique_email("limiter-down"), "password": STRONG_PASSWORD})).await;
    assert_eq!(registered.status, 429, "signup sends email: refused too");
    t.faults().heal();
    let tokens = t.login(&email, STRONG_PASSWORD).await.body;
    t.faults().fail("UpdateItem", "RATE#refresh", u32::MAX);
    let refreshed = refresh(&t, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, 200, "a session refresh goes through: {:?}", refreshed.body);
    t.faults().heal();
}

#[tokio::test]
async fn a_stalled_table_gets_an_answer_instead_of_holding_the_invocation() {
    let t =
        TestApp::with_stripe_and_faults(&[("AWS_ATTEMPT_TIMEOUT_MS", "1000"), ("AWS_OPERATION_TIMEOUT_MS", "2500")])
            .await;
    let (_, tokens) = t.logged_in("stalled").await;
    t.faults().stall("GetItem", "", u32::MAX);
    // Without SDK timeouts the call waits on the stalled connection until Lambda kills the
    // invocation, which answers nothing and logs nothing.
    let me = tokio::time::timeout(std::time::Duration::from_secs(120), t.me(tokens["access_token"].as_str().unwrap()))
        .await
        .expect("the SDK gives up on a stalled call");
    t.faults().heal();
    assert!(t.faults().failed() > 0, "the stall was reached");
    assert_eq!((me.status, me.body["code"].as_str()), (500, Some("internal")), "{:?}", me.body);
}

#[tokio::test]
async fn a_function_without_the_signing_secret_verifies_tokens_and_can_issue_none() {
    let t = TestApp::new().await;
    let (email, tokens) = t.logged_in("verifier").await;
    // Every function but login runs so in AWS: it is told of the public keys' secret only.
    let verifier = TestApp::with_env(&[("SIGNING_SECRET_ID", "")]).await;
    let secrets = verifier.app.secrets().get().await.unwrap();
    assert!(secrets.jwt_signing_keys.is_empty(), "the public keys' secret holds no private key");
    assert!(!secrets.jwt_public_keys.is_empty());
    assert_eq!(verifier.me(tokens["access_token"].as_str().unwrap()).await.status, 200, "it verifies");
    let issued = verifier.login(&email, STRONG_PASSWORD).await;
    assert_eq!(issued.status, 500, "and cannot sign: {:?}", issued.body);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let t = TestApp::new().await;
    let (_, tokens) = t.logged_in("rotate").await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let rotated = refresh(&t, first).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let second = rotated.body["refresh_token"].as_str().unwrap();
    assert_ne!(first, second);
    assert_eq!(t.me(rotated.body["access_token"].as_str().unwrap()).await.status, 200);

    // Replaying the first token: reuse. The family dies, newest token and access tokens too.
    let replay = refresh(&t, first).await;
    assert_eq!((replay.status, replay.body["code"].as_str()), (401, Some("token_reused")));
    let newest = refresh(&t, second).await;
    assert_eq!(newest.status, 401);
    assert_eq!(t.me(rotated.body["access_token"].as_str().unwrap()).await.status, 401);
    assert_eq!(t.me(tokens["access_token"].as_str().unwrap()).await.status, 401);

    let unknown = refresh(&t, "unknown-refresh-token").await;
    assert_eq!((unknown.status, unknown.body["code"].as_str()), (401, Some("unauthorized")));
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_give_one_success_and_leave_the_family_revoked() {
    let t = TestApp::new().await;
    let (_, tokens) = t.logged_in("refresh-race").await;
    let token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let tasks = (0..10).map(|_| {
        let event =
            common::http_event("POST", "/auth/refresh", &[], Some(&json!({"refresh_token": token}).to_string()));
        common::spawn_invoke(t.app, handle, event)
    });
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    let winners: Vec<_> = results.iter().filter(|(status, _)| *status == 200).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(
        results.iter().filter(|(st, _)| *st != 200).all(|(st, b)| *st == 401 && b["code"] == "token_reused"),
        "{results:?}"
    );
    let winner_refresh = winners[0].1["refresh_token"].as_str().unwrap();
    assert_eq!(refresh(&t, winner_refresh).await.status, 401, "the family is revoked");
}

#[tokio::test]
async fn families_end_absolutely() {
    let t = TestApp::new().await;
    let (email, tokens) = t.logged_in("absolute").await;
    let user = t.user_by_email(&email).await;
    let pk = format!("USER#{}", s(&user, "user_id"));
    let family = t.partition(&pk).await.into_iter().find(|i| s(i, "SK").starts_with("SESSION#")).unwrap();
    let created = shared::time::parse_rfc3339(&s(&family, "created_at")).unwrap();
    let expires = shared::time::parse_rfc3339(&s(&family, "expires_at")).unwrap();
    assert_eq!((expires - created).whole_days(), 30);
    set_attribute(&t, &pk, &s(&family, "SK"), "expires_at", AttributeValue::S("2020-01-01T00:00:00.000000Z".into()))
        .await;
    assert_eq!(refresh(&t, tokens["refresh_token"].as_str().unwrap()).await.status, 401);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let t = TestApp::new().await;
    let (email, tokens) = t.logged_in("logout").await;
    let access = tokens["access_token"].as_str().unwrap();
    let out = t
        .authed(handle, "POST", "/auth/logout", access, &[], Some(json!({"refresh_token": tokens["refresh_token"]})))
        .await;
    assert_eq!(out.status, 204);
    assert_eq!(t.me(access).await.status, 401);
    assert_eq!(refresh(&t, tokens["refresh_token"].as_str().unwrap()).await.status, 401);
    let user = t.user_by_email(&email).await;
    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    assert!(audit.iter().any(|e| s(e, "action") == "auth.logout"));
    // Other sessions of the user are untouched.
    let other = t.login(&email, STRONG_PASSWORD).await;
    assert_eq!(t.me(other.body["access_token"].as_str().unwrap()).await.status, 200);
}

fn pem_of(key: &aws_lc_rs::rsa::KeyPair) -> String {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use base64::Engine as _;
    let der: Pkcs8V1Der = key.as_der().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let body: Vec<String> = b64.as_bytes().chunks(64).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
    format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", body.join("\n"))
}

#[tokio::test]
async fn forged_expired_and_mismatched_tokens_are_rejected() {
    let t = TestApp::new().await;
    let (_, tokens) = t.logged_in("forgery").await;
    let genuine = tokens["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(genuine).unwrap();
    let kid = header.kid.clone().unwrap();
    let payload = genuine.split('.').nth(1).unwrap();
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(t.me(genuine).await.status, 200);

    // Signed with a key of our own, under the real kid.
    let other_key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.clone());
    let foreign =
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_rsa_pem(pem_of(&other_key).as_bytes()).unwrap()).unwrap();

    // alg: none.
    let none_header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    let alg_none = format!("{none_header}.{payload}.");

    // HS256 keyed with the published public key.
    let jwks = get(&t, "/.well-known/jwks.json").await.body;
    let public = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap().to_string();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(public.as_bytes())).unwrap();

    // Genuinely signed (through the app's own key set) but with bad claims.
    let keys = t.app.keys().await.unwrap();
    let resign = |change: &dyn Fn(&mut shared::identity::jwt::AccessClaims)| {
        let mut c: shared::identity::jwt::AccessClaims = serde_json::from_value(claims.clone()).unwrap();
        change(&mut c);
        keys.sign(&c).unwrap()
    };
    let now = shared::time::now().unix_timestamp();
    let expired = resign(&|c| {
        c.iat = now - 2000;
        c.exp = now - 1100;
    });
    let wrong_iss = resign(&|c| c.iss = "https://evil.example.com".into());
    let wrong_aud = resign(&|c| c.aud = "another-api".into());
    let wrong_use = resign(&|c| c.token_use = "refresh".into());
    let too_long = resign(&|c| c.exp = c.iat + 86_400);
    let sanity = resign(&|_| {});
    assert_eq!(t.me(&sanity).await.status, 200, "re-signing untouched claims still works");

    for (name, token) in [
        ("foreign key", foreign),
        ("alg none", alg_none),
        ("HS256 with public key", hs256),
        ("expired", expired),
        ("wrong iss", wrong_iss),
        ("wrong aud", wrong_aud),
        ("wrong token_use", wrong_use),
        ("lifetime over 15 min", too_long),
    ] {
        let response = t.me(&token).await;
        assert_eq!((response.status, response.body["code"].as_str()), (401, Some("unauthorized")), "{name}");
    }
}

#[tokio::test]
async fn browser_requests_need_an_allowed_origin_and_the_csrf_token() {
    let t = TestApp::new().await;
    let (_, tokens) = t.logged_in("csrf").await;
    let access = tokens["access_token"].as_str().unwrap();
    let csrf = tokens["csrf_token"].as_str().unwrap();
    let allowed = "http://localhost:3000";
    let cases: [(&[(&str, &str)], u16); 4] = [
        (&[("origin", allowed)], 403),
        (&[("origin", allowed), ("x-csrf-token", "wrong")], 403),
        (&[("origin", "https://evil.example.com"), ("x-csrf-token", csrf)], 403),
        (&[("origin", allowed), ("x-csrf-token", csrf)], 204),
    ];
    for (headers, expected) in cases {
        let response = t.authed(handle, "POST", "/auth/logout", access, headers, None).await;
        assert_eq!(response.status, expected, "{headers:?}");
        if expected == 403 {
            assert_eq!(response.body["code"], "csrf_failed");
        }
    }
    // Safe methods and requests without Origin (servers, CLIs) are not CSRF-checked.
    let (_, tokens) = t.logged_in("csrf-cli").await;
    let access = tokens["access_token"].as_str().unwrap();
    let me = t.authed(handle, "GET", "/auth/me", access, &[("origin", "https://evil.example.com")], None).await;
    assert_eq!(me.status, 200);
    assert_eq!(t.authed(handle, "POST", "/auth/logout", access, &[], None).await.status, 204);
}

#[tokio::test]
async fn a_hash_with_outdated_parameters_is_replaced_on_login() {
    use argon2::{Argon2, Params, PasswordHasher};
    let t = TestApp::new().await;
    let email = t.verified_user("rehash").await;
    let user = t.user_by_email(&email).await;
    let old = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, Params::new(4096, 3, 1, None).unwrap())
        .hash_password(STRONG_PASSWORD.as_bytes())
        .unwrap()
        .to_string();
    let pk = format!("USER#{}", s(&user, "user_id"));
    set_attribute(&t, &pk, "PROFILE", "password_hash", AttributeValue::S(old.clone())).await;
    assert_eq!(t.login(&email, STRONG_PASSWORD).await.status, 200);
    let hash = s(&t.item(&pk, "PROFILE").await.unwrap(), "password_hash");
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    assert_eq!(t.login(&email, STRONG_PASSWORD).await.status, 200, "the new hash verifies");
}

#[tokio::test]
async fn malformed_login_requests_are_rejected_cleanly() {
    let t = TestApp::new().await;
    let missing = t.post(handle, "/auth/login", json!({"email": unique_email("x")})).await;
    assert_eq!((missing.status, missing.body["code"].as_str()), (400, Some("validation_failed")));
    let event = common::http_event("POST", "/auth/login", &[], Some("{nope"));
    assert_eq!(t.invoke(handle, &event).await.body["code"], "malformed_json");
    assert_eq!(get(&t, "/auth/nothing-here").await.status, 404);
}

#[tokio::test]
async fn unknown_addresses_lock_out_exactly_like_known_ones() {
    let t = TestApp::with_env(&[("RATE_LIMIT_ENABLED", "false")]).await;
    let known = t.verified_user("lock-known").await;
    let unknown = unique_email("lock-unknown");
    for email in [&known, &unknown] {
        let ip = random_ip();
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(t.login_from(&ip, email, "wrong password, definitely").await.status);
        }
        assert_eq!(statuses, [401, 401, 401, 401, 401, 429], "{email}");
    }
}

#[tokio::test]
async fn the_callers_request_id_is_echoed_and_kept_beside_ours_but_never_replaces_it() {
    let t = TestApp::new().await;
    let email = t.verified_user("request-id").await;
    let body = json!({"email": email, "password": STRONG_PASSWORD}).to_string();
    let event =
        http_event_from(&random_ip(), "POST", "/auth/login", &[("X-Request-Id", "client-chosen-1")], Some(&body));
    let answer = t.invoke(handle, &event).await;
    assert_eq!((answer.status, answer.header("x-request-id")), (200, Some("client-chosen-1")));
    let user = t.user_by_email(&email).await;
    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    let login = audit.iter().find(|e| s(e, "action") == "auth.login").expect("the login's entry");
    assert_eq!(s(login, "client_request_id"), "client-chosen-1");
    assert!(s(login, "request_id").starts_with("apigw-"), "ours, not the caller's: {}", s(login, "request_id"));
}

/// A page on another site posting logins as `text/plain` (a "simple" request: no preflight)
/// from the victim's browser, so from the victim's own address.
fn cross_site_login(ip: &str, email: &str, origin: Option<&str>) -> String {
    let body = json!({"email": email, "password": "wrong-password-from-a-page"}).to_string();
    let mut headers = vec![("content-type", "text/plain;charset=UTF-8")];
    if let Some(origin) = origin {
        headers.push(("origin", origin));
    }
    common::http_event_from(ip, "POST", "/auth/login", &headers, Some(&body))
}

#[tokio::test]
async fn a_cross_site_text_plain_login_burst_from_the_owners_address_never_locks_the_owner_out() {
    let t = TestApp::new().await;
    let email = t.verified_user("csrfburst").await;
    let owner_ip = common::random_ip();
    for attempt in 0..30 {
        // Browsers send the page's origin on a cross-site POST; a proxy may strip it.
        let origin = if attempt % 2 == 0 { Some("https://evil.example") } else { None };
        let refused = t.invoke(handle, &cross_site_login(&owner_ip, &email, origin)).await;
        let expected = if origin.is_some() { "csrf_failed" } else { "unsupported_media_type" };
        assert_eq!(refused.body["code"].as_str(), Some(expected), "attempt {attempt}: {:?}", refused.body);
        assert_eq!(refused.status, if origin.is_some() { 403 } else { 415 });
    }
    let opaque = t.invoke(handle, &cross_site_login(&owner_ip, &email, Some("null"))).await;
    assert_eq!((opaque.status, opaque.body["code"].as_str()), (403, Some("csrf_failed")));

    // Nothing was counted: the owner, from the same address, signs in at once.
    let owner = t.login_from(&owner_ip, &email, common::STRONG_PASSWORD).await;
    assert_eq!(owner.status, 200, "{:?}", owner.body);
    // And the forgot-password budget is untouched by the same trick.
    let reset_body = json!({"email": email}).to_string();
    for _ in 0..10 {
        let headers = [("content-type", "text/plain"), ("origin", "https://evil.example")];
        let event = common::http_event_from(&owner_ip, "POST", "/auth/forgot-password", &headers, Some(&reset_body));
        assert_eq!(t.invoke(shared::api::reset::handle, &event).await.status, 403);
    }
    let event = common::http_event_from(&owner_ip, "POST", "/auth/forgot-password", &[], Some(&reset_body));
    assert_eq!(t.invoke(shared::api::reset::handle, &event).await.status, 202);
}

#[tokio::test]
async fn json_with_a_charset_from_the_frontend_origin_still_signs_in() {
    let t = TestApp::new().await;
    let email = t.verified_user("charset").await;
    let frontend = std::env::var("FRONTEND_URL").unwrap();
    let origin = frontend.trim_end_matches('/');
    let body = json!({"email": email, "password": common::STRONG_PASSWORD}).to_string();
    let headers = [("content-type", "application/json; charset=utf-8"), ("origin", origin)];
    let answer = t.invoke(handle, &common::http_event("POST", "/auth/login", &headers, Some(&body))).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // A bodiless POST needs no type (logout with a bearer token and no body).
    let access = answer.body["access_token"].as_str().unwrap();
    let csrf = answer.body["csrf_token"].as_str().unwrap();
    let bearer = format!("Bearer {access}");
    let headers = [("authorization", bearer.as_str()), ("origin", origin), ("x-csrf-token", csrf)];
    let mut logout: serde_json::Value =
        serde_json::from_str(&common::http_event("POST", "/auth/logout", &headers, None)).unwrap();
    logout["headers"].as_object_mut().unwrap().remove("content-type");
    let out = t.invoke(handle, &logout.to_string()).await;
    assert_eq!(out.status, 204, "{:?}", out.body);
}
