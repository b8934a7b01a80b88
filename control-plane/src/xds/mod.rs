//! xDS: the pure snapshot builder, the ADS protocol state machine, and the tonic glue.

pub mod ads;
mod local_reply;
mod resources;
pub mod server;
pub mod snapshot;
