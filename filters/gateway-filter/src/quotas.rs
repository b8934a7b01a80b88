//! Admission against the quotas (issue 13): before a request is routed, every quota that applies
//! takes its share in this Envoy's shared-data slot with compare-and-swap (exact across the
//! workers); if one would go over, the ones already taken are given back and the request is
//! refused with a 429. A leased quota is spent from the lease the authority granted this Envoy
//! (`tollgate_contract::quota_lease`); when that is used up the request waits once for a grant
//! (the caller makes the call) and is tried again. When the request ends its concurrency and its
//! token reservations are given back here; the provider filter adds each attempt's real usage.
//! No host call is made for a request no quota applies to.
//!
//! While a request's token and cost quotas are roomy (half their limit left), its reservations
//! are given back late and its usage counted late, not when it ends: proxy-wasm has no atomic
//! add, so each is a shared-data read (a VM entry to hand the value back) and a
//! compare-and-swap, about 13,000 of Envoy's instructions (bench/crossing_costs.py). The
//! provider filter adds each attempt's usage to this worker's tally
//! (`tollgate_contract::quota::tally`, in its memory, written with one blind write on its own
//! tick); the worker reads the tally on its tick ([`flush`], every [`FLUSH_PERIOD`]), and gives
//! a request's reservations back only when it reads a write of the tally newer than the one its
//! first tick after the request's end read, which surely holds the request's usage (every
//! attempt of a request has ended, and added its usage, by the end of the event-loop pass its
//! request ends in); or, with no such write, after [`WAIT_TICKS`] ticks. Both are applied in the compare-and-swap of the worker's next admission to the same
//! group, or on the next tick if none comes first. A reservation held a little longer only ever
//! counts too much, never too little: no quota can be overspent by it. Concurrency is given
//! back at once (a slot held late would refuse a request that fits); so is everything of a
//! request whose quotas are not roomy, its usage settled by the provider filter in the slots.
//!
//! A worker's credit (a third level of leasing, after the authority's lease to the Envoy): an
//! admission that takes a group with compare-and-swap also takes, for each of its quotas, a
//! credit of [`CREDIT_REQUESTS`] requests' amounts, when that fits and leaves at least half the
//! limit (at most a 64th of the limit and, of a lease, a quarter of what is left of it; for a
//! whole group or not at all; never for concurrency, nor for a limit under 256 of the request's
//! amounts: those stay exact request by request).
//! The worker's next requests to that group spend their credits in its memory, with no host call
//! (the same window, limit and reservation epoch; every quota of the group must have room); what
//! is left of every credit is given back on the worker's next tick ([`flush`]). A credit counts as
//! used in the slot until then, so nothing is ever counted short; the most a credit can refuse
//! elsewhere is its own size, for at most a tick, and only while its quota has half its limit
//! left.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use tollgate_contract::quota::index::KeyIndex;
use tollgate_contract::quota::{self, Hold, Holds, Metric, QuotaDoc};
use tollgate_contract::quota_lease::{self, Ask};
use tollgate_contract::quota::tally::{self, Tally};
use tollgate_wasm::quota_slot::{apply_changes, authority_down, give_back, take_group, Change, Over, Want};
use tollgate_wasm::{Host, HostError};

/// Why a request was refused.
pub struct Refusal<'q> {
    pub quota: &'q QuotaDoc,
    /// The limit in the refused request's window (a schedule may change it).
    pub limit: u64,
    pub retry_after: u64,
}

/// The request as the quotas see it.
pub struct Asking<'a> {
    pub key_id: &'a str,
    pub model: &'a str,
    pub body_len: u64,
    /// The client's output limit (see `quota::max_output`).
    pub max_output: Option<u64>,
    /// Unix seconds.
    pub now: u64,
    /// Unix nanoseconds (the same instant): handed on as the first attempt's start.
    pub now_ns: u64,
    /// Whose rate-limit headers to write.
    pub api: tollgate_contract::ClientApi,
    /// The model's dearest deployment rates (for budgets).
    pub price: Option<&'a tollgate_contract::config::Price>,
    /// How long a reservation never given back is held before it expires (see
    /// `quota::Slot::roll`): longer than any request can run.
    pub hold_seconds: u64,
    /// The providers the model's deployments are at (empty unless some quota is a provider's).
    pub providers: &'a [tollgate_contract::config::ProviderKind],
    /// The least output limit the request may be lowered to (its body rewritten) to fit a
    /// quota with `fit_output` (its client API's least); 0: it cannot be (an API whose output
    /// limit the gateway does not write).
    pub fit: u64,
}

impl Asking<'_> {
    /// Whether leased quota `q` is one this request may spend: the gateway's own, or one of a
    /// provider the model may send it to (spent by the provider filter).
    fn may_spend(&self, q: &QuotaDoc) -> bool {
        q.lease && q.applies(self.key_id, self.model) && q.provider.is_none_or(|p| self.providers.contains(&p))
    }
}

/// Which try this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// A spent lease makes the request wait for a grant.
    First,
    /// After the grant: a spent lease refuses.
    Granted,
    /// The grant call failed: rate limits fall back to this Envoy's share, budgets refuse.
    AuthorityDown,
}

pub enum Admission<'q> {
    /// Admitted; the providers the model may send it to whose quotas cannot take it (the
    /// request goes around them when the model has another provider); whether its token and
    /// cost reservations may be given back late (see [`end`]); the output limit it was
    /// admitted with when a quota's `fit_output` lowered it (the body must say so).
    Admitted(Holds, Vec<tollgate_contract::config::ProviderKind>, Roomy, Option<u64>),
    Refused(Refusal<'q>),
    /// Leases to ask the authority for before trying again.
    Wait(Vec<Ask>),
}

fn amount(q: &QuotaDoc, r: &Asking<'_>, out: Option<u64>) -> u64 {
    quota::amount(q.metric, r.body_len, out, r.price)
}

/// How many times one admission may lower a request's output limit (each a compare-and-swap
/// again; more than one only when the quotas of a group each need it, or another worker took
/// the room first).
const FIT_TRIES: usize = 4;

/// The output limit at which the request fits `room` of quota `q`, when `q` lets a request be
/// lowered (`fit_output`) and the request can be; `out`: its limit now.
fn fit(q: &QuotaDoc, r: &Asking<'_>, out: Option<u64>, room: u64) -> Option<u64> {
    let floor = floor(q, r)?;
    quota::fit_output(q.metric, r.body_len, out.unwrap_or(quota::OUTPUT_RESERVATION), floor, room, r.price)
}

/// The lowest output limit quota `q` may lower the request to: its `fit_output`, or the
/// client API's least if that is more; `None` when it may not lower it.
fn floor(q: &QuotaDoc, r: &Asking<'_>) -> Option<u64> {
    (r.fit > 0 && q.fit_output > 0 && q.metric.counts_output()).then(|| q.fit_output.max(r.fit))
}

/// The least quota `q` takes of the request: at the lowest output limit it may be lowered to
/// (`fit_output`), or all of it.
fn least(q: &QuotaDoc, r: &Asking<'_>, out: Option<u64>) -> u64 {
    let full = amount(q, r, out);
    floor(q, r).map_or(full, |f| full.min(amount(q, r, Some(f))))
}

/// How often a worker reads its tally and gives back what no admission has given back yet (a
/// reservation is held two to three of these after its request).
pub const FLUSH_PERIOD: Duration = Duration::from_millis(100);
/// The most quota slots the reservations of requests that ended between two ticks are kept
/// for (added up per slot, see [`end`]); past it, a request's are given back at its end (its
/// usage then counts once it is read, after its reservation is gone).
const AWAITING_MAX: usize = 16_384;

/// How many requests' amounts a worker's credit on a quota is (see the module's documentation).
pub const CREDIT_REQUESTS: u64 = 64;

/// What a worker's credit on quota `q` is for a request taking `amount` of limit `limit`: at
/// most a 64th of the limit, and none when that is less than four requests' amounts (a quota
/// under 256 of them stays exact request by request) or for concurrency.
fn credit_size(q: &QuotaDoc, amount: u64, limit: u64) -> u64 {
    let size = amount.saturating_mul(CREDIT_REQUESTS).min(limit / 64);
    if q.metric == Metric::Concurrency || amount == 0 || size < amount.saturating_mul(4) {
        0
    } else {
        size
    }
}

/// A map keyed by small integers (quota positions, tags), hashed with a multiply (the worker's
/// credits and waiting reservations are looked up on the request path; SipHash costs more than
/// the look-ups it saves for a few entries).
type Fx<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// rustc's Fx hash: each word rotated in and multiplied by a constant.
#[derive(Default)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Entries found by a key: by a scan while they are few (a worker serving one or a few keys),
/// by a map past [`SCAN_MAX`] (one serving hundreds: a scan a request grew with them).
struct Keyed<K, V> {
    entries: Vec<(K, V)>,
    at: Option<Fx<K, usize>>,
}

/// The most entries a [`Keyed`] scans.
const SCAN_MAX: usize = 16;

impl<K, V> Default for Keyed<K, V> {
    fn default() -> Self {
        Self { entries: Vec::new(), at: None }
    }
}

impl<K: Copy + Eq + std::hash::Hash, V> Keyed<K, V> {
    #[inline]
    fn position(&self, k: K) -> Option<usize> {
        match &self.at {
            Some(at) => at.get(&k).copied(),
            None => self.entries.iter().position(|(e, _)| *e == k),
        }
    }

    /// The entry at position `i` (see [`Keyed::position`]).
    #[inline]
    fn at(&self, i: usize) -> Option<&V> {
        self.entries.get(i).map(|(_, v)| v)
    }

    #[inline]
    fn at_mut(&mut self, i: usize) -> Option<&mut V> {
        self.entries.get_mut(i).map(|(_, v)| v)
    }

    #[inline]
    fn get_mut(&mut self, k: K) -> Option<&mut V> {
        let i = self.position(k)?;
        self.entries.get_mut(i).map(|(_, v)| v)
    }

    /// Puts `v` under `k`; what was there before, if anything.
    fn insert(&mut self, k: K, v: V) -> Option<V> {
        if let Some(old) = self.get_mut(k) {
            return Some(std::mem::replace(old, v));
        }
        self.entries.push((k, v));
        let n = self.entries.len();
        match &mut self.at {
            Some(at) => {
                at.insert(k, n - 1);
            }
            None if n > SCAN_MAX => self.at = Some(self.entries.iter().enumerate().map(|(i, (e, _))| (*e, i)).collect()),
            None => {}
        }
        None
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn into_values(self) -> impl Iterator<Item = V> {
        self.entries.into_iter().map(|(_, v)| v)
    }
}

/// What a worker keeps to write: a list while it is short (a worker serving a few keys), by the
/// value each change is written to past [`SCAN_MAX`] changes (one serving hundreds: each change
/// merged into the list, and each admission's look for its group's, grew with them).
enum Deferred {
    Few(Vec<Change>),
    ByValue(HashMap<String, Vec<Change>>),
}

impl Default for Deferred {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl Deferred {
    /// Adds `c` into a kept change of the same slot, window, epoch and kind, or keeps it.
    fn add(&mut self, c: Change) {
        let merge = |kept: &mut Vec<Change>, c: Change| match kept.iter_mut().find(|k| same_change(k, &c)) {
            Some(k) => (k.back, k.add) = (k.back.saturating_add(c.back), k.add.saturating_add(c.add)),
            None => kept.push(c),
        };
        match self {
            Self::Few(kept) if kept.len() < SCAN_MAX => merge(kept, c),
            Self::Few(kept) => {
                let mut by_value: HashMap<String, Vec<Change>> = HashMap::new();
                for k in std::mem::take(kept).into_iter().chain([c]) {
                    merge(by_value.entry(quota::slot_key(&k.hold.id, k.hold.group.as_deref())).or_default(), k);
                }
                *self = Self::ByValue(by_value);
            }
            Self::ByValue(by_value) => merge(by_value.entry(quota::slot_key(&c.hold.id, c.hold.group.as_deref())).or_default(), c),
        }
    }

    /// The kept changes written to the value under `key`, taken out.
    fn take(&mut self, key: &str) -> Vec<Change> {
        match self {
            Self::Few(kept) => {
                let mut mine = Vec::new();
                let mut i = 0;
                while let Some(c) = kept.get(i) {
                    if is_slot_key(key, &c.hold.id, c.hold.group.as_deref()) {
                        mine.push(kept.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                mine
            }
            Self::ByValue(by_value) => by_value.remove(key).unwrap_or_default(),
        }
    }

    /// Every kept change, taken out, those of one value together.
    fn take_all(&mut self) -> Vec<Vec<Change>> {
        match std::mem::take(self) {
            Self::Few(kept) if kept.is_empty() => Vec::new(),
            Self::Few(kept) => vec![kept],
            Self::ByValue(by_value) => by_value.into_values().collect(),
        }
    }
}

/// Whether `key` is `quota::slot_key(id, group)`, without making it.
fn is_slot_key(key: &str, id: &str, group: Option<&str>) -> bool {
    let Some(rest) = key.strip_prefix(quota::SLOT_PREFIX) else { return false };
    match group {
        Some(g) => rest.strip_prefix("g.").is_some_and(|r| tollgate_contract::bytes::same_str(r, g)),
        None => tollgate_contract::bytes::same_str(rest, id),
    }
}

/// The reservations of requests that ended between two ticks, added up per quota slot (by its
/// tag), window and reservation epoch (see [`end`]).
#[derive(Default)]
struct Awaited {
    changes: Keyed<(u32, u64, u64), Change>,
    /// Holds without a tag (which a roomy request never has), each kept on its own.
    untagged: Vec<Change>,
}

impl Awaited {
    /// Adds a give-back of `hold`'s reservation into its slot's.
    fn add(&mut self, hold: Hold) {
        if hold.tag == 0 {
            self.untagged.push(Change { back: hold.reserved, hold, add: 0 });
            return;
        }
        let key = (hold.tag, hold.window, hold.epoch);
        match self.changes.get_mut(key) {
            Some(k) => k.back = k.back.saturating_add(hold.reserved),
            None => {
                self.changes.insert(key, Change { back: hold.reserved, hold, add: 0 });
            }
        }
    }

    fn len(&self) -> usize {
        self.changes.len() + self.untagged.len()
    }

    /// The give-backs, taken out.
    fn take(&mut self) -> Vec<Change> {
        let mut out: Vec<Change> = std::mem::take(&mut self.changes).into_values().collect();
        out.append(&mut self.untagged);
        out
    }
}

/// A worker's credit on one quota: the quota's id, group, metric, window and reservation epoch
/// as a hold has them, with what is left of the credit as its `reserved`, and what the quota had
/// left as the worker last saw it, less what the credit has been spent on since (for the
/// rate-limit headers), under the limit it was taken under; the quota's position in the
/// configuration (credits end with it), and until when its period holds (the window's end, or
/// a schedule's change of the limit: the credit ends there).
struct Credit {
    hold: Hold,
    left: u64,
    limit: u64,
    ends: Option<u64>,
    quota: usize,
    until: u64,
}

thread_local! {
    /// What ended requests give back and the usage read for them, not written yet (the
    /// worker's, shared by its root contexts).
    static DEFERRED: RefCell<Deferred> = RefCell::default();
    /// The worker's credits (see the module's documentation).
    static CREDITS: RefCell<Keyed<usize, Credit>> = RefCell::default();
    /// Reservations of ended requests whose usage may not be in the tally yet: per tick their
    /// requests ended before, what the worker's ticks have seen of the tally since, and the
    /// reservations, added up per quota slot (a give-back each).
    static AWAITING: RefCell<Vec<(Wait, Awaited)>> = RefCell::default();
    /// What this worker has counted of its tally.
    static SEEN: RefCell<tally::Seen> = RefCell::default();
    /// The worker's tags for the quota slots it has been configured with (a slot's tag is its
    /// position here plus one): a roomy request's holds travel by them, and its usage comes back
    /// in the tally by them (see `tollgate_contract::quota::tally`). Kept while the worker runs,
    /// so that a request admitted under an earlier configuration is still counted; at most
    /// [`TAGS_MAX`].
    static TAGS: RefCell<Tags> = RefCell::default();
    /// This worker's tally (random: a VM made again has a new one, so that a provider filter's
    /// totals for the old one are never read as the new one's).
    static TALLY: u64 = {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x7a11_u64).max(1)
    };
}

/// A quota slot's name: its quota's id and group, shared.
type SlotName = (Rc<str>, Option<Rc<str>>);

/// The worker's tags (see `TAGS`): the slots' names by tag, and the tags by name (a
/// configuration of many quotas is tagged without comparing each with every other).
#[derive(Default)]
struct Tags {
    names: Vec<SlotName>,
    by_name: std::collections::HashMap<(Box<str>, Option<Box<str>>), u32>,
}

/// The most quota slots a worker tags; a quota past them has none, and a request holding it
/// settles its usage in the slots (as when not roomy).
const TAGS_MAX: usize = 1 << 16;

/// The worker's tag for the quota slot of `id` and `group`, and the two as the tags keep them
/// (shared): a new tag when it has none, 0 when it has no room for one.
fn tag(id: &str, group: Option<&str>) -> (u32, Rc<str>, Option<Rc<str>>) {
    let made = || (0, Rc::from(id), group.map(Rc::from));
    TAGS.with(|t| {
        let Ok(mut t) = t.try_borrow_mut() else { return made() };
        let name = (Box::from(id), group.map(Box::from));
        let tag = match t.by_name.get(&name) {
            Some(&tag) => tag,
            None if t.names.len() < TAGS_MAX => {
                let (_, i, g) = made();
                t.names.push((i, g));
                let Ok(tag) = u32::try_from(t.names.len()) else { return made() };
                t.by_name.insert(name, tag);
                tag
            }
            None => return made(),
        };
        match usize::try_from(tag).ok().and_then(|n| t.names.get(n.checked_sub(1)?)) {
            Some((i, g)) => (tag, i.clone(), g.clone()),
            None => made(),
        }
    })
}

/// The quota slot tagged `tag` (see [`tag`]).
fn tagged(tag: u32) -> Option<SlotName> {
    let at = usize::try_from(tag).ok()?.checked_sub(1)?;
    TAGS.with(|t| t.try_borrow().ok()?.names.get(at).cloned())
}

/// This worker's tally, named in the holds of a request whose quotas are roomy.
pub fn tally_id() -> u64 {
    TALLY.with(|t| *t)
}

/// Whether every token and cost quota a request took had at least half its limit left after
/// taking it: only then are its reservations given back late. A reservation held late counts
/// against every other worker until it is given back, so near a quota's end (where it could
/// refuse a request that fits: a client's next request, on another worker, within a tick)
/// they are given back at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roomy(pub bool);

/// A request has ended: gives back what it holds: now when its quotas were not roomy (the
/// provider filter has settled its usage in the slots), else its concurrency now and its token
/// and cost reservations once its usage is in the tally (see the module's documentation).
pub fn end<H: Host>(host: &H, holds: Vec<Hold>, roomy: Roomy) {
    let full = AWAITING.with(|a| a.borrow().last().map_or(0, |(_, c)| c.len()) + holds.len() > AWAITING_MAX);
    if !roomy.0 || full {
        release(host, &holds, false);
        return;
    }
    if holds.iter().any(|h| !h.metric.is_tokens()) {
        let now: Vec<Hold> = holds.iter().filter(|h| !h.metric.is_tokens()).cloned().collect();
        release(host, &now, false);
    }
    // Into the reservations of the requests that ended since the last tick (the last entry,
    // made by the first of them), each added to its slot's.
    AWAITING.with(|a| {
        let mut a = a.borrow_mut();
        if !matches!(a.last(), Some((Wait::Ended, _))) {
            a.push((Wait::Ended, Awaited::default()));
        }
        let Some((_, kept)) = a.last_mut() else { return };
        for hold in holds.into_iter().filter(|h| h.metric.is_tokens() && h.reserved > 0) {
            kept.add(hold);
        }
    });
}

/// Where a reservation waiting for its request's usage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// No tick since its request ended.
    Ended,
    /// The tally (its writer and seq; `None`: none could be read) at the first tick after the
    /// end, and the ticks since.
    Saw(Option<(u64, u64)>, u16),
}

/// The most ticks a reservation waits for a tally write made after its request ended (its
/// provider VM gone, or a request that never reached one while the provider is idle): then it
/// is given back without.
const WAIT_TICKS: u16 = 50;

impl Wait {
    /// The wait after a tick that read `now`: `None` when it is over (a write of the same writer
    /// newer than the one seen after the end, or the first write made since none could be read,
    /// holds the request's usage; or it has waited [`WAIT_TICKS`]).
    fn after(self, now: Option<(u64, u64)>) -> Option<Self> {
        match (self, now) {
            (Self::Ended, _) => Some(Self::Saw(now, 0)),
            (Self::Saw(None, _), Some(_)) => None,
            (Self::Saw(Some((writer, seq)), _), Some((w, s))) if w == writer && s != seq => None,
            (Self::Saw(_, n), _) if n.saturating_add(1) >= WAIT_TICKS => None,
            (Self::Saw(seen, n), _) => Some(Self::Saw(seen, n + 1)),
        }
    }
}

/// The worker's tick: writes what no admission has written since the last tick (those that
/// could not be written are kept for the next), then reads the tally: its new usage, and the
/// reservations of requests that ended before the last tick, are written with the next
/// admission to their group or on the next tick.
pub fn flush<H: Host>(host: &H) {
    give_back_credits();
    let kept = DEFERRED.with(|d| d.borrow_mut().take_all());
    // Value by value (each value's few changes in one compare-and-swap).
    let mut failed = Vec::new();
    for changes in kept {
        failed.extend(apply_changes(host, &changes).into_iter().map(|(c, e)| {
            log::warn!("gateway filter: could not give back quota {} ({e}); trying again", c.hold.id);
            c.clone()
        }));
    }
    defer(failed);
    collect(host);
}

/// Reads the tally (only while reservations wait for it) and moves what it says, and the
/// reservations that have waited a tick, to be written.
fn collect<H: Host>(host: &H) {
    if AWAITING.with(|a| a.borrow().is_empty()) {
        return;
    }
    let seen = match host.shared_data(&tally::tally_key(tally_id())) {
        Ok((Some(bytes), _)) => match Tally::decode(&bytes) {
            Some(t) => {
                let grew = SEEN.with(|s| s.borrow_mut().fold(&t));
                defer(grew.into_iter().filter_map(counted).collect());
                Some((t.instance, t.seq))
            }
            None => {
                log::warn!("gateway filter: the usage tally could not be read; reservations wait for the next write");
                None
            }
        },
        // Nothing written yet.
        Ok((None, _)) => None,
        Err(e) => {
            log::warn!("gateway filter: could not read the usage tally ({e}); trying again on the next tick");
            return;
        }
    };
    let ripe: Vec<Change> = AWAITING.with(|a| {
        let mut ripe = Vec::new();
        a.borrow_mut().retain_mut(|(wait, kept)| match wait.after(seen) {
            Some(w) => {
                *wait = w;
                true
            }
            None => {
                ripe.append(&mut kept.take());
                false
            }
        });
        ripe
    });
    defer(ripe);
}

/// The change that counts what the tally says grew (`e`) in its quota slot; `None` (with a
/// warning) for a tag the worker never made.
fn counted(e: tally::Entry) -> Option<Change> {
    let Some((id, group)) = tagged(e.tag) else {
        log::warn!("gateway filter: the usage tally names quota slot {}, which this worker never tagged; not counted", e.tag);
        return None;
    };
    // The metric is not in the tally: counting usage does not depend on it (only giving back
    // does, and nothing is given back here).
    let hold = Hold { id, metric: Metric::TotalTokens, window: e.window, reserved: 0, group, epoch: 0, tag: e.tag };
    Some(Change { hold, back: 0, add: e.used })
}

/// What is left of the worker's credits, kept to be given back (with the tick's writes).
fn give_back_credits() {
    let credits = CREDITS.with(|c| c.try_borrow_mut().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default());
    defer(credits.into_values().filter(|c| c.hold.reserved > 0).map(|c| Change { back: c.hold.reserved, hold: c.hold, add: 0 }).collect());
}

/// Keeps `changes` to write later, each added into a kept one of the same quota slot, window,
/// reservation epoch and kind (a give-back, or usage) when there is one: giving back (or
/// counting) two amounts one after the other is giving back their sum (`Slot::unhold` takes
/// what is held, up to the amount), so the worker keeps a change per slot rather than per
/// request, and the compare-and-swap that writes them applies as few.
fn defer(changes: Vec<Change>) {
    if changes.is_empty() {
        return;
    }
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        for c in changes {
            d.add(c);
        }
    });
}

/// Whether two changes may be added into one (see [`defer`]).
fn same_change(a: &Change, b: &Change) -> bool {
    let (x, y) = (&a.hold, &b.hold);
    (a.back == 0) == (b.back == 0)
        && (a.add == 0) == (b.add == 0)
        && x.window == y.window
        && x.epoch == y.epoch
        && x.metric.is_held() == y.metric.is_held()
        && (Rc::ptr_eq(&x.id, &y.id) || tollgate_contract::bytes::same_str(&x.id, &y.id))
        && match (&x.group, &y.group) {
            (Some(g), Some(h)) => Rc::ptr_eq(g, h) || tollgate_contract::bytes::same_str(g, h),
            (None, None) => true,
            _ => false,
        }
}

/// The kept changes of the group whose value is under `key`, taken out.
fn take_deferred(key: &str) -> Vec<Change> {
    DEFERRED.with(|d| d.borrow_mut().take(key))
}

/// Writes kept changes now (the admission that took them will not).
fn write_back<H: Host>(host: &H, changes: &[Change]) {
    for (c, e) in apply_changes(host, changes) {
        log::warn!("gateway filter: could not give back quota {} ({e})", c.hold.id);
    }
}

/// The quotas' shared-data keys (`quota::slot_keys`), for each quota the first quota of its
/// group (the same slot key), and each quota's id and group as a request's holds share them,
/// with the worker's tag for its slot: made once per configuration, so that an admission finds
/// its groups without comparing keys and allocates no text for its holds.
#[derive(Default)]
pub struct QuotaKeys {
    pub keys: Vec<(String, String)>,
    group: Vec<usize>,
    names: Vec<(Rc<str>, Option<Rc<str>>, u32)>,
    /// Which quotas may apply to a key, for a configuration of more than
    /// `quota::index::INDEXED_FROM`.
    index: Option<KeyIndex>,
    /// Some quota is a provider's.
    of_providers: bool,
}

impl QuotaKeys {
    pub fn new(quotas: &[QuotaDoc]) -> Self {
        let keys = quota::slot_keys(quotas);
        // Each quota's group's first quota, found by its key (not by comparing every pair).
        let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(keys.len());
        let group = keys.iter().enumerate().map(|(i, (k, _))| *first.entry(k.as_str()).or_insert(i)).collect();
        let names = quotas
            .iter()
            .map(|q| {
                let (tag, id, group) = tag(&q.id, q.group.as_deref());
                (id, group, tag)
            })
            .collect();
        let index = KeyIndex::of(quotas);
        let of_providers = quotas.iter().any(|q| q.provider.is_some());
        Self { keys, group, names, index, of_providers }
    }

    /// The quotas of this configuration (`quotas`) that apply to `key_id` and `model`: the
    /// gateway's own, or (`providers`) those of providers.
    pub fn applicable(&self, quotas: &[QuotaDoc], key_id: &str, model: &str, providers: bool) -> Vec<usize> {
        let n = quotas.len().min(self.keys.len());
        let applies = |&i: &usize| i < n && quotas[i].provider.is_some() == providers && quotas[i].applies(key_id, model);
        match &self.index {
            None => (0..n).filter(applies).collect(),
            Some(index) => index.candidates(key_id).into_iter().filter(applies).collect(),
        }
    }

    /// Whether some quota of this configuration (the gateway's own or a provider's) that
    /// satisfies `which` applies to `key_id` and `model`.
    pub fn any_applies(&self, quotas: &[QuotaDoc], key_id: &str, model: &str, which: impl Fn(&QuotaDoc) -> bool) -> bool {
        let applies = |q: &QuotaDoc| which(q) && q.applies(key_id, model);
        match &self.index {
            None => quotas.iter().any(applies),
            Some(index) => index.candidates(key_id).into_iter().any(|i| quotas.get(i).is_some_and(applies)),
        }
    }

    /// What a request holds of quota `i` (`q`), its id and group shared.
    fn hold(&self, i: usize, q: &QuotaDoc, window: u64, amount: u64, epoch: u64) -> Hold {
        match self.names.get(i) {
            Some((id, group, tag)) => Hold::of(q, id.clone(), group.clone(), window, amount, epoch, *tag),
            None => Hold::taken(q, window, amount, epoch),
        }
    }
}

/// Takes every applicable quota's share for a request, or none of them: the quotas of one
/// group (a scope) with one read and one compare-and-swap, which also applies the worker's kept
/// changes to that group (ended requests' reservations given back, their usage counted).
pub fn admit<'q, H: Host>(host: &H, quotas: &'q [QuotaDoc], qk: &QuotaKeys, r: &Asking<'_>, pass: Pass) -> Result<Admission<'q>, HostError> {
    let keys = &qk.keys[..];
    let now = r.now;
    let epoch = quota::hold_epoch(now, r.hold_seconds);
    let mut holds = Holds { holds: Vec::with_capacity(4), ..Holds::default() };
    let (mut requests, mut tokens): (Option<quota::Standing>, Option<quota::Standing>) = (None, None);
    let mut down = pass == Pass::AuthorityDown;
    let mut roomy = true;
    let applicable = qk.applicable(quotas, r.key_id, r.model, false);
    // The output limit the request reserves by: the client's, unless a quota lowers it to fit.
    let mut out = r.max_output;
    let mut fits = 0;
    let group_of = |i: usize| qk.group.get(i).copied().unwrap_or(i);
    // The applicable quotas of the groups taken before position `n` (a request quota's count is
    // for good once admitted, so no hold of it travels: they are found again only to give them
    // back when a later group refuses).
    let applied = &applicable[..];
    let admitted = |n: usize| applied.iter().copied().filter(move |&j| applied[..n.min(applied.len())].iter().any(|&k| group_of(k) == group_of(j)));
    for (n, &first) in applicable.iter().enumerate() {
        // Each group once, at its first applicable quota, with its applicable members.
        if applicable[..n].iter().any(|&j| group_of(j) == group_of(first)) {
            continue;
        }
        let members = || applicable[n..].iter().copied().filter(|&j| group_of(j) == group_of(first));
        let Some((group, _)) = keys.get(first) else { continue };
        // The worker's credits, when they cover the request on every quota of the group: no
        // host call.
        if let Some(ok) = spend_credits(qk, quotas, members(), r, out, epoch, &mut holds.holds, &mut requests, &mut tokens) {
            roomy &= ok;
            continue;
        }
        let back = take_deferred(group);
        let (over, taken) = loop {
            let mut wants: Vec<Want<'_>> = members()
                .map(|i| {
                    let (q, a) = (&quotas[i], amount(&quotas[i], r, out));
                    Want { quota: q, next: &keys[i].1, amount: a, extra: credit_size(q, a, q.period(now).limit) }
                })
                .collect();
            // Credits are spent for a whole group or not at all: none unless every quota of it
            // gets one.
            if wants.iter().any(|w| w.extra == 0) {
                wants.iter_mut().for_each(|w| w.extra = 0);
            }
            match take_group(host, group, &wants, now, epoch, down, &back) {
                Err(e) => {
                    defer(back);
                    undo(host, quotas, &holds.holds, admitted(n), now, epoch);
                    return Err(e);
                }
                Ok(Ok(taken)) => break (None, taken),
                Ok(Err(Over { at, room })) => {
                    let q = &quotas[members().nth(at).unwrap_or(first)];
                    if q.lease && pass == Pass::First && !down {
                        if authority_down(host) {
                            down = true;
                            continue;
                        }
                        // What was kept to give back goes back before the authority is asked
                        // (the lease it frees may be enough for the next try).
                        write_back(host, &back);
                        let asks = asks(host, quotas, qk, r, out);
                        // Nothing to ask for: the authority has said it has nothing left.
                        if !asks.is_empty() {
                            undo(host, quotas, &holds.holds, admitted(n), now, epoch);
                            return Ok(Admission::Wait(asks));
                        }
                        break (Some(q), Vec::new());
                    }
                    // A quota that lets a request be lowered to fit: again at the output
                    // limit that fits the room it had (the deferred give-backs were not
                    // written, so they go again too).
                    if fits < FIT_TRIES {
                        if let Some(lower) = fit(q, r, out, room) {
                            out = Some(lower);
                            fits += 1;
                            continue;
                        }
                    }
                    // Refused with what was kept given back (nothing was written).
                    write_back(host, &back);
                    break (Some(q), Vec::new());
                }
            }
        };
        if let Some(q) = over {
            undo(host, quotas, &holds.holds, admitted(n), now, epoch);
            return Ok(Admission::Refused(Refusal { quota: q, limit: q.period(now).limit, retry_after: q.retry_after(now) }));
        }
        // A credit a quota of the group could not take (it would have left less than half the
        // limit) makes the others' of no use: they go back with the next write to the group.
        let credited = taken.iter().all(|t| t.extra > 0);
        for (i, tollgate_wasm::quota_slot::Taken { slot, amount, period, extra }) in members().zip(taken) {
            let Some(q) = quotas.get(i) else { continue };
            // What is left after the request (the worker's credit, taken with it, is not spent).
            let remaining = slot.left(q.lease, period.limit).saturating_add(extra).min(period.limit);
            if extra > 0 {
                keep_credit(qk, i, q, period, now, epoch, extra, remaining, credited);
            }
            roomy &= note(qk, i, q, period, amount, epoch, remaining, now, &mut holds.holds, &mut requests, &mut tokens);
        }
    }
    // The quotas of the providers the request may go to are spent by the provider filter,
    // which cannot wait for a grant: make sure here that their leases cover the request; those
    // that cannot, after asking, name the providers the request should go around.
    let mut spent = Vec::new();
    if !down && !r.providers.is_empty() {
        let short: Vec<&QuotaDoc> = qk
            .applicable(quotas, r.key_id, r.model, true)
            .into_iter()
            .filter_map(|i| Some((quotas.get(i)?, keys.get(i)?)))
            .filter(|(q, (key, _))| {
                r.may_spend(q) && {
                    let window = q.period(now).window;
                    let slot = tollgate_wasm::quota_slot::read(host, key, &q.id).filter(|s| s.window == window);
                    slot.map_or(0, |s| s.spare()) < amount(q, r, out)
                }
            })
            .map(|(q, _)| q)
            .collect();
        if !short.is_empty() && pass == Pass::First {
            let asks = asks(host, quotas, qk, r, out);
            if !asks.is_empty() {
                undo(host, quotas, &holds.holds, admitted(applicable.len()), now, epoch);
                return Ok(Admission::Wait(asks));
            }
        }
        for p in short.iter().filter_map(|q| q.provider) {
            if !spent.contains(&p) {
                spent.push(p);
            }
        }
    }
    let anthropic_at = (r.api == tollgate_contract::ClientApi::Anthropic).then_some(now);
    holds.limits = quota::RateLimits { requests, tokens, anthropic_at };
    // What the provider filter reserves by, when a quota of a provider applies.
    if qk.of_providers && qk.any_applies(quotas, r.key_id, r.model, |q| q.provider.is_some()) {
        (holds.body_len, holds.max_output) = (r.body_len, out.unwrap_or(0));
    }
    holds.admitted_ns = r.now_ns;
    let lowered = if fits > 0 { out } else { None };
    // A roomy request's usage goes through the worker's tally (see [`end`]), its holds by their
    // tags; one holding a quota the worker has no tag for is settled as if not roomy.
    if roomy && holds.holds.iter().any(|h| h.metric.is_tokens()) {
        if holds.holds.iter().all(|h| h.tag != 0) {
            holds.tally = tally_id();
        } else {
            roomy = false;
        }
    }
    Ok(Admission::Admitted(holds, spent, Roomy(roomy), lowered))
}

/// Notes what a request took of quota `i` (`q`, in `period`): its hold (a held metric), and its
/// standing for the rate-limit headers (the tightest quota of each kind names them; `remaining`:
/// what the quota has left after the request). `false` when a token or cost quota has less than
/// half its limit left (the request is not roomy).
#[allow(clippy::too_many_arguments)]
fn note(qk: &QuotaKeys, i: usize, q: &QuotaDoc, period: quota::Period, amount: u64, epoch: u64, remaining: u64, now: u64, holds: &mut Vec<Hold>, requests: &mut Option<quota::Standing>, tokens: &mut Option<quota::Standing>) -> bool {
    if q.metric.is_held() {
        holds.push(qk.hold(i, q, period.window, amount, epoch));
    }
    let roomy = !(q.metric.is_tokens() && remaining < period.limit / 2);
    let standing = match q.metric {
        Metric::Requests => requests,
        Metric::Concurrency | Metric::CostUsd => return roomy,
        _ => tokens,
    };
    if standing.is_none_or(|(_, left, _)| remaining < left) {
        *standing = Some((period.limit, remaining, period.resets_in(now)));
    }
    roomy
}

/// Keeps the credit an admission took of quota `i` (`q`) beside the request (`extra`, in
/// `period` and reservation epoch `epoch`; `left`: what the quota has left after the request).
/// The quota's older credit, if any, is given back on the tick; so is this one unless `keep`.
#[allow(clippy::too_many_arguments)]
fn keep_credit(qk: &QuotaKeys, i: usize, q: &QuotaDoc, period: quota::Period, now: u64, epoch: u64, extra: u64, left: u64, keep: bool) {
    let (id, group, tag) = match qk.names.get(i) {
        Some((id, group, tag)) => (id.clone(), group.clone(), *tag),
        None => (Rc::from(q.id.as_str()), q.group.as_deref().map(Rc::from), 0),
    };
    let until = q.period_until(now);
    let credit = Credit { hold: Hold { id, metric: q.metric, window: period.window, reserved: extra, group, epoch, tag }, left, limit: period.limit, ends: period.ends, quota: i, until };
    if !keep {
        defer(vec![Change { back: extra, hold: credit.hold, add: 0 }]);
        return;
    }
    let old = CREDITS.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else { return Some(credit) };
        c.insert(i, credit)
    });
    if let Some(old) = old.filter(|o| o.hold.reserved > 0) {
        defer(vec![Change { back: old.hold.reserved, hold: old.hold, add: 0 }]);
    }
}

/// The most quotas of a group a request spends credits of.
const CREDIT_GROUP_MAX: usize = 8;

/// Spends the worker's credits on every quota of a group (`members`) for a request, when each
/// has one for this window, limit and reservation epoch with room for the request's amount (else
/// nothing is spent: `None`), and notes what it took (see [`note`]): whether the request is
/// roomy.
#[allow(clippy::too_many_arguments)]
fn spend_credits(qk: &QuotaKeys, quotas: &[QuotaDoc], members: impl Iterator<Item = usize>, r: &Asking<'_>, out: Option<u64>, epoch: u64, holds: &mut Vec<Hold>, requests: &mut Option<quota::Standing>, tokens: &mut Option<quota::Standing>) -> Option<bool> {
    CREDITS.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        if c.is_empty() {
            return None;
        }
        // Each member's credit (one of this configuration's, its period still on) and amount.
        let mut found: [(usize, u64); CREDIT_GROUP_MAX] = [(0, 0); CREDIT_GROUP_MAX];
        let mut n = 0;
        for i in members {
            let a = amount(quotas.get(i)?, r, out);
                let at = c.position(i)?;
            c.at(at).filter(|k| r.now < k.until && k.hold.epoch == epoch && k.hold.reserved >= a)?;
            *found.get_mut(n)? = (at, a);
            n += 1;
        }
        let mut roomy = true;
        for &(at, a) in found.get(..n).unwrap_or_default() {
            let Some(k) = c.at_mut(at) else { continue };
            let Some(q) = quotas.get(k.quota) else { continue };
            k.hold.reserved -= a;
            k.left = k.left.saturating_sub(a);
            let period = quota::Period { window: k.hold.window, limit: k.limit, ends: k.ends };
            roomy &= note(qk, k.quota, q, period, a, epoch, k.left, r.now, holds, requests, tokens);
        }
        Some(roomy)
    })
}

/// What to ask the authority for: every leased quota the request may spend (its own, and those
/// of the providers its model may go to) whose lease cannot cover it (a slot that cannot be
/// read is asked for too), unless the authority said when it last answered that it had less
/// left than the request needs and the lease is spent. The lease's unspent fragment goes back
/// with the ask (`returned`) and the whole need is asked for: so that, near a quota's end, what
/// the Envoys hold in pieces too small for a request pools at the authority, where one request
/// can have it (the gap a budget ends with is then under one request's reservation, not one per
/// Envoy). What the slot counts beyond its lease is asked for too (reservations of ended
/// requests another worker has yet to give back, beside the usage already settled for them):
/// a grant of the request's amount alone would leave it short again. A quota that lets a
/// request be lowered to fit (`fit_output`) says how little would still do (`least`).
fn asks<H: Host>(host: &H, quotas: &[QuotaDoc], qk: &QuotaKeys, r: &Asking<'_>, out: Option<u64>) -> Vec<Ask> {
    let mut of = qk.applicable(quotas, r.key_id, r.model, false);
    if qk.of_providers {
        of.extend(qk.applicable(quotas, r.key_id, r.model, true));
    }
    of.into_iter()
        .filter_map(|i| Some((quotas.get(i)?, qk.keys.get(i)?)))
        .filter(|(q, _)| r.may_spend(q))
        .filter_map(|(q, (key, _))| {
            let window = q.period(r.now).window;
            let full = amount(q, r, out);
            let slot = tollgate_wasm::quota_slot::read(host, key, &q.id).filter(|s| s.window == window);
            let spare = slot.map_or(0, |s| s.spare());
            if full <= spare {
                return None;
            }
            let over = slot.map_or(0, |s| s.used.saturating_sub(s.leased));
            let (need, lowered) = (full.saturating_add(over), least(q, r, out).saturating_add(over));
            // The authority answered in this window with less left than the request needs and
            // this Envoy has no fragment to pool with it: refused without asking, unless its
            // answer is more than [`SHORT_FOR_NS`] old (what it said it had left is from its last
            // answer; the usage it has recorded since can only have given some back, as the
            // leases' reservations settle to what the requests cost).
            let asked = quota::asked_key(&q.id);
            if spare == 0 && slot.is_some_and(|s| s.leased > 0 && s.free < lowered) && answered_within(host, &asked, r.now_ns) {
                return None;
            }
            if let Err(e) = host.set_shared_data(&asked, &r.now_ns.to_le_bytes(), None) {
                log::warn!("gateway filter: could not note an ask for quota {} ({e})", q.id);
            }
            let returned = match spare {
                0 => 0,
                _ => tollgate_wasm::quota_slot::take_back(host, key, &q.id, window, spare).unwrap_or(0),
            };
            let at_least = if lowered < need { lowered } else { 0 };
            Some(Ask { quota: q.id.clone(), window, want: need.max(q.limit / 50), need, least: at_least, returned })
        })
        .collect()
}

/// How long the authority's word that a quota has less left than a request needs stands before
/// an Envoy asks again (at most about twice a second a quota, for the requests a spent budget
/// refuses).
const SHORT_FOR_NS: u64 = 500_000_000;

/// Whether this Envoy last asked the authority for the quota whose ask key is `asked` less than
/// [`SHORT_FOR_NS`] before `now_ns`; also when it cannot tell (nothing noted, or unreadable:
/// the slot's word is taken, as before an ask was noted).
fn answered_within<H: Host>(host: &H, asked: &str, now_ns: u64) -> bool {
    match host.shared_data(asked) {
        Ok((Some(b), _)) => match <[u8; 8]>::try_from(b.as_slice()) {
            Ok(at) => now_ns.saturating_sub(u64::from_le_bytes(at)) < SHORT_FOR_NS,
            Err(_) => true,
        },
        _ => true,
    }
}

/// Applies the authority's answer to the slots.
pub fn apply<H: Host>(host: &H, quotas: &[QuotaDoc], grants: &quota_lease::GrantResponse) {
    for g in &grants.grants {
        let Some(q) = quotas.iter().find(|q| q.id == g.quota) else { continue };
        if let Err(e) = tollgate_wasm::quota_slot::lease(host, &q.slot_key(), &q.id, g.window, g.granted, g.free) {
            log::warn!("gateway filter: could not record a lease of quota {} ({e})", q.id);
        }
    }
}

/// Gives back what an admission that is refused (or fails) took: its holds, and its request
/// quotas' counts (`admitted`: the quotas of the groups it took; of these only request quotas
/// have no hold in `held`).
fn undo<H: Host>(host: &H, quotas: &[QuotaDoc], held: &[Hold], admitted: impl Iterator<Item = usize>, now: u64, epoch: u64) {
    let mut all = held.to_vec();
    all.extend(admitted.filter_map(|i| quotas.get(i)).filter(|q| q.metric == Metric::Requests).map(|q| Hold::taken(q, q.period(now).window, 1, epoch)));
    release(host, &all, true);
}

/// Gives back what a request held: its concurrency slots and token reservations (and, when
/// `refused`, its requests too: a refused request does not count), one read and one
/// compare-and-swap per group.
pub fn release<H: Host>(host: &H, holds: &[Hold], refused: bool) {
    for (h, e) in give_back(host, holds, refused) {
        log::warn!("gateway filter: could not give back quota {} ({e})", h.id);
    }
}
