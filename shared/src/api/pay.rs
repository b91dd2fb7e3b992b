//! `pay` function: `POST /providers`, `GET /providers/{id}`, `POST`/`GET /payments`,
//! `GET /payments/{id}`, `POST /payments/{id}/refund`, the subscription routes; and the
//! `release` function's `POST /payments/{id}/release`.

use crate::http::routes::{Endpoint, endpoint};
use std::collections::HashMap;

use lambda_http::{Body, Request, RequestExt, Response, http::StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::{
    App,
    http::auth::authenticate,
    http::{ApiError, ApiResponse, FieldError, RequestMeta, parse_json, required_field, serve},
    identity::auth::Principal,
    payments::{
        Amount, Currency,
        history::{self, HistoryQuery},
        idempotency, moves,
        outcome::{RefundOutcome, RefundRequest, ReleaseOutcome},
        payment::{self, NewPayment},
        provider::{self, ProviderInput},
        subscription::{self, PlanChange},
    },
    rate_limit::Rule,
};

#[derive(Deserialize, Default)]
struct ProviderBody {
    country: Option<String>,
    business_type: Option<String>,
    phone: Option<String>,
}

#[derive(Deserialize)]
struct PaymentBody {
    amount: Option<i64>,
    currency: Option<String>,
    provider_id: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct SubscriptionBody {
    price_id: Option<String>,
}

#[derive(Deserialize)]
struct PlanChangeBody {
    price_id: Option<String>,
    proration_behavior: Option<String>,
}

#[derive(Deserialize, Default)]
struct CancelBody {
    at_period_end: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RefundBody {
    reason: Option<String>,
    amount: Option<i64>,
}

impl PaymentBody {
    fn validate(self, payment_id: String) -> Result<NewPayment, ApiError> {
        let mut errors = Vec::new();
        let currency = required_field("currency", self.currency.as_deref().map(Currency::parse), &mut errors);
        // Its limits are the currency's: checked once the currency is known.
        let amount = match (self.amount, &currency) {
            (Some(value), Some(currency)) => {
                required_field("amount", Some(Amount::parse(value, currency)), &mut errors)
            }
            (None, _) => required_field::<Amount, String>("amount", None, &mut errors),
            (Some(_), None) => None,
        };
        let provider_id = self.provider_id.filter(|p| !p.is_empty() && p.len() <= 64);
        if provider_id.is_none() {
            errors.push(FieldError::new("provider_id", "is required"));
        }
        let description = self.description.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
        if description.as_ref().is_some_and(|d| d.chars().count() > 500) {
            errors.push(FieldError::new("description", "must be at most 500 characters"));
        }
        match (amount, currency, provider_id) {
            (Some(amount), Some(currency), Some(provider_id)) if errors.is_empty() => {
                Ok(NewPayment { payment_id, amount, currency, provider_id, description })
            }
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

/// An optional JSON body: empty is the default.
fn optional_body<T: serde::de::DeserializeOwned + Default>(req: &Request) -> Result<T, ApiError> {
    if req.body().iter().all(u8::is_ascii_whitespace) { Ok(T::default()) } else { parse_json(req) }
}

/// The caller, once they have a Stripe call left in their rate limit.
async fn stripe_caller(app: &App, req: &Request) -> Result<Principal, ApiError> {
    let principal = authenticate(app, req).await?;
    app.rate_limit(Rule::Stripe, principal.user_id()).await?;
    Ok(principal)
}

async fn create_provider(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let principal = stripe_caller(app, req).await?;
    let body: ProviderBody = optional_body(req)?;
    let input = ProviderInput::parse(body.country, body.business_type, body.phone)?;
    let (provider, url) = provider::create_or_refresh(app, &principal, input, meta).await?;
    Ok(ApiResponse::json(StatusCode::CREATED, provider.body(Some(&url))))
}

/// Runs `create` under an idempotency claim on `key`: replays a completed request, stores a
/// successful answer, gives the key back on failure. `None` runs it unguarded.
async fn idempotent<F, Fut>(
    app: &App,
    req: &Request,
    scope: &str,
    key: Option<&str>,
    create: F,
) -> Result<ApiResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, ApiError>>,
{
    let Some(key) = key else {
        return Ok(ApiResponse::json(StatusCode::CREATED, create().await?));
    };
    let hash = idempotency::request_hash(req.method().as_str(), req.uri().path(), req.body().as_ref());
    let table = app.table();
    let sealer = app.sealer(crate::seal::IDEMPOTENT_ANSWER).await?;
    let claim = match idempotency::begin(table, &sealer, scope, key, &hash).await? {
        idempotency::Begin::Replay { status, body } => {
            let status = StatusCode::from_u16(status).map_err(ApiError::internal)?;
            return Ok(ApiResponse::json(status, body).with_header("idempotent-replayed", "true"));
        }
        idempotency::Begin::Proceed(claim) => claim,
    };
    match create().await {
        Ok(body) => {
            claim.complete(table, &sealer, StatusCode::CREATED.as_u16(), &body).await?;
            Ok(ApiResponse::json(StatusCode::CREATED, body))
        }
        Err(error) => {
            claim.release(table).await;
            Err(error)
        }
    }
}

async fn create_payment(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    // A request missing its key is refused before it spends the caller's Stripe allowance.
    let principal = authenticate(app, req).await?;
    let key = idempotency::parse_key(req.headers().get("idempotency-key").and_then(|v| v.to_str().ok()))?;
    app.rate_limit(Rule::Stripe, principal.user_id()).await?;
    let scope = format!("payments#{}", principal.user_id());
    let input = parse_json::<PaymentBody>(req)?.validate(payment::payment_id_for(&scope, &key))?;
    idempotent(app, req, &scope, Some(&key), || async {
        let (payment, client_secret) = payment::create(app, &principal, input, meta).await?;
        Ok(json!({
                "payment_id": payment.payment_id,
                "status": payment.status,
                "client_secret": client_secret,
                "amount": payment.amount,
                "currency": payment.currency,
                "provider_id": payment.provider_id,
                "stripe_payment_intent_id": payment.stripe_payment_intent_id,
                "created_at": payment.created_at,
        }))
    })
    .await
}

/// `GET /payments`: a page of the caller's history as payer or provider.
async fn list_payments(app: &App, req: &Request) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    let params = req.query_string_parameters();
    let query: HashMap<String, String> = params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let page = history::page(app, &principal, &HistoryQuery::parse(&query)?).await?;
    Ok(ApiResponse::json(StatusCode::OK, page.body()))
}

/// `POST /subscriptions`: `Idempotency-Key` is optional here and, when given, works as
/// for payments.
async fn create_subscription(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let principal = stripe_caller(app, req).await?;
    if principal.role() == crate::identity::Role::Viewer {
        return Err(ApiError::Forbidden);
    }
    let price_id = match parse_json::<SubscriptionBody>(req)?.price_id {
        Some(p) if subscription::valid_price_id(&p) => p,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "price_id",
                "must be a Stripe price id (price_...)",
            )]));
        }
        None => return Err(ApiError::Validation(vec![FieldError::new("price_id", "is required")])),
    };
    let header = req.headers().get("idempotency-key").and_then(|v| v.to_str().ok());
    let key = header.map(|_| idempotency::parse_key(header)).transpose()?;
    let stripe_key = match &key {
        Some(key) => idempotency::stripe_key(&format!("subscription:{}", principal.user_id()), key),
        None => format!("subscription:{}", uuid::Uuid::new_v4()),
    };
    let scope = format!("subscriptions#{}", principal.user_id());
    idempotent(app, req, &scope, key.as_deref(), || async {
        let (sub, client_secret) = subscription::start(app, &principal, &price_id, &stripe_key, meta).await?;
        let mut body = sub.body();
        body["client_secret"] = json!(client_secret);
        Ok(body)
    })
    .await
}

/// `PATCH /subscriptions/{id}`: a plan change. A body that can't be one is refused before it
/// spends the caller's Stripe allowance.
async fn change_plan(app: &App, req: &Request, id: &str, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    let body: PlanChangeBody = parse_json(req)?;
    let change = PlanChange::parse(body.price_id, body.proration_behavior)?;
    app.rate_limit(Rule::Stripe, principal.user_id()).await?;
    let sub = subscription::change_plan(app, &principal, id, &change, meta).await?;
    Ok(ApiResponse::json(StatusCode::OK, sub.body()))
}

/// `POST /payments/{id}/refund`.
async fn refund_payment(app: &App, req: &Request, id: &str, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let principal = stripe_caller(app, req).await?;
    let body: RefundBody = optional_body(req)?;
    let mut errors = Vec::new();
    if body.amount.is_some_and(|a| a <= 0) {
        errors.push(FieldError::new("amount", "must be a positive amount in minor units"));
    }
    if body.reason.as_deref().is_some_and(|r| !matches!(r, "duplicate" | "fraudulent" | "requested_by_customer")) {
        errors.push(FieldError::new("reason", "must be duplicate, fraudulent or requested_by_customer"));
    }
    // A partial refund retried without a key would be another refund.
    let key = req.headers().get("idempotency-key").map(|v| v.to_str().unwrap_or("\u{0}"));
    let key = match (key, body.amount) {
        (None, None) => None,
        (key, _) => match idempotency::parse_key(key) {
            Ok(key) => Some(key),
            Err(crate::payments::PaymentError::Validation(mut invalid)) => {
                errors.append(&mut invalid);
                None
            }
            Err(other) => return Err(other.into()),
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let request = key.map(|key| RefundRequest::new(&key, body.amount, body.reason.as_deref()));
    let (amount, reason) = (body.amount, body.reason.as_deref());
    let outcome = moves::refund(app, &principal, id, amount, reason, request.as_ref(), meta).await?;
    let (status, payment_id, status_now, amount_refunded) = match outcome {
        RefundOutcome::Done(p) => (StatusCode::OK, p.payment_id, p.status, p.amount_refunded),
        RefundOutcome::Pending(p) => (StatusCode::ACCEPTED, p.payment_id, p.status, p.amount_refunded),
        RefundOutcome::Replayed(a) => (StatusCode::OK, a.payment_id, a.status, a.amount_refunded),
    };
    Ok(ApiResponse::json(
        status,
        json!({ "payment_id": payment_id, "status": status_now, "amount_refunded": amount_refunded }),
    ))
}

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(req, app.browser(), |req, meta| async move {
        let path = req.uri().path().to_owned();
        match endpoint(req.method().as_str(), &path)? {
            Endpoint::CreateProvider => create_provider(app, &req, &meta).await,
            Endpoint::CreatePayment => create_payment(app, &req, &meta).await,
            Endpoint::ListPayments => list_payments(app, &req).await,
            Endpoint::CreateSubscription => create_subscription(app, &req, &meta).await,
            Endpoint::ListSubscriptions => {
                let principal = authenticate(app, &req).await?;
                let items: Vec<_> = subscription::list(app, &principal).await?.iter().map(|s| s.body()).collect();
                Ok(ApiResponse::json(StatusCode::OK, json!({ "items": items })))
            }
            Endpoint::CancelSubscription(id) => {
                let principal = stripe_caller(app, &req).await?;
                let body: CancelBody = optional_body(&req)?;
                let sub = subscription::cancel(app, &principal, id, body.at_period_end.unwrap_or(false), &meta).await?;
                Ok(ApiResponse::json(StatusCode::OK, sub.body()))
            }
            Endpoint::ChangePlan(id) => change_plan(app, &req, id, &meta).await,
            Endpoint::GetProvider(id) => {
                let principal = authenticate(app, &req).await?;
                let provider = provider::get(app, &principal, id).await?;
                Ok(ApiResponse::json(StatusCode::OK, provider.body(None)))
            }
            Endpoint::GetPayment(id) => {
                let principal = authenticate(app, &req).await?;
                Ok(ApiResponse::json(StatusCode::OK, payment::get(app, &principal, id).await?.body()))
            }
            Endpoint::RefundPayment(id) => refund_payment(app, &req, id, &meta).await,
            _ => Err(ApiError::NotFound),
        }
    })
    .await
}

/// `POST /payments/{id}/release`
pub async fn handle_release(app: &App, req: Request) -> Response<Body> {
    serve(req, app.browser(), |req, meta| async move {
        let path = req.uri().path().to_owned();
        match endpoint(req.method().as_str(), &path)? {
            Endpoint::ReleasePayment(id) => {
                let principal = authenticate(app, &req).await?;
                Ok(match moves::release(app, &principal, id, &meta).await? {
                    ReleaseOutcome::Released { transfer_id, already_released } => ApiResponse::json(
                        StatusCode::OK,
                        json!({ "payment_id": id, "status": "released", "transfer_id": transfer_id,
                                "already_released": already_released }),
                    ),
                    // The transfer's outcome is unknown; reconciliation settles it.
                    ReleaseOutcome::Pending => {
                        ApiResponse::json(StatusCode::ACCEPTED, json!({ "payment_id": id, "status": "releasing" }))
                    }
                })
            }
            _ => Err(ApiError::NotFound),
        }
    })
    .await
}
