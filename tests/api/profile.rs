//! `PATCH /auth/me` and phone verification by SMS code.

use crate::common;

use crate::common::{
    TestApp,
    money::{held_payment, release, unique_phone},
    s,
};
use serde_json::{Value, json};
use shared::api::account::handle;

fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

async fn patch_me(t: &TestApp, tokens: &Value, body: Value) -> common::TestResponse {
    t.authed(handle, "PATCH", "/auth/me", access(tokens), &[], Some(body)).await
}

async fn verify(t: &TestApp, tokens: &Value, code: &str) -> common::TestResponse {
    t.authed(handle, "POST", "/auth/me/phone/verify", access(tokens), &[], Some(json!({"code": code}))).await
}

/// The codes texted to `phone`, oldest first.
async fn codes_sent_to(t: &TestApp, phone: &str) -> Vec<String> {
    t.sms_to(phone)
        .await
        .iter()
        .map(|text| text.split_whitespace().next().expect("the code leads the text").to_owned())
        .collect()
}

/// A six-digit code other than `code`.
fn other_than(code: &str) -> String {
    format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000)
}

#[tokio::test]
async fn the_name_changes_and_clears_and_bad_input_changes_nothing() {
    let t = TestApp::new().await;
    let (_, tokens) = t.logged_in("profile-name").await;
    let named = patch_me(&t, &tokens, json!({"full_name": "  Ada Lovelace "})).await;
    assert_eq!((named.status, named.body["full_name"].as_str()), (200, Some("Ada Lovelace")), "{:?}", named.body);
    assert_eq!(t.me(access(&tokens)).await.body["full_name"], "Ada Lovelace");

    for (body, field) in [
        (json!({"full_name": "Ada\u{202E}ecalevol"}), "full_name"),
        (json!({"full_name": "x".repeat(201)}), "full_name"),
        (json!({"phone": "0207 946 0958"}), "phone"),
        (json!({"phone": "+1415555012a"}), "phone"),
        (json!({"phone": ""}), "phone"),
        (json!({"full_name": "Changed", "phone": "12"}), "phone"),
    ] {
        let refused = patch_me(&t, &tokens, body.clone()).await;
        assert_eq!(refused.status, 400, "{body}: {:?}", refused.body);
        assert_eq!(refused.body["errors"][0]["field"], field, "{body}");
    }
    let wrong_type = patch_me(&t, &tokens, json!({"full_name": 7})).await;
    assert_eq!(wrong_type.status, 400);
    let me = t.me(access(&tokens)).await.body;
    assert_eq!((me["full_name"].as_str(), me["phone"].as_str()), (Some("Ada Lovelace"), None), "nothing changed");

    let unchanged = patch_me(&t, &tokens, json!({})).await;
    assert_eq!((unchanged.status, unchanged.body["full_name"].as_str()), (200, Some("Ada Lovelace")));
    let cleared = patch_me(&t, &tokens, json!({"full_name": null})).await;
    assert_eq!((cleared.status, cleared.body["full_name"].clone()), (200, Value::Null));

    let anonymous = t.post(handle, "/auth/me/phone/verify", json!({"code": "123456"})).await;
    assert_eq!(anonymous.status, 401);
    let audit = t.partition(&format!("AUDIT#{}", me["org_id"].as_str().unwrap())).await;
    assert_eq!(audit.iter().filter(|e| s(e, "action") == "account.updated").count(), 2, "set, then cleared");
}

#[tokio::test]
async fn a_new_phone_is_verified_by_the_code_texted_to_it() {
    let t = TestApp::new().await;
    let (_, tokens) = t.logged_in("profile-phone").await;
    let phone = unique_phone();
    // Typed with spaces and dashes; stored as E.164.
    let typed = format!("{} {}-{}", &phone[..5], &phone[5..8], &phone[8..]);
    let changed = patch_me(&t, &tokens, json!({"phone": typed})).await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    assert_eq!(
        (changed.body["phone"].as_str(), changed.body["phone_verified"].as_bool()),
        (Some(phone.as_str()), Some(false))
    );

    let codes = codes_sent_to(&t, &phone).await;
    assert_eq!(codes.len(), 1, "one code texted");
    let code = &codes[0];
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    let user_id = changed.body["user_id"].as_str().unwrap();
    let pending = t.item(&format!("USER#{user_id}"), "PHONE_CODE").await.expect("a pending code");
    assert!(!format!("{pending:?}").contains(code.as_str()), "the code is kept hashed");

    let wrong = verify(&t, &tokens, &other_than(code)).await;
    assert_eq!((wrong.status, wrong.body["errors"][0]["field"].as_str()), (400, Some("code")));
    let malformed = verify(&t, &tokens, "12-34").await;
    assert_eq!((malformed.status, malformed.body["errors"][0]["field"].as_str()), (400, Some("code")));

    let verified = verify(&t, &tokens, code).await;
    assert_eq!(verified.status, 200, "{:?}", verified.body);
    assert_eq!(verified.body["phone_verified"], true);
    assert_eq!(t.me(access(&tokens)).await.body["phone_verified"], true);
    assert!(t.item(&format!("USER#{user_id}"), "PHONE_CODE").await.is_none(), "the code is spent");
    let again = verify(&t, &tokens, code).await;
    assert_eq!((again.status, again.body["code"].as_str()), (409, Some("conflict")), "nothing left to verify");

    // The verified number again changes nothing and texts nothing.
    assert_eq!(patch_me(&t, &tokens, json!({"phone": phone})).await.body["phone_verified"], true);
    assert_eq!(codes_sent_to(&t, &phone).await.len(), 1);

    // Another number starts over, unverified; clearing it removes it.
    let next = unique_phone();
    let moved = patch_me(&t, &tokens, json!({"phone": next})).await;
    assert_eq!(
        (moved.body["phone"].as_str(), moved.body["phone_verified"].as_bool()),
        (Some(next.as_str()), Some(false))
    );
    let stale = verify(&t, &tokens, code).await;
    assert_eq!(stale.status, 400, "the old number's code does not verify the new one");
    let cleared = patch_me(&t, &tokens, json!({"phone": null})).await;
    assert_eq!((cleared.body["phone"].clone(), cleared.body["phone_verified"].as_bool()), (Value::Null, Some(false)));
    assert!(t.item(&format!("USER#{user_id}"), "PHONE_CODE").await.is_none());

    let audit = t.partition(&format!("AUDIT#{}", changed.body["org_id"].as_str().unwrap())).await;
    assert!(audit.iter().any(|e| s(e, "action") == "account.phone_verified"));
    assert!(!audit.iter().any(|e| format!("{e:?}").contains(&phone)), "the audit log keeps no numbers");
}

#[tokio::test]
async fn a_code_takes_five_tries_and_then_a_new_one_is_needed() {
    let t = TestApp::new().await;
    let (_, tokens) = t.logged_in("profile-tries").await;
    let phone = unique_phone();
    assert_eq!(patch_me(&t, &tokens, json!({"phone": phone})).await.status, 200);
    let code = codes_sent_to(&t, &phone).await.remove(0);
    // Concurrent guesses get no more than five tries between them.
    let wrong = other_than(&code);
    let guesses = futures::future::join_all((0..8).map(|_| verify(&t, &tokens, &wrong))).await;
    let messages: Vec<String> =
        guesses.iter().map(|g| g.body["errors"][0]["message"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(guesses.iter().all(|g| g.status == 400), "{messages:?}");
    assert_eq!(messages.iter().filter(|m| m.contains("not the code")).count(), 5, "{messages:?}");
    let late = verify(&t, &tokens, &code).await;
    assert_eq!(late.status, 400, "even the right code, after five tries: {:?}", late.body);

    // Asking again (the same unverified number) sends a fresh code that works.
    assert_eq!(patch_me(&t, &tokens, json!({"phone": phone})).await.status, 200);
    let codes = codes_sent_to(&t, &phone).await;
    assert_eq!(codes.len(), 2);
    assert_eq!(verify(&t, &tokens, &codes[1]).await.status, 200);
}

#[tokio::test]
async fn codes_are_rate_limited_per_user() {
    let t = TestApp::new().await;
    let (_, tokens) = t.logged_in("profile-pump").await;
    for _ in 0..3 {
        assert_eq!(patch_me(&t, &tokens, json!({"phone": unique_phone()})).await.status, 200);
    }
    let fourth = unique_phone();
    let limited = patch_me(&t, &tokens, json!({"phone": fourth})).await;
    assert_eq!((limited.status, limited.body["code"].as_str()), (429, Some("rate_limited")));
    assert!(limited.header("retry-after").is_some());
    assert!(t.sms_to(&fourth).await.is_empty(), "nothing texted");
    assert_ne!(t.me(access(&tokens)).await.body["phone"], fourth.as_str(), "and nothing changed");
}

#[tokio::test]
async fn a_release_texts_only_a_verified_phone() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, provider_tokens, provider_id, payment_id) = held_payment(&t, true).await;
    // The owner's number is replaced by one not yet verified.
    let unverified = unique_phone();
    assert_eq!(patch_me(&t, &provider_tokens, json!({"phone": unverified})).await.status, 200);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    let provider_phone = s(&t.item(&format!("PROVIDER#{provider_id}"), "PROVIDER").await.unwrap(), "phone");
    assert!(t.sms_to(&provider_phone).await.is_empty(), "not the number given to Stripe");
    let texts = t.sms_to(&unverified).await;
    assert_eq!(texts.len(), 1, "only the verification code: {texts:?}");
    assert!(texts[0].contains("verification code"), "{texts:?}");
}
