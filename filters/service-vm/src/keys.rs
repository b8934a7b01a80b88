//! The key table: a long poll on the control plane (`POST /internal/v1/keys?wait=N` with the
//! manifest of what is published), and the shards it answers with published in shared data for
//! the workers: each shard under its own key, then the manifest, then the version key whose CAS
//! the workers watch. The version key is first written once every shard is in, so a worker
//! never serves from a partial table (it answers 503 `keys_not_loaded` until then).
//!
//! One poll is in flight at a time; a poll that answers (200 or 304) is followed at once by the
//! next, a failed one by the next on the timer.

use std::time::Duration;

use tollgate_contract::contract;
use tollgate_contract::keytable::{self, Manifest, Shard, Update};
use tollgate_wasm::{Buffer, Host, Map};

/// How long the control plane may hold a poll when nothing changed.
const WAIT_SECONDS: u64 = 20;
/// The poll's own timeout: the wait plus time to answer.
const POLL_TIMEOUT: Duration = Duration::from_secs(WAIT_SECONDS + 5);

#[derive(Default)]
pub struct KeyPoller {
    in_flight: Option<u32>,
    /// What is published in shared data.
    manifest: Manifest,
}

impl KeyPoller {
    /// Takes over what an earlier instance of this VM published (shared data outlives it).
    pub fn restore<H: Host>(&mut self, host: &H) {
        if let Ok((Some(bytes), _)) = host.shared_data(keytable::SHARED_MANIFEST_KEY) {
            if let Ok(m) = Manifest::decode(&bytes) {
                self.manifest = m;
            }
        }
    }

    pub fn owns(&self, token: u32) -> bool {
        self.in_flight == Some(token)
    }

    /// Starts a poll unless one is in flight.
    pub fn poll<H: Host>(&mut self, host: &H, cluster: &str, auth: &str) {
        if self.in_flight.is_some() {
            return;
        }
        let path = format!("{}?wait={WAIT_SECONDS}", contract::KEYS_PATH);
        let headers = [
            (":method", "POST"),
            (":path", path.as_str()),
            (":authority", "tollgate-control-plane"),
            ("authorization", auth),
            ("content-type", "application/octet-stream"),
        ];
        match host.http_call(cluster, &headers, &self.manifest.encode(), POLL_TIMEOUT) {
            Ok(token) => self.in_flight = Some(token),
            Err(e) => log::warn!("tollgate service: cannot reach the control plane for keys ({e})"),
        }
    }

    /// The poll's answer; polls again at once when it was one.
    pub fn on_response<H: Host>(&mut self, host: &H, body_size: usize, cluster: &str, auth: &str) {
        self.in_flight = None;
        let status = host.header(Map::CallResponseHeaders, ":status").ok().flatten().unwrap_or_default();
        match status.as_slice() {
            b"200" => match host.buffer(Buffer::CallResponseBody, 0, body_size) {
                Ok(body) => self.publish(host, &body),
                Err(e) => {
                    log::warn!("tollgate service: could not read the key update ({e})");
                    return;
                }
            },
            b"304" => {}
            other => {
                log::warn!(
                    "tollgate service: key poll answered status {}; keeping the published keys",
                    String::from_utf8_lossy(other)
                );
                return;
            }
        }
        self.poll(host, cluster, auth);
    }

    fn publish<H: Host>(&mut self, host: &H, body: &[u8]) {
        let update = match Update::decode(body) {
            Ok(u) => u,
            Err(e) => {
                log::warn!("tollgate service: the control plane sent an invalid key update ({e}); keeping the published keys");
                return;
            }
        };
        let was_complete = self.manifest.complete();
        for bytes in &update.shards {
            let index = match Shard::peek(bytes) {
                Ok((index, _, _)) => index,
                Err(_) => continue,
            };
            // Checked in full here, once per Envoy, before any worker copies it.
            let shard = match Shard::decode(bytes, index) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("tollgate service: key shard {index} refused ({e})");
                    continue;
                }
            };
            if let Err(e) = host.set_shared_data(&keytable::shared_shard_key(index), bytes, None) {
                log::warn!("tollgate service: could not publish key shard {index} ({e})");
                continue;
            }
            self.manifest.set(index, shard.epoch(), shard.version());
        }
        if let Err(e) = host.set_shared_data(keytable::SHARED_MANIFEST_KEY, &self.manifest.encode(), None) {
            log::warn!("tollgate service: could not publish the key manifest ({e})");
            return;
        }
        if !self.manifest.complete() {
            return;
        }
        // Empty: a worker reads only its CAS (which every write moves).
        if let Err(e) = host.set_shared_data(keytable::SHARED_VERSION_KEY, &[], None) {
            log::warn!("tollgate service: could not publish the key table version ({e})");
            return;
        }
        if !was_complete {
            log::info!("tollgate service: key table published ({} shards)", keytable::SHARDS);
        }
    }
}
