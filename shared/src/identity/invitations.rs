//! Invitations: sent by an org admin, listed and revoked by any of its admins, and good only
//! while the admin who sent them still is one (active and verified): an admin who is demoted,
//! scheduled for deletion or erased takes their pending invitations with them. Registration
//! checks that in the same transaction that uses the invitation.
//!
//! Item: the token (`TOKEN#{hash}` / `TOKEN`) with `invitation_id`, listed under
//! `GSI1PK = INVITES#{org}` until it is used.

use serde::Serialize;
use serde_json::json;

use super::{Email, Membership, OneTimeToken, OpaqueToken, Org, Role, TokenKind, User, auth::Principal};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::AccountError,
    notify::EmailKind,
    outbox::{self, Message},
    services::Services,
    store::{Change, StoreError, Table, av, keys},
    time,
};

pub const INVITATION_DAYS: i64 = 7;

/// Every membership of `org_id`.
pub(crate) async fn members(table: &Table, org_id: &str) -> Result<Vec<Membership>, StoreError> {
    let query = table
        .client()
        .query()
        .table_name(table.name())
        .key_condition_expression("PK = :pk AND begins_with(SK, :member)")
        .expression_attribute_values(":pk", av::s(keys::org(org_id)))
        .expression_attribute_values(":member", av::s("MEMBER#"))
        .consistent_read(true);
    table.query_all(query).await
}

/// Whether `user` counts as a working admin: verified, and not on the way out.
pub(crate) fn is_active(user: &User) -> bool {
    user.email_verified && user.deletion_scheduled_at.is_none()
}

/// The admins of `org_id` who count (see [`is_active`]), other than `except`.
pub(crate) async fn active_admins(table: &Table, org_id: &str, except: &str) -> Result<Vec<User>, StoreError> {
    let mut active = Vec::new();
    for member in members(table, org_id).await? {
        if member.role != Role::Admin || member.user_id == except {
            continue;
        }
        let (pk, sk) = User::key(&member.user_id);
        if let Some(user) = table.get::<User>(&pk, &sk).await?
            && is_active(&user)
        {
            active.push(user);
        }
    }
    Ok(active)
}

/// Conditions that hold while `user_id` is an active admin of `org_id`: put into a
/// transaction, they fail it if that changed meanwhile.
pub(crate) fn still_active_admin(
    table: &Table,
    org_id: &str,
    user_id: &str,
) -> Result<[aws_sdk_dynamodb::types::TransactWriteItem; 2], StoreError> {
    let (user_pk, user_sk) = User::key(user_id);
    Ok([
        table.check(
            Change::new(&keys::org(org_id), &keys::member(user_id))
                .condition("#role = :admin")
                .name("#role", "role")
                .value(":admin", av::s(Role::Admin.as_str())),
        )?,
        table.check(
            Change::new(&user_pk, &user_sk)
                .condition("email_verified = :yes AND attribute_not_exists(deletion_scheduled_at) AND org_id = :org")
                .value(":yes", av::b(true))
                .value(":org", av::s(org_id)),
        )?,
    ])
}

/// Emails a 7-day, single-use invitation to join the caller's organisation with `role`.
pub async fn invite(
    app: &Services,
    principal: &Principal,
    email: &Email,
    role: Role,
    meta: &RequestMeta,
) -> Result<(), AccountError> {
    principal.require_admin()?;
    let table = app.table();
    let org = table
        .get::<Org>(&keys::org(principal.org_id()), keys::ORG)
        .await
        .map_err(AccountError::internal)?
        .ok_or_else(|| AccountError::internal("the caller's organisation is missing"))?;
    let token = OpaqueToken::generate();
    let hash = token.hash();
    let mut item =
        OneTimeToken::new(TokenKind::Invitation, &hash, principal.user_id(), time::Duration::days(INVITATION_DAYS));
    let invitation_id = uuid::Uuid::new_v4().to_string();
    item.org_id = Some(org.org_id.clone());
    item.role = Some(role);
    item.email = Some(email.as_str().to_owned());
    item.gsi1pk = Some(super::model::invitations_index(&org.org_id));
    item.gsi1sk = Some(format!("{}#{invitation_id}", item.created_at));
    item.invitation_id = Some(invitation_id.clone());
    let audit = AuditEntry::new("org.invitation_sent", AuditStatus::Success, &org.org_id, meta)
        .actor(principal.user_id())
        .details(json!({ "invitation_id": invitation_id, "role": role.as_str(), "expires_at": item.expires_at }));
    let link = format!("{}/accept-invitation?token={}", app.settings().frontend_url, token.expose());
    let invitation = Message::email(
        EmailKind::Invitation,
        email.as_str(),
        json!({ "link": link, "org_name": org.name, "role": role.as_str() }),
    );
    let sealer = app.outbox_sealer().await?;
    let items = vec![table.put_new(&item), app.audit().put(&audit), outbox::put_sealed(table, &sealer, invitation)]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    table.transact(items).await.map_err(AccountError::internal)?;
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct PendingInvitation {
    pub invitation_id: String,
    pub email: String,
    pub role: Role,
    pub invited_by: String,
    pub expires_at: String,
}

/// Every invitation of `org_id` still pending: unused, unexpired, unrevoked, not yet used
/// up, and sent by someone who is still an active admin. Newest first.
async fn pending(table: &Table, org_id: &str) -> Result<Vec<OneTimeToken>, StoreError> {
    let now = time::rfc3339(time::now());
    let query = table
        .client()
        .query()
        .table_name(table.name())
        .index_name("GSI1")
        .key_condition_expression("GSI1PK = :invites")
        .filter_expression("expires_at > :now AND attribute_not_exists(used_at)")
        .expression_attribute_values(":invites", av::s(super::model::invitations_index(org_id)))
        .expression_attribute_values(":now", av::s(&now))
        .scan_index_forward(false);
    let mut found: Vec<OneTimeToken> = table.query_all(query).await?;
    let admins: Vec<String> = active_admins(table, org_id, "").await?.into_iter().map(|u| u.user_id).collect();
    found.retain(|invitation| admins.contains(&invitation.user_id));
    Ok(found)
}

pub async fn list(app: &Services, principal: &Principal) -> Result<Vec<PendingInvitation>, AccountError> {
    principal.require_admin()?;
    let pending = pending(app.table(), principal.org_id()).await?;
    Ok(pending
        .into_iter()
        .filter_map(|i| {
            Some(PendingInvitation {
                invitation_id: i.invitation_id?,
                email: i.email?,
                role: i.role?,
                invited_by: i.user_id,
                expires_at: i.expires_at,
            })
        })
        .collect())
}

/// Revokes a pending invitation of the caller's org: 404 if there is none by that id (or
/// it was used meanwhile).
pub async fn revoke(
    app: &Services,
    principal: &Principal,
    invitation_id: &str,
    meta: &RequestMeta,
) -> Result<(), AccountError> {
    principal.require_admin()?;
    let table = app.table();
    let invitation = pending(table, principal.org_id())
        .await?
        .into_iter()
        .find(|i| i.invitation_id.as_deref() == Some(invitation_id))
        .ok_or(AccountError::NotFound)?;
    let audit = AuditEntry::new("org.invitation_revoked", AuditStatus::Success, principal.org_id(), meta)
        .actor(principal.user_id())
        .details(json!({ "invitation_id": invitation_id, "invited_by": invitation.user_id }));
    let items = vec![
        table.delete(
            Change::new(&invitation.pk, &invitation.sk)
                .condition("attribute_exists(PK) AND attribute_not_exists(used_at)"),
        ),
        app.audit().put(&audit),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    table.transact_or(items, AccountError::NotFound).await
}
