//! The spend ledger: usage rows inserted in batches (multi-row `INSERT ... ON CONFLICT DO
//! NOTHING RETURNING`, so a batch sent twice is stored once and only the new rows are counted),
//! and in the same transaction the daily aggregates per key, user, team, model and provider.

use std::collections::BTreeMap;

use sqlx::Row;

use super::Store;
use crate::metering::LedgerRow;

/// Rows per INSERT statement: 21 values each, well under SQLite's and PostgreSQL's parameter
/// limits.
const ROWS_PER_STATEMENT: usize = 500;
/// On SQLite: sqlx looks each bound parameter up by name among all of the statement's, so a
/// 500-row statement (10,000 parameters) cost 257 µs of CPU a row; with 8 rows ingestion costs
/// 19 µs a row in all (release build, this machine).
const ROWS_PER_STATEMENT_SQLITE: usize = 8;

/// One scope's spend over a day range.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SpendRow {
    pub day: String,
    pub scope: String,
    pub scope_id: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    /// USD, from integer nano-dollars (exact to 9 decimals).
    pub cost_usd: String,
    /// Requests whose model has no price (not counted in `cost_usd`).
    pub unpriced: i64,
    /// `cost_usd` in nano-dollars, for exact sums.
    #[serde(skip)]
    pub cost_nanos: i64,
}

#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SpendQuery {
    /// `key`, `user`, `team`, `model` or `provider`.
    pub scope: String,
    pub scope_id: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC), inclusive.
    pub from: Option<String>,
    /// Last day, inclusive.
    pub to: Option<String>,
}

/// Raw usage records (`GET /admin/v1/usage`), newest first.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    pub key_id: Option<String>,
    pub request_id: Option<String>,
    /// Records at or after this time (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// At most this many (default 100, at most 10,000).
    pub limit: Option<i64>,
}

/// One stored usage record: what the data plane reported, its owners and its price.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    pub request_id: String,
    pub attempt: i64,
    pub at_ms: i64,
    pub key_id: String,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub model: String,
    pub provider: String,
    pub provider_model: String,
    pub status: i64,
    pub stream: bool,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub estimated: bool,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    /// Decimal USD; `None`: unpriced.
    pub cost_usd: Option<String>,
    pub price_version: String,
}

/// The UTC day of a Unix-milliseconds time, `YYYY-MM-DD` (civil-from-days, no time zone data).
pub fn utc_day(at_ms: u64) -> String {
    let (y, m, d) = tollgate_contract::quota::civil_date(at_ms / 86_400_000);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Signed nano-dollars as decimal USD (the data plane's [`tollgate_contract::config::usd`]).
pub fn usd(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    format!("{sign}{}", tollgate_contract::config::usd(nanos.unsigned_abs()))
}

#[derive(Default, Clone, Copy)]
struct Sums {
    requests: i64,
    input: i64,
    output: i64,
    cache_read: i64,
    cache_write: i64,
    cost: i64,
    unpriced: i64,
}

impl Store {
    /// Stores a batch; returns how many rows were new. Idempotent: a row already there (same
    /// request id and attempt) is neither stored again nor counted again.
    pub async fn ingest(&self, rows: &[LedgerRow]) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut new: Vec<&LedgerRow> = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(if self.sqlite { ROWS_PER_STATEMENT_SQLITE } else { ROWS_PER_STATEMENT }) {
            let mut sql = String::from(
                "INSERT INTO usage_records (request_id, attempt, at_ms, key_id, user_id, team_id, model, provider, provider_model, \
                 status, stream, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, estimated, latency_ms, ttft_ms, \
                 cost_nanos, price_version) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 20;
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                sql.push_str(&(1..=20).map(|j| format!("${}", b + j)).collect::<Vec<_>>().join(","));
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (request_id, attempt) DO NOTHING RETURNING request_id, attempt");
            let mut q = sqlx::query(&sql);
            for r in chunk {
                let u = &r.record;
                q = q
                    .bind(&u.request_id)
                    .bind(i64::from(u.attempt))
                    .bind(i64::try_from(u.at_ms).unwrap_or(i64::MAX))
                    .bind(&u.key_id)
                    .bind(r.user_id.as_deref())
                    .bind(r.team_id.as_deref())
                    .bind(&u.model)
                    .bind(&u.provider)
                    .bind(&u.provider_model)
                    .bind(i64::from(u.status))
                    .bind(i64::from(u.stream))
                    .bind(tokens(u.input_tokens))
                    .bind(tokens(u.output_tokens))
                    .bind(tokens(u.cache_read_tokens))
                    .bind(tokens(u.cache_write_tokens))
                    .bind(i64::from(u.estimated))
                    .bind(i64::from(u.latency_ms))
                    .bind(u.ttft_ms.map(i64::from))
                    .bind(r.cost_nanos)
                    .bind(&r.price_version);
            }
            let inserted: std::collections::HashSet<(String, i64)> = q
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?)))
                .collect::<Result<_, sqlx::Error>>()?;
            new.extend(chunk.iter().filter(|r| inserted.contains(&(r.record.request_id.clone(), i64::from(r.record.attempt)))));
        }
        // Daily aggregates of the new rows, one upsert per (day, scope, id).
        let mut sums: BTreeMap<(String, &'static str, String), Sums> = BTreeMap::new();
        for r in &new {
            let u = &r.record;
            let day = utc_day(u.at_ms);
            let scopes = [
                Some(("key", u.key_id.clone())),
                r.user_id.clone().map(|id| ("user", id)),
                r.team_id.clone().map(|id| ("team", id)),
                Some(("model", u.model.clone())),
                Some(("provider", u.provider.clone())),
            ];
            for (scope, id) in scopes.into_iter().flatten() {
                let s = sums.entry((day.clone(), scope, id)).or_default();
                s.requests += 1;
                s.input += tokens(u.input_tokens);
                s.output += tokens(u.output_tokens);
                s.cache_read += tokens(u.cache_read_tokens);
                s.cache_write += tokens(u.cache_write_tokens);
                match r.cost_nanos {
                    Some(c) => s.cost = s.cost.saturating_add(c),
                    None => s.unpriced += 1,
                }
            }
        }
        for ((day, scope, id), s) in &sums {
            sqlx::query(
                "INSERT INTO spend_daily (day, scope, scope_id, requests, input_tokens, output_tokens, cache_read_tokens, \
                 cache_write_tokens, cost_nanos, unpriced) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (day, scope, scope_id) DO UPDATE SET requests = spend_daily.requests + excluded.requests, \
                 input_tokens = spend_daily.input_tokens + excluded.input_tokens, \
                 output_tokens = spend_daily.output_tokens + excluded.output_tokens, \
                 cache_read_tokens = spend_daily.cache_read_tokens + excluded.cache_read_tokens, \
                 cache_write_tokens = spend_daily.cache_write_tokens + excluded.cache_write_tokens, \
                 cost_nanos = spend_daily.cost_nanos + excluded.cost_nanos, unpriced = spend_daily.unpriced + excluded.unpriced",
            )
            .bind(day)
            .bind(*scope)
            .bind(id)
            .bind(s.requests)
            .bind(s.input)
            .bind(s.output)
            .bind(s.cache_read)
            .bind(s.cache_write)
            .bind(s.cost)
            .bind(s.unpriced)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(new.len() as u64)
    }

    /// Daily spend of a scope (every id of it unless `scope_id`), oldest day first.
    pub async fn spend(&self, q: &SpendQuery) -> anyhow::Result<Vec<SpendRow>> {
        let rows = sqlx::query(
            "SELECT day, scope, scope_id, requests, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, \
             unpriced FROM spend_daily WHERE scope = $1 AND ($2 = '' OR scope_id = $2) AND day >= $3 AND day <= $4 \
             ORDER BY day, scope_id LIMIT 10000",
        )
        .bind(&q.scope)
        .bind(q.scope_id.as_deref().unwrap_or(""))
        .bind(q.from.as_deref().unwrap_or("0000-00-00"))
        .bind(q.to.as_deref().unwrap_or("9999-99-99"))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SpendRow {
                    day: r.try_get(0)?,
                    scope: r.try_get(1)?,
                    scope_id: r.try_get(2)?,
                    requests: r.try_get(3)?,
                    input_tokens: r.try_get(4)?,
                    output_tokens: r.try_get(5)?,
                    cache_read_tokens: r.try_get(6)?,
                    cache_write_tokens: r.try_get(7)?,
                    cost_usd: usd(r.try_get(8)?),
                    unpriced: r.try_get(9)?,
                    cost_nanos: r.try_get(8)?,
                })
            })
            .collect()
    }

    /// Deletes at most `limit` raw usage records older than `before_ms` (the daily aggregates
    /// stay); returns how many went.
    pub async fn delete_usage_before(&self, before_ms: i64, limit: i64) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "DELETE FROM usage_records WHERE (request_id, attempt) IN \
             (SELECT request_id, attempt FROM usage_records WHERE at_ms < $1 ORDER BY at_ms LIMIT $2)",
        )
        .bind(before_ms)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Raw usage records, newest first.
    pub async fn usage_records(&self, q: &UsageQuery) -> anyhow::Result<Vec<UsageRow>> {
        let rows = sqlx::query(
            "SELECT request_id, attempt, at_ms, key_id, user_id, team_id, model, provider, provider_model, status, stream, \
             input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, estimated, latency_ms, ttft_ms, cost_nanos, \
             price_version FROM usage_records WHERE ($1 = '' OR key_id = $1) AND ($2 = '' OR request_id = $2) AND at_ms >= $3 \
             ORDER BY at_ms DESC, request_id, attempt LIMIT $4",
        )
        .bind(q.key_id.as_deref().unwrap_or(""))
        .bind(q.request_id.as_deref().unwrap_or(""))
        .bind(q.since_ms.unwrap_or(0))
        .bind(q.limit.unwrap_or(100).clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    request_id: r.try_get(0)?,
                    attempt: r.try_get(1)?,
                    at_ms: r.try_get(2)?,
                    key_id: r.try_get(3)?,
                    user_id: r.try_get(4)?,
                    team_id: r.try_get(5)?,
                    model: r.try_get(6)?,
                    provider: r.try_get(7)?,
                    provider_model: r.try_get(8)?,
                    status: r.try_get(9)?,
                    stream: r.try_get::<i64, _>(10)? != 0,
                    input_tokens: r.try_get(11)?,
                    output_tokens: r.try_get(12)?,
                    cache_read_tokens: r.try_get(13)?,
                    cache_write_tokens: r.try_get(14)?,
                    estimated: r.try_get::<i64, _>(15)? != 0,
                    latency_ms: r.try_get(16)?,
                    ttft_ms: r.try_get(17)?,
                    cost_usd: r.try_get::<Option<i64>, _>(18)?.map(usd),
                    price_version: r.try_get(19)?,
                })
            })
            .collect()
    }

    /// The owners of these keys (a key the store does not know has none).
    pub async fn key_owners(&self, ids: &[&str]) -> anyhow::Result<std::collections::HashMap<String, crate::metering::Owners>> {
        let mut out = std::collections::HashMap::new();
        for chunk in ids.chunks(500) {
            let placeholders = (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(",");
            let sql = format!("SELECT id, user_id, team_id FROM api_keys WHERE id IN ({placeholders})");
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.insert(r.try_get(0)?, crate::metering::Owners { user_id: r.try_get(1)?, team_id: r.try_get(2)? });
            }
        }
        Ok(out)
    }

    /// The admin's price entries, first match first.
    pub async fn price_overrides(&self) -> anyhow::Result<Vec<crate::metering::prices::PriceEntry>> {
        let rows = sqlx::query("SELECT entry FROM prices ORDER BY position DESC").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>(0)?)?)).collect()
    }

    /// Adds a price entry in front of the others.
    pub async fn add_price(&self, e: &crate::metering::prices::PriceEntry, now: i64, audit: &super::Audit<'_>) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let next: i64 = sqlx::query("SELECT COALESCE(MAX(position), 0) + 1 FROM prices").fetch_one(&mut *tx).await?.try_get(0)?;
        sqlx::query("INSERT INTO prices (position, entry, created_at) VALUES ($1, $2, $3)")
            .bind(next)
            .bind(serde_json::to_string(e)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        super::governance::audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many usage rows the ledger holds.
    #[cfg(test)]
    pub async fn usage_count(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM usage_records").fetch_one(&self.pool).await?.try_get(0)?)
    }
}

fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_dollars() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(1_733_270_400_000), "2024-12-04");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
        assert_eq!(usd(450_000), "0.000450000");
        assert_eq!(usd(12_345_000_000_001), "12345.000000001");
    }
}
