//! Account work a request hands to the notifier through the outbox, so that the request does
//! the same thing, in the same time, whether or not an address has an account: it writes one
//! task and answers; the notifier looks the address up and does what applies
//! ([`AccountTask::run`], beside the account code it calls).

use serde::{Deserialize, Serialize};

use crate::caller::Origin;

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
}
