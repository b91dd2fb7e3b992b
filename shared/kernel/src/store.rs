//! The single DynamoDB table: key builders, item (de)serialisation and the conditional and
//! transactional write helpers the domain modules use to let the database decide races.
//!
//! Layout (all keys are strings, `PK`/`SK`; `ttl` is epoch seconds with TTL enabled):
//!
//! | item                | PK                   | SK                   |
//! |---------------------|----------------------|----------------------|
//! | user                | `USER#{user_id}`     | `PROFILE`            |
//! | email guard         | `EMAIL#{email}`      | `EMAIL`              |
//! | organisation        | `ORG#{org_id}`       | `ORG`                |
//! | membership          | `ORG#{org_id}`       | `MEMBER#{user_id}`   |
//! | one-time token      | `TOKEN#{sha256}`     | `TOKEN`              |
//! | audit entry         | `AUDIT#{org_id}`     | `{at}#{audit_id}`    |
//!
//! Later modules add sessions, payments, providers, webhook events, idempotency records and
//! rate-limit counters under their own prefixes (see DESIGN.md).
//!
//! Every item written with a `ttl` also gets an [`expiry`] shard, which puts it on the sparse
//! index the scheduled cleanup sweeps: TTL deletion can lag by days (and DynamoDB Local never
//! deletes), and the sweep must find what has expired without a Scan.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    Client,
    error::{DisplayErrorContext, SdkError},
    types::{AttributeValue, ConditionCheck, Delete, Put, ReturnValue, TransactWriteItem, Update},
};
use serde::{Serialize, de::DeserializeOwned};

pub type Item = HashMap<String, AttributeValue>;

/// Attribute value shorthands for expression values.
pub mod av {
    use aws_sdk_dynamodb::types::AttributeValue;

    pub fn s(value: impl Into<String>) -> AttributeValue {
        AttributeValue::S(value.into())
    }
    pub fn n(value: impl std::fmt::Display) -> AttributeValue {
        AttributeValue::N(value.to_string())
    }
    pub fn b(value: bool) -> AttributeValue {
        AttributeValue::Bool(value)
    }
}

/// The sparse `ByExpiry` index (partition `expiry_shard`, sort `ttl`, keys only) over every
/// item that has a `ttl`. Items spread over [`SHARDS`] partitions by a hash of their `PK`, so
/// no index partition takes more than its share of writes, and an item keeps its shard
/// when rewritten. An item's index entry is written when it is created or its `ttl` moves;
/// repeated updates that leave both alone (a rate-limit counter's hits) cost the index nothing.
pub mod expiry {
    use sha2::{Digest, Sha256};

    pub const INDEX: &str = "ByExpiry";
    pub const ATTRIBUTE: &str = "expiry_shard";
    pub const SHARDS: u8 = 16;

    /// The shard of the item with partition key `pk`.
    pub fn shard_of(pk: &str) -> String {
        format!("EXPIRY#{}", Sha256::digest(pk.as_bytes())[0] % SHARDS)
    }

    /// Every shard, to sweep them all.
    pub fn shards() -> impl Iterator<Item = String> {
        (0..SHARDS).map(|n| format!("EXPIRY#{n}"))
    }
}

/// `item` as DynamoDB attributes, with its expiry shard when it has a `ttl`.
pub fn to_item(item: &impl Serialize) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(item)?;
    if item.contains_key("ttl")
        && let Some(AttributeValue::S(pk)) = item.get("PK")
    {
        let shard = expiry::shard_of(pk);
        item.insert(expiry::ATTRIBUTE.to_owned(), AttributeValue::S(shard));
    }
    Ok(item)
}

/// An update or delete: the key, the expressions and their values.
#[derive(Debug, Clone, Default)]
pub struct Change<'a> {
    pub pk: &'a str,
    pub sk: &'a str,
    /// `SET ...`/`REMOVE ...`/`ADD ...`; ignored for deletes.
    pub update: &'a str,
    pub condition: Option<&'a str>,
    pub values: Vec<(&'a str, AttributeValue)>,
    /// `#placeholder` → attribute name, for reserved words such as `ttl`.
    pub names: Vec<(&'a str, &'a str)>,
}

impl<'a> Change<'a> {
    pub fn new(pk: &'a str, sk: &'a str) -> Self {
        Self { pk, sk, ..Default::default() }
    }
    pub fn update(mut self, expression: &'a str) -> Self {
        self.update = expression;
        self
    }
    pub fn condition(mut self, expression: &'a str) -> Self {
        self.condition = Some(expression);
        self
    }
    pub fn value(mut self, name: &'a str, value: AttributeValue) -> Self {
        self.values.push((name, value));
        self
    }
    pub fn name(mut self, placeholder: &'a str, attribute: &'a str) -> Self {
        self.names.push((placeholder, attribute));
        self
    }
    fn names_map(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }
    fn values_map(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }
}

pub mod keys {
    pub const PROFILE: &str = "PROFILE";
    pub const EMAIL: &str = "EMAIL";
    pub const ORG: &str = "ORG";
    pub const TOKEN: &str = "TOKEN";

    pub fn user(user_id: &str) -> String {
        format!("USER#{user_id}")
    }
    pub fn email(email: &str) -> String {
        format!("EMAIL#{email}")
    }
    pub fn org(org_id: &str) -> String {
        format!("ORG#{org_id}")
    }
    pub fn member(user_id: &str) -> String {
        format!("MEMBER#{user_id}")
    }
    pub fn token(token_hash: &str) -> String {
        format!("TOKEN#{token_hash}")
    }
    pub fn audit(org_id: &str) -> String {
        format!("AUDIT#{org_id}")
    }
    /// The payments a user paid (`GSI3PK`) and those paid to a provider they own (`GSI4PK`).
    pub fn payer_history(user_id: &str) -> String {
        format!("PAYER#{user_id}")
    }
    pub fn payee_history(user_id: &str) -> String {
        format!("PAYEE#{user_id}")
    }
    /// A payment's sort key on both histories: created (RFC 3339, fixed width), then its id.
    pub fn history_at(created_at: &str, payment_id: &str) -> String {
        format!("{created_at}#{payment_id}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A condition of a single write failed.
    #[error("conditional check failed")]
    ConditionFailed,
    /// A transaction was cancelled because the conditions at these positions failed.
    #[error("transaction cancelled: conditions failed at {0:?}")]
    TransactionConditionsFailed(Vec<usize>),
    #[error("item could not be (de)serialised: {0}")]
    Serde(#[from] serde_dynamo::Error),
    #[error("dynamodb: {0}")]
    Dynamo(String),
    /// A sealed attribute could not be sealed or opened (no key, a retired key, altered).
    #[error("sealed value: {0}")]
    Seal(#[from] crate::seal::CipherError),
}

/// Any SDK call's error, with its context, as a store error.
pub fn dynamo_error<E, R>(error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Dynamo(DisplayErrorContext(&error).to_string())
}

/// A single conditional write's result: its failed condition as [`StoreError::ConditionFailed`],
/// any other error with its context.
fn conditional<T, E, R>(result: Result<T, SdkError<E, R>>) -> Result<T, StoreError>
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    result.map_err(|error| match error.as_service_error().and_then(|e| e.code()) {
        Some("ConditionalCheckFailedException") => StoreError::ConditionFailed,
        _ => dynamo_error(error),
    })
}

/// How many times a transaction that lost only to a concurrent transaction is retried.
/// Such conflicts are transient: the retry sees the winner's write and fails or succeeds
/// on its conditions alone.
const TRANSACTION_CONFLICT_RETRIES: u32 = 8;

/// A filter for [`Table::payments_of_party_where`]: of released payments, the ones with money
/// that came back after the release, not yet settled (see `payments::unsettled`).
pub const UNSETTLED_FILTER: &str = "attribute_exists(unsettled_refunds)";

#[derive(Clone, Debug)]
pub struct Table {
    client: Client,
    name: String,
}

impl Table {
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self { client, name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A `Put` of `item` for use in a transaction, optionally under a condition.
    pub fn put(&self, item: &impl Serialize, condition: Option<&str>) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.name)
            .set_item(Some(to_item(item)?))
            .set_condition_expression(condition.map(str::to_owned))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// A `Put` under `condition`, with the condition's `:values`.
    pub fn put_if(
        &self,
        item: &impl Serialize,
        condition: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.name)
            .set_item(Some(to_item(item)?))
            .condition_expression(condition)
            .set_expression_attribute_values(
                (!values.is_empty()).then(|| values.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()),
            )
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// A `Put` that only succeeds when no item with the same key exists yet.
    pub fn put_new(&self, item: &impl Serialize) -> Result<TransactWriteItem, StoreError> {
        self.put(item, Some("attribute_not_exists(PK)"))
    }

    /// A plain, unconditional put outside a transaction.
    pub async fn put_item(&self, item: &impl Serialize) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(to_item(item)?))
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(())
    }

    /// A single conditional put outside a transaction; `ConditionFailed` when the condition
    /// does not hold.
    pub async fn put_item_if(
        &self,
        item: &impl Serialize,
        condition: &str,
        names: &[(&str, &str)],
        values: &[(&str, AttributeValue)],
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(to_item(item)?))
            .condition_expression(condition)
            .set_expression_attribute_names(
                (!names.is_empty()).then(|| names.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            )
            .set_expression_attribute_values(
                (!values.is_empty()).then(|| values.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()),
            )
            .send()
            .await;
        conditional(result).map(|_| ())
    }

    /// A conditional update for use in a transaction.
    pub fn update(&self, change: Change<'_>) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.name)
            .key("PK", av::s(change.pk))
            .key("SK", av::s(change.sk))
            .update_expression(change.update)
            .set_condition_expression(change.condition.map(str::to_owned))
            .set_expression_attribute_values(change.values_map())
            .set_expression_attribute_names(change.names_map())
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Every item `query` finds, page after page, as `T`. For queries whose result is small
    /// by design (an org's members, its pending invitations).
    pub async fn query_all<T: DeserializeOwned>(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<T>, StoreError> {
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let out = query.clone().set_exclusive_start_key(start).send().await.map_err(dynamo_error)?;
            for item in out.items.unwrap_or_default() {
                found.push(serde_dynamo::from_item(item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(found),
            }
        }
    }

    /// A condition on an item the transaction does not change (it fails the transaction if
    /// the item no longer satisfies it).
    pub fn check(&self, change: Change<'_>) -> Result<TransactWriteItem, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(&self.name)
            .key("PK", av::s(change.pk))
            .key("SK", av::s(change.sk))
            .set_condition_expression(change.condition.map(str::to_owned))
            .set_expression_attribute_values(change.values_map())
            .set_expression_attribute_names(change.names_map())
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// A (conditional) delete for use in a transaction.
    pub fn delete(&self, change: Change<'_>) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.name)
            .key("PK", av::s(change.pk))
            .key("SK", av::s(change.sk))
            .set_condition_expression(change.condition.map(str::to_owned))
            .set_expression_attribute_values(change.values_map())
            .set_expression_attribute_names(change.names_map())
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// A single conditional update, outside a transaction; returns the item as it is after.
    pub async fn update_item(&self, change: Change<'_>) -> Result<Item, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.name)
            .key("PK", av::s(change.pk))
            .key("SK", av::s(change.sk))
            .update_expression(change.update)
            .set_condition_expression(change.condition.map(str::to_owned))
            .set_expression_attribute_values(change.values_map())
            .set_expression_attribute_names(change.names_map())
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        conditional(result).map(|out| out.attributes.unwrap_or_default())
    }

    /// Takes a queued work item for a while: its `GSI2SK` (when it is next due) moved to
    /// `until`, if it is still on `queue` and was due before `before`, so that overlapping
    /// runs take it once. The item as it is now; `None` when another run has it, or it is no
    /// longer due.
    pub async fn lease_queued<T: DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
        queue: &str,
        before: &str,
        until: &str,
    ) -> Result<Option<T>, StoreError> {
        let lease = Change::new(pk, sk)
            .update("SET GSI2SK = :until")
            .condition("GSI2PK = :queue AND GSI2SK < :before")
            .value(":until", av::s(until))
            .value(":queue", av::s(queue))
            .value(":before", av::s(before));
        match self.update_item(lease).await {
            Ok(item) => serde_dynamo::from_item(item).map(Some).map_err(StoreError::from),
            Err(StoreError::ConditionFailed) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// The key (`PK`, `SK`) of the item whose `GSI1PK` is `key` (an external id's lookup: a
    /// PaymentIntent, a connected account, a subscription).
    pub async fn find_by_gsi1(&self, key: &str) -> Result<Option<(String, String)>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.name)
            .index_name("GSI1")
            .key_condition_expression("GSI1PK = :k")
            .expression_attribute_values(":k", av::s(key))
            .limit(1)
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(out.items.unwrap_or_default().into_iter().next().and_then(|item| match (item.get("PK"), item.get("SK")) {
            (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => Some((pk.clone(), sk.clone())),
            _ => None,
        }))
    }

    /// A single conditional delete, outside a transaction; `ConditionFailed` when the
    /// condition does not hold (or, for a condition on an attribute, the item is gone).
    pub async fn delete_item(&self, change: Change<'_>) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.name)
            .key("PK", av::s(change.pk))
            .key("SK", av::s(change.sk))
            .set_condition_expression(change.condition.map(str::to_owned))
            .set_expression_attribute_values(change.values_map())
            .set_expression_attribute_names(change.names_map())
            .send()
            .await;
        conditional(result).map(|_| ())
    }

    /// Partition keys on a sparse `GSI2` work queue whose `GSI2SK` (when last driven) is
    /// before `cutoff`, oldest first.
    pub async fn queue_due(&self, queue: &str, cutoff: &str, limit: i32) -> Result<Vec<String>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.name)
            .index_name("GSI2")
            .key_condition_expression("GSI2PK = :queue AND GSI2SK < :cutoff")
            .expression_attribute_values(":queue", av::s(queue))
            .expression_attribute_values(":cutoff", av::s(cutoff))
            .limit(limit)
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(out.items().iter().filter_map(|item| item.get("PK").and_then(|pk| pk.as_s().ok()).cloned()).collect())
    }

    /// The keys (`PAYMENT#...`) of payments `user_id` is the payer or the provider's owner
    /// of with a `status` in `statuses`: their two payment histories (GSI3, GSI4), every page.
    pub async fn payments_of_party(&self, user_id: &str, statuses: &[&str]) -> Result<Vec<String>, StoreError> {
        self.payments_of_party_where(user_id, statuses, None).await
    }

    /// As [`Self::payments_of_party`], of those only the ones `also` (a filter condition on the
    /// payment's own attributes, no placeholders) holds for.
    pub async fn payments_of_party_where(
        &self,
        user_id: &str,
        statuses: &[&str],
        also: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut found = Vec::new();
        for (index, key) in [("GSI3", keys::payer_history(user_id)), ("GSI4", keys::payee_history(user_id))] {
            let wanted: Vec<String> = (0..statuses.len()).map(|n| format!(":s{n}")).collect();
            let mut start = None;
            loop {
                let mut query = self
                    .client
                    .query()
                    .table_name(&self.name)
                    .index_name(index)
                    .key_condition_expression(format!("{index}PK = :key"))
                    .filter_expression(match also {
                        Some(also) => format!("#status IN ({}) AND ({also})", wanted.join(", ")),
                        None => format!("#status IN ({})", wanted.join(", ")),
                    })
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":key", av::s(&key))
                    .projection_expression("PK");
                for (placeholder, status) in wanted.iter().zip(statuses) {
                    query = query.expression_attribute_values(placeholder, av::s(*status));
                }
                let page = query.set_exclusive_start_key(start).send().await.map_err(dynamo_error)?;
                found.extend(
                    page.items().iter().filter_map(|item| item.get("PK").and_then(|pk| pk.as_s().ok()).cloned()),
                );
                match page.last_evaluated_key {
                    Some(next) => start = Some(next),
                    None => break,
                }
            }
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    pub async fn get<T: DeserializeOwned>(&self, pk: &str, sk: &str) -> Result<Option<T>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .key("PK", AttributeValue::S(pk.to_owned()))
            .key("SK", AttributeValue::S(sk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        out.item.map(serde_dynamo::from_item).transpose().map_err(StoreError::from)
    }

    /// Writes `items` all or nothing; a failed condition answers `on_condition` (the caller's
    /// meaning of losing the race), anything else is an internal error.
    pub async fn transact_or<E: From<StoreError>>(
        &self,
        items: Vec<TransactWriteItem>,
        on_condition: E,
    ) -> Result<(), E> {
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(StoreError::TransactionConditionsFailed(_)) => Err(on_condition),
            Err(other) => Err(other.into()),
        }
    }

    /// Writes `items` all or nothing. Fails with the positions of the failed conditions.
    pub async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            let result = self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await;
            let error = match result {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            let reasons: Vec<String> = match error.as_service_error() {
                Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(e)) => e
                    .cancellation_reasons()
                    .iter()
                    .map(|r| r.code().unwrap_or("None").to_owned())
                    .collect(),
                _ => return Err(dynamo_error(error)),
            };
            let failed: Vec<usize> = reasons
                .iter()
                .enumerate()
                .filter(|(_, code)| code.as_str() == "ConditionalCheckFailed")
                .map(|(i, _)| i)
                .collect();
            if !failed.is_empty() {
                return Err(StoreError::TransactionConditionsFailed(failed));
            }
            let conflicted = reasons.iter().any(|c| c == "TransactionConflict" || c == "ThrottlingError");
            if conflicted && attempt < TRANSACTION_CONFLICT_RETRIES {
                attempt += 1;
                let jitter = rand::random::<u64>() % 20;
                tokio::time::sleep(std::time::Duration::from_millis(10 * u64::from(attempt) + jitter)).await;
                continue;
            }
            return Err(StoreError::Dynamo(format!("transaction cancelled: {reasons:?}")));
        }
    }
}
