//! Quotas (issue 13): scope × metric × window × limit, defined by platform administrators and
//! pushed to every Envoy with the gateway filter's configuration.

use super::*;
use crate::store::QuotaSpec;

/// `"25.50"` → 25,500,000,000 nano-dollars; at most nine decimals, at most $1,000,000,000.
fn usd_to_nanos(usd: &str) -> Option<u64> {
    let (whole, frac) = usd.split_once('.').unwrap_or((usd, ""));
    if whole.is_empty() || whole.len() > 10 || frac.len() > 9 || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let frac: u64 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    (whole <= 1_000_000_000).then(|| whole * 1_000_000_000 + frac)
}

/// The longest window: a year.
const MAX_WINDOW_SECONDS: u64 = 365 * 86_400;
/// The largest floor a quota may lower a request's output limit to (`fit_output_tokens`).
const MAX_FIT_OUTPUT_TOKENS: u64 = 1_000_000;

/// A quota as it stands now (`GET /admin/v1/quotas/{id}/state`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct QuotaState {
    pub id: String,
    /// The limit in the current window (nano-dollars for a budget).
    pub limit: u64,
    /// What the ledger holds in the current window (requests, tokens or nano-dollars; 0 for
    /// concurrency, which each Envoy counts alone).
    pub used: u64,
    /// Granted to Envoys as leases in this window and not yet in the ledger: in flight or held
    /// (leased quotas; 0 otherwise).
    pub reserved: u64,
    /// What is left to grant (leased quotas: the limit less every grant).
    pub free: u64,
    /// Whether Envoys spend it from leases of the quota authority.
    pub leased: bool,
    /// The window's id (its index for fixed windows, its start for calendar ones; 0: none).
    pub window: u64,
    /// The window's start and end (RFC 3339, UTC); no end: a lifetime total.
    pub window_start: Option<String>,
    pub resets_at: Option<String>,
}

impl Service {
    pub async fn quota_state(&self, actor: &Actor, id: &str) -> Result<QuotaState, ServiceError> {
        Self::check(actor, Verb::Read, Object::Platform).or_else(|_| Self::check(actor, Verb::Write, Object::Platform))?;
        let Some(spec) = self.store.quotas().await?.into_iter().find(|q| q.id == id) else {
            return Err(ServiceError::NotFound(format!("No quota '{id}'.")));
        };
        Ok(self.quota_state_of(&spec, unix_now()).await?)
    }

    /// A quota's state at `now` (also for the alerts).
    pub async fn quota_state_of(&self, spec: &QuotaSpec, now: i64) -> anyhow::Result<QuotaState> {
        let doc = spec.doc(1, None, now);
        let t = u64::try_from(now).unwrap_or(0);
        let period = doc.period(t);
        let start = match doc.window_seconds {
            _ if !doc.periods.is_empty() => Some(period.window),
            0 => None,
            w => Some(period.window.saturating_mul(w)),
        };
        let from_ms = start.map_or(0, |s| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX));
        let used = self.store.quota_ledger_usage(spec, from_ms).await?;
        let leased = spec.leased();
        let granted = if leased { self.store.quota_granted(&spec.id, period.window).await? } else { 0 };
        Ok(QuotaState {
            id: spec.id.clone(),
            limit: period.limit,
            used,
            reserved: granted.saturating_sub(used),
            free: if leased { period.limit.saturating_sub(granted) } else { period.limit.saturating_sub(used) },
            leased,
            window: period.window,
            window_start: start.map(tollgate_contract::quota::rfc3339),
            resets_at: period.ends.map(tollgate_contract::quota::rfc3339),
        })
    }

    pub async fn list_quotas(&self, actor: &Actor) -> Result<Vec<QuotaSpec>, ServiceError> {
        Self::check(actor, Verb::Read, Object::Platform).or_else(|_| Self::check(actor, Verb::Write, Object::Platform))?;
        Ok(self.store.quotas().await?)
    }

    pub async fn create_quota(&self, actor: &Actor, mut q: QuotaSpec) -> Result<QuotaSpec, ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        match (q.metric == tollgate_contract::quota::Metric::CostUsd, q.limit_usd.as_deref()) {
            (true, Some(usd)) => q.limit = usd_to_nanos(usd).ok_or_else(|| ServiceError::Invalid("'limit_usd' must be a decimal amount of dollars, e.g. \"25.00\" (at most nine decimals).".into()))?,
            (true, None) => return Err(ServiceError::Invalid("A cost_usd quota (a budget) needs 'limit_usd', e.g. \"25.00\".".into())),
            (false, Some(_)) => return Err(ServiceError::Invalid("'limit_usd' is for cost_usd quotas; use 'limit'.".into())),
            (false, None) => {}
        }
        if q.limit == 0 {
            return Err(ServiceError::Invalid("'limit' must be positive.".into()));
        }
        if q.provider == Some(tollgate_contract::config::ProviderKind::Unknown) {
            return Err(ServiceError::Invalid("Unknown 'provider': openai, azure, anthropic, bedrock or sagemaker.".into()));
        }
        if q.window_seconds > MAX_WINDOW_SECONDS {
            return Err(ServiceError::Invalid("'window_seconds' is at most 31536000 (a year).".into()));
        }
        if q.metric == tollgate_contract::quota::Metric::Concurrency && (q.window_seconds != 0 || q.window.is_some()) {
            return Err(ServiceError::Invalid("A concurrency quota has no window.".into()));
        }
        if q.window.is_some() && q.window_seconds != 0 {
            return Err(ServiceError::Invalid("Give 'window' (day, week, month) or 'window_seconds', not both.".into()));
        }
        crate::model::calendar::zone(q.timezone.as_deref()).map_err(ServiceError::Invalid)?;
        if let Some(n) = q.fit_output_tokens {
            if !q.metric.counts_output() {
                return Err(ServiceError::Invalid("'fit_output_tokens' is for cost_usd, total_tokens and output_tokens quotas (those a request's output limit counts in).".into()));
            }
            if q.provider.is_some() {
                return Err(ServiceError::Invalid("'fit_output_tokens' is not for a provider's quota (taken per attempt, after the request's body has gone).".into()));
            }
            if n == 0 || n > MAX_FIT_OUTPUT_TOKENS {
                return Err(ServiceError::Invalid(format!("'fit_output_tokens' is from 1 to {MAX_FIT_OUTPUT_TOKENS}.")));
            }
        }
        if q.alert_thresholds.as_ref().is_some_and(|t| t.iter().any(|p| *p == 0 || *p > 100)) {
            return Err(ServiceError::Invalid("'alert_thresholds' are percentages from 1 to 100.".into()));
        }
        if let Some(s) = &q.schedule {
            crate::model::calendar::check_schedule(s).map_err(ServiceError::Invalid)?;
            if s.iter().any(|e| e.limit == 0) {
                return Err(ServiceError::Invalid("A schedule entry's 'limit' must be positive.".into()));
            }
        }
        if [q.key_id.is_some(), q.user_id.is_some(), q.team_id.is_some()].into_iter().filter(|s| *s).count() > 1 {
            return Err(ServiceError::Invalid("A quota is scoped to one of 'key_id', 'user_id' or 'team_id' (each may go with 'model').".into()));
        }
        if let Some(u) = &q.user_id {
            if self.store.user(u).await?.is_none() {
                return Err(ServiceError::Invalid(format!("No user '{u}'.")));
            }
        }
        if let Some(t) = &q.team_id {
            if self.store.team(t).await?.is_none() {
                return Err(ServiceError::Invalid(format!("No team '{t}'.")));
            }
        }
        if let Some(k) = &q.key_id {
            if self.store.key(k).await?.is_none() {
                return Err(ServiceError::Invalid(format!("No key '{k}'.")));
            }
        }
        if let Some(m) = &q.model {
            if !self.store.model_rows().await?.iter().any(|r| &r.name == m) {
                return Err(ServiceError::Invalid(format!("No model '{m}'.")));
            }
        }
        q.id = new_id("quota");
        q.created_at = unix_now();
        let audit = Audit { after: serde_json::to_value(&q).ok(), ..Self::audit(actor, "quota.create", &q.id, None, q.created_at) };
        self.store.insert_quota(&q, &audit).await?;
        self.publisher.refresh().await?;
        Ok(q)
    }

    pub async fn delete_quota(&self, actor: &Actor, id: &str) -> Result<(), ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        let Some(old) = self.store.quotas().await?.into_iter().find(|q| q.id == id) else {
            return Err(ServiceError::NotFound(format!("No quota '{id}'.")));
        };
        let audit = Audit { before: serde_json::to_value(&old).ok(), ..Self::audit(actor, "quota.delete", id, None, unix_now()) };
        self.store.delete_quota(id, &audit).await?;
        self.publisher.refresh().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dollars_to_nano_dollars() {
        assert_eq!(super::usd_to_nanos("25.50"), Some(25_500_000_000));
        assert_eq!(super::usd_to_nanos("0.000000001"), Some(1));
        assert_eq!(super::usd_to_nanos("3"), Some(3_000_000_000));
        for bad in ["", ".5", "1.0000000001", "-1", "1e3", "1,5", "99999999999"] {
            assert_eq!(super::usd_to_nanos(bad), None, "{bad}");
        }
    }
}
