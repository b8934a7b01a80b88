//! The one writer of snapshots: reloads the model from the store, builds the snapshot, and
//! publishes it when it changed. Called after every admin change and on a timer (so replicas
//! sharing a PostgreSQL store converge).

use std::sync::Arc;

use tokio::sync::{watch, Mutex};

use crate::aws::AwsCredentials;
use crate::store::Store;
use crate::xds::snapshot::{self, Snapshot, XdsEnv};

pub struct Publisher {
    store: Store,
    env: XdsEnv,
    /// The environment and the credentials obtained through AWS chains.
    secrets: Arc<AwsCredentials>,
    tx: watch::Sender<Arc<Snapshot>>,
    lock: Mutex<()>,
}

impl Publisher {
    pub fn new(store: Store, env: XdsEnv, secrets: Arc<AwsCredentials>) -> (Arc<Self>, watch::Receiver<Arc<Snapshot>>) {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        (Arc::new(Self { store, env, secrets, tx, lock: Mutex::new(()) }), rx)
    }

    /// What credential references resolve with.
    pub fn secrets(&self) -> &AwsCredentials {
        &self.secrets
    }

    /// Rebuilds and publishes; returns whether anything changed.
    pub async fn refresh(&self) -> anyhow::Result<bool> {
        let _guard = self.lock.lock().await;
        let model = self.store.load_model(&*self.secrets).await?;
        let snap = snapshot::build(&model, &self.env)?;
        let changed = !self.tx.borrow().same_versions(&snap);
        if changed {
            let versions: Vec<String> = snap.by_type.values().map(|r| r.version.clone()).collect();
            tracing::info!(versions = ?versions, models = model.models.len(), keys = model.keys.len(), "snapshot published");
            self.tx.send_replace(Arc::new(snap));
        }
        Ok(changed)
    }
}
