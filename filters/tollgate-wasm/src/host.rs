//! What a filter may ask of its host, every call fallible: headers, bodies, properties and
//! filter state, shared data with CAS, the clock, local replies, callouts and the timer.
//! [`Wasm`] is the proxy-wasm implementation; tests may bring their own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::abi::{Buffer, HostError, Map};
use crate::abi;

pub use crate::codec::HeaderMap as Headers;

pub trait Host {
    /// Every header of a map, in one call.
    fn headers(&self, map: Map) -> Result<Headers, HostError>;
    fn header(&self, map: Map, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Sets (replacing every value) or, with `None`, removes a header.
    fn set_header(&self, map: Map, name: &str, value: Option<&[u8]>) -> Result<(), HostError>;
    /// Adds a value to a header, beside any it has (no lookup of the existing ones).
    fn add_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Replaces a whole header map with `pairs` (one call for many changes).
    fn set_headers<'a>(&self, map: Map, pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Result<(), HostError>;
    /// `size` bytes of a buffer from `start` (empty when the host has none).
    fn buffer(&self, buffer: Buffer, start: usize, size: usize) -> Result<Vec<u8>, HostError>;
    /// Replaces `size` bytes from `start` of a buffer with `data`.
    fn set_buffer(&self, buffer: Buffer, start: usize, size: usize, data: &[u8]) -> Result<(), HostError>;
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError>;
    /// Writes filter state (`wasm.<name>` for a one-segment path).
    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError>;
    /// A shared-data value (process wide, per VM id) and its CAS token.
    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), HostError>;
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError>;
    fn now(&self) -> Result<SystemTime, HostError>;
    /// Answers the request from the filter; the stream ends there.
    fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError>;
    /// Starts an HTTP callout; the answer comes with the returned token to the
    /// `on_http_call_response` of the context that made it (the root, or a stream).
    fn http_call(&self, cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout: Duration) -> Result<u32, HostError>;
    fn set_tick_period(&self, period: Duration) -> Result<(), HostError>;
    /// Resumes the request of the stream whose callback this is, paused earlier.
    fn continue_request(&self) -> Result<(), HostError>;
    /// Registers a shared queue (this root receives its items in `on_queue_ready`).
    fn register_queue(&self, name: &str) -> Result<u32, HostError>;
    /// The id of a queue registered by a VM with `vm_id`.
    fn resolve_queue(&self, vm_id: &str, name: &str) -> Result<u32, HostError>;
    fn enqueue(&self, queue: u32, value: &[u8]) -> Result<(), HostError>;
    /// The next item, `None` when the queue is empty.
    fn dequeue(&self, queue: u32) -> Result<Option<Vec<u8>>, HostError>;
    /// Defines a counter (Envoy stat) and returns its id.
    fn define_counter(&self, name: &str) -> Result<u32, HostError>;
    fn increment_counter(&self, id: u32, by: u64) -> Result<(), HostError>;
}

/// The proxy-wasm host (Envoy).
#[derive(Debug, Clone, Copy, Default)]
pub struct Wasm;

impl Host for Wasm {
    fn headers(&self, map: Map) -> Result<Headers, HostError> {
        abi::get_map(map)
    }

    fn header(&self, map: Map, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        abi::get_map_value(map, name)
    }

    fn set_header(&self, map: Map, name: &str, value: Option<&[u8]>) -> Result<(), HostError> {
        abi::set_map_value(map, name, value)
    }

    fn add_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError> {
        abi::add_map_value(map, name, value)
    }

    fn set_headers<'a>(&self, map: Map, pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Result<(), HostError> {
        abi::set_map(map, &crate::codec::serialize_pairs(pairs))
    }

    fn buffer(&self, buffer: Buffer, start: usize, size: usize) -> Result<Vec<u8>, HostError> {
        Ok(abi::get_buffer(buffer, start, size)?.unwrap_or_default())
    }

    fn set_buffer(&self, buffer: Buffer, start: usize, size: usize, data: &[u8]) -> Result<(), HostError> {
        abi::set_buffer(buffer, start, size, data)
    }

    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        abi::get_property(path)
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        abi::set_property(path, value)
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), HostError> {
        abi::get_shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        abi::set_shared_data(key, value, cas)
    }

    fn now(&self) -> Result<SystemTime, HostError> {
        Ok(UNIX_EPOCH + Duration::from_nanos(abi::now_nanos()?))
    }

    fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        abi::send_local_response(status, headers, body)
    }

    fn http_call(&self, cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout: Duration) -> Result<u32, HostError> {
        abi::http_call(cluster, headers, body, u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX))
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        abi::set_tick_period_ms(u32::try_from(period.as_millis()).unwrap_or(u32::MAX))
    }

    fn continue_request(&self) -> Result<(), HostError> {
        abi::continue_request()
    }

    fn register_queue(&self, name: &str) -> Result<u32, HostError> {
        abi::register_shared_queue(name)
    }

    fn resolve_queue(&self, vm_id: &str, name: &str) -> Result<u32, HostError> {
        abi::resolve_shared_queue(vm_id, name)
    }

    fn enqueue(&self, queue: u32, value: &[u8]) -> Result<(), HostError> {
        abi::enqueue_shared_queue(queue, value)
    }

    fn dequeue(&self, queue: u32) -> Result<Option<Vec<u8>>, HostError> {
        abi::dequeue_shared_queue(queue)
    }

    fn define_counter(&self, name: &str) -> Result<u32, HostError> {
        abi::define_counter(name)
    }

    fn increment_counter(&self, id: u32, by: u64) -> Result<(), HostError> {
        abi::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX))
    }
}
