//! The usage tally: how the provider filter hands an attempt's real usage to the gateway filter
//! of its worker without touching the quota's slot (issue 13).
//!
//! Settling an attempt in its slot is a shared-data read (a buffer handed back into the VM) and a
//! compare-and-swap, about 13,000 of Envoy's instructions a request. Instead, while a request's
//! quotas are roomy (see the gateway's `Roomy`), the gateway names its worker's tally in the
//! request's holds ([`super::Holds::tally`]) and the provider filter of the same worker adds the
//! attempt's usage to that tally's running totals, kept in its memory, and writes them whole on
//! its tick with one blind write (no read, no compare-and-swap: the provider of that worker is
//! its only writer; no host call at all when an attempt ends). Each write carries the next
//! [`Tally::seq`]. The gateway reads the tally on its tick, counts what grew since it last looked
//! ([`Seen::fold`]) and gives a request's reservations back only once it reads a write made
//! after the request ended: at its first tick after the end it notes the tally's writer and seq,
//! and the reservation goes when a later tick reads another seq of that writer (every attempt of
//! a request has ended, and added its usage to the provider's totals, by the end of the
//! event-loop pass the request ends in; the worker's VMs share one thread, so a write made after
//! that tick's read holds it). A reservation stays counted until its usage is, so no quota is
//! ever counted short for it (it is counted long, by the reservation, for a few ticks of both
//! filters).
//!
//! Layout: the writer's instance (a random number a provider VM draws when it starts: a new VM
//! starts its totals from zero), its write count, then per quota slot the quota's id and group,
//! the window and the usage counted in it. Only the newest window of each quota is kept: usage
//! for a window that is over would not be counted anyway (its slot has moved on).

use super::holds::{put_text, take_text, take_u64};
use crate::bytes::same_str;
use super::Hold;

/// Shared-data key prefix of the tallies; a worker's is this and its id in hex.
pub const TALLY_PREFIX: &str = "tollgate.quota.tally.";

/// The shared-data key of tally `id`.
pub fn tally_key(id: u64) -> String {
    format!("{TALLY_PREFIX}{id:016x}")
}

/// One quota slot's running usage in a tally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub group: Option<String>,
    pub window: u64,
    pub used: u64,
}

/// The running totals one provider VM has counted for one gateway worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub instance: u64,
    /// How many times the writer has written it (each write one more).
    pub seq: u64,
    pub entries: Vec<Entry>,
}

/// The most quota slots a tally keeps (a request holds a few; a worker's requests, as many as
/// the keys and models it serves): past it the oldest entry makes room.
pub const TALLY_ENTRIES: usize = 256;



impl Tally {
    pub fn new(instance: u64) -> Self {
        Self { instance, seq: 0, entries: Vec::new() }
    }

    /// Counts `used` of hold `h`'s quota in `h`'s window; `false` when nothing changed (nothing
    /// used, or a window older than the one the tally is on for that quota).
    pub fn add(&mut self, h: &Hold, used: u64) -> bool {
        if used == 0 {
            return false;
        }
        match self.entry(h) {
            Some(e) if e.window == h.window => e.used = e.used.saturating_add(used),
            Some(e) if e.window < h.window => (e.window, e.used) = (h.window, used),
            Some(_) => return false,
            None => self.entries.push(Entry { id: String::from(&*h.id), group: h.group.as_deref().map(str::to_owned), window: h.window, used }),
        }
        true
    }

    fn entry(&mut self, h: &Hold) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| same_str(&e.id, &h.id) && same_group(e.group.as_deref(), h.group.as_deref()))
    }

    /// Makes room for `n` more quotas: the oldest entries go past [`TALLY_ENTRIES`] (their
    /// usage since the gateway last read them is not counted).
    pub fn make_room(&mut self, n: usize) {
        let over = (self.entries.len() + n).saturating_sub(TALLY_ENTRIES).min(self.entries.len());
        self.entries.drain(..over);
    }

    /// The binary form, written over `out` (`None` when an id or a group is longer than 65,535
    /// bytes).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Option<()> {
        out.clear();
        out.extend_from_slice(&self.instance.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        for e in &self.entries {
            put_text(out, &e.id)?;
            put_text(out, e.group.as_deref().unwrap_or(""))?;
            out.extend_from_slice(&e.window.to_le_bytes());
            out.extend_from_slice(&e.used.to_le_bytes());
        }
        Some(())
    }

    #[cfg(test)]
    fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Some(out)
    }

    /// The inverse of [`Tally::encode_into`], all of `bytes` or nothing.
    pub fn decode(mut bytes: &[u8]) -> Option<Self> {
        let b = &mut bytes;
        let (instance, seq) = (take_u64(b)?, take_u64(b)?);
        let mut entries = Vec::new();
        while !b.is_empty() {
            let id = take_text(b)?.to_owned();
            let group = Some(take_text(b)?.to_owned()).filter(|g| !g.is_empty());
            entries.push(Entry { id, group, window: take_u64(b)?, used: take_u64(b)? });
        }
        Some(Self { instance, seq, entries })
    }
}

fn same_group(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same_str(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// What the gateway has counted of its tally so far, per writer: a provider VM made again
/// starts from zero under a new instance; two at once (a provider module replaced while Envoy
/// runs, the old VM still finishing requests on some clusters) overwrite each other's value, and
/// each one's totals are compared with its own (a writer's usage hidden by the other's write is
/// counted when it writes again, its totals being running ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen(Vec<Tally>);

/// The most writers a gateway keeps apart (the oldest is forgotten).
const WRITERS: usize = 4;

impl Seen {
    /// What `now` (the tally as read) has counted since its writer's last, as holds of the
    /// quotas' windows (`reserved` 0) with the usage to count for each. A writer not seen yet
    /// counts from zero; so does a quota on a new window.
    pub fn fold(&mut self, now: &Tally) -> Vec<(Hold, u64)> {
        let at = self.0.iter().position(|t| t.instance == now.instance);
        let before = at.and_then(|i| self.0.get(i));
        let mut out = Vec::new();
        for e in &now.entries {
            let was = before
                .and_then(|b| b.entries.iter().find(|s| s.window == e.window && same_str(&s.id, &e.id) && same_group(s.group.as_deref(), e.group.as_deref())))
                .map_or(0, |s| s.used);
            // A count never shrinks within a window; one that did was pushed out of a full tally
            // and counted again from zero.
            let grew = if e.used >= was { e.used - was } else { e.used };
            if grew > 0 {
                // The metric is not in the tally: counting usage does not depend on it (only
                // giving back does, and nothing is given back here).
                let metric = super::Metric::TotalTokens;
                out.push((Hold { id: e.id.as_str().into(), metric, window: e.window, reserved: 0, group: e.group.as_deref().map(Into::into), epoch: 0 }, grew));
            }
        }
        match at.and_then(|i| self.0.get_mut(i)) {
            Some(t) => t.clone_from(now),
            None => {
                if self.0.len() >= WRITERS {
                    self.0.remove(0);
                }
                self.0.push(now.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::Metric;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes decode to a tally or to nothing, never a panic; a tally decoded is exactly
        /// what encodes to them.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Some(t) = Tally::decode(&bytes) {
                let mut out = Vec::new();
                prop_assert!(t.encode_into(&mut out).is_some());
                prop_assert_eq!(out, bytes);
            }
        }
    }

    fn hold(id: &str, window: u64) -> Hold {
        Hold { id: id.into(), metric: Metric::TotalTokens, window, reserved: 100, group: Some("k1".into()), epoch: 3 }
    }

    #[test]
    fn a_tally_counts_each_quotas_newest_window_and_round_trips() {
        let mut t = Tally::new(7);
        assert!(t.add(&hold("tpm", 10), 5));
        assert!(t.add(&hold("tpm", 10), 6));
        assert!(!t.add(&hold("tpm", 10), 0), "nothing used: nothing to write");
        assert!(t.add(&hold("budget", 0), 900));
        assert_eq!(t.entries[0].used, 11);
        assert!(t.add(&hold("tpm", 11), 2), "a new window starts from its own usage");
        assert_eq!((t.entries[0].window, t.entries[0].used), (11, 2));
        assert!(!t.add(&hold("tpm", 10), 50), "a window that is over is not counted");
        let bytes = t.encode().unwrap();
        assert_eq!(Tally::decode(&bytes), Some(t.clone()));
        assert_eq!(Tally::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Tally::decode(&[1, 2, 3]), None);
        t.seq = 9;
        assert_eq!(Tally::decode(&t.encode().unwrap()).map(|d| d.seq), Some(9));
        let mut ungrouped = Tally::new(1);
        ungrouped.add(&Hold { group: None, ..hold("q", 1) }, 3);
        assert_eq!(Tally::decode(&ungrouped.encode().unwrap()), Some(ungrouped));
    }

    #[test]
    fn a_full_tally_drops_its_oldest() {
        let mut t = Tally::new(7);
        t.add(&hold("tpm", 10), 5);
        for i in 0..TALLY_ENTRIES {
            t.make_room(1);
            t.add(&hold(&format!("q{i}"), 1), 1);
        }
        assert_eq!(t.entries.len(), TALLY_ENTRIES);
        assert!(t.entries.iter().all(|e| e.id != "tpm"), "the oldest went first");
    }

    #[test]
    fn the_gateway_counts_only_what_grew_and_starts_again_with_a_new_writer() {
        let mut seen = Seen::default();
        let mut t = Tally::new(7);
        t.add(&hold("tpm", 10), 5);
        t.add(&hold("budget", 0), 900);
        let got: Vec<(String, u64, u64)> = seen.fold(&t).into_iter().map(|(h, n)| (h.id.to_string(), h.window, n)).collect();
        assert_eq!(got, vec![("tpm".into(), 10, 5), ("budget".into(), 0, 900)]);
        assert!(seen.fold(&t).is_empty(), "read again unchanged: nothing new");
        t.add(&hold("tpm", 10), 4);
        t.add(&hold("tpm", 11), 1);
        let got: Vec<(String, u64, u64)> = seen.fold(&t).into_iter().map(|(h, n)| (h.id.to_string(), h.window, n)).collect();
        assert_eq!(got, vec![("tpm".into(), 11, 1)], "the usage of window 10 that grew after it was left behind is not counted");
        // The provider's VM was made again: its totals start from zero under a new instance.
        let mut fresh = Tally::new(8);
        fresh.add(&hold("budget", 0), 30);
        let got: Vec<(String, u64)> = seen.fold(&fresh).into_iter().map(|(h, n)| (h.id.to_string(), n)).collect();
        assert_eq!(got, vec![("budget".into(), 30)]);
        let (h, _) = seen.fold(&Tally { instance: 8, seq: 2, entries: vec![Entry { used: 31, ..fresh.entries[0].clone() }] }).remove(0);
        assert_eq!((h.group.as_deref(), h.reserved), (Some("k1"), 0));
    }

    #[test]
    fn two_writers_overwriting_each_other_are_each_counted_once() {
        let mut seen = Seen::default();
        let (mut a, mut b) = (Tally::new(1), Tally::new(2));
        let mut folded = |t: &Tally| seen.fold(t).into_iter().map(|(_, n)| n).sum::<u64>();
        a.add(&hold("tpm", 10), 5);
        assert_eq!(folded(&a), 5);
        b.add(&hold("tpm", 10), 3);
        assert_eq!(folded(&b), 3);
        a.add(&hold("tpm", 10), 2);
        assert_eq!(folded(&a), 2, "not the whole of a's 7 again");
        assert_eq!(folded(&b), 0);
        b.add(&hold("tpm", 10), 4);
        a.add(&hold("tpm", 10), 1); // written, then hidden by b's write before the gateway read it
        assert_eq!(folded(&b), 4);
        a.add(&hold("tpm", 10), 6);
        assert_eq!(folded(&a), 7, "a's hidden 1 counted with its next write");
    }
}
