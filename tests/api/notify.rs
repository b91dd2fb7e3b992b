//! The notifier: outbox items arrive as DynamoDB stream records (in the shape Lambda's event
//! source mapping delivers them) and go out through SES and SNS (moto) exactly once per item,
//! however often a record is redelivered; failures are reported per item.

use crate::common;

use crate::common::{TestApp, s, unique_email};
use aws_lambda_events::event::dynamodb::Event;
use serde_json::{Value, json};
use shared::{
    notify::{Category, delivery::handle_batch},
    outbox::{Message, OutboxItem},
};

/// A stream record for `item` as the event source mapping hands it over.
fn record(item: &Value, sequence: &str) -> Value {
    json!({
        "eventID": uuid::Uuid::new_v4().simple().to_string(),
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1795262400,
            "Keys": {"PK": item["PK"], "SK": item["SK"]},
            "NewImage": item,
            "SequenceNumber": sequence,
            "SizeBytes": 256,
            "StreamViewType": "NEW_IMAGE"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-11-23T00:00:00.000"
    })
}

/// An outbox item as its stream image (DynamoDB JSON).
fn image(item: &OutboxItem) -> Value {
    let attributes: serde_dynamo::Item = serde_dynamo::to_item(item).unwrap();
    serde_json::to_value(attributes).unwrap()
}

fn batch(records: Vec<Value>) -> Event {
    serde_json::from_value(json!({ "Records": records })).expect("a DynamoDB stream event")
}

fn failed(response: &aws_lambda_events::event::streams::DynamoDbEventResponse) -> Vec<String> {
    response.batch_item_failures.iter().filter_map(|f| f.item_identifier.clone()).collect()
}

#[tokio::test]
async fn an_outbox_item_is_sent_once_however_often_its_record_arrives() {
    let t = TestApp::new().await;
    let to = unique_email("outbox");
    let item = t.sealed_verification(&to).await;
    let records = vec![record(&image(&item), "100")];
    assert!(failed(&handle_batch(t.app, batch(records.clone())).await).is_empty());
    assert!(failed(&handle_batch(t.app, batch(records.clone())).await).is_empty(), "a redelivery is fine");
    let sent = t.emails_to(&to).await;
    assert_eq!(sent.len(), 1, "sent once");
    assert_eq!(sent[0].token_for("/verify-email").as_deref(), Some("abc"));
    let delivery = t.item(&item.pk, "DELIVERY").await.expect("a delivery record");
    assert_eq!((s(&delivery, "status"), s(&delivery, "channel")), ("sent".into(), "email".into()));
    assert!(!s(&delivery, "provider_message_id").is_empty());
}

#[tokio::test]
async fn one_bad_record_fails_alone_and_the_rest_of_the_batch_goes_out() {
    let t = TestApp::new().await;
    let to = unique_email("batch");
    let phone = format!("+1415{:07}", u128::from_be_bytes(*uuid::Uuid::new_v4().as_bytes()) % 10_000_000);
    let email = t.sealed_verification(&to).await;
    let sms = Message::sms(&phone, "Your code is 123456", "some-user", Category::Security);
    let sms = OutboxItem::sealed(sms, &t.app.outbox_sealer().await.unwrap()).unwrap();
    let poisoned = json!({"PK": {"S": "OUTBOX#poison"}, "SK": {"S": "OUTBOX"}, "message": {"S": "not a message"}});
    let not_outbox = json!({"PK": {"S": "USER#x"}, "SK": {"S": "PROFILE"}});
    let response = handle_batch(
        t.app,
        batch(vec![
            record(&image(&email), "1"),
            record(&poisoned, "2"),
            record(&not_outbox, "3"),
            record(&image(&sms), "4"),
        ]),
    )
    .await;
    assert_eq!(failed(&response), ["2"], "only the poisoned record is retried");
    assert_eq!(t.emails_to(&to).await.len(), 1);
    assert_eq!(t.sms_to(&phone).await, ["Your code is 123456"]);
}

#[tokio::test]
async fn while_ses_refuses_nothing_is_lost_and_after_it_recovers_each_email_goes_once() {
    // SES refuses mail from an identity it has not verified: the notifier of this app is
    // misconfigured until it is replaced by a healthy one.
    let refusing = TestApp::with_env(&[("EMAIL_FROM", "nobody@unverified.invalid")]).await;
    let healthy = TestApp::new().await;
    let addresses: Vec<String> = (0..3).map(|i| unique_email(&format!("pending{i}"))).collect();
    let mut items = Vec::new();
    for address in &addresses {
        items.push(healthy.sealed_verification(address).await);
    }
    let records: Vec<Value> = items.iter().enumerate().map(|(i, item)| record(&image(item), &i.to_string())).collect();

    let response = handle_batch(refusing.app, batch(records.clone())).await;
    assert_eq!(failed(&response), ["0", "1", "2"], "every item is reported for retry");
    for (item, to) in items.iter().zip(&addresses) {
        assert!(refusing.emails_to(to).await.is_empty());
        assert!(refusing.item(&item.pk, "DELIVERY").await.is_none(), "the claim was given back");
    }

    // The retries (the same records again, and again) after SES recovered.
    for _ in 0..2 {
        assert!(failed(&handle_batch(healthy.app, batch(records.clone())).await).is_empty());
    }
    for to in &addresses {
        assert_eq!(healthy.emails_to(to).await.len(), 1, "{to} got its email once");
    }
}

#[tokio::test]
async fn events_go_to_the_topic_with_their_type() {
    let t = TestApp::new().await;
    let event =
        shared::notify::DomainEvent::new("payment.refunded", json!({"payment_id": uuid::Uuid::new_v4().to_string()}));
    let item = OutboxItem::new(Message::event(&event));
    assert!(failed(&handle_batch(t.app, batch(vec![record(&image(&item), "9")])).await).is_empty());
    let published = t.published_events().await;
    let found: Vec<_> = published.iter().filter(|(_, m)| m["event_id"] == event.event_id.as_str()).collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "payment.refunded");
}

/// Waits (bounded) until `to` has at least one email; the notifier runs out of band.
async fn wait_for_email(t: &TestApp, to: &str) -> usize {
    for _ in 0..300 {
        let count = t.emails_to(to).await.len();
        if count > 0 {
            return count;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    0
}

/// Commits `items` (and nothing else) in one transaction.
async fn commit(t: &TestApp, items: &[&OutboxItem]) {
    let table = t.app.table();
    let puts = items.iter().map(|i| i.put(table).unwrap()).collect();
    table.transact(puts).await.expect("committed");
}

#[tokio::test]
async fn a_committed_outbox_item_goes_out_through_the_stream_and_a_rolled_back_one_never_does() {
    let t = TestApp::new().await;
    // A change that fails its condition, with its message in the same transaction.
    let rolled_back = unique_email("rolled-back");
    let doomed = t.sealed_verification(&rolled_back).await;
    let table = t.app.table();
    let guard = json!({"PK": format!("EMAIL#{}", unique_email("taken")), "SK": "EMAIL"});
    table.put_item(&guard).await.unwrap();
    let failed_change = table.transact(vec![table.put_new(&guard).unwrap(), doomed.put(table).unwrap()]).await;
    assert!(failed_change.is_err(), "the change lost its condition");

    // A committed one after it: once it has arrived, the stream has passed the other point.
    let committed = unique_email("committed");
    commit(&t, &[&t.sealed_verification(&committed).await]).await;
    assert_eq!(wait_for_email(&t, &committed).await, 1, "the stream poller fed the notifier");
    assert!(t.emails_to(&rolled_back).await.is_empty(), "nothing for a rolled-back change");
    assert!(t.item(&doomed.pk, "OUTBOX").await.is_none());
}

#[tokio::test]
async fn a_poisoned_outbox_item_lands_in_the_dead_letter_queue_and_the_rest_is_delivered() {
    let t = TestApp::new().await;
    // An outbox item whose message no notifier can read (a future message kind, say).
    let poison = json!({"PK": format!("OUTBOX#poison-{}", uuid::Uuid::new_v4()), "SK": "OUTBOX",
                        "message": {"channel": "carrier_pigeon"}});
    let after = unique_email("after-poison");
    let table = t.app.table();
    let good = t.sealed_verification(&after).await;
    table.transact(vec![table.put_new(&poison).unwrap(), good.put(table).unwrap()]).await.unwrap();
    assert_eq!(wait_for_email(&t, &after).await, 1, "the batch's other message is delivered");

    let sqs = common::dead_letters_since(0).await;
    assert!(sqs.iter().any(|m| m["DDBStreamBatchInfo"]["batchSize"].as_u64() >= Some(1)), "{sqs:?}");
    assert!(t.item(poison["PK"].as_str().unwrap(), "DELIVERY").await.is_none(), "never claimed as sent");
}

/// Every flow that mails or texts a live token or code, then a full scan of the table: none
/// of them may be there in clear (tokens are stored as hashes; the outbox holds them sealed).
#[tokio::test]
async fn no_live_token_code_or_client_secret_is_left_in_the_table() {
    let t = TestApp::with_stripe(&[]).await;
    let mut live: Vec<(&str, String)> = Vec::new();

    // Verification.
    let (email, verify_token) = t.registered("sealed-verify").await;
    live.push(("verification token", verify_token.clone()));
    let verified = t.post(shared::api::verify::handle, "/auth/verify-email", json!({"token": verify_token})).await;
    assert_eq!(verified.status, 200, "{:?}", verified.body);

    // Reset.
    let forgot = t.post(shared::api::reset::handle, "/auth/forgot-password", json!({"email": email})).await;
    assert_eq!(forgot.status, 202);
    t.outbox_delivered().await;
    let reset =
        t.emails_to(&email).await.iter().rev().find_map(|e| e.token_for("/reset-password")).expect("a reset link");
    live.push(("reset token", reset));

    // Invitation.
    let (_, admin) = t.logged_in("sealed-admin").await;
    let invitee = unique_email("sealed-invitee");
    let invited = t.invite(&admin, &invitee, "member").await;
    assert_eq!(invited.status, 202, "{:?}", invited.body);
    let invitation = t.emails_to(&invitee).await[0].token_for("/accept-invitation").expect("an invitation link");
    live.push(("invitation token", invitation));

    // A phone code.
    let (_, tokens) = t.logged_in("sealed-phone").await;
    let phone = common::money::unique_phone();
    let access = tokens["access_token"].as_str().unwrap();
    let patched =
        t.authed(shared::api::account::handle, "PATCH", "/auth/me", access, &[], Some(json!({"phone": phone}))).await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    let text = t.sms_to(&phone).await.pop().expect("a code texted");
    live.push(("SMS text", text.clone()));
    let code = text.split_whitespace().next().unwrap().to_owned();
    let holding = t.items_valued(&code).await;
    assert!(holding.is_empty(), "the SMS code is in the table: {holding:?}");

    // A payment's client_secret, kept for the Idempotency-Key's replays.
    let (_, provider_id) = common::money::provider(&t, true).await;
    let (_, payer) = t.logged_in("sealed-payer").await;
    let paid = common::money::pay(&t, &payer, &provider_id, "sealed-answer", 2500).await;
    let client_secret = paid.body["client_secret"].as_str().expect("a client_secret").to_owned();
    let replayed = common::money::pay(&t, &payer, &provider_id, "sealed-answer", 2500).await;
    assert_eq!(replayed.body["client_secret"], client_secret.as_str(), "the sealed answer replays whole");
    live.push(("client_secret", client_secret));

    for (what, value) in &live {
        let holding = t.items_holding(value).await;
        assert!(holding.is_empty(), "a live {what} is in the table: {holding:?}");
    }
}
