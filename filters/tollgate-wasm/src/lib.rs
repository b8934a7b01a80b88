//! The one crate of the filters that touches the proxy-wasm ABI. Everything else is pure.
//!
//! - [`Host`]: what a filter may ask of Envoy, every call returning a `Result` ([`Wasm`] is
//!   the implementation). The proxy-wasm Rust SDK panics on any host status it does not expect,
//!   and a panic kills the worker's VM; this crate declares the host's imports itself
//!   ([`abi`]) and never panics.
//! - [`Plugin`] and [`HttpFilter`]: a filter is a plugin root that parses its typed
//!   configuration once per change (a rejected configuration is NACKed and the last good one
//!   keeps serving) and makes one [`HttpFilter`] per stream. Callbacks return
//!   `Result<Action, GatewayError>`; an error on the request path is answered here, in the
//!   client's API format, and the stream is closed (fail closed: a request is never let through
//!   because a callback or a host call failed).
//! - [`plugin!`]: declares a filter module's callbacks. The module exports exactly the
//!   callbacks listed there and no others (Envoy enters the VM for every exported callback on
//!   every request, and skips one that is not exported), so the list in the code is the only
//!   place that says which callbacks a filter has.
//! - [`WholeBody`]: buffering of a body the filter reads whole; [`reply_error`].

pub mod abi;
mod codec;
mod dispatch;
pub mod host;
mod logger;
pub mod quota_slot;

pub use codec::serialize_map;
pub use dispatch::{Dispatcher, IdHasher};
pub use host::{Buffer, Headers, Host, HostError, Map, Wasm};
pub use logger::install as install_logger;

use tollgate_contract::{ClientApi, ErrorKind, GatewayError};

/// What a callback tells Envoy: go on, or hold the stream (buffering the body, waiting for
/// a callout, or after a local reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

/// One HTTP stream of a filter. Only the callbacks listed in the filter's [`plugin!`] are ever
/// called; the others keep these defaults.
pub trait HttpFilter: 'static {
    /// The client's API: errors answered by the adapter use its format.
    fn client_api(&self) -> ClientApi;

    fn on_request_headers<H: Host>(&mut self, _host: &H, _end_of_stream: bool) -> Result<Action, GatewayError> {
        Ok(Action::Continue)
    }

    fn on_request_body<H: Host>(&mut self, _host: &H, _body_size: usize, _end_of_stream: bool) -> Result<Action, GatewayError> {
        Ok(Action::Continue)
    }

    fn on_request_trailers<H: Host>(&mut self, _host: &H) -> Result<Action, GatewayError> {
        Ok(Action::Continue)
    }

    fn on_response_headers<H: Host>(&mut self, _host: &H, _end_of_stream: bool) -> Result<Action, GatewayError> {
        Ok(Action::Continue)
    }

    fn on_response_body<H: Host>(&mut self, _host: &H, _body_size: usize, _end_of_stream: bool) -> Result<Action, GatewayError> {
        Ok(Action::Continue)
    }

    /// Whether this stream waits for the callout with `token`.
    fn waits_for(&self, _token: u32) -> bool {
        false
    }

    /// The answer to a callout this stream made while its request was paused. `Continue`
    /// resumes the request; an error is answered in the client's format.
    fn on_http_call_response<H: Host>(&mut self, _host: &H, _token: u32, _num_headers: usize, _body_size: usize) -> Result<Action, GatewayError> {
        Ok(Action::Continue)
    }

    /// The stream is over (Envoy deletes its context, a VM entry every stream has anyway):
    /// whatever it ended with, completed, reset or abandoned by the client. Stream-independent
    /// host calls only (the clock, shared data, queues).
    fn on_done<H: Host>(&mut self, _host: &H) {}
}

/// A filter's root: its configuration and what its streams share.
pub trait Plugin: Sized + 'static {
    type Http: HttpFilter;
    /// Names the filter in logs.
    const NAME: &'static str;

    fn new() -> Self;

    /// A new plugin configuration. `Err` rejects it (Envoy NACKs it and keeps the last good
    /// one); the message is logged.
    fn configure<H: Host>(&mut self, host: &H, config: &[u8]) -> Result<(), String>;

    /// The filter for a new HTTP stream.
    fn http_context(&mut self) -> Self::Http;

    fn on_tick<H: Host>(&mut self, _host: &H) {}

    /// The answer to a callout this root made ([`Host::http_call`]).
    fn on_http_call_response<H: Host>(&mut self, _host: &H, _token: u32, _num_headers: usize, _body_size: usize) {}

    /// Items are waiting in a shared queue this root registered.
    fn on_queue_ready<H: Host>(&mut self, _host: &H, _queue: u32) {}
}

impl From<HostError> for GatewayError {
    fn from(e: HostError) -> Self {
        GatewayError::new(ErrorKind::Internal, format!("The gateway could not process the request ({e})."))
    }
}

/// Answers the request with `err` in the client's API format. A failure to reply is logged:
/// the caller holds the stream either way, so nothing passes.
pub fn reply_error<H: Host>(host: &H, api: ClientApi, err: &GatewayError) {
    let body = err.to_json(api);
    let mut headers = vec![("content-type", "application/json")];
    if api == ClientApi::Bedrock {
        headers.push(("x-amzn-errortype", err.aws_error_type()));
    }
    if let Err(e) = host.send_response(u32::from(err.status()), &headers, &body) {
        log::error!("could not send the error reply ({e}); the request is held");
    }
}

/// A body the filter reads whole: counts what Envoy has buffered (a body callback that
/// returns [`Action::Pause`] makes Envoy buffer) and reads it once complete.
#[derive(Debug, Default, Clone, Copy)]
pub struct WholeBody {
    size: usize,
}

impl WholeBody {
    /// Records a body callback. `Ok(true)` when the body is complete; `Err` when it passed
    /// `limit` bytes.
    pub fn arrived(&mut self, body_size: usize, end_of_stream: bool, limit: Option<u64>) -> Result<bool, GatewayError> {
        self.size = body_size;
        if let Some(limit) = limit {
            if u64::try_from(body_size).unwrap_or(u64::MAX) > limit {
                return Err(GatewayError::new(
                    ErrorKind::TooLarge,
                    format!("The request body is larger than the gateway's limit of {limit} bytes."),
                )
                .code("request_too_large"));
            }
        }
        Ok(end_of_stream)
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The whole buffered body.
    pub fn read<H: Host>(&self, host: &H, buffer: Buffer) -> Result<Vec<u8>, HostError> {
        host.buffer(buffer, 0, self.size)
    }

    /// Replaces the whole buffered body.
    pub fn replace<H: Host>(&self, host: &H, buffer: Buffer, data: &[u8]) -> Result<(), HostError> {
        host.set_buffer(buffer, 0, self.size, data)
    }
}

/// Declares a filter module: its [`Plugin`] type and the callbacks it exports. Only listed
/// callbacks are exported, so Envoy never enters the VM for the others:
///
/// ```ignore
/// tollgate_wasm::plugin!(GatewayPlugin, [request_headers, request_body, request_trailers]);
/// ```
///
/// Known callbacks: `request_headers`, `request_body`, `request_trailers`,
/// `response_headers`, `response_body`, `tick`, `http_call_response`, `queue_ready`.
/// Configuration and deletion are always exported; context creation never is (a VM entry per
/// stream saved: contexts are made by the [`Dispatcher`] when first needed).
#[macro_export]
macro_rules! plugin {
    ($plugin:ty, [$($callback:ident),* $(,)?]) => {
        thread_local! {
            static TOLLGATE_DISPATCHER: $crate::Dispatcher<$plugin> = $crate::Dispatcher::new();
        }

        /// The module's callback list, as declared (for tests and tools).
        pub const CALLBACKS: &[&str] = &[$(concat!("proxy_on_", stringify!($callback))),*];

        #[cfg(target_arch = "wasm32")]
        extern "C" {
            fn __wasm_call_ctors();
        }

        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn _initialize() {
            // SAFETY: the reactor's constructors, run once by the host before any callback.
            unsafe { __wasm_call_ctors() };
            $crate::install_logger(<$plugin as $crate::Plugin>::NAME);
        }

        #[cfg_attr(target_arch = "wasm32", no_mangle)]
        pub extern "C" fn proxy_on_configure(context_id: u32, size: usize) -> u32 {
            TOLLGATE_DISPATCHER.with(|d| d.configure(context_id, size))
        }

        #[cfg_attr(target_arch = "wasm32", no_mangle)]
        pub extern "C" fn proxy_on_delete(context_id: u32) {
            TOLLGATE_DISPATCHER.with(|d| d.delete(context_id));
        }

        $($crate::plugin!(@callback $callback);)*
    };
    (@callback request_headers) => {
        #[cfg_attr(target_arch = "wasm32", no_mangle)]
        pub extern "C" fn proxy_on_request_headers(context_id: u32, _num_headers: usize, end_of_stream: u32) -> u32 {
            TOLLGATE_DISPATCHER.with(|d| d.request(context_id, |f, h| f.on_request_headers(h, end_of_stream != 0)))
        }
    };
    (@callback request_body) => {
        #[cfg_attr(target_arch = "wasm32", no_mangle)]
        pub extern "C" fn proxy_on_request_body(context_id: u32, body_size: usize, end_of_stream: u32) -> u32 {
            TOLLGATE_DISPATCHER.with(|d| d.request(context_id, |f, h| f.on_request_body(h, body_size, end_of_stream != 0)))
        }
    };
    (@callback request_trailers) => {
        #[cfg_attr(target_arch = "wasm32", no_mangle)]
        pub extern "C" fn proxy_on_request_trailers(context_id: u32, _num_trailers: usize) -> u32 {
            TOLLGATE_DISPATCHER.with(|d| d.request(context_id, |f, h| f.on_request_trailers(h)))
        }
    };
    (@callback response_headers) => {
        #[cfg_attr(target_arch = "wasm32", no_mangle)]
        pub extern "C" fn proxy_on_response_headers(context_id: u32, _num_headers: usize, end_of_stream: u32) -> u32 {
            TOLLGATE_DISPATCHER.with(|d| d.response(context_id, |f, h| f.on_response_headers(h, end_of_stream != 0)))
        }
    };
    (@callback response_body) => {
        #[cfg_attr(target_arch = "wasm32", no_mangle)]
        pub extern "C" fn proxy_on_response_body(context_id: u32, body_size: usize, end_of_stream: u32) -> u32 {
            TOLLGATE_DISPATCHER.with(|d| d.response(context_id, |f, h| f.on_response_body(h, body_size, end_of_stream != 0)))
        }
    };
    (@callback tick) => {
        #[cfg_attr(target_arch = "wasm32", no_mangle)]
        pub extern "C" fn proxy_on_tick(context_id: u32) {
            TOLLGATE_DISPATCHER.with(|d| d.tick(context_id));
        }
    };
    (@callback queue_ready) => {
        #[cfg_attr(target_arch = "wasm32", no_mangle)]
        pub extern "C" fn proxy_on_queue_ready(context_id: u32, queue_id: u32) {
            TOLLGATE_DISPATCHER.with(|d| d.queue_ready(context_id, queue_id));
        }
    };
    (@callback http_call_response) => {
        #[cfg_attr(target_arch = "wasm32", no_mangle)]
        pub extern "C" fn proxy_on_http_call_response(context_id: u32, token: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
            TOLLGATE_DISPATCHER.with(|d| d.http_call_response(context_id, token, num_headers, body_size));
        }
    };
}
