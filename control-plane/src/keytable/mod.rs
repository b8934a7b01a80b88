//! The data plane's key table, kept incrementally. The state holds every key that is not
//! revoked and, per shard (first digest byte), the entries the data plane gets; a change
//! re-reads only the key rows stamped since the last read (migration 9's counter), rebuilds only
//! the shards those keys are in, and gives them the next generation as their version. A change
//! to what allowances are made of (models, access groups, users, teams) recomputes every entry
//! in memory (no key row is read again) and versions the shards whose entries changed.
//!
//! Pure: no I/O, no clock (time is passed in). The publisher feeds it; the internal listener
//! serves what it publishes ([`Published`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use tollgate_contract::keys::{parse_digest_hex, KeyDigest, Role};
use tollgate_contract::keytable::{encode_shard, EntrySpec, Manifest, Update, SHARDS};

use crate::model::access::{published_keys, Catalog};
use crate::model::{KeyRecord, TeamRecord, UserRecord};

/// Bound on one answer to the data plane; the shards beyond it come with the next poll (an
/// answer has at least one shard).
pub const MAX_UPDATE_BYTES: usize = 1024 * 1024;

/// What allowances are computed from: when it changes, every entry is recomputed.
#[derive(Debug, Clone, Default)]
pub struct Allowances {
    pub catalog: Catalog,
    pub users: BTreeMap<String, UserRecord>,
    pub teams: BTreeMap<String, TeamRecord>,
}

impl Allowances {
    /// Only what a key's allowance depends on (a renamed team changes nothing here).
    fn fingerprint(&self) -> AllowanceFingerprint {
        AllowanceFingerprint {
            models: self.catalog.models.clone(),
            groups: self.catalog.groups.clone(),
            users: self.users.values().map(|u| (u.id.clone(), u.models.clone(), u.access_groups.clone())).collect(),
            teams: self.teams.values().map(|t| (t.id.clone(), t.models.clone(), t.access_groups.clone())).collect(),
        }
    }
}

type Level = (String, Option<Vec<String>>, Vec<String>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowanceFingerprint {
    models: Vec<String>,
    groups: BTreeMap<String, Vec<String>>,
    users: Vec<Level>,
    teams: Vec<Level>,
}

/// One entry of the table as the data plane gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: String,
    role: Role,
    expires_at: Option<u64>,
    models: Option<Vec<String>>,
}

/// The table as published: one epoch (this process's table), the generation of the last change,
/// and every shard's version and bytes.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub epoch: u64,
    pub generation: u64,
    pub shards: Vec<(u64, Bytes)>,
    /// Keys in the table (a rotated key within its grace counts twice).
    pub entries: usize,
}

impl Published {
    /// The update for a data plane that has `have`: the shards whose `(epoch, version)` differ,
    /// in index order, up to [`MAX_UPDATE_BYTES`] (at least one). `None`: nothing differs.
    pub fn update_for(&self, have: &Manifest) -> Option<Vec<u8>> {
        if self.generation == 0 {
            return None;
        }
        let mut out: Vec<&[u8]> = Vec::new();
        let mut size = 0;
        for (i, (version, bytes)) in (0..=u8::MAX).zip(&self.shards) {
            if have.get(i) == (self.epoch, *version) {
                continue;
            }
            if !out.is_empty() && size + bytes.len() > MAX_UPDATE_BYTES {
                break;
            }
            size += bytes.len();
            out.push(bytes);
        }
        (!out.is_empty()).then(|| Update::encode(&out))
    }
}

/// The key table's state.
#[derive(Debug)]
pub struct KeyTableState {
    epoch: u64,
    generation: u64,
    /// The highest change stamp read; `None` before the first load.
    stamp: Option<i64>,
    fingerprint: Option<AllowanceFingerprint>,
    /// Keys that are not revoked, by id.
    keys: HashMap<String, KeyRecord>,
    shards: Vec<BTreeMap<KeyDigest, Entry>>,
    published: Arc<Published>,
}

impl KeyTableState {
    /// An empty table for epoch `epoch` (non-zero: 0 means "nothing" in a manifest).
    pub fn new(epoch: u64) -> Self {
        Self {
            epoch: epoch.max(1),
            generation: 0,
            stamp: None,
            fingerprint: None,
            keys: HashMap::new(),
            shards: vec![BTreeMap::new(); SHARDS],
            published: Arc::new(Published::default()),
        }
    }

    /// The stamp to read changes after (`None`: load everything).
    pub fn stamp(&self) -> Option<i64> {
        self.stamp
    }

    /// The ids of the active keys of a user or of a team, sorted.
    pub fn ids_of(&self, user_id: Option<&str>, team_id: Option<&str>) -> Vec<String> {
        let mut ids: Vec<String> = self
            .keys
            .values()
            .filter(|k| user_id.is_none_or(|u| k.user_id.as_deref() == Some(u)) && team_id.is_none_or(|t| k.team_id.as_deref() == Some(t)))
            .map(|k| k.id.clone())
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn published(&self) -> Arc<Published> {
        self.published.clone()
    }

    /// Applies the key rows read since the last stamp (`upto`: the highest stamp now read) and
    /// the current allowance inputs, at `now` (unix seconds). Returns the new publication when
    /// any shard changed.
    pub fn apply(&mut self, changed: Vec<KeyRecord>, upto: i64, allowances: &Allowances, now: i64) -> Option<Arc<Published>> {
        self.stamp = Some(upto);
        let fingerprint = allowances.fingerprint();
        let full = self.generation == 0 || self.fingerprint.as_ref() != Some(&fingerprint);
        let mut dirty = BTreeSet::new();
        for k in changed {
            if let Some(old) = self.keys.remove(&k.id) {
                if !full {
                    self.remove_entries(&old, &mut dirty);
                }
            }
            if k.revoked_at.is_none() {
                // Kept in memory for later changes: only what its entries depend on.
                let k = KeyRecord { name: String::new(), tags: Vec::new(), metadata: None, rotation_idempotency: None, rotation_answer: None, ..k };
                if !full {
                    self.add_entries(&k, allowances, now, &mut dirty);
                }
                self.keys.insert(k.id.clone(), k);
            }
        }
        if full {
            let mut shards = vec![BTreeMap::new(); SHARDS];
            for k in self.keys.values() {
                for (digest, entry) in entries_of(k, allowances, now) {
                    if let Some(shard) = shards.get_mut(usize::from(digest[0])) {
                        shard.insert(digest, entry);
                    }
                }
            }
            for (i, (new, old)) in shards.iter().zip(&self.shards).enumerate() {
                if self.generation == 0 || new != old {
                    dirty.insert(i);
                }
            }
            self.shards = shards;
            self.fingerprint = Some(fingerprint);
        }
        if dirty.is_empty() {
            return None;
        }
        self.generation += 1;
        let mut shards = self.published.shards.clone();
        shards.resize(SHARDS, (0, Bytes::new()));
        for &i in &dirty {
            let (Some(entries), Some(slot), Ok(index)) = (self.shards.get(i), shards.get_mut(i), u8::try_from(i)) else { continue };
            let specs: Vec<EntrySpec<'_>> = entries
                .iter()
                .map(|(digest, e)| EntrySpec { digest: *digest, id: &e.id, role: e.role, expires_at: e.expires_at, models: e.models.as_deref() })
                .collect();
            match encode_shard(index, self.epoch, self.generation, &specs) {
                Ok(bytes) => *slot = (self.generation, Bytes::from(bytes)),
                // Entries are checked as they enter (ids are short, digests parse), so this is
                // a bound being hit: the shard keeps its last good encoding.
                Err(e) => tracing::error!(shard = i, error = %e, "key shard cannot be encoded; its last version stays"),
            }
        }
        let entries = self.shards.iter().map(BTreeMap::len).sum();
        self.published = Arc::new(Published { epoch: self.epoch, generation: self.generation, shards, entries });
        Some(self.published.clone())
    }

    fn remove_entries(&mut self, old: &KeyRecord, dirty: &mut BTreeSet<usize>) {
        for digest in [Some(&old.digest), old.previous_digest.as_ref()].into_iter().flatten() {
            let Some(d) = parse_digest_hex(digest) else { continue };
            let i = usize::from(d[0]);
            if let Some(shard) = self.shards.get_mut(i) {
                if shard.get(&d).is_some_and(|e| e.id == old.id) {
                    shard.remove(&d);
                    dirty.insert(i);
                }
            }
        }
    }

    fn add_entries(&mut self, k: &KeyRecord, allowances: &Allowances, now: i64, dirty: &mut BTreeSet<usize>) {
        for (digest, entry) in entries_of(k, allowances, now) {
            let i = usize::from(digest[0]);
            if let Some(shard) = self.shards.get_mut(i) {
                shard.insert(digest, entry);
                dirty.insert(i);
            }
        }
    }
}

/// The entries of one key, as `published_keys` (the one evaluator) decides them: none for a
/// blocked or revoked key, a second one for the previous secret within its grace period.
fn entries_of(k: &KeyRecord, allowances: &Allowances, now: i64) -> Vec<(KeyDigest, Entry)> {
    let Allowances { catalog, users, teams } = allowances;
    published_keys(std::slice::from_ref(k), users, teams, catalog, now)
        .into_iter()
        .filter_map(|p| {
            let Some(digest) = parse_digest_hex(&p.digest) else {
                tracing::warn!(key = %p.id, "key digest is not 64 hex characters; the key is not published");
                return None;
            };
            if p.id.len() > usize::from(u8::MAX) {
                tracing::warn!(key = %p.id, "key id longer than 255 bytes; the key is not published");
                return None;
            }
            let expires_at = p.expires_at.map(|t| t.max(0) as u64);
            Some((digest, Entry { id: p.id, role: p.role, expires_at, models: p.models }))
        })
        .collect()
}

#[cfg(test)]
mod tests;
