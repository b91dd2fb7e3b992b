//! Shows that the hourly cleanup copes with a backlog: seeds 10 000 expired items (one-time
//! tokens, rate-limit counters, idempotency records, as the service writes them) that TTL has
//! not removed, then runs the cleanup first with a deliberately short deadline (it must stop
//! in time, having removed part) and then with the function's real 300 s budget (it must
//! finish the rest). Prints each run's counts and time.
//!
//! ```sh
//! infra/dev.sh &
//! set -a; . .local/stack.env; set +a
//! cargo bench --bench cleanup_backlog
//! ```
//!
//! Under `cargo test` it seeds 500 items and runs only the sweep (whole runs would reach into
//! the other tests' accounts and payments on the shared table), and checks that the runs
//! together remove them all.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::KeysAndAttributes;
use serde_json::json;
use shared::{
    App,
    cleanup::{self, STOP_BEFORE_DEADLINE},
    config::Settings,
    deadline::Deadline,
    http::RequestMeta,
    store::Item,
};

/// The items, keyed as the service keys them, expired a minute ago.
fn backlog(tag: &str, n: usize) -> Vec<Item> {
    let expired = shared::time::now().unix_timestamp() - 60;
    (0..n)
        .map(|i| {
            let item = match i % 3 {
                0 => json!({"PK": format!("TOKEN#{tag}{i}"), "SK": "TOKEN", "kind": "password_reset",
                            "user_id": tag, "expires_at": "2026-01-01T00:00:00Z", "created_at": "2026-01-01T00:00:00Z"}),
                1 => json!({"PK": format!("RATE#login#{tag}{i}"), "SK": "1767225600", "hits": 3}),
                _ => json!({"PK": format!("IDEMP#payments#{tag}#{i}"), "SK": "IDEMPOTENCY", "status": "completed"}),
            };
            let mut item = item;
            item["ttl"] = json!(expired);
            shared::store::to_item(&item).expect("an item")
        })
        .collect()
}

/// How many of `items` are still in the table.
async fn remaining(app: &App, items: &[Item]) -> usize {
    let table = app.table();
    let mut left = 0;
    for batch in items.chunks(100) {
        let keys: Vec<Item> = batch
            .iter()
            .map(|item| [("PK".to_owned(), item["PK"].clone()), ("SK".to_owned(), item["SK"].clone())].into())
            .collect();
        let mut pending = Some(KeysAndAttributes::builder().set_keys(Some(keys)).build().unwrap());
        while let Some(request) = pending.take() {
            let out =
                table.client().batch_get_item().request_items(table.name(), request).send().await.expect("batch get");
            left += out.responses.and_then(|mut r| r.remove(table.name())).map_or(0, |found| found.len());
            pending = out.unprocessed_keys.and_then(|mut u| u.remove(table.name())).filter(|k| !k.keys().is_empty());
        }
    }
    left
}

/// One run with `work_budget` before it must stop: the whole cleanup when benchmarking, the
/// expired-item sweep alone under `cargo test`.
async fn timed_run(app: &App, whole: bool, label: &str, work_budget: Duration) -> (u32, bool) {
    let deadline = Deadline::after(STOP_BEFORE_DEADLINE + work_budget);
    let started = Instant::now();
    let (removed, kept, failed, stopped_early) = if whole {
        let meta =
            RequestMeta { request_id: format!("bench-{}", uuid::Uuid::new_v4()), deadline, ..Default::default() };
        let s = cleanup::run(app, &meta).await;
        (s.expired_removed, s.expired_kept, s.expired_failed, s.stopped_early)
    } else {
        let out_of_time = || deadline.remaining().is_some_and(|left| left < STOP_BEFORE_DEADLINE);
        let s = cleanup::expired::sweep(app.table(), shared::time::now().unix_timestamp(), out_of_time).await;
        (s.removed, s.kept, s.failed, s.stopped_early)
    };
    let took = started.elapsed();
    println!(
        "{label}: {removed} removed, {kept} kept, {failed} failed, stopped early: {stopped_early}, in {took:.1?} \
         ({:.0} items/s)",
        f64::from(removed) / took.as_secs_f64()
    );
    assert!(took < work_budget + STOP_BEFORE_DEADLINE, "{label} overran its deadline");
    (removed, stopped_early)
}

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    if std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_err() {
        eprintln!("cleanup_backlog: no local stack in the environment (see the file's header); skipped");
        return;
    }
    let settings = Settings::from_lookup(|k| std::env::var(k).ok()).expect("stack settings");
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let app = App::new(settings, sdk);
    let (n, short) = if benchmarking { (10_000, Duration::from_secs(5)) } else { (500, Duration::from_millis(200)) };

    let items = backlog(&format!("bench-{}", uuid::Uuid::new_v4().simple()), n);
    let started = Instant::now();
    common::seed_items(app.table(), items.clone()).await;
    println!("{n} expired items seeded in {:.1?}", started.elapsed());

    let (_, stopped_early) = timed_run(&app, benchmarking, &format!("run with {short:?} of work"), short).await;
    let after_first = remaining(&app, &items).await;
    println!("left after the short run: {after_first} of {n}");
    // The next runs (the function's real budget) finish what is left.
    let mut runs = 1;
    while remaining(&app, &items).await > 0 {
        assert!(runs < 5, "the backlog is not shrinking");
        timed_run(&app, benchmarking, "run with the 300 s budget", Duration::from_secs(270)).await;
        runs += 1;
    }
    println!(
        "all {n} removed after {runs} runs; the short run {}",
        if stopped_early { "stopped early and the next resumed" } else { "finished" }
    );
    assert_eq!(remaining(&app, &items).await, 0);
}
