//! Account work a request hands to the notifier through the outbox, so that the request does
//! the same thing, in the same time, whether or not an address has an account: it writes one
//! task and answers; the notifier looks the address up and does what applies.

use serde::{Deserialize, Serialize};

use crate::{App, http::ApiError, http::Origin, outbox::OutboxItem};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum AccountTask {
    /// `POST /auth/forgot-password`: a reset link, if the address has an account.
    SendPasswordReset { email: String, origin: Origin },
    /// `POST /auth/resend-verification`: a new verification link, if still unverified.
    ResendVerification { email: String },
    /// `POST /auth/register`, whatever its outcome: if the address was taken (by someone
    /// other than `attempted_user_id`), tell its owner and audit the attempt.
    WarnAccountExists { email: String, origin: Origin, attempted_user_id: String },
}

impl AccountTask {
    pub fn name(&self) -> &'static str {
        match self {
            Self::SendPasswordReset { .. } => "send_password_reset",
            Self::ResendVerification { .. } => "resend_verification",
            Self::WarnAccountExists { .. } => "warn_account_exists",
        }
    }

    /// Does the work; the outbox items it committed (the emails to send).
    pub async fn run(&self, app: &App) -> Result<Vec<OutboxItem>, ApiError> {
        match self {
            Self::SendPasswordReset { email, origin } => super::reset::send_password_reset(app, email, origin).await,
            Self::ResendVerification { email } => super::verify::send_verification(app, email).await,
            Self::WarnAccountExists { email, origin, attempted_user_id } => {
                super::register::warn_account_exists(app, email, origin, attempted_user_id).await
            }
        }
    }
}
