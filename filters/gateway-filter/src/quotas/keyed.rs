//! Small maps for a worker's per-request state: a scan while few, a map past a few (see
//! [`Keyed`]).

#[allow(clippy::wildcard_imports)]
use super::*;

/// A map keyed by small integers (quota positions, tags), hashed with a multiply (the worker's
/// credits and waiting reservations are looked up on the request path; SipHash costs more than
/// the look-ups it saves for a few entries).
pub(super) type Fx<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// rustc's Fx hash: each word rotated in and multiplied by a constant.
#[derive(Default)]
pub(super) struct FxHasher(u64);

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
pub(super) struct Keyed<K, V> {
    pub(super) entries: Vec<(K, V)>,
    pub(super) at: Option<Fx<K, usize>>,
}

/// The most entries a [`Keyed`] scans.
pub(super) const SCAN_MAX: usize = 16;

impl<K, V> Default for Keyed<K, V> {
    fn default() -> Self {
        Self { entries: Vec::new(), at: None }
    }
}

impl<K: Copy + Eq + std::hash::Hash, V> Keyed<K, V> {
    #[inline]
    pub(super) fn position(&self, k: K) -> Option<usize> {
        match &self.at {
            Some(at) => at.get(&k).copied(),
            None => self.entries.iter().position(|(e, _)| *e == k),
        }
    }

    /// The entry at position `i` (see [`Keyed::position`]).
    #[inline]
    pub(super) fn at(&self, i: usize) -> Option<&V> {
        self.entries.get(i).map(|(_, v)| v)
    }

    #[inline]
    pub(super) fn at_mut(&mut self, i: usize) -> Option<&mut V> {
        self.entries.get_mut(i).map(|(_, v)| v)
    }

    #[inline]
    pub(super) fn get_mut(&mut self, k: K) -> Option<&mut V> {
        let i = self.position(k)?;
        self.entries.get_mut(i).map(|(_, v)| v)
    }

    /// Puts `v` under `k`; what was there before, if anything.
    pub(super) fn insert(&mut self, k: K, v: V) -> Option<V> {
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

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn into_values(self) -> impl Iterator<Item = V> {
        self.entries.into_iter().map(|(_, v)| v)
    }
}
