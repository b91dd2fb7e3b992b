//! Successful responses, and [`serve`]: the wrapper every route handler runs inside.

use std::future::Future;

use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::Serialize;
use tracing::Instrument;

use super::{ApiError, Browser, RequestMeta};

#[derive(Debug)]
pub struct ApiResponse {
    status: StatusCode,
    /// Serialised JSON.
    body: Option<String>,
    headers: Vec<(&'static str, String)>,
}

impl ApiResponse {
    pub fn json(status: StatusCode, body: impl Serialize) -> Self {
        Self {
            status,
            body: Some(serde_json::to_string(&body).expect("response bodies serialize")),
            headers: Vec::new(),
        }
    }

    /// A body that is JSON already (a document built into the binary).
    pub fn raw_json(status: StatusCode, body: &str) -> Self {
        Self { status, body: Some(body.to_owned()), headers: Vec::new() }
    }

    pub fn no_content() -> Self {
        Self { status: StatusCode::NO_CONTENT, body: None, headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn into_response(self) -> Response<Body> {
        let mut builder = Response::builder().status(self.status);
        // Answers are not cached unless the handler says otherwise (and then only its word).
        if !self.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("cache-control")) {
            builder = builder.header("cache-control", "no-store");
        }
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        match self.body {
            Some(body) => builder.header("content-type", "application/json").body(Body::from(body)),
            None => builder.body(Body::Empty),
        }
        .expect("handler headers are valid")
    }
}

/// Runs `handler` inside a span carrying the request ids, once the request has passed the
/// `browser` rules; renders its result (errors as problem+json) and stamps `X-Request-Id`
/// on whatever comes out. Never fails: a Lambda error would turn into API Gateway's opaque
/// 500.
pub async fn serve<F, Fut>(req: Request, browser: Browser<'_>, handler: F) -> Response<Body>
where
    F: FnOnce(Request, RequestMeta) -> Fut,
    Fut: Future<Output = Result<ApiResponse, ApiError>>,
{
    let meta = super::request::request_meta(&req);
    let span = tracing::info_span!(
        "request",
        request_id = %meta.request_id,
        client_request_id = meta.client_request_id.as_deref().unwrap_or(""),
        apigw_request_id = meta.apigw_request_id.as_deref().unwrap_or(""),
        lambda_request_id = meta.lambda_request_id.as_deref().unwrap_or(""),
        method = %req.method(),
        path = %req.uri().path(),
    );
    let request_id = meta.answer_id().to_owned();
    async move {
        let outcome = match super::browser::check(&req, browser) {
            Ok(()) => handler(req, meta).await,
            Err(refused) => Err(refused),
        };
        let mut response = match outcome {
            Ok(ok) => {
                tracing::info!(status = ok.status.as_u16(), "request handled");
                ok.into_response()
            }
            Err(error) => error.to_response(&request_id),
        };
        response
            .headers_mut()
            .insert("x-request-id", request_id.parse().expect("request ids are sanitised header values"));
        response
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_has_one_cache_control_header() {
        let default = ApiResponse::json(StatusCode::OK, serde_json::json!({})).into_response();
        assert_eq!(default.headers().get_all("cache-control").iter().collect::<Vec<_>>(), ["no-store"]);
        let cached = ApiResponse::json(StatusCode::OK, serde_json::json!({}))
            .with_header("cache-control", "public, max-age=300")
            .into_response();
        assert_eq!(cached.headers().get_all("cache-control").iter().collect::<Vec<_>>(), ["public, max-age=300"]);
    }
}
