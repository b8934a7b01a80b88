//! Quota slots in shared data (`tollgate_contract::quota::Slot`): each value holds the slots of a
//! group of quotas by id (`quota::decode_slots`' layout; a quota alone is a group of one), changed only
//! with compare-and-swap so that the workers of one Envoy count exactly together, and so that a
//! request takes all the quotas of a scope with one read and one write. Used by the gateway
//! filter (admission, giving back), the provider filter (each attempt's real token usage) and
//! the service VM (the leases the quota authority grants).

use tollgate_contract::bytes::same_str;
use tollgate_contract::quota::{slot_key, Hold, Period, QuotaDoc, Slot, SLOT_BYTES};
use tollgate_contract::quota_lease;

use crate::abi::CAS_MISMATCH;
use crate::{Host, HostError};

/// Compare-and-swap attempts before a slot is given up as too busy (the request is then
/// refused: quotas fail closed).
const CAS_TRIES: usize = 32;

/// What an addition may not go past.
#[derive(Debug, Clone, Copy)]
pub enum Cap<'a> {
    /// Never refused (settling, giving back).
    None,
    /// A fixed limit (this Envoy's share of an unleased quota).
    Limit(u64),
    /// The lease this Envoy holds, or `floor` if that is more (the fall-back share while the
    /// authority is down). A slot still on an earlier window starts from the lease the service
    /// VM took ahead for this one, under `next`.
    Lease { next: &'a str, floor: u64 },
}

/// The slots of one value, as read: the value's bytes kept as they came, each slot decoded
/// beside the place of its id and numbers in them (no id copied), and the slots a change adds.
/// Written back in place ([`Slots::encode`]): an admission allocates nothing to read or to
/// write its group.
#[derive(Default)]
pub struct Slots {
    bytes: Vec<u8>,
    /// Each slot of `bytes`: where its id starts and ends (its numbers follow), and the slot.
    entries: Vec<(usize, usize, Slot)>,
    /// Slots of quotas the value did not have yet.
    added: Vec<(String, Slot)>,
}

impl Slots {
    /// Indexes a value (`quota::decode_slots`' layout: a length byte, the id, the slot's
    /// numbers, again); `None` when it does not add up.
    fn parse(bytes: Vec<u8>) -> Option<Self> {
        let mut entries = Vec::new();
        let mut at = 0;
        while let Some(&n) = bytes.get(at) {
            let (start, end) = (at + 1, at + 1 + usize::from(n));
            let slot = Slot::decode(bytes.get(end..end + SLOT_BYTES)?)?;
            entries.push((start, end, slot));
            at = end + SLOT_BYTES;
        }
        Some(Self { bytes, entries, added: Vec::new() })
    }

    fn position(&self, id: &str) -> Option<usize> {
        // `same`, not `==` (a byte-at-a-time `memcmp` in wasm), for each slot a request takes.
        self.entries.iter().position(|&(start, end, _)| self.bytes.get(start..end).is_some_and(|b| tollgate_contract::bytes::same(b, id.as_bytes())))
    }

    /// The slot of quota `id` (a new one for `window` if it has none yet; `None` never, but
    /// without a panic path).
    pub fn get_mut(&mut self, id: &str, window: u64) -> Option<&mut Slot> {
        if let Some(i) = self.position(id) {
            return self.entries.get_mut(i).map(|(_, _, slot)| slot);
        }
        let entry = match self.added.iter().position(|(e, _)| same_str(e, id)) {
            Some(i) => self.added.get_mut(i),
            None => {
                self.added.push((id.to_owned(), Slot::new(window)));
                self.added.last_mut()
            }
        };
        entry.map(|(_, slot)| slot)
    }

    pub fn get(&self, id: &str) -> Option<Slot> {
        match self.position(id) {
            Some(i) => self.entries.get(i).map(|&(_, _, s)| s),
            None => self.added.iter().find(|(e, _)| same_str(e, id)).map(|(_, s)| *s),
        }
    }

    /// The value to write: the bytes read with each slot's numbers written over in place, then
    /// the slots added (an id longer than 255 bytes is left out).
    fn encode(mut self) -> Vec<u8> {
        for &(_, end, slot) in &self.entries {
            if let Some(numbers) = self.bytes.get_mut(end..end + SLOT_BYTES) {
                numbers.copy_from_slice(&slot.encode());
            }
        }
        for (id, slot) in &self.added {
            let Ok(n) = u8::try_from(id.len()) else { continue };
            self.bytes.push(n);
            self.bytes.extend_from_slice(id.as_bytes());
            self.bytes.extend_from_slice(&slot.encode());
        }
        self.bytes
    }

    /// Gives `back` of what hold `h` counts (a held reservation comes off its epoch's held
    /// count, see `Slot::unhold`; a refused request's count off `used`) and counts `add` for
    /// good, unless its slot has moved on to another window (what is given back or settled
    /// belongs to a window that is over).
    fn count(&mut self, h: &Hold, back: u64, add: u64) -> Option<()> {
        let slot = self.get_mut(&h.id, h.window)?;
        if slot.window == h.window {
            if h.metric.is_held() {
                slot.unhold(h.epoch, back);
            } else {
                slot.used = slot.used.saturating_sub(back);
            }
            slot.used = slot.used.saturating_add(add);
        }
        Some(())
    }
}

/// Reads the value under `key`, lets `change` edit its slots, and writes them back with
/// compare-and-swap (again from the read on a conflict). `change` returning `None` leaves the
/// value as it was (`Ok(None)`). An absent value (or one that is not slots) counts as empty.
pub fn update<H: Host, T>(host: &H, key: &str, mut change: impl FnMut(&mut Slots) -> Option<T>) -> Result<Option<T>, HostError> {
    for _ in 0..CAS_TRIES {
        let (bytes, cas) = host.shared_data(key)?;
        let slots = match bytes {
            Some(b) => Slots::parse(b),
            // Present and empty (the host hands back no buffer for an empty value).
            None if cas != 0 => Some(Slots::default()),
            None => None,
        };
        let Some(mut slots) = slots else {
            // None yet (or not slots): start it empty; two workers doing so at once write the
            // same value, and the compare-and-swap below decides between them.
            host.set_shared_data(key, &[], None)?;
            continue;
        };
        let Some(out) = change(&mut slots) else { return Ok(None) };
        match host.set_shared_data(key, &slots.encode(), Some(cas)) {
            Ok(()) => return Ok(Some(out)),
            Err(e) if e.status == CAS_MISMATCH => continue,
            Err(e) => return Err(e),
        }
    }
    Err(HostError { call: "set_shared_data (quota slot busy)", status: CAS_MISMATCH })
}

/// Quota `id`'s slot under `key`, if it has one.
pub fn read<H: Host>(host: &H, key: &str, id: &str) -> Option<Slot> {
    host.shared_data(key).ok()?.0.and_then(Slots::parse).and_then(|s| s.get(id))
}

/// Shared-data values read at most once each, for several quotas (the service VM's tick looks
/// at every quota of a group in one value).
#[derive(Default)]
pub struct ReadOnce {
    values: std::collections::HashMap<String, Option<Slots>>,
}

impl ReadOnce {
    /// [`read`], from the value as first read.
    pub fn read<H: Host>(&mut self, host: &H, key: &str, id: &str) -> Option<Slot> {
        if !self.values.contains_key(key) {
            let value = host.shared_data(key).ok().and_then(|(b, _)| b).and_then(Slots::parse);
            self.values.insert(key.to_owned(), value);
        }
        self.values.get(key)?.as_ref()?.get(id)
    }
}

/// The slot of quota `id` as seen in `window`: one of an earlier window starts from zero, or,
/// for a leased quota, from the lease the service VM took ahead under `next` for this window.
pub fn in_window<H: Host>(host: &H, slot: Slot, id: &str, window: u64, cap: Cap<'_>) -> Slot {
    if let (Cap::Lease { next, .. }, true) = (cap, slot.window != window) {
        if let Some(ahead) = read(host, next, id).filter(|a| a.window == window) {
            return Slot { used: 0, ..ahead };
        }
    }
    slot.in_window(window)
}

/// What `slot` may count in all under `cap` (`None`: no limit).
fn ceiling(slot: &Slot, cap: Cap<'_>) -> Option<u64> {
    match cap {
        Cap::None => None,
        Cap::Limit(l) => Some(l),
        Cap::Lease { floor, .. } => Some(slot.leased.max(floor)),
    }
}

/// Adds `delta` to `slot`'s use, unless a positive one would go past `cap` (`false`).
pub fn take(slot: &mut Slot, delta: i64, cap: Cap<'_>) -> bool {
    let used = if delta >= 0 { slot.used.saturating_add(delta.unsigned_abs()) } else { slot.used.saturating_sub(delta.unsigned_abs()) };
    let limit = ceiling(slot, cap);
    if delta > 0 && limit.is_some_and(|l| used > l) {
        return false;
    }
    slot.used = used;
    true
}

/// The groups of the quotas `applicable` (indices into `keys`, `quota::slot_keys`): each
/// group's value key with its quotas' indices, in first-seen order.
pub fn groups<'k>(applicable: &[usize], keys: &'k [(String, String)]) -> Vec<(&'k str, Vec<usize>)> {
    let mut out: Vec<(&'k str, Vec<usize>)> = Vec::new();
    for &i in applicable {
        let Some((key, _)) = keys.get(i) else { continue };
        match out.iter_mut().find(|(k, _)| same_str(k, key)) {
            Some((_, members)) => members.push(i),
            None => out.push((key, vec![i])),
        }
    }
    out
}

/// Whether the service VM has found the quota authority unreachable.
pub fn authority_down<H: Host>(host: &H) -> bool {
    matches!(host.shared_data(quota_lease::SHARED_AUTHORITY_KEY), Ok((Some(v), _)) if v == b"down")
}

/// Gives back what a request (or an attempt) held: its concurrency slots and token or cost
/// reservations, and, when `refused`, its requests too (a refused request does not count); one
/// read and one compare-and-swap per group. Returns the holds that could not be given back.
pub fn give_back<'h, H: Host>(host: &H, holds: &'h [Hold], refused: bool) -> Vec<(&'h Hold, HostError)> {
    use tollgate_contract::quota::Metric;
    adjust(host, holds, |h| match h.metric {
        Metric::Concurrency => (1, 0),
        Metric::Requests if refused => (1, 0),
        Metric::Requests => (0, 0),
        _ => (h.reserved, 0),
    })
}

/// One quota a request takes: the quota, its next window's lease key, and how much.
pub struct Want<'q> {
    pub quota: &'q QuotaDoc,
    pub next: &'q str,
    pub amount: u64,
    /// Taken besides `amount` when it fits and leaves at least half the quota's limit (see
    /// [`Slot::left`]): a worker's credit for its next requests (0: none). Of a leased quota, at
    /// most a quarter of what is left of the Envoy's lease.
    pub extra: u64,
}

/// What a request took of one quota: the slot as written, and the period it counted in.
pub struct Taken {
    pub slot: Slot,
    pub amount: u64,
    pub period: Period,
    /// What was taken of `Want::extra` (0: nothing).
    pub extra: u64,
}

/// Which of a group's wants would go over, and how much its quota had room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Over {
    /// Its index in the wants.
    pub at: usize,
    /// What could still be taken of it (of this Envoy's lease, for a leased quota).
    pub room: u64,
}

/// Takes every one of `wants` (the quotas of one group, counted in the value under `key`) or
/// none of them, with one read and one compare-and-swap: `Ok(Err(over))` when one would go
/// over. A leased quota is spent from this Envoy's lease (or, with `down`, the authority
/// unreachable, up to its fall-back share); held metrics are held in reservation epoch
/// `epoch` (see `Slot::roll`). `back`: what ended requests (of this group) give back and the
/// usage counted for them, applied first, in the same compare-and-swap (written only when it
/// is; see the gateway filter's deferred changes).
pub fn take_group<H: Host>(host: &H, key: &str, wants: &[Want<'_>], now: u64, epoch: u64, down: bool, back: &[Change]) -> Result<Result<Vec<Taken>, Over>, HostError> {
    let mut over = Over { at: 0, room: 0 };
    let mut taken: Vec<Taken> = Vec::with_capacity(wants.len());
    let done = update(host, key, |slots| {
        taken.clear();
        for c in back {
            slots.count(&c.hold, c.back, c.add)?;
        }
        for (i, w) in wants.iter().enumerate() {
            let q = w.quota;
            let period = q.period(now);
            let cap = if q.lease { Cap::Lease { next: w.next, floor: if down { q.share } else { 0 } } } else { Cap::Limit(period.limit) };
            let slot = slots.get_mut(&q.id, period.window)?;
            let mut s = in_window(host, *slot, &q.id, period.window, cap);
            s.roll(epoch);
            if !take(&mut s, i64::try_from(w.amount).unwrap_or(i64::MAX), cap) {
                over = Over { at: i, room: ceiling(&s, cap).map_or(u64::MAX, |c| c.saturating_sub(s.used)) };
                return None;
            }
            if q.metric.is_held() {
                s.hold(epoch, w.amount);
            }
            let mut extra = 0;
            // Of a lease, a credit takes at most a quarter of what is left of it (so that the
            // Envoy's other workers do not wait for a grant while it lasts), and at least one
            // request's amount.
            let want = match cap {
                Cap::Lease { .. } => w.extra.min(s.spare() / 4),
                _ => w.extra,
            };
            if want > 0 && want >= w.amount {
                let mut more = s;
                if take(&mut more, i64::try_from(want).unwrap_or(i64::MAX), cap) && more.left(q.lease, period.limit) >= period.limit / 2 {
                    if q.metric.is_held() {
                        more.hold(epoch, want);
                    }
                    (s, extra) = (more, want);
                }
            }
            *slot = s;
            taken.push(Taken { slot: s, amount: w.amount, period, extra });
        }
        Some(())
    })?;
    Ok(match done {
        Some(()) => Ok(taken),
        None => Err(over),
    })
}

/// Adds a lease of `granted` for `window` to quota `id`'s slot under `key`, and records what the
/// authority has `free`. A slot on a later window keeps its own (the grant came too late).
pub fn lease<H: Host>(host: &H, key: &str, id: &str, window: u64, granted: u64, free: u64) -> Result<Slot, HostError> {
    let done = update(host, key, |slots| {
        let slot = slots.get_mut(id, window)?;
        if slot.window <= window {
            let mut s = if slot.window == window { *slot } else { Slot::new(window) };
            s.leased = s.leased.saturating_add(granted);
            s.free = free;
            *slot = s;
        }
        Some(*slot)
    })?;
    Ok(done.unwrap_or_default())
}

/// Takes up to `amount` of quota `id`'s unspent lease out of its slot for `window` (to give it
/// back to the authority); returns what was taken.
pub fn take_back<H: Host>(host: &H, key: &str, id: &str, window: u64, amount: u64) -> Result<u64, HostError> {
    let taken = update(host, key, |slots| {
        let slot = slots.get_mut(id, window)?;
        let taken = if slot.window == window { amount.min(slot.spare()) } else { 0 };
        if taken == 0 {
            return None;
        }
        slot.leased -= taken;
        Some(taken)
    })?;
    Ok(taken.unwrap_or(0))
}

/// Changes what each of a request's holds counts, one read and one compare-and-swap per group:
/// `change(hold)` is `(back, add)`: `back` given back (a held reservation, concurrency or
/// tokens or cost, comes off its epoch's held count, and not at all once that has expired, see
/// `Slot::unhold`; a refused request's count comes off `used`), then `add` counted for good (a
/// settled usage); `(0, 0)` leaves it alone. A slot that has moved on to another window is left
/// alone (what is given back or settled belongs to a window that is over). Returns the holds
/// whose value could not be written (every one of them; several holds of one quota count once each).
pub fn adjust<'h, H: Host>(host: &H, holds: &'h [Hold], change: impl Fn(&Hold) -> (u64, u64)) -> Vec<(&'h Hold, HostError)> {
    adjust_by(host, holds, |h| h, change)
}

/// A change to what one hold counts (see [`adjust`]): `back` given back, then `add` counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub hold: Hold,
    pub back: u64,
    pub add: u64,
}

/// [`adjust`] for changes already worked out; returns those that could not be written.
pub fn apply_changes<'c, H: Host>(host: &H, changes: &'c [Change]) -> Vec<(&'c Change, HostError)> {
    adjust_by(host, changes, |c| &c.hold, |c| (c.back, c.add))
}

fn adjust_by<'t, T, H: Host>(host: &H, items: &'t [T], hold: impl Fn(&T) -> &Hold, change: impl Fn(&T) -> (u64, u64)) -> Vec<(&'t T, HostError)> {
    let counted = |t: &&T| change(t) != (0, 0);
    let mut failed = Vec::new();
    // The values written already: groups by name, and a hold without a group (a value of its
    // own) by its quota's id, so that several holds of one quota are each counted once.
    let mut groups_done: Vec<&str> = Vec::new();
    let mut ids_done: Vec<&str> = Vec::new();
    for t in items.iter().filter(counted) {
        let h = hold(t);
        let (done, name) = match h.group.as_deref() {
            Some(g) => (&mut groups_done, g),
            None => (&mut ids_done, &*h.id),
        };
        if done.iter().any(|d| same_str(d, name)) {
            continue;
        }
        done.push(name);
        let same = |o: &&T| {
            let o = hold(o);
            match (h.group.as_deref(), o.group.as_deref()) {
                (Some(g), Some(og)) => same_str(g, og),
                (None, None) => same_str(&o.id, &h.id),
                _ => false,
            }
        };
        let written = update(host, &slot_key(&h.id, h.group.as_deref()), |slots| {
            for o in items.iter().filter(counted).filter(same) {
                let (back, add) = change(o);
                slots.count(hold(o), back, add)?;
            }
            Some(())
        });
        if let Err(e) = written {
            failed.extend(items.iter().filter(counted).filter(same).map(|o| (o, e)));
        }
    }
    failed
}

/// A 429 in the client's API format naming the quota `q` (its limit `limit` in the refused
/// request's window), with `retry-after`.
pub fn refuse<H: Host>(host: &H, api: tollgate_contract::ClientApi, q: &QuotaDoc, limit: u64, retry_after: u64) -> Result<(), HostError> {
    use tollgate_contract::quota::Metric;
    use tollgate_contract::{ClientApi, ErrorKind, GatewayError};
    let what = match q.metric {
        Metric::Requests => "requests",
        Metric::InputTokens => "input tokens",
        Metric::OutputTokens => "output tokens",
        Metric::TotalTokens => "tokens",
        Metric::Concurrency => "concurrent requests",
        Metric::CostUsd => "nano-dollars",
    };
    let per = match q.window_seconds {
        _ if q.metric == Metric::Concurrency => String::new(),
        _ if !q.periods.is_empty() => " in this calendar window".to_owned(),
        0 => " in total".to_owned(),
        w => format!(" per {w} s"),
    };
    let provider = q.provider.map(|p| format!(" at provider {}", p.as_str())).unwrap_or_default();
    let err = GatewayError::new(ErrorKind::RateLimited, format!("Quota {} ({limit} {what}{per}{provider}) is used up; retry after {retry_after} s.", q.id))
        .code(if q.metric == Metric::CostUsd { "budget_exceeded" } else { "rate_limit_exceeded" });
    let body = err.to_json(api);
    let retry_after = retry_after.to_string();
    let mut headers = vec![("content-type", "application/json"), ("retry-after", retry_after.as_str())];
    if api == ClientApi::Bedrock {
        headers.push(("x-amzn-errortype", err.aws_error_type()));
    }
    host.send_response(429, &headers, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_contract::quota::{decode_slots, encode_slots};

    #[test]
    fn slots_are_read_and_written_back_in_place_in_the_values_layout() {
        let a = Slot { window: 7, used: 3, leased: 10, free: 90, epoch: 2, held: [1, 2] };
        let b = Slot { window: 7, used: 5, ..Slot::default() };
        let value = encode_slots(&[("quota_a".into(), a), ("quota_b".into(), b)]);
        let mut slots = Slots::parse(value.clone()).expect("slots");
        assert_eq!((slots.get("quota_a"), slots.get("quota_b"), slots.get("quota_c")), (Some(a), Some(b), None));
        if let Some(s) = slots.get_mut("quota_b", 7) {
            s.used += 4;
        }
        let c = slots.get_mut("quota_c", 8).map(|s| *s);
        assert_eq!(c, Some(Slot::new(8)));
        let written = slots.encode();
        let b4 = Slot { used: 9, ..b };
        assert_eq!(decode_slots(&written), Some(vec![("quota_a".into(), a), ("quota_b".into(), b4), ("quota_c".into(), Slot::new(8))]));
        // Unchanged, the value is written back as it was read.
        assert_eq!(Slots::parse(value.clone()).expect("slots").encode(), value);
        // A value that does not add up is not slots.
        assert!(Slots::parse(value.get(..value.len() - 1).unwrap_or_default().to_vec()).is_none());
        assert!(Slots::parse(Vec::new()).is_some_and(|s| s.entries.is_empty()));
    }
}
