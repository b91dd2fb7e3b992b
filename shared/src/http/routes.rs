//! Every route of the HTTP API, by path, so that a request no handler takes can be told
//! apart: a known path with another method is 405 `method_not_allowed` with `Allow`, anything
//! else 404. API Gateway sends every unmatched request (its `$default` route) to the `login`
//! function, whose fallback answers from this table; the handlers' own fallbacks use it too.
//! `tests/api/events.rs` keeps it equal to template.yaml.

use super::ApiError;

/// (path, methods). `{name}` matches one non-empty path segment.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/auth/register", &["POST"]),
    ("/auth/verify-email", &["POST"]),
    ("/auth/resend-verification", &["POST"]),
    ("/auth/forgot-password", &["POST"]),
    ("/auth/reset-password", &["POST"]),
    ("/auth/factors/revoke", &["POST"]),
    ("/auth/login", &["POST"]),
    ("/auth/login/mfa", &["POST"]),
    ("/auth/refresh", &["POST"]),
    ("/auth/logout", &["POST"]),
    ("/auth/me", &["GET", "PATCH", "DELETE"]),
    ("/auth/me/phone/verify", &["POST"]),
    ("/auth/me/restore", &["POST"]),
    ("/auth/mfa/totp", &["POST", "DELETE"]),
    ("/auth/mfa/totp/confirm", &["POST"]),
    ("/orgs/me", &["GET"]),
    ("/orgs/invitations", &["POST", "GET"]),
    ("/orgs/invitations/{invitation_id}", &["DELETE"]),
    ("/orgs/members/{user_id}", &["PATCH"]),
    ("/providers", &["POST"]),
    ("/providers/{provider_id}", &["GET"]),
    ("/payments", &["POST", "GET"]),
    ("/payments/{payment_id}", &["GET"]),
    ("/payments/{payment_id}/refund", &["POST"]),
    ("/payments/{payment_id}/release", &["POST"]),
    ("/subscriptions", &["POST", "GET"]),
    ("/subscriptions/{subscription_id}", &["DELETE", "PATCH"]),
    ("/admin/audit-logs", &["GET"]),
    ("/notifications/devices", &["POST", "GET"]),
    ("/notifications/devices/{device_id}", &["DELETE"]),
    ("/notifications/preferences", &["GET", "PUT"]),
    ("/notifications/unsubscribe", &["POST"]),
    ("/notifications/unsubscribe/one-click", &["POST"]),
    ("/.well-known/jwks.json", &["GET"]),
    ("/.well-known/openid-configuration", &["GET"]),
    ("/health", &["GET"]),
    ("/openapi.json", &["GET"]),
];

fn matches(pattern: &str, path: &str) -> bool {
    let mut given = path.split('/');
    let mut wanted = pattern.split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// The methods `path` takes, if it is a route of ours.
pub fn methods_of(path: &str) -> Option<&'static [&'static str]> {
    ROUTES.iter().find(|(pattern, _)| matches(pattern, path)).map(|(_, methods)| *methods)
}

/// What to answer a request that no handler takes.
pub fn unrouted(method: &str, path: &str) -> ApiError {
    match methods_of(path) {
        Some(methods) if !methods.contains(&method) => ApiError::MethodNotAllowed(methods.join(", ")),
        _ => ApiError::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_path_with_another_method_is_405_with_its_methods() {
        assert!(matches!(unrouted("PUT", "/auth/login"), ApiError::MethodNotAllowed(allow) if allow == "POST"));
        assert!(
            matches!(unrouted("POST", "/auth/me"), ApiError::MethodNotAllowed(allow) if allow == "GET, PATCH, DELETE")
        );
        assert!(
            matches!(unrouted("GET", "/payments/pay_1/refund"), ApiError::MethodNotAllowed(allow) if allow == "POST")
        );
        assert!(matches!(unrouted("GET", "/nowhere"), ApiError::NotFound));
        assert!(matches!(unrouted("GET", "/payments/"), ApiError::NotFound), "an empty id is no route");
        assert!(matches!(unrouted("GET", "/payments/a/b"), ApiError::NotFound));
    }
}
