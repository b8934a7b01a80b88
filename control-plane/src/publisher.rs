//! The one writer of what the data plane is given: reads the stored rows, resolves them into the
//! servable model (`crate::model::resolve`, which cannot fail), builds the xDS snapshot
//! (`snapshot::build`, which cannot fail) and the credential document, and publishes each when
//! it changed. Both are kept in memory and served from there, versioned by one scheme
//! ([`snapshot::content_version`]). The virtual keys are not in the snapshot: the key table
//! (`crate::keytable`) is kept beside it, from the key rows changed since the last refresh. Called after every admin change, on a timer (so replicas
//! sharing a PostgreSQL store converge), and whenever the secrets announce a change.
//!
//! What cannot be served is logged once when it appears (and once when it goes away), never
//! blocking the rest: a broken deployment row does not stop a key revocation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tollgate_contract::config::{Credential, CredentialsDoc};

use crate::keytable::{Allowances, KeyTableState, Published};
use crate::model::access::Catalog;
use crate::model::{self, CredentialRef, Problem, Resolved, Secrets, StoredConfig};
use crate::store::Store;
use crate::xds::snapshot::{self, Snapshot, XdsEnv};

/// The credential document as served: its version (the ETag) and its JSON. It holds secrets:
/// no `Debug`, never logged.
#[derive(Default)]
pub struct CredentialsDocument {
    pub version: String,
    /// Shared, not copied, by each response.
    pub body: axum::body::Bytes,
}

pub struct Publisher {
    store: Store,
    env: XdsEnv,
    /// The environment and the credentials obtained through AWS chains.
    secrets: Arc<dyn Secrets>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    credentials: watch::Sender<Arc<CredentialsDocument>>,
    /// Serialises refreshes; holds the problems of the last one (to log only what changed).
    reported: Mutex<Vec<Problem>>,
    /// Envoys connected over ADS now (the ADS server counts them): each enforces an equal
    /// share of every quota.
    envoys: Arc<std::sync::atomic::AtomicUsize>,
    keys: Mutex<KeyTableState>,
    key_table: watch::Sender<Arc<Published>>,
}

impl Publisher {
    pub fn new(store: Store, env: XdsEnv, secrets: Arc<dyn Secrets>) -> (Arc<Self>, watch::Receiver<Arc<Snapshot>>) {
        let (snapshots, rx) = watch::channel(Arc::new(Snapshot::default()));
        let credentials = watch::channel(Arc::new(CredentialsDocument::default())).0;
        // This process's table: a data plane that comes from another control plane (or from
        // this one before a restart) gets every shard again.
        let keys = KeyTableState::new(rand::random::<u64>());
        let key_table = watch::channel(keys.published()).0;
        let reported = Mutex::new(Vec::new());
        let envoys = Arc::default();
        (Arc::new(Self { store, env, secrets, snapshots, credentials, reported, keys: Mutex::new(keys), key_table, envoys }), rx)
    }

    /// The count of connected Envoys, for the ADS server to keep.
    pub fn envoys(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.envoys.clone()
    }

    /// The gateway's own ports, refused as provider destinations.
    pub fn own_ports(&self) -> &[u16] {
        &self.env.own_ports
    }

    /// What credential references resolve with.
    pub fn secrets(&self) -> &dyn Secrets {
        &*self.secrets
    }

    /// The credential document last published.
    pub fn credentials(&self) -> Arc<CredentialsDocument> {
        self.credentials.borrow().clone()
    }

    /// The key table as last published, and its changes.
    pub fn key_table(&self) -> watch::Receiver<Arc<Published>> {
        self.key_table.subscribe()
    }

    /// Rebuilds and publishes; returns whether the snapshot changed. Fails only when the store
    /// cannot be read (the last snapshot and document then stay).
    pub async fn refresh(&self) -> anyhow::Result<bool> {
        let mut reported = self.reported.lock().await;
        let rows = self.store.load().await?;
        let Resolved { mut model, problems } = model::resolve(&rows, &*self.secrets, &self.env.own_ports);
        // The Envoys sharing the quotas: those connected here, or more if more asked the quota
        // authority lately (other control-plane replicas' Envoys).
        let asked = self.store.quota_envoys_since(crate::clock::unix_now() - crate::authority::ENVOY_SEEN_SECONDS).await.unwrap_or(1);
        model.envoys = (self.envoys.load(std::sync::atomic::Ordering::Relaxed) as u64).max(asked).max(1);
        log_changes(&reported, &problems);
        *reported = problems;
        let doc = credentials_document(&model.credentials, &*self.secrets);
        if doc.version != self.credentials.borrow().version {
            tracing::info!(version = %doc.version, "credential document published");
            self.credentials.send_replace(Arc::new(doc));
        }
        // The keys first: a user's or team's quota lists its keys as they are now.
        self.refresh_keys(rows).await?;
        {
            let keys = self.keys.lock().await;
            for q in model.quotas.iter().filter(|q| q.user_id.is_some() || q.team_id.is_some()) {
                model.quota_keys.insert(q.id.clone(), keys.ids_of(q.user_id.as_deref(), q.team_id.as_deref()));
            }
        }
        let snap = snapshot::build(&model, &self.env);
        let changed = !self.snapshots.borrow().same_versions(&snap);
        if changed {
            let versions: Vec<String> = snap.by_type.values().map(|r| r.version.clone()).collect();
            tracing::info!(versions = ?versions, models = model.models.len(), "snapshot published");
            self.snapshots.send_replace(Arc::new(snap));
        }
        Ok(changed)
    }

    /// Reads the key rows changed since the last refresh and publishes the shards they change.
    async fn refresh_keys(&self, rows: StoredConfig) -> anyhow::Result<()> {
        let mut keys = self.keys.lock().await;
        let (changed, upto) = self.store.changed_keys(keys.stamp()).await?;
        let read = changed.len();
        let StoredConfig { models, groups, users, teams, now, .. } = rows;
        let allowances = Allowances { catalog: Catalog { models: models.into_iter().map(|m| m.name).collect(), groups }, users, teams };
        if let Some(p) = keys.apply(changed, upto, &allowances, now) {
            tracing::info!(generation = p.generation, keys = p.entries, rows_read = read, "key table published");
            self.key_table.send_replace(p);
        }
        Ok(())
    }

    /// Refreshes every `every`, and each time `changes` is marked changed (e.g. the AWS
    /// credentials: `crate::aws::AwsCredentials::changes`).
    pub fn spawn_refresher(self: Arc<Self>, every: Duration, mut changes: watch::Receiver<()>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut watching = true;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    changed = changes.changed(), if watching => watching = changed.is_ok(),
                }
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %format!("{e:#}"), "snapshot refresh failed; keeping the last one");
                }
            }
        })
    }
}

/// Logs the problems that appeared since the last refresh, and those that went away.
fn log_changes(before: &[Problem], now: &[Problem]) {
    for p in now.iter().filter(|p| !before.contains(p)) {
        tracing::warn!(model = %p.model, deployment = p.deployment, reason = %p.reason, "not served");
    }
    for p in before.iter().filter(|p| !now.contains(p)) {
        tracing::info!(model = %p.model, deployment = p.deployment, reason = %p.reason, "no longer a problem");
    }
}

/// The credential document for the data plane: every credential reference that resolves now.
/// Its version hashes the credentials (in name order), so it changes exactly when they do.
pub fn credentials_document(refs: &BTreeMap<String, CredentialRef>, secrets: &dyn Secrets) -> CredentialsDocument {
    let credentials: BTreeMap<&String, Credential> =
        refs.iter().filter_map(|(name, r)| Some((name, r.resolve(name, secrets)?))).collect();
    let version = snapshot::content_version(&snapshot::json_bytes(&credentials));
    let doc = CredentialsDoc {
        version: version.clone(),
        credentials: credentials.into_iter().map(|(name, c)| (name.clone(), c)).collect(),
    };
    CredentialsDocument { body: snapshot::json_bytes(&doc).into(), version }
}

#[cfg(test)]
#[path = "publisher_tests.rs"]
mod tests;
