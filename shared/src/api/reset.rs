//! `reset` function: `POST /auth/forgot-password`, `POST /auth/reset-password`,
//! `POST /auth/factors/revoke` (the links that give an account back to its mailbox's owner).

use crate::http::routes::{Endpoint, endpoint};
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{email_field, token_field};
use crate::{
    App,
    http::{ApiError, ApiResponse, FieldError, RequestMeta, parse_json, serve},
    identity,
    rate_limit::Rule,
};

#[derive(Deserialize)]
struct ForgotBody {
    email: Option<String>,
    captcha_token: Option<String>,
}

#[derive(Deserialize)]
struct ResetBody {
    token: Option<String>,
    new_password: Option<String>,
}

async fn forgot(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let body = parse_json::<ForgotBody>(req)?;
    let captcha_token = crate::captcha::token_field(body.captcha_token)?;
    let email = email_field(body.email)?;
    // Per address *and* client, so nobody else spends the owner's requests; the inbox cap
    // bounds what many clients together can send one person (who then already holds a
    // fresh link).
    // The inbox cap is spent only by requests that passed the CAPTCHA, so refused ones from
    // many addresses cannot use up the owner's hour.
    // A client asking for many addresses is bounded too, whichever addresses it names.
    app.rate_limit(Rule::ForgotPasswordClient, &meta.client_key()).await?;
    app.rate_limit(Rule::ForgotPassword, &format!("{}\n{}", email.as_str(), meta.client_key())).await?;
    app.require_captcha(captcha_token.as_deref(), meta).await?;
    app.rate_limit(Rule::ForgotPasswordInbox, email.as_str()).await?;
    identity::forgot_password(app, &email, meta).await?;
    Ok(ApiResponse::json(StatusCode::ACCEPTED, json!({ "status": "sent_if_registered" })))
}

async fn reset(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    app.rate_limit(Rule::ResetPassword, &meta.client_key()).await?;
    let body = parse_json::<ResetBody>(req)?;
    let Some(new_password) = body.new_password else {
        return Err(ApiError::Validation(vec![FieldError::new("new_password", "is required")]));
    };
    let token = token_field("token", body.token)?;
    identity::reset_password(app, &token, &new_password, meta).await?;
    Ok(ApiResponse::json(StatusCode::OK, json!({ "status": "password_reset" })))
}

#[derive(Deserialize)]
struct RevokeBody {
    token: Option<String>,
}

/// `POST /auth/factors/revoke`: the link in a "two-step verification is on" email.
async fn revoke_factor(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    app.rate_limit(Rule::ResetPassword, &meta.client_key()).await?;
    let token = token_field("token", parse_json::<RevokeBody>(req)?.token)?;
    identity::mfa::revoke_by_link(app, &token, meta).await?;
    Ok(ApiResponse::json(StatusCode::OK, json!({ "status": "revoked" })))
}

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(req, app.browser(), |req, meta| async move {
        match endpoint(req.method().as_str(), req.uri().path())? {
            Endpoint::ForgotPassword => forgot(app, &req, &meta).await,
            Endpoint::ResetPassword => reset(app, &req, &meta).await,
            Endpoint::RevokeFactor => revoke_factor(app, &req, &meta).await,
            _ => Err(ApiError::NotFound),
        }
    })
    .await
}
