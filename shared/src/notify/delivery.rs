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

use super::{NotifyError, render};
use crate::{
    App,
    outbox::{self, Message, OutboxItem},
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
    /// Sent before (a redelivery): nothing done.
    AlreadySent,
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
#[tracing::instrument(skip_all, fields(outbox_id = %item.id, channel = item.message.channel()))]
pub async fn deliver(app: &App, item: &OutboxItem) -> Result<Delivered, DeliveryError> {
    let table = app.table();
    let now = time::now();
    let record = DeliveryRecord {
        pk: item.pk.clone(),
        sk: DELIVERY_SK.to_owned(),
        status: "sending".into(),
        lease_until: now.unix_timestamp() + LEASE_SECONDS,
        channel: item.message.channel().to_owned(),
        provider_message_id: None,
        sent_at: None,
        ttl: time::epoch_seconds(now + time::Duration::days(KEEP_DAYS)),
    };
    let claim = table
        .client()
        .put_item()
        .table_name(table.name())
        .set_item(Some(serde_dynamo::to_item(&record).map_err(StoreError::from)?))
        .condition_expression("attribute_not_exists(PK) OR (#status = :sending AND lease_until < :now)")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":sending", av::s("sending"))
        .expression_attribute_values(":now", av::n(now.unix_timestamp()))
        .send()
        .await;
    match claim {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
            let existing: Option<DeliveryRecord> = table.get(&item.pk, DELIVERY_SK).await?;
            return match existing.map(|r| r.status) {
                Some(status) if status == "sent" => Ok(Delivered::AlreadySent),
                _ => Err(DeliveryError::InFlight),
            };
        }
        Err(e) => return Err(StoreError::Dynamo(aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string()).into()),
    }

    match send(app, &item.message).await {
        Ok(message_id) => {
            let done = Change::new(&item.pk, DELIVERY_SK)
                .update("SET #status = :sent, provider_message_id = :id, sent_at = :at")
                .name("#status", "status")
                .value(":sent", av::s("sent"))
                .value(":id", av::s(&message_id))
                .value(":at", av::s(time::rfc3339(time::now())));
            if let Err(error) = table.update_item(done).await {
                // Sent but not recorded: a redelivery after the lease would send it again.
                tracing::error!(%error, "message sent but its delivery record not updated");
            }
            tracing::info!(%message_id, "message delivered");
            Ok(Delivered::Sent(message_id))
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

/// Sends one message through its channel; the provider's message id.
async fn send(app: &App, message: &Message) -> Result<String, NotifyError> {
    match message {
        Message::Email { template, to, context } => app.mailer().send(&render(*template, to, context)?).await,
        Message::Sms { to, text } => app.events().send_sms(to, text).await,
        Message::Event { event_type, body } => app.events().publish_json(event_type, body).await,
        Message::Task(task) => {
            let follow_ups = task.run(app).await.map_err(|e| NotifyError::Task(e.to_string()))?;
            // What the task committed goes out now; its own stream record is the backstop
            // (and finds it sent).
            for item in &follow_ups {
                if let Err(error) = Box::pin(deliver(app, item)).await {
                    tracing::warn!(%error, outbox_id = %item.id, "follow-up not sent yet; the stream retries it");
                }
            }
            Ok(format!("task:{}", task.name()))
        }
    }
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

/// One batch from the stream: every outbox item is delivered (or found delivered); the ones
/// that fail are reported by sequence number, so only they are retried.
pub async fn handle_batch(app: &App, event: Event) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    for record in &event.records {
        let outcome = match outbox_item(record) {
            Ok(Some(item)) => deliver(app, &item).await.map(Some),
            Ok(None) => Ok(None),
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            tracing::error!(%error, event_id = %record.event_id, "outbox item not delivered; reported for retry");
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = record.change.sequence_number.clone();
            response.batch_item_failures.push(failure);
        }
    }
    response
}
