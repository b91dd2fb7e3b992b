//! Release and refund as a caller asks for them (the routes' entry points): who may, what
//! the payment's state allows, and a call on one left mid-move, which is reconciled first.
//! The moves themselves are `release`'s, `refund`'s and, for money that came back after a
//! release, `unsettled`'s; reconciliation finishes them with the same machinery, so this
//! sits above all of it.

use super::{
    outcome::{RefundAnswer, RefundOutcome, RefundRequest, ReleaseOutcome},
    payment::{Payment, PaymentStatus, for_payer_side, get, mover_checks},
    reconcile::{self, Reconciled},
    refund::{in_progress, refund_held},
    release::{already, disputed, release_held},
    unsettled,
};
use crate::{caller::RequestMeta, identity::auth::Principal, payments::PaymentError, payments::PaymentServices};

/// `POST /payments/{id}/release`.
pub async fn release(
    app: &PaymentServices,
    principal: &Principal,
    payment_id: &str,
    meta: &RequestMeta,
) -> Result<ReleaseOutcome, PaymentError> {
    let payment = for_payer_side(app, principal, payment_id).await?;
    match payment.status {
        PaymentStatus::Released if unsettled::has_unsettled(&payment) => {
            if payment.dispute_blocks() {
                return Err(disputed());
            }
            let still_may_move = mover_checks(app, principal, &payment).await?;
            unsettled::release(app, payment, still_may_move, principal.user_id(), meta).await
        }
        PaymentStatus::Released => Ok(already(&payment)),
        PaymentStatus::Releasing => after_reconciling(app, &payment, meta).await,
        PaymentStatus::Succeeded => release_held(app, principal, payment, meta).await,
        PaymentStatus::Refunding => {
            Err(PaymentError::Conflict("a refund of this payment is unresolved; it cannot be released now".into()))
        }
        _ => Err(PaymentError::PaymentNotSucceeded),
    }
}

/// A call on a payment already `releasing`: reconciled if it has waited long enough,
/// otherwise it is somebody else's release in flight.
async fn after_reconciling(
    app: &PaymentServices,
    payment: &Payment,
    meta: &RequestMeta,
) -> Result<ReleaseOutcome, PaymentError> {
    // Boxed: reconciliation's future is large, and it nests inside this one.
    match Box::pin(reconcile::payment(app, payment, meta)).await? {
        Reconciled::NotDue => Err(PaymentError::ReleaseInProgress),
        Reconciled::Pending => Ok(ReleaseOutcome::Pending),
        Reconciled::Released { transfer_id, found } => {
            Ok(ReleaseOutcome::Released { transfer_id, already_released: found })
        }
        Reconciled::ReturnedToSucceeded(error) => Err(error),
        Reconciled::Settled => Err(PaymentError::PaymentNotSucceeded),
    }
}

/// `POST /payments/{id}/refund`.
pub async fn refund(
    app: &PaymentServices,
    principal: &Principal,
    payment_id: &str,
    amount: Option<i64>,
    reason: Option<&str>,
    request: Option<&RefundRequest>,
    meta: &RequestMeta,
) -> Result<RefundOutcome, PaymentError> {
    let mut payment = get(app, principal, payment_id).await?;
    // Of a released payment, only what came back to the platform is left to refund.
    let unsettled = unsettled::has_unsettled(&payment);
    let left = if unsettled { payment.amount_unsettled } else { payment.releasable_amount() };
    let still_may_move = if payment.is_payer_side(principal) {
        mover_checks(app, principal, &payment).await?
    } else {
        // The provider's owner may give back everything that is left, never a part of it
        // (a part would decide what the provider keeps).
        let owner = payment.provider_user_id == principal.user_id();
        if !owner || amount.is_some_and(|a| a != left) {
            return Err(PaymentError::Forbidden);
        }
        Vec::new()
    };
    if let Some(request) = request {
        if let Some(answer) = RefundAnswer::replay(app, payment_id, request).await? {
            return Ok(RefundOutcome::Replayed(answer));
        }
        // This very request is in flight (an earlier try whose answer was lost): drive it,
        // then answer as it stands.
        if payment.status == PaymentStatus::Refunding
            && payment.refund_request.as_deref() == Some(request.key_digest.as_str())
        {
            if payment.refund_request_hash.as_deref() != Some(request.request_hash.as_str()) {
                return Err(PaymentError::IdempotencyMismatch);
            }
            Box::pin(reconcile::payment(app, &payment, meta)).await?;
            if let Some(answer) = RefundAnswer::replay(app, payment_id, request).await? {
                return Ok(RefundOutcome::Replayed(answer));
            }
            payment = Payment::find(app, payment_id).await?.ok_or(PaymentError::NotFound)?;
            if payment.refund_request.as_deref() == Some(request.key_digest.as_str()) {
                return Ok(RefundOutcome::Pending(payment));
            }
            // Stripe made nothing under it: this request is made again, as if new.
        }
    }
    if unsettled {
        return unsettled::refund(app, payment, amount, request, still_may_move, principal.user_id(), meta).await;
    }
    if payment.status == PaymentStatus::Refunding {
        // Drive the unresolved refund if it is due; this call's own refund is another one.
        Box::pin(reconcile::payment(app, &payment, meta)).await?;
        return Err(in_progress());
    }
    refund_held(app, payment, amount, reason, request, still_may_move, Some(principal.user_id()), meta).await
}
