//! Service routes: liveness and the OpenAPI document.

use crate::common::{TestApp, http_event};
use shared::api::login::handle;

#[tokio::test]
async fn health_answers_without_a_session() {
    let t = TestApp::new().await;
    let response = t.invoke(handle, &http_event("GET", "/health", &[], None)).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body["status"], "ok");
    assert_eq!(response.body["version"], env!("CARGO_PKG_VERSION"));
    let wrong = t.invoke(handle, &http_event("POST", "/health", &[], Some("{}"))).await;
    assert_eq!((wrong.status, wrong.header("allow")), (405, Some("GET")));
}

#[tokio::test]
async fn the_openapi_document_served_is_openapi_yaml() {
    let t = TestApp::new().await;
    let response = t.invoke(handle, &http_event("GET", "/openapi.json", &[], None)).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let expected: serde_json::Value = serde_norway::from_str(&source).unwrap();
    assert_eq!(response.body, expected);
    assert!(response.body["paths"]["/openapi.json"].is_object());
}

#[test]
fn every_problem_code_is_in_the_openapi_document() {
    let root = env!("CARGO_MANIFEST_DIR");
    let problem = std::fs::read_to_string(format!("{root}/shared/src/http/problem.rs")).unwrap();
    let body = problem.split("pub fn code(&self)").nth(1).unwrap().split("\n    }\n").next().unwrap();
    let codes: Vec<&str> = body.lines().filter_map(|l| l.split("=> \"").nth(1)?.split('"').next()).collect();
    assert!(codes.len() >= 20, "{codes:?}");
    let document: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(format!("{root}/openapi.yaml")).unwrap()).unwrap();
    let listed = &document["components"]["schemas"]["Problem"]["properties"]["code"]["enum"];
    for code in codes {
        assert!(listed.as_array().unwrap().iter().any(|c| c == code), "{code} is not in openapi.yaml's Problem.code");
    }
}
