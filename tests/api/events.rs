//! The sample events in `events/` are real API Gateway v2 events that reach a route (not a
//! 404), and every route is wired in template.yaml, the local router and the OpenAPI document.

use crate::common;

use std::path::Path;

use crate::common::TestApp;
use lambda_http::{Body, Request, Response};
use shared::App;

type Handler = fn(&'static App, Request) -> std::pin::Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

fn handler_for(function: &str) -> Handler {
    match function {
        "register" => |a, r| Box::pin(shared::api::register::handle(a, r)),
        "verify" => |a, r| Box::pin(shared::api::verify::handle(a, r)),
        "login" => |a, r| Box::pin(shared::api::login::handle(a, r)),
        "reset" => |a, r| Box::pin(shared::api::reset::handle(a, r)),
        "account" => |a, r| Box::pin(shared::api::account::handle(a, r)),
        "pay" => |a, r| Box::pin(shared::api::pay::handle(a, r)),
        "release" => |a, r| Box::pin(shared::api::pay::handle_release(a, r)),
        "webhook" => |a, r| Box::pin(shared::api::webhook::handle(a, r)),
        "audit" => |a, r| Box::pin(shared::api::audit::handle(a, r)),
        "notifications" => |a, r| Box::pin(shared::api::notifications::handle(a, r)),
        other => panic!("no handler for function {other}"),
    }
}

/// (event file, function, route key as in template.yaml)
const EVENTS: &[(&str, &str, &str)] = &[
    ("register.json", "register", "POST /auth/register"),
    ("verify-email.json", "verify", "POST /auth/verify-email"),
    ("resend-verification.json", "verify", "POST /auth/resend-verification"),
    ("login.json", "login", "POST /auth/login"),
    ("refresh.json", "login", "POST /auth/refresh"),
    ("login-mfa.json", "login", "POST /auth/login/mfa"),
    ("logout.json", "login", "POST /auth/logout"),
    ("me.json", "login", "GET /auth/me"),
    ("jwks.json", "login", "GET /.well-known/jwks.json"),
    ("openid-configuration.json", "login", "GET /.well-known/openid-configuration"),
    ("health.json", "login", "GET /health"),
    ("openapi.json", "login", "GET /openapi.json"),
    ("forgot-password.json", "reset", "POST /auth/forgot-password"),
    ("reset-password.json", "reset", "POST /auth/reset-password"),
    ("revoke-factor.json", "reset", "POST /auth/factors/revoke"),
    ("delete-me.json", "account", "DELETE /auth/me"),
    ("update-me.json", "account", "PATCH /auth/me"),
    ("verify-phone.json", "account", "POST /auth/me/phone/verify"),
    ("restore-me.json", "account", "POST /auth/me/restore"),
    ("mfa-enrol.json", "account", "POST /auth/mfa/totp"),
    ("mfa-confirm.json", "account", "POST /auth/mfa/totp/confirm"),
    ("mfa-disable.json", "account", "DELETE /auth/mfa/totp"),
    ("invite.json", "account", "POST /orgs/invitations"),
    ("org-me.json", "account", "GET /orgs/me"),
    ("list-invitations.json", "account", "GET /orgs/invitations"),
    ("revoke-invitation.json", "account", "DELETE /orgs/invitations/{invitation_id}"),
    ("change-role.json", "account", "PATCH /orgs/members/{user_id}"),
    ("create-provider.json", "pay", "POST /providers"),
    ("get-provider.json", "pay", "GET /providers/{provider_id}"),
    ("create-payment.json", "pay", "POST /payments"),
    ("list-payments.json", "pay", "GET /payments"),
    ("get-payment.json", "pay", "GET /payments/{payment_id}"),
    ("refund-payment.json", "pay", "POST /payments/{payment_id}/refund"),
    ("release-payment.json", "release", "POST /payments/{payment_id}/release"),
    ("create-subscription.json", "pay", "POST /subscriptions"),
    ("list-subscriptions.json", "pay", "GET /subscriptions"),
    ("cancel-subscription.json", "pay", "DELETE /subscriptions/{subscription_id}"),
    ("change-subscription-plan.json", "pay", "PATCH /subscriptions/{subscription_id}"),
    ("audit-logs.json", "audit", "GET /admin/audit-logs"),
    ("add-device.json", "notifications", "POST /notifications/devices"),
    ("list-devices.json", "notifications", "GET /notifications/devices"),
    ("remove-device.json", "notifications", "DELETE /notifications/devices/{device_id}"),
    ("get-preferences.json", "notifications", "GET /notifications/preferences"),
    ("put-preferences.json", "notifications", "PUT /notifications/preferences"),
    ("unsubscribe.json", "notifications", "POST /notifications/unsubscribe"),
    ("one-click-unsubscribe.json", "notifications", "POST /notifications/unsubscribe/one-click"),
];

/// Events that do not come through the HTTP API (function URLs, schedules).
const OTHER_EVENTS: &[(&str, &str)] = &[("webhook.json", "webhook")];

/// DynamoDB stream batches, as the event source mapping hands them to the notifier.
const STREAM_EVENTS: &[&str] = &["notify.json"];

/// Neither HTTP nor stream: the schedule's event (the cleanup only logs it) and SES
/// feedback through SNS (checked as the notifier parses it; the address is example.com's).
const SCHEDULE_EVENTS: &[&str] = &["cleanup.json"];
const SNS_EVENTS: &[&str] = &["ses-feedback.json"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn every_sample_event_reaches_its_route() {
    let t = TestApp::new().await;
    let mut listed: Vec<String> = std::fs::read_dir(root().join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    listed.sort();
    let mut known: Vec<String> = EVENTS
        .iter()
        .map(|(f, _, _)| f.to_string())
        .chain(OTHER_EVENTS.iter().map(|(f, _)| f.to_string()))
        .chain(STREAM_EVENTS.iter().map(|f| f.to_string()))
        .chain(SCHEDULE_EVENTS.iter().chain(SNS_EVENTS).map(|f| f.to_string()))
        .collect();
    known.sort();
    assert_eq!(listed, known, "every file in events/ is listed here");

    for (file, function) in
        EVENTS.iter().map(|(f, func, _)| (f, func)).chain(OTHER_EVENTS.iter().map(|(f, func)| (f, func)))
    {
        let event = std::fs::read_to_string(root().join("events").join(file)).unwrap();
        let response = t.invoke(handler_for(function), &event).await;
        assert_ne!(response.status, 404, "{file} did not reach a route: {:?}", response.body);
        assert!(response.status < 500, "{file}: {:?}", response.body);
    }
    for file in STREAM_EVENTS {
        let event = std::fs::read_to_string(root().join("events").join(file)).unwrap();
        let batch = serde_json::from_str(&event).unwrap_or_else(|e| panic!("{file} is a stream event: {e}"));
        let response = shared::notify::delivery::handle_batch(t.app, batch).await;
        assert!(response.batch_item_failures.is_empty(), "{file} was delivered");
    }
    for file in SCHEDULE_EVENTS {
        let event: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root().join("events").join(file)).unwrap()).unwrap();
        assert_eq!(event["source"], "aws.events", "{file} is an EventBridge event");
    }
    for file in SNS_EVENTS {
        let event: shared::notify::delivery::SnsEvent =
            serde_json::from_str(&std::fs::read_to_string(root().join("events").join(file)).unwrap())
                .unwrap_or_else(|e| panic!("{file} is an SNS event: {e}"));
        let feedback = shared::notify::suppression::parse_feedback(&event.records[0].sns.message).unwrap();
        assert_eq!(feedback.len(), 1, "{file} carries one bounce");
    }
}

#[test]
fn every_route_is_in_the_template_the_router_and_the_openapi_document() {
    let template = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let openapi = std::fs::read_to_string(root().join("openapi.yaml")).unwrap();
    for (_, function, route) in EVENTS {
        let (method, path) = route.split_once(' ').unwrap();
        assert!(
            template.contains(&format!("Method: {method}\n            Path: {path}\n")),
            "{route} in template.yaml"
        );
        assert!(template.contains(&format!("Binary: {function}\n")), "{function} in template.yaml");
        let router_line = cargo
            .lines()
            .find(|l| l.starts_with(&format!("\"{path}\" = ")))
            .unwrap_or_else(|| panic!("{path} in the router"));
        assert!(
            router_line.contains(&format!("{{ method = \"{method}\", function = \"{function}\" }}")),
            "{route} → {function}"
        );
        assert!(openapi.contains(&format!("  {path}:\n")), "{path} in openapi.yaml");
        let section = openapi.split(&format!("  {path}:\n")).nth(1).unwrap();
        let section = section.split("\n  /").next().unwrap();
        assert!(section.contains(&format!("    {}:", method.to_lowercase())), "{route} in openapi.yaml");
    }
}

#[test]
fn the_route_table_behind_405_is_the_templates() {
    let template = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    let lines: Vec<&str> = template.lines().map(str::trim).collect();
    let mut in_template: Vec<(String, String)> = lines
        .windows(2)
        .filter_map(|w| Some((w[0].strip_prefix("Method: ")?.to_owned(), w[1].strip_prefix("Path: ")?.to_owned())))
        .filter(|(_, path)| path != "$default")
        .collect();
    let mut in_table: Vec<(String, String)> = shared::http::routes::ROUTES
        .iter()
        .flat_map(|(path, methods)| methods.iter().map(move |m| (m.to_string(), path.to_string())))
        .collect();
    in_template.sort();
    in_table.sort();
    assert_eq!(in_table, in_template);
}

/// A route's path with every `{param}` filled in.
fn concrete(path: &str) -> String {
    path.split('/').map(|s| if s.starts_with('{') { "id-1" } else { s }).collect::<Vec<_>>().join("/")
}

#[tokio::test]
async fn other_methods_on_our_paths_are_405_with_allow_and_unknown_paths_404() {
    let t = TestApp::new().await;
    for (path, methods) in shared::http::routes::ROUTES {
        let path = concrete(path);
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"].into_iter().filter(|m| !methods.contains(m)) {
            // API Gateway's `$default` route: the login function's fallback.
            let answer = t.invoke(shared::api::login::handle, &common::http_event(method, &path, &[], None)).await;
            assert_eq!(
                (answer.status, answer.body["code"].as_str()),
                (405, Some("method_not_allowed")),
                "{method} {path}"
            );
            assert_eq!(answer.header("allow"), Some(methods.join(", ").as_str()), "{method} {path}");
        }
    }
    // The functions' own fallbacks agree (a request that reaches one with another method).
    let answer = t.invoke(shared::api::register::handle, &common::http_event("GET", "/auth/register", &[], None)).await;
    assert_eq!((answer.status, answer.header("allow")), (405, Some("POST")));
    let answer = t.invoke(shared::api::pay::handle, &common::http_event("PUT", "/payments/id-1", &[], None)).await;
    assert_eq!((answer.status, answer.header("allow")), (405, Some("GET")));
    let unknown = t.invoke(shared::api::login::handle, &common::http_event("GET", "/no/such/route", &[], None)).await;
    assert_eq!((unknown.status, unknown.body["code"].as_str()), (404, Some("not_found")));
}
