//! Domain events on SNS: a JSON message with an `event_type` message attribute so that
//! subscribers can filter without parsing bodies.

#[cfg(feature = "sns")]
use aws_sdk_sns::{Client, error::DisplayErrorContext, types::MessageAttributeValue};
use serde::Serialize;

#[cfg(feature = "sns")]
use super::NotifyError;

#[derive(Debug, Clone, Serialize)]
pub struct DomainEvent {
    pub event_id: String,
    pub event_type: &'static str,
    pub occurred_at: String,
    pub data: serde_json::Value,
}

impl DomainEvent {
    pub fn new(event_type: &'static str, data: serde_json::Value) -> Self {
        Self {
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type,
            occurred_at: crate::time::rfc3339(crate::time::now()),
            data,
        }
    }
}

#[cfg(feature = "sns")]
#[derive(Clone, Debug)]
pub struct EventPublisher {
    client: Client,
    topic_arn: Option<String>,
}

#[cfg(feature = "sns")]
impl EventPublisher {
    pub fn new(client: Client, topic_arn: Option<String>) -> Self {
        Self { client, topic_arn }
    }

    #[tracing::instrument(skip_all, fields(event_type = event.event_type))]
    pub async fn publish(&self, event: &DomainEvent) -> Result<(), NotifyError> {
        self.publish_json(event.event_type, &serde_json::to_string(event).expect("events serialize")).await?;
        Ok(())
    }

    /// Publishes an event already serialised as `message`, with its `event_type` attribute;
    /// SNS's message id.
    pub async fn publish_json(&self, event_type: &str, message: &str) -> Result<String, NotifyError> {
        let Some(topic_arn) = &self.topic_arn else {
            // Only possible outside production (the config refuses it there).
            tracing::warn!("no EVENTS_TOPIC_ARN configured; event not published");
            return Ok(String::new());
        };
        let attribute = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(event_type)
            .build()
            .map_err(|e| NotifyError::Build(e.to_string()))?;
        let out = self
            .client
            .publish()
            .topic_arn(topic_arn)
            .message(message)
            .message_attributes("event_type", attribute)
            .send()
            .await
            .map_err(|e| NotifyError::Sns(DisplayErrorContext(&e).to_string()))?;
        Ok(out.message_id.unwrap_or_default())
    }

    /// Sends an SMS through SNS (e.g. to a provider when a payment is released); SNS's
    /// message id.
    pub async fn send_sms(&self, phone_number: &str, message: &str) -> Result<String, NotifyError> {
        let out = self
            .client
            .publish()
            .phone_number(phone_number)
            .message(message)
            .send()
            .await
            .map_err(|e| NotifyError::Sns(DisplayErrorContext(&e).to_string()))?;
        Ok(out.message_id.unwrap_or_default())
    }
}
