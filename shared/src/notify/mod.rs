//! Outbound notifications: email through SES v2 (rendered from templates), SMS, mobile push
//! and domain events through SNS; the notifier's delivery of outbox items ([`delivery`]),
//! per-user preferences, unsubscribe links and suppressed addresses.

pub mod delivery;
mod events;
mod mailer;
pub mod preferences;
pub mod push;
pub mod suppression;
mod templates;
pub mod unsubscribe;

pub use events::{DomainEvent, EventPublisher};
pub use mailer::{Email, Mailer, NotifyError};
pub use preferences::{Category, Channel, Preferences};
pub use templates::{EmailKind, render};
