//! The Stripe webhook: signature verification (ours, see [`signature`]).

pub mod signature;
