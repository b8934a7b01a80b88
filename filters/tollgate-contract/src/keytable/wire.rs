//! What travels about the key table besides the shards themselves.
//!
//! ```text
//! manifest  "TGKM" | format u8 = 1 | 0u8 × 3 | 256 × (epoch u64 | version u64)
//! update    "TGKU" | format u8 = 1 | 0u8 × 3 | count u32 | count × (len u32 | shard bytes)
//! ```
//!
//! The service VM sends its manifest (the `(epoch, version)` of each shard it has published)
//! with every long poll (`POST /internal/v1/keys?wait=N`); the control plane answers with an
//! update carrying the shards whose `(epoch, version)` differ (bounded in size: the rest come
//! with the next poll), or 304 when nothing differed for `wait` seconds. The service VM also
//! publishes its manifest in shared data, where workers read it to learn which shards to copy.
//!
//! A shard's epoch is its control plane's instance (a restarted control plane, or another
//! replica, builds its own table), its version the table generation that last changed it.
//! Shards are self-contained, so a table may hold shards of different epochs at once.

use super::shard::{Reader, Shard};
use super::{KeyTableError, SHARDS};

pub const MANIFEST_MAGIC: &[u8; 4] = b"TGKM";
pub const UPDATE_MAGIC: &[u8; 4] = b"TGKU";
pub const FORMAT: u8 = 1;
pub const MANIFEST_LEN: usize = 8 + SHARDS * 16;

/// The `(epoch, version)` of every shard; `(0, 0)`: not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub shards: Vec<(u64, u64)>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self { shards: vec![(0, 0); SHARDS] }
    }
}

impl Manifest {
    pub fn get(&self, i: u8) -> (u64, u64) {
        self.shards.get(usize::from(i)).copied().unwrap_or((0, 0))
    }

    pub fn set(&mut self, i: u8, epoch: u64, version: u64) {
        if let Some(slot) = self.shards.get_mut(usize::from(i)) {
            *slot = (epoch, version);
        }
    }

    /// Whether every shard is there (the table is complete).
    pub fn complete(&self) -> bool {
        self.shards.len() == SHARDS && self.shards.iter().all(|&(e, _)| e != 0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MANIFEST_LEN);
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&[FORMAT, 0, 0, 0]);
        for i in 0..=u8::MAX {
            let (e, v) = self.get(i);
            out.extend_from_slice(&e.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, KeyTableError> {
        let mut r = Reader::new(bytes);
        if r.take(4, "manifest")? != MANIFEST_MAGIC {
            return Err(KeyTableError::Magic { what: "key manifest" });
        }
        let format = r.u8("manifest")?;
        if format != FORMAT {
            return Err(KeyTableError::Format { what: "key manifest", actual: format });
        }
        if r.take(3, "manifest")? != [0, 0, 0] {
            return Err(KeyTableError::Reserved { what: "key manifest" });
        }
        let mut shards = Vec::with_capacity(SHARDS);
        for _ in 0..SHARDS {
            shards.push((r.u64("manifest")?, r.u64("manifest")?));
        }
        if r.remaining() != 0 {
            return Err(KeyTableError::Trailing { what: "key manifest", actual: r.remaining() });
        }
        Ok(Self { shards })
    }
}

/// Changed shards, each still encoded (the service VM stores them as they came).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update<'a> {
    pub shards: Vec<&'a [u8]>,
}

impl<'a> Update<'a> {
    pub fn encode(shards: &[&[u8]]) -> Vec<u8> {
        let total: usize = shards.iter().map(|s| s.len() + 4).sum();
        let mut out = Vec::with_capacity(12 + total);
        out.extend_from_slice(UPDATE_MAGIC);
        out.extend_from_slice(&[FORMAT, 0, 0, 0]);
        out.extend_from_slice(&(shards.len() as u32).to_le_bytes());
        for s in shards {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s);
        }
        out
    }

    /// Splits an update into its shards, checking the framing and each shard's header (each
    /// shard is decoded in full by whoever keeps it).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, KeyTableError> {
        let mut r = Reader::new(bytes);
        if r.take(4, "key update")? != UPDATE_MAGIC {
            return Err(KeyTableError::Magic { what: "key update" });
        }
        let format = r.u8("key update")?;
        if format != FORMAT {
            return Err(KeyTableError::Format { what: "key update", actual: format });
        }
        if r.take(3, "key update")? != [0, 0, 0] {
            return Err(KeyTableError::Reserved { what: "key update" });
        }
        let count = r.u32("key update")? as usize;
        if count > SHARDS {
            return Err(KeyTableError::TooLarge { what: "shards in an update", actual: count, limit: SHARDS });
        }
        let mut shards = Vec::with_capacity(count);
        for _ in 0..count {
            let len = r.u32("key update")? as usize;
            let shard = r.take(len, "shard in an update")?;
            Shard::peek(shard)?;
            shards.push(shard);
        }
        if r.remaining() != 0 {
            return Err(KeyTableError::Trailing { what: "key update", actual: r.remaining() });
        }
        Ok(Self { shards })
    }
}
