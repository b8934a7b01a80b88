//! A wasm filter that does nothing and continues at once, on the same adapter as Tollgate's
//! filters (`tollgate-wasm`). The benchmark's `envoy-wasm-noop` target runs two of them (one
//! downstream, one upstream, exporting only `proxy_on_request_headers`), so the cost of merely
//! having two wasm filters in Envoy is measured beside Tollgate's own in every run: Tollgate
//! minus this is what its filters' work (host calls, body copies, parsing) costs.

use tollgate_contract::ClientApi;
use tollgate_wasm::{Host, HttpFilter, Plugin};

tollgate_wasm::plugin!(NoopPlugin, [request_headers]);

pub struct NoopPlugin;

impl Plugin for NoopPlugin {
    type Http = Noop;
    const NAME: &'static str = "noop filter";

    fn new() -> Self {
        NoopPlugin
    }

    fn configure<H: Host>(&mut self, _host: &H, _config: &[u8]) -> Result<(), String> {
        Ok(())
    }

    fn http_context(&mut self) -> Noop {
        Noop
    }
}

pub struct Noop;

impl HttpFilter for Noop {
    fn client_api(&self) -> ClientApi {
        ClientApi::OpenAi
    }
}
