//! `GET /payments`: the caller's payments as payer or as provider, newest first, one Query
//! per page.
//!
//! A payment is written with a key on two sparse indexes when it is created: `GSI3PK =
//! PAYER#{payer_user_id}` and `GSI4PK = PAYEE#{provider_user_id}`, both sorted by
//! `{created_at}#{payment_id}` (fixed-width timestamps, so text order is time order, and the
//! id breaks ties). Two indexes, because one payment is on two lists at once. The provider
//! side is keyed by the provider's owner, the rule by which `GET /payments/{id}` shows a
//! payment to its provider: a user who owns no provider account has an empty list, and no
//! lookup comes before the Query. Payments made before these keys existed are on neither list.
//!
//! `status` filters what the key reads rather than being part of the key: a payment's status
//! moves in a dozen conditional writes (webhook, release, refund, reconciliation), and a key
//! holding it would have to follow every one of them, or the lists would silently go wrong.
//! So a page reads `limit` payments and returns those in that status: it can be shorter than
//! `limit`, even empty, with a `next_cursor`. Only a missing `next_cursor` ends the list.
//!
//! The cursor is the page's last key, signed and bound to the caller, the side and the
//! status ([`crate::cursor`]).

use std::collections::HashMap;

use serde_json::json;

use super::payment::{Payment, PaymentStatus};
use crate::{
    cursor::{Cursors, fingerprint},
    identity::auth::Principal,
    invalid::FieldError,
    payments::PaymentError,
    services::Services,
    store::{StoreError, av, dynamo_error, keys},
};

pub const DEFAULT_LIMIT: i32 = 20;
pub const MAX_LIMIT: i32 = 100;
const CURSOR_PURPOSE: &str = "payments-cursor";

/// Whose list: payments the caller made, or payments to the provider account they own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Payer,
    Provider,
}

impl Side {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "payer" => Some(Self::Payer),
            "provider" => Some(Self::Provider),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payer => "payer",
            Self::Provider => "provider",
        }
    }

    /// The index partition of `user_id`'s list on this side.
    pub fn key(self, user_id: &str) -> String {
        match self {
            Self::Payer => keys::payer_history(user_id),
            Self::Provider => keys::payee_history(user_id),
        }
    }

    fn index(self) -> &'static str {
        match self {
            Self::Payer => "GSI3",
            Self::Provider => "GSI4",
        }
    }

    fn partition_attribute(self) -> &'static str {
        match self {
            Self::Payer => "GSI3PK",
            Self::Provider => "GSI4PK",
        }
    }
}

/// The sort key of a payment created at `created_at` (RFC 3339, fixed width) on both lists.
pub fn sort_key(created_at: &str, payment_id: &str) -> String {
    keys::history_at(created_at, payment_id)
}

/// `GET /payments`'s query string, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub side: Side,
    pub status: Option<PaymentStatus>,
    pub limit: i32,
    pub cursor: Option<String>,
}

impl HistoryQuery {
    /// From the query string; every problem reported at once. A parameter that is present
    /// must be valid (an empty `side` or `status` is not "any"); an empty `cursor` is the
    /// first page.
    pub fn parse(query: &HashMap<String, String>) -> Result<Self, PaymentError> {
        let mut errors = Vec::new();
        let side = match query.get("side").map(|s| Side::parse(s)) {
            None => Side::Payer,
            Some(Some(side)) => side,
            Some(None) => {
                errors.push(FieldError::new("side", "must be payer or provider"));
                Side::Payer
            }
        };
        let status = match query.get("status").map(|s| PaymentStatus::parse(s)) {
            None => None,
            Some(Some(status)) => Some(status),
            Some(None) => {
                let names: Vec<&str> = PaymentStatus::ALL.iter().map(|s| s.as_str()).collect();
                errors.push(FieldError::new("status", format!("must be one of {}", names.join(", "))));
                None
            }
        };
        let limit =
            crate::cursor::page_limit(query.get("limit").map(String::as_str), DEFAULT_LIMIT, MAX_LIMIT, &mut errors);
        let cursor = query.get("cursor").filter(|c| !c.is_empty()).cloned();
        if errors.is_empty() { Ok(Self { side, status, limit, cursor }) } else { Err(PaymentError::Validation(errors)) }
    }

    /// What a cursor is bound to: everything but the page size and the cursor itself.
    fn fingerprint(&self, user_id: &str) -> String {
        fingerprint(&format!("{user_id}|{}|{:?}", self.side.as_str(), self.status.map(PaymentStatus::as_str)))
    }
}

pub struct HistoryPage {
    pub items: Vec<Payment>,
    pub next_cursor: Option<String>,
}

impl HistoryPage {
    /// Items as `GET /payments/{id}` shows them.
    pub fn body(&self) -> serde_json::Value {
        let items: Vec<_> = self.items.iter().map(Payment::body).collect();
        json!({ "items": items, "next_cursor": self.next_cursor })
    }
}

/// One page of the caller's list: one Query on the side's index, newest first.
pub async fn page(app: &Services, principal: &Principal, query: &HistoryQuery) -> Result<HistoryPage, PaymentError> {
    let fingerprint = query.fingerprint(principal.user_id());
    let cursors = Cursors::for_listing(app, CURSOR_PURPOSE).await?;
    let start = query.cursor.as_deref().map(|c| cursors.decode(&fingerprint, c)).transpose()?;
    let table = app.table();
    let mut request = table
        .client()
        .query()
        .table_name(table.name())
        .index_name(query.side.index())
        .key_condition_expression("#list = :list")
        .expression_attribute_names("#list", query.side.partition_attribute())
        .expression_attribute_values(":list", av::s(query.side.key(principal.user_id())))
        .scan_index_forward(false)
        .limit(query.limit)
        .set_exclusive_start_key(start);
    if let Some(status) = query.status {
        request = request
            .filter_expression("#status = :status")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", av::s(status.as_str()));
    }
    let out = request.send().await.map_err(dynamo_error)?;
    let items = out
        .items
        .unwrap_or_default()
        .into_iter()
        .map(serde_dynamo::from_item)
        .collect::<Result<Vec<Payment>, _>>()
        .map_err(StoreError::from)?;
    // DynamoDB gives a last key whenever it stopped at `limit`, even at the very end; the
    // client then gets one more (empty) page rather than a list that ends early.
    let next_cursor =
        out.last_evaluated_key.filter(|key| !key.is_empty()).map(|key| cursors.encode(&fingerprint, &key));
    Ok(HistoryPage { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn fields(result: Result<HistoryQuery, PaymentError>) -> Vec<String> {
        match result {
            Err(PaymentError::Validation(errors)) => errors.iter().map(|e| e.field.clone()).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_payer_side_any_status_twenty_a_page() {
        let query = HistoryQuery::parse(&q(&[])).unwrap();
        assert_eq!(query, HistoryQuery { side: Side::Payer, status: None, limit: 20, cursor: None });
        let query = HistoryQuery::parse(&q(&[("side", "provider"), ("status", "refunded"), ("limit", "100")])).unwrap();
        assert_eq!((query.side, query.status, query.limit), (Side::Provider, Some(PaymentStatus::Refunded), 100));
        assert_eq!(HistoryQuery::parse(&q(&[("cursor", "")])).unwrap().cursor, None, "an empty cursor starts over");
    }

    #[test]
    fn bad_parameters_are_named_all_at_once() {
        assert_eq!(fields(HistoryQuery::parse(&q(&[("side", "payee")]))), ["side"]);
        assert_eq!(fields(HistoryQuery::parse(&q(&[("side", "")]))), ["side"], "present but empty is not a side");
        assert_eq!(fields(HistoryQuery::parse(&q(&[("status", "paid")]))), ["status"]);
        assert_eq!(fields(HistoryQuery::parse(&q(&[("status", "")]))), ["status"]);
        for limit in ["0", "101", "-1", "ten", "", "1.5"] {
            assert_eq!(fields(HistoryQuery::parse(&q(&[("limit", limit)]))), ["limit"], "{limit}");
        }
        let all = HistoryQuery::parse(&q(&[("side", "x"), ("status", "y"), ("limit", "0")]));
        assert_eq!(fields(all), ["side", "status", "limit"]);
    }

    #[test]
    fn sides_have_their_own_index_and_prefix() {
        assert_eq!((Side::Payer.index(), Side::Payer.key("u1")), ("GSI3", "PAYER#u1".to_owned()));
        assert_eq!((Side::Provider.index(), Side::Provider.key("u1")), ("GSI4", "PAYEE#u1".to_owned()));
    }

    #[test]
    fn a_cursor_is_bound_to_its_caller_side_and_status() {
        let payer = HistoryQuery::parse(&q(&[])).unwrap();
        let provider = HistoryQuery::parse(&q(&[("side", "provider")])).unwrap();
        let released = HistoryQuery::parse(&q(&[("status", "released")])).unwrap();
        let small_pages = HistoryQuery::parse(&q(&[("limit", "5")])).unwrap();
        let mine = payer.fingerprint("u1");
        assert_ne!(mine, payer.fingerprint("u2"));
        assert_ne!(mine, provider.fingerprint("u1"));
        assert_ne!(mine, released.fingerprint("u1"));
        assert_eq!(mine, small_pages.fingerprint("u1"), "the page size may change between pages");
    }

    #[test]
    fn statuses_parse_from_their_names() {
        for status in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(PaymentStatus::parse("Succeeded"), None);
    }
}
