//! Browser safety for every route, before any handler runs. A cross-site page can make a
//! victim's browser send a "simple" request (a `text/plain` or form body, no preflight) from
//! the victim's own address; without these rules a burst of such logins would spend the
//! owner's lockout and forgot-password budgets. So: an unsafe request from a foreign (or
//! `null`) `Origin` is 403 `csrf_failed`, and a body not declared `application/json` is 415
//! `unsupported_media_type`, bearer token or not.

use lambda_http::{Request, http::Method};

use super::ApiError;

/// The rules a function's routes are under.
#[derive(Debug, Clone, Copy)]
pub enum Browser<'a> {
    /// API Gateway routes: `Origin` must be one of these on unsafe requests, and bodies must
    /// be JSON, except on the [`FORM_ROUTES`].
    Guarded { allowed_origins: &'a [String] },
    /// The Stripe webhook (function URL): authenticated by its signature, sent by no browser.
    SignedTransport,
}

/// Routes that take a form body from any origin, each because a standard says so and each
/// able to do only one harmless thing: RFC 8058 one-click unsubscribe (mail clients post
/// `List-Unsubscribe=One-Click`; it only turns a switch off, idempotently).
pub const FORM_ROUTES: &[(&str, &str)] = &[("POST", crate::notify::unsubscribe::ONE_CLICK_PATH)];

pub fn is_unsafe(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

/// Whether `origin` (an `Origin` header's value) is one of `allowed`. `null` (sandboxed
/// frames, `file:` pages, some redirects) never is, whatever the configuration says.
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let origin = origin.trim().trim_end_matches('/');
    !origin.eq_ignore_ascii_case("null") && allowed.iter().any(|a| a.trim_end_matches('/') == origin)
}

/// Whether a `Content-Type` value names JSON: `application/json`, any case, parameters such
/// as `charset=utf-8` ignored.
fn is_json(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

pub fn check(req: &Request, browser: Browser<'_>) -> Result<(), ApiError> {
    let Browser::Guarded { allowed_origins } = browser else {
        return Ok(());
    };
    let (method, path) = (req.method().as_str(), req.uri().path());
    if FORM_ROUTES.iter().any(|(m, p)| *m == method && *p == path) {
        return Ok(());
    }
    // Only requests a handler acts on: a safe method changes nothing and reads no body, and
    // a method or path no route takes runs no handler (the routes answer it, 405 or 404).
    let routed = super::routes::methods_of(path).is_some_and(|methods| methods.contains(&method));
    if !is_unsafe(req.method()) || !routed {
        return Ok(());
    }
    for origin in req.headers().get_all("origin") {
        let origin = origin.to_str().map_err(|_| ApiError::CsrfFailed)?;
        if !origin_allowed(origin, allowed_origins) {
            return Err(ApiError::CsrfFailed);
        }
    }
    if !req.body().as_ref().is_empty() {
        let mut types = req.headers().get_all("content-type").iter();
        let declared_json = match (types.next(), types.next()) {
            (Some(only), None) => only.to_str().is_ok_and(is_json),
            _ => false,
        };
        if !declared_json {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use lambda_http::Body;

    use super::*;

    const ALLOWED: &[&str] = &["https://app.example.com"];

    fn allowed() -> Vec<String> {
        ALLOWED.iter().map(|s| s.to_string()).collect()
    }

    fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Request {
        let mut builder = lambda_http::http::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(if body.is_empty() { Body::Empty } else { Body::from(body) }).unwrap()
    }

    fn verdict(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Result<(), &'static str> {
        let origins = allowed();
        check(&request(method, path, headers, body), Browser::Guarded { allowed_origins: &origins })
            .map_err(|e| e.code())
    }

    #[test]
    fn a_cross_site_simple_post_is_refused_before_any_handler() {
        let login = r#"{"email":"a@b.co","password":"x"}"#;
        let evil = [("origin", "https://evil.example"), ("content-type", "text/plain")];
        assert_eq!(verdict("POST", "/auth/login", &evil, login), Err("csrf_failed"));
        assert_eq!(verdict("POST", "/auth/login", &[("origin", "null")], login), Err("csrf_failed"));
        // Without an Origin (a server, or a form a proxy stripped), the type still decides.
        assert_eq!(
            verdict("POST", "/auth/login", &[("content-type", "text/plain")], login),
            Err("unsupported_media_type")
        );
        assert_eq!(verdict("POST", "/auth/login", &[], login), Err("unsupported_media_type"));
        let form = [("content-type", "application/x-www-form-urlencoded")];
        assert_eq!(verdict("POST", "/auth/login", &form, "email=a"), Err("unsupported_media_type"));
    }

    #[test]
    fn json_from_the_frontend_or_a_server_passes() {
        let body = r#"{"email":"a@b.co"}"#;
        for content_type in ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"] {
            assert_eq!(verdict("POST", "/auth/login", &[("content-type", content_type)], body), Ok(()));
        }
        let browser = [("origin", "https://app.example.com"), ("content-type", "application/json")];
        assert_eq!(verdict("POST", "/auth/login", &browser, body), Ok(()));
        let trailing = [("origin", "https://app.example.com/"), ("content-type", "application/json")];
        assert_eq!(verdict("POST", "/auth/login", &trailing, body), Ok(()));
    }

    #[test]
    fn bodiless_and_safe_requests_need_no_type_and_any_origin_may_read() {
        assert_eq!(verdict("POST", "/auth/logout", &[], ""), Ok(()));
        assert_eq!(verdict("GET", "/auth/me", &[("origin", "https://evil.example")], ""), Ok(()));
        assert_eq!(verdict("DELETE", "/auth/me", &[("origin", "https://evil.example")], ""), Err("csrf_failed"));
        // A method no route takes is the routes' to answer (405), whatever its body.
        let form = [("content-type", "application/x-www-form-urlencoded")];
        for method in ["TRACE", "PUT", "DELETE"] {
            let one_click =
                verdict(method, "/notifications/unsubscribe/one-click", &form, "List-Unsubscribe=One-Click");
            assert_eq!(one_click, Ok(()), "{method}");
        }
    }

    #[test]
    fn one_click_unsubscribe_takes_a_form_from_anywhere_and_nothing_else_does() {
        let form = [("content-type", "application/x-www-form-urlencoded"), ("origin", "https://mail.example")];
        let one_click = "/notifications/unsubscribe/one-click";
        assert_eq!(verdict("POST", one_click, &form, "List-Unsubscribe=One-Click"), Ok(()));
        assert_eq!(verdict("POST", "/notifications/unsubscribe", &form, "token=x"), Err("csrf_failed"));
        let webhook = request("POST", "/stripe/webhook", &[("content-type", "text/plain")], "{}");
        assert!(check(&webhook, Browser::SignedTransport).is_ok());
    }

    #[test]
    fn null_is_never_an_allowed_origin() {
        assert!(!origin_allowed("null", &["null".to_owned()]));
        assert!(origin_allowed("https://app.example.com", &allowed()));
        assert!(!origin_allowed("https://app.example.com.evil.example", &allowed()));
    }
}
