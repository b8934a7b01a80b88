//! The worker's copy of the key table. The service VM publishes each shard under its own
//! shared-data key, then the manifest, then the version key. On every request the worker reads
//! the version key (one host call; its value is empty, only its CAS is read) and compares its CAS with the one it last synced
//! at; only when it moved does it read the manifest and copy the shards whose
//! `(epoch, version)` differ from its own (one shard for one changed key).
//!
//! A shard that cannot be read or decoded is kept as it was and the CAS is not recorded, so the
//! next request tries again; the error is logged once per version. A worker that has never
//! brought its table up to date answers as if there were none (503, fail closed).
//!
//! The SHA-256 digest a presented key is looked up by costs about 5,000 wasm instructions; the
//! worker keeps the digests of the keys it authenticated ([`Digests`]) by a keyed hash of the
//! key, so a client's key is hashed once per worker. The table is still looked up on every
//! request: a revoked or expired key is refused at once.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::rc::Rc;

use tollgate_contract::keys::{digest, KeyDigest, KeyEntry};
use tollgate_contract::keytable::{self, Manifest, Shard, Table};
use tollgate_contract::GatewayError;
use tollgate_gateway::request;
use tollgate_wasm::{Host, IdHasher};

/// The most digests a worker keeps; past it they are forgotten and kept again as used.
const DIGESTS_MAX: usize = 4096;

/// The digests of keys this worker authenticated, by a 128-bit tag of the key: SipHash under
/// the VM's random seed, twice with distinct suffixes (about 600 wasm instructions against the
/// digest's 5,000). It holds no key, only tags and the digests the key table holds anyway. Only
/// a key that authenticated is kept, so keys a client sprays at the gateway cannot push the
/// others out. Two keys with one tag (a chance of 2^-128 for keys the client cannot see the seed
/// of) would share a digest: the tag is that wide for that reason.
#[derive(Default)]
pub struct Digests {
    seed: RandomState,
    by_tag: HashMap<u128, KeyDigest, BuildHasherDefault<IdHasher>>,
}

impl Digests {
    fn tag(&self, secret: &str) -> u128 {
        (u128::from(self.seed.hash_one((secret, 0u8))) << 64) | u128::from(self.seed.hash_one((secret, 1u8)))
    }

    /// The digest of `secret`; `fresh` gets its tag and digest when it was not kept (to keep
    /// with [`Digests::keep`] once it authenticates).
    pub fn digest(&self, secret: &str, fresh: &mut Option<(u128, KeyDigest)>) -> KeyDigest {
        let tag = self.tag(secret);
        if let Some(d) = self.by_tag.get(&tag) {
            return *d;
        }
        let d = digest(secret);
        *fresh = Some((tag, d));
        d
    }

    pub fn keep(&mut self, tag: u128, d: KeyDigest) {
        if self.by_tag.len() >= DIGESTS_MAX {
            self.by_tag.clear();
        }
        self.by_tag.insert(tag, d);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_tag.len()
    }
}

thread_local! {
    /// The VM's one table. Envoy makes a new root context for each configuration change and keeps
    /// the VM: each root takes this table rather than copying every shard again.
    static VM_TABLE: Rc<RefCell<Keys>> = Rc::default();
}

/// The table of this VM.
pub fn vm_table() -> Rc<RefCell<Keys>> {
    VM_TABLE.with(Rc::clone)
}

#[derive(Default)]
pub struct Keys {
    table: Table,
    /// CAS of the version key when the table was last brought up to date.
    synced: Option<u32>,
    /// The table was brought up to date at least once: until then a presented key gets a 503
    /// (a table that could not be read whole is not served from).
    loaded: bool,
    /// The CAS at which a failure was last logged.
    logged: Option<u32>,
    digests: Digests,
}

impl Keys {
    /// Brings the table up to date and authenticates the presented key against it (see
    /// `request::authenticate_at`; no table yet: a 503), its digest kept once it authenticates.
    pub fn authenticate<H: Host>(
        &mut self,
        host: &H,
        authorization: Option<&str>,
        x_api_key: Option<&str>,
        now: impl FnOnce() -> u64,
    ) -> Result<KeyEntry, GatewayError> {
        self.sync(host);
        let table = self.loaded.then_some(&self.table);
        let mut fresh = None;
        let digests = &self.digests;
        let entry = request::authenticate_with(table, authorization, x_api_key, now, |secret| digests.digest(secret, &mut fresh))?;
        if let Some((tag, d)) = fresh {
            self.digests.keep(tag, d);
        }
        Ok(entry)
    }

    /// Brings the table up to date (`loaded` once it was, whole).
    fn sync<H: Host>(&mut self, host: &H) {
        let cas = match host.shared_data(keytable::SHARED_VERSION_KEY) {
            // Written empty (no buffer comes back), or with a value by an earlier service VM;
            // Envoy's CAS tokens are never 0, which is what an absent key reads as.
            Ok((Some(_), cas)) => cas,
            Ok((None, cas)) if cas != 0 => cas,
            Ok((None, _)) => return,
            Err(e) => {
                log::warn!("gateway filter: cannot read the key table version ({e}); keeping the table as it is");
                return;
            }
        };
        if self.synced != Some(cas) {
            match self.copy_changed(host) {
                Ok(copied) => {
                    if copied > 0 {
                        log::debug!("gateway filter: {copied} key shards updated ({} keys)", self.table.len());
                    }
                    self.synced = Some(cas);
                    self.loaded = true;
                }
                Err(e) => {
                    if self.logged != Some(cas) {
                        log::warn!("gateway filter: key table update incomplete ({e}); retrying on the next request");
                        self.logged = Some(cas);
                    }
                    // What was copied is in; the rest comes with a later request.
                }
            }
        }
    }

    /// Copies every shard whose version differs from the manifest's; returns how many.
    fn copy_changed<H: Host>(&mut self, host: &H) -> Result<usize, String> {
        let bytes = match host.shared_data(keytable::SHARED_MANIFEST_KEY) {
            Ok((Some(b), _)) => b,
            Ok((None, _)) => return Err("no manifest".into()),
            Err(e) => return Err(format!("manifest: {e}")),
        };
        let manifest = Manifest::decode(&bytes).map_err(|e| format!("manifest: {e}"))?;
        let mut copied = 0;
        let mut failed = None;
        for i in 0..=u8::MAX {
            let wanted = manifest.get(i);
            if wanted == (0, 0) || wanted == self.table.shard_version(i) {
                continue;
            }
            let read = match host.shared_data(&keytable::shared_shard_key(i)) {
                Ok((Some(b), _)) => Shard::decode(&b, i).map_err(|e| format!("shard {i}: {e}")),
                Ok((None, _)) => Err(format!("shard {i} is missing")),
                Err(e) => Err(format!("shard {i}: {e}")),
            };
            match read {
                Ok(shard) => {
                    self.table.replace(shard);
                    copied += 1;
                }
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(copied),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_kept_by_its_tag_once_kept_and_the_keep_is_bounded() {
        let mut d = Digests::default();
        let mut fresh = None;
        assert_eq!(d.digest("tg-a", &mut fresh), digest("tg-a"));
        let (tag, dg) = fresh.take().unwrap();
        assert_eq!(d.digest("tg-a", &mut fresh), digest("tg-a"));
        assert_eq!(fresh.take().map(|(t, _)| t), Some(tag), "not kept until told; the same tag again");
        d.keep(tag, dg);
        assert_eq!(d.digest("tg-a", &mut fresh), digest("tg-a"));
        assert!(fresh.is_none(), "kept: not hashed again");
        assert_eq!(d.digest("tg-b", &mut fresh), digest("tg-b"));
        assert!(fresh.is_some_and(|(t, _)| t != tag), "another key, another tag");
        for i in 0..DIGESTS_MAX as u128 + 10 {
            d.keep(i, [0; 32]);
        }
        assert!(d.len() <= DIGESTS_MAX);
    }
}
