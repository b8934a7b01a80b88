//! One shard of the key table: the keys whose digest starts with the shard's index.
//!
//! ```text
//! header (36 bytes)  "TGKS" | format u8 = 1 | index u8 | 0u16 | epoch u64 | version u64 |
//!                    records u32 | sets_len u32 | ids_len u32
//! records            records × 48 bytes, sorted by digest, no two equal:
//!                    digest [32] | expires_at u64 | flags u8 | set u24 | id_offset u32
//!                    flags: bit 0 admin, bit 1 expires (expires_at is meaningful)
//! sets (sets_len)    count u32, then per set: kind u8 (0 every model, 1 a list) |
//!                    n u16 | n × (len u16 | UTF-8 model name)
//! ids (ids_len)      per id: len u8 | UTF-8 public key id; a record's id_offset points at len
//! ```
//!
//! Integers are little-endian. Records are searched in place (the blob is kept as it came);
//! only the allowance sets, few and shared by many records, are decoded.

use subtle::ConstantTimeEq;

use super::KeyTableError;
use crate::keys::{AllowedModels, KeyDigest, KeyEntry, Role};

pub const MAGIC: &[u8; 4] = b"TGKS";
pub const FORMAT: u8 = 1;
pub const HEADER_LEN: usize = 36;
pub const RECORD_LEN: usize = 48;
/// Bound on one shard (about 170,000 keys in one shard; a table of 100,000 keys has ~400 each).
pub const MAX_SHARD_BYTES: usize = 16 * 1024 * 1024;

const FLAG_ADMIN: u8 = 1;
const FLAG_EXPIRES: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_ADMIN | FLAG_EXPIRES;
const SET_ALL: u8 = 0;
const SET_LIST: u8 = 1;
const MAX_SETS: usize = 1 << 24;

/// One key as the control plane hands it to the encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec<'a> {
    pub digest: KeyDigest,
    /// Public id (at most 255 bytes).
    pub id: &'a str,
    pub role: Role,
    pub expires_at: Option<u64>,
    /// `None`: every model.
    pub models: Option<&'a [String]>,
}

/// Encodes shard `index` from its entries (any order; every digest must start with `index`,
/// no two equal).
pub fn encode_shard(index: u8, epoch: u64, version: u64, entries: &[EntrySpec<'_>]) -> Result<Vec<u8>, KeyTableError> {
    let mut sorted: Vec<&EntrySpec<'_>> = entries.iter().collect();
    sorted.sort_unstable_by_key(|e| e.digest);
    let mut sets: Vec<Option<&[String]>> = Vec::new();
    let mut set_bytes = Vec::new();
    let mut ids = Vec::new();
    let mut records = Vec::with_capacity(sorted.len() * RECORD_LEN);
    for (i, e) in sorted.iter().enumerate() {
        if e.digest[0] != index {
            return Err(KeyTableError::Record { record: i, reason: "digest belongs to another shard" });
        }
        if i > 0 && sorted.get(i - 1).is_some_and(|p| p.digest == e.digest) {
            return Err(KeyTableError::Record { record: i, reason: "duplicate digest" });
        }
        let set = match sets.iter().position(|s| *s == e.models) {
            Some(p) => p,
            None => {
                encode_set(&mut set_bytes, e.models, sets.len())?;
                sets.push(e.models);
                sets.len() - 1
            }
        };
        if set >= MAX_SETS {
            return Err(KeyTableError::TooLarge { what: "allowance sets", actual: set + 1, limit: MAX_SETS });
        }
        let id_len = u8::try_from(e.id.len()).map_err(|_| KeyTableError::Record { record: i, reason: "id longer than 255 bytes" })?;
        let id_offset = u32::try_from(ids.len()).map_err(|_| too_large("ids", ids.len()))?;
        ids.push(id_len);
        ids.extend_from_slice(e.id.as_bytes());
        let mut flags = 0;
        if e.role == Role::Admin {
            flags |= FLAG_ADMIN;
        }
        if e.expires_at.is_some() {
            flags |= FLAG_EXPIRES;
        }
        records.extend_from_slice(&e.digest);
        records.extend_from_slice(&e.expires_at.unwrap_or(0).to_le_bytes());
        records.push(flags);
        records.extend_from_slice(&(set as u32).to_le_bytes()[..3]);
        records.extend_from_slice(&id_offset.to_le_bytes());
    }
    let count = u32::try_from(sorted.len()).map_err(|_| too_large("records", sorted.len()))?;
    let set_count = u32::try_from(sets.len()).map_err(|_| too_large("sets", sets.len()))?;
    let sets_len = u32::try_from(set_bytes.len() + 4).map_err(|_| too_large("sets", set_bytes.len()))?;
    let ids_len = u32::try_from(ids.len()).map_err(|_| too_large("ids", ids.len()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + records.len() + set_bytes.len() + 4 + ids.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(index);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&sets_len.to_le_bytes());
    out.extend_from_slice(&ids_len.to_le_bytes());
    out.extend_from_slice(&records);
    out.extend_from_slice(&set_count.to_le_bytes());
    out.extend_from_slice(&set_bytes);
    out.extend_from_slice(&ids);
    if out.len() > MAX_SHARD_BYTES {
        return Err(too_large("shard", out.len()));
    }
    Ok(out)
}

fn too_large(what: &'static str, actual: usize) -> KeyTableError {
    KeyTableError::TooLarge { what, actual, limit: MAX_SHARD_BYTES }
}

fn encode_set(out: &mut Vec<u8>, models: Option<&[String]>, set: usize) -> Result<(), KeyTableError> {
    let Some(list) = models else {
        out.push(SET_ALL);
        out.extend_from_slice(&0u16.to_le_bytes());
        return Ok(());
    };
    let n = u16::try_from(list.len()).map_err(|_| KeyTableError::Set { set, reason: "more than 65535 models" })?;
    out.push(SET_LIST);
    out.extend_from_slice(&n.to_le_bytes());
    for m in list {
        let len = u16::try_from(m.len()).map_err(|_| KeyTableError::Set { set, reason: "model name too long" })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(m.as_bytes());
    }
    Ok(())
}

/// A bounds-checked reader: every read says what it was reading when the input ends.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], KeyTableError> {
        let end = self.pos.checked_add(n).ok_or(KeyTableError::Truncated { what })?;
        let out = self.buf.get(self.pos..end).ok_or(KeyTableError::Truncated { what })?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], KeyTableError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, KeyTableError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, KeyTableError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, KeyTableError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, KeyTableError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

/// A decoded (validated) shard. The records stay in the bytes they came in.
#[derive(Debug, Clone)]
pub struct Shard {
    index: u8,
    epoch: u64,
    version: u64,
    bytes: Vec<u8>,
    count: usize,
    sets: Vec<AllowedModels>,
    ids_start: usize,
}

/// A record found by [`Shard::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'s> {
    pub id: &'s str,
    pub role: Role,
    pub expires_at: Option<u64>,
    pub models: &'s AllowedModels,
}

impl Record<'_> {
    pub fn to_entry(&self) -> KeyEntry {
        KeyEntry { id: self.id.to_owned(), role: self.role, models: self.models.clone(), expires_at: self.expires_at }
    }
}

impl Shard {
    /// The empty shard `index` at `(0, 0)`: what a worker holds before any table.
    pub fn empty(index: u8) -> Self {
        Self { index, epoch: 0, version: 0, bytes: Vec::new(), count: 0, sets: Vec::new(), ids_start: 0 }
    }

    pub fn index(&self) -> u8 {
        self.index
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Reads only the header: `(index, epoch, version)`.
    pub fn peek(bytes: &[u8]) -> Result<(u8, u64, u64), KeyTableError> {
        let mut r = Reader::new(bytes);
        if r.take(4, "shard header")? != MAGIC {
            return Err(KeyTableError::Magic { what: "key shard" });
        }
        let format = r.u8("shard header")?;
        if format != FORMAT {
            return Err(KeyTableError::Format { what: "key shard", actual: format });
        }
        let index = r.u8("shard header")?;
        if r.take(2, "shard header")? != [0, 0] {
            return Err(KeyTableError::Reserved { what: "key shard" });
        }
        Ok((index, r.u64("shard header")?, r.u64("shard header")?))
    }

    /// Decodes and checks a shard that must be shard `expected`: every length, the order of
    /// the records, every set index and id offset. Never panics.
    pub fn decode(bytes: &[u8], expected: u8) -> Result<Self, KeyTableError> {
        if bytes.len() > MAX_SHARD_BYTES {
            return Err(too_large("shard", bytes.len()));
        }
        let (index, epoch, version) = Self::peek(bytes)?;
        if index != expected {
            return Err(KeyTableError::ShardIndex { expected, actual: index });
        }
        let mut r = Reader::new(bytes);
        r.take(24, "shard header")?;
        let count = r.u32("shard header")? as usize;
        let sets_len = r.u32("shard header")? as usize;
        let ids_len = r.u32("shard header")? as usize;
        let records_len = count.checked_mul(RECORD_LEN).ok_or(KeyTableError::Truncated { what: "records" })?;
        let records = r.take(records_len, "records")?;
        let sets = decode_sets(r.take(sets_len, "allowance sets")?)?;
        let ids_start = r.position();
        let ids = r.take(ids_len, "key ids")?;
        if r.remaining() != 0 {
            return Err(KeyTableError::Trailing { what: "key shard", actual: r.remaining() });
        }
        let mut previous: Option<&[u8]> = None;
        for (i, rec) in records.chunks_exact(RECORD_LEN).enumerate() {
            let bad = |reason| KeyTableError::Record { record: i, reason };
            let (digest, rest) = rec.split_at(32);
            if digest.first() != Some(&index) {
                return Err(bad("digest belongs to another shard"));
            }
            if previous.is_some_and(|p| p >= digest) {
                return Err(bad("records are not in strictly increasing digest order"));
            }
            previous = Some(digest);
            let flags = rest.get(8).copied().unwrap_or(u8::MAX);
            if flags & !KNOWN_FLAGS != 0 {
                return Err(bad("unknown flags"));
            }
            let (set, id_offset) = record_refs(rest);
            if set >= sets.len() {
                return Err(bad("allowance set out of range"));
            }
            let len = ids.get(id_offset).copied().ok_or_else(|| bad("id offset out of range"))?;
            let id = ids.get(id_offset + 1..id_offset + 1 + usize::from(len)).ok_or_else(|| bad("id runs past the ids"))?;
            if std::str::from_utf8(id).is_err() {
                return Err(bad("id is not UTF-8"));
            }
        }
        Ok(Self { index, epoch, version, bytes: bytes.to_vec(), count, sets, ids_start })
    }

    /// The record whose digest is `d`: a binary search on the first 8 bytes, then a
    /// constant-time comparison of the full digest with each record sharing that prefix.
    pub fn lookup(&self, d: &KeyDigest) -> Option<Record<'_>> {
        let records = self.bytes.get(HEADER_LEN..HEADER_LEN + self.count * RECORD_LEN)?;
        let prefix = d.get(..8)?;
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = records.get(mid * RECORD_LEN..mid * RECORD_LEN + 8)?;
            if at < prefix {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut found = None;
        for rec in records.get(lo * RECORD_LEN..)?.chunks_exact(RECORD_LEN) {
            if rec.get(..8)? != prefix {
                break;
            }
            if bool::from(rec.get(..32)?.ct_eq(d.as_slice())) {
                found = Some(rec);
            }
        }
        let rec = found?;
        let rest = rec.get(32..)?;
        let expires = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let flags = *rest.get(8)?;
        let (set, id_offset) = record_refs(rest);
        let ids = self.bytes.get(self.ids_start..)?;
        let len = usize::from(*ids.get(id_offset)?);
        let id = std::str::from_utf8(ids.get(id_offset + 1..id_offset + 1 + len)?).ok()?;
        Some(Record {
            id,
            role: if flags & FLAG_ADMIN != 0 { Role::Admin } else { Role::User },
            expires_at: (flags & FLAG_EXPIRES != 0).then_some(expires),
            models: self.sets.get(set)?,
        })
    }
}

/// `(set index, id offset)` of a record's bytes after the digest.
fn record_refs(rest: &[u8]) -> (usize, usize) {
    let mut set = [0u8; 4];
    let mut id = [0u8; 4];
    if let (Some(s), Some(i)) = (rest.get(9..12), rest.get(12..16)) {
        set[..3].copy_from_slice(s);
        id.copy_from_slice(i);
        (u32::from_le_bytes(set) as usize, u32::from_le_bytes(id) as usize)
    } else {
        (usize::MAX, usize::MAX)
    }
}

fn decode_sets(bytes: &[u8]) -> Result<Vec<AllowedModels>, KeyTableError> {
    let mut r = Reader::new(bytes);
    let count = r.u32("allowance sets")? as usize;
    if count > MAX_SETS {
        return Err(KeyTableError::TooLarge { what: "allowance sets", actual: count, limit: MAX_SETS });
    }
    // Every set takes at least 3 bytes: a count beyond that is a lie, not an allocation.
    let mut sets = Vec::with_capacity(count.min(bytes.len() / 3));
    for set in 0..count {
        let bad = |reason| KeyTableError::Set { set, reason };
        let kind = r.u8("allowance set")?;
        let n = r.u16("allowance set")?;
        match kind {
            SET_ALL if n == 0 => sets.push(AllowedModels::All),
            SET_ALL => return Err(bad("every-model set with names")),
            SET_LIST => {
                let mut list = Vec::with_capacity(usize::from(n).min(r.remaining() / 2));
                for _ in 0..n {
                    let len = r.u16("model name")?;
                    let name = r.take(usize::from(len), "model name")?;
                    list.push(std::str::from_utf8(name).map_err(|_| bad("model name is not UTF-8"))?.to_owned());
                }
                // As the configuration always read it: a list with `*` is every model.
                sets.push(AllowedModels::from_list(Some(list)));
            }
            _ => return Err(bad("unknown kind")),
        }
    }
    if r.remaining() != 0 {
        return Err(KeyTableError::Trailing { what: "allowance sets", actual: r.remaining() });
    }
    Ok(sets)
}
