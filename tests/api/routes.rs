//! The route table (`shared::http::routes::ROUTES`) is the one declaration of the HTTP API;
//! everything else that names a route follows it: template.yaml serves exactly those routes
//! from those functions, the local router in Cargo.toml is the one generated from it, and
//! openapi.yaml documents exactly those operations (and the webhook).
//!
//! After adding a route to the table, `UPDATE_ROUTES=1 cargo test --test api routes::`
//! rewrites the router section of Cargo.toml.

use std::collections::BTreeSet;

use serde_json::Value;
use shared::http::routes::ROUTES;

use crate::common::cfn;

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn declared() -> BTreeSet<(String, String, String)> {
    ROUTES.iter().map(|r| (r.method.to_owned(), r.path.to_owned(), r.function.to_owned())).collect()
}

#[test]
fn the_template_serves_exactly_the_declared_routes_from_their_functions() {
    let template = cfn::template();
    let mut served = BTreeSet::new();
    let mut default_route = Vec::new();
    for (_, function) in cfn::of_type(&template, "AWS::Serverless::Function") {
        let binary = function["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap_or_default().to_owned();
        let events = function["Properties"]["Events"].as_object().cloned().unwrap_or_default();
        for event in events.values().filter(|e| e["Type"] == "HttpApi") {
            let (method, path) = (&event["Properties"]["Method"], &event["Properties"]["Path"]);
            let (method, path) = (method.as_str().unwrap().to_owned(), path.as_str().unwrap().to_owned());
            if path == "$default" {
                default_route.push(binary.clone());
            } else {
                served.insert((method, path, binary.clone()));
            }
        }
    }
    assert_eq!(served, declared(), "template.yaml's HttpApi events (left) against ROUTES (right)");
    assert_eq!(default_route, ["login"], "unmatched requests go to login, which answers 404 or 405");
}

/// Methods API Gateway and cargo-lambda's router know; those a path does not take go to
/// `login`, whose fallback answers 405 with `Allow`.
const METHODS: [&str; 9] = ["GET", "POST", "PUT", "PATCH", "DELETE", "TRACE", "OPTIONS", "HEAD", "QUERY"];
const ROUTER_HEADER: &str = "[workspace.metadata.lambda.watch.router]";

/// The router section of Cargo.toml as the route table makes it.
fn router_section() -> String {
    let mut paths: Vec<&str> = Vec::new();
    for route in ROUTES {
        if !paths.contains(&route.path) {
            paths.push(route.path);
        }
    }
    let mut section = format!(
        "{ROUTER_HEADER}\n# Generated from shared::http::routes::ROUTES (tests/api/routes.rs checks it; \
         UPDATE_ROUTES=1 rewrites it).\n# Each route's own methods, then every other method to `login`, whose \
         fallback answers 405\n# with `Allow` (as API Gateway's `$default` route does in template.yaml).\n"
    );
    for path in paths {
        let own: Vec<_> = ROUTES.iter().filter(|r| r.path == path).collect();
        let mut entries: Vec<String> =
            own.iter().map(|r| format!("{{ method = \"{}\", function = \"{}\" }}", r.method, r.function)).collect();
        for method in METHODS.iter().filter(|m| !own.iter().any(|r| r.method == **m)) {
            entries.push(format!("{{ method = \"{method}\", function = \"login\" }}"));
        }
        section.push_str(&format!("\"{path}\" = [{}]\n", entries.join(", ")));
    }
    section
}

#[test]
fn the_local_router_is_the_one_the_route_table_makes() {
    let path = root().join("Cargo.toml");
    let cargo = std::fs::read_to_string(&path).unwrap();
    let at = cargo.find(ROUTER_HEADER).expect("the router section");
    let expected = router_section();
    if std::env::var_os("UPDATE_ROUTES").is_some() {
        std::fs::write(&path, format!("{}{expected}", &cargo[..at])).unwrap();
        return;
    }
    assert!(
        cargo[at..] == expected,
        "Cargo.toml's router (the last section) is not the route table's; run \
         `UPDATE_ROUTES=1 cargo test --test api routes::` or paste:\n{expected}"
    );
}

#[test]
fn openapi_documents_exactly_the_declared_operations() {
    let text = std::fs::read_to_string(root().join("openapi.yaml")).unwrap();
    let document: Value = serde_norway::from_str(&text).unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys().filter(|k| METHODS.contains(&&*k.to_uppercase())) {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let mut expected: BTreeSet<(String, String)> = declared().into_iter().map(|(m, p, _)| (m, p)).collect();
    // The Stripe webhook is a function URL, not a route of the HTTP API.
    expected.insert(("POST".into(), "/stripe/webhook".into()));
    assert_eq!(documented, expected, "openapi.yaml's operations (left) against ROUTES and the webhook (right)");
}
