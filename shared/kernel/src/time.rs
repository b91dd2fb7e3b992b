//! Wall-clock helpers. Timestamps leave the system as RFC 3339 UTC strings and are stored
//! the same way (they sort lexically); TTLs are epoch seconds as DynamoDB expects.

pub use time::Duration;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// RFC 3339 with a fixed number of fractional digits, so that stored strings sort by time.
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let micros = at.microsecond();
    let base = at
        .replace_nanosecond(0)
        .expect("zero nanoseconds is always valid")
        .format(&Rfc3339)
        .expect("UTC timestamps always format");
    // `base` ends in "Z"; splice in microseconds.
    format!("{}.{micros:06}Z", base.trim_end_matches('Z'))
}

pub fn parse_rfc3339(value: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value, &Rfc3339).ok()
}

pub fn epoch_seconds(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

pub fn hours(n: i64) -> Duration {
    Duration::hours(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_fixed_width_and_round_trips() {
        let at = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        let text = rfc3339(at);
        assert_eq!(text, "2026-01-01T00:00:00.000000Z");
        assert_eq!(parse_rfc3339(&text), Some(at));
        let later = at + Duration::microseconds(1500);
        assert!(rfc3339(later) > text);
    }
}
