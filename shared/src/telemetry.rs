//! JSON logs for CloudWatch. Every line carries the current span's fields, and the request
//! span (see [`crate::http`]) carries the request ids, so a log search by request id finds
//! everything one request did.

use tracing_subscriber::{EnvFilter, filter::LevelFilter, fmt};

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops),
/// which lets tests share it.
pub fn init() {
    let production = std::env::var("ENVIRONMENT").is_ok_and(|e| e.trim() == "production");
    let asked = std::env::var("RUST_LOG").ok().or_else(|| std::env::var("LOG_LEVEL").ok());
    let (filter, refused) = filter_for(asked.as_deref(), production);
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .flatten_event(true)
        .try_init();
    if let Some(asked) = refused {
        tracing::warn!(
            asked,
            "debug and trace logging are refused in production (the runtime logs raw events, passwords and tokens included); logging at info"
        );
    }
}

/// The filter for the asked directives (`info` when none or invalid). In production nothing
/// more verbose than `info` is allowed: the refused directives come back as the second value.
fn filter_for(asked: Option<&str>, production: bool) -> (EnvFilter, Option<String>) {
    let Some(filter) = asked.and_then(|a| EnvFilter::try_new(a).ok()) else {
        return (EnvFilter::new("info"), None);
    };
    let verbose = filter.max_level_hint().is_none_or(|level| level > LevelFilter::INFO);
    if production && verbose {
        return (EnvFilter::new("info"), asked.map(str::to_owned));
    }
    (filter, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_refuses_debug_and_trace_anywhere() {
        for asked in ["trace", "debug", "info,lambda_runtime=trace", "warn,shared=debug"] {
            let (filter, refused) = filter_for(Some(asked), true);
            assert_eq!(filter.max_level_hint(), Some(LevelFilter::INFO), "{asked}");
            assert_eq!(refused.as_deref(), Some(asked));
        }
        for asked in ["info", "warn", "error,shared=info"] {
            assert_eq!(filter_for(Some(asked), true).1, None, "{asked}");
        }
        let (filter, refused) = filter_for(Some("trace"), false);
        assert_eq!((filter.max_level_hint(), refused), (Some(LevelFilter::TRACE), None), "elsewhere, as asked");
    }
}
