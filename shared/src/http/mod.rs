//! The edge's HTTP: who asked and who is calling, read off the request (ids, address, the
//! bearer token and the CSRF rule), JSON bodies, the browser rules, the route table,
//! problem+json (the one place an error gets a status: the kernel's in `problem`, each
//! domain's in `domain_errors`), and the wrapper that turns a handler's `Result` into a
//! response with `X-Request-Id`. Nothing below the edge imports this module.

pub mod auth;
pub mod browser;
mod domain_errors;
mod problem;
mod request;
mod response;
pub mod routes;

pub use browser::Browser;
pub use problem::{ApiError, FieldError, required_field};
pub use request::{Origin, RequestMeta, parse_json};
pub use response::{ApiResponse, serve};
