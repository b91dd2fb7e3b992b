//! Outbound notifications: email through SES v2 (rendered from templates), SMS, mobile push
//! and domain events through SNS; the notifier's delivery of outbox items ([`delivery`]),
//! per-user preferences, unsubscribe links and suppressed addresses.

#[cfg(all(feature = "mail", feature = "sns"))]
pub mod delivery;
mod events;
mod mailer;
pub mod preferences;
#[cfg(feature = "sns")]
pub mod push;
pub mod suppression;
mod templates;
pub mod unsubscribe;

pub use events::DomainEvent;
#[cfg(feature = "sns")]
pub use events::EventPublisher;
#[cfg(feature = "mail")]
pub use mailer::Mailer;
pub use mailer::{Email, NotifyError};
pub use preferences::{Category, Channel, Preferences};
pub use templates::EmailKind;
#[cfg(feature = "mail")]
pub use templates::render;

/// What notification code sends through, beyond the services every function has: a
/// function's `App` provides it, with the clients its features link.
#[cfg(feature = "sns")]
pub trait Channels: Sync {
    fn services(&self) -> &crate::services::Services;
    #[cfg(feature = "mail")]
    fn mailer(&self) -> &Mailer;
    /// Domain events and SMS.
    fn events(&self) -> &EventPublisher;
    /// Push endpoints.
    fn sns(&self) -> &aws_sdk_sns::Client;
}
