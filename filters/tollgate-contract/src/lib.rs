//! The contract between Tollgate's components: the filter configuration schema the control
//! plane pushes (`config`), virtual keys (`keys`) and the binary key table the data plane
//! searches (`keytable`), the constants both sides name
//! (`contract`), the per-request state the gateway filter hands to the provider filter
//! (`state`), and errors as the client sees them (`error`).
//!
//! Nothing here knows about proxy-wasm, Envoy or tokio: it builds and tests natively and for
//! `wasm32-wasip1`. Time is always passed in.

pub mod bytes;
pub mod config;
pub mod contract;
pub mod error;
pub mod keys;
pub mod keytable;
pub mod quota;
pub mod quota_lease;
pub mod state;
pub mod usage;

pub use error::{ClientApi, ErrorKind, GatewayError};
