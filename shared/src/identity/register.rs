//! Registration: a user, their email guard, their org membership and a verification token
//! written in one transaction, so a half-registered account cannot exist.
//!
//! The answer never says whether the address was already registered: the winner gets a
//! verification email, everyone else with that address gets an "account exists" email.

use serde_json::json;

use super::{
    AccountTask, Email, EmailGuard, Membership, OneTimeToken, OpaqueToken, Org, Password, PasswordError, PasswordHash,
    Role, TokenKind, User,
};
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::{Origin, RequestMeta},
    identity::AccountError,
    notify::{DomainEvent, EmailKind},
    outbox::{self, Message, OutboxItem},
    services::Services,
    store::{StoreError, keys},
    time,
};

pub const VERIFY_TOKEN_HOURS: i64 = 24;

/// Input that has passed validation.
#[derive(Debug)]
pub struct Registration {
    pub email: Email,
    pub password: Password,
    pub full_name: Option<String>,
    pub org_name: Option<String>,
    pub invitation_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("the invitation is invalid, expired, used, or for another address")]
    InvitationInvalid,
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] crate::seal::CipherError),
}

impl From<RegisterError> for AccountError {
    fn from(error: RegisterError) -> Self {
        match error {
            RegisterError::InvitationInvalid => AccountError::TokenInvalid,
            other => AccountError::internal(other),
        }
    }
}

/// Where the new user lands: a fresh org they administer, or the org of an invitation.
enum Placement {
    NewOrg(Org),
    /// `issued_by`: the admin who sent it, who must still be an active admin.
    Invited {
        org_id: String,
        role: Role,
        token_pk: String,
        issued_by: String,
    },
}

#[tracing::instrument(skip_all)]
pub async fn register(app: &Services, input: Registration, meta: &RequestMeta) -> Result<(), RegisterError> {
    let now = time::now();
    let created_at = time::rfc3339(now);
    let user_id = uuid::Uuid::new_v4().to_string();

    let placement = match &input.invitation_token {
        Some(token) => invitation_placement(app, token, &input.email).await?,
        None => {
            let org_id = uuid::Uuid::new_v4().to_string();
            Placement::NewOrg(Org {
                pk: keys::org(&org_id),
                sk: keys::ORG.to_owned(),
                name: input.org_name.clone().unwrap_or_else(|| "My organisation".to_owned()),
                org_id,
                admin_count: 1,
                created_at: created_at.clone(),
            })
        }
    };
    let (org_id, role) = match &placement {
        Placement::NewOrg(org) => (org.org_id.clone(), Role::Admin),
        Placement::Invited { org_id, role, .. } => (org_id.clone(), *role),
    };

    // Hash before looking at whether the address is taken, so both paths cost the same.
    let password_hash = PasswordHash::compute(input.password).await?;
    let verify_token = OpaqueToken::generate();
    let verify_hash = verify_token.hash();

    let user = User {
        pk: keys::user(&user_id),
        sk: keys::PROFILE.to_owned(),
        user_id: user_id.clone(),
        email: input.email.as_str().to_owned(),
        password_hash: password_hash.as_str().to_owned(),
        full_name: input.full_name.clone(),
        org_id: org_id.clone(),
        role,
        email_verified: false,
        verify_token_hash: Some(verify_hash.as_str().to_owned()),
        reset_token_hash: None,
        created_at: created_at.clone(),
        updated_at: created_at.clone(),
        deletion_scheduled_at: None,
        session_version: 0,
        stripe_customer_id: None,
        mfa_enabled: false,
        phone: None,
        phone_verified: false,
    };
    let token_item = OneTimeToken::new(TokenKind::VerifyEmail, &verify_hash, &user_id, time::hours(VERIFY_TOKEN_HOURS));
    let membership = Membership {
        pk: keys::org(&org_id),
        sk: keys::member(&user_id),
        org_id: org_id.clone(),
        user_id: user_id.clone(),
        role,
        joined_at: created_at.clone(),
    };
    let audit = AuditEntry::new("auth.register", AuditStatus::Success, &org_id, meta)
        .actor(&user_id)
        .target(&user_id)
        .details(json!({
            "via": if input.invitation_token.is_some() { "invitation" } else { "signup" },
            "role": role.as_str(),
        }));

    let table = app.table();
    let link = format!("{}/verify-email?token={}", app.settings().frontend_url, verify_token.expose());
    let verification =
        Message::email(EmailKind::VerifyEmail, input.email.as_str(), json!({ "link": link, "name": input.full_name }));
    let registered =
        DomainEvent::new("user.registered", json!({ "user_id": user_id, "org_id": org_id, "role": role.as_str() }));
    // The email guard goes first: a failed condition at index 0 means "address taken".
    let mut items = vec![
        table.put_new(&EmailGuard::new(input.email.as_str(), &user_id))?,
        table.put_new(&user)?,
        table.put_new(&membership)?,
        table.put_new(&token_item)?,
        app.audit().put(&audit)?,
        outbox::put_sealed(table, &app.outbox_sealer().await?, verification)?,
        outbox::put(table, Message::event(&registered))?,
    ];
    match &placement {
        Placement::NewOrg(org) => items.push(table.put_new(org)?),
        Placement::Invited { token_pk, role, org_id, issued_by } => {
            items.push(super::model::consume_invitation(table, token_pk, &created_at)?);
            items.extend(super::invitations::still_active_admin(table, org_id, issued_by)?);
            if *role == Role::Admin {
                items.push(super::model::adjust_admin_count(table, org_id, 1)?);
            }
        }
    }

    let taken = match table.transact(items).await {
        Ok(()) => false,
        Err(StoreError::TransactionConditionsFailed(failed)) if failed.contains(&0) => true,
        // Any other failed condition is the invitation having been used concurrently.
        Err(StoreError::TransactionConditionsFailed(_)) if input.invitation_token.is_some() => {
            return Err(RegisterError::InvitationInvalid);
        }
        Err(other) => return Err(other.into()),
    };
    // Both outcomes write the same task, so a taken address costs what a free one does; the
    // notifier finds which it was and warns the owner only if this attempt lost.
    let check = AccountTask::WarnAccountExists {
        email: input.email.as_str().to_owned(),
        origin: meta.origin(),
        attempted_user_id: user_id.clone(),
    };
    table.transact(vec![outbox::put(table, Message::Task(check))?]).await?;
    if !taken {
        tracing::info!(%user_id, %org_id, "user registered");
    }
    Ok(())
}

async fn invitation_placement(app: &Services, token: &str, email: &Email) -> Result<Placement, RegisterError> {
    let hash = OpaqueToken::from_presented(token).hash();
    let pk = keys::token(hash.as_str());
    let Some(item) = app.table().get::<OneTimeToken>(&pk, keys::TOKEN).await? else {
        return Err(RegisterError::InvitationInvalid);
    };
    let live = item.is_live(TokenKind::Invitation);
    match (item.org_id, item.role, item.email) {
        (Some(org_id), Some(role), Some(invited)) if live && invited == email.as_str() => {
            Ok(Placement::Invited { org_id, role, token_pk: pk, issued_by: item.user_id })
        }
        _ => Err(RegisterError::InvitationInvalid),
    }
}

/// The notifier's half of a registration: if the address belongs to someone other than the
/// attempt's user (the address was taken), its owner gets an "account exists" email (with
/// links to log in or reset) and the attempt is audited in their organisation.
pub(super) async fn warn_account_exists(
    app: &Services,
    email: &str,
    origin: &Origin,
    attempted_user_id: &str,
) -> Result<Vec<OutboxItem>, AccountError> {
    let table = app.table();
    let Some(owner) = User::find_by_email(table, email).await? else {
        return Ok(Vec::new());
    };
    if owner.user_id == attempted_user_id {
        return Ok(Vec::new());
    }
    let base = &app.settings().frontend_url;
    let notice = OutboxItem::sealed(
        Message::email(
            EmailKind::AccountExists,
            email,
            json!({ "login_link": format!("{base}/login"), "reset_link": format!("{base}/forgot-password") }),
        ),
        &app.outbox_sealer().await?,
    )?;
    let entry = AuditEntry::new("auth.register", AuditStatus::Failure, &owner.org_id, &origin.meta())
        .target(&owner.user_id)
        .details(json!({ "reason": "email_already_registered" }));
    table.transact(vec![notice.put(table)?, app.audit().put(&entry)?]).await?;
    Ok(vec![notice])
}
