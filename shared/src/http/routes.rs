//! The HTTP API's one declaration: every route, its method, the Lambda function that serves
//! it, and the [`Endpoint`] a request for it parses to. Handlers match on the endpoint (typed,
//! path parameter included) and never on strings; a request no route takes is 405
//! `method_not_allowed` with `Allow` when its path is known, anything else 404. API Gateway
//! sends every unmatched request (its `$default` route) to the `login` function, whose
//! fallback answers from this table.
//!
//! Everything else that names a route follows from this table or is checked against it by
//! `tests/api/routes.rs`: template.yaml's events, the local router in Cargo.toml (which it
//! prints), openapi.yaml and the samples in events/.

use super::ApiError;

/// A request, by route. A path parameter is one segment of 1 to 64 characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    Register,
    VerifyEmail,
    ResendVerification,
    ForgotPassword,
    ResetPassword,
    RevokeFactor,
    Login,
    LoginMfa,
    Refresh,
    Logout,
    Me,
    UpdateMe,
    DeleteMe,
    VerifyPhone,
    RestoreMe,
    MfaEnrol,
    MfaDisable,
    MfaConfirm,
    OrgMe,
    Invite,
    ListInvitations,
    RevokeInvitation(&'a str),
    ChangeRole(&'a str),
    CreateProvider,
    GetProvider(&'a str),
    CreatePayment,
    ListPayments,
    GetPayment(&'a str),
    RefundPayment(&'a str),
    ReleasePayment(&'a str),
    CreateSubscription,
    ListSubscriptions,
    CancelSubscription(&'a str),
    ChangePlan(&'a str),
    AuditLogs,
    AddDevice,
    ListDevices,
    RemoveDevice(&'a str),
    GetPreferences,
    PutPreferences,
    Unsubscribe,
    OneClickUnsubscribe,
    Jwks,
    OpenidConfiguration,
    Health,
    OpenApi,
}

/// One route: `{name}` in its path matches one path segment.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// The Lambda function (its binary) that serves it.
    pub function: &'static str,
    endpoint: for<'a> fn(&'a str) -> Endpoint<'a>,
}

/// Every route of the HTTP API (the Stripe webhook is a function URL, not a route).
pub const ROUTES: &[Route] = &[
    Route { method: "POST", path: "/auth/register", function: "register", endpoint: |_| Endpoint::Register },
    Route { method: "POST", path: "/auth/verify-email", function: "verify", endpoint: |_| Endpoint::VerifyEmail },
    Route {
        method: "POST",
        path: "/auth/resend-verification",
        function: "verify",
        endpoint: |_| Endpoint::ResendVerification,
    },
    Route { method: "POST", path: "/auth/forgot-password", function: "reset", endpoint: |_| Endpoint::ForgotPassword },
    Route { method: "POST", path: "/auth/reset-password", function: "reset", endpoint: |_| Endpoint::ResetPassword },
    Route { method: "POST", path: "/auth/factors/revoke", function: "reset", endpoint: |_| Endpoint::RevokeFactor },
    Route { method: "POST", path: "/auth/login", function: "login", endpoint: |_| Endpoint::Login },
    Route { method: "POST", path: "/auth/login/mfa", function: "login", endpoint: |_| Endpoint::LoginMfa },
    Route { method: "POST", path: "/auth/refresh", function: "login", endpoint: |_| Endpoint::Refresh },
    Route { method: "POST", path: "/auth/logout", function: "login", endpoint: |_| Endpoint::Logout },
    Route { method: "GET", path: "/auth/me", function: "login", endpoint: |_| Endpoint::Me },
    Route { method: "PATCH", path: "/auth/me", function: "account", endpoint: |_| Endpoint::UpdateMe },
    Route { method: "DELETE", path: "/auth/me", function: "account", endpoint: |_| Endpoint::DeleteMe },
    Route { method: "POST", path: "/auth/me/phone/verify", function: "account", endpoint: |_| Endpoint::VerifyPhone },
    Route { method: "POST", path: "/auth/me/restore", function: "account", endpoint: |_| Endpoint::RestoreMe },
    Route { method: "POST", path: "/auth/mfa/totp", function: "account", endpoint: |_| Endpoint::MfaEnrol },
    Route { method: "DELETE", path: "/auth/mfa/totp", function: "account", endpoint: |_| Endpoint::MfaDisable },
    Route { method: "POST", path: "/auth/mfa/totp/confirm", function: "account", endpoint: |_| Endpoint::MfaConfirm },
    Route { method: "GET", path: "/orgs/me", function: "account", endpoint: |_| Endpoint::OrgMe },
    Route { method: "POST", path: "/orgs/invitations", function: "account", endpoint: |_| Endpoint::Invite },
    Route { method: "GET", path: "/orgs/invitations", function: "account", endpoint: |_| Endpoint::ListInvitations },
    Route {
        method: "DELETE",
        path: "/orgs/invitations/{invitation_id}",
        function: "account",
        endpoint: |id| Endpoint::RevokeInvitation(id),
    },
    Route {
        method: "PATCH",
        path: "/orgs/members/{user_id}",
        function: "account",
        endpoint: |id| Endpoint::ChangeRole(id),
    },
    Route { method: "POST", path: "/providers", function: "pay", endpoint: |_| Endpoint::CreateProvider },
    Route {
        method: "GET",
        path: "/providers/{provider_id}",
        function: "pay",
        endpoint: |id| Endpoint::GetProvider(id),
    },
    Route { method: "POST", path: "/payments", function: "pay", endpoint: |_| Endpoint::CreatePayment },
    Route { method: "GET", path: "/payments", function: "pay", endpoint: |_| Endpoint::ListPayments },
    Route { method: "GET", path: "/payments/{payment_id}", function: "pay", endpoint: |id| Endpoint::GetPayment(id) },
    Route {
        method: "POST",
        path: "/payments/{payment_id}/refund",
        function: "pay",
        endpoint: |id| Endpoint::RefundPayment(id),
    },
    Route {
        method: "POST",
        path: "/payments/{payment_id}/release",
        function: "release",
        endpoint: |id| Endpoint::ReleasePayment(id),
    },
    Route { method: "POST", path: "/subscriptions", function: "pay", endpoint: |_| Endpoint::CreateSubscription },
    Route { method: "GET", path: "/subscriptions", function: "pay", endpoint: |_| Endpoint::ListSubscriptions },
    Route {
        method: "DELETE",
        path: "/subscriptions/{subscription_id}",
        function: "pay",
        endpoint: |id| Endpoint::CancelSubscription(id),
    },
    Route {
        method: "PATCH",
        path: "/subscriptions/{subscription_id}",
        function: "pay",
        endpoint: |id| Endpoint::ChangePlan(id),
    },
    Route { method: "GET", path: "/admin/audit-logs", function: "audit", endpoint: |_| Endpoint::AuditLogs },
    Route {
        method: "POST",
        path: "/notifications/devices",
        function: "notifications",
        endpoint: |_| Endpoint::AddDevice,
    },
    Route {
        method: "GET",
        path: "/notifications/devices",
        function: "notifications",
        endpoint: |_| Endpoint::ListDevices,
    },
    Route {
        method: "DELETE",
        path: "/notifications/devices/{device_id}",
        function: "notifications",
        endpoint: |id| Endpoint::RemoveDevice(id),
    },
    Route {
        method: "GET",
        path: "/notifications/preferences",
        function: "notifications",
        endpoint: |_| Endpoint::GetPreferences,
    },
    Route {
        method: "PUT",
        path: "/notifications/preferences",
        function: "notifications",
        endpoint: |_| Endpoint::PutPreferences,
    },
    Route {
        method: "POST",
        path: "/notifications/unsubscribe",
        function: "notifications",
        endpoint: |_| Endpoint::Unsubscribe,
    },
    Route {
        method: "POST",
        path: crate::notify::unsubscribe::ONE_CLICK_PATH,
        function: "notifications",
        endpoint: |_| Endpoint::OneClickUnsubscribe,
    },
    Route { method: "GET", path: "/.well-known/jwks.json", function: "login", endpoint: |_| Endpoint::Jwks },
    Route {
        method: "GET",
        path: "/.well-known/openid-configuration",
        function: "login",
        endpoint: |_| Endpoint::OpenidConfiguration,
    },
    Route { method: "GET", path: "/health", function: "login", endpoint: |_| Endpoint::Health },
    Route { method: "GET", path: "/openapi.json", function: "login", endpoint: |_| Endpoint::OpenApi },
];

/// The path parameter when `path` fits `pattern` (`""` for a pattern without one).
fn fit<'a>(pattern: &str, path: &'a str) -> Option<&'a str> {
    let mut given = path.split('/');
    let mut param = "";
    for wanted in pattern.split('/') {
        let segment = given.next()?;
        if wanted.starts_with('{') {
            if segment.is_empty() || segment.len() > 64 {
                return None;
            }
            param = segment;
        } else if wanted != segment {
            return None;
        }
    }
    given.next().is_none().then_some(param)
}

/// The endpoint a request is for, or what to answer when it is for none.
pub fn endpoint<'a>(method: &str, path: &'a str) -> Result<Endpoint<'a>, ApiError> {
    ROUTES
        .iter()
        .filter(|route| route.method == method)
        .find_map(|route| fit(route.path, path).map(route.endpoint))
        .ok_or_else(|| unrouted(method, path))
}

/// The methods `path` takes, if it is a route of ours, in the table's order.
pub fn methods_of(path: &str) -> Option<Vec<&'static str>> {
    let methods: Vec<&str> = ROUTES.iter().filter(|r| fit(r.path, path).is_some()).map(|r| r.method).collect();
    (!methods.is_empty()).then_some(methods)
}

/// What to answer a request that no route takes.
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

    #[test]
    fn a_request_parses_to_its_endpoint_with_its_parameter() {
        assert_eq!(endpoint("GET", "/payments/pay_1").unwrap(), Endpoint::GetPayment("pay_1"));
        assert_eq!(endpoint("POST", "/payments/pay_1/refund").unwrap(), Endpoint::RefundPayment("pay_1"));
        assert_eq!(endpoint("GET", "/payments").unwrap(), Endpoint::ListPayments);
        assert_eq!(endpoint("DELETE", "/auth/me").unwrap(), Endpoint::DeleteMe);
        assert!(matches!(endpoint("GET", &format!("/payments/{}", "x".repeat(65))), Err(ApiError::NotFound)));
        assert!(matches!(endpoint("PUT", "/payments/pay_1"), Err(ApiError::MethodNotAllowed(allow)) if allow == "GET"));
        assert!(matches!(endpoint("GET", "/payments/pay_1/"), Err(ApiError::NotFound)));
    }

    #[test]
    fn each_method_and_path_is_declared_once() {
        let mut seen = std::collections::HashSet::new();
        for route in ROUTES {
            assert!(seen.insert((route.method, route.path)), "{} {} twice", route.method, route.path);
        }
    }
}
