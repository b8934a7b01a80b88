//! The service VM: one per Envoy process (an `envoy.bootstrap.wasm` singleton on the main
//! thread), sharing the filters' VM id so that what it writes to shared data is what they read.
//! All of the data plane's I/O with the control plane happens here, once per Envoy instead of
//! once per worker: today the provider credential document, fetched with a conditional GET
//! (an unchanged document costs a 304) and published under
//! [`contract::SHARED_CREDENTIALS_KEY`]; the key table, kept by a long poll (`keys`); and the
//! usage records the workers hand over through a shared queue, posted to the control plane's
//! ledger in batches ([`usage`]). Workers never call out. Callout answers are dispatched by
//! their call token.

mod keys;
mod leases;
mod usage;

use std::time::Duration;

use serde::Deserialize;
use tollgate_contract::config::CredentialsDoc;
use tollgate_contract::contract;
use tollgate_contract::ClientApi;
use tollgate_wasm::{Buffer, Host, HttpFilter, Map, Plugin};

tollgate_wasm::plugin!(ServicePlugin, [tick, http_call_response, queue_ready]);

/// Poll period until the first document is in, and after.
const FAST_TICK: Duration = Duration::from_millis(200);
const SLOW_TICK: Duration = Duration::from_secs(1);
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The service's configuration (in the Envoy bootstrap).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceConfig {
    /// The Envoy cluster of the control plane's internal listener.
    control_plane_cluster: String,
}

pub struct ServicePlugin {
    cluster: Option<String>,
    token: Option<String>,
    /// The version of the document published last.
    version: Option<String>,
    in_flight: Option<u32>,
    slow: bool,
    usage: usage::UsageShipper,
    keys: keys::KeyPoller,
    leases: leases::LeaseKeeper,
    /// Ticks since the last credential fetch (the timer runs fast while quotas are leased).
    ticks: u32,
}

/// The service VM has no HTTP streams; Envoy never creates one for a bootstrap extension.
pub struct NoStreams;

impl HttpFilter for NoStreams {
    fn client_api(&self) -> ClientApi {
        ClientApi::OpenAi
    }
}

impl ServicePlugin {
    fn set_tick<H: Host>(&mut self, host: &H, slow: bool) {
        self.slow = slow;
        if let Err(e) = host.set_tick_period(if slow && !self.leases.active() { SLOW_TICK } else { FAST_TICK }) {
            log::error!("tollgate service: could not set its timer ({e})");
        }
    }

    /// Publishes a fetched document to the workers.
    fn publish<H: Host>(&mut self, host: &H, body: &[u8]) {
        let doc = match serde_json::from_slice::<CredentialsDoc>(body) {
            Ok(doc) => doc,
            Err(_) => {
                log::warn!("tollgate service: the control plane sent an invalid credential document; keeping the previous one");
                return;
            }
        };
        if let Err(e) = host.set_shared_data(contract::SHARED_CREDENTIALS_KEY, body, None) {
            log::warn!("tollgate service: could not publish the credential document ({e})");
            return;
        }
        if self.version.as_deref() != Some(doc.version.as_str()) {
            log::info!("tollgate service: credentials version {} published ({} credentials)", doc.version, doc.credentials.len());
        }
        self.version = Some(doc.version);
        if !self.slow {
            self.set_tick(host, true);
        }
    }
}

impl ServicePlugin {
    fn ship_usage<H: Host>(&mut self, host: &H) {
        self.usage.drain(host);
        if let (Some(cluster), Some(token)) = (self.cluster.as_deref(), self.token.as_deref()) {
            self.usage.send(host, cluster, token);
        }
    }
}

impl Plugin for ServicePlugin {
    type Http = NoStreams;
    const NAME: &'static str = "tollgate service";

    fn new() -> Self {
        Self { cluster: None, token: None, version: None, in_flight: None, slow: false, usage: usage::UsageShipper::default(), keys: keys::KeyPoller::default(), leases: leases::LeaseKeeper::default(), ticks: 0 }
    }

    fn configure<H: Host>(&mut self, host: &H, config: &[u8]) -> Result<(), String> {
        let cfg: ServiceConfig = serde_json::from_slice(config).map_err(|e| format!("invalid service configuration: {e}"))?;
        self.cluster = Some(cfg.control_plane_cluster);
        self.token = std::env::var(contract::DATA_PLANE_TOKEN_ENV).ok().filter(|t| !t.is_empty());
        if self.token.is_none() {
            log::warn!("tollgate service: {} is not set; provider credentials cannot be fetched", contract::DATA_PLANE_TOKEN_ENV);
        }
        // A document published by an earlier instance of this VM stays in use until replaced.
        if let Ok((Some(bytes), _)) = host.shared_data(contract::SHARED_CREDENTIALS_KEY) {
            self.version = serde_json::from_slice::<CredentialsDoc>(&bytes).ok().map(|d| d.version);
        }
        self.keys.restore(host);
        let slow = self.version.is_some();
        self.set_tick(host, slow);
        self.usage.register(host);
        Ok(())
    }

    fn http_context(&mut self) -> NoStreams {
        NoStreams
    }

    fn on_tick<H: Host>(&mut self, host: &H) {
        self.ship_usage(host);
        let (Some(cluster), Some(token)) = (self.cluster.as_deref(), self.token.as_deref()) else { return };
        let auth = format!("Bearer {token}");
        self.keys.poll(host, cluster, &auth);
        let leasing = self.leases.active();
        self.leases.tick(host, cluster, token);
        if leasing != self.leases.active() {
            let period = if self.slow && !self.leases.active() { SLOW_TICK } else { FAST_TICK };
            if let Err(e) = host.set_tick_period(period) {
                log::error!("tollgate service: could not set its timer ({e})");
            }
        }
        // Credentials are fetched once a second at most (the timer ticks faster while quotas
        // are leased).
        self.ticks = self.ticks.saturating_add(1);
        let per_second = (SLOW_TICK.as_millis() / FAST_TICK.as_millis()) as u32;
        if self.in_flight.is_some() || (self.leases.active() && self.slow && self.ticks < per_second) {
            return;
        }
        self.ticks = 0;
        let version = self.version.as_ref().map(|v| format!("\"{v}\""));
        let mut headers = vec![
            (":method", "GET"),
            (":path", contract::CREDENTIALS_PATH),
            (":authority", "tollgate-control-plane"),
            ("authorization", auth.as_str()),
        ];
        if let Some(v) = version.as_deref() {
            headers.push(("if-none-match", v));
        }
        match host.http_call(cluster, &headers, &[], CALL_TIMEOUT) {
            Ok(token) => self.in_flight = Some(token),
            Err(e) => log::warn!("tollgate service: cannot reach the control plane for credentials ({e})"),
        }
    }

    fn on_queue_ready<H: Host>(&mut self, host: &H, queue: u32) {
        if self.usage.owns_queue(queue) {
            self.usage.drain(host);
            if self.usage.buffered_bytes() >= usage::MAX_BATCH_BYTES {
                self.ship_usage(host);
            }
        }
    }

    fn on_http_call_response<H: Host>(&mut self, host: &H, token: u32, _num_headers: usize, body_size: usize) {
        if self.usage.owns_call(token) {
            let status = host.header(Map::CallResponseHeaders, ":status").ok().flatten();
            self.usage.answered(host, status.as_deref());
            // The next batch goes at once when one is ready (a backlog drains call after call).
            self.ship_usage(host);
            return;
        }
        if self.leases.owns(token) {
            self.leases.on_response(host, body_size);
            return;
        }
        if self.keys.owns(token) {
            if let (Some(cluster), Some(secret)) = (self.cluster.as_deref(), self.token.as_deref()) {
                self.keys.on_response(host, body_size, cluster, &format!("Bearer {secret}"));
            }
            return;
        }
        if self.in_flight != Some(token) {
            return;
        }
        self.in_flight = None;
        let status = host.header(Map::CallResponseHeaders, ":status").ok().flatten().unwrap_or_default();
        match status.as_slice() {
            b"200" => match host.buffer(Buffer::CallResponseBody, 0, body_size) {
                Ok(body) => self.publish(host, &body),
                Err(e) => log::warn!("tollgate service: could not read the credential document ({e})"),
            },
            b"304" => {}
            // A failed call (no status: timeout, reset) or an error status.
            other => log::warn!(
                "tollgate service: credential fetch answered status {}; keeping the previous credentials",
                String::from_utf8_lossy(other)
            ),
        }
    }
}
