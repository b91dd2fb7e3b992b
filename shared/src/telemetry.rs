//! JSON logs for CloudWatch. Every line carries the current span's fields, and the request
//! span (see [`crate::http`]) carries the request ids, so a log search by request id finds
//! everything one request did.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops),
/// which lets tests share it.
pub fn init() {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into())))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .flatten_event(true)
        .try_init();
}
