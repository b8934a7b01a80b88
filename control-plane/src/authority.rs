//! The quota authority (issue 13; protocol in `tollgate_contract::quota_lease`): grants Envoys
//! leases, slices of a quota's window, never more in all than the window's limit. What has been
//! granted is counted in the database (`quota_grants`), each grant a row-locked read and write,
//! so control-plane replicas sharing PostgreSQL agree without talking to each other. The Envoys
//! that asked in the last minute (`quota_envoys`) set the fall-back shares; when their number
//! changes the configuration is published again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
}

/// The authority's counters.
#[derive(Debug, serde::Serialize)]
pub struct AuthorityStats {
    pub requests: u64,
    pub asks: u64,
}

impl Authority {
    pub fn stats(&self) -> AuthorityStats {
        AuthorityStats { requests: self.answered.load(Ordering::Relaxed), asks: self.asks.load(Ordering::Relaxed) }
    }

    /// Grants what can be granted of each ask. An ask for an unknown quota, or for a window
    /// that is neither the current one nor the next, gets nothing (no entry in the answer).
    pub async fn grant(&self, service: &Service, req: &GrantRequest, now: i64) -> anyhow::Result<GrantResponse> {
        if req.asks.len() > MAX_ASKS || req.envoy.len() > 256 {
            anyhow::bail!("too many asks");
        }
        let envoys = service.store.touch_quota_envoy(&req.envoy, now, now - ENVOY_SEEN_SECONDS).await?;
        if self.envoys.swap(envoys, Ordering::Relaxed) != envoys {
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
        let quotas = service.store.quotas().await?;
        let t = u64::try_from(now).unwrap_or(0);
        let mut out = GrantResponse::default();
        for ask in &req.asks {
            let Some(spec) = quotas.iter().find(|q| q.id == ask.quota && q.leased()) else { continue };
            let doc = spec.doc(envoys, None, now);
            let current = doc.period(t);
            let next = current.ends.map(|e| doc.period(e));
            let Some(period) = [Some(current), next].into_iter().flatten().find(|p| p.window == ask.window) else { continue };
            let (granted, free) = service.store.grant_quota(ask, current.window, period.limit, envoys, now).await?;
            out.grants.push(Grant { quota: ask.quota.clone(), window: ask.window, granted, free });
        }
        Ok(out)
    }
}
