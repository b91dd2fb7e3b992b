//! Notifications beyond the outbox: push devices (SNS platform endpoints in moto),
//! preferences and unsubscribe links, and SES bounces suppressing an address. Driven through
//! the `notifications` routes, the payment routes and the notifier fed by the stream.

use crate::common;

use crate::common::{
    TestApp,
    money::{held_payment, release, token},
    s, unique_email,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::api::notifications::handle;

async fn call(t: &TestApp, tokens: &Value, method: &str, path: &str, body: Option<Value>) -> common::TestResponse {
    t.authed(handle, method, path, token(tokens), &[], body).await
}

fn fcm_token() -> String {
    format!("fcm-{}:{}", uuid::Uuid::new_v4().simple(), "A".repeat(120))
}

/// Registers an FCM device for the user; (device id, SNS endpoint ARN).
async fn device(t: &TestApp, tokens: &Value, user_id: &str) -> (String, String) {
    let added =
        call(t, tokens, "POST", "/notifications/devices", Some(json!({"platform": "fcm", "token": fcm_token()}))).await;
    assert_eq!(added.status, 201, "{:?}", added.body);
    let device_id = added.body["device_id"].as_str().unwrap().to_owned();
    let item = t.item(&format!("USER#{user_id}"), &format!("DEVICE#{device_id}")).await.expect("device recorded");
    (device_id, s(&item, "endpoint_arn"))
}

async fn user_id(t: &TestApp, tokens: &Value) -> String {
    t.me(token(tokens)).await.body["user_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_release_pushes_to_the_providers_device_and_texts_their_phone_and_preferences_turn_channels_off() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, provider_tokens, provider_id, payment_id) = held_payment(&t, true).await;
    let provider_user = user_id(&t, &provider_tokens).await;
    let (_, endpoint) = device(&t, &provider_tokens, &provider_user).await;

    let released = release(&t, &payer, &payment_id).await;
    assert_eq!(released.status, 200, "{:?}", released.body);
    let pushes = t.pushes_to(&endpoint).await;
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    let fcm: Value = serde_json::from_str(pushes[0]["GCM"].as_str().unwrap()).unwrap();
    assert_eq!(fcm["notification"]["title"], "You have been paid");
    assert_eq!(fcm["data"]["payment_id"], payment_id.as_str());
    let phone = s(&t.item(&format!("PROVIDER#{provider_id}"), "PROVIDER").await.unwrap(), "phone");
    assert_eq!(t.sms_to(&phone).await.len(), 1);

    // Push and SMS about payments turned off: the next release reaches neither.
    let off = call(
        &t,
        &provider_tokens,
        "PUT",
        "/notifications/preferences",
        Some(json!({"push": {"payments": false}, "sms": {"payments": false}})),
    )
    .await;
    assert_eq!(off.status, 200, "{:?}", off.body);
    assert_eq!(off.body["push"], json!({"payments": false, "product": true}));
    assert_eq!(off.body["email"], json!({"payments": true, "product": true}));
    let (payer2, second) = held_payment_to(&t, &provider_id).await;
    assert_eq!(release(&t, &payer2, &second).await.status, 200);
    assert_eq!(t.pushes_to(&endpoint).await.len(), 1, "no push with the switch off");
    assert_eq!(t.sms_to(&phone).await.len(), 1, "no SMS with the switch off");
    let got = call(&t, &provider_tokens, "GET", "/notifications/preferences", None).await;
    assert_eq!(got.body, off.body);
}

/// A held payment to an existing provider, from a fresh payer: (payer tokens, payment id).
async fn held_payment_to(t: &TestApp, provider_id: &str) -> (Value, String) {
    let (_, payer) = t.logged_in("payer2").await;
    let created = common::money::pay(t, &payer, provider_id, &uuid::Uuid::new_v4().to_string(), 1200).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let payment_id = created.body["payment_id"].as_str().unwrap().to_owned();
    common::money::mark_succeeded(t, &payment_id).await;
    (payer, payment_id)
}

#[tokio::test]
async fn a_payer_gets_a_push_when_their_payment_goes_through() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = common::money::provider(&t, true).await;
    let (_, payer) = t.logged_in("payer").await;
    let payer_id = user_id(&t, &payer).await;
    let (_, endpoint) = device(&t, &payer, &payer_id).await;
    let created = common::money::pay(&t, &payer, &provider_id, &uuid::Uuid::new_v4().to_string(), 900).await;
    common::money::mark_succeeded(&t, created.body["payment_id"].as_str().unwrap()).await;
    let pushes = t.pushes_to(&endpoint).await;
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert!(pushes[0]["default"].as_str().unwrap().contains("9.00 USD"), "{:?}", pushes[0]);
}

#[tokio::test]
async fn devices_register_idempotently_list_and_delete_and_a_disabled_endpoint_is_removed() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, tokens) = t.logged_in("devices").await;
    let me = user_id(&t, &tokens).await;
    let body = json!({"platform": "fcm", "token": fcm_token()});
    let first = call(&t, &tokens, "POST", "/notifications/devices", Some(body.clone())).await;
    let again = call(&t, &tokens, "POST", "/notifications/devices", Some(body)).await;
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(first.body["device_id"], again.body["device_id"], "the same token is the same device");
    let apns = call(
        &t,
        &tokens,
        "POST",
        "/notifications/devices",
        Some(json!({"platform": "apns", "token": hex::encode(uuid::Uuid::new_v4().as_bytes()).repeat(2)})),
    )
    .await;
    assert_eq!(apns.status, 201, "{:?}", apns.body);
    let listed = call(&t, &tokens, "GET", "/notifications/devices", None).await;
    assert_eq!(listed.body["devices"].as_array().unwrap().len(), 2, "{:?}", listed.body);

    let gone = call(
        &t,
        &tokens,
        "DELETE",
        &format!("/notifications/devices/{}", apns.body["device_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(gone.status, 204);
    let twice = call(
        &t,
        &tokens,
        "DELETE",
        &format!("/notifications/devices/{}", apns.body["device_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!((twice.status, twice.body["code"].as_str()), (404, Some("not_found")));

    // Someone else's device is not found either.
    let (_, stranger) = t.logged_in("stranger").await;
    let theirs = call(
        &t,
        &stranger,
        "DELETE",
        &format!("/notifications/devices/{}", first.body["device_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(theirs.status, 404);

    // SNS disables the endpoint (the app was uninstalled): the next push removes the device.
    let device_id = first.body["device_id"].as_str().unwrap();
    let item = t.item(&format!("USER#{me}"), &format!("DEVICE#{device_id}")).await.unwrap();
    t.app
        .sns()
        .set_endpoint_attributes()
        .endpoint_arn(s(&item, "endpoint_arn"))
        .attributes("Enabled", "false")
        .send()
        .await
        .unwrap();
    let message =
        shared::outbox::Message::push(&me, shared::notify::Category::Product, "News", "Something new", json!({}));
    let table = t.app.table();
    table.transact(vec![shared::outbox::put(table, message).unwrap()]).await.unwrap();
    t.outbox_delivered().await;
    assert!(t.item(&format!("USER#{me}"), &format!("DEVICE#{device_id}")).await.is_none(), "disabled device removed");
    let listed = call(&t, &tokens, "GET", "/notifications/devices", None).await;
    assert_eq!(listed.body["devices"], json!([]));
}

#[tokio::test]
async fn bad_device_and_preference_input_is_a_400_and_changes_nothing() {
    let t = TestApp::new().await;
    let (_, tokens) = t.logged_in("badinput").await;
    let me = user_id(&t, &tokens).await;
    for (body, field) in [
        (json!({"platform": "windows", "token": "abc"}), "platform"),
        (json!({"platform": "fcm", "token": "x".repeat(5000)}), "token"),
        (json!({"platform": "fcm"}), "token"),
        (json!({"platform": "apns", "token": "zz-not-hex"}), "token"),
    ] {
        let r = call(&t, &tokens, "POST", "/notifications/devices", Some(body.clone())).await;
        assert_eq!((r.status, r.body["code"].as_str()), (400, Some("validation_failed")), "{body}");
        assert_eq!(r.body["errors"][0]["field"], field, "{body}: {:?}", r.body);
    }
    assert!(t.partition(&format!("USER#{me}")).await.iter().all(|i| !s(i, "SK").starts_with("DEVICE#")));

    for body in [
        json!({"email": {"product": "off"}}),
        json!({"email": {"marketing": false}}),
        json!({"pager": {"payments": false}}),
        json!({"push": true}),
        json!({"email": {"product": false}, "sms": {"payments": 1}}),
    ] {
        let r = call(&t, &tokens, "PUT", "/notifications/preferences", Some(body.clone())).await;
        assert_eq!((r.status, r.body["code"].as_str()), (400, Some("validation_failed")), "{body}");
    }
    let unchanged = call(&t, &tokens, "GET", "/notifications/preferences", None).await;
    assert_eq!(
        unchanged.body,
        json!({"email": {"payments": true, "product": true}, "sms": {"payments": true},
               "push": {"payments": true, "product": true}})
    );
    assert!(t.item(&format!("USER#{me}"), "PREFERENCES").await.is_none(), "nothing written");

    let not_json = t.authed(handle, "PUT", "/notifications/preferences", token(&tokens), &[], None).await;
    assert_eq!(not_json.status, 400);
    let anonymous = t.post(handle, "/notifications/devices", json!({"platform": "fcm", "token": "t"})).await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn the_welcome_email_carries_an_unsubscribe_link_that_turns_product_mail_off_but_never_security_mail() {
    let t = TestApp::new().await;
    let email = t.verified_user("unsub").await;
    let welcome = t.emails_to(&email).await.into_iter().find(|m| m.subject.contains("Welcome")).expect("welcome");
    let unsubscribe = welcome.token_for("/unsubscribe").expect("unsubscribe link in the welcome email");
    let frontend = std::env::var("FRONTEND_URL").unwrap();
    assert!(welcome.body.contains(&format!("{frontend}/unsubscribe#token=")));

    for bad in ["", "not-a-token", &"x".repeat(5000), &unsubscribe[..unsubscribe.len() - 3]] {
        let r = t.post(handle, "/notifications/unsubscribe", json!({"token": bad})).await;
        assert_eq!((r.status, r.body["code"].as_str()), (400, Some("token_invalid")), "{bad:.20}");
    }
    // An access token is not an unsubscribe token.
    let login = t.login(&email, common::STRONG_PASSWORD).await;
    let r = t.post(handle, "/notifications/unsubscribe", json!({"token": login.body["access_token"]})).await;
    assert_eq!((r.status, r.body["code"].as_str()), (400, Some("token_invalid")));

    let done = t.post(handle, "/notifications/unsubscribe", json!({"token": unsubscribe})).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!((done.body["channel"].as_str(), done.body["category"].as_str()), (Some("email"), Some("product")));
    let again = t.post(handle, "/notifications/unsubscribe", json!({"token": unsubscribe})).await;
    assert_eq!(again.status, 200, "idempotent");
    let prefs = call(&t, &login.body, "GET", "/notifications/preferences", None).await;
    assert_eq!(prefs.body["email"], json!({"payments": true, "product": false}));

    // Product mail now stops; security mail still goes.
    let message =
        shared::outbox::Message::email(shared::notify::EmailKind::Welcome, &email, json!({"login_link": "x"}));
    let table = t.app.table();
    let sealer = t.app.outbox_sealer().await.unwrap();
    table.transact(vec![shared::outbox::put_sealed(table, &sealer, message).unwrap()]).await.unwrap();
    let forgot = t.post(shared::api::reset::handle, "/auth/forgot-password", json!({"email": email})).await;
    assert_eq!(forgot.status, 202);
    let subjects: Vec<String> = t.emails_to(&email).await.into_iter().map(|m| m.subject).collect();
    assert_eq!(subjects.iter().filter(|s| s.contains("Welcome")).count(), 1, "{subjects:?}");
    assert!(subjects.iter().any(|s| s.to_lowercase().contains("reset")), "{subjects:?}");
}

/// The unsubscribe token in `email`'s welcome email.
async fn welcome_unsubscribe_token(t: &TestApp, email: &str) -> String {
    let welcome = t.emails_to(email).await.into_iter().find(|m| m.subject.contains("Welcome")).expect("welcome");
    welcome.token_for("/unsubscribe").expect("unsubscribe link in the welcome email")
}

/// A mail client's RFC 8058 one-click post: the form, from its own origin, token in the URL.
fn one_click(token: &str, content_type: &str, body: &str) -> String {
    one_click_from(&common::random_ip(), token, content_type, body)
}

fn one_click_from(ip: &str, token: &str, content_type: &str, body: &str) -> String {
    let event = common::http_event_from(
        ip,
        "POST",
        "/notifications/unsubscribe/one-click",
        &[("content-type", content_type), ("origin", "https://mail.example.net")],
        Some(body),
    );
    let mut event: serde_json::Value = serde_json::from_str(&event).unwrap();
    event["rawQueryString"] = json!(format!("token={token}"));
    event["queryStringParameters"] = json!({ "token": token });
    event.to_string()
}

#[tokio::test]
async fn a_mail_clients_one_click_form_from_any_origin_unsubscribes_and_nothing_else_passes_that_way() {
    let t = TestApp::new().await;
    let email = t.verified_user("oneclick").await;
    let token = welcome_unsubscribe_token(&t, &email).await;
    let form = "application/x-www-form-urlencoded";

    let wrong_form = t.invoke(handle, &one_click(&token, form, "List-Unsubscribe=Other")).await;
    assert_eq!((wrong_form.status, wrong_form.body["code"].as_str()), (400, Some("validation_failed")));
    let forged = t.invoke(handle, &one_click(&token[..token.len() - 3], form, "List-Unsubscribe=One-Click")).await;
    assert_eq!((forged.status, forged.body["code"].as_str()), (400, Some("token_invalid")));
    // The other unsubscribe route takes JSON from allowed origins only, like every other.
    let mut cross_site: serde_json::Value = serde_json::from_str(&one_click(&token, form, "token=x")).unwrap();
    cross_site["rawPath"] = json!("/notifications/unsubscribe");
    cross_site["requestContext"]["http"]["path"] = json!("/notifications/unsubscribe");
    let refused = t.invoke(handle, &cross_site.to_string()).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (403, Some("csrf_failed")));

    let done = t.invoke(handle, &one_click(&token, form, "List-Unsubscribe=One-Click")).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!((done.body["channel"].as_str(), done.body["category"].as_str()), (Some("email"), Some("product")));
    let again = t.invoke(handle, &one_click(&token, form, "List-Unsubscribe=One-Click")).await;
    assert_eq!(again.status, 200, "idempotent");
    let login = t.login(&email, common::STRONG_PASSWORD).await;
    let prefs = call(&t, &login.body, "GET", "/notifications/preferences", None).await;
    assert_eq!(prefs.body["email"], json!({"payments": true, "product": false}));
}

#[tokio::test]
async fn a_mail_providers_server_posting_for_every_recipient_is_limited_only_on_refused_tokens() {
    let t = TestApp::with_env(&[("RATE_LIMIT_UNSUBSCRIBE", "2/86400")]).await;
    let email = t.verified_user("oneclick-provider").await;
    let token = welcome_unsubscribe_token(&t, &email).await;
    let (form, click) = ("application/x-www-form-urlencoded", "List-Unsubscribe=One-Click");
    let provider = common::random_ip();
    for _ in 0..4 {
        let done = t.invoke(handle, &one_click_from(&provider, &token, form, click)).await;
        assert_eq!(done.status, 200, "valid tokens are never limited: {:?}", done.body);
    }
    let forged = &token[..token.len() - 3];
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(t.invoke(handle, &one_click_from(&provider, forged, form, click)).await.status);
    }
    assert_eq!(statuses, [400, 400, 429], "refused tokens spend the address's budget");
    assert_eq!(t.invoke(handle, &one_click_from(&provider, &token, form, click)).await.status, 200);
}

#[tokio::test]
async fn a_bounce_through_sns_suppresses_the_address_and_a_later_reset_sends_nothing_and_is_audited() {
    let t = TestApp::new().await;
    let email = t.verified_user("bounce").await;
    let user = t.user_by_email(&email).await;
    let before = t.emails_to(&email).await.len();

    let feedback_id = uuid::Uuid::new_v4().to_string();
    let bounce = json!({
        "eventType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "feedbackId": feedback_id,
                   "bouncedRecipients": [{"emailAddress": email, "action": "failed", "status": "5.1.1"}],
                   "timestamp": "2026-11-23T10:00:00.000Z"},
        "mail": {"messageId": "ses-message-1", "destination": [email]}
    });
    let topic = std::env::var("SES_FEEDBACK_TOPIC_ARN").expect("SES_FEEDBACK_TOPIC_ARN");
    for _ in 0..2 {
        // SNS may deliver twice; the second changes nothing.
        t.app.sns().publish().topic_arn(&topic).message(bounce.to_string()).send().await.unwrap();
    }
    let key = format!("SUPPRESSED#{}", hex::encode(Sha256::digest(email.as_bytes())));
    let mut suppression = None;
    for _ in 0..300 {
        suppression = t.item(&key, "SUPPRESSED").await;
        if suppression.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let suppression = suppression.expect("the bounce reached the notifier through SNS");
    assert_eq!(s(&suppression, "reason"), "bounce");
    assert!(!format!("{suppression:?}").contains(&email), "the suppression item holds no address");

    let forgot = t.post(shared::api::reset::handle, "/auth/forgot-password", json!({"email": email})).await;
    assert_eq!(forgot.status, 202);
    assert_eq!(t.emails_to(&email).await.len(), before, "nothing mailed to a suppressed address");

    let audit = t.partition(&format!("AUDIT#{}", s(&user, "org_id"))).await;
    let suppressed: Vec<_> = audit.iter().filter(|e| s(e, "action") == "email.suppressed").collect();
    assert_eq!(suppressed.len(), 1, "audited once, however often SNS delivers");
    assert_eq!(s(suppressed[0], "target_user_id"), s(&user, "user_id"));
    let not_sent = audit.iter().find(|e| s(e, "action") == "email.not_sent").expect("the withheld reset is audited");
    assert_eq!(s(not_sent, "status"), "failure");

    // Someone else's address is unaffected.
    let other = unique_email("unbounced");
    assert_eq!(t.register(json!({"email": other, "password": common::STRONG_PASSWORD})).await.status, 202);
    assert_eq!(t.emails_to(&other).await.len(), 1);
}
