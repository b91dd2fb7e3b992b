#![recursion_limit = "256"]
//! The scheduled cleanup, run as the hourly schedule runs it (`shared::cleanup::run`, what
//! the `cleanup` function calls), against the local stack: erasure after the grace period
//! (here `DELETION_GRACE_DAYS=0`), with organisation succession, and payments left
//! mid-release settled. Two runs at once must come to what one run does.

mod common;

use common::{
    STRONG_PASSWORD, TestApp,
    money::{backdate_queue, held_payment, release, status_of, token},
    s, stripe_event,
};
use serde_json::{Value, json};
use shared::{cleanup, http::RequestMeta};
use stripe_stand_in::Failure;

fn run_meta() -> RequestMeta {
    RequestMeta { request_id: format!("cleanup-{}", uuid::Uuid::new_v4()), ..RequestMeta::default() }
}

/// `DELETE /auth/me` with the right password.
async fn delete_me(t: &TestApp, tokens: &Value) -> common::TestResponse {
    let body = Some(json!({"password": STRONG_PASSWORD}));
    t.authed(shared::api::account::handle, "DELETE", "/auth/me", token(tokens), &[], body).await
}

/// A payment of 1 500 USD from `payer` to the provider, created and not yet paid: its id.
async fn unpaid_payment(t: &TestApp, payer: &Value, provider_id: &str) -> String {
    let created = common::money::pay(t, payer, provider_id, &uuid::Uuid::new_v4().to_string(), 1500).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body["payment_id"].as_str().unwrap().to_owned()
}

async fn schedule_deletion(t: &TestApp, tokens: &Value) {
    let scheduled = delete_me(t, tokens).await;
    assert_eq!(scheduled.status, 202, "{:?}", scheduled.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_past_its_grace_is_erased_once_by_two_concurrent_runs_and_its_org_gets_a_new_admin() {
    let t = TestApp::with_env(&[("DELETION_GRACE_DAYS", "0")]).await;
    let (admin, member_email, _member_tokens, member_id) = t.org_with_member("member").await;
    let me = t.me(token(&admin)).await.body;
    let (admin_id, admin_email, org_id) = (
        me["user_id"].as_str().unwrap().to_owned(),
        me["email"].as_str().unwrap().to_owned(),
        me["org_id"].as_str().unwrap().to_owned(),
    );
    // A device (an SNS endpoint) and audit entries with the client's address.
    let device = t
        .authed(
            shared::api::notifications::handle,
            "POST",
            "/notifications/devices",
            token(&admin),
            &[],
            Some(json!({"platform": "fcm", "token": format!("tok-{}", uuid::Uuid::new_v4().simple())})),
        )
        .await;
    assert_eq!(device.status, 201, "{:?}", device.body);
    schedule_deletion(&t, &admin).await;
    let before = t.partition(&format!("AUDIT#{org_id}")).await;
    assert!(before.iter().any(|e| e.contains_key("ip")), "entries carry the client address before");

    // Two overlapping runs, on separate threads.
    let app = t.app;
    let first = tokio::spawn(async move { cleanup::run(app, &run_meta()).await });
    let second = tokio::spawn(async move { cleanup::run(app, &run_meta()).await });
    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    // Their counts include other tests' accounts due in the shared table (one whose erasure
    // needs Stripe fails in this app, which has none), so what is asserted is this account:
    // gone, once, below.
    assert!(a.accounts_erased + b.accounts_erased >= 1, "{a:?} {b:?}");
    let user_pk = format!("USER#{admin_id}");
    assert!(t.partition(&user_pk).await.is_empty(), "every item of the user is gone");
    assert!(t.item(&format!("EMAIL#{admin_email}"), "EMAIL").await.is_none());
    assert!(t.item(&format!("ORG#{org_id}"), &format!("MEMBER#{admin_id}")).await.is_none());

    // Login fails exactly as for an unknown address.
    let login = t.login(&admin_email, STRONG_PASSWORD).await;
    let unknown = t.login(&common::unique_email("nobody"), STRONG_PASSWORD).await;
    assert_eq!((login.status, &login.body["code"]), (unknown.status, &unknown.body["code"]));

    // The member is the org's admin now, in the membership and the profile.
    let membership = t.item(&format!("ORG#{org_id}"), &format!("MEMBER#{member_id}")).await.unwrap();
    assert_eq!(s(&membership, "role"), "admin");
    assert_eq!(s(&t.user_by_email(&member_email).await, "role"), "admin");
    assert_eq!(s(&t.item(&format!("ORG#{org_id}"), "ORG").await.unwrap(), "admin_count"), "1");

    // The audit log keeps ids, not the client's address; one account.erased entry.
    let audit = t.partition(&format!("AUDIT#{org_id}")).await;
    let theirs: Vec<_> = audit
        .iter()
        .filter(|e| {
            e.get("actor_user_id").and_then(|v| v.as_s().ok()) == Some(&admin_id)
                || e.get("target_user_id").and_then(|v| v.as_s().ok()) == Some(&admin_id)
        })
        .collect();
    assert!(theirs.len() >= 3, "{theirs:?}");
    for entry in &theirs {
        assert!(!entry.contains_key("ip") && !entry.contains_key("user_agent"), "{entry:?}");
    }
    let erased: Vec<_> = audit.iter().filter(|e| s(e, "action") == "account.erased").collect();
    assert_eq!(erased.len(), 1, "one erasure, however many runs");
    assert_eq!(s(erased[0], "target_user_id"), admin_id);

    // One "account erased" email; then the address is free to register again.
    let erased_mail =
        t.emails_to(&admin_email).await.into_iter().filter(|m| m.subject == "Your account has been erased").count();
    assert_eq!(erased_mail, 1);
    assert!(
        t.published_events()
            .await
            .iter()
            .any(|(kind, body)| kind == "account.erased" && body["data"]["user_id"] == admin_id.as_str())
    );
    let again = t.register(json!({"email": admin_email, "password": STRONG_PASSWORD})).await;
    assert_eq!(again.status, 202);
    let guard = t.item(&format!("EMAIL#{admin_email}"), "EMAIL").await.expect("registered again");
    assert_ne!(s(&guard, "user_id"), admin_id);

    // A later run leaves the erased account and the new one with its address alone (other
    // tests' accounts may be due in the shared table, so its counts say nothing here).
    cleanup::run(t.app, &run_meta()).await;
    let audit = t.partition(&format!("AUDIT#{org_id}")).await;
    assert_eq!(audit.iter().filter(|e| s(e, "action") == "account.erased").count(), 1);
    assert_eq!(s(&t.item(&format!("EMAIL#{admin_email}"), "EMAIL").await.unwrap(), "user_id"), s(&guard, "user_id"));
}

#[tokio::test]
async fn the_last_member_leaving_deletes_the_org_and_an_account_in_its_grace_is_kept() {
    let t = TestApp::with_env(&[("DELETION_GRACE_DAYS", "0")]).await;
    let (email, tokens) = t.logged_in("alone").await;
    let org_id = t.me(token(&tokens)).await.body["org_id"].as_str().unwrap().to_owned();
    schedule_deletion(&t, &tokens).await;

    // Someone still inside the 30-day grace is untouched.
    let patient = TestApp::new().await;
    let (kept_email, kept) = patient.logged_in("kept").await;
    schedule_deletion(&patient, &kept).await;

    cleanup::run(t.app, &run_meta()).await;
    assert!(t.item(&format!("ORG#{org_id}"), "ORG").await.is_none(), "an org without members is deleted");
    assert!(t.item(&format!("EMAIL#{email}"), "EMAIL").await.is_none());
    assert!(t.item(&format!("EMAIL#{kept_email}"), "EMAIL").await.is_some(), "not due yet");
}

#[tokio::test]
async fn an_erased_provider_keeps_its_record_for_the_payments_but_not_the_phone() {
    let t = TestApp::with_stripe(&[("DELETION_GRACE_DAYS", "0")]).await;
    let (tokens, provider_id) = common::money::provider(&t, true).await;
    let pk = format!("PROVIDER#{provider_id}");
    assert!(t.item(&pk, "PROVIDER").await.unwrap().contains_key("phone"));
    schedule_deletion(&t, &tokens).await;
    cleanup::run(t.app, &run_meta()).await;
    let provider = t.item(&pk, "PROVIDER").await.expect("the provider record stays");
    assert!(!provider.contains_key("phone"), "{provider:?}");
}

#[tokio::test]
async fn a_payment_left_releasing_by_a_crash_is_settled_by_the_next_run_with_one_transfer() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    t.stand_in().fail("/v1/transfers", Failure::ServerErrorAfterWork, 1);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 202);
    assert_eq!(status_of(&t, &payment_id).await, "releasing");
    backdate_queue(&t, &payment_id).await;

    let summary = cleanup::run(t.app, &run_meta()).await;
    assert!(summary.payments_released >= 1, "{summary:?}");
    assert_eq!(status_of(&t, &payment_id).await, "released");
    let ours: Vec<Value> = t
        .stand_in()
        .created("tr_")
        .into_iter()
        .filter(|tr| tr["metadata"]["payment_id"] == payment_id.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "never a second transfer");
}

#[tokio::test]
async fn a_payment_whose_success_webhook_was_lost_is_succeeded_after_a_run_and_the_late_webhook_changes_nothing() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = common::money::provider(&t, true).await;
    let (_, payer) = t.logged_in("payer").await;
    let payment_id = unpaid_payment(&t, &payer, &provider_id).await;
    let item = t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap();
    assert_eq!(s(&item, "GSI2PK"), "AWAITING_PAYMENT", "an unpaid payment is on the queue");
    // The payer pays at Stripe; the webhook never arrives.
    let intent = t.stand_in().succeed_payment_intent(&s(&item, "stripe_payment_intent_id"));

    // Within the hour the run leaves it alone.
    cleanup::run(t.app, &run_meta()).await;
    assert_eq!(status_of(&t, &payment_id).await, "requires_payment");

    backdate_queue(&t, &payment_id).await;
    let summary = cleanup::run(t.app, &run_meta()).await;
    assert!(summary.payments_recovered >= 1, "{summary:?}");
    let item = t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap();
    assert_eq!(s(&item, "status"), "succeeded");
    assert!(!item.contains_key("GSI2PK"), "off the queue");
    assert_eq!(s(&item, "stripe_charge_id"), intent["latest_charge"].as_str().unwrap());
    assert!(
        t.published_events()
            .await
            .iter()
            .any(|(kind, body)| kind == "payment.succeeded" && body["data"]["payment_id"] == payment_id.as_str())
    );

    // The lost event turns up after all: it is older than what the run recorded.
    let late = t
        .deliver(&common::stripe_event("payment_intent.succeeded", shared::time::now().unix_timestamp() - 3600, intent))
        .await;
    assert_eq!(late.status, 200);
    let succeeded_events = t
        .published_events()
        .await
        .into_iter()
        .filter(|(kind, body)| kind == "payment.succeeded" && body["data"]["payment_id"] == payment_id.as_str())
        .count();
    assert_eq!(succeeded_events, 1, "announced once");
}

/// Every item stored with a `ttl` must be on the expiry index, or the sweep never sees it.
async fn items_with_ttl_but_no_expiry_shard(t: &TestApp) -> Vec<String> {
    let table = t.app.table();
    let mut missing = Vec::new();
    let mut start = None;
    loop {
        let page = table
            .client()
            .scan()
            .table_name(table.name())
            .filter_expression("attribute_exists(#ttl) AND attribute_not_exists(expiry_shard)")
            .expression_attribute_names("#ttl", "ttl")
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        missing.extend(page.items().iter().map(|item| format!("{} / {}", s(item, "PK"), s(item, "SK"))));
        match page.last_evaluated_key {
            Some(next) if !next.is_empty() => start = Some(next),
            _ => return missing,
        }
    }
}

#[tokio::test]
async fn expired_items_ttl_has_not_removed_are_swept_and_live_ones_stay() {
    let t = TestApp::new().await;
    let (email, tokens) = t.logged_in("expired").await;
    let user_id = t.me(token(&tokens)).await.body["user_id"].as_str().unwrap().to_owned();
    // A failed login leaves a lockout counter; a reset request a one-time token.
    let ip = common::random_ip();
    let counter = shared::identity::attempts::counter_sort_key(&ip);
    let wrong = t.login_from(&ip, &email, "not the password at all 42").await;
    assert_eq!(wrong.status, 401, "{:?}", wrong.body);
    let forgot = t.post(shared::api::reset::handle, "/auth/forgot-password", json!({"email": email})).await;
    assert_eq!(forgot.status, 202, "{:?}", forgot.body);
    let reset_token = t
        .emails_to(&email)
        .await
        .iter()
        .rev()
        .find(|e| e.subject == "Reset your password")
        .and_then(|e| e.token_for("/reset-password"))
        .expect("reset email");
    use sha2::Digest;
    let reset_pk = format!("TOKEN#{}", hex::encode(sha2::Sha256::digest(reset_token.as_bytes())));
    let user_pk = format!("USER#{user_id}");
    assert!(t.item(&user_pk, &counter).await.is_some() && t.item(&reset_pk, "TOKEN").await.is_some());
    assert_eq!(items_with_ttl_but_no_expiry_shard(&t).await, Vec::<String>::new());

    // Both expire; TTL (which DynamoDB Local never runs, and AWS runs days late) has not acted.
    let past = aws_sdk_dynamodb::types::AttributeValue::N((shared::time::now().unix_timestamp() - 60).to_string());
    t.set(&user_pk, &counter, &[("ttl", past.clone())]).await;
    t.set(&reset_pk, "TOKEN", &[("ttl", past)]).await;
    let sessions_before = t.partition(&user_pk).await.iter().filter(|i| s(i, "SK").starts_with("SESSION#")).count();

    // (Other tests' runs sweep the same table, so the counts are not ours to check.)
    cleanup::run(t.app, &run_meta()).await;
    assert!(t.item(&user_pk, &counter).await.is_none(), "the expired counter is gone");
    assert!(t.item(&reset_pk, "TOKEN").await.is_none(), "the expired token is gone");
    let sessions_after = t.partition(&user_pk).await.iter().filter(|i| s(i, "SK").starts_with("SESSION#")).count();
    assert_eq!((sessions_before, sessions_after), (1, 1), "a live session (ttl ahead) stays");
    let reset = t
        .post(
            shared::api::reset::handle,
            "/auth/reset-password",
            json!({"token": reset_token, "new_password": "another Strong passphrase 77"}),
        )
        .await;
    assert_eq!((reset.status, reset.body["code"].as_str()), (400, Some("token_invalid")), "{:?}", reset.body);
    assert_eq!(t.login(&email, STRONG_PASSWORD).await.status, 200, "the account itself is untouched");
}

#[tokio::test]
async fn an_erased_subscriber_is_deleted_at_stripe_and_late_subscription_events_bring_nothing_back() {
    let t = TestApp::with_stripe(&[("DELETION_GRACE_DAYS", "0")]).await;
    let (_, tokens) = t.logged_in("subscriber").await;
    let user_id = t.me(token(&tokens)).await.body["user_id"].as_str().unwrap().to_owned();
    let started = t
        .authed(
            shared::api::pay::handle,
            "POST",
            "/subscriptions",
            token(&tokens),
            &[("idempotency-key", "erase-sub")],
            Some(json!({"price_id": "price_gold"})),
        )
        .await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    let sub = started.body["subscription_id"].as_str().unwrap().to_owned();
    let customer = t.stand_in().created("cus_")[0]["id"].as_str().unwrap().to_owned();
    schedule_deletion(&t, &tokens).await;

    // Stripe fails once: the erasure waits for the next run, with nothing half done.
    t.stand_in().fail(&format!("/v1/customers/{customer}"), Failure::ServerError, 10);
    cleanup::run(t.app, &run_meta()).await;
    assert!(
        t.item(&format!("USER#{user_id}"), "PROFILE").await.is_some(),
        "not erased while Stripe keeps the customer"
    );
    t.stand_in().heal();
    // Other tests' runs share the queue (some without Stripe, which cannot erase a customer and
    // let go): this app's runs go on until the erasure is done.
    for _ in 0..5 {
        cleanup::run(t.app, &run_meta()).await;
        if t.item(&format!("USER#{user_id}"), "PROFILE").await.is_none() {
            break;
        }
    }
    assert!(t.item(&format!("USER#{user_id}"), "PROFILE").await.is_none(), "erased");
    let deletes: Vec<_> =
        t.stand_in().received("/v1/customers/").into_iter().filter(|r| r.method == "DELETE").collect();
    assert!(!deletes.is_empty(), "the Stripe customer (its email, its card) was deleted");
    let at_stripe = t.stand_in().created(&sub);
    assert_eq!(at_stripe[0]["status"], "canceled", "billing stopped with the customer");

    // Stripe's last word on the subscription does not recreate the person's data.
    let ended = stripe_event(
        "customer.subscription.deleted",
        shared::time::now().unix_timestamp(),
        json!({"id": sub, "status": "canceled", "cancel_at_period_end": false,
               "metadata": {"user_id": user_id, "price_id": "price_gold"}}),
    );
    assert_eq!(t.deliver(&ended).await.status, 200);
    assert!(t.partition(&format!("USER#{user_id}")).await.is_empty(), "nothing of the user is left");
}

#[tokio::test]
async fn a_message_the_stream_gave_up_on_is_delivered_once_by_the_next_run() {
    let t = TestApp::new().await;
    let to = common::unique_email("lost-message");
    let item = t.sealed_verification(&to).await;
    // A notifier that died mid-send left its claim: every stream retry finds the message
    // "in flight" until the mapping gives up and dead-letters the batch.
    let now = shared::time::now().unix_timestamp();
    let table = t.app.table();
    table
        .put_item(&json!({"PK": item.pk, "SK": "DELIVERY", "status": "sending", "lease_until": now + 3600,
                          "channel": "email", "ttl": now + 86400}))
        .await
        .unwrap();
    let committed_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() - 1000;
    table.transact(vec![item.put(table).unwrap()]).await.unwrap();
    assert!(!common::dead_letters_since(committed_ms).await.is_empty(), "the stream mapping gave up on the message");
    assert!(t.emails_to(&to).await.is_empty(), "nothing went out");

    // Later: the dead notifier's lease has lapsed and the message has waited past the cutoff.
    let lapsed = aws_sdk_dynamodb::types::AttributeValue::N((now - 1).to_string());
    t.set(&item.pk, "DELIVERY", &[("lease_until", lapsed)]).await;
    let long_ago = aws_sdk_dynamodb::types::AttributeValue::S("2026-01-01T00:00:00.000000Z".into());
    t.set(&item.pk, "OUTBOX", &[("GSI2SK", long_ago)]).await;
    let (meta_a, meta_b) = (run_meta(), run_meta());
    let (first, second) = tokio::join!(cleanup::run(t.app, &meta_a), cleanup::run(t.app, &meta_b));

    assert!(first.outbox_redelivered + second.outbox_redelivered >= 1, "{first:?} {second:?}");
    assert_eq!(t.emails_to(&to).await.len(), 1, "delivered, once, by two overlapping runs");
    let outbox = t.item(&item.pk, "OUTBOX").await.expect("the outbox item");
    assert!(!outbox.contains_key("GSI2PK"), "off the unsent queue");
    assert_eq!(s(&t.item(&item.pk, "DELIVERY").await.unwrap(), "status"), "sent");
    // And a message delivered the ordinary way leaves the queue as it goes.
    let ordinary = common::unique_email("ordinary-message");
    let sent = t.sealed_verification(&ordinary).await;
    table.transact(vec![sent.put(table).unwrap()]).await.unwrap();
    assert_eq!(t.emails_to(&ordinary).await.len(), 1);
    let mut settled = false;
    for _ in 0..100 {
        if !t.item(&sent.pk, "OUTBOX").await.unwrap().contains_key("GSI2PK") {
            settled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(settled, "a delivered message leaves the unsent queue");
}

/// Nobody who holds money can delete their account: the payer and the provider's owner of a
/// held payment get 409 and nothing changes (no deletion scheduled, sessions still good);
/// once it is released, both may.
#[tokio::test]
async fn an_account_holding_money_cannot_be_deleted_until_it_is_moved() {
    let t = TestApp::with_stripe(&[]).await;
    let (payer, provider_tokens, _, payment_id) = held_payment(&t, true).await;
    for (who, tokens) in [("payer", &payer), ("provider", &provider_tokens)] {
        let refused = delete_me(&t, tokens).await;
        assert_eq!(
            (refused.status, refused.body["code"].as_str()),
            (409, Some("conflict")),
            "{who}: {:?}",
            refused.body
        );
        let me = t.me(token(tokens)).await;
        assert_eq!(me.status, 200, "{who}: the session still works");
        let user = t.item(&format!("USER#{}", me.body["user_id"].as_str().unwrap()), "PROFILE").await.unwrap();
        assert!(!user.contains_key("deletion_scheduled_at"), "{who}");
    }
    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    schedule_deletion(&t, &payer).await;
    schedule_deletion(&t, &provider_tokens).await;
}

/// A payment whose card was declined stays watched: the payer pays with another card, the
/// success webhook is lost, and the next run finds it paid at Stripe.
#[tokio::test]
async fn a_failed_payment_paid_with_another_card_is_recovered_when_its_webhook_is_lost() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = common::money::provider(&t, true).await;
    let (_, payer) = t.logged_in("payer").await;
    let created = common::money::pay(&t, &payer, &provider_id, &uuid::Uuid::new_v4().to_string(), 1500).await;
    let payment_id = created.body["payment_id"].as_str().unwrap().to_owned();
    let intent_id = created.body["stripe_payment_intent_id"].as_str().unwrap().to_owned();
    let declined = t.stand_in().object(&intent_id).unwrap();
    let now = shared::time::now().unix_timestamp();
    assert_eq!(t.deliver(&stripe_event("payment_intent.payment_failed", now, declined)).await.status, 200);
    let item = t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap();
    assert_eq!((s(&item, "status"), s(&item, "GSI2PK")), ("failed".into(), "AWAITING_PAYMENT".into()), "still watched");

    t.stand_in().succeed_payment_intent(&intent_id); // another card; its webhook never comes
    backdate_queue(&t, &payment_id).await;
    let summary = cleanup::run(t.app, &run_meta()).await;
    assert!(summary.payments_recovered >= 1, "{summary:?}");
    let item = t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap();
    assert_eq!(s(&item, "status"), "succeeded");
    assert!(!item.contains_key("GSI2PK"), "off the queue");
}

/// A payment nobody pays for `PAYMENT_ABANDON_DAYS` is canceled at Stripe (so the payer can
/// no longer pay it) and becomes `canceled`, once; a younger one is left alone, and a
/// PaymentIntent canceled in Stripe's dashboard cancels its payment too.
#[tokio::test]
async fn a_payment_nobody_pays_is_canceled_at_stripe_after_the_abandon_days() {
    let t = TestApp::with_stripe(&[("PAYMENT_ABANDON_DAYS", "2")]).await;
    let (_, provider_id) = common::money::provider(&t, true).await;
    let (_, payer) = t.logged_in("payer").await;
    let mut made = Vec::new();
    for _ in 0..3 {
        let created = common::money::pay(&t, &payer, &provider_id, &uuid::Uuid::new_v4().to_string(), 1500).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let id = created.body["payment_id"].as_str().unwrap().to_owned();
        made.push((id, created.body["stripe_payment_intent_id"].as_str().unwrap().to_owned()));
    }
    let [(old, old_intent), (young, _), (dashboard, dashboard_intent)] = &made[..] else { unreachable!() };
    let three_days_ago = shared::time::rfc3339(shared::time::now() - shared::time::Duration::days(3));
    t.set(
        &format!("PAYMENT#{old}"),
        "PAYMENT",
        &[("created_at", aws_sdk_dynamodb::types::AttributeValue::S(three_days_ago))],
    )
    .await;
    backdate_queue(&t, old).await;
    backdate_queue(&t, young).await;

    // Other tests' runs share the queue (each with a Stripe stand-in of its own, which knows
    // nothing of this PaymentIntent) and may take it first: their lease is backdated away and
    // this app's run tried again. What counts is that it is canceled here, once (below).
    for _ in 0..5 {
        cleanup::run(t.app, &run_meta()).await;
        if status_of(&t, old).await == "canceled" {
            break;
        }
        backdate_queue(&t, old).await;
    }
    let item = t.item(&format!("PAYMENT#{old}"), "PAYMENT").await.unwrap();
    assert_eq!(s(&item, "status"), "canceled");
    assert!(!item.contains_key("GSI2PK"), "off the queue");
    let intent = t.stand_in().object(old_intent).unwrap();
    assert_eq!(
        (intent["status"].as_str(), intent["cancellation_reason"].as_str()),
        (Some("canceled"), Some("abandoned"))
    );
    let cancels = t.stand_in().received(&format!("/v1/payment_intents/{old_intent}/cancel"));
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].idempotency_key.as_deref(), Some(format!("cancel:{old}").as_str()));
    assert_eq!(status_of(&t, young).await, "requires_payment", "not abandoned yet");

    cleanup::run(t.app, &run_meta()).await;
    assert_eq!(t.stand_in().received(&format!("/v1/payment_intents/{old_intent}/cancel")).len(), 1, "once");

    let canceled = json!({"id": dashboard_intent, "object": "payment_intent", "status": "canceled"});
    let now = shared::time::now().unix_timestamp();
    assert_eq!(t.deliver(&stripe_event("payment_intent.canceled", now, canceled)).await.status, 200);
    assert_eq!(status_of(&t, dashboard).await, "canceled");
    let late = json!({"id": old_intent, "object": "payment_intent", "status": "requires_payment_method"});
    t.deliver(&stripe_event("payment_intent.payment_failed", now, late)).await;
    assert_eq!(status_of(&t, old).await, "canceled", "terminal");
}

/// Scheduling a payer's deletion marks the payments nobody has paid, and the next run cancels
/// them at Stripe; one the payer pays anyway before that is held, and the erasure refunds it
/// in full before the account goes.
#[tokio::test]
async fn deletion_cancels_unpaid_payments_and_the_erasure_refunds_one_paid_meanwhile() {
    let t = TestApp::with_stripe(&[("DELETION_GRACE_DAYS", "0")]).await;
    let (_, provider_id) = common::money::provider(&t, true).await;
    let (_, payer) = t.logged_in("payer").await;
    let payer_id = t.me(token(&payer)).await.body["user_id"].as_str().unwrap().to_owned();
    let mut made = Vec::new();
    for _ in 0..2 {
        made.push(unpaid_payment(&t, &payer, &provider_id).await);
    }
    let [unpaid, paid_anyway] = &made[..] else { unreachable!() };
    schedule_deletion(&t, &payer).await;
    let marked = t.item(&format!("PAYMENT#{unpaid}"), "PAYMENT").await.unwrap();
    assert_eq!(marked["abandon_requested"], aws_sdk_dynamodb::types::AttributeValue::Bool(true));
    common::money::mark_succeeded(&t, paid_anyway).await;

    // Other tests' runs share the queues (with stand-ins of their own): this app's runs go on
    // until its work is done.
    for _ in 0..5 {
        cleanup::run(t.app, &run_meta()).await;
        let gone = t.item(&format!("USER#{payer_id}"), "PROFILE").await.is_none();
        if gone && status_of(&t, unpaid).await == "canceled" {
            break;
        }
        backdate_queue(&t, unpaid).await;
    }
    assert_eq!(status_of(&t, unpaid).await, "canceled");
    let intent = s(&t.item(&format!("PAYMENT#{unpaid}"), "PAYMENT").await.unwrap(), "stripe_payment_intent_id");
    assert_eq!(t.stand_in().object(&intent).unwrap()["cancellation_reason"], "abandoned");
    assert_eq!(status_of(&t, paid_anyway).await, "refunded");
    let refunds = t.stand_in().posted("/v1/refunds");
    assert_eq!(refunds.len(), 1, "refunded once");
    assert_eq!(refunds[0].form.get("amount").map(String::as_str), Some("1500"));
    assert!(t.partition(&format!("USER#{payer_id}")).await.is_empty(), "the payer is erased");
}

/// Money that came back after the release (a refund failed) to a payer whose deletion was
/// already scheduled goes back to them at the erasure, once, before the account goes.
#[tokio::test]
async fn the_erasure_refunds_money_that_came_back_after_the_release() {
    let t = TestApp::with_stripe(&[("DELETION_GRACE_DAYS", "0")]).await;
    let (payer, _, _, payment_id) = held_payment(&t, true).await;
    let payer_id = t.me(token(&payer)).await.body["user_id"].as_str().unwrap().to_owned();
    let partial = common::money::refund(&t, &payer, &payment_id, Some(json!({"amount": 1000}))).await;
    assert_eq!(partial.status, 200, "{:?}", partial.body);
    assert_eq!(release(&t, &payer, &payment_id).await.status, 200);
    schedule_deletion(&t, &payer).await;
    let pi = s(&t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap(), "stripe_payment_intent_id");
    let made = t.stand_in().created("re_");
    let refund_id =
        made.iter().find(|r| r["payment_intent"] == pi.as_str()).unwrap()["id"].as_str().unwrap().to_owned();
    let now = shared::time::now().unix_timestamp();
    for (kind, object) in t.stand_in().fail_refund(&refund_id) {
        assert_eq!(t.deliver(&stripe_event(&kind, now, object)).await.status, 200);
    }

    for _ in 0..5 {
        cleanup::run(t.app, &run_meta()).await;
        if t.item(&format!("USER#{payer_id}"), "PROFILE").await.is_none() {
            break;
        }
    }
    let refunds = t.stand_in().posted("/v1/refunds");
    assert_eq!(refunds.len(), 2, "the first refund and the one at the erasure: {refunds:?}");
    assert_eq!(refunds[1].form.get("amount").map(String::as_str), Some("1000"));
    assert_eq!(refunds[1].idempotency_key.as_deref(), Some(&*format!("refund:{payment_id}:again:{refund_id}")));
    let after = t.item(&format!("PAYMENT#{payment_id}"), "PAYMENT").await.unwrap();
    assert_eq!((s(&after, "amount_unsettled"), s(&after, "amount_refunded")), ("0".into(), "1000".into()));
    assert!(t.partition(&format!("USER#{payer_id}")).await.is_empty(), "the payer is erased");
}

/// A deletion cancelled inside the grace period keeps the user's unpaid payments: no longer
/// marked to be canceled, the cleanup's next run leaves them waiting for payment.
#[tokio::test]
async fn restoring_the_account_keeps_its_unpaid_payments() {
    let t = TestApp::with_stripe(&[]).await;
    let (_, provider_id) = common::money::provider(&t, true).await;
    let (email, payer) = t.logged_in("payer").await;
    let unpaid = unpaid_payment(&t, &payer, &provider_id).await;
    schedule_deletion(&t, &payer).await;
    let pk = format!("PAYMENT#{unpaid}");
    assert_eq!(
        t.item(&pk, "PAYMENT").await.unwrap()["abandon_requested"],
        aws_sdk_dynamodb::types::AttributeValue::Bool(true)
    );

    let body = json!({"email": email, "password": STRONG_PASSWORD});
    let restored = t.post(shared::api::account::handle, "/auth/me/restore", body).await;
    assert_eq!(restored.status, 200, "{:?}", restored.body);
    assert!(!t.item(&pk, "PAYMENT").await.unwrap().contains_key("abandon_requested"));
    cleanup::run(t.app, &run_meta()).await;
    assert_eq!(status_of(&t, &unpaid).await, "requires_payment");
    let intent = s(&t.item(&pk, "PAYMENT").await.unwrap(), "stripe_payment_intent_id");
    assert_ne!(t.stand_in().object(&intent).unwrap()["status"], "canceled");
}
