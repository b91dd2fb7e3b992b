//! The black-box suite: real HTTP and Lambda events through the handlers into the local
//! stack, one module per area, all in one binary so the crate under test links once.
//! The cleanup's tests are their own binary (`tests/cleanup.rs`): a run sweeps the whole
//! table, and beside these it would take the items they are setting up.

#[path = "../common/mod.rs"]
mod common;

mod account;
mod audit;
mod captcha;
mod config;
mod docs;
mod events;
mod features;
mod iam;
mod layers;
mod login;
mod mfa;
mod money;
mod notifications;
mod notify;
mod payment_history;
mod payments;
mod plan_change;
mod profile;
mod register;
mod reset;
mod routes;
mod service;
mod stripe_shapes;
mod template;
mod verify;
mod webhook;
