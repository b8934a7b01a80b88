//! What happens after admission: a request's end gives back what it held (at once, or once its
//! usage is in the tally), and the worker's tick writes what no admission has written.

#[allow(clippy::wildcard_imports)]
use super::*;

thread_local! {
    /// What ended requests give back and the usage read for them, not written yet (the
    /// worker's, shared by its root contexts).
    static DEFERRED: RefCell<Deferred> = RefCell::default();
    /// Reservations of ended requests whose usage may not be in the tally yet: per tick their
    /// requests ended before, what the worker's ticks have seen of the tally since, and the
    /// reservations, added up per quota slot (a give-back each).
    static AWAITING: RefCell<Vec<(Wait, Awaited)>> = RefCell::default();
    /// What this worker has counted of its tally.
    static SEEN: RefCell<tally::Seen> = RefCell::default();
    /// This worker's tally (random: a VM made again has a new one, so that a provider filter's
    /// totals for the old one are never read as the new one's).
    static TALLY: u64 = {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x7a11_u64).max(1)
    };
}

/// How often a worker reads its tally and gives back what no admission has given back yet (a
/// reservation is held two to three of these after its request).
pub const FLUSH_PERIOD: Duration = Duration::from_millis(100);
/// The most quota slots the reservations of requests that ended between two ticks are kept
/// for (added up per slot, see [`end`]); past it, a request's are given back at its end (its
/// usage then counts once it is read, after its reservation is gone).
pub(super) const AWAITING_MAX: usize = 16_384;

/// What a worker keeps to write: a list while it is short (a worker serving a few keys), by the
/// value each change is written to past [`SCAN_MAX`] changes (one serving hundreds: each change
/// merged into the list, and each admission's look for its group's, grew with them).
pub(super) enum Deferred {
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
    pub(super) fn add(&mut self, c: Change) {
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
    pub(super) fn take(&mut self, key: &str) -> Vec<Change> {
        match self {
            Self::Few(kept) => {
                let mut mine = Vec::new();
                let mut i = 0;
                while let Some(c) = kept.get(i) {
                    if quota::is_slot_key(key, &c.hold.id, c.hold.group.as_deref()) {
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
    pub(super) fn take_all(&mut self) -> Vec<Vec<Change>> {
        match std::mem::take(self) {
            Self::Few(kept) if kept.is_empty() => Vec::new(),
            Self::Few(kept) => vec![kept],
            Self::ByValue(by_value) => by_value.into_values().collect(),
        }
    }
}

/// The reservations of requests that ended between two ticks, added up per quota slot (by its
/// tag), window and reservation epoch (see [`end`]).
#[derive(Default)]
pub(super) struct Awaited {
    pub(super) changes: Keyed<(u32, u64, u64), Change>,
    /// Holds without a tag (which a roomy request never has), each kept on its own.
    pub(super) untagged: Vec<Change>,
}

impl Awaited {
    /// Adds a give-back of `hold`'s reservation into its slot's.
    pub(super) fn add(&mut self, hold: Hold) {
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

    pub(super) fn len(&self) -> usize {
        self.changes.len() + self.untagged.len()
    }

    /// The give-backs, taken out.
    pub(super) fn take(&mut self) -> Vec<Change> {
        let mut out: Vec<Change> = std::mem::take(&mut self.changes).into_values().collect();
        out.append(&mut self.untagged);
        out
    }
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
pub(super) enum Wait {
    /// No tick since its request ended.
    Ended,
    /// The tally (its writer and seq; `None`: none could be read) at the first tick after the
    /// end, and the ticks since.
    Saw(Option<(u64, u64)>, u16),
}

/// The most ticks a reservation waits for a tally write made after its request ended (its
/// provider VM gone, or a request that never reached one while the provider is idle): then it
/// is given back without.
pub(super) const WAIT_TICKS: u16 = 50;

impl Wait {
    /// The wait after a tick that read `now`: `None` when it is over (a write of the same writer
    /// newer than the one seen after the end, or the first write made since none could be read,
    /// holds the request's usage; or it has waited [`WAIT_TICKS`]).
    pub(super) fn after(self, now: Option<(u64, u64)>) -> Option<Self> {
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
pub(super) fn collect<H: Host>(host: &H) {
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
pub(super) fn counted(e: tally::Entry) -> Option<Change> {
    let Some((id, group)) = tagged(e.tag) else {
        log::warn!("gateway filter: the usage tally names quota slot {}, which this worker never tagged; not counted", e.tag);
        return None;
    };
    // The metric is not in the tally: counting usage does not depend on it (only giving back
    // does, and nothing is given back here).
    let hold = Hold { id, metric: Metric::TotalTokens, window: e.window, reserved: 0, group, epoch: 0, tag: e.tag };
    Some(Change { hold, back: 0, add: e.used })
}

/// Keeps `changes` to write later, each added into a kept one of the same quota slot, window,
/// reservation epoch and kind (a give-back, or usage) when there is one: giving back (or
/// counting) two amounts one after the other is giving back their sum (`Slot::unhold` takes
/// what is held, up to the amount), so the worker keeps a change per slot rather than per
/// request, and the compare-and-swap that writes them applies as few.
pub(super) fn defer(changes: Vec<Change>) {
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
pub(super) fn same_change(a: &Change, b: &Change) -> bool {
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
pub(super) fn take_deferred(key: &str) -> Vec<Change> {
    DEFERRED.with(|d| d.borrow_mut().take(key))
}

/// Writes kept changes now (the admission that took them will not).
pub(super) fn write_back<H: Host>(host: &H, changes: &[Change]) {
    for (c, e) in apply_changes(host, changes) {
        log::warn!("gateway filter: could not give back quota {} ({e})", c.hold.id);
    }
}
