#![recursion_limit = "256"]
//! A **stand-in** for the Stripe API, for tests and the local stack only.
//!
//! There is no offline Stripe, so this answers the calls the backend makes with
//! current-format Stripe JSON (objects async-stripe parses), honours `Idempotency-Key` the
//! way Stripe does (same key, same result, including a saved 500; the same key with other
//! parameters or on another endpoint, 400 `idempotency_error`), lists transfers by
//! `transfer_group` and refunds by PaymentIntent, refunds in parts, changes a subscription's
//! price (its items, as Stripe's update does), records every request
//! (method, path, form body, idempotency key) so tests can check what Stripe was asked, and
//! can be told to fail or to answer late after doing the work. It keeps a clock of its own:
//! a key is forgotten 24 hours after its first use (as Stripe forgets it), and tests move
//! the clock on. Its objects are built over Stripe's published fixtures (`fixtures/`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

/// How an injected failure looks to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A 500 before Stripe did anything (nothing is created, nothing cached).
    ServerError,
    /// Stripe does the work, then answers 500; the 500 is what the key replays, as Stripe
    /// saves the result of a request that started executing.
    ServerErrorAfterWork,
    /// Stripe does the work, but the answer arrives after the client gave up.
    Timeout(Duration),
    /// Stripe refuses the request (HTTP 402, a card or account error); nothing is created,
    /// nothing saved (as for requests that fail validation).
    Refused,
    /// Stripe refuses a request that started executing (an account or balance error) and
    /// saves the refusal with the key: the same key gets it again.
    RefusedSaved,
}

/// One request Stripe received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub form: HashMap<String, String>,
    pub idempotency_key: Option<String>,
}

/// What a key was first used for.
#[derive(Clone, PartialEq, Eq)]
struct FirstUse {
    method: String,
    path: String,
    form: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    /// Key → the request first made with it and the response first given. Stripe scopes a
    /// key to the account, not to an endpoint: the same key on another endpoint, or with
    /// other parameters, is refused.
    idempotent: HashMap<String, (FirstUse, (u16, Value), i64)>,
    /// Seconds the stand-in's clock is ahead of the real one ([`StripeStandIn::advance_clock`]):
    /// a key is forgotten 24 hours after its first use by this clock.
    clock_offset: i64,
    objects: HashMap<String, Value>,
    /// (method, path prefix) → failures still to inject.
    failures: Vec<(String, String, Failure, u32)>,
    /// PaymentIntent id → amount refunded so far (pending and succeeded refunds count, as
    /// on Stripe's charge).
    refunded: HashMap<String, i64>,
    /// Refunds made from now on stay `pending` (as bank refunds and some cards do) until
    /// [`StripeStandIn::succeed_refund`] or [`StripeStandIn::fail_refund`].
    refunds_pending: bool,
    /// Connected account → what it holds at Stripe (minor units of one currency): transfers
    /// add to it, reversals and payouts take from it, and a reversal cannot take more.
    balances: HashMap<String, i64>,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct StripeStandIn {
    server: Arc<MockServer>,
    state: Arc<Mutex<State>>,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..24])
}

fn form_of(request: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(&request.body).into_owned().collect()
}

fn metadata(form: &HashMap<String, String>) -> Value {
    let map: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[").and_then(|k| k.strip_suffix(']')).map(|k| (k.to_owned(), json!(v)))
        })
        .collect();
    Value::Object(map)
}

/// Stripe's published fixture for a resource (`payment_intent`, `charge`, ...), from the
/// extract in `fixtures/` (its source and commit are in the file); `Null` for one not kept.
pub fn fixture(kind: &str) -> Value {
    static FIXTURES: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let all = FIXTURES.get_or_init(|| {
        serde_json::from_str(include_str!("../fixtures/stripe-fixtures3.json")).expect("the fixtures are JSON")
    });
    all["resources"][kind].clone()
}

/// `ours` over Stripe's fixture for its `object`: every field Stripe always sends is there,
/// with the fixture's value unless the stand-in sets its own.
fn shaped(ours: Value) -> Value {
    let mut object = fixture(ours["object"].as_str().unwrap_or_default());
    match (object.as_object_mut(), ours) {
        (Some(base), Value::Object(ours)) => {
            base.extend(ours);
            object
        }
        (_, ours) => ours,
    }
}

/// Stripe's standard fee on a US card charge: 2.9 % + 30, rounded to the minor unit.
pub fn card_fee(amount: i64) -> i64 {
    (amount * 29 + 500) / 1000 + 30
}

/// `object` with the fields `expand` names (`a` or `a.b`) replaced by the objects they id,
/// as Stripe expands them; an id the stand-in doesn't hold stays an id.
fn expanded(objects: &HashMap<String, Value>, mut object: Value, expand: &[String]) -> Value {
    for path in expand {
        let (field, rest) = match path.split_once('.') {
            Some((field, rest)) => (field, Some(rest.to_owned())),
            None => (path.as_str(), None),
        };
        let Some(inner) = object[field].as_str().and_then(|id| objects.get(id)).cloned() else { continue };
        object[field] = match rest {
            Some(rest) => expanded(objects, inner, &[rest]),
            None => inner,
        };
    }
    object
}

fn int(form: &HashMap<String, String>, key: &str) -> i64 {
    form.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// What Stripe charges the platform for a dispute (USD 15), taken when it opens.
pub const DISPUTE_FEE: i64 = 1_500;

/// Stripe refuses longer `Idempotency-Key`s with a 400.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

fn error(status: u16, kind: &str, message: &str) -> (u16, Value) {
    (status, json!({"error": {"type": kind, "message": message}}))
}

/// One page of a list, as Stripe pages: `limit` (default 10, 1 to 100) objects after
/// `starting_after`, and `has_more` when the list goes on.
fn page(data: Vec<Value>, query: &HashMap<String, String>, url: &str) -> (u16, Value) {
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 10,
        Some(Ok(limit)) if (1..=100).contains(&limit) => limit,
        Some(_) => return error(400, "invalid_request_error", "This value must be between 1 and 100."),
    };
    let start = match query.get("starting_after") {
        None => 0,
        Some(after) => match data.iter().position(|o| o["id"] == json!(after)) {
            Some(at) => at + 1,
            None => return error(400, "invalid_request_error", &format!("No such object: '{after}'")),
        },
    };
    let rest = &data[start.min(data.len())..];
    let shown: Vec<Value> = rest.iter().take(limit).cloned().collect();
    (200, json!({"object": "list", "data": shown, "has_more": rest.len() > limit, "url": url}))
}

/// A subscription item on `price` (a monthly licensed price of the stand-in's one product),
/// with the price and its legacy plan in full, as Stripe returns them.
fn subscription_item(subscription: &str, price: &str, created: i64) -> Value {
    let price_object = shaped(json!({
        "id": price, "object": "price", "active": true, "billing_scheme": "per_unit", "created": created,
        "currency": "usd", "livemode": false, "metadata": {}, "product": "prod_standin", "type": "recurring",
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"}, "unit_amount": 1000
    }));
    let plan = shaped(json!({
        "id": price, "object": "plan", "active": true, "billing_scheme": "per_unit", "created": created,
        "currency": "usd", "interval": "month", "interval_count": 1, "livemode": false, "usage_type": "licensed",
        "amount": 1000, "product": "prod_standin"
    }));
    shaped(json!({
        "id": new_id("si"), "object": "subscription_item", "created": created, "current_period_start": created,
        "current_period_end": created + 30 * 86_400, "discounts": [], "metadata": {}, "quantity": 1,
        "subscription": subscription, "price": price_object, "plan": plan
    }))
}

/// A plan change, as Stripe applies `items[0][id]` + `items[0][price]`: the item named is
/// moved to the new price; without an id, an item is added. A canceled subscription, or an
/// item it does not have, is refused.
fn change_items(sub: &mut Value, form: &HashMap<String, String>, created: i64) -> Result<(), (u16, Value)> {
    let Some(price) = form.get("items[0][price]") else { return Ok(()) };
    if sub["status"] == "canceled" {
        return Err(error(
            400,
            "invalid_request_error",
            "A canceled subscription can only update its cancellation_details and metadata.",
        ));
    }
    let id = sub["id"].as_str().unwrap_or_default().to_owned();
    let items = sub["items"]["data"].as_array_mut().expect("a subscription's items");
    match form.get("items[0][id]") {
        Some(item_id) => {
            let Some(item) = items.iter_mut().find(|i| i["id"] == json!(item_id)) else {
                return Err(error(400, "invalid_request_error", &format!("Invalid subscription_item id: {item_id}")));
            };
            let mut moved = subscription_item(&id, price, created);
            moved["id"] = json!(item_id);
            *item = moved;
        }
        None => items.push(subscription_item(&id, price, created)),
    }
    Ok(())
}

/// An account's capabilities as created: each one requested (`capabilities[x][requested]=true`)
/// is `inactive` until onboarding is done; none requested, none there.
fn requested_capabilities(form: &HashMap<String, String>) -> Value {
    let requested = form.iter().filter_map(|(key, value)| {
        let name = key.strip_prefix("capabilities[")?.strip_suffix("][requested]")?;
        (value == "true").then(|| (name.to_owned(), json!("inactive")))
    });
    Value::Object(requested.collect())
}

/// How long Stripe keeps an idempotency key after its first use.
const KEY_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

impl State {
    /// The stand-in's clock (epoch seconds).
    fn clock(&self) -> i64 {
        now() + self.clock_offset
    }

    /// The account's holder finished Stripe's hosted onboarding: charges and payouts on, and
    /// every capability requested active. `None` for an account the stand-in never made.
    fn onboard(&mut self, account: &str) -> Option<Value> {
        let object = self.objects.get_mut(account).filter(|a| a["object"] == "account")?;
        object["charges_enabled"] = json!(true);
        object["payouts_enabled"] = json!(true);
        object["details_submitted"] = json!(true);
        if let Some(capabilities) = object["capabilities"].as_object_mut() {
            capabilities.values_mut().for_each(|status| *status = json!("active"));
        }
        Some(object.clone())
    }

    /// Forgets the keys first used 24 hours ago or more.
    fn forget_expired_keys(&mut self) {
        let cutoff = self.clock() - KEY_LIFETIME.as_secs() as i64;
        self.idempotent.retain(|_, (_, _, at)| *at > cutoff);
    }

    /// The PaymentIntent succeeds with a new charge, whose balance transaction carries
    /// Stripe's card fee. `None` for an id the stand-in never made.
    fn succeed_intent(&mut self, payment_intent: &str) -> Option<Value> {
        let (charge, transaction) = (new_id("ch"), new_id("txn"));
        let intent = self.objects.get_mut(payment_intent)?;
        intent["status"] = json!("succeeded");
        intent["latest_charge"] = json!(charge);
        intent["amount_received"] = intent["amount"].clone();
        let intent = intent.clone();
        let (amount, created) = (intent["amount"].as_i64().unwrap_or(0), now());
        let fee = card_fee(amount);
        self.objects.insert(
            transaction.clone(),
            shaped(json!({
                "id": transaction, "object": "balance_transaction", "amount": amount, "fee": fee, "net": amount - fee,
                "currency": intent["currency"], "created": created, "type": "charge", "source": charge,
                "status": "pending", "fee_details": [{"amount": fee, "currency": intent["currency"], "type": "stripe_fee"}]
            })),
        );
        self.objects.insert(
            charge.clone(),
            shaped(json!({
                "id": charge, "object": "charge", "amount": amount, "amount_captured": amount, "amount_refunded": 0,
                "balance_transaction": transaction, "created": created, "currency": intent["currency"],
                "paid": true, "payment_intent": payment_intent, "refunded": false, "status": "succeeded",
                "transfer_group": intent["transfer_group"]
            })),
        );
        Some(intent)
    }

    /// What Stripe checks of a transfer: a positive amount and a currency, a connected account
    /// it knows, and with `source_transaction` a charge in the same currency whose funds are
    /// not already spent on refunds and other transfers from it.
    fn check_transfer(&self, form: &HashMap<String, String>) -> Result<(), (u16, Value)> {
        let amount = int(form, "amount");
        if amount <= 0 {
            return Err(error(400, "invalid_request_error", "This value must be greater than or equal to 1."));
        }
        let Some(currency) = form.get("currency") else {
            return Err(error(400, "invalid_request_error", "Missing required param: currency."));
        };
        let destination = form.get("destination").cloned().unwrap_or_default();
        let Some(account) = self.objects.get(&destination).filter(|a| a["object"] == "account") else {
            return Err(error(400, "invalid_request_error", &format!("No such destination: '{destination}'")));
        };
        if account["capabilities"]["transfers"] != "active" {
            return Err(error(
                400,
                "invalid_request_error",
                "Your destination account needs to have at least one of the following capabilities enabled: \
                 transfers, crypto_transfers, legacy_payments",
            ));
        }
        let Some(source) = form.get("source_transaction") else { return Ok(()) };
        let Some(charge) = self.objects.get(source).filter(|c| c["object"] == "charge") else {
            return Err(error(400, "invalid_request_error", &format!("No such charge: '{source}'")));
        };
        if charge["currency"] != json!(currency) {
            return Err(error(
                400,
                "invalid_request_error",
                &format!(
                    "The currency of source_transaction's balance transaction ({}) must be the same as the \
                     transfer currency ({currency}).",
                    charge["currency"].as_str().unwrap_or_default()
                ),
            ));
        }
        let refunded = charge["payment_intent"].as_str().and_then(|pi| self.refunded.get(pi)).copied().unwrap_or(0);
        let transferred: i64 = self
            .objects
            .values()
            .filter(|t| t["object"] == "transfer" && t["source_transaction"] == json!(source))
            .map(|t| t["amount"].as_i64().unwrap_or(0) - t["amount_reversed"].as_i64().unwrap_or(0))
            .sum();
        let available = charge["amount"].as_i64().unwrap_or(0) - refunded - transferred;
        if amount > available {
            return Err(error(
                400,
                "invalid_request_error",
                &format!(
                    "Insufficient funds: the transfer amount ({amount}) exceeds what is left of the source \
                     transaction ({available})."
                ),
            ));
        }
        Ok(())
    }

    /// A transfer reversal, as Stripe makes one: of what is left of the transfer (all of it
    /// by default), and only if the connected account still holds that much.
    fn reverse(
        &mut self,
        transfer_id: &str,
        form: &HashMap<String, String>,
        created: i64,
    ) -> Result<Value, (u16, Value)> {
        let Some(transfer) = self.objects.get(transfer_id).filter(|t| t["object"] == "transfer").cloned() else {
            return Err(error(404, "invalid_request_error", &format!("No such transfer: '{transfer_id}'")));
        };
        let (amount_sent, reversed) =
            (transfer["amount"].as_i64().unwrap_or(0), transfer["amount_reversed"].as_i64().unwrap_or(0));
        let left = amount_sent - reversed;
        let amount = form.get("amount").and_then(|a| a.parse().ok()).unwrap_or(left);
        if amount <= 0 {
            return Err(error(400, "invalid_request_error", "This value must be greater than or equal to 1."));
        }
        if amount > left {
            return Err(error(
                400,
                "invalid_request_error",
                &format!("Reversal amount ({amount}) is greater than the amount left on the transfer ({left})."),
            ));
        }
        let destination = transfer["destination"].as_str().unwrap_or_default().to_owned();
        let balance = self.balances.get(&destination).copied().unwrap_or(0);
        if amount > balance {
            return Err(error(
                400,
                "invalid_request_error",
                &format!(
                    "Insufficient funds in the destination account {destination}: the reversal needs {amount}, \
                     the account holds {balance}."
                ),
            ));
        }
        *self.balances.entry(destination).or_default() -= amount;
        let reversal = shaped(json!({
            "id": new_id("trr"), "object": "transfer_reversal", "amount": amount, "created": created,
            "balance_transaction": new_id("txn"), "currency": transfer["currency"],
            "destination_payment_refund": new_id("pyr"), "metadata": metadata(form), "source_refund": null,
            "transfer": transfer_id
        }));
        let stored = self.objects.get_mut(transfer_id).expect("the transfer just read");
        stored["amount_reversed"] = json!(reversed + amount);
        stored["reversed"] = json!(reversed + amount == amount_sent);
        if let Some(data) = stored["reversals"]["data"].as_array_mut() {
            data.insert(0, reversal.clone());
        }
        Ok(reversal)
    }

    fn create(&mut self, method: &str, path: &str, form: &HashMap<String, String>) -> (u16, Value) {
        let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
        let created = now();
        let object = match (method, segments.as_slice()) {
            // The stand-in's own stand-in for the hosted onboarding a provider completes at
            // Stripe (no such route exists at Stripe): for the local stack and the smoke test.
            ("POST", ["test_helpers", "accounts", id, "onboard"]) => match self.onboard(id) {
                Some(account) => return (200, account),
                None => return error(404, "invalid_request_error", &format!("No such account: '{id}'")),
            },
            ("POST", ["accounts"]) => shaped(json!({
                "id": new_id("acct"), "object": "account", "type": "express",
                "country": form.get("country").cloned().unwrap_or_else(|| "US".into()),
                "business_type": form.get("business_type"), "email": form.get("email"),
                "charges_enabled": false, "payouts_enabled": false, "details_submitted": false,
                "created": created, "metadata": metadata(form), "capabilities": requested_capabilities(form)
            })),
            ("POST", ["account_links"]) => shaped(json!({
                "object": "account_link", "created": created, "expires_at": created + 300,
                "url": format!("https://connect.stripe.com/setup/e/{}/{}", form.get("account").cloned().unwrap_or_default(), new_id("link"))
            })),
            ("POST", ["customers"]) => shaped(json!({
                "id": new_id("cus"), "object": "customer", "created": created, "livemode": false,
                "email": form.get("email"), "metadata": metadata(form)
            })),
            ("POST", ["payment_intents"]) => {
                let id = new_id("pi");
                shaped(json!({
                    "id": id, "object": "payment_intent", "amount": int(form, "amount"), "amount_capturable": 0,
                    "amount_received": 0, "capture_method": "automatic_async", "confirmation_method": "automatic",
                    "client_secret": format!("{id}_secret_{}", new_id("s")), "created": created,
                    "currency": form.get("currency").cloned().unwrap_or_else(|| "usd".into()),
                    "customer": form.get("customer"), "description": form.get("description"), "livemode": false,
                    "metadata": metadata(form), "payment_method_types": ["card"], "status": "requires_payment_method",
                    "transfer_group": form.get("transfer_group")
                }))
            }
            ("POST", ["transfers"]) => {
                if let Err(refused) = self.check_transfer(form) {
                    return refused;
                }
                let destination = form.get("destination").cloned().unwrap_or_default();
                *self.balances.entry(destination).or_default() += int(form, "amount");
                shaped(json!({
                    "id": new_id("tr"), "object": "transfer", "amount": int(form, "amount"), "amount_reversed": 0,
                    "created": created, "currency": form.get("currency"),
                    "destination": form.get("destination"), "livemode": false, "metadata": metadata(form),
                    "reversals": {"object": "list", "data": [], "has_more": false, "url": "/v1/transfers/reversals"},
                    "reversed": false, "source_transaction": form.get("source_transaction"),
                    "transfer_group": form.get("transfer_group")
                }))
            }
            ("POST", ["transfers", id, "reversals"]) => match self.reverse(id, form, created) {
                Ok(reversal) => reversal,
                Err(refused) => return refused,
            },
            // What Stripe.js sends when the payer pays (publishable key, `client_secret`), with
            // Stripe's test cards: `pm_card_visa` succeeds, `pm_card_chargeDeclined` is declined.
            // As Stripe: only a PaymentIntent nobody has paid, and that is not processing,
            // can be canceled.
            ("POST", ["payment_intents", id, "cancel"]) => {
                let Some(intent) = self.objects.get_mut(*id) else {
                    return error(404, "invalid_request_error", &format!("No such payment_intent: '{id}'"));
                };
                let status = intent["status"].as_str().unwrap_or_default().to_owned();
                if !matches!(
                    status.as_str(),
                    "requires_payment_method" | "requires_confirmation" | "requires_action" | "requires_capture"
                ) {
                    return error(
                        400,
                        "invalid_request_error",
                        &format!(
                            "You cannot cancel this PaymentIntent because it has a status of {status}. Only a \
                             PaymentIntent with one of the following statuses may be canceled: \
                             requires_payment_method, requires_capture, requires_confirmation, requires_action, \
                             processing."
                        ),
                    );
                }
                intent["status"] = json!("canceled");
                intent["canceled_at"] = json!(created);
                intent["cancellation_reason"] = json!(form.get("cancellation_reason"));
                intent.clone()
            }
            ("POST", ["payment_intents", id, "confirm"]) => {
                let Some(intent) = self.objects.get(*id) else {
                    return error(404, "invalid_request_error", &format!("No such payment_intent: '{id}'"));
                };
                if form.get("client_secret").is_some_and(|secret| intent["client_secret"] != json!(secret)) {
                    return error(400, "invalid_request_error", "The client_secret provided does not match.");
                }
                if intent["status"] != "requires_payment_method" {
                    return error(400, "invalid_request_error", "This PaymentIntent's status does not allow confirm.");
                }
                match form.get("payment_method").map(String::as_str) {
                    Some("pm_card_visa") => self.succeed_intent(id).expect("the PaymentIntent just read"),
                    Some("pm_card_chargeDeclined") => return error(402, "card_error", "Your card was declined."),
                    _ => return error(400, "invalid_request_error", "You must provide a payment_method."),
                }
            }
            ("POST", ["refunds"]) => {
                let pi = form.get("payment_intent").cloned().unwrap_or_default();
                let Some(intent) = self.objects.get(&pi).cloned() else {
                    return error(404, "invalid_request_error", &format!("No such payment_intent: '{pi}'"));
                };
                let total = intent["amount"].as_i64().unwrap_or(0);
                let done = self.refunded.get(&pi).copied().unwrap_or(0);
                let amount = form.get("amount").and_then(|a| a.parse().ok()).unwrap_or(total - done);
                if amount <= 0 || done + amount > total {
                    return error(
                        400,
                        "invalid_request_error",
                        &format!(
                            "Refund amount ({amount}) is greater than unrefunded amount on charge ({})",
                            total - done
                        ),
                    );
                }
                self.refunded.insert(pi.clone(), done + amount);
                let status = if self.refunds_pending { "pending" } else { "succeeded" };
                shaped(json!({
                    "id": new_id("re"), "object": "refund", "amount": amount, "created": created,
                    "currency": intent["currency"], "payment_intent": pi, "charge": intent["latest_charge"],
                    "status": status, "metadata": metadata(form), "reason": form.get("reason"),
                    "failure_reason": null, "balance_transaction": new_id("txn")
                }))
            }
            ("POST", ["subscriptions"]) => {
                let id = new_id("sub");
                let price = form.get("items[0][price]").cloned().unwrap_or_default();
                // The invoice stays unexpanded here: its full object is large and nothing in
                // the backend reads it from this response.
                shaped(json!({
                    "id": id, "object": "subscription", "automatic_tax": {"enabled": false, "liability": null},
                    "billing_cycle_anchor": created, "billing_mode": {"type": "classic"}, "billing_schedules": [],
                    "cancel_at_period_end": false, "collection_method": "charge_automatically", "created": created,
                    "currency": "usd", "customer": form.get("customer"), "discounts": [],
                    "invoice_settings": {"issuer": {"type": "self"}},
                    "items": {"object": "list", "has_more": false, "url": format!("/v1/subscription_items?subscription={id}"),
                              "data": [subscription_item(&id, &price, created)]},
                    "latest_invoice": new_id("in"), "livemode": false,
                    "metadata": {"price_id": price}, "start_date": created, "status": "incomplete"
                }))
            }
            // As Stripe does: the customer goes, and its subscriptions are cancelled at once.
            ("DELETE", ["customers", id]) => {
                if self.objects.get(*id).is_none_or(|c| c["deleted"] == json!(true)) {
                    return error(404, "invalid_request_error", &format!("No such customer: '{id}'"));
                }
                for object in self.objects.values_mut() {
                    if object["object"] == "subscription" && object["customer"] == json!(id) {
                        object["status"] = json!("canceled");
                        object["canceled_at"] = json!(created);
                    }
                }
                self.objects.insert((*id).to_owned(), json!({"id": id, "object": "customer", "deleted": true}));
                return (200, json!({"id": id, "object": "customer", "deleted": true}));
            }
            ("POST", ["subscriptions", id]) | ("DELETE", ["subscriptions", id]) => {
                let Some(existing) = self.objects.get(*id).cloned() else {
                    return error(404, "invalid_request_error", "No such subscription");
                };
                let mut sub = existing;
                if method == "DELETE" {
                    sub["status"] = json!("canceled");
                    sub["canceled_at"] = json!(created);
                } else {
                    if let Err(refused) = change_items(&mut sub, form, created) {
                        return refused;
                    }
                    if let Some(flag) = form.get("cancel_at_period_end") {
                        sub["cancel_at_period_end"] = json!(flag == "true");
                    }
                    if let Value::Object(changes) = metadata(form)
                        && let Some(kept) = sub["metadata"].as_object_mut()
                    {
                        kept.extend(changes);
                    }
                }
                sub
            }
            _ => return error(404, "invalid_request_error", &format!("Unrecognized request URL ({method} {path})")),
        };
        if let Some(id) = object["id"].as_str() {
            self.objects.insert(id.to_owned(), object.clone());
        }
        (200, object)
    }

    /// Reads: a list by filter, or one object.
    fn read(&self, path: &str, query: &HashMap<String, String>, expand: &[String]) -> (u16, Value) {
        let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
        let list = |prefix: &str, field: &str, url: &str| {
            let wanted = query.get(field);
            let mut data: Vec<Value> = self
                .objects
                .iter()
                .filter(|(id, object)| {
                    id.starts_with(prefix) && wanted.is_none_or(|w| object[field].as_str() == Some(w.as_str()))
                })
                .map(|(_, object)| object.clone())
                .collect();
            // Newest first, as Stripe lists; ids break ties within a second, so pages are stable.
            data.sort_by(|a, b| {
                (b["created"].as_i64(), b["id"].as_str()).cmp(&(a["created"].as_i64(), a["id"].as_str()))
            });
            page(data, query, url)
        };
        match segments.as_slice() {
            ["transfers"] => list("tr_", "transfer_group", "/v1/transfers"),
            ["refunds"] => list("re_", "payment_intent", "/v1/refunds"),
            ["transfers", id, "reversals"] => {
                if !self.objects.contains_key(*id) {
                    return error(404, "invalid_request_error", &format!("No such transfer: '{id}'"));
                }
                let mut query = query.clone();
                query.insert("transfer".into(), (*id).to_owned());
                let url = format!("/v1/transfers/{id}/reversals");
                let wanted = (*id).to_owned();
                let mut data: Vec<Value> = self
                    .objects
                    .values()
                    .filter(|o| o["object"] == "transfer_reversal" && o["transfer"] == json!(wanted))
                    .cloned()
                    .collect();
                data.sort_by(|a, b| {
                    (b["created"].as_i64(), b["id"].as_str()).cmp(&(a["created"].as_i64(), a["id"].as_str()))
                });
                page(data, &query, &url)
            }
            [_, id] => match self.objects.get(*id) {
                Some(object) => (200, expanded(&self.objects, object.clone(), expand)),
                None => error(404, "invalid_request_error", &format!("No such object: '{id}'")),
            },
            _ => error(404, "invalid_request_error", &format!("Unrecognized request URL (GET {path})")),
        }
    }

    fn take_failure(&mut self, method: &str, path: &str) -> Option<Failure> {
        let slot = self
            .failures
            .iter_mut()
            .find(|(m, prefix, _, left)| (m == "*" || m == method) && path.starts_with(prefix.as_str()) && *left > 0)?;
        slot.3 -= 1;
        Some(slot.2)
    }
}

struct Responder(Arc<Mutex<State>>);

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let method = request.method.to_string();
        let path = request.url.path().to_owned();
        let form = form_of(request);
        let key = request.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut state = self.0.lock().expect("stand-in state");
        state.received.push(Received {
            method: method.clone(),
            path: path.clone(),
            form: form.clone(),
            idempotency_key: key.clone(),
        });
        let failure = state.take_failure(&method, &path);
        if method == "GET" {
            if failure.is_some() {
                let (status, body) = error(500, "api_error", "stand-in: injected server error");
                return ResponseTemplate::new(status).set_body_json(body);
            }
            let query: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
            // `expand[]=a.b` or `expand[0]=a.b`, as clients send them.
            let expand: Vec<String> = request
                .url
                .query_pairs()
                .filter(|(k, _)| k.starts_with("expand["))
                .map(|(_, v)| v.into_owned())
                .collect();
            let (status, body) = state.read(&path, &query, &expand);
            return ResponseTemplate::new(status).set_body_json(body);
        }
        if failure == Some(Failure::ServerError) {
            let (status, body) = error(500, "api_error", "stand-in: injected server error");
            return ResponseTemplate::new(status).set_body_json(body);
        }
        if failure == Some(Failure::Refused) {
            let (status, body) = error(402, "card_error", "Your card was declined.");
            return ResponseTemplate::new(status).set_body_json(body);
        }
        if failure == Some(Failure::RefusedSaved) {
            let refused = error(400, "invalid_request_error", "Insufficient funds in Stripe account.");
            if let Some(key) = &key {
                let first = FirstUse { method: method.clone(), path: path.clone(), form: form.clone() };
                let at = state.clock();
                state.idempotent.insert(key.clone(), (first, refused.clone(), at));
            }
            return ResponseTemplate::new(refused.0).set_body_json(refused.1);
        }
        if key.as_ref().is_some_and(|k| k.len() > MAX_IDEMPOTENCY_KEY_LEN) {
            let (status, body) = error(
                400,
                "invalid_request_error",
                "Keys for idempotent requests can only be 255 characters long and should be unique.",
            );
            return ResponseTemplate::new(status).set_body_json(body);
        }
        state.forget_expired_keys();
        let (status, body) = match &key {
            Some(key) => {
                let this = FirstUse { method: method.clone(), path: path.clone(), form: form.clone() };
                match state.idempotent.get(key) {
                    Some((first, cached, _)) if *first == this => cached.clone(),
                    // As Stripe answers: nothing is done, and nothing saved.
                    Some(_) => error(
                        400,
                        "idempotency_error",
                        &format!(
                            "Keys for idempotent requests can only be used with the same parameters they were \
                             first used with. Try using a key other than '{key}' if you meant to execute a \
                             different request."
                        ),
                    ),
                    None => {
                        let mut result = state.create(&method, &path, &form);
                        if failure == Some(Failure::ServerErrorAfterWork) {
                            result = error(500, "api_error", "stand-in: injected server error after the work");
                        }
                        let at = state.clock();
                        state.idempotent.insert(key.clone(), (this, result.clone(), at));
                        result
                    }
                }
            }
            None => {
                let result = state.create(&method, &path, &form);
                if failure == Some(Failure::ServerErrorAfterWork) {
                    error(500, "api_error", "stand-in: injected server error after the work")
                } else {
                    result
                }
            }
        };
        let mut template = ResponseTemplate::new(status).set_body_json(body);
        if let Some(Failure::Timeout(delay)) = failure {
            template = template.set_delay(delay);
        }
        template.append_header("request-id", new_id("req").as_str())
    }
}

impl StripeStandIn {
    /// Starts on a random loopback port.
    pub async fn start() -> Self {
        Self::serve(MockServer::start().await).await
    }

    /// Starts on `127.0.0.1:port` (for the local stack).
    pub async fn start_on(port: u16) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        Ok(Self::serve(MockServer::builder().listener(listener).start().await).await)
    }

    async fn serve(server: MockServer) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any()).respond_with(Responder(state.clone())).mount(&server).await;
        Self { server: Arc::new(server), state }
    }

    /// The base URL to give async-stripe (`ClientBuilder::url`), with a trailing slash.
    pub fn url(&self) -> String {
        format!("{}/", self.server.uri())
    }

    /// Every request received so far whose path starts with `path` (e.g. `/v1/transfers`).
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state
            .lock()
            .expect("stand-in state")
            .received
            .iter()
            .filter(|r| r.path.starts_with(path))
            .cloned()
            .collect()
    }

    /// The POST requests (creations) received so far whose path starts with `path`.
    pub fn posted(&self, path: &str) -> Vec<Received> {
        self.received(path).into_iter().filter(|r| r.method == "POST").collect()
    }

    /// The next `times` POST or DELETE requests (writes) to paths starting with `path` fail
    /// as `failure`; reads of the same paths still answer.
    pub fn fail(&self, path: &str, failure: Failure, times: u32) {
        let mut state = self.state.lock().expect("stand-in state");
        for method in ["POST", "DELETE"] {
            state.failures.push((method.to_owned(), path.to_owned(), failure, times));
        }
    }

    /// The next `times` GET requests (reads, lists) to paths starting with `path` answer 500.
    pub fn fail_reads(&self, path: &str, times: u32) {
        self.state.lock().expect("stand-in state").failures.push((
            "GET".to_owned(),
            path.to_owned(),
            Failure::ServerError,
            times,
        ));
    }

    /// Moves the stand-in's clock on: Stripe forgets a key 24 hours after its first use, and
    /// a repeat of an older request then does the work again.
    pub fn advance_clock(&self, by: Duration) {
        self.state.lock().expect("stand-in state").clock_offset += by.as_secs() as i64;
    }

    /// Every key in use is 24 hours old (the clock moves a day on).
    pub fn forget_idempotency_keys(&self) {
        self.advance_clock(KEY_LIFETIME);
    }

    /// A refund made in Stripe's dashboard (no metadata of ours); its webhook is the test's
    /// to deliver, or not. Returns the refund.
    pub fn refund_directly(&self, payment_intent: &str, amount: i64) -> Value {
        let mut form = HashMap::new();
        form.insert("payment_intent".to_owned(), payment_intent.to_owned());
        form.insert("amount".to_owned(), amount.to_string());
        let (status, refund) = self.state.lock().expect("stand-in state").create("POST", "/v1/refunds", &form);
        assert_eq!(status, 200, "{refund}");
        refund
    }

    /// A refund made in Stripe's dashboard, with every event Stripe sends for it, as (type,
    /// object) pairs of one second: `refund.created`, `charge.refunded` (the charge with its
    /// new total) and `charge.refund.updated`.
    pub fn dashboard_refund(&self, payment_intent: &str, amount: i64) -> Vec<(String, Value)> {
        let refund = self.refund_directly(payment_intent, amount);
        vec![
            ("refund.created".into(), refund.clone()),
            ("charge.refunded".into(), self.charge_of(payment_intent)),
            ("charge.refund.updated".into(), refund),
        ]
    }

    /// The cardholder disputes the charge: Stripe takes the disputed amount and its dispute
    /// fee (1 500 minor units) from the platform's balance at once. Returns the dispute's id
    /// and the events Stripe sends, as (type, object) pairs of one second:
    /// `charge.dispute.created` and `charge.dispute.funds_withdrawn`.
    pub fn open_dispute(&self, payment_intent: &str, amount: i64) -> (String, Vec<(String, Value)>) {
        let mut state = self.state.lock().expect("stand-in state");
        let intent = state.objects.get(payment_intent).expect("a PaymentIntent the stand-in made").clone();
        let (id, created) = (new_id("dp"), now());
        let withdrawn = shaped(json!({
            "id": new_id("txn"), "object": "balance_transaction", "amount": -amount, "fee": DISPUTE_FEE,
            "net": -amount - DISPUTE_FEE, "currency": intent["currency"], "created": created,
            "type": "adjustment", "reporting_category": "dispute"
        }));
        let dispute = shaped(json!({
            "id": id, "object": "dispute", "amount": amount, "charge": intent["latest_charge"],
            "currency": intent["currency"], "created": created, "payment_intent": payment_intent,
            "reason": "fraudulent", "status": "needs_response", "is_charge_refundable": false,
            "balance_transactions": [withdrawn], "livemode": false, "metadata": {}
        }));
        state.objects.insert(id.clone(), dispute.clone());
        let events = vec![
            ("charge.dispute.created".to_owned(), dispute.clone()),
            ("charge.dispute.funds_withdrawn".to_owned(), dispute),
        ];
        (id, events)
    }

    /// The platform wins the dispute: the amount comes back (the fee does not). Returns
    /// `charge.dispute.funds_reinstated` and `charge.dispute.closed`, of one second.
    pub fn win_dispute(&self, dispute_id: &str) -> Vec<(String, Value)> {
        let mut state = self.state.lock().expect("stand-in state");
        let dispute = state.objects.get_mut(dispute_id).expect("a dispute the stand-in made");
        let amount = dispute["amount"].as_i64().unwrap_or(0);
        dispute["status"] = json!("won");
        let reinstated = shaped(json!({
            "id": new_id("txn"), "object": "balance_transaction", "amount": amount, "fee": 0, "net": amount,
            "currency": dispute["currency"], "created": now(), "type": "adjustment", "reporting_category": "dispute_reversal"
        }));
        if let Some(list) = dispute["balance_transactions"].as_array_mut() {
            list.push(reinstated);
        }
        let dispute = dispute.clone();
        vec![("charge.dispute.funds_reinstated".into(), dispute.clone()), ("charge.dispute.closed".into(), dispute)]
    }

    /// The platform loses the dispute: the money stays with the cardholder. Returns
    /// `charge.dispute.closed`.
    pub fn lose_dispute(&self, dispute_id: &str) -> Vec<(String, Value)> {
        let mut state = self.state.lock().expect("stand-in state");
        let dispute = state.objects.get_mut(dispute_id).expect("a dispute the stand-in made");
        dispute["status"] = json!("lost");
        vec![("charge.dispute.closed".into(), dispute.clone())]
    }

    /// The connected account pays `amount` out to its bank: it no longer holds it, so a
    /// reversal of it is refused.
    pub fn pay_out(&self, account: &str, amount: i64) {
        *self.state.lock().expect("stand-in state").balances.entry(account.to_owned()).or_default() -= amount;
    }

    /// The connected account receives `amount` from elsewhere (other sales, a top-up).
    pub fn fund(&self, account: &str, amount: i64) {
        *self.state.lock().expect("stand-in state").balances.entry(account.to_owned()).or_default() += amount;
    }

    /// What the connected account holds at Stripe.
    pub fn balance_of(&self, account: &str) -> i64 {
        self.state.lock().expect("stand-in state").balances.get(account).copied().unwrap_or(0)
    }

    /// Refunds made from now on stay `pending` until told to succeed or fail (`false`: they
    /// succeed at once, the default).
    pub fn hold_refunds_pending(&self, pending: bool) {
        self.state.lock().expect("stand-in state").refunds_pending = pending;
    }

    /// A pending refund goes through. Returns the events Stripe sends for it, as (type,
    /// object) pairs, all of one second: `refund.updated` and `charge.refund.updated`.
    pub fn succeed_refund(&self, refund_id: &str) -> Vec<(String, Value)> {
        let mut state = self.state.lock().expect("stand-in state");
        let refund = state.objects.get_mut(refund_id).expect("a refund the stand-in made");
        assert_eq!(refund["status"], "pending", "only a pending refund can go through");
        refund["status"] = json!("succeeded");
        let refund = refund.clone();
        vec![("refund.updated".into(), refund.clone()), ("charge.refund.updated".into(), refund)]
    }

    /// A refund that fails after it was accepted (the card was closed, say): its status
    /// becomes `failed` and the money counts as not refunded. Returns the events Stripe sends
    /// for it, as (type, object) pairs, all of one second: `refund.updated`,
    /// `charge.refund.updated` and `refund.failed`.
    pub fn fail_refund(&self, refund_id: &str) -> Vec<(String, Value)> {
        let mut state = self.state.lock().expect("stand-in state");
        let refund = state.objects.get_mut(refund_id).expect("a refund the stand-in made");
        assert!(refund["status"] != "failed" && refund["status"] != "canceled", "a refund fails once");
        refund["status"] = json!("failed");
        refund["failure_reason"] = json!("expired_or_canceled_card");
        refund["failure_balance_transaction"] = json!(new_id("txn"));
        let refund = refund.clone();
        let (pi, amount) =
            (refund["payment_intent"].as_str().unwrap_or_default().to_owned(), refund["amount"].as_i64());
        if let Some(done) = state.refunded.get_mut(&pi) {
            *done -= amount.unwrap_or(0);
        }
        ["refund.updated", "charge.refund.updated", "refund.failed"]
            .into_iter()
            .map(|kind| (kind.to_owned(), refund.clone()))
            .collect()
    }

    /// The charge of a PaymentIntent as a `charge.refunded` event carries it: Stripe's
    /// running `amount_refunded` (pending refunds included) and `refunded` when it is all.
    pub fn charge_of(&self, payment_intent: &str) -> Value {
        let state = self.state.lock().expect("stand-in state");
        let intent = state.objects.get(payment_intent).expect("a PaymentIntent the stand-in made");
        let refunded = state.refunded.get(payment_intent).copied().unwrap_or(0);
        let amount = intent["amount"].as_i64().unwrap_or(0);
        shaped(json!({
            "id": intent["latest_charge"], "object": "charge", "amount": amount, "amount_refunded": refunded,
            "currency": intent["currency"], "payment_intent": payment_intent, "refunded": refunded >= amount,
            "status": "succeeded", "transfer_group": intent["transfer_group"]
        }))
    }

    /// What Stripe does when the payer pays: the PaymentIntent succeeds with a new charge.
    /// Returns the PaymentIntent as a `payment_intent.succeeded` event would carry it.
    ///
    /// The charge has a balance transaction with Stripe's standard US card fee (2.9 % + 30
    /// minor units, rounded), which `expand[]=latest_charge.balance_transaction` shows.
    pub fn succeed_payment_intent(&self, payment_intent: &str) -> Value {
        self.state
            .lock()
            .expect("stand-in state")
            .succeed_intent(payment_intent)
            .expect("a PaymentIntent the stand-in made")
    }

    /// What Stripe does when a connected account finishes onboarding: charges and payouts
    /// are enabled. Returns the account as an `account.updated` event would carry it.
    pub fn onboard(&self, account: &str) -> Value {
        self.state.lock().expect("stand-in state").onboard(account).expect("an account the stand-in made")
    }

    /// The subscription's first invoice is paid: it becomes `active`. Returns it as its
    /// `customer.subscription.updated` event carries it.
    pub fn activate_subscription(&self, subscription: &str) -> Value {
        let mut state = self.state.lock().expect("stand-in state");
        let object = state.objects.get_mut(subscription).expect("a subscription the stand-in made");
        object["status"] = json!("active");
        object.clone()
    }

    /// Stops injecting failures.
    pub fn heal(&self) {
        self.state.lock().expect("stand-in state").failures.clear();
    }

    /// The object with this id as the stand-in holds it now (what an event about it carries).
    pub fn object(&self, id: &str) -> Option<Value> {
        self.state.lock().expect("stand-in state").objects.get(id).cloned()
    }

    /// Distinct objects created with ids starting `prefix` (e.g. `tr_`).
    pub fn created(&self, prefix: &str) -> Vec<Value> {
        self.state
            .lock()
            .expect("stand-in state")
            .objects
            .iter()
            .filter(|(id, _)| id.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// A connected account and a paid PaymentIntent of 2 500 USD: (account, charge, intent).
    fn paid(state: &mut State) -> (String, String, String) {
        let (_, account) = state.create(
            "POST",
            "/v1/accounts",
            &form(&[("country", "US"), ("capabilities[transfers][requested]", "true")]),
        );
        state.objects.get_mut(account["id"].as_str().unwrap()).unwrap()["capabilities"]["transfers"] = json!("active");
        let (_, intent) =
            state.create("POST", "/v1/payment_intents", &form(&[("amount", "2500"), ("currency", "usd")]));
        let intent = state.succeed_intent(intent["id"].as_str().unwrap()).unwrap();
        let ids = |v: &Value| v.as_str().unwrap().to_owned();
        (ids(&account["id"]), ids(&intent["latest_charge"]), ids(&intent["id"]))
    }

    fn transfer(state: &mut State, pairs: &[(&str, &str)]) -> (u16, String) {
        let (status, body) = state.create("POST", "/v1/transfers", &form(pairs));
        (status, body["error"]["message"].as_str().unwrap_or_default().to_owned())
    }

    #[tokio::test]
    async fn a_key_replays_for_24_hours_after_its_first_use_and_is_then_forgotten() {
        let stand_in = StripeStandIn::start().await;
        let client = |key: &'static str, amount: &'static str| {
            let url = format!("{}v1/customers", stand_in.url());
            async move {
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                let answer = reqwest::Client::new()
                    .post(url)
                    .bearer_auth("sk_test_standin")
                    .header("idempotency-key", key)
                    .form(&[("email", "a@example.com"), ("metadata[n]", amount)])
                    .send()
                    .await
                    .unwrap();
                answer.json::<Value>().await.unwrap()
            }
        };
        let first = client("k1", "100").await;
        stand_in.advance_clock(Duration::from_secs(24 * 60 * 60 - 60));
        assert_eq!(client("k1", "100").await["id"], first["id"], "replayed within the day");
        assert_eq!(client("k1", "200").await["error"]["type"], "idempotency_error");
        stand_in.advance_clock(Duration::from_secs(60));
        let again = client("k1", "200").await;
        assert!(again["id"].is_string() && again["id"] != first["id"], "forgotten after 24 h: {again}");
    }

    #[test]
    fn transfers_are_refused_where_stripe_refuses_them() {
        let mut state = State::default();
        let (account, charge, intent) = paid(&mut state);
        let ok = [("amount", "1000"), ("currency", "usd"), ("destination", &account), ("source_transaction", &charge)];
        assert_eq!(
            transfer(&mut state, &[("amount", "10"), ("currency", "usd"), ("destination", "acct_none")]).1,
            "No such destination: 'acct_none'"
        );
        let (_, unboarded) =
            state.create("POST", "/v1/accounts", &form(&[("capabilities[transfers][requested]", "true")]));
        let to_unboarded = [("amount", "10"), ("currency", "usd"), ("destination", unboarded["id"].as_str().unwrap())];
        assert!(
            transfer(&mut state, &to_unboarded).1.contains("needs to have at least one of the following capabilities")
        );
        let other_currency =
            [("amount", "10"), ("currency", "eur"), ("destination", &account), ("source_transaction", &charge)];
        assert!(transfer(&mut state, &other_currency).1.contains("must be the same as the transfer currency (eur)"));
        let forged =
            [("amount", "10"), ("currency", "usd"), ("destination", &account), ("source_transaction", "ch_forged")];
        assert_eq!(transfer(&mut state, &forged).1, "No such charge: 'ch_forged'");
        assert_eq!(transfer(&mut state, &ok).0, 200);
        state.refunded.insert(intent, 1_000);
        let too_much =
            [("amount", "501"), ("currency", "usd"), ("destination", &account), ("source_transaction", &charge)];
        let (status, message) = transfer(&mut state, &too_much);
        assert_eq!(status, 400);
        assert!(message.contains("exceeds what is left of the source transaction (500)"), "{message}");
        let rest = [("amount", "500"), ("currency", "usd"), ("destination", &account), ("source_transaction", &charge)];
        assert_eq!(transfer(&mut state, &rest).0, 200);
    }

    #[test]
    fn only_an_unpaid_payment_intent_can_be_canceled_or_confirmed() {
        let mut state = State::default();
        let (_, _, paid_intent) = paid(&mut state);
        let (status, body) = state.create("POST", &format!("/v1/payment_intents/{paid_intent}/cancel"), &form(&[]));
        assert_eq!(status, 400);
        assert!(body["error"]["message"].as_str().unwrap().contains("status of succeeded"));
        let (_, open) = state.create("POST", "/v1/payment_intents", &form(&[("amount", "900"), ("currency", "usd")]));
        let id = open["id"].as_str().unwrap();
        let declined = form(&[("payment_method", "pm_card_chargeDeclined")]);
        assert_eq!(state.create("POST", &format!("/v1/payment_intents/{id}/confirm"), &declined).0, 402);
        let canceled = state.create(
            "POST",
            &format!("/v1/payment_intents/{id}/cancel"),
            &form(&[("cancellation_reason", "abandoned")]),
        );
        assert_eq!((canceled.0, canceled.1["status"].as_str()), (200, Some("canceled")));
        let visa = form(&[("payment_method", "pm_card_visa")]);
        assert_eq!(state.create("POST", &format!("/v1/payment_intents/{id}/confirm"), &visa).0, 400);
    }

    #[test]
    fn a_reversal_takes_no_more_than_the_transfer_left_or_the_account_holds() {
        let mut state = State::default();
        let (account, charge, _) = paid(&mut state);
        let sent =
            [("amount", "2000"), ("currency", "usd"), ("destination", &account), ("source_transaction", &charge)];
        let (_, transfer) = state.create("POST", "/v1/transfers", &form(&sent));
        let id = transfer["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/transfers/{id}/reversals");
        let (status, first) = state.create("POST", &path, &form(&[("amount", "1500"), ("metadata[cause]", "re_1")]));
        assert_eq!((status, first["metadata"]["cause"].as_str()), (200, Some("re_1")));
        let (status, body) = state.create("POST", &path, &form(&[("amount", "501")]));
        assert_eq!(status, 400);
        assert!(body["error"]["message"].as_str().unwrap().contains("amount left on the transfer (500)"));
        state.balances.insert(account.clone(), 100);
        let (status, body) = state.create("POST", &path, &form(&[("amount", "200")]));
        assert_eq!(status, 400, "the account paid out what it was sent");
        assert!(body["error"]["message"].as_str().unwrap().contains("Insufficient funds"));
        assert_eq!(state.objects[&id]["amount_reversed"], 1500);
        let (_, listed) = state.read(&path, &HashMap::new(), &[]);
        assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn lists_page_as_stripe_pages_them() {
        let mut state = State::default();
        let (_, _, intent) = paid(&mut state);
        for _ in 0..5 {
            state.create("POST", "/v1/refunds", &form(&[("payment_intent", &intent), ("amount", "100")]));
        }
        let query = |pairs: &[(&str, &str)]| form(&[&[("payment_intent", intent.as_str())], pairs].concat());
        let (_, first) = state.read("/v1/refunds", &query(&[("limit", "2")]), &[]);
        assert_eq!((first["data"].as_array().unwrap().len(), first["has_more"].as_bool()), (2, Some(true)));
        let last = first["data"][1]["id"].as_str().unwrap().to_owned();
        let (_, rest) = state.read("/v1/refunds", &query(&[("limit", "10"), ("starting_after", &last)]), &[]);
        assert_eq!((rest["data"].as_array().unwrap().len(), rest["has_more"].as_bool()), (3, Some(false)));
        assert_eq!(state.read("/v1/refunds", &query(&[("limit", "101")]), &[]).0, 400);
        let (_, default) = state.read("/v1/refunds", &query(&[]), &[]);
        assert_eq!(default["data"].as_array().unwrap().len(), 5, "ten by default");
    }
}
