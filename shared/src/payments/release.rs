//! Release: held funds go to the provider's connected account as one Stripe transfer.
//!
//! The protocol of DESIGN.md: conditional `succeeded → releasing` (of any number of
//! concurrent calls, one wins), the transfer with the idempotency key `release:{payment_id}:{attempt}`,
//! conditional `releasing → released`. Only a definite refusal from Stripe (a 4xx, or no
//! call made at all) returns the payment to `succeeded`. Any unknown outcome (timeout, 5xx,
//! lost connection, the deadline) leaves it `releasing` on the work queue: the transfer may
//! exist, and [`super::reconcile`] looks it up by `transfer_group` before anything is retried.
//!
//! The amount is what refunds have left by Stripe's list of refunds, the truth: a dashboard
//! refund whose webhook is still on its way counts, one that failed does not, and one still
//! `pending` refuses the release until it settles.

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use serde_json::json;

use super::{
    Currency,
    gateway::{NewTransfer, RefundRecord, Stripe},
    payment::{
        NOT_HELD_BY_DISPUTE, Payment, PaymentStatus, RELEASING_QUEUE, RefundFailure, amount_refunded_is, mover_checks,
        number_is, refund_failed_notice, refunded_elsewhere, release_key, return_to_succeeded, transition,
    },
    provider::Provider,
};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::auth::Principal,
    notify::{Category, DomainEvent},
    outbox::{self, Message},
    payments::PaymentError,
    payments::PaymentServices,
    services::Services,
    store::{StoreError, av},
    time,
};

pub use super::outcome::ReleaseOutcome;

/// Releases a held (`succeeded`) payment for `principal`, who may move it (the caller has
/// checked the payment's status; `super::moves::release` is the route's entry).
pub(super) async fn release_held(
    app: &PaymentServices,
    principal: &Principal,
    payment: Payment,
    meta: &RequestMeta,
) -> Result<ReleaseOutcome, PaymentError> {
    let payment_id = payment.payment_id.clone();
    let payment_id = payment_id.as_str();
    if payment.dispute_blocks() {
        return Err(disputed());
    }
    let still_may_move = mover_checks(app, principal, &payment).await?;
    let provider =
        Provider::find(app, &payment.provider_id).await?.ok_or_else(|| PaymentError::internal("provider missing"))?;
    if provider.stripe_account_id.is_none() {
        return Err(PaymentError::OnboardingRequired);
    }
    let stripe = app.stripe(meta.deadline).await?;
    if !stripe.has_time() {
        return Err(PaymentError::PaymentsUnavailable);
    }
    let provider = provider.recheck_onboarding(app, &stripe).await?;
    let Some(destination) = provider.payout_destination().map(str::to_owned) else {
        return Err(PaymentError::OnboardingRequired);
    };
    if !stripe.has_time() {
        return Err(PaymentError::PaymentsUnavailable);
    }
    // Stripe's list of refunds is the truth: one made in the dashboard counts before its
    // webhook arrives, one that failed no longer counts, and one still pending holds the
    // release (it may yet fail, and the provider would then be owed more). Read beside the
    // charge and Stripe's fee on it, in parallel.
    let pi = payment.stripe_payment_intent_id.as_str();
    let (found, refunds) = tokio::try_join!(stripe.charge_with_fee(pi), stripe.refunds_for(pi))?;
    let stripe_fee = found.stripe_fee;
    let (true, Some(charge)) = (found.succeeded, found.charge.or_else(|| payment.stripe_charge_id.clone())) else {
        return Err(PaymentError::PaymentNotSucceeded);
    };
    if refunds.iter().any(RefundRecord::is_pending) {
        return Err(PaymentError::Conflict(
            "a refund of this payment is still pending at Stripe; release it once the refund settles".into(),
        ));
    }
    let refunded = refunds.iter().filter(|r| r.counts()).map(|r| r.amount).sum::<i64>().min(payment.amount);
    let newly_failed: Vec<&RefundRecord> =
        refunds.iter().filter(|r| !r.counts() && !payment.failed_refund_ids.contains(&r.id)).collect();
    let net = payment.amount - refunded;
    if net <= 0 {
        return Err(PaymentError::Conflict(
            "the payment has been refunded in full; there is nothing to release".into(),
        ));
    }
    let amount = payment.provider_share(refunded);
    if amount <= 0 {
        return Err(PaymentError::Conflict(
            "the platform fee takes all that refunds left, so there is nothing to transfer; refund it instead".into(),
        ));
    }
    let platform_fee = net - amount;

    // The reads above may have taken a while: claim only if the transfer can still be made.
    if !stripe.has_time() {
        return Err(PaymentError::PaymentsUnavailable);
    }

    // 1. succeeded → releasing, for this amount under a key of its own.
    let attempt = payment.release_seq + 1;
    let key = release_key(payment_id, attempt);
    let table = app.table();
    let now = time::rfc3339(time::now());
    let pk = Payment::key(payment_id);
    let condition = format!(
        "#status = :from AND {} AND {} AND {NOT_HELD_BY_DISPUTE}",
        amount_refunded_is(payment.amount_refunded),
        number_is("release_seq", ":seen_seq", payment.release_seq)
    );
    // The total now counts every refund Stripe had when it was read, and only those.
    let mut failed_ids = payment.failed_refund_ids.clone();
    failed_ids.extend(newly_failed.iter().map(|r| r.id.clone()));
    let mut update = String::from(
        "SET #status = :to, updated_at = :now, GSI2PK = :queue, GSI2SK = :now, release_amount = :amount, \
         release_key = :key, release_seq = :attempt, stripe_charge_id = :charge, amount_refunded = :refunded, \
         refund_total_created = :read_at, platform_fee = :fee, settled_refund_ids = :settled",
    );
    if !failed_ids.is_empty() {
        update.push_str(", failed_refund_ids = :failed");
    }
    if stripe_fee.is_some() {
        update.push_str(", stripe_fee = :stripe_fee");
    }
    let mut claim = transition(&pk, PaymentStatus::Succeeded, PaymentStatus::Releasing, &now)
        .update(&update)
        .condition(&condition)
        .value(":queue", av::s(RELEASING_QUEUE))
        .value(":amount", av::n(amount))
        .value(":key", av::s(&key))
        .value(":attempt", av::n(attempt))
        .value(":seen_seq", av::n(payment.release_seq))
        .value(":charge", av::s(&charge))
        .value(":refunded", av::n(refunded))
        .value(":seen_refunded", av::n(payment.amount_refunded))
        .value(":dispute_won", av::s("won"))
        .value(":dispute_warning_closed", av::s("warning_closed"))
        .value(":read_at", av::n(time::now().unix_timestamp()));
    let settled: Vec<String> = refunds.iter().filter(|r| r.counts()).map(|r| r.id.clone()).collect();
    claim = claim
        .value(":fee", av::n(platform_fee))
        .value(":settled", AttributeValue::L(settled.iter().map(av::s).collect()));
    if !failed_ids.is_empty() {
        claim = claim.value(":failed", AttributeValue::L(failed_ids.iter().map(av::s).collect()));
    }
    if let Some(fee) = stripe_fee {
        claim = claim.value(":stripe_fee", av::n(fee));
    }
    let mut items = vec![table.update(claim)?];
    items.extend(still_may_move);
    // Refunds that failed without their webhook reaching us (or before it): told once, here.
    let mut total = payment.amount_refunded;
    for failed in &newly_failed {
        let counted = payment.refund_ids.contains(&failed.id)
            || payment.refund_total_created.is_some_and(|as_of| as_of >= failed.created);
        if !counted || total <= refunded {
            continue;
        }
        let back = failed.amount.min(total - refunded);
        total -= back;
        let failure = RefundFailure {
            refund_id: &failed.id,
            amount: back,
            total,
            unsettled: payment.amount_unsettled,
            failure_reason: None,
            found: "at_release",
        };
        let (entry, messages) = refund_failed_notice(&payment, &failure, meta);
        items.push(app.audit().put(&entry)?);
        for message in messages {
            items.push(outbox::put(table, message)?);
        }
    }
    if refunded > payment.amount_refunded {
        // Recorded here, once: the webhook that follows finds the total already known.
        let (entry, event) =
            refunded_elsewhere(&payment, refunded - payment.amount_refunded, refunded, "at_release", meta);
        items.push(app.audit().put(&entry)?);
        items.push(outbox::put(table, event)?);
    }
    match table.transact(items).await {
        Ok(()) => {}
        Err(StoreError::TransactionConditionsFailed(_)) => {
            let current = Payment::find(app, payment_id).await?.ok_or(PaymentError::NotFound)?;
            return match current.status {
                PaymentStatus::Released => Ok(already(&current)),
                PaymentStatus::Releasing => Err(PaymentError::ReleaseInProgress),
                PaymentStatus::Succeeded => Err(PaymentError::Conflict(
                    "the payment changed (a refund or a dispute) while releasing; read it again".into(),
                )),
                PaymentStatus::Refunding => {
                    Err(PaymentError::Conflict("a refund of this payment is in progress".into()))
                }
                _ => Err(PaymentError::PaymentNotSucceeded),
            };
        }
        Err(other) => return Err(other.into()),
    }
    let claimed = Payment {
        status: PaymentStatus::Releasing,
        release_amount: Some(amount),
        release_key: Some(key),
        release_seq: attempt,
        amount_refunded: refunded,
        stripe_charge_id: Some(charge),
        platform_fee: Some(platform_fee),
        stripe_fee: stripe_fee.or(payment.stripe_fee),
        settled_refund_ids: Some(settled),
        ..payment
    };
    match Box::pin(transfer(app, &stripe, &claimed, &destination, Some(principal.user_id()), meta)).await? {
        Transferred::Now(transfer_id) => Ok(ReleaseOutcome::Released { transfer_id, already_released: false }),
        Transferred::Before(transfer_id) => Ok(ReleaseOutcome::Released { transfer_id, already_released: true }),
        Transferred::Unknown => Ok(ReleaseOutcome::Pending),
        Transferred::Refused(error) => Err(error),
    }
}

/// The answer to a release of a payment released before.
pub(super) fn already(payment: &Payment) -> ReleaseOutcome {
    ReleaseOutcome::Released { transfer_id: payment.transfer_id.clone().unwrap_or_default(), already_released: true }
}

pub(super) fn disputed() -> PaymentError {
    PaymentError::Conflict("the charge is disputed; it can be released once the dispute is won".into())
}

/// The charge whose funds the transfer draws on: known from `payment_intent.succeeded`, or
/// looked up on the PaymentIntent. Without one, the payment has not really succeeded.
pub(super) async fn charge_of(stripe: &Stripe, payment: &Payment) -> Result<String, PaymentError> {
    if let Some(charge) = &payment.stripe_charge_id {
        return Ok(charge.clone());
    }
    let intent = stripe.payment_intent(&payment.stripe_payment_intent_id).await?;
    match (intent.status.as_str(), intent.latest_charge) {
        ("succeeded", Some(charge)) => Ok(charge),
        _ => Err(PaymentError::PaymentNotSucceeded),
    }
}

/// How a transfer attempt ended.
pub enum Transferred {
    /// This attempt made (or Stripe's idempotency replayed) the transfer and recorded it.
    Now(String),
    /// Recorded by another finisher first.
    Before(String),
    /// Unknown at Stripe, or not recorded: left `releasing` for reconciliation.
    Unknown,
    /// Stripe definitely did nothing; the payment is `succeeded` again.
    Refused(PaymentError),
}

/// The Stripe transfer for a payment this caller holds in `releasing` (with its amount and
/// key), then the final write. A definite refusal returns the payment to `succeeded`.
pub(super) async fn transfer(
    app: &Services,
    stripe: &Stripe,
    payment: &Payment,
    destination: &str,
    actor: Option<&str>,
    meta: &RequestMeta,
) -> Result<Transferred, PaymentError> {
    let payment_id = payment.payment_id.as_str();
    let key = payment.release_key.as_deref().ok_or_else(|| PaymentError::internal("releasing without a key"))?;
    let currency = Currency::parse(&payment.currency).map_err(PaymentError::internal)?;
    let request = NewTransfer {
        payment_id,
        amount: payment.release_amount.unwrap_or_else(|| payment.provider_share(payment.amount_refunded)),
        currency: &currency,
        destination,
        source_transaction: payment.stripe_charge_id.as_deref(),
        cause: None,
    };
    match stripe.create_transfer(key, &request).await {
        Ok(transfer_id) => finish_or_leave(app, payment, &transfer_id, actor, meta).await,
        Err(error) if error.is_definite() => {
            return_to_succeeded(app, payment_id, PaymentStatus::Releasing, "release_key", key, None).await?;
            let entry = AuditEntry::new("payment.released", AuditStatus::Failure, &payment.payer_org_id, meta)
                .details(json!({ "payment_id": payment_id, "reason": error.reason() }))
                .actor_if(actor);
            app.audit().record_or_log(&entry).await;
            Ok(Transferred::Refused(error.into()))
        }
        Err(error) => {
            tracing::warn!(%error, %payment_id, "transfer outcome unknown; the payment stays releasing");
            Ok(Transferred::Unknown)
        }
    }
}

/// Records a transfer that exists; if even that write fails, the payment stays `releasing`
/// and reconciliation finds the transfer later.
async fn finish_or_leave(
    app: &Services,
    payment: &Payment,
    transfer_id: &str,
    actor: Option<&str>,
    meta: &RequestMeta,
) -> Result<Transferred, PaymentError> {
    match finish_release(app, payment, transfer_id, actor, meta).await {
        Ok(finished) => Ok(finished),
        Err(error) => {
            tracing::error!(%error, payment_id = %payment.payment_id, %transfer_id,
                "transfer made but not recorded; reconciliation will record it");
            Ok(Transferred::Unknown)
        }
    }
}

/// Records a completed transfer: conditional `releasing → released` with its audit entry,
/// then tells the provider. If another finisher recorded it first, says so.
pub async fn finish_release(
    app: &Services,
    payment: &Payment,
    transfer_id: &str,
    actor: Option<&str>,
    meta: &RequestMeta,
) -> Result<Transferred, PaymentError> {
    let table = app.table();
    let now = time::rfc3339(time::now());
    let pk = Payment::key(&payment.payment_id);
    let amount = payment.release_amount.unwrap_or_else(|| payment.provider_share(payment.amount_refunded));
    let mut details = json!({ "payment_id": payment.payment_id, "transfer_id": transfer_id, "amount": amount,
                              "currency": payment.currency, "platform_fee": payment.platform_fee,
                              "stripe_fee": payment.stripe_fee });
    if amount > payment.provider_share(payment.amount_refunded) {
        // Refunded (from the dashboard) while the transfer was already under way: the
        // provider was sent more than its share of what is left. The refund is not among
        // those the release counted, so it is recovered (reversed) once Stripe's
        // `transfer.created` for this transfer arrives.
        details["overlapping_refund"] = json!(true);
        details["amount_refunded"] = json!(payment.amount_refunded);
        tracing::warn!(payment_id = %payment.payment_id, "released and refunded: the overlap is recovered at transfer.created");
    }
    let entry = AuditEntry::new("payment.released", AuditStatus::Success, &payment.payer_org_id, meta)
        .target(&payment.provider_user_id)
        .actor_if(actor)
        .details(details);
    let done = transition(&pk, PaymentStatus::Releasing, PaymentStatus::Released, &now)
        .update(
            "SET #status = :to, updated_at = :now, transfer_id = :transfer, release_amount = :amount, \
             transfer_amount = :amount REMOVE GSI2PK, GSI2SK, release_key",
        )
        .value(":transfer", av::s(transfer_id))
        .value(":amount", av::n(amount));
    let mut items = vec![table.update(done)?, app.audit().put(&entry)?];
    items.extend(release_messages(app, payment, amount, transfer_id).await?);
    match table.transact(items).await {
        Ok(()) => {
            if let Some(margin) = margin_of(payment) {
                crate::metrics::record(&margin);
            }
            Ok(Transferred::Now(transfer_id.to_owned()))
        }
        Err(StoreError::TransactionConditionsFailed(_)) => {
            let current = Payment::find(app, &payment.payment_id).await?.ok_or(PaymentError::NotFound)?;
            match (current.status, current.transfer_id) {
                (PaymentStatus::Released, Some(stored)) => Ok(Transferred::Before(stored)),
                _ => Err(PaymentError::internal("payment left releasing in an unexpected state")),
            }
        }
        Err(other) => Err(other.into()),
    }
}

/// The platform's margin on a recorded release, where its fee is known.
pub(crate) fn margin_of(payment: &Payment) -> Option<crate::metrics::Measure> {
    let fee = payment.platform_fee?;
    Some(crate::metrics::Measure::platform_margin(&payment.currency, fee, payment.stripe_fee.unwrap_or(0)))
}

/// What a recorded release tells: the `payment.released` event, and an SMS to the provider's
/// owner if they have a verified phone. Outbox items, to join the release's own transaction.
pub(crate) async fn release_messages(
    app: &Services,
    payment: &Payment,
    amount: i64,
    transfer_id: &str,
) -> Result<Vec<TransactWriteItem>, PaymentError> {
    let event = DomainEvent::new(
        "payment.released",
        json!({ "payment_id": payment.payment_id, "provider_id": payment.provider_id, "transfer_id": transfer_id,
                "amount": amount, "currency": payment.currency }),
    );
    let paid = super::money::format_amount(amount, &payment.currency);
    let table = app.table();
    let mut items = vec![
        outbox::put(table, Message::event(&event))?,
        outbox::put(
            table,
            Message::push(
                &payment.provider_user_id,
                Category::Payments,
                "You have been paid",
                format!("{paid} is on its way to your account."),
                json!({ "payment_id": payment.payment_id, "event": "payment.released" }),
            ),
        )?,
    ];
    // SMS go only to numbers their owner has verified (the one the provider gave Stripe
    // at onboarding is not).
    let owner = crate::identity::User::find(table, &payment.provider_user_id).await?;
    if let Some(phone) = owner.filter(|u| u.phone_verified).and_then(|u| u.phone) {
        let text = format!("You have been paid: {paid} is on its way to your account.");
        let sms = Message::sms(&phone, text, &payment.provider_user_id, Category::Payments);
        items.push(outbox::put_sealed(table, &app.outbox_sealer().await?, sms)?);
    }
    Ok(items)
}
