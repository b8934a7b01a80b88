//! The gateway filter's decisions, in the order a request meets them: classify the client
//! operation, authenticate the key, validate the body, resolve the model to a cluster (and
//! answer `GET /v1/models`). Pure: no proxy-wasm, no clock (time is passed in).

pub mod json_scan;
pub mod openai;
pub mod request;
