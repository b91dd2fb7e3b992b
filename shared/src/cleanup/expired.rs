//! Expired items that TTL has not removed yet: one-time tokens (verification, reset,
//! invitations), refresh sessions, idempotency records, rate-limit and lockout counters,
//! delivered outbox and delivery records, webhook event memory. Reads already treat them as
//! gone; removing them keeps the table (and an erasure request's answer) honest. They are
//! found on the sparse `ByExpiry` index (never a Scan) and each is deleted only if its `ttl`
//! is still past, so an item rewritten with a later expiry after the index was read stays.

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::{StreamExt, stream};
use rand::Rng;

use crate::store::{Change, Item, StoreError, Table, av, expiry};

/// Keys read from the index per Query.
const PAGE: i32 = 100;
/// Deletes in flight at once.
const CONCURRENT_DELETES: usize = 16;

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Deleted by this sweep.
    pub removed: u32,
    /// Gone already, or given a later expiry since the index was read.
    pub kept: u32,
    /// Deletes (or listings) that failed; the next run finds them again.
    pub failed: u32,
    /// Stopped for the deadline with shards left.
    pub stopped_early: bool,
}

/// Removes what expired before `now` (epoch seconds), shard by shard, until done or
/// `out_of_time`. Shards are taken from a random one on, so a backlog too big for one run
/// does not starve the same shards every hour.
pub async fn sweep(table: &Table, now: i64, out_of_time: impl Fn() -> bool) -> Swept {
    let mut swept = Swept::default();
    let shards: Vec<String> = expiry::shards().collect();
    let first = rand::rng().random_range(0..shards.len());
    for shard in shards[first..].iter().chain(&shards[..first]) {
        let mut start: Option<Item> = None;
        loop {
            if out_of_time() {
                swept.stopped_early = true;
                return swept;
            }
            let page = table
                .client()
                .query()
                .table_name(table.name())
                .index_name(expiry::INDEX)
                .key_condition_expression("#shard = :shard AND #ttl < :now")
                .expression_attribute_names("#shard", expiry::ATTRIBUTE)
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":shard", av::s(shard))
                .expression_attribute_values(":now", av::n(now))
                .limit(PAGE)
                .set_exclusive_start_key(start.take())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    let error = crate::store::dynamo_error(error);
                    tracing::error!(%error, shard, "cannot list expired items; the next run retries");
                    swept.failed += 1;
                    break;
                }
            };
            let keys: Vec<(String, String)> = page.items().iter().filter_map(key_of).collect();
            let outcomes: Vec<Result<(), StoreError>> = stream::iter(keys)
                .map(|(pk, sk)| async move { remove_if_expired(table, &pk, &sk, now).await })
                .buffer_unordered(CONCURRENT_DELETES)
                .collect()
                .await;
            for outcome in outcomes {
                match outcome {
                    Ok(()) => swept.removed += 1,
                    Err(StoreError::ConditionFailed) => swept.kept += 1,
                    Err(error) => {
                        tracing::warn!(%error, "expired item not removed; the next run retries");
                        swept.failed += 1;
                    }
                }
            }
            match page.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
    }
    swept
}

fn key_of(item: &Item) -> Option<(String, String)> {
    match (item.get("PK"), item.get("SK")) {
        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => Some((pk.clone(), sk.clone())),
        _ => None,
    }
}

async fn remove_if_expired(table: &Table, pk: &str, sk: &str, now: i64) -> Result<(), StoreError> {
    table.delete_item(Change::new(pk, sk).condition("#ttl < :now").name("#ttl", "ttl").value(":now", av::n(now))).await
}
