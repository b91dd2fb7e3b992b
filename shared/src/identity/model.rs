//! Identity items as stored in the table. Each carries its own `PK`/`SK` so that
//! `serde_dynamo` maps it to an item one-to-one.

use serde::{Deserialize, Serialize};

use crate::store::keys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Viewer => "viewer",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub user_id: String,
    pub email: String,
    pub password_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    pub org_id: String,
    pub role: Role,
    pub email_verified: bool,
    /// Hash of the newest verification token: older tokens stop working when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_token_hash: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_scheduled_at: Option<String>,
}

impl User {
    pub fn key(user_id: &str) -> (String, String) {
        (keys::user(user_id), keys::PROFILE.to_owned())
    }
}

/// Holds an email address for exactly one user; written with `attribute_not_exists`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmailGuard {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub user_id: String,
}

impl EmailGuard {
    pub fn new(email: &str, user_id: &str) -> Self {
        Self { pk: keys::email(email), sk: keys::EMAIL.to_owned(), user_id: user_id.to_owned() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Org {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub org_id: String,
    pub name: String,
    /// Kept in step with memberships inside the same transactions, so that "an org always
    /// keeps an admin" is a condition on this number rather than a read-then-write.
    pub admin_count: u32,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Membership {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub org_id: String,
    pub user_id: String,
    pub role: Role,
    pub joined_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    VerifyEmail,
    ResetPassword,
    Invitation,
}

/// A single-use token, keyed by the SHA-256 of its value. `ttl` lets DynamoDB drop it;
/// `expires_at` is what reads check, since TTL deletion can lag by hours.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OneTimeToken {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub kind: TokenKind,
    /// The user the token acts for (verification, reset) or who issued it (invitation).
    pub user_id: String,
    /// Invitations only: where the invitee lands, and the address it was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub expires_at: String,
    pub ttl: i64,
    pub created_at: String,
}

/// Marks an invitation used: fails (as a transaction condition) if it already was, or has
/// expired, so one invitation admits exactly one user.
pub(crate) fn consume_invitation(
    table: &crate::store::Table,
    token_pk: &str,
    now: &str,
) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, crate::store::StoreError> {
    use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
    let update = Update::builder()
        .table_name(table.name())
        .key("PK", AttributeValue::S(token_pk.to_owned()))
        .key("SK", AttributeValue::S(keys::TOKEN.to_owned()))
        .update_expression("SET used_at = :now")
        .condition_expression("attribute_exists(PK) AND attribute_not_exists(used_at) AND expires_at > :now")
        .expression_attribute_values(":now", AttributeValue::S(now.to_owned()))
        .build()
        .map_err(|e| crate::store::StoreError::Dynamo(e.to_string()))?;
    Ok(TransactWriteItem::builder().update(update).build())
}

/// Adds `delta` to an org's admin count; a decrement is conditional on another admin
/// remaining.
pub(crate) fn adjust_admin_count(
    table: &crate::store::Table,
    org_id: &str,
    delta: i32,
) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, crate::store::StoreError> {
    use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
    let mut update = Update::builder()
        .table_name(table.name())
        .key("PK", AttributeValue::S(keys::org(org_id)))
        .key("SK", AttributeValue::S(keys::ORG.to_owned()))
        .update_expression("ADD admin_count :delta")
        .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()));
    update = if delta < 0 {
        update
            .condition_expression("attribute_exists(PK) AND admin_count > :one")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
    } else {
        update.condition_expression("attribute_exists(PK)")
    };
    let update = update.build().map_err(|e| crate::store::StoreError::Dynamo(e.to_string()))?;
    Ok(TransactWriteItem::builder().update(update).build())
}
