//! Pure types and logic shared by the Tollgate filters and the control plane.
//!
//! Nothing here knows about proxy-wasm, Envoy or tokio: it builds and tests natively and for
//! `wasm32-wasip1`. Time is always passed in.

pub mod config;
pub mod contract;
pub mod error;
pub mod json_members;
pub mod keys;
pub mod openai;
pub mod provider;
pub mod request;

pub use error::{ClientApi, ErrorKind, GatewayError};
