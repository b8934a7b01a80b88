//! The worker's copy of the key table. The service VM publishes each shard under its own
//! shared-data key, then the manifest, then the version key. On every request the worker reads
//! the version key (one host call; its value is empty, only its CAS is read) and compares its CAS with the one it last synced
//! at; only when it moved does it read the manifest and copy the shards whose
//! `(epoch, version)` differ from its own (one shard for one changed key).
//!
//! A shard that cannot be read or decoded is kept as it was and the CAS is not recorded, so the
//! next request tries again; the error is logged once per version. A worker that has never
//! brought its table up to date answers as if there were none (503, fail closed).

use std::cell::RefCell;
use std::rc::Rc;

use tollgate_contract::keytable::{self, Manifest, Shard, Table};
use tollgate_wasm::Host;

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
}

impl Keys {
    /// Brings the table up to date; `None` while the service VM has published no table.
    pub fn sync<H: Host>(&mut self, host: &H) -> Option<&Table> {
        let cas = match host.shared_data(keytable::SHARED_VERSION_KEY) {
            // Written empty (no buffer comes back), or with a value by an earlier service VM;
            // Envoy's CAS tokens are never 0, which is what an absent key reads as.
            Ok((Some(_), cas)) => cas,
            Ok((None, cas)) if cas != 0 => cas,
            Ok((None, _)) => return self.loaded.then_some(&self.table),
            Err(e) => {
                log::warn!("gateway filter: cannot read the key table version ({e}); keeping the table as it is");
                return self.loaded.then_some(&self.table);
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
        self.loaded.then_some(&self.table)
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
