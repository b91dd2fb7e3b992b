//! `GET /orgs/me`: the caller's organisation, and for its admins, who is in it.

use serde::Serialize;

use super::{Org, Role, User, auth::Principal, invitations};
use crate::{
    identity::AccountError,
    services::Services,
    store::{StoreError, keys},
};

#[derive(Debug, Serialize)]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub full_name: Option<String>,
    pub role: Role,
    pub joined_at: String,
}

#[derive(Debug, Serialize)]
pub struct OrgView {
    pub org_id: String,
    pub name: String,
    pub created_at: String,
    /// Admins only; absent for members and viewers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Member>>,
}

pub async fn view(app: &Services, principal: &Principal) -> Result<OrgView, AccountError> {
    let table = app.table();
    let org = table
        .get::<Org>(&keys::org(principal.org_id()), keys::ORG)
        .await?
        .ok_or_else(|| AccountError::internal("the caller's organisation is missing"))?;
    let members = if principal.role() == Role::Admin { Some(members(app, principal.org_id()).await?) } else { None };
    Ok(OrgView { org_id: org.org_id, name: org.name, created_at: org.created_at, members })
}

/// Every member with their address and name, longest-standing first. A membership whose user
/// is gone (mid-erasure) is left out.
async fn members(app: &Services, org_id: &str) -> Result<Vec<Member>, StoreError> {
    let table = app.table();
    let mut memberships = invitations::members(table, org_id).await?;
    memberships.sort_by(|a, b| a.joined_at.cmp(&b.joined_at));
    let users = futures_util::future::join_all(memberships.iter().map(|m| {
        let (pk, sk) = User::key(&m.user_id);
        async move { table.get::<User>(&pk, &sk).await }
    }))
    .await;
    let mut found = Vec::with_capacity(memberships.len());
    for (membership, user) in memberships.into_iter().zip(users) {
        if let Some(user) = user? {
            found.push(Member {
                user_id: membership.user_id,
                email: user.email,
                full_name: user.full_name,
                role: membership.role,
                joined_at: membership.joined_at,
            });
        }
    }
    Ok(found)
}
