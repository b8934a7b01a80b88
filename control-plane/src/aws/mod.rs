//! AWS credentials obtained through the `aws-config` chain (environment, shared profile with
//! `credential_process` and assume-role, web identity / IRSA, ECS container credentials, EC2
//! instance metadata), optionally with a role assumed on top, and kept fresh.
//!
//! One task per credential (`keep_fresh`) asks its provider, stores the result in
//! [`AwsCredentials`] and sleeps until [`schedule::next_refresh`]; a failure is retried with
//! back-off ([`schedule::next_retry`]) while the credentials obtained before stay in use until
//! they expire. Every change is announced on [`AwsCredentials::changes`]; this module knows
//! nothing of who listens (the publisher does: it rebuilds the snapshot, where a deployment is
//! served only while its credential resolves, and the credential document the provider filter
//! polls, whose version then changes with the keys so that the filter signs with the new ones
//! within about a second). The secrets live only in memory and in that document: logs name the
//! credential, never its keys.

pub mod provider;
pub mod schedule;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_contract::config::AwsCredential;

use crate::clock::system_now;
use crate::model::{AwsChainSpec, Secrets};
use crate::store::Store;

/// How long one attempt of a chain may take (IMDS probing and STS included).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the credential references are read from the store.
const SYNC_INTERVAL: Duration = Duration::from_secs(2);

struct Entry {
    spec: AwsChainSpec,
    credential: AwsCredential,
    expires_at: Option<SystemTime>,
}

/// The credentials obtained through AWS chains, by credential name; with the process
/// environment, the control plane's [`Secrets`].
pub struct AwsCredentials {
    entries: RwLock<BTreeMap<String, Entry>>,
    /// Marked changed whenever what [`Secrets::aws_chain`] answers may have changed.
    changed: watch::Sender<()>,
}

impl Default for AwsCredentials {
    fn default() -> Self {
        Self { entries: RwLock::default(), changed: watch::channel(()).0 }
    }
}

impl AwsCredentials {
    /// A receiver marked changed each time credentials were obtained, changed, forgotten or
    /// could not be resolved (changes that come close together are seen once).
    pub fn changes(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    fn announce(&self) {
        self.changed.send_replace(());
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The credentials for `name` obtained with `spec`, if they are still valid at `now`.
    pub fn get(&self, name: &str, spec: &AwsChainSpec, now: SystemTime) -> Option<AwsCredential> {
        let entries = self.read();
        let e = entries.get(name).filter(|e| &e.spec == spec && schedule::still_valid(e.expires_at, now))?;
        Some(e.credential.clone())
    }

    /// Stores what a chain answered; returns whether it differs from what was there.
    fn put(&self, name: &str, entry: Entry) -> bool {
        let mut entries = self.write();
        let same = entries.get(name).is_some_and(|old| {
            old.spec == entry.spec && old.credential == entry.credential && old.expires_at == entry.expires_at
        });
        entries.insert(name.to_owned(), entry);
        !same
    }

    /// The expiry of the credentials in use for `name` (`Some(None)`: they do not expire), or
    /// `None` when there are none valid at `now` (expired ones are dropped).
    fn in_use_until(&self, name: &str, now: SystemTime) -> Option<Option<SystemTime>> {
        let mut entries = self.write();
        match entries.get(name) {
            Some(e) if schedule::still_valid(e.expires_at, now) => Some(e.expires_at),
            Some(_) => {
                entries.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove(&self, name: &str) -> bool {
        self.write().remove(name).is_some()
    }
}

impl Secrets for AwsCredentials {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn aws_chain(&self, name: &str, spec: &AwsChainSpec) -> Option<AwsCredential> {
        self.get(name, spec, system_now())
    }
}

/// Keeps one refresh task per AWS chain credential of the store, following changes of the
/// store (a removed or changed credential's task is stopped and its keys forgotten).
pub fn spawn_refresher(store: Store, cache: Arc<AwsCredentials>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks: BTreeMap<String, (AwsChainSpec, JoinHandle<()>)> = BTreeMap::new();
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        loop {
            tick.tick().await;
            let wanted: BTreeMap<String, AwsChainSpec> = match store.credentials().await {
                Ok(refs) => refs.into_iter().filter_map(|(name, r)| Some((name, r.aws?))).collect(),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "reading credential references failed");
                    continue;
                }
            };
            let mut forgot = false;
            tasks.retain(|name, (spec, task)| {
                let keep = wanted.get(name) == Some(spec);
                if !keep {
                    task.abort();
                    forgot |= cache.remove(name);
                }
                keep
            });
            for (name, spec) in wanted {
                if let std::collections::btree_map::Entry::Vacant(slot) = tasks.entry(name) {
                    let task = tokio::spawn(keep_fresh(slot.key().clone(), spec.clone(), cache.clone()));
                    slot.insert((spec, task));
                }
            }
            if forgot {
                cache.announce();
            }
        }
    })
}

/// The error and its sources on one line (aws-config's errors keep the detail in sources).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One attempt: the chain's answer, or why there is none (the error and its sources).
async fn attempt(provider: &SharedCredentialsProvider) -> Result<aws_credential_types::Credentials, String> {
    match tokio::time::timeout(ATTEMPT_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(creds)) => Ok(creds),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())),
    }
}

async fn keep_fresh(name: String, spec: AwsChainSpec, cache: Arc<AwsCredentials>) {
    // aws-config reads the profile files and the chain's settings once per provider: after a
    // failure, and for keys that do not expire (static keys in a file that may be edited), the
    // next attempt starts from a new provider. Expiring keys (STS, ECS, web identity, whose
    // token file is read on each call) are renewed through the same one.
    let mut current: Option<SharedCredentialsProvider> = None;
    let mut failures: u32 = 0;
    loop {
        if current.is_none() {
            current = provider::build(&spec).await.ok();
        }
        let result = match &current {
            Some(provider) => attempt(provider).await,
            None => Err("aws-config produced no credentials provider".to_owned()),
        };
        let now = system_now();
        let next = match result {
            Ok(creds) => {
                failures = 0;
                let expires_at = creds.expiry();
                if expires_at.is_none() {
                    current = None;
                }
                let credential = AwsCredential {
                    access_key_id: creds.access_key_id().to_owned(),
                    secret_access_key: creds.secret_access_key().to_owned(),
                    session_token: creds.session_token().map(str::to_owned),
                };
                let next = schedule::next_refresh(now, expires_at, now);
                if cache.put(&name, Entry { spec: spec.clone(), credential, expires_at }) {
                    tracing::info!(
                        credential = %name,
                        expires_at = expires_at.map(unix),
                        refresh_at = unix(next),
                        "AWS credentials obtained"
                    );
                    cache.announce();
                }
                next
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                current = None;
                let in_use = cache.in_use_until(&name, now);
                let next = schedule::next_retry(failures, in_use.flatten(), now);
                let retry_in_s = next.duration_since(now).map(|d| d.as_secs()).unwrap_or(0);
                if in_use.is_some() {
                    tracing::warn!(
                        credential = %name, %error, failures, retry_in_s,
                        "AWS credentials could not be renewed; the current ones stay in use until they expire"
                    );
                } else {
                    tracing::warn!(
                        credential = %name, %error, failures, retry_in_s,
                        "AWS credentials could not be resolved; deployments using them are not served"
                    );
                    cache.announce();
                }
                next
            }
        };
        tokio::time::sleep(next.duration_since(system_now()).unwrap_or(Duration::ZERO)).await;
    }
}
