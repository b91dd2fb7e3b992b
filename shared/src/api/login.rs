//! `login` function: `POST /auth/login`, `POST /auth/login/mfa`, `POST /auth/refresh`, `POST /auth/logout`,
//! `GET /auth/me`, `GET /.well-known/jwks.json`, `GET /.well-known/openid-configuration`,
//! `GET /health`, `GET /openapi.json`.

use crate::http::routes::{Endpoint, endpoint};
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{email_field, me_body, token_field};
use crate::{
    App,
    audit::{AuditEntry, AuditStatus},
    http::auth::authenticate,
    http::{ApiError, ApiResponse, FieldError, RequestMeta, parse_json, serve},
    identity::{login, mfa, session},
    rate_limit::Rule,
};

#[derive(Deserialize)]
struct LoginBody {
    email: Option<String>,
    password: Option<String>,
    captcha_token: Option<String>,
}

#[derive(Deserialize)]
struct MfaLoginBody {
    mfa_token: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: Option<String>,
}

async fn login_route(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let body = parse_json::<LoginBody>(req)?;
    let captcha_token = crate::captcha::token_field(body.captcha_token)?;
    let email = email_field(body.email)?;
    let password = match body.password {
        Some(p) if !p.is_empty() && p.chars().count() <= 128 => p,
        Some(p) if !p.is_empty() => return Err(ApiError::InvalidCredentials),
        _ => return Err(ApiError::Validation(vec![FieldError::new("password", "is required")])),
    };
    let tokens = login::login(app, &email, &password, captcha_token.as_deref(), meta).await?;
    Ok(ApiResponse::json(StatusCode::OK, tokens))
}

async fn mfa_login_route(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    app.rate_limit(Rule::Login, &meta.client_key()).await?;
    let body = parse_json::<MfaLoginBody>(req)?;
    let mfa_token = token_field("mfa_token", body.mfa_token).map_err(|e| match e {
        ApiError::TokenInvalid => ApiError::InvalidCredentials,
        other => other,
    })?;
    let proof = super::mfa_proof(body.code, body.recovery_code)?;
    let tokens = mfa::complete_login(app, &mfa_token, proof, meta).await?;
    Ok(ApiResponse::json(StatusCode::OK, tokens))
}

async fn refresh_route(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    app.rate_limit(Rule::Refresh, &meta.client_key()).await?;
    let token = token_field("refresh_token", parse_json::<RefreshBody>(req)?.refresh_token).map_err(|e| match e {
        ApiError::TokenInvalid => ApiError::Unauthorized,
        other => other,
    })?;
    let tokens = session::refresh(app, &token, meta).await?;
    Ok(ApiResponse::json(StatusCode::OK, tokens))
}

async fn logout_route(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    // A refresh token in the body names the session to end, if it is another of this user's.
    let other_session = if req.body().is_empty() { None } else { parse_json::<RefreshBody>(req)?.refresh_token };
    let entry = AuditEntry::new("auth.logout", AuditStatus::Success, principal.org_id(), meta)
        .actor(principal.user_id())
        .details(json!({ "session_id": principal.session_id() }));
    session::revoke_recorded(app, principal.user_id(), principal.session_id(), &entry).await?;
    if let Some(token) = other_session.filter(|t| !t.is_empty() && t.len() <= 256) {
        session::revoke_by_refresh_token(app, principal.user_id(), &token).await?;
    }
    Ok(ApiResponse::no_content())
}

async fn me_route(app: &App, req: &Request) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    Ok(ApiResponse::json(StatusCode::OK, me_body(&principal.user)))
}

async fn jwks_route(app: &App) -> Result<ApiResponse, ApiError> {
    let keys = app.keys().await?;
    Ok(ApiResponse::json(StatusCode::OK, keys.jwks()).with_header("cache-control", "public, max-age=300"))
}

/// `GET /health`: that the function runs, and which build it is. Touches nothing else, so
/// it says nothing about DynamoDB or Stripe (their alarms do) and costs nothing to poll.
fn health() -> ApiResponse {
    ApiResponse::json(StatusCode::OK, json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
        .with_header("cache-control", "no-store")
}

/// The project's OpenAPI document (`openapi.yaml`, as JSON; see `shared/build.rs`).
const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

fn openapi() -> ApiResponse {
    ApiResponse::raw_json(StatusCode::OK, OPENAPI_JSON).with_header("cache-control", "public, max-age=300")
}

fn openid_configuration(app: &App) -> ApiResponse {
    let issuer = &app.settings().jwt_issuer;
    ApiResponse::json(
        StatusCode::OK,
        json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "token_endpoint": format!("{issuer}/auth/login"),
            "userinfo_endpoint": format!("{issuer}/auth/me"),
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "grant_types_supported": ["password", "refresh_token"],
            "claims_supported": ["iss", "aud", "sub", "org", "role", "iat", "exp", "jti", "token_use", "csrf", "sid"],
        }),
    )
    .with_header("cache-control", "public, max-age=3600")
}

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(req, app.browser(), |req, meta| async move {
        match endpoint(req.method().as_str(), req.uri().path())? {
            Endpoint::Login => login_route(app, &req, &meta).await,
            Endpoint::LoginMfa => mfa_login_route(app, &req, &meta).await,
            Endpoint::Refresh => refresh_route(app, &req, &meta).await,
            Endpoint::Logout => logout_route(app, &req, &meta).await,
            Endpoint::Me => me_route(app, &req).await,
            Endpoint::Jwks => jwks_route(app).await,
            Endpoint::OpenidConfiguration => Ok(openid_configuration(app)),
            Endpoint::Health => Ok(health()),
            Endpoint::OpenApi => Ok(openapi()),
            _ => Err(ApiError::NotFound),
        }
    })
    .await
}
