//! Routes Envoy's callbacks to the plugin's root and stream contexts. Each context sits in its
//! own `RefCell` behind an `Rc`, taken out of the map for the call, so a callback that comes
//! while another runs (which Envoy does not do today) finds the context busy and is answered
//! without a panic.
//!
//! Modules do not export `proxy_on_context_create`: Envoy then skips that VM entry for every
//! stream (proxy-wasm-cpp-host leaves "any required in-VM state" to the module). A root is
//! made when Envoy configures it (`proxy_on_configure` names it); a stream is made at its first
//! request callback, from the root whose configuration was accepted last. That is the root
//! Envoy made the stream under when a module has one root per worker (the gateway filter, the
//! service VM: a new configuration is accepted before a stream can use it). A module with
//! several roots at once (the provider filter, one per cluster) must give every root the same
//! configuration, and keep what its streams share per VM rather than per root.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use tollgate_contract::{ClientApi, ErrorKind, GatewayError};

use crate::abi::Buffer;
use crate::host::{Host, Wasm};
use crate::{reply_error, Action, HttpFilter, Plugin};

struct Stream<F> {
    filter: F,
    /// The stream was answered (or failed): every later request callback holds it.
    closed: bool,
}

type Shared<T> = Rc<RefCell<T>>;

/// Hashes the host's context ids (small integers Envoy hands out, not chosen by a client) with
/// one multiplication instead of SipHash: a context is looked up on every callback, and SipHash
/// cost a couple of hundred wasm instructions each time. Also for other keys a client cannot
/// choose (the gateway's key-digest tags, already keyed hashes).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u32(&mut self, id: u32) {
        // Fibonacci hashing: the table takes its control bits from the top of the hash.
        self.0 = (self.0 ^ u64::from(id)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = (self.0 ^ (key as u64) ^ ((key >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type ById<T> = HashMap<u32, T, BuildHasherDefault<IdHasher>>;

pub struct Dispatcher<P: Plugin> {
    roots: RefCell<ById<Shared<P>>>,
    /// Roots whose configuration was accepted, oldest first: new streams are made from the
    /// last.
    accepted: RefCell<Vec<u32>>,
    streams: RefCell<ById<Shared<Stream<P::Http>>>>,
}

impl<P: Plugin> Default for Dispatcher<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Plugin> Dispatcher<P> {
    pub fn new() -> Self {
        Self { roots: RefCell::new(ById::default()), accepted: RefCell::new(Vec::new()), streams: RefCell::new(ById::default()) }
    }

    fn root(&self, id: u32) -> Option<Rc<RefCell<P>>> {
        self.roots.try_borrow().ok()?.get(&id).cloned()
    }

    fn stream(&self, id: u32) -> Option<Rc<RefCell<Stream<P::Http>>>> {
        self.streams.try_borrow().ok()?.get(&id).cloned()
    }

    /// The root `id`, made if Envoy names it for the first time.
    fn root_or_new(&self, id: u32) -> Option<Rc<RefCell<P>>> {
        if let Some(root) = self.root(id) {
            return Some(root);
        }
        let root = Rc::new(RefCell::new(P::new()));
        self.roots.try_borrow_mut().ok()?.insert(id, root.clone());
        Some(root)
    }

    /// The stream `id`, made at its first request callback from the last accepted root.
    fn stream_or_new(&self, id: u32) -> Option<Rc<RefCell<Stream<P::Http>>>> {
        if let Some(stream) = self.stream(id) {
            return Some(stream);
        }
        // None accepted yet: the newest root, whose filter answers that it is not ready.
        let last = self.accepted.try_borrow().ok()?.last().copied().or_else(|| self.roots.try_borrow().ok()?.keys().max().copied());
        let Some(root) = last.and_then(|r| self.root(r)) else {
            log::error!("{}: stream {id} came before any root context; its request is refused", P::NAME);
            return None;
        };
        let filter = root.try_borrow_mut().ok()?.http_context();
        let stream = Rc::new(RefCell::new(Stream { filter, closed: false }));
        self.streams.try_borrow_mut().ok()?.insert(id, stream.clone());
        Some(stream)
    }

    pub fn delete(&self, id: u32) {
        let stream = self.streams.try_borrow_mut().ok().and_then(|mut streams| streams.remove(&id));
        if let Some(stream) = stream {
            if let Ok(mut stream) = stream.try_borrow_mut() {
                stream.filter.on_done(&Wasm);
            }
            return;
        }
        if let Ok(mut roots) = self.roots.try_borrow_mut() {
            roots.remove(&id);
        }
        if let Ok(mut accepted) = self.accepted.try_borrow_mut() {
            accepted.retain(|&r| r != id);
        }
    }

    /// 1 accepts the configuration, 0 rejects it (Envoy keeps the last good one).
    pub fn configure(&self, id: u32, size: usize) -> u32 {
        let Some(root) = self.root_or_new(id) else { return 0 };
        let Ok(mut root) = root.try_borrow_mut() else { return 0 };
        let config = match Wasm.buffer(Buffer::PluginConfiguration, 0, size) {
            Ok(c) => c,
            Err(e) => {
                log::error!("{}: could not read the configuration ({e}); keeping the previous one", P::NAME);
                return 0;
            }
        };
        match root.configure(&Wasm, &config) {
            Ok(()) => {
                if let Ok(mut accepted) = self.accepted.try_borrow_mut() {
                    accepted.retain(|&r| r != id);
                    accepted.push(id);
                }
                1
            }
            Err(e) => {
                log::error!("{}: configuration rejected, keeping the previous one: {e}", P::NAME);
                0
            }
        }
    }

    pub fn tick(&self, id: u32) {
        if let Some(root) = self.root(id) {
            if let Ok(mut root) = root.try_borrow_mut() {
                root.on_tick(&Wasm);
            }
        }
    }

    pub fn queue_ready(&self, id: u32, queue: u32) {
        if let Some(root) = self.root(id) {
            if let Ok(mut root) = root.try_borrow_mut() {
                root.on_queue_ready(&Wasm, queue);
            }
        }
    }

    pub fn http_call_response(&self, id: u32, token: u32, num_headers: usize, body_size: usize) {
        // A stream's callout: Envoy answers it on the root context (the proxy-wasm SDKs keep
        // their own map of tokens for this), so the stream that waits for it is looked up and
        // made the effective context before it is called.
        let waiting = if self.stream(id).is_some() { Some(id) } else { self.stream_waiting_for(token) };
        if let Some(stream) = waiting {
            if stream != id {
                if let Err(e) = crate::abi::set_effective_context(stream) {
                    log::warn!("{}: could not switch to the stream waiting for a callout ({e})", P::NAME);
                    return;
                }
            }
            // Resumed on `Continue`; an error was answered (a local reply) and a `Pause` keeps
            // waiting.
            let action = self.request(stream, |f, h| f.on_http_call_response(h, token, num_headers, body_size));
            if action == Action::Continue as u32 {
                if let Err(e) = Wasm.continue_request() {
                    log::warn!("{}: could not resume a request after its callout ({e})", P::NAME);
                }
            }
            return;
        }
        if let Some(root) = self.root(id) {
            if let Ok(mut root) = root.try_borrow_mut() {
                root.on_http_call_response(&Wasm, token, num_headers, body_size);
            }
        }
    }

    fn stream_waiting_for(&self, token: u32) -> Option<u32> {
        let streams = self.streams.try_borrow().ok()?;
        streams.iter().find(|(_, s)| s.try_borrow().is_ok_and(|s| s.filter.waits_for(token))).map(|(id, _)| *id)
    }

    /// A request-path callback. An error is answered in the client's format and the stream
    /// is held; so is a stream that is unknown, busy or already answered. Nothing passes by
    /// failure.
    pub fn request(&self, id: u32, call: impl FnOnce(&mut P::Http, &Wasm) -> Result<Action, GatewayError>) -> u32 {
        let Some(stream) = self.stream_or_new(id) else {
            let err = GatewayError::new(ErrorKind::Internal, "The gateway could not process the request.");
            reply_error(&Wasm, ClientApi::OpenAi, &err);
            return Action::Pause as u32;
        };
        let Ok(mut stream) = stream.try_borrow_mut() else { return Action::Pause as u32 };
        if stream.closed {
            return Action::Pause as u32;
        }
        match call(&mut stream.filter, &Wasm) {
            Ok(action) => action as u32,
            Err(e) => {
                stream.closed = true;
                if !matches!(e.kind, ErrorKind::InvalidRequest | ErrorKind::Authentication | ErrorKind::Permission | ErrorKind::NotFound | ErrorKind::MethodNotAllowed | ErrorKind::TooLarge | ErrorKind::UnsupportedMediaType) {
                    log::warn!("{}: {e}", P::NAME);
                }
                reply_error(&Wasm, stream.filter.client_api(), &e);
                Action::Pause as u32
            }
        }
    }

    /// A response-path callback. The provider has answered: an error is logged and the
    /// response goes on as it is.
    pub fn response(&self, id: u32, call: impl FnOnce(&mut P::Http, &Wasm) -> Result<Action, GatewayError>) -> u32 {
        let Some(stream) = self.stream(id) else { return Action::Continue as u32 };
        let Ok(mut stream) = stream.try_borrow_mut() else { return Action::Continue as u32 };
        match call(&mut stream.filter, &Wasm) {
            Ok(action) => action as u32,
            Err(e) => {
                log::warn!("{}: response: {e}", P::NAME);
                Action::Continue as u32
            }
        }
    }
}
