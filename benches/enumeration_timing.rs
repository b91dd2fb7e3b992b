//! Compares the time of the routes that must not reveal whether an address has an account:
//! `POST /auth/register`, `POST /auth/forgot-password` and `POST /auth/resend-verification`,
//! each for a registered and for an unknown address. With every email sent out of band
//! (the outbox), both sides do the same kind of work; the medians should be within 5 %.
//!
//! Locally the notifier shares the machine with the request being timed, so each sample
//! starts once the previous request's out-of-band work has had time to finish (in AWS it
//! runs elsewhere), and the order of the two sides alternates.
//!
//! Run against the local stack (a benchmark, not a test; it asserts nothing about time):
//!
//! ```sh
//! infra/dev.sh &                      # or any stack that wrote .local/stack.env
//! set -a; . .local/stack.env; set +a
//! cargo bench --bench enumeration_timing
//! ```
//!
//! Under `cargo test` it runs one sample of each, to keep it compiling and working.

use std::time::{Duration, Instant};

use common::event;
use serde_json::json;
use shared::{App, api, config::Settings};

mod common;

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

const PASSWORD: &str = "correct horse battery staple";

/// Long enough for the notifier to have done the previous request's task.
const SETTLE: Duration = Duration::from_millis(200);

async fn time(app: &'static App, path: &str, body: serde_json::Value, expected: u16) -> Duration {
    tokio::time::sleep(SETTLE).await;
    let start = Instant::now();
    let response = match path {
        "/auth/register" => api::register::handle(app, event(path, body)).await,
        "/auth/forgot-password" => api::reset::handle(app, event(path, body)).await,
        _ => api::verify::handle(app, event(path, body)).await,
    };
    let elapsed = start.elapsed();
    assert_eq!(response.status(), expected, "{path}");
    elapsed
}

fn fresh() -> String {
    format!("bench-{}@example.com", uuid::Uuid::new_v4().simple())
}

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    if std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_err() {
        eprintln!("enumeration_timing: no local stack in the environment (see the file's header); skipped");
        return;
    }
    let settings = Settings::from_lookup(|k| match k {
        "RATE_LIMIT_ENABLED" => Some("false".into()),
        other => std::env::var(other).ok(),
    })
    .expect("stack settings");
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let app: &'static App = Box::leak(Box::new(App::new(settings, sdk)));
    let rounds = if benchmarking { 60 } else { 1 };
    for path in ["/auth/register", "/auth/forgot-password", "/auth/resend-verification"] {
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // A registered (unverified) address, so each route has its "account" path.
            let email = fresh();
            time(app, "/auth/register", json!({"email": email, "password": PASSWORD}), 202).await;
            let body = |email: &str| match path {
                "/auth/register" => json!({"email": email, "password": PASSWORD}),
                _ => json!({"email": email}),
            };
            let expected = 202;
            if round % 2 == 0 {
                known.push(time(app, path, body(&email), expected).await);
                unknown.push(time(app, path, body(&fresh()), expected).await);
            } else {
                unknown.push(time(app, path, body(&fresh()), expected).await);
                known.push(time(app, path, body(&email), expected).await);
            }
        }
        let (k, u) = (median_ms(known), median_ms(unknown));
        println!("{path:28} registered {k:7.1} ms   unknown {u:7.1} ms   ratio (unknown/registered) {:.2}", u / k);
    }
}
