//! `audit` function: `GET /admin/audit-logs`.

use crate::http::routes::{Endpoint, endpoint};
use std::collections::HashMap;

use lambda_http::{Body, Request, RequestExt, Response, http::StatusCode};

use crate::{
    App,
    audit::{AuditFilter, query::query},
    http::auth::authenticate,
    http::{ApiError, ApiResponse, serve},
};

async fn audit_logs(app: &App, req: &Request) -> Result<ApiResponse, ApiError> {
    let principal = authenticate(app, req).await?;
    // Only admins, and only their own organisation: there is no parameter to name another.
    principal.require_admin()?;
    let params = req.query_string_parameters();
    let query_map: HashMap<String, String> = params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let filter = AuditFilter::parse(&query_map)?;
    let page = query(app, principal.org_id(), &filter).await?;
    Ok(ApiResponse::json(StatusCode::OK, page))
}

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(req, app.browser(), |req, _meta| async move {
        match endpoint(req.method().as_str(), req.uri().path())? {
            Endpoint::AuditLogs => audit_logs(app, &req).await,
            _ => Err(ApiError::NotFound),
        }
    })
    .await
}
