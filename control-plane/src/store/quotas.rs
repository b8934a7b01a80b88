//! Quotas (issue 13): stored as their JSON spec, one row each, written with an audit row in the
//! same transaction.

use sqlx::Row;
use tollgate_contract::quota::{Metric, QuotaDoc};

use super::governance::audit_in;
use super::{Audit, Store};

/// A quota as an administrator defines it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    /// `quota_...`, given at creation.
    #[serde(default)]
    pub id: String,
    /// `requests`, `input_tokens`, `output_tokens`, `total_tokens`, `concurrency` or `cost_usd`
    /// (a budget).
    #[schema(value_type = String)]
    pub metric: tollgate_contract::quota::Metric,
    /// Window in seconds (1 to 31,536,000); absent or 0: no window (a lifetime total;
    /// concurrency has none), or a calendar `window`.
    #[serde(default)]
    pub window_seconds: u64,
    /// A calendar window instead: `day`, `week` (from Monday) or `month`, in `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub window: Option<crate::model::calendar::Calendar>,
    /// IANA time zone of a calendar window and of the schedule (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Time-of-day limits (local time): in these spans the entry's limit, outside them `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Vec<crate::model::calendar::ScheduleEntry>>,
    /// Requests, tokens or concurrent requests; for `cost_usd`, nano-dollars (set from
    /// `limit_usd`).
    #[serde(default)]
    pub limit: u64,
    /// A budget's limit in USD, e.g. `"25.00"` (nine decimals at most).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_usd: Option<String>,
    /// The key it applies to (absent: every key).
    #[serde(default)]
    pub key_id: Option<String>,
    /// The user whose keys it applies to, together (absent: not by user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The team whose keys it applies to, together (absent: not by team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// The model it applies to (absent: every model).
    #[serde(default)]
    pub model: Option<String>,
    /// The provider whose attempts it applies to: `openai`, `azure`, `anthropic`, `bedrock` or
    /// `sagemaker` (absent: every provider). Taken per attempt by the provider filter; an
    /// attempt it refuses gets the 429 (Envoy does not fail an upstream filter's own answer
    /// over to the next deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub provider: Option<tollgate_contract::config::ProviderKind>,
    /// What this quota does while the quota authority cannot be reached: `closed` (refuse once
    /// the Envoy's lease is spent; the default for budgets and totals without a window) or
    /// `share` (each Envoy admits its share of the limit; the default for rate limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub fail_mode: Option<FailMode>,
    /// Percentages of the limit at which an alert goes to the webhook (`settings.alerts`), once
    /// per threshold per window; default `[50, 80, 100]` for a budget, none otherwise; `[]`:
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_thresholds: Option<Vec<u8>>,
    /// For `cost_usd`, `total_tokens` and `output_tokens` quotas: a request whose worst case no
    /// longer fits what is left is admitted with its output limit (`max_tokens` and its kin)
    /// lowered to what fits, down to this many tokens, instead of being refused, so that a
    /// budget is spent to its last requests; its answer may then stop early
    /// (`finish_reason: "length"`). Chat, Responses, Messages and Converse requests (an
    /// InvokeModel body is the model's own). Absent: such a request is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit_output_tokens: Option<u64>,
    #[serde(default)]
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    Closed,
    Share,
}

/// Windows shorter than this are not leased: each Envoy admits its share (a grant round trip
/// would be a good part of the window).
pub const MIN_LEASED_WINDOW_SECONDS: u64 = 10;

impl QuotaSpec {
    /// The thresholds alerts go at (see `alert_thresholds`).
    pub fn thresholds(&self) -> Vec<u8> {
        self.alert_thresholds.clone().unwrap_or_else(|| if self.metric == Metric::CostUsd { vec![50, 80, 100] } else { Vec::new() })
    }

    pub fn fail_mode(&self) -> FailMode {
        let lifetime = self.window_seconds == 0 && self.window.is_none();
        self.fail_mode.unwrap_or(if self.metric == Metric::CostUsd || lifetime { FailMode::Closed } else { FailMode::Share })
    }

    /// Whether Envoys spend it from leases granted by the authority (concurrency and short
    /// windows are counted by each Envoy for its share alone).
    pub fn leased(&self) -> bool {
        self.metric != Metric::Concurrency && (self.window_seconds == 0 || self.window_seconds >= MIN_LEASED_WINDOW_SECONDS)
    }

    /// The quota as an Envoy receives it at `now`, `envoys` sharing it; `keys`: the ids of the
    /// keys of its user or team (sorted), when it is scoped so. A calendar window's starts and
    /// a schedule's limits are laid out from `now` (see `model::calendar`).
    pub fn doc(&self, envoys: u64, keys: Option<Vec<String>>, now: i64) -> QuotaDoc {
        use crate::model::calendar;
        let envoys = envoys.max(1);
        let share = self.limit / envoys;
        let lease = self.leased();
        let tz = calendar::zone(self.timezone.as_deref()).unwrap_or(chrono_tz::UTC);
        let periods = self.window.map(|c| calendar::periods(c, tz, now)).unwrap_or_default();
        let limits = self
            .schedule
            .as_deref()
            .map(|s| calendar::schedule_limits(s, self.limit, tz, now))
            .unwrap_or_default()
            .into_iter()
            .map(|(t, l)| (t, if lease { l } else { l / envoys }))
            .collect();
        QuotaDoc {
            id: self.id.clone(),
            metric: self.metric,
            window_seconds: self.window_seconds,
            limit: if lease { self.limit } else { share },
            lease,
            share: if lease && self.fail_mode() == FailMode::Share { share } else { 0 },
            key_id: self.key_id.clone(),
            model: self.model.clone(),
            keys,
            periods,
            limits,
            // The quotas of one scope count in one shared-data value (one read and one
            // compare-and-swap a request for all of them).
            group: Some(self.scope()),
            provider: self.provider,
            // Taken by the gateway filter only (a provider's quota is taken per attempt, after
            // the body has gone).
            fit_output: if self.provider.is_none() { self.fit_output_tokens.unwrap_or(0) } else { 0 },
        }
    }

    /// What the quota applies to, as a group name: the same for every quota of the scope.
    pub fn scope(&self) -> String {
        let part = |tag: &str, v: &Option<String>| v.as_deref().map(|v| format!("{tag}={v};")).unwrap_or_default();
        let provider = self.provider.map(|p| p.as_str().to_owned());
        let scope = [part("k", &self.key_id), part("u", &self.user_id), part("t", &self.team_id), part("m", &self.model), part("p", &provider)].concat();
        if scope.is_empty() { "all".to_owned() } else { scope }
    }
}

impl Store {
    pub async fn quotas(&self) -> anyhow::Result<Vec<QuotaSpec>> {
        let rows = sqlx::query("SELECT spec FROM quotas ORDER BY created_at, id").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>(0)?)?)).collect()
    }

    pub async fn insert_quota(&self, q: &QuotaSpec, audit: &Audit<'_>) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO quotas (id, spec, created_at) VALUES ($1, $2, $3)")
            .bind(&q.id)
            .bind(serde_json::to_string(q)?)
            .bind(q.created_at)
            .execute(&mut *tx)
            .await?;
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// False when there is no such quota.
    pub async fn delete_quota(&self, id: &str, audit: &Audit<'_>) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM quotas WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl Store {
    /// Takes back what an ask returns, then grants part of its `want` of the quota's window
    /// (limit `limit`), never taking the window past its limit: the row is locked (PostgreSQL
    /// `FOR UPDATE`; SQLite has one writer) from the read to the write, so that control-plane
    /// replicas sharing the database agree. `envoy` is who asks: what each Envoy holds of the
    /// window is counted too, and a return is taken back only up to it (an Envoy that says it
    /// gives back more than it was granted, by a fault or by design, cannot make room it never
    /// had). Returns (granted, left to grant, returned but not held: ignored).
    ///
    /// The first grant of a window drops the rows of the quota's windows before `current`.
    pub async fn grant_quota(&self, ask: &tollgate_contract::quota_lease::Ask, envoy: &str, current: u64, limit: u64, envoys: u64, now: i64) -> anyhow::Result<(u64, u64, u64)> {
        let (quota, win) = (ask.quota.as_str(), i64::try_from(ask.window)?);
        let mut tx = self.pool.begin().await?;
        let created = sqlx::query("INSERT INTO quota_grants (quota_id, win, granted, updated_at) VALUES ($1, $2, 0, $3) ON CONFLICT (quota_id, win) DO NOTHING")
            .bind(quota)
            .bind(win)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if created > 0 {
            let current = i64::try_from(current)?;
            sqlx::query("DELETE FROM quota_grants WHERE quota_id = $1 AND win < $2").bind(quota).bind(current).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM quota_leases WHERE quota_id = $1 AND win < $2").bind(quota).bind(current).execute(&mut *tx).await?;
        }
        let select = if self.sqlite {
            "SELECT granted FROM quota_grants WHERE quota_id = $1 AND win = $2"
        } else {
            "SELECT granted FROM quota_grants WHERE quota_id = $1 AND win = $2 FOR UPDATE"
        };
        let granted: i64 = sqlx::query(select).bind(quota).bind(win).fetch_one(&mut *tx).await?.try_get(0)?;
        // Under the window's lock: every writer of its Envoys' rows holds it first.
        sqlx::query("INSERT INTO quota_leases (quota_id, win, envoy, held) VALUES ($1, $2, $3, 0) ON CONFLICT (quota_id, win, envoy) DO NOTHING")
            .bind(quota)
            .bind(win)
            .bind(envoy)
            .execute(&mut *tx)
            .await?;
        let held: i64 = sqlx::query("SELECT held FROM quota_leases WHERE quota_id = $1 AND win = $2 AND envoy = $3")
            .bind(quota)
            .bind(win)
            .bind(envoy)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let held = u64::try_from(held).unwrap_or(0);
        let returned = ask.returned.min(held);
        let granted = u64::try_from(granted).unwrap_or(0).saturating_sub(returned);
        let free = limit.saturating_sub(granted);
        let give = tollgate_contract::quota_lease::grant_size(free, ask.want, ask.need, ask.least, envoys);
        if give > 0 || returned > 0 {
            sqlx::query("UPDATE quota_grants SET granted = $1, updated_at = $2 WHERE quota_id = $3 AND win = $4")
                .bind(i64::try_from(granted + give)?)
                .bind(now)
                .bind(quota)
                .bind(win)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE quota_leases SET held = $1 WHERE quota_id = $2 AND win = $3 AND envoy = $4")
                .bind(i64::try_from(held - returned + give)?)
                .bind(quota)
                .bind(win)
                .bind(envoy)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((give, free - give, ask.returned - returned))
    }

    /// What an Envoy holds of a quota's window (granted, less what it gave back).
    #[cfg(test)]
    pub async fn quota_held(&self, quota: &str, win: u64, envoy: &str) -> anyhow::Result<u64> {
        let row = sqlx::query("SELECT held FROM quota_leases WHERE quota_id = $1 AND win = $2 AND envoy = $3")
            .bind(quota)
            .bind(i64::try_from(win)?)
            .bind(envoy)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
            None => 0,
        })
    }

    /// What has been granted of a quota's window.
    pub async fn quota_granted(&self, quota: &str, win: u64) -> anyhow::Result<u64> {
        let row = sqlx::query("SELECT granted FROM quota_grants WHERE quota_id = $1 AND win = $2")
            .bind(quota)
            .bind(i64::try_from(win)?)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
            None => 0,
        })
    }

    /// Records that `envoy` asked at `now`; returns how many Envoys asked since `since`.
    pub async fn touch_quota_envoy(&self, envoy: &str, now: i64, since: i64) -> anyhow::Result<u64> {
        sqlx::query("INSERT INTO quota_envoys (envoy, seen_at) VALUES ($1, $2) ON CONFLICT (envoy) DO UPDATE SET seen_at = $2")
            .bind(envoy)
            .bind(now)
            .execute(&self.pool)
            .await?;
        self.quota_envoys_since(since).await
    }

    /// How many Envoys asked the authority since `since` (at least 1).
    pub async fn quota_envoys_since(&self, since: i64) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM quota_envoys WHERE seen_at >= $1").bind(since).fetch_one(&self.pool).await?.try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(1).max(1))
    }

    /// What the ledger holds against a quota since `from_ms`: requests, tokens (input counting
    /// cache reads and writes, as the data plane counts them) or nano-dollars, of its scope.
    pub async fn quota_ledger_usage(&self, q: &QuotaSpec, from_ms: i64) -> anyhow::Result<u64> {
        let what = match q.metric {
            Metric::Requests => "COUNT(DISTINCT request_id)",
            // PostgreSQL sums BIGINTs as NUMERIC: cast back.
            Metric::InputTokens => "CAST(COALESCE(SUM(input_tokens + cache_read_tokens + cache_write_tokens), 0) AS BIGINT)",
            Metric::OutputTokens => "CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT)",
            Metric::TotalTokens => "CAST(COALESCE(SUM(input_tokens + cache_read_tokens + cache_write_tokens + output_tokens), 0) AS BIGINT)",
            Metric::CostUsd => "CAST(COALESCE(SUM(cost_nanos), 0) AS BIGINT)",
            Metric::Concurrency => return Ok(0),
        };
        let mut sql = format!("SELECT {what} FROM usage_records WHERE at_ms >= $1");
        let mut binds = Vec::new();
        let provider = q.provider.map(|p| p.as_str().to_owned());
        for (column, value) in [("key_id", &q.key_id), ("user_id", &q.user_id), ("team_id", &q.team_id), ("model", &q.model), ("provider", &provider)] {
            if let Some(v) = value {
                binds.push(v.clone());
                sql.push_str(&format!(" AND {column} = ${}", binds.len() + 1));
            }
        }
        let mut query = sqlx::query(&sql).bind(from_ms);
        for b in binds {
            query = query.bind(b);
        }
        let n: i64 = query.fetch_one(&self.pool).await?.try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Claims the alert of a quota's window at a threshold for this replica, with its audit row,
    /// in one transaction: false when it was claimed before (sent, or being sent).
    pub async fn claim_quota_alert(&self, quota: &str, win: u64, threshold: u8, audit: &Audit<'_>) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query("INSERT INTO quota_alerts (quota_id, win, threshold, at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(quota)
            .bind(i64::try_from(win)?)
            .bind(i64::from(threshold))
            .bind(audit.at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if claimed {
            audit_in(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(claimed)
    }
}
