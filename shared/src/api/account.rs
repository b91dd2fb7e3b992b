//! `account` function: `PATCH`/`DELETE /auth/me`, `POST /auth/me/phone/verify`, `POST /auth/me/restore`, `POST /auth/mfa/totp`,
//! `POST /auth/mfa/totp/confirm`, `DELETE /auth/mfa/totp`, `GET /orgs/me`, `POST`/`GET /orgs/invitations`,
//! `DELETE /orgs/invitations/{invitation_id}`, `PATCH /orgs/members/{user_id}`.

use crate::http::routes::{Endpoint, endpoint};
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{email_field, me_body, mfa_proof, optional_text, totp_code};
use crate::{
    App,
    http::{ApiError, ApiResponse, FieldError, RequestMeta, auth::authenticate, parse_json, serve},
    identity::{
        Role, account, invitations, mfa, orgs,
        phone::{self, Phone, ProfileChange},
    },
    rate_limit::Rule,
};

#[derive(Deserialize)]
struct PasswordBody {
    password: Option<String>,
}

#[derive(Deserialize, Default)]
struct CodeBody {
    code: Option<String>,
}

#[derive(Deserialize)]
struct MfaConfirmBody {
    password: Option<String>,
    code: Option<String>,
}

/// `null` and absent differ here: `null` clears the field, absent leaves it alone.
#[derive(Deserialize)]
struct ProfileBody {
    #[serde(default, deserialize_with = "present")]
    full_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    phone: Option<Option<String>>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl ProfileBody {
    fn validate(self) -> Result<ProfileChange, ApiError> {
        let mut errors = Vec::new();
        let full_name = self.full_name.map(|name| optional_text("full_name", name, &mut errors));
        // Only `null` clears the number: an empty string is a mistake, not a request.
        let phone = self
            .phone
            .map(|phone| Phone::parse(&phone?).map_err(|message| errors.push(FieldError::new("phone", message))).ok());
        if errors.is_empty() { Ok(ProfileChange { full_name, phone }) } else { Err(ApiError::Validation(errors)) }
    }
}

#[derive(Deserialize)]
struct MfaOffBody {
    password: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
}

#[derive(Deserialize)]
struct RestoreBody {
    email: Option<String>,
    password: Option<String>,
    captcha_token: Option<String>,
    /// With MFA on: a code from the authenticator, or a recovery code.
    code: Option<String>,
    recovery_code: Option<String>,
}

#[derive(Deserialize)]
struct InviteBody {
    email: Option<String>,
    role: Option<Role>,
}

#[derive(Deserialize)]
struct RoleBody {
    role: Option<Role>,
}

fn required<T>(field: &str, value: Option<T>) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::Validation(vec![FieldError::new(field, "is required")]))
}

fn password(value: Option<String>) -> Result<String, ApiError> {
    match value {
        Some(p) if p.chars().count() > 128 => Err(ApiError::InvalidCredentials),
        Some(p) if !p.is_empty() => Ok(p),
        _ => Err(ApiError::Validation(vec![FieldError::new("password", "is required")])),
    }
}

async fn delete_me(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    let password = password(parse_json::<PasswordBody>(req)?.password)?;
    let scheduled = account::schedule_deletion(app, &principal, &password, meta).await?;
    Ok(ApiResponse::json(StatusCode::ACCEPTED, json!({ "deletion_scheduled_at": scheduled })))
}

async fn restore(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    app.rate_limit(Rule::Restore, &meta.client_key()).await?;
    let body = parse_json::<RestoreBody>(req)?;
    let captcha_token = crate::captcha::token_field(body.captcha_token)?;
    let email = email_field(body.email)?;
    let password = password(body.password)?;
    let second_factor = match (body.code, body.recovery_code) {
        (None, None) => None,
        (code, recovery_code) => Some(mfa_proof(code, recovery_code)?),
    };
    account::restore(app, &email, &password, captcha_token.as_deref(), second_factor, meta).await?;
    Ok(ApiResponse::json(StatusCode::OK, json!({ "status": "restored" })))
}

async fn update_me(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    let change = parse_json::<ProfileBody>(req)?.validate()?;
    let user = phone::update_profile(app, &principal, change, meta).await?;
    Ok(ApiResponse::json(StatusCode::OK, me_body(&user)))
}

async fn verify_phone(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    let raw = parse_json::<CodeBody>(req)?.code;
    let code = raw
        .as_deref()
        .map(phone::parse_code)
        .unwrap_or(Err("is required"))
        .map_err(|message| ApiError::Validation(vec![FieldError::new("code", message)]))?;
    let user = phone::verify(app, &principal, &code, meta).await?;
    Ok(ApiResponse::json(StatusCode::OK, me_body(&user)))
}

async fn mfa_enrol(app: &App, req: &Request) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    app.rate_limit(Rule::Mfa, principal.user_id()).await?;
    let enrolment = mfa::enrol(app, &principal).await?;
    Ok(ApiResponse::json(StatusCode::OK, enrolment).with_header("cache-control", "no-store"))
}

async fn mfa_confirm(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    app.rate_limit(Rule::Mfa, principal.user_id()).await?;
    let body = parse_json::<MfaConfirmBody>(req)?;
    let code = totp_code(body.code)?;
    let password = password(body.password)?;
    let recovery_codes = mfa::confirm(app, &principal, &password, &code, meta).await?;
    Ok(ApiResponse::json(StatusCode::OK, json!({ "recovery_codes": recovery_codes }))
        .with_header("cache-control", "no-store"))
}

async fn mfa_disable(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    app.rate_limit(Rule::Mfa, principal.user_id()).await?;
    let body = parse_json::<MfaOffBody>(req)?;
    let password = password(body.password)?;
    let proof = mfa_proof(body.code, body.recovery_code)?;
    mfa::disable(app, &principal, &password, proof, meta).await?;
    Ok(ApiResponse::no_content())
}

async fn invite(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    principal.require_admin()?;
    app.rate_limit(Rule::Invite, principal.user_id()).await?;
    let body = parse_json::<InviteBody>(req)?;
    let email = email_field(body.email)?;
    let role = required("role", body.role)?;
    invitations::invite(app, &principal, &email, role, meta).await?;
    Ok(ApiResponse::json(StatusCode::ACCEPTED, json!({ "status": "invited" })))
}

async fn change_role(app: &App, req: &Request, meta: &RequestMeta, user_id: &str) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    principal.require_admin()?;
    let role = required("role", parse_json::<RoleBody>(req)?.role)?;
    let member = account::change_role(app, &principal, user_id, role, meta).await?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        json!({ "user_id": member.user_id, "org_id": member.org_id, "role": member.role, "joined_at": member.joined_at }),
    ))
}

async fn org_me(app: &App, req: &Request) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    Ok(ApiResponse::json(StatusCode::OK, orgs::view(app, &principal).await?))
}

async fn list_invitations(app: &App, req: &Request) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    let items = invitations::list(app, &principal).await?;
    Ok(ApiResponse::json(StatusCode::OK, json!({ "items": items })))
}

async fn revoke_invitation(app: &App, req: &Request, meta: &RequestMeta, id: &str) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    invitations::revoke(app, &principal, id, meta).await?;
    Ok(ApiResponse::no_content())
}

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(req, app.browser(), |req, meta| async move {
        let path = req.uri().path().to_owned();
        // Boxed: these futures nest several SDK calls, and a debug build's copy of them
        // would otherwise sit on the (2 MiB) stack of whatever polls the handler.
        match endpoint(req.method().as_str(), &path)? {
            Endpoint::DeleteMe => delete_me(app, &req, &meta).await,
            Endpoint::UpdateMe => Box::pin(update_me(app, &req, &meta)).await,
            Endpoint::VerifyPhone => Box::pin(verify_phone(app, &req, &meta)).await,
            Endpoint::RestoreMe => restore(app, &req, &meta).await,
            Endpoint::Invite => invite(app, &req, &meta).await,
            Endpoint::MfaEnrol => Box::pin(mfa_enrol(app, &req)).await,
            Endpoint::MfaConfirm => Box::pin(mfa_confirm(app, &req, &meta)).await,
            Endpoint::MfaDisable => Box::pin(mfa_disable(app, &req, &meta)).await,
            Endpoint::ListInvitations => Box::pin(list_invitations(app, &req)).await,
            Endpoint::OrgMe => Box::pin(org_me(app, &req)).await,
            Endpoint::RevokeInvitation(id) => Box::pin(revoke_invitation(app, &req, &meta, id)).await,
            Endpoint::ChangeRole(user_id) => Box::pin(change_role(app, &req, &meta, user_id)).await,
            _ => Err(ApiError::NotFound),
        }
    })
    .await
}
