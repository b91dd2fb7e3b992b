//! Money that came back after the release: a refund the release counted (or one recovered
//! from the provider) that failed later. The platform holds it again, and the payer side
//! settles it one way or the other:
//!
//! - **release**: the provider is paid again for each such refund by one transfer from the
//!   platform's balance (key `release:{payment_id}:refund:{refund_id}`, metadata `cause`):
//!   what was reversed for it if it had been recovered, otherwise its share of it
//!   (`R − floor(R × platform_fee_bps / 10 000)`, as a recovery would have taken);
//! - **refund**: the payer is refunded it again (key `refund:{payment_id}:again:{refund_id}`).
//!
//! Each failed refund is kept in `unsettled_refunds` (refund id → amount; their total is
//! `amount_unsettled`). Settling claims them first (`unsettled_claims`, refund id → way), so a
//! release and a refund racing for the same money never both go out: once claimed, a refund
//! is only ever finished the way it was claimed, by a retry of the route or by the cleanup,
//! which look up what Stripe has under the cause (or key) before making anything. Every write
//! is conditioned on `unsettled_seq`, which each of them moves on.
//!
//! The payment sits on the `UNSETTLED` queue while any of it is left: the cleanup drives a
//! claim whose outcome was unknown at its next run, and counts (alarms) money left unsettled
//! for 7 days, daily until someone settles it.

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use serde::Serialize;
use serde_json::json;

pub use super::payment::Way;
use super::{
    Currency,
    gateway::{GatewayError, NewRefund, NewTransfer, Stripe},
    outcome::{RefundAnswer, RefundOutcome, RefundRequest, ReleaseOutcome},
    payment::{Payment, PaymentStatus, SK, number_is},
    provider::Provider,
    recovery::provider_share_of,
};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    invalid::FieldError,
    notify::{Category, DomainEvent},
    outbox::{self, Message},
    payments::PaymentError,
    payments::PaymentServices,
    services::Services,
    store::{Change, StoreError, av},
    time,
};

/// Payments with money unsettled, by when the cleanup looks at them next.
pub const UNSETTLED_QUEUE: &str = "UNSETTLED";
/// How long money may stay unsettled before the cleanup alarms.
pub const ALARM_AFTER: time::Duration = time::Duration::days(7);

/// The transfer that pays the provider again for a refund that failed after the release.
pub fn release_key(payment_id: &str, refund_id: &str) -> String {
    format!("release:{payment_id}:refund:{refund_id}")
}

/// The refund that gives a failed refund's money back to the payer once more.
pub fn refund_key(payment_id: &str, refund_id: &str) -> String {
    format!("refund:{payment_id}:again:{refund_id}")
}

/// Whether the provider is owed a share of a refund of a released payment that failed: the
/// release counted it (the provider was sent less), it was recovered from the provider, or it
/// was ours after the release (a refund of unsettled money). Otherwise it left after the
/// transfer and was never recovered: the provider kept its share, and nothing is unsettled.
pub fn owed_after_failure(payment: &Payment, refund_id: &str) -> bool {
    let Some(settled) = &payment.settled_refund_ids else { return true };
    let is = |ids: &[String]| ids.iter().any(|id| id == refund_id);
    is(settled) || is(&payment.reversal_causes) || is(&payment.refund_ids)
}

/// The part of a refund failure's write that makes `back` of `refund_id` unsettled: its
/// update clause, condition and values, to join the failure's own change.
pub(crate) fn added(
    payment: &Payment,
    refund_id: &str,
    back: i64,
) -> (&'static str, String, Vec<(&'static str, AttributeValue)>) {
    let mut refunds = payment.unsettled_refunds.clone();
    *refunds.entry(refund_id.to_owned()).or_default() += back;
    let now = time::now();
    (
        ", unsettled_refunds = :unsettled_refunds, unsettled_seq = :next_unsettled_seq, \
         unsettled_since = if_not_exists(unsettled_since, :unsettled_since), GSI2PK = :unsettled_queue, \
         GSI2SK = if_not_exists(GSI2SK, :unsettled_due)",
        number_is("unsettled_seq", ":seen_unsettled_seq", payment.unsettled_seq),
        vec![
            (":unsettled_refunds", map(&refunds)),
            (":next_unsettled_seq", av::n(payment.unsettled_seq + 1)),
            (":seen_unsettled_seq", av::n(payment.unsettled_seq)),
            (":unsettled_since", av::n(now.unix_timestamp())),
            (":unsettled_queue", av::s(UNSETTLED_QUEUE)),
            (":unsettled_due", av::s(time::rfc3339(now + ALARM_AFTER))),
        ],
    )
}

fn map<T: Serialize>(value: &T) -> AttributeValue {
    serde_dynamo::to_attribute_value(value).expect("a map of strings serialises")
}

/// Whether anything is left to settle (unsettled, or claimed and not yet finished).
pub fn has_unsettled(payment: &Payment) -> bool {
    payment.status == PaymentStatus::Released && !payment.unsettled_refunds.is_empty()
}

/// `POST /payments/{id}/release` of a released payment with money unsettled: the provider is
/// paid again for each failed refund. `still_may_move`: the caller's mover checks.
pub async fn release(
    app: &PaymentServices,
    payment: Payment,
    still_may_move: Vec<TransactWriteItem>,
    actor: &str,
    meta: &RequestMeta,
) -> Result<ReleaseOutcome, PaymentError> {
    let provider =
        Provider::find(app, &payment.provider_id).await?.ok_or_else(|| PaymentError::internal("provider missing"))?;
    if provider.payout_destination().is_none() {
        return Err(PaymentError::OnboardingRequired);
    }
    let stripe = app.stripe(meta.deadline).await?;
    if !stripe.has_time() {
        return Err(PaymentError::PaymentsUnavailable);
    }
    let claimed = claim(app, &payment, Way::Release, None, still_may_move).await?;
    match drive(app, &stripe, &claimed, Some(actor), meta).await? {
        Driven::Done { last, .. } => {
            Ok(ReleaseOutcome::Released { transfer_id: last.unwrap_or_default(), already_released: false })
        }
        Driven::Unknown => Ok(ReleaseOutcome::Pending),
    }
}

/// `POST /payments/{id}/refund` of a released payment with money unsettled: all of it goes
/// back to the payer (`amount`, if given, must be all of it). Under an `Idempotency-Key` the
/// answer is kept and replayed as the refund route's are.
pub async fn refund(
    app: &PaymentServices,
    payment: Payment,
    amount: Option<i64>,
    request: Option<&RefundRequest>,
    still_may_move: Vec<TransactWriteItem>,
    actor: &str,
    meta: &RequestMeta,
) -> Result<RefundOutcome, PaymentError> {
    let left = payment.amount_unsettled;
    match amount {
        Some(amount) if amount > left => {
            return Err(PaymentError::Validation(vec![FieldError::new(
                "amount",
                format!("is more than is left to refund ({left})"),
            )]));
        }
        Some(amount) if amount < left => {
            return Err(PaymentError::Conflict(format!(
                "the payment has been released; only the {left} that came back to the platform may be \
                 refunded, all of it together"
            )));
        }
        _ => {}
    }
    let stripe = app.stripe(meta.deadline).await?;
    if !stripe.has_time() {
        return Err(PaymentError::PaymentsUnavailable);
    }
    let claimed = claim(app, &payment, Way::Refund, request, still_may_move).await?;
    match drive(app, &stripe, &claimed, Some(actor), meta).await? {
        Driven::Done { payment, .. } => Ok(RefundOutcome::Done(*payment)),
        Driven::Unknown => Ok(RefundOutcome::Pending(claimed)),
    }
}

/// What came back goes back to the payer, by the platform: at the erasure of a party to it,
/// or `HOLD_MAX_DAYS` after it came back. `Ok(false)` while it is being released, or Stripe's
/// answer is unknown (a later run tries again).
pub async fn refund_all(app: &PaymentServices, payment: Payment, meta: &RequestMeta) -> Result<bool, PaymentError> {
    if !has_unsettled(&payment) {
        return Ok(true);
    }
    if payment.unsettled_claims.values().any(|way| *way == Way::Release) {
        return Ok(false);
    }
    let stripe = app.stripe(meta.deadline).await?;
    let claimed = claim(app, &payment, Way::Refund, None, Vec::new()).await?;
    Ok(matches!(drive(app, &stripe, &claimed, None, meta).await?, Driven::Done { .. }))
}

/// Claims every unclaimed failed refund of `payment` for `way`. Refused (409) while any is
/// claimed the other way; one already claimed this way is driven on, as a retry.
async fn claim(
    app: &Services,
    payment: &Payment,
    way: Way,
    request: Option<&RefundRequest>,
    still_may_move: Vec<TransactWriteItem>,
) -> Result<Payment, PaymentError> {
    if payment.unsettled_claims.values().any(|claimed| *claimed != way) {
        return Err(PaymentError::Conflict(
            "the money that came back is being settled the other way; read the payment again".into(),
        ));
    }
    if let (Some(request), Some(digest)) = (request, payment.refund_request.as_deref()) {
        if digest != request.key_digest() {
            return Err(super::refund::in_progress());
        }
        if payment.refund_request_hash.as_deref() != Some(request.request_hash()) {
            return Err(PaymentError::IdempotencyMismatch);
        }
    }
    let mut claims = payment.unsettled_claims.clone();
    for refund_id in payment.unsettled_refunds.keys() {
        claims.entry(refund_id.clone()).or_insert(way);
    }
    if claims == payment.unsettled_claims && request.is_none() {
        return Ok(payment.clone());
    }
    let pk = Payment::key(&payment.payment_id);
    let mut update = String::from("SET unsettled_claims = :claims, unsettled_seq = :next, updated_at = :now");
    if request.is_some() {
        update.push_str(", refund_request = :request, refund_request_hash = :request_hash");
    }
    let condition = format!("#status = :released AND {}", number_is("unsettled_seq", ":seen", payment.unsettled_seq));
    let mut change = Change::new(&pk, SK)
        .update(&update)
        .condition(&condition)
        .name("#status", "status")
        .value(":released", av::s(PaymentStatus::Released.as_str()))
        .value(":claims", map(&claims))
        .value(":next", av::n(payment.unsettled_seq + 1))
        .value(":seen", av::n(payment.unsettled_seq))
        .value(":now", av::s(time::rfc3339(time::now())));
    if let Some(request) = request {
        change =
            change.value(":request", av::s(request.key_digest())).value(":request_hash", av::s(request.request_hash()));
    }
    let written = if still_may_move.is_empty() {
        app.table().update_item(change).await.map(drop)
    } else {
        let mut items = vec![app.table().update(change)?];
        items.extend(still_may_move);
        app.table().transact(items).await
    };
    match written {
        Ok(()) => Ok(Payment {
            unsettled_claims: claims,
            unsettled_seq: payment.unsettled_seq + 1,
            refund_request: request.map(|r| r.key_digest().to_owned()).or_else(|| payment.refund_request.clone()),
            refund_request_hash: request
                .map(|r| r.request_hash().to_owned())
                .or_else(|| payment.refund_request_hash.clone()),
            ..payment.clone()
        }),
        Err(StoreError::ConditionFailed | StoreError::TransactionConditionsFailed(_)) => {
            Err(PaymentError::Conflict("the payment changed while settling what came back; read it again".into()))
        }
        Err(other) => Err(other.into()),
    }
}

enum Driven {
    /// Every claim finished: the payment as it is now, and the last transfer or refund made.
    Done { payment: Box<Payment>, last: Option<String> },
    /// Stripe's answer to one was unknown: the cleanup drives it at its next run.
    Unknown,
}

/// Finishes every claim of `payment`: what Stripe has under the cause or key is looked up
/// first, then made if missing, then recorded. A definite refusal lifts that claim (the money
/// stays unsettled, either way open again) and is the answer.
async fn drive(
    app: &Services,
    stripe: &Stripe,
    payment: &Payment,
    actor: Option<&str>,
    meta: &RequestMeta,
) -> Result<Driven, PaymentError> {
    let mut current = payment.clone();
    let mut last = None;
    for (refund_id, way) in payment.unsettled_claims.clone() {
        let Some(&amount) = current.unsettled_refunds.get(&refund_id) else { continue };
        let made = match way {
            Way::Release => paid_again(app, stripe, &current, &refund_id, amount).await,
            Way::Refund => refunded_again(stripe, &current, &refund_id, amount).await,
        };
        let (made_id, moved) = match made {
            Ok(made) => made,
            Err(error) if error.is_definite() => {
                lift(app, &current, &refund_id).await?;
                audit_refusal(app, &current, &refund_id, way, &error.reason(), actor, meta).await;
                return Err(error.into());
            }
            Err(error) => {
                tracing::warn!(%error, payment_id = %current.payment_id, %refund_id,
                    "settling unsettled money: outcome unknown; the cleanup drives it");
                due_now(app, &current.payment_id).await;
                return Ok(Driven::Unknown);
            }
        };
        current = finish(app, &current.payment_id, &refund_id, way, made_id.as_deref(), moved, actor, meta).await?;
        last = made_id.or(last);
    }
    Ok(Driven::Done { payment: Box::new(current), last })
}

/// The transfer paying the provider again for `refund_id`, found or made: its id and amount
/// (`None` when nothing is owed: nothing was reversed for it, or its share is nothing).
async fn paid_again(
    app: &Services,
    stripe: &Stripe,
    payment: &Payment,
    refund_id: &str,
    amount: i64,
) -> Result<(Option<String>, i64), GatewayError> {
    // Both lists at once: never both ways, so a refund made for it under a claim since
    // lifted (its answer lost, a concurrent driver's lookup refused) settles it, by the
    // refund way.
    let (transfers, refunds) = tokio::try_join!(
        stripe.transfers_for(&payment.payment_id),
        stripe.refunds_for(&payment.stripe_payment_intent_id)
    )?;
    if let Some(found) = transfers.iter().find(|t| t.cause.as_deref() == Some(refund_id)) {
        return Ok((Some(found.id.clone()), found.amount));
    }
    let key = refund_key(&payment.payment_id, refund_id);
    if let Some(made) = refunds.iter().find(|r| r.refund_key.as_deref() == Some(key.as_str()) && r.counts()) {
        return Err(GatewayError::Refused {
            status: 409,
            message: format!("the money of {refund_id} was refunded again ({}); refund to record it", made.id),
        });
    }
    let owed = if payment.reversal_causes.iter().any(|c| c == refund_id) {
        match payment.transfer_id.as_deref() {
            Some(transfer) => stripe
                .reversals_of(transfer)
                .await?
                .iter()
                .filter(|r| r.cause.as_deref() == Some(refund_id))
                .map(|r| r.amount)
                .sum(),
            None => 0,
        }
    } else {
        provider_share_of(payment, amount)
    };
    if owed <= 0 {
        return Ok((None, 0));
    }
    let provider = Provider::find(app, &payment.provider_id)
        .await
        .ok()
        .flatten()
        .and_then(|p| p.stripe_account_id)
        .ok_or_else(|| GatewayError::Unavailable("the provider's account cannot be read".into()))?;
    let currency =
        Currency::parse(&payment.currency).map_err(|e| GatewayError::Unavailable(format!("currency: {e}")))?;
    let request = NewTransfer {
        payment_id: &payment.payment_id,
        amount: owed,
        currency: &currency,
        destination: &provider,
        // From the platform's balance: the failed refund's money came back there.
        source_transaction: None,
        cause: Some(refund_id),
    };
    let id = stripe.create_transfer(&release_key(&payment.payment_id, refund_id), &request).await?;
    Ok((Some(id), owed))
}

/// The refund giving `refund_id`'s money back to the payer again, found by its key or made.
async fn refunded_again(
    stripe: &Stripe,
    payment: &Payment,
    refund_id: &str,
    amount: i64,
) -> Result<(Option<String>, i64), GatewayError> {
    let key = refund_key(&payment.payment_id, refund_id);
    let pi = payment.stripe_payment_intent_id.as_str();
    let (refunds, transfers) = tokio::try_join!(stripe.refunds_for(pi), stripe.transfers_for(&payment.payment_id))?;
    if let Some(paid) = transfers.iter().find(|t| t.cause.as_deref() == Some(refund_id)) {
        return Err(GatewayError::Refused {
            status: 409,
            message: format!("the money of {refund_id} was paid to the provider ({}); release to record it", paid.id),
        });
    }
    if let Some(found) = refunds.iter().find(|r| r.refund_key.as_deref() == Some(key.as_str())) {
        if found.counts() {
            return Ok((Some(found.id.clone()), found.amount));
        }
        // Made before and failed since (its answer was lost): making it again under the key
        // would only replay Stripe's first answer, which still says `pending`.
        return Err(GatewayError::Refused {
            status: 402,
            message: format!("the refund {} {}", found.id, found.status),
        });
    }
    let request = NewRefund { payment_id: &payment.payment_id, payment_intent: pi, amount, reason: None };
    let made = stripe.create_refund(&key, &request).await?;
    if !made.counts() {
        return Err(GatewayError::Refused {
            status: 402,
            message: format!("the refund {} is {}", made.id, made.status),
        });
    }
    Ok((Some(made.id), made.amount))
}

/// Records one failed refund settled: off `unsettled_refunds` and `amount_unsettled` (and, for a
/// refund, onto `amount_refunded`), audited and announced; off the queue once nothing is left.
#[allow(clippy::too_many_arguments)]
async fn finish(
    app: &Services,
    payment_id: &str,
    refund_id: &str,
    way: Way,
    made_id: Option<&str>,
    moved: i64,
    actor: Option<&str>,
    meta: &RequestMeta,
) -> Result<Payment, PaymentError> {
    let table = app.table();
    let pk = Payment::key(payment_id);
    for _ in 0..5 {
        let mut current = Payment::find(app, payment_id).await?.ok_or(PaymentError::NotFound)?;
        let Some(amount) = current.unsettled_refunds.remove(refund_id) else { return Ok(current) };
        if current.unsettled_claims.remove(refund_id) != Some(way) {
            return Err(PaymentError::internal("an unsettled refund finished another way than it was claimed"));
        }
        let unsettled = (current.amount_unsettled - amount).max(0);
        let total = if way == Way::Refund {
            (current.amount_refunded + amount).min(current.amount)
        } else {
            current.amount_refunded
        };
        let mut set = vec![
            "amount_unsettled = :unsettled",
            "amount_refunded = :total",
            "unsettled_seq = :next",
            "updated_at = :now",
        ];
        let mut remove = Vec::new();
        if current.unsettled_refunds.is_empty() {
            remove.extend(["unsettled_refunds", "unsettled_claims", "unsettled_since", "GSI2PK", "GSI2SK"]);
            remove.extend(["refund_request", "refund_request_hash"]);
        } else {
            set.extend(["unsettled_refunds = :refunds", "unsettled_claims = :claims"]);
        }
        if way == Way::Refund && made_id.is_some() {
            set.push("refund_ids = list_append(if_not_exists(refund_ids, :none), :ids)");
        }
        let mut update = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            update.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        // On `amount_refunded` too: a charge total or another refund's failure written
        // meanwhile is not overwritten.
        let condition = format!(
            "#status = :released AND {} AND {}",
            number_is("unsettled_seq", ":seen", current.unsettled_seq),
            number_is("amount_refunded", ":seen_refunded", current.amount_refunded)
        );
        let now = time::rfc3339(time::now());
        let mut change = Change::new(&pk, SK)
            .update(&update)
            .condition(&condition)
            .name("#status", "status")
            .value(":released", av::s(PaymentStatus::Released.as_str()))
            .value(":unsettled", av::n(unsettled))
            .value(":total", av::n(total))
            .value(":next", av::n(current.unsettled_seq + 1))
            .value(":seen", av::n(current.unsettled_seq))
            .value(":seen_refunded", av::n(current.amount_refunded))
            .value(":now", av::s(&now));
        if !current.unsettled_refunds.is_empty() {
            change = change
                .value(":refunds", map(&current.unsettled_refunds))
                .value(":claims", map(&current.unsettled_claims));
        }
        if let (Way::Refund, Some(made)) = (way, made_id) {
            change =
                change.value(":none", AttributeValue::L(vec![])).value(":ids", AttributeValue::L(vec![av::s(made)]));
        }
        let (action, field) = match way {
            Way::Release => ("payment.released", "transfer_id"),
            Way::Refund => ("payment.refunded", "refund_id"),
        };
        let details = json!({ "payment_id": payment_id, field: made_id, "amount": moved, "unsettled": true,
                              "failed_refund_id": refund_id, "amount_unsettled": unsettled,
                              "amount_refunded": total, "currency": current.currency });
        let entry = AuditEntry::new(action, AuditStatus::Success, &current.payer_org_id, meta)
            .target(&current.provider_user_id)
            .actor_if(actor)
            .details(details.clone());
        let mut items = vec![
            table.update(change)?,
            app.audit().put(&entry)?,
            outbox::put(table, Message::event(&DomainEvent::new(action, details)))?,
        ];
        let money = super::money::format_amount(moved, &current.currency);
        items.push(outbox::put(
            table,
            match way {
                Way::Release => Message::push(
                    &current.provider_user_id,
                    Category::Payments,
                    "Payment released",
                    format!("{money} is on its way to you."),
                    json!({ "payment_id": payment_id, "event": action }),
                ),
                Way::Refund => Message::push(
                    &current.payer_user_id,
                    Category::Payments,
                    "Refund on its way",
                    format!("{money} is being refunded to you."),
                    json!({ "payment_id": payment_id, "event": action }),
                ),
            },
        )?);
        // The answer to a keyed refund, kept for the payment's life, once all of it is done.
        if let (Way::Refund, true, Some(digest), Some(hash)) = (
            way,
            current.unsettled_refunds.is_empty(),
            current.refund_request.as_deref(),
            current.refund_request_hash.as_deref(),
        ) {
            let answer =
                RefundAnswer::new(payment_id, digest, hash, PaymentStatus::Released, total, made_id.unwrap_or(""));
            items.push(table.put(&answer, None)?);
        }
        match table.transact(items).await {
            Ok(()) => {
                let mut refund_ids = current.refund_ids.clone();
                if let (Way::Refund, Some(made)) = (way, made_id) {
                    refund_ids.push(made.to_owned());
                }
                let empty = current.unsettled_refunds.is_empty();
                return Ok(Payment {
                    amount_unsettled: unsettled,
                    amount_refunded: total,
                    refund_ids,
                    unsettled_seq: current.unsettled_seq + 1,
                    unsettled_since: if empty { None } else { current.unsettled_since },
                    refund_request: if empty { None } else { current.refund_request.clone() },
                    refund_request_hash: if empty { None } else { current.refund_request_hash.clone() },
                    updated_at: now,
                    ..current
                });
            }
            Err(StoreError::TransactionConditionsFailed(_)) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(PaymentError::internal("the payment kept changing while what came back was settled"))
}

/// Stripe definitely refused settling `refund_id`: its claim is lifted, so either way is open
/// again.
async fn lift(app: &Services, payment: &Payment, refund_id: &str) -> Result<(), PaymentError> {
    for _ in 0..5 {
        let mut current = Payment::find(app, &payment.payment_id).await?.ok_or(PaymentError::NotFound)?;
        if current.unsettled_claims.remove(refund_id).is_none() {
            return Ok(());
        }
        let pk = Payment::key(&current.payment_id);
        let condition = number_is("unsettled_seq", ":seen", current.unsettled_seq);
        let change = Change::new(&pk, SK)
            .update("SET unsettled_claims = :claims, unsettled_seq = :next REMOVE refund_request, refund_request_hash")
            .condition(&condition)
            .value(":claims", map(&current.unsettled_claims))
            .value(":next", av::n(current.unsettled_seq + 1))
            .value(":seen", av::n(current.unsettled_seq));
        match app.table().update_item(change).await {
            Ok(_) => return Ok(()),
            Err(StoreError::ConditionFailed) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(PaymentError::internal("the payment kept changing while a refused settlement was lifted"))
}

async fn audit_refusal(
    app: &Services,
    payment: &Payment,
    refund_id: &str,
    way: Way,
    reason: &str,
    actor: Option<&str>,
    meta: &RequestMeta,
) {
    let action = match way {
        Way::Release => "payment.released",
        Way::Refund => "payment.refunded",
    };
    let entry = AuditEntry::new(action, AuditStatus::Failure, &payment.payer_org_id, meta)
        .actor_if(actor)
        .details(json!({ "payment_id": payment.payment_id, "failed_refund_id": refund_id, "unsettled": true,
                         "reason": reason }));
    app.audit().record_or_log(&entry).await;
}

/// Brings the payment's turn on the queue forward, so the cleanup's next run drives its claim.
async fn due_now(app: &Services, payment_id: &str) {
    let pk = Payment::key(payment_id);
    let change = Change::new(&pk, SK)
        .update("SET GSI2SK = :now")
        .condition("GSI2PK = :queue")
        .value(":now", av::s(time::rfc3339(time::now())))
        .value(":queue", av::s(UNSETTLED_QUEUE));
    if let Err(error) = app.table().update_item(change).await
        && !matches!(error, StoreError::ConditionFailed)
    {
        tracing::error!(%error, %payment_id, "cannot bring an unsettled payment forward; it waits for its alarm day");
    }
}

/// What one cleanup run did with payments holding unsettled money.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    /// Claims finished (their outcome had been unknown), and money refunded to the payer
    /// `HOLD_MAX_DAYS` after it came back.
    pub settled: u32,
    /// Payments with money unsettled for `ALARM_AFTER` or more: what the alarm counts.
    pub left: u32,
    pub failed: u32,
}

/// The due payments of the `UNSETTLED` queue, one page per run.
pub async fn run(app: &PaymentServices, meta: &RequestMeta, out_of_time: impl Fn() -> bool) -> Watched {
    let mut watched = Watched::default();
    let now = time::now();
    let due = match app.table().queue_due(UNSETTLED_QUEUE, &time::rfc3339(now), 25).await {
        Ok(due) => due,
        Err(error) => {
            tracing::error!(%error, "cannot list unsettled payments");
            watched.failed += 1;
            return watched;
        }
    };
    for pk in due {
        if out_of_time() {
            break;
        }
        match look_at(app, &pk, now, meta).await {
            Ok((settled, left)) => {
                watched.settled += settled;
                watched.left += u32::from(left);
            }
            Err(error) => {
                tracing::error!(%error, %pk, "unsettled payment not handled; the next run tries again");
                watched.failed += 1;
            }
        }
    }
    watched
}

/// One due payment: its claims driven, then counted if money is still left after the alarm
/// time, and its next look a day on.
async fn look_at(
    app: &PaymentServices,
    pk: &str,
    now: ::time::OffsetDateTime,
    meta: &RequestMeta,
) -> Result<(u32, bool), PaymentError> {
    let payment_id = pk.strip_prefix("PAYMENT#").unwrap_or(pk);
    let Some(mut payment) = Payment::find(app, payment_id).await? else { return Ok((0, false)) };
    let mut settled = 0;
    if !payment.unsettled_claims.is_empty() {
        let stripe = app.stripe(meta.deadline).await?;
        let claimed = payment.unsettled_claims.len() as u32;
        if let Driven::Done { payment: done, .. } = drive(app, &stripe, &payment, None, meta).await? {
            settled = claimed;
            payment = *done;
        }
    }
    if payment.unsettled_refunds.is_empty() {
        return Ok((settled, false));
    }
    let since =
        payment.unsettled_since.and_then(|s| ::time::OffsetDateTime::from_unix_timestamp(s).ok()).unwrap_or(now);
    // Never held for good: what is still unsettled `HOLD_MAX_DAYS` after it came back goes
    // back to the payer, as a held payment does.
    let held_for = time::Duration::days(app.settings().hold_max_days);
    if payment.unsettled_claims.is_empty() && now - since >= held_for {
        let amount = payment.amount_unsettled;
        let (org, payer) = (payment.payer_org_id.clone(), payment.payer_user_id.clone());
        let refunded = match refund_all(app, payment.clone(), meta).await {
            Ok(refunded) => refunded,
            Err(error) => {
                // Refused: the claim is lifted and the money stays; looked at again a day on,
                // not at every run.
                next_look(app, pk, now + time::Duration::days(1)).await?;
                return Err(error);
            }
        };
        // Unknown at Stripe: the claim is left for the next run (`due_now` has set it).
        if !refunded {
            return Ok((settled, false));
        }
        let entry = AuditEntry::new("payment.auto_refunded", AuditStatus::Success, &org, meta).target(&payer).details(
            json!({ "payment_id": payment_id, "amount": amount, "unsettled": true,
                             "currency": payment.currency, "why": "hold_max_days",
                             "hold_max_days": app.settings().hold_max_days }),
        );
        app.audit().record_or_log(&entry).await;
        return Ok((settled + 1, false));
    }
    let left = now - since >= ALARM_AFTER;
    if left {
        tracing::error!(%payment_id, amount_unsettled = payment.amount_unsettled, currency = %payment.currency,
            "money unsettled for 7 days: release or refund it");
    }
    // A claim still unknown is driven again at the next run; otherwise a look a day on.
    let next = if payment.unsettled_claims.is_empty() {
        (now + time::Duration::days(1)).max(since + ALARM_AFTER)
    } else {
        now
    };
    next_look(app, pk, next).await?;
    Ok((settled, left))
}

/// When the cleanup looks at an unsettled payment next (nothing, once it is off the queue).
async fn next_look(app: &Services, pk: &str, at: ::time::OffsetDateTime) -> Result<(), PaymentError> {
    let change = Change::new(pk, SK)
        .update("SET GSI2SK = :next")
        .condition("GSI2PK = :queue")
        .value(":next", av::s(time::rfc3339(at)))
        .value(":queue", av::s(UNSETTLED_QUEUE));
    match app.table().update_item(change).await {
        Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
        Err(other) => Err(other.into()),
    }
}
