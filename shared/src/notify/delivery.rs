//! The notifier's work: outbox items from the table's stream, sent through SES and SNS.
//!
//! Delivery is at least once (the stream and its retries may hand over an item again), so
//! each send is guarded by a delivery record, `PK = OUTBOX#{id}`, `SK = DELIVERY`, taken
//! with a conditional put before sending (`sending`, with a lease) and marked `sent` with the
//! provider's message id after. A redelivered item finds `sent` and sends nothing; one whose
//! earlier attempt crashed mid-send is sent again once the lease has passed (the only way a
//! message can go twice, and only when a worker dies between the send and its record).
//! Failed sends give the record back and report the item as a batch item failure, so the
//! event source mapping retries it (and, after its retries, parks the batch in the
//! dead-letter queue).

use aws_lambda_events::event::{
    dynamodb::{Event, EventRecord},
    streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse},
};
use serde::{Deserialize, Serialize};

use serde_json::{Value, json};

use super::Channels;
use super::{
    EmailKind, NotifyError,
    preferences::{Category, Channel, Preferences},
    push, render,
    suppression::Suppression,
    unsubscribe,
};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::User,
    outbox::{self, Message, OutboxItem},
    services::Services,
    store::{Change, StoreError, av},
    time,
};

const DELIVERY_SK: &str = "DELIVERY";
/// How long a sending attempt holds its item before another may try.
const LEASE_SECONDS: i64 = 60;
const KEEP_DAYS: i64 = 7;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("not an outbox item: {0}")]
    Malformed(String),
    #[error("another attempt is sending it")]
    InFlight,
    #[error(transparent)]
    Send(#[from] NotifyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How one item came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Sent now; the provider's message id.
    Sent(String),
    /// Not sent, on purpose (suppressed address, preference off, no device): why.
    Skipped(&'static str),
    /// Done before (a redelivery): nothing done.
    AlreadySent,
}

/// What sending one message came to.
enum Sent {
    Sent(String),
    Skipped(&'static str),
}

#[derive(Debug, Serialize, Deserialize)]
struct DeliveryRecord {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    status: String,
    lease_until: i64,
    channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sent_at: Option<String>,
    ttl: i64,
}

/// Sends `item` unless it was sent before.
#[tracing::instrument(skip_all, fields(outbox_id = %item.id, channel = tracing::field::Empty))]
pub async fn deliver(app: &dyn Channels, item: &OutboxItem) -> Result<Delivered, DeliveryError> {
    let table = app.services().table();
    // A sealed email or SMS is opened here, in memory: nothing opened is ever written back
    // (a retry opens it again).
    let message = match &item.message {
        Message::Sealed { .. } => {
            let opened = match app.services().outbox_sealer().await {
                Ok(sealer) => item.message.open(&sealer, &item.id),
                Err(error) => Err(StoreError::from(error)),
            };
            match opened {
                Ok(message) => message,
                // One sent before its key was retired needs no opening: it is done.
                Err(error) => {
                    let record: Option<DeliveryRecord> = table.get(&item.pk, DELIVERY_SK).await?;
                    if record.is_some_and(|r| r.status == "sent" || r.status == "skipped") {
                        settle(table, item).await;
                        return Ok(Delivered::AlreadySent);
                    }
                    return Err(error.into());
                }
            }
        }
        public => public.clone(),
    };
    tracing::Span::current().record("channel", message.channel());
    let now = time::now();
    let record = DeliveryRecord {
        pk: item.pk.clone(),
        sk: DELIVERY_SK.to_owned(),
        status: "sending".into(),
        lease_until: now.unix_timestamp() + LEASE_SECONDS,
        channel: message.channel().to_owned(),
        provider_message_id: None,
        sent_at: None,
        ttl: time::epoch_seconds(now + time::Duration::days(KEEP_DAYS)),
    };
    let claim = table
        .put_item_if(
            &record,
            "attribute_not_exists(PK) OR (#status = :sending AND lease_until < :now)",
            &[("#status", "status")],
            &[(":sending", av::s("sending")), (":now", av::n(now.unix_timestamp()))],
        )
        .await;
    match claim {
        Ok(()) => {}
        Err(StoreError::ConditionFailed) => {
            let existing: Option<DeliveryRecord> = table.get(&item.pk, DELIVERY_SK).await?;
            return match existing.map(|r| r.status) {
                Some(status) if status == "sent" || status == "skipped" => {
                    settle(table, item).await;
                    Ok(Delivered::AlreadySent)
                }
                _ => Err(DeliveryError::InFlight),
            };
        }
        Err(e) => return Err(e.into()),
    }

    match send(app, &message).await {
        Ok(sent) => {
            let (status, detail, delivered) = match sent {
                Sent::Sent(id) => ("sent", id.clone(), Delivered::Sent(id)),
                Sent::Skipped(reason) => ("skipped", reason.to_owned(), Delivered::Skipped(reason)),
            };
            let done = Change::new(&item.pk, DELIVERY_SK)
                .update("SET #status = :status, provider_message_id = :detail, sent_at = :at")
                .name("#status", "status")
                .value(":status", av::s(status))
                .value(":detail", av::s(&detail))
                .value(":at", av::s(time::rfc3339(time::now())));
            if let Err(error) = table.update_item(done).await {
                // Sent but not recorded: a redelivery after the lease would send it again.
                tracing::error!(%error, "message sent but its delivery record not updated");
            }
            tracing::info!(status, %detail, "message delivered");
            settle(table, item).await;
            Ok(delivered)
        }
        Err(error) => {
            let give_back = Change::new(&item.pk, DELIVERY_SK)
                .condition("#status = :sending")
                .name("#status", "status")
                .value(":sending", av::s("sending"));
            if let Err(store) = table.transact(vec![table.delete(give_back)?]).await {
                tracing::warn!(error = %store, "delivery record not given back; it expires with its lease");
            }
            Err(error.into())
        }
    }
}

/// Takes a delivered item off the unsent queue. Best effort: should it stay, the cleanup
/// finds it delivered and takes it off then.
async fn settle(table: &crate::store::Table, item: &OutboxItem) {
    if item.unsent_queue.is_some()
        && let Err(error) = OutboxItem::settle(table, &item.pk).await
    {
        tracing::warn!(%error, "delivered item left on the unsent queue");
    }
}

/// Sends one message through its channel, unless the recipient's address is suppressed or
/// their preferences turn it off.
async fn send(app: &dyn Channels, message: &Message) -> Result<Sent, NotifyError> {
    match message {
        Message::Email { template, to, context } => send_email(app, *template, to, context).await,
        Message::Sms { to, text, user_id, category } => {
            if let Some(user_id) = user_id
                && !allowed(app.services(), user_id, Channel::Sms, *category).await?
            {
                return Ok(Sent::Skipped("preference"));
            }
            Ok(Sent::Sent(app.events().send_sms(to, text).await?))
        }
        Message::Push { user_id, category, title, body, data } => {
            if !allowed(app.services(), user_id, Channel::Push, *category).await? {
                return Ok(Sent::Skipped("preference"));
            }
            let outcome = push::send_to_user(app, user_id, title, body, data).await?;
            if outcome.sent.is_empty() {
                return Ok(Sent::Skipped("no_device"));
            }
            Ok(Sent::Sent(outcome.sent.join(",")))
        }
        Message::Event { event_type, body } => Ok(Sent::Sent(app.events().publish_json(event_type, body).await?)),
        Message::Sealed { .. } => Err(NotifyError::Task("a sealed message reached send unopened".into())),
        Message::Task(task) => {
            let follow_ups = task.run(app.services()).await.map_err(|e| NotifyError::Task(e.to_string()))?;
            // What the task committed goes out now; its own stream record is the backstop
            // (and finds it sent).
            for item in &follow_ups {
                if let Err(error) = Box::pin(deliver(app, item)).await {
                    tracing::warn!(%error, outbox_id = %item.id, "follow-up not sent yet; the stream retries it");
                }
            }
            Ok(Sent::Sent(format!("task:{}", task.name())))
        }
    }
}

async fn allowed(app: &Services, user_id: &str, channel: Channel, category: Category) -> Result<bool, NotifyError> {
    if category == Category::Security {
        return Ok(true);
    }
    let preferences = Preferences::load(app.table(), user_id).await.map_err(store)?;
    Ok(preferences.allows(channel, category))
}

fn store(error: StoreError) -> NotifyError {
    NotifyError::Task(format!("table: {error}"))
}

/// An email, unless its address is suppressed (audited in the owner's organisation) or,
/// for non-essential mail, the owner turned it off; non-essential mail that goes carries
/// its unsubscribe link.
async fn send_email(app: &dyn Channels, template: EmailKind, to: &str, context: &Value) -> Result<Sent, NotifyError> {
    let table = app.services().table();
    let category = template.category();
    if let Some(suppression) = Suppression::find(table, to).await.map_err(store)? {
        if let Some(owner) = User::find_by_email(table, to).await.map_err(store)? {
            let meta = RequestMeta { request_id: uuid::Uuid::now_v7().to_string(), ..RequestMeta::default() };
            let entry = AuditEntry::new("email.not_sent", AuditStatus::Failure, &owner.org_id, &meta)
                .target(&owner.user_id)
                .details(json!({ "reason": "suppressed", "suppressed_for": suppression.reason, "email": template }));
            app.services().audit().record(&entry).await.map_err(store)?;
        }
        tracing::warn!(email = ?template, "address suppressed; email not sent");
        return Ok(Sent::Skipped("suppressed"));
    }
    let mut context = context.clone();
    if category != Category::Security {
        let Some(owner) = User::find_by_email(table, to).await.map_err(store)? else {
            // Non-essential mail only ever goes to account holders.
            return Ok(Sent::Skipped("no_account"));
        };
        if !allowed(app.services(), &owner.user_id, Channel::Email, category).await? {
            return Ok(Sent::Skipped("preference"));
        }
        let signer = unsubscribe::signer(app.services()).await.map_err(|e| NotifyError::Task(e.to_string()))?;
        let token = unsubscribe::issue(&signer, &owner.user_id, Channel::Email, category);
        if let Some(fields) = context.as_object_mut() {
            // In the fragment: it never reaches a server log or a Referer.
            let link = format!("{}/unsubscribe#token={token}", app.services().settings().frontend_url);
            fields.insert("unsubscribe_link".into(), Value::String(link));
            let one_click =
                format!("{}{}?token={token}", app.services().settings().api_url(), unsubscribe::ONE_CLICK_PATH);
            fields.insert("one_click_unsubscribe".into(), Value::String(one_click));
        }
    }
    Ok(Sent::Sent(app.mailer().send(&render(template, to, &context)?).await?))
}

/// The outbox item in a stream record's new image, if it is one.
fn outbox_item(record: &EventRecord) -> Result<Option<OutboxItem>, DeliveryError> {
    let image = &record.change.new_image;
    let is_outbox = matches!(image.get("SK"), Some(serde_dynamo::AttributeValue::S(sk)) if sk == outbox::SK);
    if record.event_name != "INSERT" || !is_outbox {
        return Ok(None);
    }
    serde_dynamo::from_item(image.clone()).map(Some).map_err(|e| DeliveryError::Malformed(e.to_string()))
}

/// The audit entry in a stream record's new image, if it is a new one.
fn new_audit_entry(record: &EventRecord) -> Result<Option<AuditEntry>, DeliveryError> {
    let image = &record.change.new_image;
    let is_audit = matches!(image.get("PK"), Some(serde_dynamo::AttributeValue::S(pk)) if pk.starts_with("AUDIT#"))
        && image.contains_key("audit_action");
    if record.event_name != "INSERT" || !is_audit {
        return Ok(None);
    }
    serde_dynamo::from_item(image.clone()).map(Some).map_err(|e| DeliveryError::Malformed(e.to_string()))
}

fn failure(sequence_number: Option<String>) -> DynamoDbBatchItemFailure {
    let mut failure = DynamoDbBatchItemFailure::default();
    failure.item_identifier = sequence_number;
    failure
}

/// One batch from the stream: new audit entries are counted toward the audit totals (all
/// together), and every outbox item is delivered (or found delivered). Records that fail are
/// reported by sequence number, so only they are retried.
pub async fn handle_batch(app: &dyn Channels, event: Event) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    let mut entries = Vec::new();
    for record in &event.records {
        let sequence = record.change.sequence_number.as_deref().unwrap_or_default();
        match new_audit_entry(record) {
            Ok(Some(entry)) => entries.push((sequence, entry)),
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, event_id = %record.event_id, "audit entry unreadable; reported for retry");
                response.batch_item_failures.push(failure(record.change.sequence_number.clone()));
            }
        }
    }
    for sequence in crate::audit::totals::count(app.services().table(), entries).await {
        response.batch_item_failures.push(failure(Some(sequence.to_owned())));
    }
    for record in &event.records {
        let outcome = match outbox_item(record) {
            Ok(Some(item)) => deliver(app, &item).await.map(Some),
            Ok(None) => Ok(None),
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            tracing::error!(%error, event_id = %record.event_id, "outbox item not delivered; reported for retry");
            response.batch_item_failures.push(failure(record.change.sequence_number.clone()));
        }
    }
    response
}

/// An SNS-triggered invocation, reduced to what the notifier reads (aws_lambda_events'
/// `sns` feature would pull serde_with and schemars into every build for two strings).
#[derive(Debug, Deserialize)]
pub struct SnsEvent {
    #[serde(rename = "Records")]
    pub records: Vec<SnsRecord>,
}

#[derive(Debug, Deserialize)]
pub struct SnsRecord {
    #[serde(rename = "Sns")]
    pub sns: SnsMessage,
}

#[derive(Debug, Deserialize)]
pub struct SnsMessage {
    #[serde(rename = "MessageId")]
    pub message_id: String,
    #[serde(rename = "Message")]
    pub message: String,
}

/// SES feedback from its SNS topic: each notification's bounces and complaints suppress
/// their addresses. An error fails the invocation, and Lambda retries it (SNS invokes
/// asynchronously); recording is idempotent per SES feedback id.
pub async fn handle_feedback(app: &Services, event: SnsEvent) -> Result<(), DeliveryError> {
    for record in event.records {
        let suppressed = super::suppression::record_feedback(app, &record.sns.message, &record.sns.message_id).await?;
        tracing::info!(suppressed, sns_message_id = %record.sns.message_id, "SES feedback recorded");
    }
    Ok(())
}
