//! Everything the Lambda functions share: configuration, HTTP plumbing, the table, the
//! mailer and event publisher, and the domain modules. Function binaries stay tiny: they
//! build an [`App`] once per cold start and hand each request to a handler in [`api`].

pub mod api;
pub mod app;
pub mod audit;
pub mod captcha;
#[cfg(all(feature = "payments", feature = "mail", feature = "sns"))]
pub mod cleanup;
pub mod config;
pub mod deadline;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod notify;
pub mod outbox;
#[cfg(feature = "payments")]
pub mod payments;
pub mod rate_limit;
pub mod seal;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod time;
#[cfg(feature = "payments")]
pub mod webhook;

pub use app::App;
