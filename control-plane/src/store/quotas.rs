//! Quotas (issue 13): stored as their JSON spec, one row each, written with an audit row in the
//! same transaction.

use sqlx::Row;

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
    /// concurrency has none).
    #[serde(default)]
    pub window_seconds: u64,
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
    /// The model it applies to (absent: every model).
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub created_at: i64,
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
