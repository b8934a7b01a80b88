//! The provider side of one attempt, as pure functions: classify the attempt (which API pair,
//! whether the body is needed, whether it is signed), rewrite or translate the body, set every
//! provider header, sign over exactly the bytes sent, and map provider errors. The provider
//! filter collects inputs from the host, calls [`plan::plan`] (or
//! [`plan::plan_from_headers`]) and applies the plan.

pub mod json_members;
pub mod plan;
pub mod rewrite;
pub mod sanitize;
pub mod sigv4;
