//! A payment's hold timer, written with the success that holds it: its own module, so that
//! what records a success (the payments' event rules) needs nothing of the cleanup's pass.

use aws_sdk_dynamodb::types::TransactWriteItem;
use serde::{Deserialize, Serialize};

use crate::{services::Services, store::StoreError, time};

/// Hold timers, by when their next step is due.
pub const HOLD_QUEUE: &str = "HOLD";
pub(super) const SK: &str = "HOLD";
/// How long before the auto-refund both sides are told.
pub const WARNING: time::Duration = time::Duration::days(7);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Step {
    Warn,
    Refund,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Timer {
    #[serde(rename = "PK")]
    pub(super) pk: String,
    #[serde(rename = "SK")]
    pub(super) sk: String,
    pub(super) payment_id: String,
    pub(super) step: Step,
    /// When the payment succeeded (epoch seconds): the refund is due `HOLD_MAX_DAYS` after.
    pub(super) held_since: i64,
    #[serde(rename = "GSI2PK", default, skip_serializing_if = "Option::is_none")]
    pub(super) queue: Option<String>,
    #[serde(rename = "GSI2SK", default, skip_serializing_if = "Option::is_none")]
    pub(super) due: Option<String>,
}

fn key(payment_id: &str) -> String {
    format!("HOLD#{payment_id}")
}

/// The timer for a payment that succeeds at `held_since`: a write to join the success's own
/// transaction. The warning is due 7 days before the refund (at once if the hold is shorter).
pub fn start(
    app: &Services,
    payment_id: &str,
    held_since: ::time::OffsetDateTime,
) -> Result<TransactWriteItem, StoreError> {
    let refund_at = held_since + time::Duration::days(app.settings().hold_max_days);
    let warn_at = (refund_at - WARNING).max(held_since);
    app.table().put(
        &Timer {
            pk: key(payment_id),
            sk: SK.to_owned(),
            payment_id: payment_id.to_owned(),
            step: Step::Warn,
            held_since: held_since.unix_timestamp(),
            queue: Some(HOLD_QUEUE.to_owned()),
            due: Some(time::rfc3339(warn_at)),
        },
        None,
    )
}
