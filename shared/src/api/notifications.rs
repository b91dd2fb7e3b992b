//! `notifications` function: push devices, preferences and unsubscribe links.
//! `POST /notifications/devices`, `GET /notifications/devices`,
//! `DELETE /notifications/devices/{device_id}`, `GET|PUT /notifications/preferences`,
//! `POST /notifications/unsubscribe` and `POST /notifications/unsubscribe/one-click?token=`
//! (no login: the token is the authority).

use crate::http::routes::{Endpoint, endpoint};
use lambda_http::{Body, Request, RequestExt, Response, http::StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::{
    App,
    http::auth::authenticate,
    http::{ApiError, ApiResponse, FieldError, RequestMeta, parse_json, serve},
    notify::{
        Preferences,
        push::{Device, DeviceToken},
        unsubscribe,
    },
    rate_limit::Rule,
};

#[derive(Deserialize)]
struct DeviceBody {
    platform: Option<String>,
    token: Option<String>,
}

#[derive(Deserialize)]
struct UnsubscribeBody {
    token: Option<String>,
}

fn device_body(device: &Device) -> serde_json::Value {
    json!({ "device_id": device.device_id, "platform": device.platform, "created_at": device.created_at })
}

async fn add_device(app: &App, req: &Request) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    app.rate_limit(Rule::RegisterDevice, principal.user_id()).await?;
    let body = parse_json::<DeviceBody>(req)?;
    let token = DeviceToken::parse(body.platform.as_deref(), body.token.as_deref())?;
    let device = Device::register(app, principal.user_id(), &token).await?;
    Ok(ApiResponse::json(StatusCode::CREATED, device_body(&device)))
}

async fn list_devices(app: &App, req: &Request) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    let devices = Device::list(app.table(), principal.user_id()).await?;
    Ok(ApiResponse::json(StatusCode::OK, json!({ "devices": devices.iter().map(device_body).collect::<Vec<_>>() })))
}

async fn remove_device(app: &App, req: &Request, device_id: &str) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    Device::remove(app, principal.user_id(), device_id).await?;
    Ok(ApiResponse::no_content())
}

async fn get_preferences(app: &App, req: &Request) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    let preferences = Preferences::load(app.table(), principal.user_id()).await?;
    Ok(ApiResponse::json(StatusCode::OK, preferences))
}

async fn put_preferences(app: &App, req: &Request) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    let body = parse_json::<serde_json::Value>(req)?;
    // Checked once before touching the table, so bad input changes nothing.
    Preferences::default().apply(&body)?;
    let preferences =
        Preferences::update(app.table(), principal.user_id(), |p| p.apply(&body).map_err(ApiError::from)).await?;
    Ok(ApiResponse::json(StatusCode::OK, preferences))
}

async fn unsubscribe(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    app.rate_limit(Rule::Unsubscribe, &meta.client_key()).await?;
    let Some(token) = parse_json::<UnsubscribeBody>(req)?.token else {
        return Err(ApiError::Validation(vec![FieldError::new("token", "is required")]));
    };
    let done = unsubscribe::unsubscribe(app, &token).await?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        json!({ "status": "unsubscribed", "channel": done.channel, "category": done.category }),
    ))
}

/// `POST /notifications/unsubscribe/one-click?token=`: RFC 8058, what Gmail and Yahoo ask of
/// bulk senders. A mail client posts the form `List-Unsubscribe=One-Click` to the URL in the
/// `List-Unsubscribe` header, from any origin or none (the browser rules let this one
/// route through); the token in the URL is the authority, as for the link. These posts come
/// from a mail provider's few servers on behalf of every recipient, so only refused tokens
/// count against the sender's address.
async fn one_click_unsubscribe(app: &App, req: &Request, meta: &RequestMeta) -> Result<ApiResponse, ApiError> {
    if !unsubscribe::is_one_click_form(req.body().as_ref()) {
        return Err(ApiError::Validation(vec![FieldError::new("List-Unsubscribe", "must be One-Click")]));
    }
    let Some(token) = req.query_string_parameters_ref().and_then(|q| q.first("token")).map(str::to_owned) else {
        return Err(ApiError::Validation(vec![FieldError::new("token", "is required")]));
    };
    let done = match unsubscribe::unsubscribe(app, &token).await {
        Ok(done) => done,
        Err(unsubscribe::UnsubscribeError::TokenInvalid) => {
            app.rate_limit(Rule::Unsubscribe, &meta.client_key()).await?;
            return Err(ApiError::TokenInvalid);
        }
        Err(other) => return Err(other.into()),
    };
    Ok(ApiResponse::json(
        StatusCode::OK,
        json!({ "status": "unsubscribed", "channel": done.channel, "category": done.category }),
    ))
}

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(req, app.browser(), |req, meta| async move {
        let path = req.uri().path().to_owned();
        match endpoint(req.method().as_str(), &path)? {
            Endpoint::AddDevice => add_device(app, &req).await,
            Endpoint::ListDevices => list_devices(app, &req).await,
            Endpoint::RemoveDevice(device_id) => remove_device(app, &req, device_id).await,
            Endpoint::GetPreferences => get_preferences(app, &req).await,
            Endpoint::PutPreferences => put_preferences(app, &req).await,
            Endpoint::Unsubscribe => unsubscribe(app, &req, &meta).await,
            Endpoint::OneClickUnsubscribe => one_click_unsubscribe(app, &req, &meta).await,
            _ => Err(ApiError::NotFound),
        }
    })
    .await
}
