//! `verify` function: `POST /auth/verify-email`, `POST /auth/resend-verification`.

use crate::http::routes::{Endpoint, endpoint};
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{email_field, token_field};
use crate::{
    App,
    http::{ApiError, ApiResponse, RequestMeta, parse_json, serve},
    identity,
    rate_limit::Rule,
};

#[derive(Deserialize)]
struct TokenBody {
    token: Option<String>,
}

#[derive(Deserialize)]
struct EmailBody {
    email: Option<String>,
}

async fn verify_email(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    app.rate_limit(Rule::VerifyEmail, &meta.client_key()).await?;
    let token = token_field("token", parse_json::<TokenBody>(req)?.token)?;
    identity::verify_email(app, &token, meta).await?;
    Ok(ApiResponse::json(StatusCode::OK, json!({ "status": "verified" })))
}

async fn resend(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let email = email_field(parse_json::<EmailBody>(req)?.email)?;
    // Per client, whichever addresses it names; then per address, whoever asks.
    app.rate_limit(Rule::ResendVerificationClient, &meta.client_key()).await?;
    app.rate_limit(Rule::ResendVerification, email.as_str()).await?;
    identity::resend_verification(app, &email).await?;
    Ok(ApiResponse::json(StatusCode::ACCEPTED, json!({ "status": "sent_if_pending" })))
}

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(req, app.browser(), |req, meta| async move {
        match endpoint(req.method().as_str(), req.uri().path())? {
            Endpoint::VerifyEmail => verify_email(app, &req, &meta).await,
            Endpoint::ResendVerification => resend(app, &req, &meta).await,
            _ => Err(ApiError::NotFound),
        }
    })
    .await
}
