//! Payments on Stripe Connect ("separate charges and transfers"): providers, payments held
//! on the platform, release to the provider, refunds, reconciliation of what a request left
//! unresolved, the payer's and the provider's history; plus the `Idempotency-Key` building
//! block the create routes use.

mod error;
pub mod gateway;
pub mod history;
pub mod hold;
pub mod idempotency;
pub mod intent;
pub mod lifecycle;
pub mod money;
pub mod moves;
pub mod outcome;
pub mod payment;
pub mod proration;
pub mod provider;
pub mod reconcile;
pub mod recovery;
pub mod refund;
pub mod release;
pub mod services;
pub mod stripe_event;
pub mod subscription;
pub mod unsettled;

pub use error::PaymentError;
pub use gateway::{Gateway, GatewayError};
pub use money::{Amount, Currency};
pub use services::PaymentServices;
