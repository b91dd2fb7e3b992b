//! Outbound notifications: email through SES v2 (rendered from templates), domain events
//! and SMS through SNS; and the notifier's delivery of outbox items ([`delivery`]).

pub mod delivery;
mod events;
mod mailer;
mod templates;

pub use events::{DomainEvent, EventPublisher};
pub use mailer::{Email, Mailer, NotifyError};
pub use templates::{EmailKind, render};
