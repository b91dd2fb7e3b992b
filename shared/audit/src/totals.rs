//! Exact audit totals in O(1) reads: one counter per org, and per org × action, status,
//! actor and target (`AUDITCOUNT#{org}` / `ALL`, `action#…`, `status#…`, `actor#…`,
//! `target#…`).
//!
//! The counters are kept from the table's stream, never by the request that writes an entry:
//! a request transaction that also added to a shared counter would conflict with every other
//! one in the org (50 logins at once would start failing), and counting must never slow or
//! fail the request. Each new entry is counted exactly once: the transaction that adds to its
//! counters also marks it `counted`, on condition that it was not marked already, so a
//! redelivered stream record adds nothing. A batch's entries are counted together, so a busy
//! org costs a few counter writes per batch rather than five per entry.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{AuditEntry, AuditFilter};
use crate::store::{Change, StoreError, Table, av};

/// DynamoDB's limit on the items of one transaction.
const MAX_TRANSACTION_ITEMS: usize = 100;
/// Rounds of dropping already-counted entries before a chunk is given back for retry.
const ROUNDS: usize = 4;

pub fn partition(org_id: &str) -> String {
    format!("AUDITCOUNT#{org_id}")
}

/// The counter that holds `filter`'s total, when one does: no time range, and at most one of
/// action, status, actor and target. Other filters are counted along the narrowest key.
pub fn counter_for(filter: &AuditFilter) -> Option<String> {
    if filter.since.is_some() || filter.until.is_some() {
        return None;
    }
    let given: Vec<String> = [
        filter.action.as_ref().map(|a| format!("action#{a}")),
        filter.status.as_ref().map(|s| format!("status#{s}")),
        filter.actor_user_id.as_ref().map(|u| format!("actor#{u}")),
        filter.target_user_id.as_ref().map(|u| format!("target#{u}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    match given.as_slice() {
        [] => Some("ALL".to_owned()),
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Every counter `entry` adds one to.
fn counters_of(entry: &AuditEntry) -> Vec<(String, String)> {
    let pk = partition(&entry.org_id);
    let status = match entry.status {
        super::AuditStatus::Success => "success",
        super::AuditStatus::Failure => "failure",
    };
    let mut sks = vec!["ALL".to_owned(), format!("action#{}", entry.action), format!("status#{status}")];
    sks.extend(entry.actor_user_id.as_ref().map(|u| format!("actor#{u}")));
    sks.extend(entry.target_user_id.as_ref().map(|u| format!("target#{u}")));
    sks.into_iter().map(|sk| (pk.clone(), sk)).collect()
}

#[derive(Deserialize)]
struct Counter {
    #[serde(default)]
    entries: u64,
}

/// The value of one counter (0 when nothing was counted yet).
pub async fn read(table: &Table, org_id: &str, counter: &str) -> Result<u64, StoreError> {
    let found: Option<Counter> = table.get(&partition(org_id), counter).await?;
    Ok(found.map_or(0, |c| c.entries))
}

/// Counts `entries` (each with the stream sequence number it came in), and answers the
/// sequence numbers of those that could not be counted now; the stream redelivers them.
pub async fn count<'a>(table: &Table, entries: Vec<(&'a str, AuditEntry)>) -> Vec<&'a str> {
    let mut uncounted = Vec::new();
    let mut rest = entries.into_iter().peekable();
    while rest.peek().is_some() {
        // As many entries as fit one transaction beside the counters they add to.
        let mut chunk = Vec::new();
        let mut counters = std::collections::BTreeSet::new();
        while let Some((_, next)) = rest.peek() {
            let keys = counters_of(next);
            let new = keys.iter().filter(|&k| !counters.contains(k)).count();
            if !chunk.is_empty() && chunk.len() + 1 + counters.len() + new > MAX_TRANSACTION_ITEMS {
                break;
            }
            counters.extend(keys);
            chunk.push(rest.next().expect("peeked"));
        }
        if let Err(error) = count_chunk(table, &mut chunk).await {
            tracing::error!(%error, entries = chunk.len(), "audit entries not counted; reported for retry");
            uncounted.extend(chunk.iter().map(|(sequence, _)| *sequence));
        }
    }
    uncounted
}

/// One transaction: mark each entry counted (unless it was) and add to its counters. An entry
/// found already counted (or gone) leaves the chunk, and the rest is tried again.
async fn count_chunk(table: &Table, chunk: &mut Vec<(&str, AuditEntry)>) -> Result<(), StoreError> {
    for _ in 0..ROUNDS {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut adds: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (_, entry) in chunk.iter() {
            for key in counters_of(entry) {
                *adds.entry(key).or_default() += 1;
            }
        }
        let mut items = Vec::with_capacity(chunk.len() + adds.len());
        for (_, entry) in chunk.iter() {
            items.push(
                table.update(
                    Change::new(&entry.pk, &entry.sk)
                        .update("SET counted = :yes")
                        .condition("attribute_exists(PK) AND attribute_not_exists(counted)")
                        .value(":yes", av::b(true)),
                )?,
            );
        }
        for ((pk, sk), n) in &adds {
            items.push(table.update(Change::new(pk, sk).update("ADD entries :n").value(":n", av::n(*n)))?);
        }
        match table.transact(items).await {
            Ok(()) => return Ok(()),
            Err(StoreError::TransactionConditionsFailed(positions)) => {
                // Marks come first, so these positions are entries counted before (a
                // redelivery) or no longer there.
                let mut position = 0;
                chunk.retain(|_| {
                    let keep = !positions.contains(&position);
                    position += 1;
                    keep
                });
            }
            Err(other) => return Err(other),
        }
    }
    Err(StoreError::Dynamo("entries kept turning out counted; giving the rest back".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditStatus, caller::RequestMeta};

    fn filter(pairs: &[(&str, &str)]) -> AuditFilter {
        let query = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        AuditFilter::parse(&query).unwrap()
    }

    #[test]
    fn totals_come_from_a_counter_only_for_one_key_and_no_time_range() {
        assert_eq!(counter_for(&filter(&[])).as_deref(), Some("ALL"));
        assert_eq!(counter_for(&filter(&[("action", "auth.login")])).as_deref(), Some("action#auth.login"));
        assert_eq!(counter_for(&filter(&[("status", "failure")])).as_deref(), Some("status#failure"));
        assert_eq!(counter_for(&filter(&[("actor_user_id", "u1")])).as_deref(), Some("actor#u1"));
        assert_eq!(counter_for(&filter(&[("target_user_id", "u2")])).as_deref(), Some("target#u2"));
        assert_eq!(counter_for(&filter(&[("action", "a"), ("status", "success")])), None);
        assert_eq!(counter_for(&filter(&[("since", "2026-01-01T00:00:00Z")])), None);
    }

    #[test]
    fn an_entry_adds_to_its_org_action_status_actor_and_target() {
        let meta = RequestMeta::default();
        let entry = AuditEntry::new("auth.login", AuditStatus::Failure, "o1", &meta).actor("u1").target("u2");
        let sks: Vec<String> = counters_of(&entry).into_iter().map(|(pk, sk)| format!("{pk}/{sk}")).collect();
        assert_eq!(
            sks,
            [
                "AUDITCOUNT#o1/ALL",
                "AUDITCOUNT#o1/action#auth.login",
                "AUDITCOUNT#o1/status#failure",
                "AUDITCOUNT#o1/actor#u1",
                "AUDITCOUNT#o1/target#u2"
            ]
        );
    }
}
