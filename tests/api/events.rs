//! The sample events in `events/` are real API Gateway v2 events that reach their route (not
//! a 404), and a request no route takes is 405 with `Allow` on a known path, else 404.

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

/// The function serving an HTTP API sample, by its `routeKey` (`POST /auth/register`) in the
/// route table.
fn function_of_sample(event: &str) -> Option<&'static str> {
    let event: serde_json::Value = serde_json::from_str(event).ok()?;
    let (method, path) = event["routeKey"].as_str()?.split_once(' ')?;
    shared::http::routes::ROUTES.iter().find(|r| r.method == method && r.path == path).map(|r| r.function)
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
    let other: Vec<&str> = OTHER_EVENTS
        .iter()
        .map(|(f, _)| *f)
        .chain(STREAM_EVENTS.iter().chain(SCHEDULE_EVENTS).chain(SNS_EVENTS).copied())
        .collect();
    let mut reached = 0;
    for file in listed.iter().filter(|f| !other.contains(&f.as_str())) {
        let event = std::fs::read_to_string(root().join("events").join(file)).unwrap();
        let function = function_of_sample(&event)
            .unwrap_or_else(|| panic!("{file}: its routeKey is no route of shared::http::routes::ROUTES"));
        let response = t.invoke(handler_for(function), &event).await;
        assert_ne!(response.status, 404, "{file} did not reach a route: {:?}", response.body);
        assert!(response.status < 500, "{file}: {:?}", response.body);
        reached += 1;
    }
    assert!(reached >= shared::http::routes::ROUTES.len() / 2, "the HTTP samples were found");
    for (file, function) in OTHER_EVENTS {
        let event = std::fs::read_to_string(root().join("events").join(file)).unwrap();
        let response = t.invoke(handler_for(function), &event).await;
        assert!(response.status < 500 && response.status != 404, "{file}: {:?}", response.body);
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

/// A route's path with every `{param}` filled in.
fn concrete(path: &str) -> String {
    path.split('/').map(|s| if s.starts_with('{') { "id-1" } else { s }).collect::<Vec<_>>().join("/")
}

#[tokio::test]
async fn other_methods_on_our_paths_are_405_with_allow_and_unknown_paths_404() {
    let t = TestApp::new().await;
    let mut paths: Vec<&str> = shared::http::routes::ROUTES.iter().map(|r| r.path).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let methods = shared::http::routes::methods_of(&concrete(path)).unwrap();
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
