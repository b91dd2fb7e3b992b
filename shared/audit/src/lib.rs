//! The audit log: one writer for every sensitive action.
//!
//! Entries keep ids, never personal data such as email addresses or names, so erasing a
//! user never means rewriting the log. Where the action is itself a DynamoDB write, callers
//! put [`AuditLog::put`] into the same transaction, so the action and its record commit
//! together or not at all.
//!
//! Item: `PK = AUDIT#{org_id}`, `SK = {at}#{audit_id}` (newest first with a reverse Query).
//! The `audit_actor`, `audit_target` and `audit_action` attributes are the partition keys of
//! the audit GSIs, which share `SK` as their sort key.

pub mod filter;
pub mod query;
pub mod totals;

pub use filter::AuditFilter;

use aws_sdk_dynamodb::types::TransactWriteItem;
use serde::{Deserialize, Serialize};

// The kernel's modules, at the paths this code names them by.
use kernel::{caller, cursor, invalid, seal, services, store, time};

use crate::{
    caller::RequestMeta,
    store::{StoreError, Table, keys},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditStatus {
    Success,
    Failure,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub id: String,
    pub at: String,
    pub action: String,
    pub status: AuditStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_user_id: Option<String>,
    pub org_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub request_id: String,
    /// The caller's own request id, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    pub details: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_target: Option<String>,
    pub audit_action: String,
    pub audit_status: String,
}

impl AuditEntry {
    pub fn new(action: &str, status: AuditStatus, org_id: &str, meta: &RequestMeta) -> Self {
        let at = crate::time::rfc3339(crate::time::now());
        let id = uuid::Uuid::now_v7().to_string();
        Self {
            pk: keys::audit(org_id),
            sk: format!("{at}#{id}"),
            id,
            at,
            action: action.to_owned(),
            status,
            actor_user_id: None,
            target_user_id: None,
            org_id: org_id.to_owned(),
            ip: meta.source_ip.clone(),
            user_agent: meta.user_agent.clone(),
            request_id: meta.request_id.clone(),
            client_request_id: meta.client_request_id.clone(),
            details: serde_json::Value::Object(Default::default()),
            audit_actor: None,
            audit_target: None,
            audit_action: format!("{org_id}#{action}"),
            audit_status: format!(
                "{org_id}#{}",
                match status {
                    AuditStatus::Success => "success",
                    AuditStatus::Failure => "failure",
                }
            ),
        }
    }

    pub fn actor(mut self, user_id: &str) -> Self {
        self.audit_actor = Some(format!("{}#{user_id}", self.org_id));
        self.actor_user_id = Some(user_id.to_owned());
        self
    }

    /// The actor, when there is one (a reconciler or Stripe acts for nobody).
    pub fn actor_if(self, user_id: Option<&str>) -> Self {
        match user_id {
            Some(user_id) => self.actor(user_id),
            None => self,
        }
    }

    pub fn target(mut self, user_id: &str) -> Self {
        self.audit_target = Some(format!("{}#{user_id}", self.org_id));
        self.target_user_id = Some(user_id.to_owned());
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

#[derive(Clone, Debug)]
pub struct AuditLog {
    table: Table,
}

/// The audit log of a platform's table: `app.audit()` wherever this trait is in scope.
pub trait Audit {
    fn audit(&self) -> AuditLog;
}

impl Audit for crate::services::Services {
    fn audit(&self) -> AuditLog {
        AuditLog::new(self.table().clone())
    }
}

impl AuditLog {
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// The entry as a transaction item, to commit with the action it records.
    pub fn put(&self, entry: &AuditEntry) -> Result<TransactWriteItem, StoreError> {
        self.table.put(entry, None)
    }

    /// Records an entry on its own, for actions that are not themselves a table write
    /// (failures, external calls).
    pub async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.table.put_item(entry).await
    }

    /// Like [`record`](Self::record) but never fails the request: used on paths that are
    /// already answering with an error.
    pub async fn record_or_log(&self, entry: &AuditEntry) {
        if let Err(error) = self.record(entry).await {
            tracing::error!(%error, action = %entry.action, "audit entry could not be written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_sort_by_time_and_carry_index_keys() {
        let meta = RequestMeta { request_id: "r1".into(), ..Default::default() };
        let a = AuditEntry::new("auth.register", AuditStatus::Success, "org1", &meta).actor("u1").target("u2");
        let b = AuditEntry::new("auth.register", AuditStatus::Success, "org1", &meta);
        assert!(a.sk < b.sk);
        assert_eq!(a.pk, "AUDIT#org1");
        assert_eq!(a.audit_actor.as_deref(), Some("org1#u1"));
        assert_eq!(a.audit_target.as_deref(), Some("org1#u2"));
        assert_eq!(a.audit_action, "org1#auth.register");
        let item =
            serde_dynamo::to_item::<_, std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>(&a)
                .unwrap();
        assert!(item.contains_key("PK") && item.contains_key("SK"));
    }
}
