//! Everything the Lambda functions share: configuration, HTTP plumbing, the table, the
//! mailer and event publisher, and the domain modules. Function binaries stay tiny: they
//! build an [`App`] once per cold start and hand each request to a handler in [`api`].

pub mod api;
pub mod app;
pub mod captcha;
#[cfg(all(feature = "payments", feature = "mail", feature = "sns"))]
pub mod cleanup;
pub mod http;
pub mod identity;
pub mod notify;
pub mod outbox;
#[cfg(feature = "payments")]
pub mod payments;
#[cfg(feature = "payments")]
pub mod webhook;

pub use app::App;
pub use audit_log as audit;
// The kernel's modules, at the paths the rest of the backend has always named them by.
pub use kernel::{
    caller, config, cursor, deadline, invalid, metrics, rate_limit, seal, secrets, services, store, telemetry, time,
};
