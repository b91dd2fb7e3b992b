//! Payments held on the platform and released to the provider.
//!
//! Status: `requires_payment` → `succeeded` (held; set by the webhook) → `releasing` →
//! `released`; or `failed`, `refunding` → `refunded`. Every transition is one conditional
//! write, so the database decides races. Release is the protocol of DESIGN.md:
//! conditional `succeeded → releasing`, the Stripe transfer with the idempotency key
//! `release:{payment_id}`, conditional `releasing → released`; on a Stripe failure,
//! conditional `releasing → succeeded`. A crash in between leaves `releasing` with a
//! `GSI2` entry, which the cleanup job re-drives with the same key, so Stripe never pays
//! twice.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Amount, Currency, provider::Provider};
use crate::{
    App,
    audit::{AuditEntry, AuditStatus},
    http::{ApiError, FieldError, RequestMeta},
    identity::{Role, User, auth::Principal},
    notify::DomainEvent,
    store::{Change, StoreError, av},
    time,
};

const SK: &str = "PAYMENT";
pub const RELEASING_QUEUE: &str = "RELEASING";

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
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequiresPayment => "requires_payment",
            Self::Succeeded => "succeeded",
            Self::Releasing => "releasing",
            Self::Released => "released",
            Self::Failed => "failed",
            Self::Refunding => "refunding",
            Self::Refunded => "refunded",
        }
    }
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// `PI#{payment_intent}`: the webhook finds the payment by its PaymentIntent.
    #[serde(rename = "GSI1PK")]
    pub gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    pub gsi1sk: String,
}

impl Payment {
    pub fn key(payment_id: &str) -> String {
        format!("PAYMENT#{payment_id}")
    }

    pub async fn find(app: &App, payment_id: &str) -> Result<Option<Payment>, StoreError> {
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
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    fn is_payer_side(&self, principal: &Principal) -> bool {
        self.payer_user_id == principal.user_id()
            || (self.payer_org_id == principal.org_id() && principal.role() == Role::Admin)
    }
}

pub struct NewPayment {
    pub amount: Amount,
    pub currency: Currency,
    pub provider_id: String,
    pub description: Option<String>,
}

/// The caller's Stripe customer, created on first use with a key that makes concurrent
/// first uses agree on one customer.
pub async fn customer_for(app: &App, user: &User) -> Result<String, ApiError> {
    if let Some(id) = &user.stripe_customer_id {
        return Ok(id.clone());
    }
    let gateway = app.payments().await?;
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
    app: &App,
    principal: &Principal,
    input: NewPayment,
    meta: &RequestMeta,
) -> Result<(Payment, String), ApiError> {
    if principal.role() == Role::Viewer {
        return Err(ApiError::Forbidden);
    }
    let gateway = app.payments().await?;
    let provider = Provider::find(app, &input.provider_id)
        .await?
        .ok_or_else(|| ApiError::Validation(vec![FieldError::new("provider_id", "no such provider")]))?;
    if provider.user_id == principal.user_id() {
        return Err(ApiError::Validation(vec![FieldError::new("provider_id", "you cannot pay yourself")]));
    }
    let customer = customer_for(app, &principal.user).await?;
    let payment_id = uuid::Uuid::new_v4().to_string();
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
        refund_id: None,
        description: input.description,
        created_at: now.clone(),
        updated_at: now,
    };
    let audit = AuditEntry::new("payment.created", AuditStatus::Success, principal.org_id(), meta)
        .actor(principal.user_id())
        .details(json!({ "payment_id": payment_id, "amount": payment.amount, "currency": payment.currency, "provider_id": payment.provider_id }));
    let table = app.table();
    table.transact(vec![table.put_new(&payment)?, app.audit().put(&audit)?]).await?;
    Ok((payment, intent.client_secret))
}

/// The payer, the provider's owner, or an admin of the payer's org; anyone else gets 404.
pub async fn get(app: &App, principal: &Principal, payment_id: &str) -> Result<Payment, ApiError> {
    let payment = Payment::find(app, payment_id).await?.ok_or(ApiError::NotFound)?;
    if payment.is_payer_side(principal) || payment.provider_user_id == principal.user_id() {
        Ok(payment)
    } else {
        Err(ApiError::NotFound)
    }
}

/// For the payer's side only: others who may see the payment get 403, strangers 404.
async fn for_payer_side(app: &App, principal: &Principal, payment_id: &str) -> Result<Payment, ApiError> {
    let payment = get(app, principal, payment_id).await?;
    if payment.is_payer_side(principal) { Ok(payment) } else { Err(ApiError::Forbidden) }
}

/// Moves `payment_id` from `from` to `to` if it is still in `from`.
fn transition<'a>(pk: &'a str, from: PaymentStatus, to: PaymentStatus, now: &'a str) -> Change<'a> {
    Change::new(pk, SK)
        .update("SET #status = :to, updated_at = :now")
        .condition("#status = :from")
        .name("#status", "status")
        .value(":from", av::s(from.as_str()))
        .value(":to", av::s(to.as_str()))
        .value(":now", av::s(now))
}

pub struct Released {
    pub transfer_id: String,
    pub already_released: bool,
}

pub async fn release(
    app: &App,
    principal: &Principal,
    payment_id: &str,
    meta: &RequestMeta,
) -> Result<Released, ApiError> {
    let payment = for_payer_side(app, principal, payment_id).await?;
    match payment.status {
        PaymentStatus::Released => {
            return Ok(Released { transfer_id: payment.transfer_id.unwrap_or_default(), already_released: true });
        }
        PaymentStatus::Releasing => return Err(ApiError::ReleaseInProgress),
        PaymentStatus::Succeeded => {}
        _ => return Err(ApiError::PaymentNotSucceeded),
    }
    let provider =
        Provider::find(app, &payment.provider_id).await?.ok_or_else(|| ApiError::internal("provider missing"))?;
    let Some(destination) = provider.stripe_account_id.clone().filter(|_| provider.payouts_enabled) else {
        return Err(ApiError::OnboardingRequired);
    };
    let gateway = app.payments().await?;

    // 1. succeeded → releasing: of any number of concurrent calls, one gets here.
    let table = app.table();
    let now = time::rfc3339(time::now());
    let pk = Payment::key(payment_id);
    let claim = transition(&pk, PaymentStatus::Succeeded, PaymentStatus::Releasing, &now)
        .update("SET #status = :to, updated_at = :now, GSI2PK = :queue, GSI2SK = :now")
        .value(":queue", av::s(RELEASING_QUEUE));
    match table.update_item(claim).await {
        Ok(_) => {}
        Err(StoreError::ConditionFailed) => {
            let current = Payment::find(app, payment_id).await?.ok_or(ApiError::NotFound)?;
            return match current.status {
                PaymentStatus::Released => {
                    Ok(Released { transfer_id: current.transfer_id.unwrap_or_default(), already_released: true })
                }
                PaymentStatus::Releasing => Err(ApiError::ReleaseInProgress),
                _ => Err(ApiError::PaymentNotSucceeded),
            };
        }
        Err(other) => return Err(other.into()),
    }

    // 2. The transfer. The key makes every retry (ours, the cleanup job's) the same transfer.
    let currency = Currency::parse(&payment.currency).map_err(ApiError::internal)?;
    let transfer = gateway
        .create_transfer(&format!("release:{payment_id}"), payment.amount, &currency, &destination, payment_id)
        .await;
    let transfer_id = match transfer {
        Ok(id) => id,
        Err(error) => {
            // 3b. releasing → succeeded, so the payer can try again.
            let now = time::rfc3339(time::now());
            let revert = transition(&pk, PaymentStatus::Releasing, PaymentStatus::Succeeded, &now)
                .update("SET #status = :to, updated_at = :now REMOVE GSI2PK, GSI2SK");
            if let Err(revert_error) = table.update_item(revert).await {
                // Left in `releasing`: the cleanup job re-drives it with the same key.
                tracing::error!(%revert_error, %payment_id, "could not return the payment to succeeded");
            }
            let entry = AuditEntry::new("payment.released", AuditStatus::Failure, &payment.payer_org_id, meta)
                .actor(principal.user_id())
                .details(json!({ "payment_id": payment_id, "reason": error.to_string() }));
            app.audit().record_or_log(&entry).await;
            return Err(error.into());
        }
    };
    // 3a. releasing → released, with its audit entry.
    let transfer_id = finish_release(app, &payment, &transfer_id, Some(principal.user_id()), meta).await?;
    notify_released(app, &payment, &provider, &transfer_id).await;
    Ok(Released { transfer_id, already_released: false })
}

/// Records a completed transfer: conditional `releasing → released`. Returns the transfer
/// id stored (another finisher's, if it won the race with the same transfer).
pub async fn finish_release(
    app: &App,
    payment: &Payment,
    transfer_id: &str,
    actor: Option<&str>,
    meta: &RequestMeta,
) -> Result<String, ApiError> {
    let table = app.table();
    let now = time::rfc3339(time::now());
    let pk = Payment::key(&payment.payment_id);
    let mut entry = AuditEntry::new("payment.released", AuditStatus::Success, &payment.payer_org_id, meta)
        .target(&payment.provider_user_id)
        .details(json!({ "payment_id": payment.payment_id, "transfer_id": transfer_id, "amount": payment.amount, "currency": payment.currency }));
    if let Some(actor) = actor {
        entry = entry.actor(actor);
    }
    let done = transition(&pk, PaymentStatus::Releasing, PaymentStatus::Released, &now)
        .update("SET #status = :to, updated_at = :now, transfer_id = :transfer REMOVE GSI2PK, GSI2SK")
        .value(":transfer", av::s(transfer_id));
    match table.transact(vec![table.update(done)?, app.audit().put(&entry)?]).await {
        Ok(()) => Ok(transfer_id.to_owned()),
        Err(StoreError::TransactionConditionsFailed(_)) => {
            let current = Payment::find(app, &payment.payment_id).await?.ok_or(ApiError::NotFound)?;
            match (current.status, current.transfer_id) {
                (PaymentStatus::Released, Some(stored)) => Ok(stored),
                _ => Err(ApiError::internal("payment left releasing in an unexpected state")),
            }
        }
        Err(other) => Err(other.into()),
    }
}

async fn notify_released(app: &App, payment: &Payment, provider: &Provider, transfer_id: &str) {
    app.events()
        .publish_or_log(DomainEvent::new(
            "payment.released",
            json!({ "payment_id": payment.payment_id, "provider_id": payment.provider_id, "transfer_id": transfer_id,
                    "amount": payment.amount, "currency": payment.currency }),
        ))
        .await;
    if let Some(phone) = &provider.phone {
        let text = format!(
            "You have been paid: {}.{:02} {} is on its way to your account.",
            payment.amount / 100,
            payment.amount % 100,
            payment.currency.to_uppercase()
        );
        if let Err(error) = app.events().send_sms(phone, &text).await {
            tracing::error!(%error, "release SMS not sent");
        }
    }
}

/// Refunds a payment that has not been released.
pub async fn refund(
    app: &App,
    principal: &Principal,
    payment_id: &str,
    reason: Option<&str>,
    meta: &RequestMeta,
) -> Result<Payment, ApiError> {
    let payment = for_payer_side(app, principal, payment_id).await?;
    match payment.status {
        PaymentStatus::Refunded => return Ok(payment),
        PaymentStatus::Succeeded => {}
        PaymentStatus::Released | PaymentStatus::Releasing => {
            return Err(ApiError::Conflict(
                "the payment has been released to the provider and can no longer be refunded".into(),
            ));
        }
        PaymentStatus::Refunding => return Err(ApiError::Conflict("a refund of this payment is in progress".into())),
        _ => return Err(ApiError::PaymentNotSucceeded),
    }
    let gateway = app.payments().await?;
    let table = app.table();
    let pk = Payment::key(payment_id);
    let now = time::rfc3339(time::now());
    match table.update_item(transition(&pk, PaymentStatus::Succeeded, PaymentStatus::Refunding, &now)).await {
        Ok(_) => {}
        Err(StoreError::ConditionFailed) => {
            return Err(ApiError::Conflict("the payment changed; read it again".into()));
        }
        Err(other) => return Err(other.into()),
    }
    let refund = gateway
        .create_refund(&format!("refund:{payment_id}"), &payment.stripe_payment_intent_id, payment_id, reason)
        .await;
    let now = time::rfc3339(time::now());
    let refund_id = match refund {
        Ok(id) => id,
        Err(error) => {
            if let Err(e) =
                table.update_item(transition(&pk, PaymentStatus::Refunding, PaymentStatus::Succeeded, &now)).await
            {
                tracing::error!(%e, %payment_id, "could not return the payment to succeeded after a failed refund");
            }
            return Err(error.into());
        }
    };
    let entry = AuditEntry::new("payment.refunded", AuditStatus::Success, &payment.payer_org_id, meta)
        .actor(principal.user_id())
        .details(json!({ "payment_id": payment_id, "refund_id": refund_id, "reason": reason }));
    let done = transition(&pk, PaymentStatus::Refunding, PaymentStatus::Refunded, &now)
        .update("SET #status = :to, updated_at = :now, refund_id = :refund")
        .value(":refund", av::s(&refund_id));
    table.transact(vec![table.update(done)?, app.audit().put(&entry)?]).await?;
    app.events()
        .publish_or_log(DomainEvent::new(
            "payment.refunded",
            json!({ "payment_id": payment_id, "refund_id": refund_id, "amount": payment.amount, "currency": payment.currency }),
        ))
        .await;
    Payment::find(app, payment_id).await?.ok_or(ApiError::NotFound)
}
