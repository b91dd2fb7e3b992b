//! Identity items as stored in the table. Each carries its own `PK`/`SK` so that
//! `serde_dynamo` maps it to an item one-to-one.

use serde::{Deserialize, Serialize};

use aws_sdk_dynamodb::types::TransactWriteItem;

use crate::store::{Change, StoreError, Table, av, keys};

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
    /// Hash of the newest password-reset token, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_token_hash: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_scheduled_at: Option<String>,
    /// Every access and refresh token carries the version it was issued under; bumping it
    /// (password reset, deletion) ends every session of the user at once.
    #[serde(default)]
    pub session_version: u32,
    /// Created on the user's first payment or subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_customer_id: Option<String>,
    /// Whether logins need a second factor; the factor itself is the `MFA` item
    /// ([`super::mfa`]), changed in the same transactions as this flag.
    #[serde(default)]
    pub mfa_enabled: bool,
    /// E.164; SMS go to it only once `phone_verified` (a code sent to it came back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default)]
    pub phone_verified: bool,
}

impl User {
    pub fn key(user_id: &str) -> (String, String) {
        (keys::user(user_id), keys::PROFILE.to_owned())
    }

    pub async fn find(table: &Table, user_id: &str) -> Result<Option<User>, StoreError> {
        let (pk, sk) = Self::key(user_id);
        table.get(&pk, &sk).await
    }

    /// The user an address belongs to, through its email guard.
    pub async fn find_by_email(table: &Table, email: &str) -> Result<Option<User>, StoreError> {
        match table.get::<EmailGuard>(&keys::email(email), keys::EMAIL).await? {
            Some(guard) => Self::find(table, &guard.user_id).await,
            None => Ok(None),
        }
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
    /// The second step of a login with MFA on: proves the password was right.
    MfaLogin,
    /// The link in the "two-step verification is on" email: turns that factor off again,
    /// for an owner who did not turn it on.
    FactorRevoke,
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
    /// Invitations only: the id admins list and revoke it by, and its place in the org's
    /// list of pending invitations (`GSI1PK = INVITES#{org}`, removed when it is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation_id: Option<String>,
    #[serde(rename = "GSI1PK", default, skip_serializing_if = "Option::is_none")]
    pub gsi1pk: Option<String>,
    #[serde(rename = "GSI1SK", default, skip_serializing_if = "Option::is_none")]
    pub gsi1sk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<String>,
    /// MFA logins only: codes tried with this token, and the sessions generation it was
    /// issued under (a password reset meanwhile voids it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_version: Option<u32>,
    /// Factor revocations only: when the factor it revokes was confirmed, so the link of an
    /// earlier enrolment can't remove a later one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor_confirmed_at: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `GSI1PK` of an organisation's pending invitations.
pub fn invitations_index(org_id: &str) -> String {
    format!("INVITES#{org_id}")
}

impl OneTimeToken {
    /// A token of `kind` for `user_id`, valid for `lifetime` from now.
    pub fn new(kind: TokenKind, hash: &super::TokenHash, user_id: &str, lifetime: time::Duration) -> Self {
        let now = crate::time::now();
        let expires = now + lifetime;
        Self {
            pk: keys::token(hash.as_str()),
            sk: keys::TOKEN.to_owned(),
            kind,
            user_id: user_id.to_owned(),
            org_id: None,
            role: None,
            email: None,
            expires_at: crate::time::rfc3339(expires),
            ttl: crate::time::epoch_seconds(expires),
            created_at: crate::time::rfc3339(now),
            invitation_id: None,
            gsi1pk: None,
            gsi1sk: None,
            used_at: None,
            tries: 0,
            session_version: None,
            factor_confirmed_at: None,
        }
    }

    /// The live token of `kind` with this value, and its user; `token_invalid` otherwise.
    pub async fn find_live(
        table: &Table,
        presented: &str,
        kind: TokenKind,
    ) -> Result<(Self, User), crate::identity::AccountError> {
        use crate::identity::AccountError;
        let hash = super::OpaqueToken::from_presented(presented).hash();
        let token = match table.get::<Self>(&keys::token(hash.as_str()), keys::TOKEN).await? {
            Some(token) if token.is_live(kind) => token,
            _ => return Err(AccountError::TokenInvalid),
        };
        let user = User::find(table, &token.user_id).await?.ok_or(AccountError::TokenInvalid)?;
        Ok((token, user))
    }

    /// Deletes this token in a transaction, on condition it still exists unexpired: of
    /// concurrent uses, exactly one commits.
    pub fn consume(&self, table: &Table, now: &str) -> Result<TransactWriteItem, StoreError> {
        table.delete(
            Change::new(&self.pk, keys::TOKEN)
                .condition("attribute_exists(PK) AND expires_at > :now")
                .value(":now", av::s(now)),
        )
    }

    pub fn is_live(&self, kind: TokenKind) -> bool {
        self.kind == kind && crate::time::parse_rfc3339(&self.expires_at).is_some_and(|at| at > crate::time::now())
    }
}

/// Marks an invitation used: fails (as a transaction condition) if it already was, or has
/// expired, so one invitation admits exactly one user.
pub(crate) fn consume_invitation(table: &Table, token_pk: &str, now: &str) -> Result<TransactWriteItem, StoreError> {
    table.update(
        Change::new(token_pk, keys::TOKEN)
            .update("SET used_at = :now REMOVE GSI1PK, GSI1SK")
            .condition("attribute_exists(PK) AND attribute_not_exists(used_at) AND expires_at > :now")
            .value(":now", av::s(now)),
    )
}

/// Adds `delta` to an org's admin count; a decrement is conditional on another admin
/// remaining, which is what keeps every org with at least one admin under races.
pub(crate) fn adjust_admin_count(table: &Table, org_id: &str, delta: i32) -> Result<TransactWriteItem, StoreError> {
    let pk = keys::org(org_id);
    let change = Change::new(&pk, keys::ORG).update("ADD admin_count :delta").value(":delta", av::n(delta));
    let change = if delta < 0 {
        change.condition("attribute_exists(PK) AND admin_count > :one").value(":one", av::n(1))
    } else {
        change.condition("attribute_exists(PK)")
    };
    table.update(change)
}
