//! Shows that `GET /admin/audit-logs` costs the same whatever the size of the log: seeds one
//! org with 1 000 entries and another with 100 000, waits for the notifier to count them
//! (the totals come from counters kept off the table's stream), then times the *whole
//! request* through the audit function's handler (authentication, the page and its `total`),
//! plain and filtered by action, and prints the medians and their ratio.
//!
//! ```sh
//! infra/dev.sh &
//! set -a; . .local/stack.env; set +a
//! cargo bench --bench audit_page_cost
//! ```
//!
//! Under `cargo test` it runs with 300 and 1 000 entries and a few rounds, to keep it working.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;
use shared::{
    App,
    audit::{AuditEntry, AuditStatus, totals},
    config::Settings,
    http::RequestMeta,
    identity::{Email, Password, Registration, User, register, session},
};

async fn seed(app: &App, org_id: &str, n: usize) {
    let meta = RequestMeta { request_id: "bench".into(), ..Default::default() };
    let entries: Vec<_> = (0..n)
        .map(|i| {
            let action = ["bench.alpha", "bench.beta", "bench.gamma"][i % 3];
            AuditEntry::new(action, AuditStatus::Success, org_id, &meta).actor(&format!("actor-{}", i % 10))
        })
        .collect();
    let items = entries.iter().map(|e| serde_dynamo::to_item(e).expect("an entry")).collect();
    common::seed_items(app.table(), items).await;
}

/// A new admin of a new org: (access token, org id).
async fn admin(app: &App) -> (String, String) {
    let email = Email::parse(&format!("bench-{}@example.com", uuid::Uuid::new_v4().simple())).unwrap();
    let password = Password::parse("correct horse battery staple 42", &[]).unwrap();
    let registration =
        Registration { email: email.clone(), password, full_name: None, org_name: None, invitation_token: None };
    register(app, registration, &RequestMeta::default()).await.expect("registered");
    let user = User::find_by_email(app.table(), email.as_str()).await.unwrap().expect("the new user");
    let tokens = session::start(app, &user, vec![]).await.expect("a session");
    (tokens.access_token, user.org_id)
}

fn get(path: &str, query: &str, token: &str) -> lambda_http::Request {
    let parameters: serde_json::Map<String, serde_json::Value> =
        query.split('&').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (k.to_owned(), json!(v))).collect();
    let text = json!({
        "version": "2.0", "routeKey": format!("GET {path}"), "rawPath": path, "rawQueryString": query,
        "queryStringParameters": parameters,
        "headers": {"authorization": format!("Bearer {token}")},
        "requestContext": {"accountId": "1", "apiId": "bench", "domainName": "bench", "domainPrefix": "bench",
            "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1", "userAgent": "bench"},
            "requestId": uuid::Uuid::new_v4().to_string(), "routeKey": format!("GET {path}"), "stage": "$default",
            "time": "21/Nov/2026:12:00:00 +0000", "timeEpoch": 0},
        "isBase64Encoded": false
    });
    lambda_http::request::from_str(&text.to_string()).unwrap()
}

/// Waits (at most `limit`) for the stream's notifier to count the `n` seeded entries; answers
/// how long it took and how many were counted. The request reads one counter item either
/// way, so its cost does not wait on this; the total it shows does.
async fn wait_counted(app: &App, org_id: &str, n: u64, limit: Duration) -> (Duration, u64) {
    let started = Instant::now();
    loop {
        let counted = totals::read(app.table(), org_id, "ALL").await.unwrap();
        if counted >= n || started.elapsed() > limit {
            return (started.elapsed(), counted);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    if std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_err() {
        eprintln!("audit_page_cost: no local stack in the environment (see the file's header); skipped");
        return;
    }
    let settings = Settings::from_lookup(|k| std::env::var(k).ok()).expect("stack settings");
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let app: &'static App = Box::leak(Box::new(App::new(settings, sdk)));
    let (sizes, rounds): (&[usize], usize) = if benchmarking { (&[1_000, 100_000], 41) } else { (&[300, 1_000], 5) };
    let queries = [("page of 50", "limit=50"), ("page of 50, action filter", "limit=50&action=bench.beta")];
    // Both logs first; then the sizes take turns, round by round, so a busy moment of the
    // machine falls on both alike.
    let mut orgs = Vec::new();
    for &n in sizes {
        let (token, org_id) = admin(app).await;
        let started = Instant::now();
        seed(app, &org_id, n).await;
        let seeded = started.elapsed();
        let limit = Duration::from_secs(if benchmarking { 900 } else { 300 });
        let (waited, counted) = wait_counted(app, &org_id, n as u64, limit).await;
        println!("{n:>7} entries: seeded in {seeded:.1?}; {waited:.1?} later the notifier had counted {counted}");
        if !benchmarking {
            assert!(counted >= n as u64, "the notifier counts every entry");
        }
        orgs.push((n, token));
    }
    let mut medians = Vec::new();
    for (label, query) in queries {
        let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); orgs.len()];
        let mut totals = vec![0; orgs.len()];
        for round in 0..rounds {
            for step in 0..orgs.len() {
                // Alternate which size goes first.
                let i = if round % 2 == 0 { step } else { orgs.len() - 1 - step };
                let request = get("/admin/audit-logs", query, &orgs[i].1);
                let started = Instant::now();
                let response = shared::api::audit::handle(app, request).await;
                samples[i].push(started.elapsed());
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
                assert_eq!(body["items"].as_array().map(Vec::len), Some(50));
                totals[i] = body["total"].as_u64().unwrap();
            }
        }
        for (i, (n, _)) in orgs.iter().enumerate() {
            let median = median(samples[i].clone());
            println!(
                "{n:>7} entries: {label}: whole request median {median:.2?} over {rounds} rounds, total {}",
                totals[i]
            );
            medians.push((label, *n, median));
        }
    }
    for (label, _) in queries {
        let of = |size: usize| medians.iter().find(|(l, n, _)| *l == label && *n == size).map(|(_, _, m)| *m).unwrap();
        let (small, large) = (of(sizes[0]), of(sizes[1]));
        println!(
            "{label}: {} vs {} entries: {:.2?} / {:.2?}, ratio {:.2}",
            sizes[1],
            sizes[0],
            large,
            small,
            large.as_secs_f64() / small.as_secs_f64()
        );
    }
}
