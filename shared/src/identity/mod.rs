//! Users, organisations, passwords and one-time tokens.

pub mod account;
pub mod attempts;
pub mod auth;
mod email;
mod error;
pub mod invitations;
pub mod jwt;
pub mod login;
pub mod mfa;
mod model;
pub mod orgs;
mod password;
pub mod phone;
mod register;
mod reset;
pub mod services;
pub mod session;
mod tasks;
mod token;
mod verify;

// The cleanup's erasure keeps the org's admin count, as role changes do.
pub use email::Email;
pub use error::AccountError;
#[cfg(all(feature = "payments", feature = "mail", feature = "sns"))]
pub(crate) use model::adjust_admin_count;
pub use model::{EmailGuard, Membership, OneTimeToken, Org, Role, TokenKind, User};
pub use password::{Password, PasswordError, PasswordHash};
pub use register::{RegisterError, Registration, register};
pub use reset::{forgot_password, reset_password};
pub use services::IdentityServices;
pub use tasks::AccountTask;
pub use token::{OpaqueToken, TokenHash};
pub use verify::{resend_verification, verify_email};

use crate::{outbox::OutboxItem, services::Services};

/// Account work is run here, above the modules that hand it out, so that a task's type
/// (which the outbox carries) depends on none of them.
impl AccountTask {
    /// Does the work; the outbox items it committed (the emails to send).
    pub async fn run(&self, app: &Services) -> Result<Vec<OutboxItem>, AccountError> {
        match self {
            Self::SendPasswordReset { email, origin } => reset::send_password_reset(app, email, origin).await,
            Self::ResendVerification { email } => verify::send_verification(app, email).await,
            Self::WarnAccountExists { email, origin, attempted_user_id } => {
                register::warn_account_exists(app, email, origin, attempted_user_id).await
            }
        }
    }
}
