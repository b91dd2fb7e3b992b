//! The Stripe webhook: our own signature verification ([`signature`]) and exactly-once,
//! order-aware processing ([`process`]).

pub mod process;
pub mod signature;
