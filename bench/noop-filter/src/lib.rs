//! A wasm filter that does nothing and continues at once, on the same adapter as Tollgate's
//! filters (`tollgate-wasm`). The benchmark's `envoy-wasm-noop` target runs two of them (one
//! downstream, one upstream), so the cost of merely having two wasm filters in Envoy is
//! measured beside Tollgate's own in every run. Each exports the request and response header and
//! body callbacks, the ones a gateway that meters usage is entered for (Envoy enters the VM for
//! each on every request); with no calls configured each returns at once.
//!
//! Its configuration may name host calls to make on every request, by phase
//! (`[phase.]kind=count,...`, e.g. `get_header=20` or `body.get_body=1`): `bench/crossing_costs.py`
//! counts Envoy's instructions with and without them, which is what one host call of each kind
//! costs Envoy (the VM crossing, the host's work, and the buffer it hands back), measured rather
//! than guessed; the `envoy-wasm-crossings` target configures Tollgate's own crossings for a
//! chat, so that what they cost is measured apart from Tollgate's code. A filter with calls in
//! the request body phase holds the request until its body is whole (as Tollgate's filters do
//! to read it).

use std::rc::Rc;

use tollgate_contract::{ClientApi, GatewayError};
use tollgate_wasm::{Action, Buffer, Host, HttpFilter, Map, Plugin};

tollgate_wasm::plugin!(NoopPlugin, [request_headers, request_body, response_headers, response_body]);

/// A host call the configuration may ask for (the kinds Tollgate's filters make).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `get_header_map_value` of `:path`.
    GetHeader,
    /// `get_header_map_pairs` of the request headers.
    GetHeaders,
    /// `replace_header_map_value` of a request header (a response header in the response's
    /// phases).
    SetHeader,
    /// `remove_header_map_value` of an absent request header.
    RemoveHeader,
    /// `get_property` of `request.path`.
    GetProperty,
    /// `set_property` of a 64-byte value.
    SetProperty,
    /// `get_shared_data` of a 64-byte value.
    GetSharedData,
    /// `set_shared_data` of a 64-byte value (no compare-and-swap).
    SetSharedData,
    /// `get_current_time_nanoseconds`.
    Now,
    /// `get_shared_data` of a key never set (nothing handed back).
    GetSharedAbsent,
    /// `get_buffer_bytes` of the phase's whole body (the request's or the response's).
    GetBody,
    /// `set_buffer_bytes`: the phase's whole body replaced by itself (as a `GetBody` before it
    /// read it, so that the pair costs what a filter reading and rewriting a body does).
    SetBody,
    /// `get_header_map_value` of the response's `:status`.
    GetStatus,
    /// `add_header_map_value` of a header of the phase's map.
    AddHeader,
    /// The phase's header map read whole (`get_header_map_pairs`) and written back whole with
    /// six rate-limit headers more (`set_header_map_pairs`): one way to write many headers.
    SixByPairs,
}

/// When a call is made: in which callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Headers,
    /// The request body, once whole.
    Body,
    ResponseHeaders,
    /// Each chunk of the response body.
    ResponseBody,
}

impl Phase {
    const ALL: [(&'static str, Phase); 4] =
        [("headers", Phase::Headers), ("body", Phase::Body), ("response_headers", Phase::ResponseHeaders), ("response_body", Phase::ResponseBody)];

    /// The header map a `SetHeader` of this phase writes.
    fn headers(self) -> Map {
        match self {
            Phase::Headers | Phase::Body => Map::RequestHeaders,
            Phase::ResponseHeaders | Phase::ResponseBody => Map::ResponseHeaders,
        }
    }

    /// The body a `GetBody` or `SetBody` call of this phase reads or writes.
    fn buffer(self) -> Buffer {
        match self {
            Phase::Headers | Phase::Body => Buffer::RequestBody,
            Phase::ResponseHeaders | Phase::ResponseBody => Buffer::ResponseBody,
        }
    }
}

impl Call {
    pub const ALL: [(&'static str, Call); 15] = [
        ("get_header", Call::GetHeader),
        ("get_headers", Call::GetHeaders),
        ("set_header", Call::SetHeader),
        ("remove_header", Call::RemoveHeader),
        ("get_property", Call::GetProperty),
        ("set_property", Call::SetProperty),
        ("get_shared_data", Call::GetSharedData),
        ("set_shared_data", Call::SetSharedData),
        ("now", Call::Now),
        ("get_shared_absent", Call::GetSharedAbsent),
        ("get_body", Call::GetBody),
        ("set_body", Call::SetBody),
        ("get_status", Call::GetStatus),
        ("add_header", Call::AddHeader),
        ("six_by_pairs", Call::SixByPairs),
    ];

    /// `read`: the body a `GetBody` of this phase read (what a `SetBody` writes back).
    fn make<H: Host>(self, host: &H, phase: Phase, body_size: usize, read: &mut Option<Vec<u8>>) -> Result<(), tollgate_wasm::HostError> {
        match self {
            Call::GetHeader => host.header(Map::RequestHeaders, ":path").map(drop),
            Call::GetHeaders => host.headers(Map::RequestHeaders).map(drop),
            Call::SetHeader => host.set_header(phase.headers(), "x-noop", Some(b"1")),
            Call::RemoveHeader => host.set_header(Map::RequestHeaders, "x-noop-absent", None),
            Call::GetProperty => host.property(&["request", "path"]).map(drop),
            Call::SetProperty => host.set_property(&["noop_state"], &VALUE),
            Call::GetSharedData => host.shared_data(SHARED_KEY).map(drop),
            Call::SetSharedData => host.set_shared_data(SHARED_KEY, &VALUE, None),
            Call::Now => host.now().map(drop),
            Call::GetSharedAbsent => host.shared_data(ABSENT_KEY).map(drop),
            Call::GetBody => {
                *read = Some(host.buffer(phase.buffer(), 0, body_size)?);
                Ok(())
            }
            Call::SetBody => {
                let body = match read.take() {
                    Some(b) => b,
                    None => host.buffer(phase.buffer(), 0, body_size)?,
                };
                host.set_buffer(phase.buffer(), 0, body_size, &body)
            }
            Call::GetStatus => host.header(Map::ResponseHeaders, ":status").map(drop),
            Call::AddHeader => host.add_header(phase.headers(), "x-noop-add", b"1"),
            Call::SixByPairs => {
                let map = host.headers(phase.headers())?;
                let six = SIX.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
                host.set_headers(phase.headers(), map.iter_bytes().chain(six))
            }
        }
    }
}

const VALUE: [u8; 64] = [b'v'; 64];

/// Six headers as Tollgate's rate limits write them.
const SIX: [(&str, &str); 6] = [
    ("x-ratelimit-limit-requests", "600"),
    ("x-ratelimit-remaining-requests", "599"),
    ("x-ratelimit-reset-requests", "12s"),
    ("x-ratelimit-limit-tokens", "60000"),
    ("x-ratelimit-remaining-tokens", "59000"),
    ("x-ratelimit-reset-tokens", "12s"),
];
const SHARED_KEY: &str = "noop.value";
const ABSENT_KEY: &str = "noop.absent";

/// A configured call: its phase, kind and how many a request.
pub type Calls = Vec<(Phase, Call, u32)>;

/// `[phase.]kind=count,...` (empty: none; no phase: the request headers).
pub fn parse_calls(config: &[u8]) -> Result<Calls, String> {
    let text = std::str::from_utf8(config).map_err(|_| "the configuration is not UTF-8".to_owned())?;
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, count) = item.split_once('=').ok_or_else(|| format!("`{item}`: expected [phase.]kind=count"))?;
        let (phase, name) = match name.trim().split_once('.') {
            Some((p, n)) => (Phase::ALL.iter().find(|(pn, _)| *pn == p).map(|(_, p)| *p).ok_or_else(|| format!("unknown phase `{p}`"))?, n),
            None => (Phase::Headers, name.trim()),
        };
        let call = Call::ALL.iter().find(|(n, _)| *n == name).map(|(_, c)| *c).ok_or_else(|| format!("unknown call `{name}`"))?;
        let count = count.trim().parse::<u32>().map_err(|_| format!("`{item}`: the count is not a number"))?;
        out.push((phase, call, count));
    }
    Ok(out)
}

pub struct NoopPlugin {
    calls: Rc<Calls>,
}

impl Plugin for NoopPlugin {
    type Http = Noop;
    const NAME: &'static str = "noop filter";

    fn new() -> Self {
        NoopPlugin { calls: Rc::default() }
    }

    fn configure<H: Host>(&mut self, host: &H, config: &[u8]) -> Result<(), String> {
        let calls = parse_calls(config)?;
        if calls.iter().any(|(_, c, _)| *c == Call::GetSharedData) {
            host.set_shared_data(SHARED_KEY, &VALUE, None).map_err(|e| e.to_string())?;
        }
        self.calls = Rc::new(calls);
        Ok(())
    }

    fn http_context(&mut self) -> Noop {
        Noop { calls: self.calls.clone() }
    }
}

pub struct Noop {
    calls: Rc<Calls>,
}

impl Noop {
    fn make<H: Host>(&self, host: &H, phase: Phase, body_size: usize) -> Result<(), GatewayError> {
        let mut read = None;
        for &(p, call, count) in self.calls.iter().filter(|(p, _, _)| *p == phase) {
            for _ in 0..count {
                call.make(host, p, body_size, &mut read).map_err(GatewayError::from)?;
            }
        }
        Ok(())
    }

    fn has(&self, phase: Phase) -> bool {
        self.calls.iter().any(|(p, _, _)| *p == phase)
    }
}

impl HttpFilter for Noop {
    fn client_api(&self) -> ClientApi {
        ClientApi::OpenAi
    }

    fn on_request_headers<H: Host>(&mut self, host: &H, end_of_stream: bool) -> Result<Action, GatewayError> {
        self.make(host, Phase::Headers, 0)?;
        // Held until the body is whole when the body phase reads it.
        Ok(if self.has(Phase::Body) && !end_of_stream { Action::Pause } else { Action::Continue })
    }

    fn on_request_body<H: Host>(&mut self, host: &H, body_size: usize, end_of_stream: bool) -> Result<Action, GatewayError> {
        if !self.has(Phase::Body) {
            return Ok(Action::Continue);
        }
        if !end_of_stream {
            return Ok(Action::Pause);
        }
        self.make(host, Phase::Body, body_size)?;
        Ok(Action::Continue)
    }

    fn on_response_headers<H: Host>(&mut self, host: &H, _end_of_stream: bool) -> Result<Action, GatewayError> {
        self.make(host, Phase::ResponseHeaders, 0)?;
        Ok(Action::Continue)
    }

    fn on_response_body<H: Host>(&mut self, host: &H, body_size: usize, _end_of_stream: bool) -> Result<Action, GatewayError> {
        if body_size > 0 {
            self.make(host, Phase::ResponseBody, body_size)?;
        }
        Ok(Action::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_parsed_and_bad_ones_refused() {
        assert_eq!(parse_calls(b"").unwrap(), vec![]);
        assert_eq!(parse_calls(b"get_header=20, now=3").unwrap(), vec![(Phase::Headers, Call::GetHeader, 20), (Phase::Headers, Call::Now, 3)]);
        assert_eq!(
            parse_calls(b"body.get_body=1,response_body.now=2").unwrap(),
            vec![(Phase::Body, Call::GetBody, 1), (Phase::ResponseBody, Call::Now, 2)]
        );
        assert!(parse_calls(b"trailers.now=1").is_err());
        assert!(parse_calls(b"get_header").is_err());
        assert!(parse_calls(b"teleport=1").is_err());
        assert!(parse_calls(b"now=x").is_err());
        assert!(parse_calls(&[0xff]).is_err());
    }
}
