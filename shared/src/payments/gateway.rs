//! The Stripe port: one client per cold start, timeouts, and bounded retries that reuse one
//! idempotency key, so a retried call can never create a second object at Stripe.

use std::{sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};

use super::{
    money::{Amount, Currency},
    proration::Proration,
};
use crate::{config::Settings, deadline::Deadline, secrets::Secrets};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The outcome is unknown: Stripe failed (5xx), was busy (429, 409), timed out or could
    /// not be reached, even after retries. The object may exist at Stripe.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// Stripe answered and refused (4xx): nothing was created.
    #[error("Stripe refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// Nothing was sent: the invocation's deadline left no time for a call.
    #[error("Stripe was not called: {0}")]
    NotSent(String),
}

impl GatewayError {
    /// Whether Stripe definitely did nothing (so a claimed state may be returned).
    pub fn is_definite(&self) -> bool {
        !matches!(self, Self::Unavailable(_))
    }

    /// A short, stable reason for audit entries (organisation admins read those; Stripe's
    /// own text stays in the logs).
    pub fn reason(&self) -> String {
        match self {
            Self::Unavailable(_) => "stripe_unavailable".into(),
            Self::Refused { status, .. } => format!("stripe_refused_{status}"),
            Self::NotSent(_) => "no_time_left".into(),
        }
    }
}

fn classify(error: StripeError) -> (bool, GatewayError) {
    match error {
        StripeError::Stripe(details, status) => {
            let message = details.message.clone().unwrap_or_else(|| "no message".into());
            // 409: a request with the same key is still running at Stripe.
            if status >= 500 || status == 429 || status == 409 {
                (true, GatewayError::Unavailable(format!("{status}: {message}")))
            } else {
                (false, GatewayError::Refused { status, message })
            }
        }
        StripeError::Timeout => (true, GatewayError::Unavailable("timeout".into())),
        StripeError::ClientError(e) => (true, GatewayError::Unavailable(e)),
        other => (false, GatewayError::Unavailable(other.to_string())),
    }
}

/// The Stripe client of one cold start. Calls go through [`Stripe`], which budgets them
/// against an invocation's deadline.
pub struct Gateway {
    client: stripe::Client,
    timeout: Duration,
    max_attempts: u32,
}

/// What a created PaymentIntent gives back.
pub struct CreatedIntent {
    pub id: String,
    pub client_secret: String,
}

/// A transfer as reconciliation sees it.
#[derive(Debug, Clone)]
pub struct TransferRecord {
    pub id: String,
    pub amount: i64,
    pub amount_reversed: i64,
    /// Set on a transfer that re-pays a reversed cause (metadata `cause`): not a release.
    pub cause: Option<String>,
}

/// A transfer reversal: what came back from the provider, and for which cause (metadata
/// `cause`: the refund or dispute it recovers).
#[derive(Debug, Clone)]
pub struct ReversalRecord {
    pub id: String,
    pub amount: i64,
    pub cause: Option<String>,
}

/// A refund as reconciliation sees it.
#[derive(Debug, Clone)]
pub struct RefundRecord {
    pub id: String,
    pub amount: i64,
    /// `pending`, `requires_action`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    pub refund_key: Option<String>,
    /// The payment id in its metadata (every refund we make carries one).
    pub payment_id: Option<String>,
    /// When Stripe made it (epoch seconds).
    pub created: i64,
}

impl RefundRecord {
    /// Whether the money went (or is going) back: not failed or canceled.
    pub fn counts(&self) -> bool {
        !matches!(self.status.as_str(), "failed" | "canceled")
    }

    /// Whether it may still fail: Stripe has not settled it yet.
    pub fn is_pending(&self) -> bool {
        matches!(self.status.as_str(), "pending" | "requires_action")
    }
}

impl Gateway {
    /// `None` when the Stripe secret holds no key.
    pub fn from_config(settings: &Settings, secrets: &Secrets) -> Result<Option<Self>, GatewayError> {
        let Some(key) = &secrets.stripe_secret_key else {
            return Ok(None);
        };
        let mut builder = stripe::ClientBuilder::new(key.expose_secret()).timeout(settings.stripe.timeout);
        if let Some(base) = &settings.stripe.api_base {
            builder = builder.url(base.clone());
        }
        let client = builder.build().map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        Ok(Some(Self { client, timeout: settings.stripe.timeout, max_attempts: settings.stripe.max_attempts }))
    }

    /// Calls made within `deadline`.
    pub fn within(self: &Arc<Self>, deadline: Deadline) -> Stripe {
        Stripe { gateway: self.clone(), deadline }
    }
}

/// Stripe calls budgeted against one invocation's deadline: each attempt starts only if it
/// can finish (timeout included) with [`crate::deadline::WRITE_RESERVE`] to spare.
pub struct Stripe {
    gateway: Arc<Gateway>,
    deadline: Deadline,
}

impl Stripe {
    /// Whether one call could still be made: checked before claiming a state, so a request
    /// too close to its deadline changes nothing.
    pub fn has_time(&self) -> bool {
        self.deadline.budget_for(self.gateway.timeout).is_some()
    }

    /// Sends `request` until it succeeds, fails for good, the attempts are spent or the
    /// deadline leaves no time for another; every attempt with the same idempotency key, if
    /// any. Stripe's answer is read as `T` (see [`answers`]).
    async fn call<T: miniserde::Deserialize>(
        &self,
        key: Option<&str>,
        request: &impl StripeRequest,
    ) -> Result<T, GatewayError> {
        let strategy = match key {
            Some(key) => RequestStrategy::Idempotent(
                IdempotencyKey::new(key).map_err(|e| GatewayError::NotSent(format!("bad idempotency key: {e}")))?,
            ),
            None => RequestStrategy::Once,
        };
        let mut attempt = 0;
        let mut last_error = None;
        while attempt < self.gateway.max_attempts {
            let Some(budget) = self.deadline.budget_for(self.gateway.timeout) else {
                break;
            };
            attempt += 1;
            let attempt_once = request.build().customize::<T>().request_strategy(strategy.clone()).send(self.client());
            let error = match tokio::time::timeout(budget, attempt_once).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => {
                    let (retryable, error) = classify(error);
                    if !retryable {
                        return Err(error);
                    }
                    error
                }
                Err(_) => GatewayError::Unavailable("the invocation's deadline cut the call short".into()),
            };
            tracing::warn!(%error, attempt, "Stripe call failed; retrying with the same idempotency key");
            last_error = Some(error);
            if attempt < self.gateway.max_attempts {
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt - 1))).await;
            }
        }
        Err(last_error.unwrap_or_else(|| GatewayError::NotSent("no time left before the deadline".into())))
    }

    fn client(&self) -> &stripe::Client {
        &self.gateway.client
    }

    /// An Express connected account for a provider.
    pub async fn create_account(
        &self,
        key: &str,
        country: Option<&str>,
        business_type: Option<&str>,
        email: &str,
        provider_id: &str,
    ) -> Result<String, GatewayError> {
        use stripe_connect::account::{
            CreateAccount, CreateAccountCapabilities, CreateAccountCapabilitiesTransfers, CreateAccountType,
        };
        use stripe_shared::AccountBusinessType as CreateAccountBusinessType;
        // Separate charges and transfers need only `transfers` on the connected account:
        // requested here, it becomes active when onboarding is done (Stripe refuses a
        // transfer to an account without it).
        let mut capabilities = CreateAccountCapabilities::new();
        capabilities.transfers = Some(CreateAccountCapabilitiesTransfers { requested: Some(true) });
        let mut request = CreateAccount::new()
            .type_(CreateAccountType::Express)
            .capabilities(capabilities)
            .email(email)
            .metadata([("provider_id".to_owned(), provider_id.to_owned())]);
        if let Some(country) = country {
            request = request.country(country);
        }
        if let Some(kind) = business_type {
            request = request.business_type(match kind {
                "company" => CreateAccountBusinessType::Company,
                "non_profit" => CreateAccountBusinessType::NonProfit,
                "government_entity" => CreateAccountBusinessType::GovernmentEntity,
                _ => CreateAccountBusinessType::Individual,
            });
        }
        let account: answers::Object = self.call(Some(key), &request).await?;
        Ok(account.id)
    }

    /// The connected account's onboarding flags as Stripe holds them now.
    pub async fn account_flags(&self, account: &str) -> Result<AccountFlags, GatewayError> {
        use stripe_connect::account::RetrieveAccount;
        let account: answers::Account = self.call(None, &RetrieveAccount::new(account)).await?;
        Ok(AccountFlags {
            charges_enabled: account.charges_enabled.unwrap_or(false),
            payouts_enabled: account.payouts_enabled.unwrap_or(false),
        })
    }

    /// A fresh onboarding link (links are single-use and short-lived, so never cached).
    pub async fn create_account_link(
        &self,
        account: &str,
        refresh_url: &str,
        return_url: &str,
    ) -> Result<String, GatewayError> {
        use stripe_connect::account_link::CreateAccountLink;
        use stripe_connect::account_link::CreateAccountLinkType;
        let key = format!("account-link:{}", uuid::Uuid::new_v4());
        let request = CreateAccountLink::new(account, CreateAccountLinkType::AccountOnboarding)
            .refresh_url(refresh_url)
            .return_url(return_url);
        let link: answers::Link = self.call(Some(&key), &request).await?;
        Ok(link.url)
    }

    pub async fn create_customer(&self, key: &str, email: &str, user_id: &str) -> Result<String, GatewayError> {
        use stripe_core::customer::CreateCustomer;
        let request = CreateCustomer::new().email(email).metadata([("user_id".to_owned(), user_id.to_owned())]);
        let customer: answers::Object = self.call(Some(key), &request).await?;
        Ok(customer.id)
    }

    /// Deletes a customer (with its email) at Stripe, which also cancels its subscriptions
    /// at once. A customer Stripe no longer knows counts as deleted.
    pub async fn delete_customer(&self, id: &str) -> Result<(), GatewayError> {
        use stripe_core::customer::DeleteCustomer;
        let request = DeleteCustomer::new(id);
        let deleted: Result<answers::Object, _> = self.call(None, &request).await;
        match deleted {
            Ok(_) | Err(GatewayError::Refused { status: 404, .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// A PaymentIntent charged to the platform, grouped for the later transfer.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_payment_intent(
        &self,
        key: &str,
        amount: Amount,
        currency: &Currency,
        customer: &str,
        payment_id: &str,
        description: Option<&str>,
    ) -> Result<CreatedIntent, GatewayError> {
        use stripe_core::payment_intent::{CreatePaymentIntent, CreatePaymentIntentAutomaticPaymentMethods};
        let mut request = CreatePaymentIntent::new(amount.minor_units(), currency.to_stripe())
            .customer(customer)
            .transfer_group(payment_id)
            .automatic_payment_methods(CreatePaymentIntentAutomaticPaymentMethods::new(true))
            .metadata([("payment_id".to_owned(), payment_id.to_owned())]);
        if let Some(description) = description {
            request = request.description(description);
        }
        let intent: answers::Intent = self.call(Some(key), &request).await?;
        let client_secret = intent
            .client_secret
            .clone()
            .ok_or_else(|| GatewayError::Unavailable("PaymentIntent without client_secret".into()))?;
        Ok(CreatedIntent { id: intent.id, client_secret })
    }

    /// Moves held funds to the provider's connected account. `source_transaction` ties the
    /// transfer to the charge, so it cannot outrun the charge's funds becoming available;
    /// `transfer_group` and the metadata let reconciliation find it again.
    pub async fn create_transfer(&self, key: &str, transfer: &NewTransfer<'_>) -> Result<String, GatewayError> {
        use stripe_connect::transfer::CreateTransfer;
        let mut metadata = vec![("payment_id".to_owned(), transfer.payment_id.to_owned())];
        if let Some(cause) = transfer.cause {
            metadata.push(("cause".to_owned(), cause.to_owned()));
        }
        let mut request = CreateTransfer::new(transfer.currency.to_stripe(), transfer.destination)
            .amount(transfer.amount)
            .transfer_group(transfer.payment_id)
            .metadata(metadata.into_iter().collect::<std::collections::HashMap<_, _>>());
        if let Some(charge) = transfer.source_transaction {
            request = request.source_transaction(charge);
        }
        let created: answers::Object = self.call(Some(key), &request).await?;
        Ok(created.id)
    }

    /// Every transfer in the payment's group: its release (one at most) and any re-payments.
    pub async fn transfers_for(&self, payment_id: &str) -> Result<Vec<TransferRecord>, GatewayError> {
        use stripe_connect::transfer::ListTransfer;
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = ListTransfer::new().transfer_group(payment_id).limit(100);
            if let Some(after) = &after {
                request = request.starting_after(after.clone());
            }
            let page: answers::Transfers = self.call(None, &request).await?;
            after = page.data.last().map(|t| t.id.clone());
            found.extend(page.data.into_iter().map(|t| TransferRecord {
                cause: t.metadata.as_ref().and_then(|m| m.get("cause").cloned()),
                id: t.id,
                amount: t.amount,
                amount_reversed: t.amount_reversed,
            }));
            if !page.has_more || after.is_none() {
                return Ok(found);
            }
        }
    }

    /// Every reversal of the transfer, each with the cause it recovers.
    pub async fn reversals_of(&self, transfer_id: &str) -> Result<Vec<ReversalRecord>, GatewayError> {
        use stripe_connect::transfer_reversal::ListIdTransferReversal;
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = ListIdTransferReversal::new(transfer_id).limit(100);
            if let Some(after) = &after {
                request = request.starting_after(after.clone());
            }
            let page: answers::Reversals = self.call(None, &request).await?;
            after = page.data.last().map(|r| r.id.clone());
            found.extend(page.data.into_iter().map(reversal_record));
            if !page.has_more || after.is_none() {
                return Ok(found);
            }
        }
    }

    /// Takes `amount` of the transfer back from the connected account, for `cause`.
    pub async fn reverse_transfer(
        &self,
        key: &str,
        transfer_id: &str,
        amount: i64,
        payment_id: &str,
        cause: &str,
    ) -> Result<ReversalRecord, GatewayError> {
        use stripe_connect::transfer_reversal::CreateIdTransferReversal;
        let request = CreateIdTransferReversal::new(transfer_id)
            .amount(amount)
            .metadata([("payment_id".to_owned(), payment_id.to_owned()), ("cause".to_owned(), cause.to_owned())]);
        let created: answers::Reversal = self.call(Some(key), &request).await?;
        Ok(reversal_record(created))
    }

    /// A refund of `amount` (minor units) of the PaymentIntent's charge; `refund_key` goes
    /// into its metadata so reconciliation can tell our refunds apart.
    pub async fn create_refund(&self, refund_key: &str, refund: &NewRefund<'_>) -> Result<RefundRecord, GatewayError> {
        use stripe_core::refund::{CreateRefund, CreateRefundReason};
        let mut request = CreateRefund::new().payment_intent(refund.payment_intent).amount(refund.amount).metadata([
            ("payment_id".to_owned(), refund.payment_id.to_owned()),
            ("refund_key".to_owned(), refund_key.to_owned()),
        ]);
        if let Some(reason) = refund.reason {
            request = request.reason(match reason {
                "duplicate" => CreateRefundReason::Duplicate,
                "fraudulent" => CreateRefundReason::Fraudulent,
                _ => CreateRefundReason::RequestedByCustomer,
            });
        }
        let created: answers::Refund = self.call(Some(refund_key), &request).await?;
        Ok(refund_record(created))
    }

    /// Every refund of the PaymentIntent's charge.
    pub async fn refunds_for(&self, payment_intent: &str) -> Result<Vec<RefundRecord>, GatewayError> {
        use stripe_core::refund::ListRefund;
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = ListRefund::new().payment_intent(payment_intent).limit(100);
            if let Some(after) = &after {
                request = request.starting_after(after.clone());
            }
            let page: answers::Refunds = self.call(None, &request).await?;
            after = page.data.last().map(|r| r.id.clone());
            found.extend(page.data.into_iter().map(refund_record));
            if !page.has_more || after.is_none() {
                return Ok(found);
            }
        }
    }

    /// What Stripe has refunded of the PaymentIntent's charge so far: the truth that
    /// webhooks report late.
    pub async fn refunded_total(&self, payment_intent: &str) -> Result<i64, GatewayError> {
        Ok(self.refunds_for(payment_intent).await?.iter().filter(|r| r.counts()).map(|r| r.amount).sum())
    }

    /// The PaymentIntent's charge with Stripe's processing fee on it (its balance
    /// transaction, expanded in the same call).
    pub async fn charge_with_fee(&self, payment_intent: &str) -> Result<ChargeState, GatewayError> {
        use stripe_core::payment_intent::RetrievePaymentIntent;
        let request =
            RetrievePaymentIntent::new(payment_intent).expand(vec!["latest_charge.balance_transaction".to_owned()]);
        let intent: answers::IntentWithCharge = self.call(None, &request).await?;
        let charge = intent.latest_charge;
        Ok(ChargeState {
            succeeded: intent.status == "succeeded",
            stripe_fee: charge.as_ref().and_then(|c| c.balance_transaction.as_ref()).map(|b| b.fee),
            charge: charge.map(|c| c.id),
        })
    }

    /// Cancels a PaymentIntent nobody paid (`cancellation_reason=abandoned`). Stripe refuses
    /// (400) one that succeeded meanwhile, or is processing: the caller reads it again.
    pub async fn cancel_abandoned_intent(&self, key: &str, id: &str) -> Result<IntentState, GatewayError> {
        use stripe_core::payment_intent::{CancelPaymentIntent, CancelPaymentIntentCancellationReason};
        let request =
            CancelPaymentIntent::new(id).cancellation_reason(CancelPaymentIntentCancellationReason::Abandoned);
        let intent: answers::Intent = self.call(Some(key), &request).await?;
        Ok(IntentState {
            status: intent.status,
            latest_charge: intent.latest_charge,
            client_secret: intent.client_secret,
        })
    }

    /// The PaymentIntent's status and latest charge.
    pub async fn payment_intent(&self, id: &str) -> Result<IntentState, GatewayError> {
        use stripe_core::payment_intent::RetrievePaymentIntent;
        let request = RetrievePaymentIntent::new(id);
        let intent: answers::Intent = self.call(None, &request).await?;
        Ok(IntentState {
            status: intent.status,
            latest_charge: intent.latest_charge,
            client_secret: intent.client_secret,
        })
    }
}

/// A PaymentIntent's charge as a release needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeState {
    pub succeeded: bool,
    pub charge: Option<String>,
    /// Stripe's processing fee (minor units of the charge's currency), once it is known.
    pub stripe_fee: Option<i64>,
}

/// What a connected account may do, as `account.updated` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountFlags {
    pub charges_enabled: bool,
    pub payouts_enabled: bool,
}

/// What a transfer is made of.
pub struct NewTransfer<'a> {
    pub payment_id: &'a str,
    pub amount: i64,
    pub currency: &'a Currency,
    pub destination: &'a str,
    pub source_transaction: Option<&'a str>,
    /// What a re-payment makes good (a dispute won after its reversal); `None` for a release.
    pub cause: Option<&'a str>,
}

/// What a refund is made of.
pub struct NewRefund<'a> {
    pub payment_id: &'a str,
    pub payment_intent: &'a str,
    pub amount: i64,
    pub reason: Option<&'a str>,
}

/// What Stripe says of a PaymentIntent.
pub struct IntentState {
    pub status: String,
    pub latest_charge: Option<String>,
    pub client_secret: Option<String>,
}

fn reversal_record(reversal: answers::Reversal) -> ReversalRecord {
    ReversalRecord {
        cause: reversal.metadata.as_ref().and_then(|m| m.get("cause").cloned()),
        id: reversal.id,
        amount: reversal.amount,
    }
}

fn refund_record(refund: answers::Refund) -> RefundRecord {
    RefundRecord {
        id: refund.id,
        amount: refund.amount,
        status: refund.status.unwrap_or_default(),
        refund_key: refund.metadata.as_ref().and_then(|m| m.get("refund_key").cloned()),
        payment_id: refund.metadata.as_ref().and_then(|m| m.get("payment_id").cloned()),
        created: refund.created,
    }
}

/// What Stripe says of a subscription.
pub struct SubscriptionState {
    pub id: String,
    pub status: String,
    pub cancel_at_period_end: bool,
    pub client_secret: Option<String>,
    /// Its (first) item, the one a plan change moves to another price, and that price.
    pub item_id: Option<String>,
    pub price_id: Option<String>,
}

fn subscription_state(sub: answers::Subscription) -> SubscriptionState {
    let client_secret = sub.latest_invoice.as_ref().and_then(answers::confirmation_secret);
    let item = sub.items.data.into_iter().next();
    SubscriptionState {
        id: sub.id,
        status: sub.status,
        cancel_at_period_end: sub.cancel_at_period_end,
        client_secret,
        price_id: item.as_ref().map(|i| i.price.id.clone()),
        item_id: item.map(|i| i.id),
    }
}

/// What we read of Stripe's answers: the fields we use and nothing else. async-stripe's own
/// response types parse Stripe's whole object model (an Account, a PaymentIntent or a
/// Subscription brings every object it can expand to), which was most of a payment
/// function's binary; these are sent with the same typed requests, parsed the same way
/// (miniserde, unknown fields skipped).
mod answers {
    use std::collections::BTreeMap;

    use miniserde::{Deserialize, json::Value};

    /// Anything of which we keep the id: an account, a customer (or its deletion), a
    /// transfer.
    #[derive(Deserialize)]
    pub struct Object {
        pub id: String,
    }

    #[derive(Deserialize)]
    pub struct Account {
        pub charges_enabled: Option<bool>,
        pub payouts_enabled: Option<bool>,
    }

    #[derive(Deserialize)]
    pub struct Link {
        pub url: String,
    }

    #[derive(Deserialize)]
    pub struct Intent {
        pub id: String,
        pub status: String,
        pub client_secret: Option<String>,
        /// An id: we never expand it.
        pub latest_charge: Option<String>,
    }

    /// A PaymentIntent with `latest_charge.balance_transaction` expanded.
    #[derive(Deserialize)]
    pub struct IntentWithCharge {
        pub status: String,
        pub latest_charge: Option<Charge>,
    }

    #[derive(Deserialize)]
    pub struct Charge {
        pub id: String,
        pub balance_transaction: Option<BalanceTransaction>,
    }

    #[derive(Deserialize)]
    pub struct BalanceTransaction {
        pub fee: i64,
    }

    #[derive(Deserialize)]
    pub struct Transfer {
        pub id: String,
        pub amount: i64,
        pub amount_reversed: i64,
        pub metadata: Option<BTreeMap<String, String>>,
    }

    #[derive(Deserialize)]
    pub struct Transfers {
        pub data: Vec<Transfer>,
        pub has_more: bool,
    }

    #[derive(Deserialize)]
    pub struct Reversal {
        pub id: String,
        pub amount: i64,
        pub metadata: Option<BTreeMap<String, String>>,
    }

    #[derive(Deserialize)]
    pub struct Reversals {
        pub data: Vec<Reversal>,
        pub has_more: bool,
    }

    #[derive(Deserialize)]
    pub struct Refund {
        pub id: String,
        pub amount: i64,
        pub created: i64,
        pub status: Option<String>,
        pub metadata: Option<BTreeMap<String, String>>,
    }

    #[derive(Deserialize)]
    pub struct Refunds {
        pub data: Vec<Refund>,
        pub has_more: bool,
    }

    #[derive(Deserialize)]
    pub struct Subscription {
        pub id: String,
        pub status: String,
        pub cancel_at_period_end: bool,
        /// An id, or the invoice itself where the request expanded it.
        pub latest_invoice: Option<Value>,
        pub items: Items,
    }

    #[derive(Deserialize)]
    pub struct Items {
        pub data: Vec<Item>,
    }

    #[derive(Deserialize)]
    pub struct Item {
        pub id: String,
        pub price: Price,
    }

    #[derive(Deserialize)]
    pub struct Price {
        pub id: String,
    }

    /// The client secret of an expanded invoice's `confirmation_secret`.
    pub fn confirmation_secret(invoice: &Value) -> Option<String> {
        let Value::Object(invoice) = invoice else { return None };
        let Some(Value::Object(secret)) = invoice.get("confirmation_secret") else { return None };
        match secret.get("client_secret") {
            Some(Value::String(client_secret)) => Some(client_secret.clone()),
            _ => None,
        }
    }

    /// Our parsers need nothing Stripe does not send: each reads Stripe's own published
    /// fixture of its resource (the extract the stand-in builds its objects from, with its
    /// source and commit).
    #[cfg(test)]
    mod tests {
        use super::*;

        fn fixture(kind: &str) -> serde_json::Value {
            let all: serde_json::Value =
                serde_json::from_str(include_str!("../../../infra/stripe-stand-in/fixtures/stripe-fixtures3.json"))
                    .expect("the fixtures are JSON");
            let found = all["resources"][kind].clone();
            assert!(found.is_object(), "no fixture for {kind}");
            found
        }

        fn parse<T: Deserialize>(kind: &str, object: &serde_json::Value) -> T {
            miniserde::json::from_str(&object.to_string())
                .unwrap_or_else(|_| panic!("our parser of {kind} needs something Stripe's fixture lacks: {object:#}"))
        }

        fn list_of(object: serde_json::Value) -> serde_json::Value {
            serde_json::json!({"object": "list", "data": [object], "has_more": false, "url": "/v1/list"})
        }

        #[test]
        fn every_answer_parses_stripes_published_fixture_of_its_resource() {
            for kind in ["account", "customer", "transfer", "payment_intent"] {
                let _: Object = parse(kind, &fixture(kind));
            }
            let account: Account = parse("account", &fixture("account"));
            assert!(account.charges_enabled.is_some() && account.payouts_enabled.is_some());
            let _: Link = parse("account_link", &fixture("account_link"));
            let intent: Intent = parse("payment_intent", &fixture("payment_intent"));
            assert!(intent.client_secret.is_some());

            // `expand[]=latest_charge.balance_transaction`, as the release asks.
            let mut charge = fixture("charge");
            charge["balance_transaction"] = fixture("balance_transaction");
            let mut expanded = fixture("payment_intent");
            expanded["latest_charge"] = charge;
            let with_charge: IntentWithCharge = parse("payment_intent", &expanded);
            let fee = with_charge.latest_charge.and_then(|c| c.balance_transaction).map(|b| b.fee);
            assert!(fee.is_some());

            let transfer: Transfer = parse("transfer", &fixture("transfer"));
            assert!(transfer.metadata.is_some());
            let _: Transfers = parse("transfer list", &list_of(fixture("transfer")));
            let _: Reversal = parse("transfer_reversal", &fixture("transfer_reversal"));
            let _: Reversals = parse("transfer_reversal list", &list_of(fixture("transfer_reversal")));
            let refund: Refund = parse("refund", &fixture("refund"));
            assert!(refund.status.is_some() && refund.metadata.is_some());
            let _: Refunds = parse("refund list", &list_of(fixture("refund")));
            let subscription: Subscription = parse("subscription", &fixture("subscription"));
            assert!(!subscription.items.data.is_empty() && !subscription.items.data[0].price.id.is_empty());
        }
    }
}

impl Stripe {
    /// A subscription that waits for its first payment (`default_incomplete`), with the
    /// invoice's client secret expanded for the client to confirm.
    pub async fn create_subscription(
        &self,
        key: &str,
        customer: &str,
        price_id: &str,
        user_id: &str,
    ) -> Result<SubscriptionState, GatewayError> {
        use stripe_billing::subscription::{
            CreateSubscription, CreateSubscriptionItems, CreateSubscriptionPaymentBehavior,
        };
        let item = CreateSubscriptionItems { price: Some(price_id.to_owned()), ..CreateSubscriptionItems::new() };
        let request = CreateSubscription::new()
            .customer(customer)
            .items(vec![item])
            .payment_behavior(CreateSubscriptionPaymentBehavior::DefaultIncomplete)
            .expand(vec!["latest_invoice.confirmation_secret".to_owned()])
            .metadata([("user_id".to_owned(), user_id.to_owned()), ("price_id".to_owned(), price_id.to_owned())]);
        let sub: answers::Subscription = self.call(Some(key), &request).await?;
        Ok(subscription_state(sub))
    }

    /// The subscription as Stripe holds it now.
    pub async fn subscription(&self, id: &str) -> Result<SubscriptionState, GatewayError> {
        use stripe_billing::subscription::RetrieveSubscription;
        let request = RetrieveSubscription::new(id);
        let sub: answers::Subscription = self.call(None, &request).await?;
        Ok(subscription_state(sub))
    }

    /// A plan change: the subscription's item `item_id` moves to `price_id` (Stripe's way of
    /// replacing a price; without the item's id it would add a second one), prorated as
    /// `proration` says. The metadata's `price_id` follows, since the webhook creates a
    /// record it lacks from it.
    pub async fn change_subscription_price(
        &self,
        key: &str,
        id: &str,
        item_id: &str,
        price_id: &str,
        proration: Proration,
    ) -> Result<SubscriptionState, GatewayError> {
        use stripe_billing::subscription::{
            UpdateSubscription, UpdateSubscriptionItems, UpdateSubscriptionProrationBehavior as Behavior,
        };
        let behavior = match proration {
            Proration::CreateProrations => Behavior::CreateProrations,
            Proration::None => Behavior::None,
            Proration::AlwaysInvoice => Behavior::AlwaysInvoice,
        };
        let item = UpdateSubscriptionItems {
            id: Some(item_id.to_owned()),
            price: Some(price_id.to_owned()),
            ..UpdateSubscriptionItems::new()
        };
        let request = UpdateSubscription::new(id)
            .items(vec![item])
            .proration_behavior(behavior)
            .metadata([("price_id".to_owned(), price_id.to_owned())]);
        let sub: answers::Subscription = self.call(Some(key), &request).await?;
        Ok(subscription_state(sub))
    }

    /// Cancels now, or at the end of the period.
    pub async fn cancel_subscription(&self, id: &str, at_period_end: bool) -> Result<SubscriptionState, GatewayError> {
        use stripe_billing::subscription::{CancelSubscription, UpdateSubscription};
        let key = format!("cancel:{id}:{at_period_end}");
        let sub = if at_period_end {
            let request = UpdateSubscription::new(id).cancel_at_period_end(true);
            self.call(Some(&key), &request).await?
        } else {
            let request = CancelSubscription::new(id);
            self.call(Some(&key), &request).await?
        };
        Ok(subscription_state(sub))
    }
}
