//! The bottom layer: what every domain stands on and none of them owns. Settings from the
//! environment, the secret document and its cache, sealing and signing, time, deadlines,
//! the table with its write helpers and errors, rate limits, metrics and logs.
//!
//! Nothing here names an HTTP type or a domain: the domains depend on the kernel, never the
//! other way round, and cargo refuses the other way.

pub mod caller;
pub mod config;
pub mod cursor;
pub mod deadline;
pub mod invalid;
pub mod metrics;
pub mod rate_limit;
pub mod seal;
pub mod secrets;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod time;
pub use services::Services;
