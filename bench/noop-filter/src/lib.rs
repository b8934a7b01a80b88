//! A wasm filter that does nothing and continues at once, on the same adapter as Tollgate's
//! filters (`tollgate-wasm`). The benchmark's `envoy-wasm-noop` target runs two of them (one
//! downstream, one upstream, exporting only `proxy_on_request_headers`), so the cost of merely
//! having two wasm filters in Envoy is measured beside Tollgate's own in every run: Tollgate
//! minus this is what its filters' work (host calls, body copies, parsing) costs.
//!
//! Its configuration may name host calls to make on every request (`kind=count,...`, e.g.
//! `get_header=20`): `bench/crossing_costs.py` counts Envoy's instructions with and without
//! them, which is what one host call of each kind costs Envoy (the VM crossing, the host's
//! work, and the buffer it hands back), measured rather than guessed.

use std::rc::Rc;

use tollgate_contract::{ClientApi, GatewayError};
use tollgate_wasm::{Action, Host, HttpFilter, Map, Plugin};

tollgate_wasm::plugin!(NoopPlugin, [request_headers]);

/// A host call the configuration may ask for (the kinds Tollgate's filters make).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `get_header_map_value` of `:path`.
    GetHeader,
    /// `get_header_map_pairs` of the request headers.
    GetHeaders,
    /// `replace_header_map_value` of a request header.
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
}

impl Call {
    pub const ALL: [(&'static str, Call); 9] = [
        ("get_header", Call::GetHeader),
        ("get_headers", Call::GetHeaders),
        ("set_header", Call::SetHeader),
        ("remove_header", Call::RemoveHeader),
        ("get_property", Call::GetProperty),
        ("set_property", Call::SetProperty),
        ("get_shared_data", Call::GetSharedData),
        ("set_shared_data", Call::SetSharedData),
        ("now", Call::Now),
    ];

    fn make<H: Host>(self, host: &H) -> Result<(), tollgate_wasm::HostError> {
        match self {
            Call::GetHeader => host.header(Map::RequestHeaders, ":path").map(drop),
            Call::GetHeaders => host.headers(Map::RequestHeaders).map(drop),
            Call::SetHeader => host.set_header(Map::RequestHeaders, "x-noop", Some(b"1")),
            Call::RemoveHeader => host.set_header(Map::RequestHeaders, "x-noop-absent", None),
            Call::GetProperty => host.property(&["request", "path"]).map(drop),
            Call::SetProperty => host.set_property(&["noop_state"], &VALUE),
            Call::GetSharedData => host.shared_data(SHARED_KEY).map(drop),
            Call::SetSharedData => host.set_shared_data(SHARED_KEY, &VALUE, None),
            Call::Now => host.now().map(drop),
        }
    }
}

const VALUE: [u8; 64] = [b'v'; 64];
const SHARED_KEY: &str = "noop.value";

/// `kind=count,...` (empty: none).
pub fn parse_calls(config: &[u8]) -> Result<Vec<(Call, u32)>, String> {
    let text = std::str::from_utf8(config).map_err(|_| "the configuration is not UTF-8".to_owned())?;
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, count) = item.split_once('=').ok_or_else(|| format!("`{item}`: expected kind=count"))?;
        let call = Call::ALL.iter().find(|(n, _)| *n == name.trim()).map(|(_, c)| *c).ok_or_else(|| format!("unknown call `{name}`"))?;
        let count = count.trim().parse::<u32>().map_err(|_| format!("`{item}`: the count is not a number"))?;
        out.push((call, count));
    }
    Ok(out)
}

pub struct NoopPlugin {
    calls: Rc<Vec<(Call, u32)>>,
}

impl Plugin for NoopPlugin {
    type Http = Noop;
    const NAME: &'static str = "noop filter";

    fn new() -> Self {
        NoopPlugin { calls: Rc::default() }
    }

    fn configure<H: Host>(&mut self, host: &H, config: &[u8]) -> Result<(), String> {
        let calls = parse_calls(config)?;
        if calls.iter().any(|(c, _)| *c == Call::GetSharedData) {
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
    calls: Rc<Vec<(Call, u32)>>,
}

impl HttpFilter for Noop {
    fn client_api(&self) -> ClientApi {
        ClientApi::OpenAi
    }

    fn on_request_headers<H: Host>(&mut self, host: &H, _end_of_stream: bool) -> Result<Action, GatewayError> {
        for &(call, count) in self.calls.iter() {
            for _ in 0..count {
                call.make(host).map_err(GatewayError::from)?;
            }
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
        assert_eq!(parse_calls(b"get_header=20, now=3").unwrap(), vec![(Call::GetHeader, 20), (Call::Now, 3)]);
        assert!(parse_calls(b"get_header").is_err());
        assert!(parse_calls(b"teleport=1").is_err());
        assert!(parse_calls(b"now=x").is_err());
        assert!(parse_calls(&[0xff]).is_err());
    }
}
