//! The proxy-wasm ABI (0.2.1) as Envoy implements it: the host functions this crate imports,
//! each wrapped so that every status the host returns becomes a `Result` (the proxy-wasm SDK
//! panics on statuses it does not expect, which kills the worker's VM), and the memory the host
//! hands back is taken over safely. Outside wasm (native tests) every import answers
//! `UNIMPLEMENTED`, so the filters' code paths for failing host calls run natively too.
//!
//! This is the only module of the filters with `unsafe` code.
#![allow(unsafe_code)]

use std::ptr::null_mut;

/// Status codes of the ABI (proxy-wasm spec, `WasmResult`).
pub const OK: u32 = 0;
pub const NOT_FOUND: u32 = 1;
pub const EMPTY: u32 = 7;
pub const CAS_MISMATCH: u32 = 8;
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub const UNIMPLEMENTED: u32 = 12;

/// Header maps (`MapType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    RequestHeaders = 0,
    ResponseHeaders = 2,
    CallResponseHeaders = 6,
}

/// Buffers (`BufferType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    RequestBody = 0,
    ResponseBody = 1,
    CallResponseBody = 4,
    VmConfiguration = 6,
    PluginConfiguration = 7,
}

/// Declares the imports for wasm and, elsewhere, stand-ins that answer `UNIMPLEMENTED`.
macro_rules! imports {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> u32;)*) => {
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "env")]
        extern "C" {
            $(fn $name($($arg: $ty),*) -> u32;)*
        }
        $(
            #[cfg(not(target_arch = "wasm32"))]
            #[allow(unused_variables, clippy::too_many_arguments)]
            unsafe fn $name($($arg: $ty),*) -> u32 {
                UNIMPLEMENTED
            }
        )*
    };
}

imports! {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(buffer_type: u32, start: usize, max_size: usize, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_set_buffer_bytes(buffer_type: u32, start: usize, size: usize, data: *const u8, data_size: usize) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_get_header_map_value(map_type: u32, key_data: *const u8, key_size: usize, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(map_type: u32, key_data: *const u8, key_size: usize, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(map_type: u32, key_data: *const u8, key_size: usize, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_set_header_map_pairs(map_type: u32, pairs_data: *const u8, pairs_size: usize) -> u32;
    fn proxy_get_property(path_data: *const u8, path_size: usize, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_get_shared_data(key_data: *const u8, key_size: usize, return_data: *mut *mut u8, return_size: *mut usize, return_cas: *mut u32) -> u32;
    fn proxy_set_shared_data(key_data: *const u8, key_size: usize, value_data: *const u8, value_size: usize, cas: u32) -> u32;
    fn proxy_send_local_response(status_code: u32, details_data: *const u8, details_size: usize, body_data: *const u8, body_size: usize, headers_data: *const u8, headers_size: usize, grpc_status: i32) -> u32;
    fn proxy_register_shared_queue(name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_resolve_shared_queue(vm_id_data: *const u8, vm_id_size: usize, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_dequeue_shared_queue(queue_id: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_http_call(upstream_data: *const u8, upstream_size: usize, headers_data: *const u8, headers_size: usize, body_data: *const u8, body_size: usize, trailers_data: *const u8, trailers_size: usize, timeout_ms: u32, return_token: *mut u32) -> u32;
}

/// A host call that did not succeed: which call, and the status the host returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError {
    pub call: &'static str,
    pub status: u32,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host call {} failed with status {}", self.call, self.status)
    }
}

impl std::error::Error for HostError {}

fn check(call: &'static str, status: u32) -> Result<(), HostError> {
    if status == OK {
        Ok(())
    } else {
        Err(HostError { call, status })
    }
}

/// Takes over a buffer the host allocated with [`proxy_on_memory_allocate`].
fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: the host allocated `size` bytes at `data` through `proxy_on_memory_allocate`
    // (a Vec of that capacity, leaked) and hands their ownership to the module.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Memory the host fills and hands to the module: a Vec with this capacity, leaked.
#[cfg_attr(target_arch = "wasm32", no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut buf: Vec<u8> = Vec::with_capacity(size);
    let ptr = buf.as_mut_ptr();
    std::mem::forget(buf);
    ptr
}

/// Both ABI version markers Envoy looks for.
#[cfg_attr(target_arch = "wasm32", no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

pub fn log(level: u32, message: &str) -> Result<(), HostError> {
    // SAFETY: pointer and length of a live &str.
    check("log", unsafe { proxy_log(level, message.as_ptr(), message.len()) })
}

pub fn now_nanos() -> Result<u64, HostError> {
    let mut t: u64 = 0;
    // SAFETY: `t` is a live u64 the host writes.
    check("get_current_time", unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

/// Resumes the paused request of the calling stream (`WasmStreamType::Request`).
pub fn continue_request() -> Result<(), HostError> {
    // SAFETY: no pointers.
    check("continue_stream", unsafe { proxy_continue_stream(0) })
}

/// Makes `context_id` the context later host calls act on (Envoy delivers a stream's callout
/// answer to the root context; the stream's own calls need the stream).
pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
    // SAFETY: no pointers.
    check("set_effective_context", unsafe { proxy_set_effective_context(context_id) })
}

pub fn set_tick_period_ms(ms: u32) -> Result<(), HostError> {
    // SAFETY: no pointers.
    check("set_tick_period", unsafe { proxy_set_tick_period_milliseconds(ms) })
}

pub fn get_buffer(buffer: Buffer, start: usize, max_size: usize) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers to live locals; the returned buffer is taken over by `take`.
    let status = unsafe { proxy_get_buffer_bytes(buffer as u32, start, max_size, &mut data, &mut size) };
    match status {
        OK => Ok(take(data, size)),
        NOT_FOUND => Ok(None),
        s => Err(HostError { call: "get_buffer_bytes", status: s }),
    }
}

pub fn set_buffer(buffer: Buffer, start: usize, size: usize, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: pointer and length of a live slice.
    check("set_buffer_bytes", unsafe {
        proxy_set_buffer_bytes(buffer as u32, start, size, value.as_ptr(), value.len())
    })
}

pub fn get_map(map: Map) -> Result<crate::codec::HeaderMap, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers to live locals; the returned buffer is taken over by `take`.
    check("get_header_map_pairs", unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) })?;
    match take(data, size) {
        None => Ok(crate::codec::HeaderMap::default()),
        Some(bytes) => crate::codec::HeaderMap::parse(bytes)
            .ok_or(HostError { call: "get_header_map_pairs (malformed map)", status: OK }),
    }
}

pub fn get_map_value(map: Map, name: &str) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the name is a live &str; out-pointers to live locals.
    let status = unsafe { proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size) };
    match status {
        // Envoy answers an absent header with Ok and no data (as it does an empty value),
        // other hosts with NotFound.
        OK => Ok(take(data, size)),
        NOT_FOUND => Ok(None),
        s => Err(HostError { call: "get_header_map_value", status: s }),
    }
}

pub fn set_map_value(map: Map, name: &str, value: Option<&[u8]>) -> Result<(), HostError> {
    // SAFETY: pointers and lengths of live slices.
    match value {
        Some(v) => check("replace_header_map_value", unsafe {
            proxy_replace_header_map_value(map as u32, name.as_ptr(), name.len(), v.as_ptr(), v.len())
        }),
        None => check("remove_header_map_value", unsafe {
            proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len())
        }),
    }
}

/// Adds a value to a header (beside any it has).
pub fn add_map_value(map: Map, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: pointers and lengths of live slices.
    check("add_header_map_value", unsafe { proxy_add_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

/// Replaces a whole header map with serialised pairs (`codec::serialize_pairs`).
pub fn set_map(map: Map, pairs: &[u8]) -> Result<(), HostError> {
    // SAFETY: pointer and length of a live slice.
    check("set_header_map_pairs", unsafe { proxy_set_header_map_pairs(map as u32, pairs.as_ptr(), pairs.len()) })
}

pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    let path = crate::codec::serialize_path(path);
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the path is a live Vec; out-pointers to live locals.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match status {
        OK => Ok(take(data, size)),
        NOT_FOUND => Ok(None),
        s => Err(HostError { call: "get_property", status: s }),
    }
}

pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), HostError> {
    let path = crate::codec::serialize_path(path);
    // SAFETY: pointers and lengths of live slices.
    check("set_property", unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// A shared-data value and its CAS token (`None` when the key is absent).
pub fn get_shared_data(key: &str) -> Result<(Option<Vec<u8>>, u32), HostError> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: the key is a live &str; out-pointers to live locals.
    let status = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        OK => Ok((take(data, size), cas)),
        NOT_FOUND => Ok((None, 0)),
        s => Err(HostError { call: "get_shared_data", status: s }),
    }
}

/// Writes shared data; with `cas`, only if the value is still at that token
/// (`Err` with status [`CAS_MISMATCH`] otherwise).
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
    // SAFETY: pointers and lengths of live slices.
    check("set_shared_data", unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas.unwrap_or(0))
    })
}

pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
    let headers = crate::codec::serialize_map(headers);
    let details = "tollgate";
    // SAFETY: pointers and lengths of live slices.
    check("send_local_response", unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

pub fn http_call(cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout_ms: u32) -> Result<u32, HostError> {
    let headers = crate::codec::serialize_map(headers);
    let trailers = crate::codec::serialize_map(&[]);
    let mut token = 0u32;
    // SAFETY: pointers and lengths of live slices; out-pointer to a live local.
    check("http_call", unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// Registers a shared queue under this VM's id; its items reach this root's `on_queue_ready`.
pub fn register_shared_queue(name: &str) -> Result<u32, HostError> {
    let mut id = 0u32;
    // SAFETY: the name is a live &str; out-pointer to a live local.
    check("register_shared_queue", unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// The id of a queue another VM registered (`NOT_FOUND` until it has).
pub fn resolve_shared_queue(vm_id: &str, name: &str) -> Result<u32, HostError> {
    let mut id = 0u32;
    // SAFETY: pointers and lengths of live strs; out-pointer to a live local.
    check("resolve_shared_queue", unsafe {
        proxy_resolve_shared_queue(vm_id.as_ptr(), vm_id.len(), name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

pub fn enqueue_shared_queue(queue: u32, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: pointer and length of a live slice.
    check("enqueue_shared_queue", unsafe { proxy_enqueue_shared_queue(queue, value.as_ptr(), value.len()) })
}

/// The next item of a queue, `None` when it is empty.
pub fn dequeue_shared_queue(queue: u32) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers to live locals; the returned buffer is taken over by `take`.
    let status = unsafe { proxy_dequeue_shared_queue(queue, &mut data, &mut size) };
    match status {
        OK => Ok(Some(take(data, size).unwrap_or_default())),
        EMPTY => Ok(None),
        s => Err(HostError { call: "dequeue_shared_queue", status: s }),
    }
}

/// Defines a counter (metric type 0) and returns its id.
pub fn define_counter(name: &str) -> Result<u32, HostError> {
    let mut id = 0u32;
    // SAFETY: the name is a live &str; out-pointer to a live local.
    check("define_metric", unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, by: i64) -> Result<(), HostError> {
    // SAFETY: no pointers.
    check("increment_metric", unsafe { proxy_increment_metric(id, by) })
}
