//! The filters of `GET /admin/audit-logs`, parsed from the query string: what the query
//! ([`super::query`]) reads by and what a total is counted by ([`super::totals`]).

use std::collections::HashMap;

use crate::{
    cursor::{fingerprint, page_limit},
    invalid::{FieldError, Invalid},
};

pub const DEFAULT_LIMIT: i32 = 50;
pub const MAX_LIMIT: i32 = 100;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub status: Option<String>,
    pub actor_user_id: Option<String>,
    pub target_user_id: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: i32,
    pub cursor: Option<String>,
}

fn plain(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl AuditFilter {
    /// From the query string; every problem reported at once.
    pub fn parse(query: &HashMap<String, String>) -> Result<Self, Invalid> {
        let mut errors = Vec::new();
        let mut text = |name: &str| -> Option<String> {
            let value = query.get(name).filter(|v| !v.is_empty())?.clone();
            if !plain(&value) {
                errors.push(FieldError::new(name, "has characters that are not allowed"));
                return None;
            }
            Some(value)
        };
        let action = text("action");
        let actor_user_id = text("actor_user_id");
        let target_user_id = text("target_user_id");
        let status = text("status");
        let cursor = query.get("cursor").filter(|c| !c.is_empty()).cloned();
        if let Some(s) = &status
            && s != "success"
            && s != "failure"
        {
            errors.push(FieldError::new("status", "must be success or failure"));
        }
        // Present but empty is no timestamp either (the document says date-time).
        let mut time = |name: &str| -> Option<String> {
            let value = query.get(name)?;
            match crate::time::parse_rfc3339(value) {
                Some(at) => Some(crate::time::rfc3339(at)),
                None => {
                    errors.push(FieldError::new(name, "must be an RFC 3339 timestamp"));
                    None
                }
            }
        };
        let since = time("since");
        let until = time("until");
        if let (Some(since), Some(until)) = (&since, &until)
            && since > until
        {
            errors.push(FieldError::new("since", "must not be after `until`"));
        }
        let limit = page_limit(query.get("limit").map(String::as_str), DEFAULT_LIMIT, MAX_LIMIT, &mut errors);
        if errors.is_empty() {
            Ok(Self { action, status, actor_user_id, target_user_id, since, until, limit, cursor })
        } else {
            Err(Invalid(errors))
        }
    }

    /// What a cursor is bound to: everything but the page size and the cursor itself.
    pub(super) fn fingerprint(&self, org_id: &str) -> String {
        fingerprint(&format!(
            "{org_id}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.action, self.status, self.actor_user_id, self.target_user_id, self.since, self.until
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn filters_are_validated() {
        assert_eq!(AuditFilter::parse(&q(&[])).unwrap().limit, 50);
        assert!(AuditFilter::parse(&q(&[("limit", "0")])).is_err());
        assert!(AuditFilter::parse(&q(&[("until", "")])).is_err(), "an empty timestamp is no timestamp");
        assert!(AuditFilter::parse(&q(&[("action", "")])).unwrap().action.is_none(), "an empty filter is none");
        assert!(AuditFilter::parse(&q(&[("limit", "101")])).is_err());
        assert!(AuditFilter::parse(&q(&[("status", "maybe")])).is_err());
        assert!(AuditFilter::parse(&q(&[("since", "yesterday")])).is_err());
        let backwards = [("since", "2026-11-02T00:00:00Z"), ("until", "2026-11-01T00:00:00Z")];
        assert!(AuditFilter::parse(&q(&backwards)).is_err(), "since after until is a 400, not a 500");
        let same = [("since", "2026-11-01T00:00:00Z"), ("until", "2026-11-01T00:00:00Z")];
        assert!(AuditFilter::parse(&q(&same)).is_ok());
        assert!(AuditFilter::parse(&q(&[("action", "a b")])).is_err());
        let f = AuditFilter::parse(&q(&[("action", "auth.login"), ("status", "failure"), ("limit", "10")])).unwrap();
        assert_eq!(f.limit, 10);
    }
}
