//! The transactional outbox: a message (email, SMS, domain event) is an item written in the
//! same DynamoDB transaction as the change that causes it, so a committed change always has
//! its message and a rolled-back one never does. The table's stream carries new outbox items
//! to the notifier ([`crate::notify::delivery`]), which sends them at least once and records
//! what it sent so a redelivered batch sends nothing twice.
//!
//! Item: `PK = OUTBOX#{id}`, `SK = OUTBOX`, with a TTL; the stream's event source mapping
//! filters on `SK = OUTBOX` and `eventName = INSERT` (template.yaml). Emails and SMS (which
//! carry live links and codes) are stored sealed ([`crate::seal::OUTBOX`], bound to the
//! item's id): the table, its backups and its stream hold none of them in clear, and the
//! notifier opens them in memory only. Until it is delivered
//! (or found needing nothing) an item also sits on the sparse `GSI2` queue of unsent
//! messages: what the stream gives up on (retries spent while SES was down, a notifier that
//! died holding a delivery lease) the hourly cleanup delivers from there.

use aws_sdk_dynamodb::types::TransactWriteItem;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    identity::AccountTask,
    notify::{Category, DomainEvent, EmailKind},
    seal::Sealer,
    store::{Change, StoreError, Table, av},
    time,
};

/// The sort key of outbox items: what the stream filter matches.
pub const SK: &str = "OUTBOX";
/// How long an outbox item (and its delivery record) is kept.
pub const KEEP_DAYS: i64 = 7;
/// `GSI2PK` prefix of undelivered items; the queue is spread over [`UNSENT_SHARDS`]
/// partitions, as every message passes through it.
pub const UNSENT_QUEUE: &str = "OUTBOX_UNSENT";
pub const UNSENT_SHARDS: u8 = 8;

/// The unsent-queue partition of the item with this id.
fn unsent_queue(id: &str) -> String {
    format!("{UNSENT_QUEUE}#{}", Sha256::digest(id.as_bytes())[0] % UNSENT_SHARDS)
}

/// Every partition of the unsent queue.
pub fn unsent_queues() -> impl Iterator<Item = String> {
    (0..UNSENT_SHARDS).map(|n| format!("{UNSENT_QUEUE}#{n}"))
}

/// What to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum Message {
    /// An email rendered from a template at delivery.
    Email { template: EmailKind, to: String, context: serde_json::Value },
    /// A text message through SNS; when it is for a user, their preferences apply.
    Sms {
        to: String,
        text: String,
        #[serde(default)]
        user_id: Option<String>,
        #[serde(default)]
        category: Category,
    },
    /// A push notification to every device of a user, per their preferences.
    Push { user_id: String, category: Category, title: String, body: String, data: serde_json::Value },
    /// A domain event for the events topic, already serialised.
    Event { event_type: String, body: String },
    /// Account work done out of the request (it may put further messages).
    Task(AccountTask),
    /// An email or SMS as stored: the JSON of the message, sealed for the item's id.
    Sealed { sealed: String },
}

/// An email or SMS: content that may carry a live link or code, which is therefore only
/// ever stored sealed ([`put_sealed`], [`OutboxItem::sealed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Private(Message);

impl Private {
    /// The message, to send it (never to store it).
    pub fn into_message(self) -> Message {
        self.0
    }
}

impl Message {
    pub fn email(template: EmailKind, to: &str, context: serde_json::Value) -> Private {
        Private(Self::Email { template, to: to.to_owned(), context })
    }

    /// An SMS to a user's phone about `category`.
    pub fn sms(to: &str, text: impl Into<String>, user_id: &str, category: Category) -> Private {
        Private(Self::Sms { to: to.to_owned(), text: text.into(), user_id: Some(user_id.to_owned()), category })
    }

    /// The message to send: itself, or, sealed, opened with `sealer` for item `id`.
    pub fn open(&self, sealer: &Sealer, id: &str) -> Result<Message, StoreError> {
        let Self::Sealed { sealed } = self else { return Ok(self.clone()) };
        let json = sealer.open(sealed, id)?;
        let message: Message = serde_json::from_slice(&json)
            .map_err(|e| StoreError::Dynamo(format!("sealed outbox message is not a message: {e}")))?;
        if matches!(message, Self::Sealed { .. }) {
            return Err(StoreError::Dynamo("a sealed outbox message seals another".into()));
        }
        Ok(message)
    }

    pub fn push(
        user_id: &str,
        category: Category,
        title: impl Into<String>,
        body: impl Into<String>,
        data: serde_json::Value,
    ) -> Self {
        Self::Push { user_id: user_id.to_owned(), category, title: title.into(), body: body.into(), data }
    }

    pub fn event(event: &DomainEvent) -> Self {
        Self::Event {
            event_type: event.event_type.to_owned(),
            body: serde_json::to_string(event).expect("events serialize"),
        }
    }

    /// The channel, for logs and metrics.
    pub fn channel(&self) -> &'static str {
        match self {
            Self::Email { .. } => "email",
            Self::Sms { .. } => "sms",
            Self::Push { .. } => "push",
            Self::Event { .. } => "event",
            Self::Task(_) => "task",
            Self::Sealed { .. } => "sealed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub id: String,
    pub message: Message,
    pub created_at: String,
    pub ttl: i64,
    /// The unsent queue, until delivered.
    #[serde(rename = "GSI2PK", default, skip_serializing_if = "Option::is_none")]
    pub unsent_queue: Option<String>,
    /// When it was last tried: the queue's order.
    #[serde(rename = "GSI2SK", default, skip_serializing_if = "Option::is_none")]
    pub last_tried: Option<String>,
}

impl OutboxItem {
    /// An item for an event, a push or a task (emails and SMS are [`OutboxItem::sealed`]).
    pub fn new(message: Message) -> Self {
        debug_assert!(!matches!(message, Message::Email { .. } | Message::Sms { .. }), "emails and SMS are sealed");
        Self::with_id(uuid::Uuid::now_v7().to_string(), message)
    }

    /// An item for an email or SMS, its content sealed for the item's id.
    pub fn sealed(message: Private, sealer: &Sealer) -> Result<Self, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let json = serde_json::to_vec(&message.0).expect("messages serialize");
        let sealed = sealer.seal(&json, &id)?;
        Ok(Self::with_id(id, Message::Sealed { sealed }))
    }

    fn with_id(id: String, message: Message) -> Self {
        let now = time::now();
        Self {
            pk: format!("OUTBOX#{id}"),
            sk: SK.to_owned(),
            unsent_queue: Some(unsent_queue(&id)),
            id,
            message,
            created_at: time::rfc3339(now),
            last_tried: Some(time::rfc3339(now)),
            ttl: time::epoch_seconds(now + time::Duration::days(KEEP_DAYS)),
        }
    }

    /// Takes the item off the unsent queue: it was delivered, or needs nothing.
    pub async fn settle(table: &Table, pk: &str) -> Result<(), StoreError> {
        let change = Change::new(pk, SK).update("REMOVE GSI2PK, GSI2SK").condition("attribute_exists(GSI2PK)");
        match table.update_item(change).await {
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Moves the item to the back of the unsent queue after a failed try.
    pub async fn tried(table: &Table, pk: &str) -> Result<(), StoreError> {
        let change = Change::new(pk, SK)
            .update("SET GSI2SK = :now")
            .condition("attribute_exists(GSI2PK)")
            .value(":now", av::s(time::rfc3339(time::now())));
        match table.update_item(change).await {
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// The transaction item that puts it, for the change's own transaction.
    pub fn put(&self, table: &Table) -> Result<TransactWriteItem, StoreError> {
        table.put_new(self)
    }
}

/// `message` as a transaction item, ready to join the change that causes it.
pub fn put(table: &Table, message: Message) -> Result<TransactWriteItem, StoreError> {
    OutboxItem::new(message).put(table)
}

/// An email or SMS as a transaction item, sealed.
pub fn put_sealed(table: &Table, sealer: &Sealer, message: Private) -> Result<TransactWriteItem, StoreError> {
    OutboxItem::sealed(message, sealer)?.put(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_an_item() {
        let event = DomainEvent::new("payment.released", serde_json::json!({"payment_id": "p1"}));
        for message in [
            Message::push(
                "u1",
                Category::Payments,
                "Paid",
                "€10 is on its way",
                serde_json::json!({"payment_id": "p1"}),
            ),
            Message::event(&event),
            Message::Task(AccountTask::SendPasswordReset {
                email: "a@example.com".into(),
                origin: crate::caller::Origin {
                    request_id: "r1".into(),
                    client_request_id: None,
                    source_ip: Some("192.0.2.1".into()),
                    user_agent: None,
                },
            }),
        ] {
            let item = OutboxItem::new(message.clone());
            let stored: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> =
                serde_dynamo::to_item(&item).unwrap();
            assert!(matches!(stored.get("SK"), Some(aws_sdk_dynamodb::types::AttributeValue::S(sk)) if sk == "OUTBOX"));
            let back: OutboxItem = serde_dynamo::from_item(stored).unwrap();
            assert_eq!(back, item);
            assert!(back.pk.starts_with("OUTBOX#"));
        }
    }

    fn sealer() -> Sealer {
        use base64::Engine;
        let key = crate::secrets::EncryptionKey {
            kid: "k1".into(),
            key: base64::engine::general_purpose::STANDARD.encode([9u8; 32]).into(),
        };
        Sealer::new(&[key], crate::seal::OUTBOX).unwrap()
    }

    #[test]
    fn emails_and_sms_are_stored_sealed_and_open_for_their_own_item_only() {
        let sealer = sealer();
        for private in [
            Message::email(
                EmailKind::ResetPassword,
                "a@example.com",
                serde_json::json!({"link": "https://x/r#token=tok123"}),
            ),
            Message::sms("+14155550123", "Your code is 482913", "u1", Category::Security),
        ] {
            let item = OutboxItem::sealed(private.clone(), &sealer).unwrap();
            let stored: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> =
                serde_dynamo::to_item(&item).unwrap();
            let text = format!("{stored:?}");
            for live in ["tok123", "482913", "a@example.com", "+14155550123"] {
                assert!(!text.contains(live), "{live} is in the stored item: {text}");
            }
            let back: OutboxItem = serde_dynamo::from_item(stored).unwrap();
            assert_eq!(back.message.open(&sealer, &back.id).unwrap(), private.clone().into_message());
            let other = OutboxItem::sealed(private, &sealer).unwrap();
            assert!(back.message.open(&sealer, &other.id).is_err(), "moved to another item, it does not open");
        }
    }
}
