//! The virtual-key table as the data plane holds it: 256 shards (by the first byte of the key's
//! SHA-256 digest), each a self-contained binary blob of sorted fixed-size records searched in
//! place. The control plane builds a shard again only when a key in it changes; the service VM
//! fetches changed shards and publishes each under its own shared-data key; a worker copies a
//! shard only when its `(epoch, version)` changed.
//!
//! - [`shard`]: one shard's codec (strict: every length checked, never a panic) and its lookup.
//! - [`wire`]: the manifest (which `(epoch, version)` each shard has) and the update message the
//!   control plane answers with.
//!
//! Nothing here knows about proxy-wasm; time is passed in.

pub mod shard;
pub mod wire;

pub use shard::{encode_shard, EntrySpec, Shard};
pub use wire::{Manifest, Update};

use crate::keys::{digest, KeyDigest, KeyEntry, KeyRejection};

/// Shards in a table: one per value of the digest's first byte.
pub const SHARDS: usize = 256;

/// Shared-data key of the table's version: written last by the service VM after every change,
/// read (for its CAS) by each worker on every request. Absent until the first table is in. Its
/// value is empty: Envoy hands an empty value back without allocating in the VM, so the read
/// costs no second VM entry (`proxy_on_memory_allocate`): 7,800 fewer of Envoy's instructions a
/// request, measured with callgrind (bench/README "What a crossing costs").
pub const SHARED_VERSION_KEY: &str = "tollgate.keys.v1";
/// Shared-data key of the [`Manifest`] of what is published.
pub const SHARED_MANIFEST_KEY: &str = "tollgate.keys.v1.manifest";

/// Shared-data key of shard `i`.
pub fn shared_shard_key(i: u8) -> String {
    format!("tollgate.keys.v1.shard.{i:03}")
}

/// Why a table, shard or message was refused. None of them carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTableError {
    #[error("truncated {what}")]
    Truncated { what: &'static str },
    #[error("not a {what} (bad magic)")]
    Magic { what: &'static str },
    #[error("unsupported {what} format {actual}")]
    Format { what: &'static str, actual: u8 },
    #[error("reserved bytes of the {what} are not zero")]
    Reserved { what: &'static str },
    #[error("{actual} trailing bytes after the {what}")]
    Trailing { what: &'static str, actual: usize },
    #[error("shard {actual} where shard {expected} was expected")]
    ShardIndex { expected: u8, actual: u8 },
    #[error("record {record}: {reason}")]
    Record { record: usize, reason: &'static str },
    #[error("allowance set {set}: {reason}")]
    Set { set: usize, reason: &'static str },
    #[error("{what} too large: {actual} > {limit}")]
    TooLarge { what: &'static str, actual: usize, limit: usize },
}

/// The table a worker holds: every shard, each with the `(epoch, version)` it was built at.
#[derive(Debug, Clone)]
pub struct Table {
    shards: Vec<Shard>,
}

impl Default for Table {
    fn default() -> Self {
        Self { shards: (0..=u8::MAX).map(Shard::empty).collect() }
    }
}

impl Table {
    /// Builds a table from entries (tests and tools): every shard at `(epoch, version)`.
    pub fn from_entries(epoch: u64, version: u64, entries: &[EntrySpec<'_>]) -> Result<Self, KeyTableError> {
        let mut table = Self::default();
        for i in 0..=u8::MAX {
            let mine: Vec<EntrySpec<'_>> = entries.iter().filter(|e| e.digest[0] == i).cloned().collect();
            table.replace(Shard::decode(&encode_shard(i, epoch, version, &mine)?, i)?);
        }
        Ok(table)
    }

    /// The `(epoch, version)` of shard `i`.
    pub fn shard_version(&self, i: u8) -> (u64, u64) {
        self.shards.get(usize::from(i)).map_or((0, 0), |s| (s.epoch(), s.version()))
    }

    /// Puts a decoded shard in its place.
    pub fn replace(&mut self, shard: Shard) {
        if let Some(slot) = self.shards.get_mut(usize::from(shard.index())) {
            *slot = shard;
        }
    }

    /// Keys in the table (a rotated key within its grace period counts twice).
    pub fn len(&self) -> usize {
        self.shards.iter().map(Shard::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the shards.
    pub fn byte_len(&self) -> usize {
        self.shards.iter().map(Shard::byte_len).sum()
    }

    /// Looks a presented secret up; `now` (unix seconds) is read only for a key that expires.
    pub fn authenticate_at(&self, secret: &str, now: impl FnOnce() -> u64) -> Result<KeyEntry, KeyRejection> {
        self.authenticate_digest(&digest(secret), now)
    }

    /// As [`Table::authenticate_at`], for a key whose digest ([`digest`]) is already known.
    pub fn authenticate_digest(&self, d: &KeyDigest, now: impl FnOnce() -> u64) -> Result<KeyEntry, KeyRejection> {
        let shard = self.shards.get(usize::from(d[0])).ok_or(KeyRejection::Unknown)?;
        let record = shard.lookup(d).ok_or(KeyRejection::Unknown)?;
        match record.expires_at {
            Some(t) if now() >= t => Err(KeyRejection::Expired),
            _ => Ok(record.to_entry()),
        }
    }

    /// As [`Table::authenticate_at`] with a fixed time.
    pub fn authenticate(&self, secret: &str, now: u64) -> Result<KeyEntry, KeyRejection> {
        self.authenticate_at(secret, || now)
    }
}

#[cfg(test)]
mod tests;
