//! A verified Stripe event, and the writes it makes: what the webhook hands the payments
//! domain (`lifecycle`), and what it commits with the event's marker.

use aws_sdk_dynamodb::types::TransactWriteItem;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct StripeEvent {
    pub id: String,
    pub kind: String,
    pub created: i64,
    pub object: Value,
    /// The connected account the event is about, for events from the Connect endpoint.
    pub account: Option<String>,
}

impl StripeEvent {
    /// The fields we rely on, or `None` for a body that is not a Stripe event.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(body).ok()?;
        Some(Self {
            id: value["id"].as_str().filter(|id| id.starts_with("evt_") && id.len() <= 255)?.to_owned(),
            kind: value["type"].as_str()?.to_owned(),
            created: value["created"].as_i64()?,
            object: value["data"]["object"].clone(),
            account: value["account"].as_str().map(str::to_owned),
        })
    }

    /// The `account` of a body not yet verified: it decides which endpoint's secrets verify
    /// the signature (the signature covers the field, so lying about it only fails).
    pub fn claimed_account(body: &[u8]) -> Option<String> {
        // Read as `parse` reads it (a JSON value, the last of repeated keys winning), so the
        // secrets chosen and the event applied can never disagree about `account`.
        let value: Value = serde_json::from_slice(body).ok()?;
        value["account"].as_str().map(str::to_owned)
    }

    /// Whether the event is one we act on from where it came: a connected account's event
    /// (the Connect endpoint) only if it is about the account itself; our payments,
    /// transfers and subscriptions are the platform's own events.
    pub fn applies(&self) -> bool {
        match &self.account {
            Some(_) => self.kind.starts_with("account."),
            None => true,
        }
    }
}

/// The writes for one event, committed with its marker (its notifications among them, as
/// outbox items).
pub struct Effect {
    pub changes: Vec<TransactWriteItem>,
    /// Conditioned on what was read rather than on event order: if it keeps losing races,
    /// the delivery fails (Stripe redelivers) instead of being marked skipped and lost.
    pub read_dependent: bool,
    /// Recorded once the changes are written (a release's margin).
    pub measure: Option<crate::metrics::Measure>,
}

impl Effect {
    pub fn none() -> Self {
        Self { changes: Vec::new(), read_dependent: false, measure: None }
    }

    pub fn new(changes: Vec<TransactWriteItem>) -> Self {
        Self { changes, read_dependent: false, measure: None }
    }
}
