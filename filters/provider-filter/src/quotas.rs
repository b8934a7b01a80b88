//! Quotas of a provider (issue 13, `QuotaDoc::provider`): only an attempt knows which provider
//! it goes to, so these are taken here, per attempt, with the same slots and leases as the
//! gateway filter's (`tollgate_wasm::quota_slot::take_group`). An attempt a quota refuses is
//! answered with a 429 in the client's format naming the quota: Envoy sends an upstream
//! filter's own answer to the client as it is, without retrying it on another deployment
//! (measured: no failover). A leased quota whose lease is spent refuses without waiting for a
//! grant: the gateway filter, which knows the model's providers, has already waited for one when
//! the lease could not cover the request, and the service VM keeps a lease on hand. When the
//! attempt ends what it held is given back and its usage counted (`on_done`). The gateway filter publishes these
//! quotas in shared data from its own configuration; the provider filter's lives in the
//! clusters, which a change would replace (draining their connections).

use std::cell::RefCell;
use std::rc::Rc;

use tollgate_contract::config::{Price, ProviderKind};
use tollgate_contract::quota::index::KeyIndex;
use tollgate_contract::quota::tally::{tally_key, Tally};
use tollgate_contract::quota::{self, Hold, Holds, Metric, ProviderQuotasDoc, QuotaDoc, Tagged};
use tollgate_contract::GatewayError;
use tollgate_wasm::quota_slot::{authority_down, give_back, groups, take_group, Want};
use tollgate_wasm::Host;

/// The quotas of providers as the gateway filter last published them
/// (`quota::SHARED_PROVIDER_QUOTAS_KEY`), parsed only when they change.
#[derive(Default)]
pub struct SharedQuotas {
    cas: u32,
    current: Rc<ProviderQuotas>,
}

impl SharedQuotas {
    pub fn refresh<H: Host>(&mut self, host: &H) {
        match host.shared_data(quota::SHARED_PROVIDER_QUOTAS_KEY) {
            Ok((Some(bytes), cas)) if cas != self.cas => {
                match serde_json::from_slice::<ProviderQuotasDoc>(&bytes) {
                    Ok(doc) => {
                        if doc.quotas.len() != self.current.quotas.len() {
                            log::info!("provider filter: {} quotas of providers", doc.quotas.len());
                        }
                        self.current = Rc::new(ProviderQuotas::new(doc.quotas, doc.hold_seconds));
                    }
                    Err(e) => log::warn!("provider filter: the quotas of providers could not be read ({e}); keeping the previous ones"),
                }
                self.cas = cas;
            }
            Ok(_) => {}
            Err(e) => log::warn!("provider filter: could not read the quotas of providers ({e})"),
        }
    }

    pub fn current(&self) -> Rc<ProviderQuotas> {
        self.current.clone()
    }
}

/// The provider quotas, with each one's shared-data keys (its group's value, its next window's
/// lease) made once.
#[derive(Default)]
pub struct ProviderQuotas {
    quotas: Vec<QuotaDoc>,
    keys: Vec<(String, String)>,
    hold_seconds: u64,
    /// Which quotas may apply to a key (more than `quota::index::INDEXED_FROM` of them).
    index: Option<KeyIndex>,
}

pub enum Attempt<'q> {
    Admitted(Vec<Hold>),
    Refused { quota: &'q QuotaDoc, limit: u64, retry_after: u64 },
}

impl ProviderQuotas {
    pub fn new(quotas: Vec<QuotaDoc>, hold_seconds: u64) -> Self {
        let keys = quota::slot_keys(&quotas);
        let index = KeyIndex::of(&quotas);
        Self { quotas, keys, hold_seconds, index }
    }

    pub fn is_empty(&self) -> bool {
        self.quotas.is_empty()
    }

    /// Takes every quota of `provider` that applies to the request, or none of them. `by`: what
    /// the gateway filter handed on to reserve by; `price`: this deployment's.
    pub fn admit<H: Host>(&self, host: &H, provider: ProviderKind, key_id: &str, model: &str, by: &Holds, price: Option<&Price>) -> Result<Attempt<'_>, GatewayError> {
        let n = self.quotas.len().min(self.keys.len());
        let applicable = quota::index::applicable(self.quotas.get(..n).unwrap_or_default(), self.index.as_ref(), key_id, model, |q| q.provider == Some(provider));
        if applicable.is_empty() {
            return Ok(Attempt::Admitted(Vec::new()));
        }
        let now = host.now()?.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let epoch = quota::hold_epoch(now, self.hold_seconds);
        let down = authority_down(host);
        let max_output = (by.max_output > 0).then_some(by.max_output);
        let mut held: Vec<Hold> = Vec::new();
        for (group, members) in groups(&applicable, &self.keys) {
            let wants: Vec<Want<'_>> = members
                .iter()
                .map(|&i| Want { quota: &self.quotas[i], next: &self.keys[i].1, amount: quota::amount(self.quotas[i].metric, by.body_len, max_output, price), extra: 0 })
                .collect();
            let taken = match take_group(host, group, &wants, now, epoch, down, &[]) {
                Ok(t) => t,
                Err(e) => {
                    release(host, &held);
                    return Err(e.into());
                }
            };
            match taken {
                Ok(taken) => held.extend(members.iter().zip(taken).map(|(&i, t)| Hold::taken(&self.quotas[i], t.period.window, t.amount, epoch))),
                Err(over) => {
                    release(host, &held);
                    let q = &self.quotas[members.get(over.at).copied().unwrap_or(members[0])];
                    return Ok(Attempt::Refused { quota: q, limit: q.period(now).limit, retry_after: q.retry_after(now) });
                }
            }
        }
        Ok(Attempt::Admitted(held))
    }
}

/// Gives back everything an attempt that was refused took (its requests too).
fn release<H: Host>(host: &H, held: &[Hold]) {
    for (h, e) in give_back(host, held, true) {
        log::warn!("provider filter: could not give back quota {} ({e})", h.id);
    }
}

/// The most gateway workers' tallies a provider VM keeps (one per gateway VM of its worker: more
/// than one only while a new gateway module takes over from an old one).
const TALLIES: usize = 4;

/// One gateway worker's tally as this VM keeps it: the gateway's id, the shared-data key, the
/// totals, whether they changed since the last write, and the writes since they last did.
struct Kept {
    id: u64,
    key: String,
    tally: Tally,
    dirty: bool,
    quiet: u32,
}

/// The tallies a VM writes, most recently added to last, and the buffer they are written from.
type Written = (Vec<Kept>, Vec<u8>);

/// How many times a tally is written after a request last ended on it (see [`flush`]): each
/// write lets its gateway give back what waited for one made after its request ended; past
/// this (at least 8 s), a reservation that waits is given back without, after its gateway's
/// own wait.
const QUIET_WRITES: u32 = 40;

/// The least time between two writes of the tallies: the VM's root contexts (one per cluster
/// the filter is on) each tick, and one write a period is enough.
const FLUSH_EVERY_NS: u64 = 200_000_000;

thread_local! {
    static WRITTEN: RefCell<Written> = RefCell::default();
    /// When this VM last wrote its tallies (Unix nanoseconds).
    static FLUSHED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// This VM's instance in its tallies (see `tollgate_contract::quota::tally`).
    static INSTANCE: u64 = {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x1257_u64)
    };
}

/// Adds an attempt's usage of `holds` (`used(metric)`) to gateway tally `id`, in this VM's
/// memory: no host call (the tally is written on the tick, [`flush`]); `false` when it could not
/// be counted (the VM's tallies already borrowed: a call from within this one, which the filter
/// never makes).
pub fn tally(id: u64, holds: &[Tagged], used: impl Fn(Metric) -> u64) -> bool {
    WRITTEN.with(|w| {
        let Ok(mut w) = w.try_borrow_mut() else { return false };
        let (tallies, _) = &mut *w;
        let at = match tallies.iter().position(|k| k.id == id) {
            Some(i) => i,
            None => {
                if tallies.len() >= TALLIES {
                    tallies.remove(0);
                }
                tallies.push(Kept { id, key: tally_key(id), tally: Tally::new(INSTANCE.with(|i| *i)), dirty: false, quiet: 0 });
                tallies.len() - 1
            }
        };
        let Some(kept) = tallies.get_mut(at) else { return false };
        kept.tally.make_room(holds.len());
        for h in holds {
            kept.dirty |= kept.tally.add(h.tag, h.window, used(h.metric));
        }
        // Its gateway waits for a write after this request's end, changed or not.
        kept.quiet = 0;
        if at + 1 != tallies.len() {
            let entry = tallies.remove(at);
            tallies.push(entry);
        }
        true
    })
}

/// The provider's tick: writes each tally (one blind write, with the next seq) that changed or
/// that a request ended on within the last [`QUIET_WRITES`] writes, so that its gateway reads a
/// write made after every request it waits on; at most once every [`FLUSH_EVERY_NS`] for the VM
/// (a clock read on each root's tick). A write that fails is tried again on the next tick (what
/// it would have counted stays in the totals).
pub fn flush<H: Host>(host: &H) {
    WRITTEN.with(|w| {
        let Ok(mut w) = w.try_borrow_mut() else { return };
        let (tallies, buf) = &mut *w;
        if !tallies.iter().any(|k| k.dirty || k.quiet < QUIET_WRITES) {
            return;
        }
        let Ok(now) = host.now() else { return };
        let now = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        // (A clock that went back writes at once.)
        let last = FLUSHED.with(|f| f.get());
        if now >= last && now < last.saturating_add(FLUSH_EVERY_NS) {
            return;
        }
        FLUSHED.with(|f| f.set(now));
        for kept in tallies.iter_mut().filter(|k| k.dirty || k.quiet < QUIET_WRITES) {
            kept.tally.seq = kept.tally.seq.wrapping_add(1);
            kept.tally.encode_into(buf);
            match host.set_shared_data(&kept.key, buf, None) {
                Ok(()) => {
                    kept.dirty = false;
                    kept.quiet = kept.quiet.saturating_add(1);
                }
                Err(e) => log::warn!("provider filter: could not write the usage tally ({e}); trying again on the next tick"),
            }
        }
    })
}
