//! The gateway and provider filters' code, compiled for the machine rather than for wasm, driven
//! through one scenario's requests by an in-memory host: run under callgrind it counts the
//! filters' own instructions by function (V8's code for the wasm has no symbols under
//! callgrind, and the harness's fuel counts only callbacks). `bench/native_profile.py` writes
//! the fixture (from the wasm harness's fixtures), runs this under callgrind for the quota chat
//! and the priced one, and prints what the quotas add, by callback and by function.
//!
//!     native-profile FIXTURE priced|quotas [REQUESTS] [PER_TICK]
//!
//! The host keeps headers, bodies, properties and shared data in memory (shared data with CAS
//! tokens, one store for both filters as Envoy's is per process); its own cost is in functions
//! of this crate, which the script leaves out. Counts are native x86 instructions, not Envoy's
//! for V8's code of the same wasm (about twice as many wasm instructions run, by the harness's
//! fuel), so they say where the code's cost is, not what Envoy pays.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tollgate_contract::GatewayError;
use tollgate_gateway_filter::GatewayPlugin;
use tollgate_provider_filter::ProviderPlugin;
use tollgate_wasm::{Action, Buffer, Headers, Host, HostError, HttpFilter, Map, Plugin};

/// One scenario, bytes as hex (see `bench/native_profile.py`).
#[derive(Deserialize)]
struct Fixture {
    /// By target (`priced`, `quotas`): the gateway's configuration and the shared data it starts
    /// with (the key table, the leases in hand, the credentials).
    targets: BTreeMap<String, Target>,
    request_headers: Vec<(String, String)>,
    body: String,
    deployment: String,
    deployment_path: Vec<String>,
    content_type: String,
    chunks: Vec<String>,
    /// Unix seconds at the start of the run.
    now: u64,
}

#[derive(Deserialize)]
struct Target {
    config: String,
    shared: BTreeMap<String, String>,
}

type Pairs = Vec<(String, Vec<u8>)>;

/// What one stream has in the host.
#[derive(Default, Clone)]
struct Stream {
    request_headers: Pairs,
    response_headers: Pairs,
    request_body: Vec<u8>,
    response_body: Vec<u8>,
    properties: HashMap<Vec<String>, Vec<u8>>,
    local_reply: Option<u32>,
}

/// Host calls counted (per filter), by kind.
const KINDS: [&str; 12] =
    ["get_header_map_pairs", "get_header", "replace_header", "add_header", "set_header_map_pairs", "get_buffer", "set_buffer", "get_property", "set_property", "get_shared_data", "set_shared_data", "clock"];

struct SharedStore {
    values: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

struct MemoryHost {
    shared: Rc<RefCell<SharedStore>>,
    now_ns: Rc<Cell<u64>>,
    stream: RefCell<Stream>,
    calls: RefCell<[u64; KINDS.len()]>,
}

fn failed(call: &'static str) -> HostError {
    HostError { call, status: 2 }
}

fn serialize(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = len(pairs.len()).to_vec();
    for (n, v) in pairs {
        out.extend_from_slice(&len(n.len()));
        out.extend_from_slice(&len(v.len()));
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

impl MemoryHost {
    fn count(&self, kind: &str) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            if let Some(c) = self.calls.borrow_mut().get_mut(i) {
                *c += 1;
            }
        }
    }

    fn with_map<T>(&self, map: Map, f: impl FnOnce(&mut Pairs) -> T) -> T {
        let mut s = self.stream.borrow_mut();
        match map {
            Map::RequestHeaders => f(&mut s.request_headers),
            _ => f(&mut s.response_headers),
        }
    }

    fn with_buffer<T>(&self, buffer: Buffer, f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
        let mut s = self.stream.borrow_mut();
        match buffer {
            Buffer::RequestBody => f(&mut s.request_body),
            _ => f(&mut s.response_body),
        }
    }
}

impl Host for MemoryHost {
    #[inline(never)]
    fn headers(&self, map: Map) -> Result<Headers, HostError> {
        self.count("get_header_map_pairs");
        Headers::parse(self.with_map(map, |m| serialize(m))).ok_or_else(|| failed("get_header_map_pairs"))
    }

    #[inline(never)]
    fn header(&self, map: Map, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.count("get_header");
        Ok(self.with_map(map, |m| m.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())))
    }

    #[inline(never)]
    fn set_header(&self, map: Map, name: &str, value: Option<&[u8]>) -> Result<(), HostError> {
        self.count("replace_header");
        self.with_map(map, |m| {
            m.retain(|(n, _)| n != name);
            if let Some(v) = value {
                m.push((name.to_owned(), v.to_vec()));
            }
        });
        Ok(())
    }

    #[inline(never)]
    fn add_header(&self, map: Map, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.count("add_header");
        self.with_map(map, |m| m.push((name.to_owned(), value.to_vec())));
        Ok(())
    }

    #[inline(never)]
    fn set_headers<'a>(&self, map: Map, pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Result<(), HostError> {
        self.count("set_header_map_pairs");
        let pairs: Pairs = pairs.map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.to_vec())).collect();
        self.with_map(map, |m| *m = pairs);
        Ok(())
    }

    #[inline(never)]
    fn buffer(&self, buffer: Buffer, start: usize, size: usize) -> Result<Vec<u8>, HostError> {
        self.count("get_buffer");
        Ok(self.with_buffer(buffer, |b| {
            let end = start.saturating_add(size).min(b.len());
            b.get(start.min(end)..end).unwrap_or_default().to_vec()
        }))
    }

    #[inline(never)]
    fn set_buffer(&self, buffer: Buffer, start: usize, size: usize, data: &[u8]) -> Result<(), HostError> {
        self.count("set_buffer");
        self.with_buffer(buffer, |b| {
            let end = start.saturating_add(size).min(b.len());
            b.splice(start.min(end)..end, data.iter().copied());
        });
        Ok(())
    }

    #[inline(never)]
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        self.count("get_property");
        let key: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        Ok(self.stream.borrow().properties.get(&key).cloned())
    }

    #[inline(never)]
    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        self.count("set_property");
        let key: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        self.stream.borrow_mut().properties.insert(key, value.to_vec());
        Ok(())
    }

    #[inline(never)]
    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), HostError> {
        self.count("get_shared_data");
        Ok(self.shared.borrow().values.get(key).map_or((None, 0), |(v, cas)| (Some(v.clone()), *cas)))
    }

    #[inline(never)]
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        self.count("set_shared_data");
        let mut store = self.shared.borrow_mut();
        // proxy-wasm-cpp-host: a CAS token only guards a key that exists.
        if let (Some(token), Some((_, current))) = (cas.filter(|c| *c != 0), store.values.get(key)) {
            if token != *current {
                return Err(HostError { call: "set_shared_data", status: 8 });
            }
        }
        store.next_cas = store.next_cas.wrapping_add(1);
        let token = store.next_cas;
        store.values.insert(key.to_owned(), (value.to_vec(), token));
        Ok(())
    }

    #[inline(never)]
    fn now(&self) -> Result<SystemTime, HostError> {
        self.count("clock");
        Ok(UNIX_EPOCH + Duration::from_nanos(self.now_ns.get()))
    }

    #[inline(never)]
    fn send_response(&self, status: u32, _headers: &[(&str, &str)], _body: &[u8]) -> Result<(), HostError> {
        self.stream.borrow_mut().local_reply = Some(status);
        Ok(())
    }

    fn http_call(&self, _cluster: &str, _headers: &[(&str, &str)], _body: &[u8], _timeout: Duration) -> Result<u32, HostError> {
        Err(failed("http_call"))
    }

    fn set_tick_period(&self, _period: Duration) -> Result<(), HostError> {
        Ok(())
    }

    fn continue_request(&self) -> Result<(), HostError> {
        Ok(())
    }

    fn register_queue(&self, _name: &str) -> Result<u32, HostError> {
        Ok(1)
    }

    fn resolve_queue(&self, _vm_id: &str, _name: &str) -> Result<u32, HostError> {
        Ok(1)
    }

    fn enqueue(&self, _queue: u32, _value: &[u8]) -> Result<(), HostError> {
        Ok(())
    }

    fn dequeue(&self, _queue: u32) -> Result<Option<Vec<u8>>, HostError> {
        Ok(None)
    }

    fn define_counter(&self, _name: &str) -> Result<u32, HostError> {
        Ok(1)
    }

    fn increment_counter(&self, _id: u32, _by: u64) -> Result<(), HostError> {
        Ok(())
    }
}

// Each callback through a function of its own, never inlined: callgrind counts from its entry
// to its return (`bench/native_profile.py` toggles collection on these and off again inside the
// host's methods), and reports each by name.
macro_rules! callbacks {
    ($($name:ident($filter:ty $(, $arg:ident: $ty:ty)*) -> $ret:ty => $call:ident;)*) => {
        $(#[inline(never)]
        fn $name(f: &mut $filter, h: &MemoryHost $(, $arg: $ty)*) -> $ret {
            f.$call(h $(, $arg)*)
        })*
    };
}

type Gw = <GatewayPlugin as Plugin>::Http;
type Pv = <ProviderPlugin as Plugin>::Http;

type Step = Result<Action, GatewayError>;

callbacks! {
    gateway_on_request_headers(Gw, eos: bool) -> Step => on_request_headers;
    gateway_on_request_body(Gw, size: usize, eos: bool) -> Step => on_request_body;
    gateway_on_done(Gw) -> () => on_done;
    gateway_on_tick(GatewayPlugin) -> () => on_tick;
    provider_on_request_headers(Pv, eos: bool) -> Step => on_request_headers;
    provider_on_request_body(Pv, size: usize, eos: bool) -> Step => on_request_body;
    provider_on_response_headers(Pv, eos: bool) -> Step => on_response_headers;
    provider_on_response_body(Pv, size: usize, eos: bool) -> Step => on_response_body;
    provider_on_done(Pv) -> () => on_done;
    provider_on_tick(ProviderPlugin) -> () => on_tick;
}

fn unhex(what: &str, s: &str) -> Result<Vec<u8>, String> {
    hex::decode(s).map_err(|e| format!("the fixture's {what} is not hex ({e})"))
}

fn step(what: &str, r: Result<Action, GatewayError>) -> Result<Action, String> {
    r.map_err(|e| format!("{what} failed: {e:?}"))
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: native-profile FIXTURE priced|quotas [REQUESTS] [PER_TICK]";
    let (Some(path), Some(which)) = (args.get(1), args.get(2)) else { return Err(usage.to_owned()) };
    let requests: usize = args.get(3).map_or(Ok(3000), |s| s.parse()).map_err(|_| usage.to_owned())?;
    let per_tick: usize = args.get(4).map_or(Ok(400), |s| s.parse()).map_err(|_| usage.to_owned())?.max(1);
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path} ({e})"))?;
    let fx: Fixture = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let target = fx.targets.get(which).ok_or_else(|| format!("the fixture has no target {which}"))?;

    let mut values = HashMap::new();
    for (k, v) in &target.shared {
        values.insert(k.clone(), (unhex("shared data", v)?, 1));
    }
    let shared = Rc::new(RefCell::new(SharedStore { values, next_cas: 1 }));
    let now_ns = Rc::new(Cell::new(fx.now.saturating_mul(1_000_000_000)));
    let host = || MemoryHost { shared: shared.clone(), now_ns: now_ns.clone(), stream: RefCell::default(), calls: RefCell::new([0; KINDS.len()]) };
    let (gh, ph) = (host(), host());
    let mut gateway = GatewayPlugin::new();
    gateway.configure(&gh, &unhex("config", &target.config)?)?;
    let mut provider = ProviderPlugin::new();
    provider.configure(&ph, b"")?;

    let request_headers: Pairs = fx.request_headers.iter().map(|(n, v)| (n.clone(), v.as_bytes().to_vec())).collect();
    let body = unhex("body", &fx.body)?;
    let deployment = unhex("deployment", &fx.deployment)?;
    let chunks = fx.chunks.iter().map(|c| unhex("chunk", c)).collect::<Result<Vec<_>, _>>()?;
    let provider_every = (per_tick * 5 / 2).max(1);
    for i in 0..requests {
        *gh.stream.borrow_mut() = Stream { request_headers: request_headers.clone(), request_body: body.clone(), ..Stream::default() };
        let mut down = gateway.http_context();
        step("the gateway's request headers", gateway_on_request_headers(&mut down, &gh, false))?;
        let action = step("the gateway's request body", gateway_on_request_body(&mut down, &gh, body.len(), true))?;
        let sent = gh.stream.borrow().clone();
        if action != Action::Continue || sent.local_reply.is_some() {
            return Err(format!("request {i} was not let through by the gateway ({:?}, reply {:?})", action, sent.local_reply));
        }
        let mut properties = sent.properties;
        properties.insert(fx.deployment_path.clone(), deployment.clone());
        let up_body = sent.request_body;
        *ph.stream.borrow_mut() = Stream { request_headers: sent.request_headers, request_body: up_body.clone(), properties, ..Stream::default() };
        let mut up = provider.http_context();
        if step("the provider's request headers", provider_on_request_headers(&mut up, &ph, false))? == Action::Pause {
            step("the provider's request body", provider_on_request_body(&mut up, &ph, up_body.len(), true))?;
        }
        if let Some(status) = ph.stream.borrow().local_reply {
            return Err(format!("request {i} was answered {status} by the provider filter"));
        }
        ph.stream.borrow_mut().response_headers = vec![(":status".to_owned(), b"200".to_vec()), ("content-type".to_owned(), fx.content_type.as_bytes().to_vec())];
        step("the provider's response headers", provider_on_response_headers(&mut up, &ph, false))?;
        let mut size = 0;
        for (j, chunk) in chunks.iter().enumerate() {
            ph.stream.borrow_mut().response_body.extend_from_slice(chunk);
            size += chunk.len();
            step("the provider's response body", provider_on_response_body(&mut up, &ph, size, j + 1 == chunks.len()))?;
        }
        provider_on_done(&mut up, &ph);
        gateway_on_done(&mut down, &gh);
        if i % per_tick == per_tick - 1 {
            // The gateway's tick is 100 ms.
            now_ns.set(now_ns.get().saturating_add(100_000_000));
            gateway_on_tick(&mut gateway, &gh);
        }
        if i % provider_every == provider_every - 1 {
            provider_on_tick(&mut provider, &ph);
        }
    }
    let per_request = |h: &MemoryHost| -> BTreeMap<&str, f64> {
        KINDS.iter().zip(h.calls.borrow().iter()).filter(|(_, n)| **n > 0).map(|(k, n)| (*k, *n as f64 / requests as f64)).collect()
    };
    let out = serde_json::json!({ "target": which, "requests": requests, "per_tick": per_tick,
        "host_calls": { "gateway": per_request(&gh), "provider": per_request(&ph) } });
    println!("{out}");
    Ok(())
}
