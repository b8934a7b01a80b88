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
//! A quota slot is named in the tally by the gateway worker's tag for it ([`super::Tagged`]):
//! the worker numbers each quota slot (id and group) it is configured with, once, and keeps
//! the numbers for as long as it runs, so that the request path copies, decodes and compares no
//! quota text; the worker turns the tags back into its quotas when it reads the tally.
//!
//! Layout: the writer's instance (a random number a provider VM draws when it starts: a new VM
//! starts its totals from zero), its write count, then per quota slot its tag, the window and
//! the usage counted in it. Only the newest window of each quota is kept: usage for a window
//! that is over would not be counted anyway (its slot has moved on).

use super::holds::{take, take_u64};

/// Shared-data key prefix of the tallies; a worker's is this and its id in hex.
pub const TALLY_PREFIX: &str = "tollgate.quota.tally.";

/// The shared-data key of tally `id`.
pub fn tally_key(id: u64) -> String {
    format!("{TALLY_PREFIX}{id:016x}")
}

/// One quota slot's running usage in a tally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entry {
    pub tag: u32,
    pub window: u64,
    pub used: u64,
}

/// The bytes of an entry in the tally's binary form.
const ENTRY_BYTES: usize = 20;

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

    /// Counts `used` of the quota slot tagged `tag` in `window`; `false` when nothing changed
    /// (nothing used, or a window older than the one the tally is on for that slot).
    pub fn add(&mut self, tag: u32, window: u64, used: u64) -> bool {
        if used == 0 {
            return false;
        }
        match self.entries.iter_mut().find(|e| e.tag == tag) {
            Some(e) if e.window == window => e.used = e.used.saturating_add(used),
            Some(e) if e.window < window => (e.window, e.used) = (window, used),
            Some(_) => return false,
            None => self.entries.push(Entry { tag, window, used }),
        }
        true
    }

    /// Makes room for `n` more quotas: the oldest entries go past [`TALLY_ENTRIES`] (their
    /// usage since the gateway last read them is not counted).
    pub fn make_room(&mut self, n: usize) {
        let over = (self.entries.len() + n).saturating_sub(TALLY_ENTRIES).min(self.entries.len());
        self.entries.drain(..over);
    }

    /// The binary form, written over `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(16 + self.entries.len() * ENTRY_BYTES);
        out.extend_from_slice(&self.instance.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.window.to_le_bytes());
            out.extend_from_slice(&e.used.to_le_bytes());
        }
    }

    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// The inverse of [`Tally::encode_into`], all of `bytes` or nothing.
    pub fn decode(mut bytes: &[u8]) -> Option<Self> {
        let b = &mut bytes;
        let (instance, seq) = (take_u64(b)?, take_u64(b)?);
        if !b.len().is_multiple_of(ENTRY_BYTES) {
            return None;
        }
        let mut entries = Vec::with_capacity(b.len() / ENTRY_BYTES);
        while !b.is_empty() {
            let tag = u32::from_le_bytes(take(b, 4)?.try_into().ok()?);
            entries.push(Entry { tag, window: take_u64(b)?, used: take_u64(b)? });
        }
        Some(Self { instance, seq, entries })
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
    /// What `now` (the tally as read) has counted since its writer's last: per quota slot
    /// (its tag) and window, the usage to count. A writer not seen yet counts from zero; so does
    /// a quota on a new window.
    pub fn fold(&mut self, now: &Tally) -> Vec<Entry> {
        let at = self.0.iter().position(|t| t.instance == now.instance);
        let before = at.and_then(|i| self.0.get(i));
        let mut out = Vec::new();
        for e in &now.entries {
            let was = before
                .and_then(|b| b.entries.iter().find(|s| s.tag == e.tag && s.window == e.window))
                .map_or(0, |s| s.used);
            // A count never shrinks within a window; one that did was pushed out of a full tally
            // and counted again from zero.
            let grew = if e.used >= was { e.used - was } else { e.used };
            if grew > 0 {
                out.push(Entry { used: grew, ..*e });
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
    use proptest::prelude::*;

    proptest! {
        /// Any bytes decode to a tally or to nothing, never a panic; a tally decoded is exactly
        /// what encodes to them.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Some(t) = Tally::decode(&bytes) {
                prop_assert_eq!(t.encode(), bytes);
            }
        }
    }

    const TPM: u32 = 1;
    const BUDGET: u32 = 2;

    fn entries(got: Vec<Entry>) -> Vec<(u32, u64, u64)> {
        got.into_iter().map(|e| (e.tag, e.window, e.used)).collect()
    }

    #[test]
    fn a_tally_counts_each_quotas_newest_window_and_round_trips() {
        let mut t = Tally::new(7);
        assert!(t.add(TPM, 10, 5));
        assert!(t.add(TPM, 10, 6));
        assert!(!t.add(TPM, 10, 0), "nothing used: nothing to write");
        assert!(t.add(BUDGET, 0, 900));
        assert_eq!(t.entries[0].used, 11);
        assert!(t.add(TPM, 11, 2), "a new window starts from its own usage");
        assert_eq!((t.entries[0].window, t.entries[0].used), (11, 2));
        assert!(!t.add(TPM, 10, 50), "a window that is over is not counted");
        let bytes = t.encode();
        assert_eq!(bytes.len(), 16 + 2 * ENTRY_BYTES);
        assert_eq!(bytes[16..20], TPM.to_le_bytes(), "the tag first, little-endian");
        assert_eq!(Tally::decode(&bytes), Some(t.clone()));
        assert_eq!(Tally::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Tally::decode(&[1, 2, 3]), None);
        t.seq = 9;
        assert_eq!(Tally::decode(&t.encode()).map(|d| d.seq), Some(9));
    }

    #[test]
    fn a_full_tally_drops_its_oldest() {
        let mut t = Tally::new(7);
        t.add(TPM, 10, 5);
        for i in 0..TALLY_ENTRIES as u32 {
            t.make_room(1);
            t.add(100 + i, 1, 1);
        }
        assert_eq!(t.entries.len(), TALLY_ENTRIES);
        assert!(t.entries.iter().all(|e| e.tag != TPM), "the oldest went first");
    }

    #[test]
    fn the_gateway_counts_only_what_grew_and_starts_again_with_a_new_writer() {
        let mut seen = Seen::default();
        let mut t = Tally::new(7);
        t.add(TPM, 10, 5);
        t.add(BUDGET, 0, 900);
        assert_eq!(entries(seen.fold(&t)), vec![(TPM, 10, 5), (BUDGET, 0, 900)]);
        assert!(seen.fold(&t).is_empty(), "read again unchanged: nothing new");
        t.add(TPM, 10, 4);
        t.add(TPM, 11, 1);
        assert_eq!(entries(seen.fold(&t)), vec![(TPM, 11, 1)], "the usage of window 10 that grew after it was left behind is not counted");
        // The provider's VM was made again: its totals start from zero under a new instance.
        let mut fresh = Tally::new(8);
        fresh.add(BUDGET, 0, 30);
        assert_eq!(entries(seen.fold(&fresh)), vec![(BUDGET, 0, 30)]);
        let grown = Tally { instance: 8, seq: 2, entries: vec![Entry { used: 31, ..fresh.entries[0] }] };
        assert_eq!(entries(seen.fold(&grown)), vec![(BUDGET, 0, 1)]);
    }

    #[test]
    fn two_writers_overwriting_each_other_are_each_counted_once() {
        let mut seen = Seen::default();
        let (mut a, mut b) = (Tally::new(1), Tally::new(2));
        let mut folded = |t: &Tally| seen.fold(t).into_iter().map(|e| e.used).sum::<u64>();
        a.add(TPM, 10, 5);
        assert_eq!(folded(&a), 5);
        b.add(TPM, 10, 3);
        assert_eq!(folded(&b), 3);
        a.add(TPM, 10, 2);
        assert_eq!(folded(&a), 2, "not the whole of a's 7 again");
        assert_eq!(folded(&b), 0);
        b.add(TPM, 10, 4);
        a.add(TPM, 10, 1); // written, then hidden by b's write before the gateway read it
        assert_eq!(folded(&b), 4);
        a.add(TPM, 10, 6);
        assert_eq!(folded(&a), 7, "a's hidden 1 counted with its next write");
    }
}
