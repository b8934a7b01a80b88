//! The quota authority (issue 13; protocol in `tollgate_contract::quota_lease`): grants Envoys
//! leases, slices of a quota's window, never more in all than the window's limit. What has been
//! granted is counted in the database (`quota_grants`), each grant a row-locked read and write,
//! so control-plane replicas sharing PostgreSQL agree without talking to each other. What each
//! Envoy holds is counted too (`quota_leases`): a return is taken back only up to it. The Envoys
//! that asked in the last minute (`quota_envoys`) set the fall-back shares; when their number
//! changes the configuration is published again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate_contract::quota_lease::{Grant, GrantRequest, GrantResponse};

use crate::service::Service;

/// An Envoy counts among those sharing the quotas for this long after it last asked.
pub const ENVOY_SEEN_SECONDS: i64 = 60;
/// Asks in one request, at most.
const MAX_ASKS: usize = 1000;

#[derive(Clone, Default)]
pub struct Authority {
    /// Envoys sharing the quotas as of the last grant (0: not known yet).
    envoys: Arc<AtomicU64>,
    /// Grant requests answered and asks in them, since the process started (the authority's
    /// load, `GET /internal/v1/quota/grants`).
    answered: Arc<AtomicU64>,
    asks: Arc<AtomicU64>,
    /// The quotas as last read (re-read after [`QUOTAS_FOR`], or at once for an unknown id).
    quotas: Arc<Mutex<Option<CachedQuotas>>>,
    /// When each Envoy was last recorded as asking (recorded again after [`ENVOY_TOUCH`]).
    touched: Arc<Mutex<HashMap<String, Instant>>>,
}

/// The quota list and when it was read.
type CachedQuotas = (Instant, Arc<Vec<crate::store::QuotaSpec>>);

/// How long the authority uses the quota list it read (a quota unknown to it is read at once).
const QUOTAS_FOR: Duration = Duration::from_secs(1);
/// How often an Envoy's asking is written down (its count sets the fall-back shares).
const ENVOY_TOUCH: Duration = Duration::from_secs(10);

/// The authority's counters.
#[derive(Debug, serde::Serialize)]
pub struct AuthorityStats {
    pub requests: u64,
    pub asks: u64,
}

impl Authority {
    async fn quotas(&self, service: &Service, fresh: bool) -> anyhow::Result<Arc<Vec<crate::store::QuotaSpec>>> {
        if !fresh {
            let cached = self.quotas.lock().ok().and_then(|c| c.as_ref().filter(|(at, _)| at.elapsed() < QUOTAS_FOR).map(|(_, q)| q.clone()));
            if let Some(q) = cached {
                return Ok(q);
            }
        }
        let q = Arc::new(service.store.quotas().await?);
        if let Ok(mut cached) = self.quotas.lock() {
            *cached = Some((Instant::now(), q.clone()));
        }
        Ok(q)
    }

    pub fn stats(&self) -> AuthorityStats {
        AuthorityStats { requests: self.answered.load(Ordering::Relaxed), asks: self.asks.load(Ordering::Relaxed) }
    }

    /// Grants what can be granted of each ask. An ask for an unknown quota, or for a window
    /// that is neither the current one nor the next, gets nothing (no entry in the answer).
    pub async fn grant(&self, service: &Service, req: &GrantRequest, now: i64) -> anyhow::Result<GrantResponse> {
        if req.asks.len() > MAX_ASKS || req.envoy.len() > 256 {
            anyhow::bail!("too many asks");
        }
        let due = {
            let mut touched = self.touched.lock().map_err(|_| anyhow::anyhow!("authority state poisoned"))?;
            let due = touched.get(&req.envoy).is_none_or(|t| t.elapsed() >= ENVOY_TOUCH) || self.envoys.load(Ordering::Relaxed) == 0;
            if due {
                if touched.len() > 100_000 {
                    touched.clear();
                }
                touched.insert(req.envoy.clone(), Instant::now());
            }
            due
        };
        let envoys = if due {
            service.store.touch_quota_envoy(&req.envoy, now, now - ENVOY_SEEN_SECONDS).await?
        } else {
            self.envoys.load(Ordering::Relaxed).max(1)
        };
        if due && self.envoys.swap(envoys, Ordering::Relaxed) != envoys {
            // The fall-back shares follow the number of Envoys.
            let publisher = service.publisher.clone();
            tokio::spawn(async move {
                if let Err(e) = publisher.refresh().await {
                    tracing::warn!(error = %e, "could not publish after the number of Envoys changed");
                }
            });
        }
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.asks.fetch_add(req.asks.len() as u64, Ordering::Relaxed);
        let mut quotas = self.quotas(service, false).await?;
        if req.asks.iter().any(|a| !quotas.iter().any(|q| q.id == a.quota)) {
            quotas = self.quotas(service, true).await?;
        }
        let t = u64::try_from(now).unwrap_or(0);
        let mut out = GrantResponse::default();
        for ask in &req.asks {
            let Some(spec) = quotas.iter().find(|q| q.id == ask.quota && q.leased()) else { continue };
            let doc = spec.doc(envoys, None, now);
            let current = doc.period(t);
            let next = current.ends.map(|e| doc.period(e));
            let Some(period) = [Some(current), next].into_iter().flatten().find(|p| p.window == ask.window) else { continue };
            let (granted, free, ignored) = service.store.grant_quota(ask, &req.envoy, current.window, period.limit, envoys, now).await?;
            if ignored > 0 {
                tracing::warn!(envoy = %req.envoy, quota = %ask.quota, window = ask.window, ignored, "an Envoy gave back more of a quota than it holds; the excess is ignored");
            }
            out.grants.push(Grant { quota: ask.quota.clone(), window: ask.window, granted, free });
        }
        Ok(out)
    }
}
