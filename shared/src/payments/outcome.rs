//! What a money move answers: a release's and a refund's outcome, and a keyed refund's
//! request and the answer kept for it. Their own module, so that everything that moves money
//! (the routes, unsettled money, the hold timers) names them without naming each other.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::payment::{Payment, PaymentStatus, refund_key};
use crate::{payments::PaymentError, services::Services};

/// What a release call achieved.
#[derive(Debug)]
pub enum ReleaseOutcome {
    /// Transferred; `already_released` when the transfer predates this call.
    Released { transfer_id: String, already_released: bool },
    /// The outcome at Stripe is unknown; the payment stays `releasing` until reconciled.
    Pending,
}

/// What a refund call achieved.
#[derive(Debug)]
pub enum RefundOutcome {
    /// Recorded: the payment as it is now.
    Done(Payment),
    /// The outcome at Stripe is unknown; the payment stays `refunding` until reconciled.
    Pending(Payment),
    /// The same request was answered before: its first answer.
    Replayed(RefundAnswer),
}

/// A refund asked for under an `Idempotency-Key`: the key's digest (what is kept) and the
/// request's (amount and reason, whatever their JSON spelling).
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub(super) key_digest: String,
    pub(super) request_hash: String,
}

impl RefundRequest {
    pub fn new(key: &str, amount: Option<i64>, reason: Option<&str>) -> Self {
        let digest = |text: &str| hex::encode(Sha256::digest(text.as_bytes()));
        Self {
            key_digest: digest(key),
            request_hash: digest(
                &serde_json::to_string(&json!({ "amount": amount, "reason": reason })).unwrap_or_default(),
            ),
        }
    }

    pub(super) fn key_digest(&self) -> &str {
        &self.key_digest
    }

    pub(super) fn request_hash(&self) -> &str {
        &self.request_hash
    }

    /// The Stripe refund's key for this request's `attempt`: each claim gets its own (so a
    /// refund that failed after Stripe took it is never replayed to its retry), and no two
    /// requests share one. Under 120 characters.
    pub(super) fn stripe_key(&self, payment_id: &str, attempt: i64) -> String {
        format!("{}:{}", refund_key(payment_id, attempt), &self.key_digest[..32])
    }
}

/// The first answer to a [`RefundRequest`], kept beside its payment for the payment's life.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundAnswer {
    #[serde(rename = "PK")]
    pub(super) pk: String,
    #[serde(rename = "SK")]
    pub(super) sk: String,
    pub(super) request_hash: String,
    pub payment_id: String,
    pub status: PaymentStatus,
    pub amount_refunded: i64,
    pub refund_id: String,
}

impl RefundAnswer {
    pub(super) fn new(
        payment_id: &str,
        key_digest: &str,
        request_hash: &str,
        status: PaymentStatus,
        amount_refunded: i64,
        refund_id: &str,
    ) -> Self {
        Self {
            pk: Payment::key(payment_id),
            sk: Self::sk(key_digest),
            request_hash: request_hash.to_owned(),
            payment_id: payment_id.to_owned(),
            status,
            amount_refunded,
            refund_id: refund_id.to_owned(),
        }
    }

    pub(super) fn sk(key_digest: &str) -> String {
        format!("REFUND_REQUEST#{key_digest}")
    }

    pub(super) async fn find(
        app: &Services,
        payment_id: &str,
        request: &RefundRequest,
    ) -> Result<Option<Self>, PaymentError> {
        Ok(app.table().get(&Payment::key(payment_id), &Self::sk(&request.key_digest)).await?)
    }

    /// The answer to `request` if it was answered: the same body replays, another is 422.
    pub(super) async fn replay(
        app: &Services,
        payment_id: &str,
        request: &RefundRequest,
    ) -> Result<Option<Self>, PaymentError> {
        match Self::find(app, payment_id, request).await? {
            Some(answer) if answer.request_hash == request.request_hash => Ok(Some(answer)),
            Some(_) => Err(PaymentError::IdempotencyMismatch),
            None => Ok(None),
        }
    }
}
