//! Payments held on the platform: the item, creation, and who may see it.
//!
//! Status: `requires_payment` → `succeeded` (held; set by the webhook) → `releasing` →
//! `released`; or `failed`; or `succeeded` → `refunding` → `succeeded` (partly refunded) or
//! `refunded`. Every transition is one conditional write, so the database decides races.
//! The two states that wait on Stripe, `releasing` and `refunding`, put the payment on the
//! sparse `GSI2` work queue (`GSI2PK` = the queue, `GSI2SK` = when it was last driven), so
//! reconciliation ([`super::reconcile`]) can finish whatever a request left unresolved.
//! Every payment is also on its payer's and its provider's history (`GSI3`, `GSI4`:
//! [`super::history`]).
//! Release and refund live in [`super::release`] and [`super::refund`].

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Amount, Currency, gateway::Stripe, provider::Provider};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    config::PlatformFee,
    identity::{Role, User, auth::Principal},
    invalid::FieldError,
    payments::PaymentError,
    payments::PaymentServices,
    services::Services,
    store::{Change, StoreError, av, keys},
    time,
};

pub(super) const SK: &str = "PAYMENT";
/// `GSI2PK` of payments waiting on a transfer.
pub const RELEASING_QUEUE: &str = "RELEASING";
/// `GSI2PK` of payments waiting on a refund.
pub const REFUNDING_QUEUE: &str = "REFUNDING";
/// `GSI2PK` of payments waiting for the payer (`requires_payment`): the cleanup asks
/// Stripe about the ones whose webhook never came.
pub const AWAITING_PAYMENT_QUEUE: &str = "AWAITING_PAYMENT";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    RequiresPayment,
    Succeeded,
    Releasing,
    Released,
    Failed,
    Refunding,
    Refunded,
    /// Never paid: its PaymentIntent was canceled (abandoned after `PAYMENT_ABANDON_DAYS`, or
    /// in Stripe's dashboard). Terminal.
    Canceled,
    /// Held when a dispute was lost: the money went back to the cardholder through the
    /// dispute, so nothing is held any more. Terminal.
    Disputed,
}

impl PaymentStatus {
    pub const ALL: [Self; 9] = [
        Self::RequiresPayment,
        Self::Succeeded,
        Self::Releasing,
        Self::Released,
        Self::Failed,
        Self::Refunding,
        Self::Refunded,
        Self::Canceled,
        Self::Disputed,
    ];

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == value)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequiresPayment => "requires_payment",
            Self::Succeeded => "succeeded",
            Self::Releasing => "releasing",
            Self::Released => "released",
            Self::Failed => "failed",
            Self::Refunding => "refunding",
            Self::Refunded => "refunded",
            Self::Canceled => "canceled",
            Self::Disputed => "disputed",
        }
    }
}

/// How a failed refund's money is being settled ([`super::unsettled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Way {
    Release,
    Refund,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub payment_id: String,
    pub status: PaymentStatus,
    pub amount: i64,
    pub currency: String,
    pub provider_id: String,
    pub provider_user_id: String,
    pub payer_user_id: String,
    pub payer_org_id: String,
    pub stripe_payment_intent_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<String>,
    /// The charge behind the PaymentIntent (from `payment_intent.succeeded`, or looked up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_charge_id: Option<String>,
    /// Minor units refunded so far, through us or Stripe's dashboard.
    #[serde(default)]
    pub amount_refunded: i64,
    /// Our refunds that have been recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refund_ids: Vec<String>,
    /// Refunds that failed (or were canceled) after they were counted: each came off
    /// `amount_refunded` once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_refund_ids: Vec<String>,
    /// The `created` of the `charge.refunded` event whose total `amount_refunded` holds, and of
    /// the last refund failure applied: a charge's total from before a failure is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_total_created: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_failed_created: Option<i64>,
    /// Minor units that came back to the platform after the release (a refund that failed
    /// once the provider had been paid the rest): the payer side may release or refund them.
    #[serde(default)]
    pub amount_unsettled: i64,
    /// The failed refunds `amount_unsettled` is made of, each with its amount, and how each is
    /// being settled once claimed ([`super::unsettled`]); `unsettled_seq` moves on with every
    /// write to them, which each is conditioned on.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub unsettled_refunds: std::collections::BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub unsettled_claims: std::collections::BTreeMap<String, Way>,
    #[serde(default)]
    pub unsettled_seq: i64,
    /// When money first became unsettled (epoch seconds): the alarm is 7 days after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsettled_since: Option<i64>,
    /// The platform's fee terms, fixed when the payment was made (0 on payments made before
    /// the fee existed).
    #[serde(default)]
    pub platform_fee_bps: i64,
    #[serde(default)]
    pub platform_fee_fixed: i64,
    /// Set by the release: the fee kept of what refunds left, what the provider was sent, and
    /// Stripe's processing fee on the charge (its balance transaction's `fee`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_fee: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_fee: Option<i64>,
    /// The charge's dispute status, if it was ever disputed (Stripe's words: `needs_response`,
    /// `won`, `lost`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispute: Option<String>,
    /// The dispute those statuses are of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispute_id: Option<String>,
    /// What has come back of the transfer (Stripe's `amount_reversed`): shown as
    /// `amount_reversed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_reversed_amount: Option<i64>,
    /// The refunds the release counted (by Stripe's list when it was claimed): any other
    /// refund of ours or Stripe's dashboard that counts is money that left after the
    /// transfer. `None` on payments released before this was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_refund_ids: Option<Vec<String>>,
    /// Causes (refund or dispute ids) recovered from the provider, each once
    /// ([`super::recovery`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reversal_causes: Vec<String>,
    /// Set when a party to the payment scheduled their account's deletion while nobody had
    /// paid: the cleanup cancels it at its next run rather than after the abandon days.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandon_requested: bool,
    /// Disputes won after their reversal, for which the provider was paid again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repaid_causes: Vec<String>,
    /// Release attempts claimed so far: each claim (after a definite refusal, or with a new
    /// amount) gets a new idempotency key, so Stripe never replays an old answer to it.
    #[serde(default)]
    pub release_seq: i64,
    /// Refund attempts claimed so far, likewise.
    #[serde(default)]
    pub refund_seq: i64,
    /// While `releasing`: what is being transferred, under which idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_key: Option<String>,
    /// While `refunding`: the refund asked for, on top of `refund_base`, under `refund_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_pending: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_base: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_reason: Option<String>,
    /// While `refunding` (or refunding unsettled money) under an `Idempotency-Key`: the key's
    /// digest and the request's
    /// (see [`super::outcome::RefundRequest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_request_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// `PI#{payment_intent}`: the webhook finds the payment by its PaymentIntent.
    #[serde(rename = "GSI1PK")]
    pub gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    pub gsi1sk: String,
    /// The work queue while `requires_payment`, `releasing` or `refunding`.
    #[serde(rename = "GSI2PK", default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// When the queued work was last driven (RFC 3339): by the request or a reconciler.
    #[serde(rename = "GSI2SK", default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    /// The payer's history (`PAYER#{payer_user_id}`, [`super::history`]); absent on payments
    /// made before the history existed.
    #[serde(rename = "GSI3PK", default, skip_serializing_if = "Option::is_none")]
    pub payer_history: Option<String>,
    #[serde(rename = "GSI3SK", default, skip_serializing_if = "Option::is_none")]
    pub payer_history_at: Option<String>,
    /// The provider's owner's history (`PAYEE#{provider_user_id}`), likewise.
    #[serde(rename = "GSI4PK", default, skip_serializing_if = "Option::is_none")]
    pub payee_history: Option<String>,
    #[serde(rename = "GSI4SK", default, skip_serializing_if = "Option::is_none")]
    pub payee_history_at: Option<String>,
}

impl Payment {
    pub fn key(payment_id: &str) -> String {
        format!("PAYMENT#{payment_id}")
    }

    pub async fn find(app: &Services, payment_id: &str) -> Result<Option<Payment>, StoreError> {
        app.table().get(&Self::key(payment_id), SK).await
    }

    pub fn body(&self) -> serde_json::Value {
        json!({
            "payment_id": self.payment_id,
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "provider_id": self.provider_id,
            "payer_user_id": self.payer_user_id,
            "stripe_payment_intent_id": self.stripe_payment_intent_id,
            "transfer_id": self.transfer_id,
            "amount_refunded": self.amount_refunded,
            "amount_unsettled": self.amount_unsettled,
            "platform_fee_bps": self.platform_fee_bps,
            "platform_fee_fixed": self.platform_fee_fixed,
            "platform_fee": self.platform_fee,
            "transfer_amount": self.transfer_amount,
            "stripe_fee": self.stripe_fee,
            "dispute_status": self.dispute,
            "amount_reversed": self.transfer_reversed_amount.unwrap_or(0),
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    /// What refunds have left of the payment (the payer side may still refund all of it).
    pub fn releasable_amount(&self) -> i64 {
        self.amount - self.amount_refunded
    }

    /// The fee terms fixed on this payment.
    pub fn fee_terms(&self) -> PlatformFee {
        PlatformFee { bps: self.platform_fee_bps, fixed: self.platform_fee_fixed }
    }

    /// What a release transfers once `refunded` has been refunded: what is left, less the
    /// platform's fee on it.
    pub fn provider_share(&self, refunded: i64) -> i64 {
        self.fee_terms().provider_share(self.amount - refunded)
    }

    /// Whether a dispute keeps the funds held: one is open, or was lost. An inquiry closed
    /// without a dispute (`warning_closed`) or a won dispute frees them.
    pub fn dispute_blocks(&self) -> bool {
        self.dispute.as_deref().is_some_and(|d| !matches!(d, "won" | "warning_closed"))
    }

    /// Who may move the money: the payer, or an admin of the org it was paid in who is not
    /// the provider's owner (an admin never pays themselves).
    pub(super) fn is_payer_side(&self, principal: &Principal) -> bool {
        self.payer_user_id == principal.user_id()
            || (self.payer_org_id == principal.org_id()
                && principal.role() == Role::Admin
                && self.provider_user_id != principal.user_id())
    }
}

pub struct NewPayment {
    /// Derived from the caller's `Idempotency-Key` ([`payment_id_for`]), so a retry after a
    /// failure reaches the same PaymentIntent and the same item.
    pub payment_id: String,
    pub amount: Amount,
    pub currency: Currency,
    pub provider_id: String,
    pub description: Option<String>,
}

/// The caller's Stripe customer, created on first use with a key that makes concurrent
/// first uses agree on one customer.
pub async fn customer_for(app: &Services, user: &User, stripe: &Stripe) -> Result<String, PaymentError> {
    if let Some(id) = &user.stripe_customer_id {
        return Ok(id.clone());
    }
    let gateway = stripe;
    let customer = gateway.create_customer(&format!("customer:{}", user.user_id), &user.email, &user.user_id).await?;
    let (pk, sk) = User::key(&user.user_id);
    let item = app
        .table()
        .update_item(
            Change::new(&pk, &sk)
                .update("SET stripe_customer_id = if_not_exists(stripe_customer_id, :customer)")
                .condition("attribute_exists(PK)")
                .value(":customer", av::s(&customer)),
        )
        .await?;
    Ok(match item.get("stripe_customer_id") {
        Some(aws_sdk_dynamodb::types::AttributeValue::S(stored)) => stored.clone(),
        _ => customer,
    })
}

pub async fn create(
    app: &PaymentServices,
    principal: &Principal,
    input: NewPayment,
    meta: &RequestMeta,
) -> Result<(Payment, String), PaymentError> {
    if principal.role() == Role::Viewer {
        return Err(PaymentError::Forbidden);
    }
    let gateway = app.stripe(meta.deadline).await?;
    let provider = Provider::find(app, &input.provider_id)
        .await?
        .ok_or_else(|| PaymentError::Validation(vec![FieldError::new("provider_id", "no such provider")]))?;
    if provider.user_id == principal.user_id() {
        return Err(PaymentError::Validation(vec![FieldError::new("provider_id", "you cannot pay yourself")]));
    }
    let payment_id = input.payment_id;
    if let Some(existing) = Payment::find(app, &payment_id).await? {
        // This key made a payment before (a crashed attempt, or a key reused after its record
        // expired): the same request gets that payment again, another one is refused.
        let same = existing.payer_user_id == principal.user_id()
            && existing.amount == input.amount.minor_units()
            && existing.currency == input.currency.as_str()
            && existing.provider_id == input.provider_id;
        if !same {
            return Err(PaymentError::IdempotencyMismatch);
        }
        let intent = gateway.payment_intent(&existing.stripe_payment_intent_id).await?;
        let client_secret =
            intent.client_secret.ok_or_else(|| PaymentError::internal("PaymentIntent without secret"))?;
        return Ok((existing, client_secret));
    }
    let customer = customer_for(app, &principal.user, &gateway).await?;
    let intent = gateway
        .create_payment_intent(
            &format!("payment-intent:{payment_id}"),
            input.amount,
            &input.currency,
            &customer,
            &payment_id,
            input.description.as_deref(),
        )
        .await?;
    let now = time::rfc3339(time::now());
    let payment = Payment {
        pk: Payment::key(&payment_id),
        sk: SK.to_owned(),
        payment_id: payment_id.clone(),
        status: PaymentStatus::RequiresPayment,
        amount: input.amount.minor_units(),
        currency: input.currency.as_str().to_owned(),
        provider_id: provider.provider_id.clone(),
        provider_user_id: provider.user_id.clone(),
        payer_user_id: principal.user_id().to_owned(),
        payer_org_id: principal.org_id().to_owned(),
        gsi1pk: format!("PI#{}", intent.id),
        gsi1sk: SK.to_owned(),
        stripe_payment_intent_id: intent.id,
        transfer_id: None,
        stripe_charge_id: None,
        amount_refunded: 0,
        refund_ids: Vec::new(),
        failed_refund_ids: Vec::new(),
        refund_total_created: None,
        refund_failed_created: None,
        amount_unsettled: 0,
        unsettled_refunds: Default::default(),
        unsettled_claims: Default::default(),
        unsettled_seq: 0,
        unsettled_since: None,
        platform_fee_bps: app.settings().platform_fee.bps,
        platform_fee_fixed: app.settings().platform_fee.fixed,
        platform_fee: None,
        transfer_amount: None,
        stripe_fee: None,
        dispute: None,
        dispute_id: None,
        transfer_reversed_amount: None,
        settled_refund_ids: None,
        reversal_causes: Vec::new(),
        repaid_causes: Vec::new(),
        abandon_requested: false,
        release_amount: None,
        release_key: None,
        release_seq: 0,
        refund_seq: 0,
        refund_pending: None,
        refund_base: None,
        refund_key: None,
        refund_reason: None,
        refund_request: None,
        refund_request_hash: None,
        description: input.description,
        created_at: now.clone(),
        updated_at: now.clone(),
        queue: Some(AWAITING_PAYMENT_QUEUE.to_owned()),
        queued_at: Some(now.clone()),
        payer_history: Some(keys::payer_history(principal.user_id())),
        payer_history_at: Some(keys::history_at(&now, &payment_id)),
        payee_history: Some(keys::payee_history(&provider.user_id)),
        payee_history_at: Some(keys::history_at(&now, &payment_id)),
    };
    let audit = AuditEntry::new("payment.created", AuditStatus::Success, principal.org_id(), meta)
        .actor(principal.user_id())
        .details(json!({ "payment_id": payment_id, "amount": payment.amount, "currency": payment.currency, "provider_id": payment.provider_id }));
    let table = app.table();
    match table.transact(vec![table.put_new(&payment)?, app.audit().put(&audit)?]).await {
        Ok(()) => Ok((payment, intent.client_secret)),
        // An earlier attempt with this key stored it and then failed to answer: the same
        // payment, the same PaymentIntent.
        Err(StoreError::TransactionConditionsFailed(_)) => {
            let stored = Payment::find(app, &payment_id).await?.ok_or(PaymentError::IdempotencyInProgress)?;
            if stored.payer_user_id == principal.user_id()
                && stored.stripe_payment_intent_id == payment.stripe_payment_intent_id
            {
                Ok((stored, intent.client_secret))
            } else {
                Err(PaymentError::internal("a payment id derived from an idempotency key is taken by another payment"))
            }
        }
        Err(other) => Err(other.into()),
    }
}

/// The payment id for the caller's `Idempotency-Key` within `scope`: a UUID (version 8)
/// made from a SHA-256 of both, so every attempt with one key names one payment.
pub fn payment_id_for(scope: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{scope}\n{key}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// The payer, the provider's owner, or an admin of the payer's org; anyone else gets 404.
pub async fn get(app: &Services, principal: &Principal, payment_id: &str) -> Result<Payment, PaymentError> {
    let payment = Payment::find(app, payment_id).await?.ok_or(PaymentError::NotFound)?;
    if payment.is_payer_side(principal) || payment.provider_user_id == principal.user_id() {
        Ok(payment)
    } else {
        Err(PaymentError::NotFound)
    }
}

/// For the payer's side only: others who may see the payment get 403, strangers 404.
pub(super) async fn for_payer_side(
    app: &Services,
    principal: &Principal,
    payment_id: &str,
) -> Result<Payment, PaymentError> {
    let payment = get(app, principal, payment_id).await?;
    if payment.is_payer_side(principal) { Ok(payment) } else { Err(PaymentError::Forbidden) }
}

/// Whether `principal` may move `payment`'s money now, and the checks that keep it so until
/// the claim is written (put beside it in one transaction). The payer always may. An admin
/// of the org it was paid in may while they are an active admin there and the payer is still
/// a member of it (after the payer leaves, the org has no say); never the provider's owner.
pub(super) async fn mover_checks(
    app: &Services,
    principal: &Principal,
    payment: &Payment,
) -> Result<Vec<aws_sdk_dynamodb::types::TransactWriteItem>, PaymentError> {
    use crate::{
        identity::{Membership, invitations},
        store::keys,
    };
    if payment.payer_user_id == principal.user_id() {
        return Ok(Vec::new());
    }
    if !payment.is_payer_side(principal) {
        return Err(PaymentError::Forbidden);
    }
    let table = app.table();
    let org = keys::org(&payment.payer_org_id);
    let (admin_pk, admin_sk) = User::key(principal.user_id());
    let (payer_sk, admin_member_sk) = (keys::member(&payment.payer_user_id), keys::member(principal.user_id()));
    let (payer_member, admin_member, admin) = tokio::try_join!(
        table.get::<Membership>(&org, &payer_sk),
        table.get::<Membership>(&org, &admin_member_sk),
        table.get::<User>(&admin_pk, &admin_sk),
    )
    .map_err(PaymentError::from)?;
    let still_admin = admin_member.is_some_and(|m| m.role == Role::Admin)
        && admin.is_some_and(|a| invitations::is_active(&a) && a.org_id == payment.payer_org_id);
    if payer_member.is_none() || !still_admin {
        return Err(PaymentError::Forbidden);
    }
    let mut checks = invitations::still_active_admin(table, &payment.payer_org_id, principal.user_id())?.to_vec();
    checks.push(table.check(Change::new(&org, &payer_sk).condition("attribute_exists(PK)"))?);
    Ok(checks)
}

/// Moves `payment_id` from `from` to `to` if it is still in `from`.
pub(super) fn transition<'a>(pk: &'a str, from: PaymentStatus, to: PaymentStatus, now: &'a str) -> Change<'a> {
    Change::new(pk, SK)
        .update("SET #status = :to, updated_at = :now")
        .condition("#status = :from")
        .name("#status", "status")
        .value(":from", av::s(from.as_str()))
        .value(":to", av::s(to.as_str()))
        .value(":now", av::s(now))
}

/// Puts a payment that waits on Stripe (`from`, under the idempotency key in `key_attribute`)
/// back to `succeeded` after Stripe definitely did nothing, or to `refunded` if refunds left
/// nothing. `refunded`, when known, is Stripe's refunded total, which becomes the recorded
/// one. Conditioned on the key, so only the attempt that owns the state can undo it.
/// Returns the payment as it was read just before (`None` if it had left `from` already).
pub(super) async fn return_to_succeeded(
    app: &Services,
    payment_id: &str,
    from: PaymentStatus,
    key_attribute: &str,
    key: &str,
    refunded: Option<i64>,
) -> Result<Option<Payment>, PaymentError> {
    let table = app.table();
    let pk = Payment::key(payment_id);
    for _ in 0..3 {
        let Some(current) = Payment::find(app, payment_id).await? else { return Err(PaymentError::NotFound) };
        if current.status != from {
            return Ok(None);
        }
        let total = refunded.unwrap_or(current.amount_refunded).min(current.amount);
        let to = if total >= current.amount { PaymentStatus::Refunded } else { PaymentStatus::Succeeded };
        let now = time::rfc3339(time::now());
        // Items claimed before keys were recorded have none: their claim is the caller's.
        let condition = format!(
            "#status = :from AND (attribute_not_exists({key_attribute}) OR {key_attribute} = :key) AND {}",
            amount_refunded_is(current.amount_refunded)
        );
        let undo = transition(&pk, from, to, &now)
            .update(
                "SET #status = :to, updated_at = :now, amount_refunded = :total REMOVE GSI2PK, GSI2SK, \
                 release_amount, release_key, platform_fee, refund_pending, refund_base, refund_key, \
                 refund_reason, refund_request, refund_request_hash",
            )
            .condition(&condition)
            .value(":key", av::s(key))
            .value(":total", av::n(total))
            .value(":seen_refunded", av::n(current.amount_refunded));
        match table.update_item(undo).await {
            Ok(_) => return Ok(Some(current)),
            Err(StoreError::ConditionFailed) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(PaymentError::internal("the payment kept changing while being returned to succeeded"))
}

/// The audit entry and outbox message (the `payment.refunded` event) for refunds made outside
/// this API (Stripe's dashboard) that our own code found first (at release, or while
/// finishing a refund or a reconciliation): `amount` more, making `total`. Their
/// `charge.refunded` webhook then finds the total known and writes nothing, so this is their
/// one record.
pub(super) fn refunded_elsewhere(
    payment: &Payment,
    amount: i64,
    total: i64,
    found: &str,
    meta: &crate::caller::RequestMeta,
) -> (AuditEntry, crate::outbox::Message) {
    let entry = AuditEntry::new("payment.refunded", AuditStatus::Success, &payment.payer_org_id, meta).details(json!({
        "payment_id": payment.payment_id, "amount": amount, "amount_refunded": total,
        "currency": payment.currency, "source": "stripe", "found": found,
    }));
    let event = crate::notify::DomainEvent::new(
        "payment.refunded",
        json!({ "payment_id": payment.payment_id, "amount": amount, "amount_refunded": total,
                "currency": payment.currency }),
    );
    (entry, crate::outbox::Message::event(&event))
}

/// Condition: `amount_refunded` is still `:seen_refunded` (`seen`); an item written before
/// the attribute existed counts as 0.
pub(super) fn amount_refunded_is(seen: i64) -> String {
    number_is("amount_refunded", ":seen_refunded", seen)
}

/// Condition: the number `attribute` is still `placeholder` (`seen`), absent counting as 0.
pub(crate) fn number_is(attribute: &str, placeholder: &str, seen: i64) -> String {
    if seen == 0 {
        format!("(attribute_not_exists({attribute}) OR {attribute} = {placeholder})")
    } else {
        format!("{attribute} = {placeholder}")
    }
}

/// The idempotency key of release attempt `attempt` (1-based), `release:{payment_id}:{attempt}`:
/// a new attempt (after a definite refusal, or for a new amount) gets a new key, which is
/// safe because reconciliation lists the payment's transfers before any new attempt, and
/// Stripe never refuses it as a key reused with other parameters.
pub(super) fn release_key(payment_id: &str, attempt: i64) -> String {
    format!("release:{payment_id}:{attempt}")
}

/// The idempotency key of refund attempt `attempt` (1-based).
pub(super) fn refund_key(payment_id: &str, attempt: i64) -> String {
    format!("refund:{payment_id}:{attempt}")
}

/// Condition: no dispute holds the funds (see [`Payment::dispute_blocks`]).
pub(super) const NOT_HELD_BY_DISPUTE: &str =
    "(attribute_not_exists(dispute) OR dispute = :dispute_won OR dispute = :dispute_warning_closed)";

/// What a refund that failed after it was counted leaves behind, wherever it is found (its
/// webhook, or Stripe's list at release): the `payment.refund_failed` audit entry, the
/// `payment.refund_failed` event and the payer's notice that the money did not come back.
/// `total` and `unsettled` are the payment's `amount_refunded` and `amount_unsettled` after it.
pub(crate) struct RefundFailure<'a> {
    pub refund_id: &'a str,
    pub amount: i64,
    pub total: i64,
    pub unsettled: i64,
    pub failure_reason: Option<&'a str>,
    /// Where it was found: `webhook` or `at_release`.
    pub found: &'a str,
}

pub(crate) fn refund_failed_notice(
    payment: &Payment,
    failure: &RefundFailure<'_>,
    meta: &crate::caller::RequestMeta,
) -> (AuditEntry, Vec<crate::outbox::Message>) {
    use crate::{notify::Category, outbox::Message};
    let RefundFailure { refund_id, amount, total, unsettled, failure_reason, found } = *failure;
    let details = json!({
        "payment_id": payment.payment_id, "refund_id": refund_id, "amount": amount, "amount_refunded": total,
        "amount_unsettled": unsettled, "currency": payment.currency, "found": found,
        "failure_reason": failure_reason,
    });
    let entry =
        AuditEntry::new("payment.refund_failed", AuditStatus::Failure, &payment.payer_org_id, meta).details(details);
    let event = crate::notify::DomainEvent::new(
        "payment.refund_failed",
        json!({ "payment_id": payment.payment_id, "refund_id": refund_id, "amount": amount,
                "amount_refunded": total, "currency": payment.currency }),
    );
    let told = Message::push(
        &payment.payer_user_id,
        Category::Payments,
        "Refund failed",
        format!(
            "The refund of {} could not be made to your card; the payment stays with the platform.",
            super::money::format_amount(amount, &payment.currency)
        ),
        json!({ "payment_id": payment.payment_id, "event": "payment.refund_failed" }),
    );
    (entry, vec![Message::event(&event), told])
}
