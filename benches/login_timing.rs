//! Compares `POST /auth/login` time for an unknown email and for a known email with a wrong
//! password. They should be about equal: the unknown path verifies a dummy Argon2 hash.
//!
//! Run against the local stack (a benchmark, not a test; it asserts nothing):
//!
//! ```sh
//! infra/dev.sh &                      # or any stack that wrote .local/stack.env
//! set -a; . .local/stack.env; set +a
//! cargo bench --bench login_timing
//! ```
//!
//! Under `cargo test` it runs one sample of each, to keep it compiling and working.

use std::time::{Duration, Instant};

use common::event;
use serde_json::json;
use shared::{App, api, config::Settings};

mod common;

fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    (mean, ms(samples[samples.len() / 2]))
}

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    if std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_err() {
        eprintln!("login_timing: no local stack in the environment (see the file's header); skipped");
        return;
    }
    let settings = Settings::from_lookup(|k| match k {
        "RATE_LIMIT_ENABLED" => Some("false".into()),
        other => std::env::var(other).ok(),
    })
    .expect("stack settings");
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let app: &'static App = Box::leak(Box::new(App::new(settings, sdk)));
    let password = "correct horse battery staple";
    let users = if benchmarking { 10 } else { 1 };
    let per_user = if benchmarking { 4 } else { 1 }; // below the lockout threshold
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..users {
        let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
        let r =
            api::register::handle(app, event("/auth/register", json!({"email": email, "password": password}))).await;
        assert_eq!(r.status(), 202);
        for _ in 0..per_user {
            let start = Instant::now();
            let r = api::login::handle(
                app,
                event("/auth/login", json!({"email": email, "password": "a wrong password here"})),
            )
            .await;
            known.push(start.elapsed());
            assert_eq!(r.status(), 401);
            let nobody = format!("nobody-{}@example.com", uuid::Uuid::new_v4().simple());
            let start = Instant::now();
            let r = api::login::handle(
                app,
                event("/auth/login", json!({"email": nobody, "password": "a wrong password here"})),
            )
            .await;
            unknown.push(start.elapsed());
            assert_eq!(r.status(), 401);
        }
    }
    let (known_mean, known_median) = stats(known);
    let (unknown_mean, unknown_median) = stats(unknown);
    println!("login, known email + wrong password: mean {known_mean:.1} ms, median {known_median:.1} ms");
    println!("login, unknown email:                 mean {unknown_mean:.1} ms, median {unknown_median:.1} ms");
    println!("ratio of medians (unknown / known): {:.2}", unknown_median / known_median);
}
