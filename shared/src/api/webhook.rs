//! `webhook` function: `POST /stripe/webhook` on a Lambda function URL (no API Gateway, no
//! auth: the signature is the authentication).

use lambda_http::{Body, Request, Response, http::StatusCode};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::{
    App,
    audit::{Audit, AuditEntry, AuditStatus},
    http::{ApiError, ApiResponse, Browser, RequestMeta, serve},
    webhook::{
        process::{Outcome, StripeEvent, process},
        signature::verify,
    },
};

/// Audit entries about deliveries that belong to no organisation.
pub const PLATFORM_AUDIT_ORG: &str = "platform";

async fn receive(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let secrets = app.secrets().get().await.map_err(ApiError::internal)?;
    let body = req.body().as_ref();
    // Two Stripe endpoints deliver here, each signing with its own secret: the Connect
    // endpoint's events carry `account`, the platform endpoint's don't. Each is verified with
    // its own endpoint's secrets only, so neither secret can forge the other's events.
    let connected = StripeEvent::claimed_account(body);
    let endpoint_secrets = match connected {
        Some(_) => &secrets.stripe_connect_webhook_secrets,
        None => &secrets.stripe_webhook_secrets,
    };
    let keys: Vec<&str> = endpoint_secrets.iter().map(|s| s.expose_secret()).collect();
    let header = req.headers().get("stripe-signature").and_then(|v| v.to_str().ok());
    let now = crate::time::now().unix_timestamp();
    if let Err(error) = verify(header, body, &keys, now, app.settings().stripe.webhook_tolerance_seconds) {
        let endpoint = if connected.is_some() { "connect" } else { "platform" };
        tracing::warn!(%error, endpoint, "Stripe webhook signature rejected");
        let entry = AuditEntry::new("webhook.signature_failure", AuditStatus::Failure, PLATFORM_AUDIT_ORG, meta)
            .details(json!({ "reason": error.to_string(), "endpoint": endpoint }));
        app.audit().record_or_log(&entry).await;
        return Err(ApiError::SignatureInvalid);
    }
    let event = StripeEvent::parse(body).ok_or_else(|| ApiError::MalformedJson("not a Stripe event".into()))?;
    let outcome = process(app, &event, meta).await?;
    tracing::info!(event_id = %event.id, event_type = %event.kind, ?outcome, "Stripe event");
    let mut answer = json!({ "received": true });
    if outcome == Outcome::Duplicate {
        answer["duplicate"] = json!(true);
    }
    Ok(ApiResponse::json(StatusCode::OK, answer))
}

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(req, Browser::SignedTransport, |req, meta| async move {
        match (req.method().as_str(), req.uri().path()) {
            ("POST", "/" | "/stripe/webhook") => receive(app, &req, &meta).await,
            (_, "/" | "/stripe/webhook") => Err(ApiError::MethodNotAllowed("POST".into())),
            _ => Err(ApiError::NotFound),
        }
    })
    .await
}
