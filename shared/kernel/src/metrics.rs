//! CloudWatch metrics as Embedded Metric Format lines on stdout. Lambda sends stdout to
//! CloudWatch Logs, which extracts the values: no client, no API call, nothing added to the
//! answer's latency. A line is written only where `METRICS_NAMESPACE` is set (the template
//! sets the stack name in AWS and leaves it unset on the local stack), with one dimension,
//! `Function`, the function's name.
//!
//! A few counters per invocation do not need a metrics registry and a flush hook (what the
//! EMF crates built on `metrics` bring); the format is one JSON object.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

/// Where this function's metrics go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    namespace: String,
    function: String,
}

impl Metrics {
    /// From the environment, once per process; `None` when metrics are off.
    pub fn get() -> Option<&'static Metrics> {
        static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();
        METRICS.get_or_init(|| Self::from_lookup(|name| std::env::var(name).ok())).as_ref()
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let namespace = lookup("METRICS_NAMESPACE").map(|n| n.trim().to_owned()).filter(|n| !n.is_empty())?;
        let function = lookup("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "unknown".to_owned());
        Some(Self { namespace, function })
    }

    /// One EMF line: `counts` become metrics (unit Count), `properties` ride along for Logs
    /// Insights without becoming metrics.
    pub fn line(&self, timestamp_ms: i64, counts: &[(&str, u64)], properties: Map<String, Value>) -> String {
        let mut line = properties;
        line.insert("Function".to_owned(), json!(self.function));
        for (name, value) in counts {
            line.insert((*name).to_owned(), json!(value));
        }
        line.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [["Function"]],
                    "Metrics": counts.iter().map(|(name, _)| json!({"Name": name, "Unit": "Count"})).collect::<Vec<_>>(),
                }],
            }),
        );
        Value::Object(line).to_string()
    }

    /// Writes one line (stdout, where Lambda's log capture reads it; not through `tracing`,
    /// whose JSON would nest `_aws` where CloudWatch does not look).
    pub fn emit(&self, counts: &[(&str, u64)], properties: Map<String, Value>) {
        let now_ms = crate::time::now().unix_timestamp_nanos() / 1_000_000;
        println!("{}", self.line(now_ms as i64, counts, properties));
    }
}

/// One measured amount (not a count) under a dimension of its own, summed across functions:
/// e.g. the platform's margin on each release, per `Currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    pub name: &'static str,
    pub value: i64,
    pub dimension: (&'static str, String),
}

impl Measure {
    /// What the platform kept of a release after Stripe's fees: its fee less Stripe's
    /// processing fee on the charge, in the currency's minor units (negative when the fee
    /// did not cover Stripe's).
    pub fn platform_margin(currency: &str, platform_fee: i64, stripe_fee: i64) -> Self {
        Self { name: "PlatformMargin", value: platform_fee - stripe_fee, dimension: ("Currency", currency.to_owned()) }
    }
}

impl Metrics {
    /// One EMF line for `measure`, with `Function` as a property (not a dimension, so the
    /// metric sums over every function that records it).
    pub fn measure_line(&self, timestamp_ms: i64, measure: &Measure) -> String {
        let (dimension, value) = (measure.dimension.0, &measure.dimension.1);
        let mut line = Map::new();
        line.insert("Function".to_owned(), json!(self.function));
        line.insert(dimension.to_owned(), json!(value));
        line.insert(measure.name.to_owned(), json!(measure.value));
        line.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [[dimension]],
                    "Metrics": [{"Name": measure.name, "Unit": "None"}],
                }],
            }),
        );
        Value::Object(line).to_string()
    }
}

/// Records `measure`, where metrics are on.
pub fn record(measure: &Measure) {
    if let Some(metrics) = Metrics::get() {
        let now_ms = crate::time::now().unix_timestamp_nanos() / 1_000_000;
        println!("{}", metrics.measure_line(now_ms as i64, measure));
    }
}

/// The per-class counters of one HTTP answer: one of them 1, the others 0, so a healthy
/// function reports zeros (an alarm sees data, and rates can be computed). `status` is the
/// HTTP status code.
pub fn response_counts(status: u16) -> [(&'static str, u64); 4] {
    let class = status / 100;
    [
        ("Responses2xx", u64::from(class == 2)),
        ("Responses3xx", u64::from(class == 3)),
        ("Responses4xx", u64::from(class == 4)),
        ("Responses5xx", u64::from(class == 5)),
    ]
}

/// Records one HTTP answer, where metrics are on.
pub fn record_response(status: u16) {
    if let Some(metrics) = Metrics::get() {
        metrics.emit(&response_counts(status), Map::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::from_lookup(|name| match name {
            "METRICS_NAMESPACE" => Some("backend-prod".to_owned()),
            "AWS_LAMBDA_FUNCTION_NAME" => Some("backend-prod-LoginFunction-abc".to_owned()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn the_platform_margin_is_one_value_per_currency() {
        let measure = Measure::platform_margin("eur", 830, 320);
        let line: Value = serde_json::from_str(&metrics().measure_line(1_795_000_000_000, &measure)).unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([["Currency"]]));
        assert_eq!(directive["Metrics"], json!([{"Name": "PlatformMargin", "Unit": "None"}]));
        assert_eq!((line["Currency"].as_str(), line["PlatformMargin"].as_i64()), (Some("eur"), Some(510)));
        assert_eq!(Measure::platform_margin("usd", 10, 30).value, -20, "a loss shows as one");
    }

    #[test]
    fn metrics_are_off_without_a_namespace() {
        assert_eq!(Metrics::from_lookup(|_| None), None);
        assert_eq!(Metrics::from_lookup(|name| (name == "METRICS_NAMESPACE").then(|| " ".to_owned())), None);
    }

    #[test]
    fn a_line_is_emf_with_the_function_dimension() {
        let line: Value =
            serde_json::from_str(&metrics().line(1_795_000_000_000, &response_counts(503), Map::new())).unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(line["_aws"]["Timestamp"], 1_795_000_000_000_i64);
        assert_eq!(directive["Namespace"], "backend-prod");
        assert_eq!(directive["Dimensions"], json!([["Function"]]));
        assert_eq!(line["Function"], "backend-prod-LoginFunction-abc", "every dimension has a value in the line");
        let names: Vec<&str> =
            directive["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Responses2xx", "Responses3xx", "Responses4xx", "Responses5xx"]);
        assert!(directive["Metrics"].as_array().unwrap().iter().all(|m| m["Unit"] == "Count"));
        for (name, value) in [("Responses2xx", 0), ("Responses3xx", 0), ("Responses4xx", 0), ("Responses5xx", 1)] {
            assert_eq!(line[name], value, "{name}");
        }
    }

    #[test]
    fn each_status_counts_in_its_class_only() {
        for (status, class) in [(200, 0), (201, 0), (304, 1), (401, 2), (429, 2), (500, 3), (503, 3)] {
            let counts = response_counts(status);
            let ones: Vec<usize> = counts.iter().enumerate().filter(|(_, (_, v))| *v == 1).map(|(i, _)| i).collect();
            assert_eq!(ones, [class], "{status}");
        }
    }

    #[test]
    fn properties_ride_along_without_becoming_metrics() {
        let mut properties = Map::new();
        properties.insert("stopped_early".to_owned(), json!(1));
        let line: Value = serde_json::from_str(&metrics().line(0, &[("OutboxAbandoned", 2)], properties)).unwrap();
        assert_eq!(line["stopped_early"], 1);
        assert_eq!(line["OutboxAbandoned"], 2);
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{"Name": "OutboxAbandoned", "Unit": "Count"}])
        );
    }
}
