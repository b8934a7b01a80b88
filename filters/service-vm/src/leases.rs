//! Quota leases (`tollgate_contract::quota_lease`): keeps this Envoy's leases topped up so that
//! requests seldom wait on the network. On every tick, for each leased quota the gateway filter
//! published: what the workers used since the last tick gives a rate; a lease with less than
//! about one second of use left is topped up to two seconds' worth, and near a window's end the
//! next window's lease is taken ahead. One grant call is in flight at a time. A failed call
//! marks the authority down in shared data (rate limits then fall back to this Envoy's share,
//! budgets stay closed) with one log line per change and a counter; the next good answer marks
//! it up. Also mints the workers' grant ticket from the data-plane token.

use std::collections::HashMap;
use std::time::Duration;

use tollgate_contract::quota::QuotaDoc;
use tollgate_contract::quota_lease::{self, Ask, GrantRequest, GrantResponse};
use tollgate_wasm::quota_slot;
use tollgate_wasm::{Buffer, Host, Map};

/// Seconds of use a lease is topped up to.
const HORIZON_SECONDS: f64 = 2.0;
/// A lease of a quota without windows unused this long is given back (what an Envoy holds of a
/// lifetime budget would otherwise be lost to it if the Envoy stopped).
const IDLE_RETURN_MS: u64 = 30_000;
/// ... and this soon once the authority has less than a tenth of the limit left to grant: near
/// a budget's end what one Envoy holds idle is what another Envoy's requests are refused for.
const SCARCE_IDLE_RETURN_MS: u64 = 400;
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Seen {
    window: u64,
    used: u64,
    /// Units used per second, smoothed.
    rate: f64,
    at_ms: u64,
    /// When `used` last changed.
    changed_ms: u64,
    /// The authority had less than a tenth of the limit left when the slot was last read.
    scarce: bool,
}

/// An idle quota's slot is read on one tick in this many (a second at the fast tick), each
/// quota on its own tick; one in use, near its end, or a provider's, on every tick. A tick that
/// read every quota's slot, and its next window's, cost a Envoy with a budget for each of
/// 10,000 keys some 20,000 shared-data reads five times a second.
const IDLE_EVERY: u64 = 5;
/// Below this rate (units a second, smoothed) a quota is idle.
const IDLE_RATE: f64 = 0.01;

#[derive(Default)]
pub struct LeaseKeeper {
    docs_raw: Vec<u8>,
    docs: Vec<QuotaDoc>,
    /// Each quota's position in `docs`, by id.
    at: HashMap<String, usize>,
    seen: HashMap<String, Seen>,
    /// Ticks so far (idle quotas are read in turn, see [`IDLE_EVERY`]).
    round: u64,
    in_flight: Option<u32>,
    ticket_expires: u64,
    down: bool,
    failures: Option<u32>,
    envoy: Option<String>,
}

impl LeaseKeeper {
    pub fn owns(&self, token: u32) -> bool {
        self.in_flight == Some(token)
    }

    /// Whether any quota is leased (the service VM then ticks fast).
    pub fn active(&self) -> bool {
        !self.docs.is_empty()
    }

    fn refresh_docs<H: Host>(&mut self, host: &H) {
        let Ok((Some(raw), _)) = host.shared_data(quota_lease::SHARED_DOCS_KEY) else { return };
        if raw == self.docs_raw {
            return;
        }
        match serde_json::from_slice::<Vec<QuotaDoc>>(&raw) {
            Ok(docs) => {
                log::info!("tollgate service: {} leased quotas", docs.len());
                // A quota whose limit changed: what the authority last said it had left is stale
                // (a raised budget would otherwise stay refused without asking).
                let now = host.now().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
                for doc in &docs {
                    let before = self.at.get(&doc.id).and_then(|&i| self.docs.get(i));
                    let changed = before.is_some_and(|d| d.limit != doc.limit || d.limits != doc.limits);
                    if changed {
                        let window = doc.period(now).window;
                        if let Err(e) = quota_slot::lease(host, &doc.slot_key(), &doc.id, window, 0, u64::MAX) {
                            log::warn!("tollgate service: could not reset what quota {} has left ({e})", doc.id);
                        }
                    }
                }
                self.at = docs.iter().enumerate().map(|(i, d)| (d.id.clone(), i)).collect();
                self.docs = docs;
                let at = &self.at;
                self.seen.retain(|id, _| at.contains_key(id));
            }
            Err(e) => log::warn!("tollgate service: the leased quotas could not be read ({e})"),
        }
        self.docs_raw = raw;
    }

    fn mint_ticket<H: Host>(&mut self, host: &H, token: &str, now: u64) {
        if self.ticket_expires > now + quota_lease::TICKET_TTL_SECONDS / 2 {
            return;
        }
        let expires = now + quota_lease::TICKET_TTL_SECONDS;
        match host.set_shared_data(quota_lease::SHARED_TICKET_KEY, quota_lease::mint_ticket(token, expires).as_bytes(), None) {
            Ok(()) => self.ticket_expires = expires,
            Err(e) => log::warn!("tollgate service: could not publish the quota ticket ({e})"),
        }
    }

    /// What to ask for now.
    fn asks<H: Host>(&mut self, host: &H, now_ms: u64) -> Vec<Ask> {
        let now = now_ms / 1000;
        let mut asks = Vec::new();
        self.round = self.round.wrapping_add(1);
        let mut values = quota_slot::ReadOnce::default();
        for (i, doc) in self.docs.iter().enumerate() {
            // A provider's quota keeps a lease on hand (its attempts never wait for a grant),
            // given back idle only near the quota's end.
            let prefetch = doc.provider.is_some();
            let turn = (i as u64).wrapping_add(self.round).is_multiple_of(IDLE_EVERY);
            if !prefetch && !turn && self.seen.get(&doc.id).is_some_and(|s| s.rate <= IDLE_RATE && !s.scarce && s.changed_ms < s.at_ms) {
                continue;
            }
            let period = doc.period(now);
            let key = doc.slot_key();
            let slot = values.read(host, &key, &doc.id).filter(|s| s.window == period.window);
            if !self.seen.contains_key(&doc.id) {
                self.seen.insert(doc.id.clone(), Seen::default());
            }
            let Some(seen) = self.seen.get_mut(&doc.id) else { continue };
            let used = slot.map_or(0, |s| s.used);
            if seen.at_ms > 0 && now_ms > seen.at_ms {
                let gone = if seen.window == period.window { used.saturating_sub(seen.used) } else { used };
                let instant = gone as f64 * 1000.0 / (now_ms - seen.at_ms) as f64;
                seen.rate = 0.7 * seen.rate + 0.3 * instant;
            }
            if seen.window != period.window || seen.used != used || seen.changed_ms == 0 {
                seen.changed_ms = now_ms;
            }
            (seen.window, seen.used, seen.at_ms) = (period.window, used, now_ms);
            // An idle lease of a quota without windows goes back to the authority.
            let lifetime = period.ends.is_none() && doc.periods.is_empty() && doc.window_seconds == 0;
            let scarce = slot.is_some_and(|s| s.leased > 0 && s.free < doc.limit / 10);
            seen.scarce = scarce;
            let idle_for = if scarce { SCARCE_IDLE_RETURN_MS } else if prefetch { u64::MAX } else { IDLE_RETURN_MS };
            if lifetime && now_ms.saturating_sub(seen.changed_ms) >= idle_for && slot.is_some_and(|s| s.spare() > 0) {
                match quota_slot::take_back(host, &key, &doc.id, period.window, u64::MAX) {
                    Ok(0) => {}
                    Ok(returned) => {
                        log::info!("tollgate service: giving back {returned} of quota {} (unused for {} ms)", doc.id, idle_for);
                        asks.push(Ask { quota: doc.id.clone(), window: period.window, want: 0, need: 0, least: 0, returned });
                    }
                    Err(e) => log::warn!("tollgate service: could not take back the lease of quota {} ({e})", doc.id),
                }
                continue;
            }
            let active = (prefetch && !scarce) || seen.rate > IDLE_RATE || (seen.changed_ms == now_ms && used > 0);
            if !active {
                continue; // idle: the next request asks for itself
            }
            // The next window's lease, only for a quota in use.
            let ahead = values.read(host, &doc.next_key(), &doc.id);
            let want = ((seen.rate * HORIZON_SECONDS).ceil() as u64).max(doc.limit / 100).max(1);
            let spare = match slot {
                Some(s) => s.spare(),
                None => ahead.filter(|a| a.window == period.window).map_or(0, |a| a.leased),
            };
            let spent = slot.is_some_and(|s| s.leased > 0 && s.free == 0);
            if !spent && spare < want.div_ceil(2) {
                asks.push(Ask { quota: doc.id.clone(), window: period.window, want: want - spare, need: 0, least: 0, returned: 0 });
            }
            // The next window's lease, taken in the window's last tenth (at least 2 s).
            if let Some(ends) = period.ends {
                let lead = doc.window_seconds.max(1).div_ceil(10).max(2);
                let next = doc.period(ends).window;
                let held = ahead.filter(|a| a.window == next).map_or(0, |a| a.leased);
                if ends.saturating_sub(now) <= lead && next != period.window && held == 0 {
                    asks.push(Ask { quota: doc.id.clone(), window: next, want, need: 0, least: 0, returned: 0 });
                }
            }
        }
        asks
    }

    pub fn tick<H: Host>(&mut self, host: &H, cluster: &str, token: &str) {
        let Ok(now) = host.now() else { return };
        let now_ms = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.mint_ticket(host, token, now_ms / 1000);
        self.refresh_docs(host);
        if self.in_flight.is_some() || self.docs.is_empty() {
            return;
        }
        let asks = self.asks(host, now_ms);
        if asks.is_empty() {
            return;
        }
        let envoy = self.envoy.get_or_insert_with(|| host.property(&["node", "id"]).ok().flatten().map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default());
        let Ok(body) = serde_json::to_vec(&GrantRequest { envoy: envoy.clone(), asks }) else { return };
        let auth = format!("Bearer {token}");
        let headers = [(":method", "POST"), (":path", quota_lease::GRANTS_PATH), (":authority", "tollgate-control-plane"), ("authorization", auth.as_str()), ("content-type", "application/json")];
        match host.http_call(cluster, &headers, &body, CALL_TIMEOUT) {
            Ok(t) => self.in_flight = Some(t),
            Err(e) => self.set_down(host, true, &format!("cannot call it ({e})")),
        }
    }

    fn set_down<H: Host>(&mut self, host: &H, down: bool, why: &str) {
        if down {
            if self.failures.is_none() {
                self.failures = host.define_counter("tollgate_quota_authority_failures").ok();
            }
            if let Some(id) = self.failures {
                let _ = host.increment_counter(id, 1);
            }
        }
        if down == self.down {
            return;
        }
        self.down = down;
        if down {
            log::warn!("tollgate service: the quota authority is unreachable: {why}; rate limits fall back to this Envoy's share, budgets refuse once their lease is spent");
        } else {
            log::info!("tollgate service: the quota authority answers again; leases resume");
        }
        let state: &[u8] = if down { b"down" } else { b"up" };
        if let Err(e) = host.set_shared_data(quota_lease::SHARED_AUTHORITY_KEY, state, None) {
            log::warn!("tollgate service: could not publish the quota authority's state ({e})");
        }
    }

    pub fn on_response<H: Host>(&mut self, host: &H, body_size: usize) {
        self.in_flight = None;
        let status = host.header(Map::CallResponseHeaders, ":status").ok().flatten();
        let grants = match status.as_deref() {
            Some(b"200") => host.buffer(Buffer::CallResponseBody, 0, body_size).ok().and_then(|b| serde_json::from_slice::<GrantResponse>(&b).ok()),
            _ => None,
        };
        let Some(grants) = grants else {
            let status = status.map_or_else(|| "no answer".to_owned(), |s| format!("status {}", String::from_utf8_lossy(&s)));
            self.set_down(host, true, &status);
            return;
        };
        self.set_down(host, false, "");
        let now = host.now().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
        for g in grants.grants {
            let Some(doc) = self.at.get(&g.quota).and_then(|&i| self.docs.get(i)) else { continue };
            let key = doc.slot_key();
            // A grant for the current window (or one the workers already moved on to) goes in
            // the slot; one for the next window waits beside it.
            let in_slot = g.window == doc.period(now).window || quota_slot::read(host, &key, &doc.id).is_some_and(|s| s.window >= g.window);
            let target = if in_slot { key } else { doc.next_key() };
            if let Err(e) = quota_slot::lease(host, &target, &doc.id, g.window, g.granted, g.free) {
                log::warn!("tollgate service: could not record a lease of quota {} ({e})", g.quota);
            }
        }
    }
}
