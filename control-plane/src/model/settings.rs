//! The `settings:` blocks for the client edge (Envoy's limits and timeouts) and for egress (which
//! provider URLs may be used). Defaults are the safe ones; an operator loosens them explicitly.

use serde::{Deserialize, Serialize};

/// Envoy's client-facing limits, after Envoy's "Configuring Envoy as an edge proxy" page.
///
/// The three timeouts cover different things, so that slow clients are cut without cutting
/// long generations:
/// - `request_headers_timeout_seconds`: from the first byte of the headers to the last (a client
///   dripping headers is cut; a 408 or a closed connection).
/// - `request_receive_timeout_seconds` (Envoy's HCM `request_timeout`): from the start of the
///   request until its body has been received. It stops when the request is complete or the
///   response starts, so it never limits a streamed answer (a client dripping the body gets a
///   408). The whole exchange, answer included, is limited by `request_timeout_seconds`.
/// - `stream_idle_timeout_seconds`: no byte in either direction for this long resets the stream;
///   it must exceed the longest pause of a model that thinks before its first token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSettings {
    pub request_headers_timeout_seconds: u64,
    pub request_receive_timeout_seconds: u64,
    pub stream_idle_timeout_seconds: u64,
    /// A connection with no active stream for this long is closed.
    pub connection_idle_timeout_seconds: u64,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Size limit of the request headers (431 beyond it).
    pub max_request_headers_kb: u32,
    /// Count limit of the request headers (431 beyond it).
    pub max_headers_count: u32,
    /// Proxies in front of Envoy whose `X-Forwarded-For` entries are trusted (0: Envoy is the
    /// edge and the client's address is the peer's).
    pub xff_num_trusted_hops: u32,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            request_headers_timeout_seconds: 10,
            request_receive_timeout_seconds: 60,
            stream_idle_timeout_seconds: 300,
            connection_idle_timeout_seconds: 300,
            max_concurrent_streams: 100,
            max_request_headers_kb: 60,
            max_headers_count: 100,
            xff_num_trusted_hops: 0,
        }
    }
}

impl EdgeSettings {
    /// Why these settings cannot be used, if they cannot (a zero would disable a limit in Envoy).
    pub fn problem(&self) -> Option<String> {
        let timeouts = [
            ("request_headers_timeout_seconds", self.request_headers_timeout_seconds),
            ("request_receive_timeout_seconds", self.request_receive_timeout_seconds),
            ("stream_idle_timeout_seconds", self.stream_idle_timeout_seconds),
            ("connection_idle_timeout_seconds", self.connection_idle_timeout_seconds),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, v)| *v == 0 || *v > 86_400) {
            return Some(format!("settings.edge.{name} must be from 1 to 86400"));
        }
        if self.max_concurrent_streams == 0 || self.max_concurrent_streams > 2_147_483_647 {
            return Some("settings.edge.max_concurrent_streams must be positive".into());
        }
        if !(1..=8192).contains(&self.max_request_headers_kb) {
            return Some("settings.edge.max_request_headers_kb must be from 1 to 8192".into());
        }
        if self.max_headers_count == 0 {
            return Some("settings.edge.max_headers_count must be positive".into());
        }
        None
    }
}

/// Which provider base URLs may be used (`crate::egress`). By default only public addresses and
/// names: loopback, private, link-local and cloud metadata destinations are refused, and so are
/// the gateway's own ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EgressSettings {
    /// Allow loopback destinations (127.0.0.0/8, ::1, `localhost`), e.g. a local model server.
    /// The gateway's own ports stay refused.
    pub allow_loopback: bool,
    /// Allow private destinations (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7), e.g.
    /// self-hosted models in the same network. Link-local and metadata stay refused.
    pub allow_private: bool,
    /// Hosts allowed whatever they are, as written in the URL (case-insensitive), either
    /// `host` (any port) or `host:port`. The one way to allow a link-local or metadata address
    /// or one of the gateway's own ports.
    pub allow_hosts: Vec<String>,
}
