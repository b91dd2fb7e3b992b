//! Shows that an audit-log page costs the same reads whatever the size of the log: seeds
//! one org with 1 000 entries and another with 100 000, then reads a 50-entry page of each
//! (plain, and filtered by action) and prints the consumed read capacity.
//!
//! ```sh
//! infra/dev.sh &
//! set -a; . .local/stack.env; set +a
//! cargo bench --bench audit_page_cost
//! ```
//!
//! Under `cargo test` it runs with 100 and 1 000 entries, to keep it working.

mod common;

use shared::{
    App,
    audit::{
        AuditEntry, AuditStatus,
        query::{AuditFilter, query},
    },
    config::Settings,
    http::RequestMeta,
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

#[tokio::main]
async fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    if std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_err() {
        eprintln!("audit_page_cost: no local stack in the environment (see the file's header); skipped");
        return;
    }
    let settings = Settings::from_lookup(|k| std::env::var(k).ok()).expect("stack settings");
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let app = App::new(settings, sdk);
    let sizes: &[usize] = if benchmarking { &[1_000, 100_000] } else { &[100, 1_000] };
    for &n in sizes {
        let org_id = format!("bench-org-{}", uuid::Uuid::new_v4().simple());
        let started = std::time::Instant::now();
        seed(&app, &org_id, n).await;
        let seeded = started.elapsed();
        for (label, filter) in [
            ("page of 50", AuditFilter { limit: 50, ..Default::default() }),
            (
                "page of 50, action filter",
                AuditFilter { limit: 50, action: Some("bench.beta".into()), ..Default::default() },
            ),
        ] {
            let page = query(&app, &org_id, &filter).await.expect("query");
            println!(
                "{n:>7} entries (seeded in {:.1?}): {label}: {} items, page read {:.1} RCU, total {}",
                seeded,
                page.items.len(),
                page.page_read_units,
                page.total
            );
        }
    }
}
