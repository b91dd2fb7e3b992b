//! JSON logs for CloudWatch. Every line carries the current span's fields, and the request
//! span (see the edge's `http` module) carries the request ids, so a log search by request id finds
//! everything one request did.

use tracing_subscriber::{
    filter::{LevelFilter, Targets},
    fmt,
    prelude::*,
};

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops),
/// which lets tests share it.
pub fn init() {
    let production = std::env::var("ENVIRONMENT").is_ok_and(|e| e.trim() == "production");
    let asked = std::env::var("RUST_LOG").ok().or_else(|| std::env::var("LOG_LEVEL").ok());
    let (filter, refused) = filter_for(asked.as_deref(), production);
    let logs = fmt::layer().json().with_current_span(true).with_span_list(false).with_target(false).flatten_event(true);
    let _ = tracing_subscriber::registry().with(logs).with(filter).try_init();
    if let Some(asked) = refused {
        tracing::warn!(
            asked,
            "debug and trace logging are refused in production (the runtime logs raw events, passwords and tokens included); logging at info"
        );
    }
}

/// The filter for the asked directives (`target=level` pairs and a default level, as in
/// `RUST_LOG`; `info` when none or invalid). A target filter rather than `EnvFilter`: no
/// regular expressions to link or compile at start. In production nothing more verbose than
/// `info` is allowed: the refused directives come back as the second value.
fn filter_for(asked: Option<&str>, production: bool) -> (Targets, Option<String>) {
    let info = || Targets::new().with_default(LevelFilter::INFO);
    let Some(filter) = asked.and_then(|a| a.parse::<Targets>().ok()) else {
        return (info(), None);
    };
    if production && most_verbose(&filter) > LevelFilter::INFO {
        return (info(), asked.map(str::to_owned));
    }
    (filter, None)
}

/// The most verbose level the filter lets through anywhere.
fn most_verbose(filter: &Targets) -> LevelFilter {
    filter.iter().map(|(_, level)| level).chain(filter.default_level()).max().unwrap_or(LevelFilter::OFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_refuses_debug_and_trace_anywhere() {
        for asked in ["trace", "debug", "info,lambda_runtime=trace", "warn,shared=debug"] {
            let (filter, refused) = filter_for(Some(asked), true);
            assert_eq!(most_verbose(&filter), LevelFilter::INFO, "{asked}");
            assert_eq!(refused.as_deref(), Some(asked));
        }
        for asked in ["info", "warn", "error,shared=info"] {
            assert_eq!(filter_for(Some(asked), true).1, None, "{asked}");
        }
        let (filter, refused) = filter_for(Some("trace"), false);
        assert_eq!((most_verbose(&filter), refused), (LevelFilter::TRACE, None), "elsewhere, as asked");
    }

    #[test]
    fn directives_are_read_as_rust_log_writes_them() {
        let (filter, _) = filter_for(Some("warn,shared=debug"), false);
        assert!(filter.would_enable("shared::api", &tracing::Level::DEBUG));
        assert!(!filter.would_enable("aws_smithy_runtime", &tracing::Level::INFO));
        assert!(filter.would_enable("aws_smithy_runtime", &tracing::Level::WARN));
        let (unreadable, _) = filter_for(Some("=!nonsense"), false);
        assert_eq!(most_verbose(&unreadable), LevelFilter::INFO);
    }
}
