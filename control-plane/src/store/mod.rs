//! Storage through sqlx's `Any` driver: SQLite by default (embedded, zero set-up), PostgreSQL
//! when several control-plane replicas share state. SQL is kept to the common subset and uses
//! `$n` placeholders, which both accept.

mod governance;
mod ledger;
mod migrations;
pub mod notify;
mod quotas;

pub use governance::{Audit, AuditQuery, KeyQuery};
pub use ledger::{usd, SpendQuery, SpendRow, UsageQuery, UsageRow};
pub use quotas::QuotaSpec;

use std::collections::BTreeMap;

use anyhow::Context;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::model::{CredentialRef, KeyRecord, ModelRow, ModelSpec, Settings, StoredConfig};

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite (else PostgreSQL): sqlx binds SQLite parameters in time quadratic in their number
    /// per statement, so multi-row statements stay short there.
    sqlite: bool,
}

/// One admin-action record.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub team_id: Option<String>,
    /// The client address of the admin call (`None` for the system's own writes).
    pub source: Option<String>,
    /// The object before and after the change, secrets removed (digests included).
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

impl Store {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer; a single connection avoids "database is locked".
            .max_connections(if is_sqlite { 1 } else { 8 })
            .connect(url)
            .await
            .with_context(|| format!("connecting to the database ({})", redact_url(url)))?;
        let store = Self { pool, sqlite: is_sqlite };
        migrations::run(&store.pool).await?;
        Ok(store)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Makes the store hold exactly the configuration file's settings, credentials and models.
    pub async fn replace_config(
        &self,
        settings: &Settings,
        credentials: &BTreeMap<String, CredentialRef>,
        models: &[ModelSpec],
        now: i64,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM settings").execute(&mut *tx).await?;
        sqlx::query("INSERT INTO settings (id, spec) VALUES (1, $1)")
            .bind(serde_json::to_string(settings)?)
            .execute(&mut *tx)
            .await?;
        // The file's credentials and models replace the file's (and any of the API's with the
        // same name); those created through the admin API stay.
        sqlx::query("DELETE FROM credentials WHERE source = 'file'").execute(&mut *tx).await?;
        for (name, c) in credentials {
            sqlx::query("DELETE FROM credentials WHERE name = $1").bind(name).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO credentials (name, spec) VALUES ($1, $2)")
                .bind(name)
                .bind(serde_json::to_string(c)?)
                .execute(&mut *tx)
                .await?;
        }
        // Keep creation times of models that stay.
        let existing: BTreeMap<String, i64> = sqlx::query("SELECT name, created_at FROM models")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        sqlx::query("DELETE FROM models WHERE source = 'file'").execute(&mut *tx).await?;
        for (pos, m) in models.iter().enumerate() {
            sqlx::query("DELETE FROM models WHERE name = $1").bind(&m.name).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO models (name, position, spec, created_at) VALUES ($1, $2, $3, $4)")
                .bind(&m.name)
                .bind(pos as i64)
                .bind(serde_json::to_string(m)?)
                .bind(existing.get(&m.name).copied().unwrap_or(now))
                .execute(&mut *tx)
                .await?;
        }
        notify::notify_in(&mut tx, "config.load").await?;
        tx.commit().await?;
        Ok(())
    }

    /// The credential references, by name: `Err` (the parser's message) for a row that does not
    /// parse, so that one bad row stays that row's problem.
    pub async fn credential_rows(&self) -> anyhow::Result<BTreeMap<String, Result<CredentialRef, String>>> {
        let mut credentials = BTreeMap::new();
        for row in sqlx::query("SELECT name, spec FROM credentials").fetch_all(&self.pool).await? {
            let spec: String = row.try_get(1)?;
            let parsed = serde_json::from_str::<CredentialRef>(&spec).map_err(|e| e.to_string());
            credentials.insert(row.try_get::<String, _>(0)?, parsed);
        }
        Ok(credentials)
    }

    /// The credential references that parse, by name.
    pub async fn credentials(&self) -> anyhow::Result<BTreeMap<String, CredentialRef>> {
        let rows = self.credential_rows().await?;
        Ok(rows.into_iter().filter_map(|(name, r)| Some((name, r.ok()?))).collect())
    }

    /// The model rows in declaration order, each parsed on its own.
    pub async fn model_rows(&self) -> anyhow::Result<Vec<ModelRow>> {
        let rows = sqlx::query("SELECT name, spec, created_at FROM models ORDER BY position").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let spec = serde_json::from_str::<ModelSpec>(&row.try_get::<String, _>(1)?).map_err(|e| e.to_string());
                Ok(ModelRow { name: row.try_get(0)?, created: row.try_get(2)?, spec })
            })
            .collect()
    }

    /// The stored settings (defaults when none are stored).
    pub async fn load_settings(&self) -> anyhow::Result<Settings> {
        Ok(match sqlx::query("SELECT spec FROM settings WHERE id = 1").fetch_optional(&self.pool).await? {
            Some(row) => serde_json::from_str(&row.try_get::<String, _>(0)?).context("the stored settings do not parse")?,
            None => Settings::default(),
        })
    }

    /// Everything the domain model is built from (`crate::model::resolve`). Fails only when the
    /// store cannot be read (or its settings row does not parse); a bad model or credential row
    /// is carried as such.
    pub async fn load(&self) -> anyhow::Result<StoredConfig> {
        let settings = self.load_settings().await?;
        Ok(StoredConfig {
            settings,
            credentials: self.credential_rows().await?,
            models: self.model_rows().await?,
            teams: self.teams().await?.into_iter().map(|t| (t.id.clone(), t)).collect(),
            users: self.users().await?.into_iter().map(|u| (u.id.clone(), u)).collect(),
            groups: self.access_groups().await?.into_iter().map(|g| (g.name, g.models)).collect(),
            now: crate::clock::unix_now(),
            prices: self.price_overrides().await?,
            quotas: self.quotas().await?,
        })
    }

    /// Runs one SQL statement (tests that write rows the API would refuse).
    #[cfg(test)]
    pub async fn execute_for_tests(&self, sql: &str) -> anyhow::Result<()> {
        sqlx::query(sql).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn insert_key(&self, k: &KeyRecord, audit: &Audit<'_>) -> anyhow::Result<()> {
        self.insert_keys(&[(k, audit)]).await
    }

    /// Keys and their audit rows, all in one transaction.
    pub async fn insert_keys(&self, rows: &[(&KeyRecord, &Audit<'_>)]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for (k, audit) in rows {
            let values = (1..=KEY_COLUMN_COUNT).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let sql = format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ({values})");
            bind_key(sqlx::query(&sql), k)?
                .execute(&mut *tx)
                .await?;
            governance::audit_in(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keys, oldest first; revoked ones only if asked.
    #[cfg(test)]
    pub async fn keys(&self, include_revoked: bool) -> anyhow::Result<Vec<KeyRecord>> {
        let filter = if include_revoked { "" } else { "WHERE revoked_at IS NULL " };
        let rows = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys {filter}ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// The key rows stamped after `after` (migration 9's change counter), revoked ones too, with
    /// the highest stamp read (`after` when none). With `after = None`, the first full load:
    /// every key that is not revoked, and the highest stamp at the time.
    pub async fn changed_keys(&self, after: Option<i64>) -> anyhow::Result<(Vec<KeyRecord>, i64)> {
        let Some(after) = after else {
            let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM api_keys").fetch_one(&self.pool).await?;
            let upto: i64 = row.try_get(0)?;
            // A row stamped after `upto` meanwhile is read by the next call.
            let rows = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE seq <= $1 AND revoked_at IS NULL"))
                .bind(upto)
                .fetch_all(&self.pool)
                .await?;
            return Ok((rows.iter().map(key_from_row).collect::<anyhow::Result<_>>()?, upto));
        };
        let rows = sqlx::query(&format!("SELECT {KEY_COLUMNS}, seq FROM api_keys WHERE seq > $1 ORDER BY seq"))
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        let upto = match rows.last() {
            Some(r) => r.try_get::<i64, _>(KEY_COLUMN_COUNT)?,
            None => after,
        };
        Ok((rows.iter().map(key_from_row).collect::<anyhow::Result<_>>()?, upto))
    }

    pub async fn key(&self, id: &str) -> anyhow::Result<Option<KeyRecord>> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// The key whose current secret has this digest, or whose previous secret has it and is
    /// still within its grace period at `now`.
    pub async fn key_by_digest(&self, digest: &str, now: i64) -> anyhow::Result<Option<KeyRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE digest = $1 OR (previous_digest = $1 AND previous_valid_until > $2)"
        ))
        .bind(digest)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Marks a key revoked; false if there is no such active key.
    pub async fn revoke_key(&self, id: &str, now: i64, audit: &Audit<'_>) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        governance::audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn count_admin_keys(&self) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }
}

/// Binds a key row's values, in [`KEY_COLUMNS`] order, as `$1` to `$KEY_COLUMN_COUNT`.
fn bind_key<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    k: &'q KeyRecord,
) -> anyhow::Result<sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>> {
    Ok(q.bind(&k.id)
        .bind(&k.name)
        .bind(&k.digest)
        .bind(role_str(k.role))
        .bind(k.models.as_ref().map(serde_json::to_string).transpose()?)
        .bind(k.created_at)
        .bind(k.expires_at)
        .bind(k.revoked_at)
        .bind(k.user_id.as_deref())
        .bind(k.team_id.as_deref())
        .bind(serde_json::to_string(&k.tags)?)
        .bind(k.metadata.as_ref().map(serde_json::to_string).transpose()?)
        .bind(i64::from(k.blocked))
        .bind(k.previous_digest.as_deref())
        .bind(k.previous_valid_until)
        .bind(k.rotated_at)
        .bind(serde_json::to_string(&k.access_groups)?)
        .bind(k.rotation_idempotency.as_deref())
        .bind(k.rotation_answer.as_ref().map(serde_json::to_string).transpose()?))
}

/// How many columns [`KEY_COLUMNS`] names (its commas, plus one).
const KEY_COLUMN_COUNT: usize = {
    let bytes = KEY_COLUMNS.as_bytes();
    let (mut n, mut i) = (1, 0);
    while i < bytes.len() {
        if bytes[i] == b',' {
            n += 1;
        }
        i += 1;
    }
    n
};

/// The columns of a key row, in the order [`key_from_row`] reads them.
const KEY_COLUMNS: &str = "id, name, digest, role, models, created_at, expires_at, revoked_at, user_id, team_id, tags, \
     metadata, blocked, previous_digest, previous_valid_until, rotated_at, access_groups, rotation_idempotency, rotation_answer";

fn role_str(r: tollgate_contract::keys::Role) -> &'static str {
    match r {
        tollgate_contract::keys::Role::User => "user",
        tollgate_contract::keys::Role::Admin => "admin",
    }
}

fn key_from_row(r: &AnyRow) -> anyhow::Result<KeyRecord> {
    let role = match r.try_get::<String, _>(3)?.as_str() {
        "admin" => tollgate_contract::keys::Role::Admin,
        _ => tollgate_contract::keys::Role::User,
    };
    let json = |i: usize| -> anyhow::Result<Option<serde_json::Value>> {
        Ok(r.try_get::<Option<String>, _>(i)?.map(|s| serde_json::from_str(&s)).transpose()?)
    };
    let models: Option<String> = r.try_get(4)?;
    Ok(KeyRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        digest: r.try_get(2)?,
        role,
        models: models.map(|m| serde_json::from_str(&m)).transpose()?,
        created_at: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        revoked_at: r.try_get(7)?,
        user_id: r.try_get(8)?,
        team_id: r.try_get(9)?,
        tags: json(10)?.map(serde_json::from_value).transpose()?.unwrap_or_default(),
        metadata: json(11)?,
        blocked: r.try_get::<i64, _>(12)? != 0,
        previous_digest: r.try_get(13)?,
        previous_valid_until: r.try_get(14)?,
        rotated_at: r.try_get(15)?,
        access_groups: json(16)?.map(serde_json::from_value).transpose()?.unwrap_or_default(),
        rotation_idempotency: r.try_get(17)?,
        rotation_answer: json(18)?.map(serde_json::from_value).transpose()?,
    })
}

/// Hides a password in a database URL for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://<credentials>@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
