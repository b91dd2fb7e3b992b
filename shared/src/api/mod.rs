//! Route handlers: parse the request, call one domain function, render the answer.

pub mod register;
