//! HTTP plumbing shared by every handler: request metadata and ids, JSON parsing into
//! validated input, problem+json errors, and the wrapper that turns a handler's
//! `Result` into a response with `X-Request-Id`.

pub mod browser;
mod domain_errors;
pub use crate::cursor;
mod problem;
mod request;
mod response;
pub mod routes;

pub use browser::Browser;
pub use problem::{ApiError, FieldError, required_field};
pub use request::{Origin, RequestMeta, parse_json};
pub use response::{ApiResponse, serve};
