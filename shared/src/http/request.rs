//! What a handler needs to know about a request besides its body, read off the Lambda
//! event: ids for tracing and audit, and the caller's address and user agent
//! ([`RequestMeta`], the kernel's), and the body parsed as JSON.

use lambda_http::{Request, RequestExt, request::RequestContext};
use serde::de::DeserializeOwned;

use super::{ApiError, FieldError};
pub use crate::caller::{Origin, RequestMeta};

/// A caller-supplied id is echoed only if it is short and plain, so it can't smuggle
/// anything into logs or headers.
fn sane_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Who asked, from the request and its Lambda context.
pub fn request_meta(req: &Request) -> RequestMeta {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (apigw_request_id, source_ip, context_user_agent) = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            (ctx.request_id.clone(), ctx.http.source_ip.clone(), ctx.http.user_agent.clone())
        }
        _ => (None, None, None),
    };
    let lambda_request_id = req.lambda_context_ref().map(|c| c.request_id.clone()).filter(|id| !id.is_empty());
    let deadline =
        req.lambda_context_ref().map(|c| crate::deadline::Deadline::from_epoch_ms(c.deadline)).unwrap_or_default();
    let request_id = apigw_request_id
        .clone()
        .or_else(|| lambda_request_id.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    RequestMeta {
        request_id,
        client_request_id: header("x-request-id").filter(|id| sane_request_id(id)),
        apigw_request_id,
        lambda_request_id,
        source_ip,
        user_agent: context_user_agent.or_else(|| header("user-agent")).map(|ua| truncate(ua, 512)),
        deadline,
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Parses the body as JSON into `T`. Syntax errors are `malformed_json`; a well-formed body
/// of the wrong shape is `validation_failed` naming the field.
pub fn parse_json<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let bytes = req.body().as_ref();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson("the body is empty".into()));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::MalformedJson("the body must be a JSON object".into()));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let message = e.inner().to_string();
        // serde's own wording ("invalid type: integer `5`, expected a string") is clear enough.
        let field = if field == "." { "body".to_owned() } else { field };
        ApiError::Validation(vec![FieldError::new(field, message)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_request_ids_are_echoed() {
        assert!(sane_request_id("abc-123_x.y:z"));
        assert!(!sane_request_id(""));
        assert!(!sane_request_id("has space"));
        assert!(!sane_request_id("new\nline"));
        assert!(!sane_request_id(&"a".repeat(129)));
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        email: String,
    }

    fn request(body: &str) -> Request {
        lambda_http::http::Request::builder().body(lambda_http::Body::from(body)).unwrap()
    }

    #[test]
    fn syntax_errors_are_malformed_and_shape_errors_name_the_field() {
        assert!(matches!(parse_json::<Body>(&request("{")), Err(ApiError::MalformedJson(_))));
        assert!(matches!(parse_json::<Body>(&request("")), Err(ApiError::MalformedJson(_))));
        assert!(matches!(parse_json::<Body>(&request("[1]")), Err(ApiError::MalformedJson(_))));
        match parse_json::<Body>(&request(r#"{"email": 5}"#)) {
            Err(ApiError::Validation(errors)) => assert_eq!(errors[0].field, "email"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_json::<Body>(&request(r#"{"email": "a@b.co"}"#)).is_ok());
    }
}
