//! Teams, users, key updates and the audit trail. Every write takes its audit record and commits
//! both in one transaction: a change without its record (or a record without its change) cannot
//! be stored. The trail is append-only: nothing here updates or deletes an audit row.

use anyhow::Context;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{bind_key, key_from_row, AuditEntry, Store, KEY_COLUMNS, KEY_COLUMN_COUNT};
use crate::model::{AccessGroup, KeyRecord, TeamRecord, UserRecord, UserRole};

/// One audit record, written with the change it describes.
#[derive(Debug, Clone, Default)]
pub struct Audit<'a> {
    pub at: i64,
    /// The public id of the key that made the call (`system` for the control plane's own).
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub team_id: Option<&'a str>,
    pub source: Option<&'a str>,
    /// Without secrets: callers pass views (no digest, no secret).
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

pub(super) async fn audit_in(tx: &mut Transaction<'_, Any>, a: &Audit<'_>) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, team_id, source, before_state, after_state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(a.at)
    .bind(a.actor)
    .bind(a.action)
    .bind(a.target)
    .bind(a.team_id)
    .bind(a.source)
    .bind(a.before.as_ref().map(serde_json::Value::to_string))
    .bind(a.after.as_ref().map(serde_json::Value::to_string))
    .execute(&mut **tx)
    .await
    .context("writing the audit record")?;
    super::notify::notify_in(tx, a.action).await
}

/// Filters on the audit trail; newest first, `before_id` pages back.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub team_id: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: Option<i64>,
}

/// Filters on keys; oldest first, `after_id` pages on.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub tag: Option<String>,
    /// Revoked keys are listed (with `revoked_at`) unless this is `false`.
    pub include_revoked: Option<bool>,
    pub after_id: Option<String>,
    pub limit: Option<i64>,
}

/// A list page size: 1 to 1000, 100 by default.
pub fn page_size(limit: Option<i64>) -> i64 {
    limit.unwrap_or(100).clamp(1, 1000)
}

fn json_opt<T: serde::Serialize>(v: Option<&T>) -> anyhow::Result<Option<String>> {
    Ok(v.map(serde_json::to_string).transpose()?)
}

fn groups_at(r: &AnyRow, i: usize) -> anyhow::Result<Vec<String>> {
    Ok(r.try_get::<Option<String>, _>(i)?.map(|s| serde_json::from_str(&s)).transpose()?.unwrap_or_default())
}

fn team_from_row(r: &AnyRow) -> anyhow::Result<TeamRecord> {
    Ok(TeamRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        models: r.try_get::<Option<String>, _>(2)?.map(|s| serde_json::from_str(&s)).transpose()?,
        metadata: r.try_get::<Option<String>, _>(3)?.map(|s| serde_json::from_str(&s)).transpose()?,
        created_at: r.try_get(4)?,
        access_groups: groups_at(r, 5)?,
    })
}

fn user_from_row(r: &AnyRow) -> anyhow::Result<UserRecord> {
    let role: String = r.try_get(4)?;
    Ok(UserRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        email: r.try_get(2)?,
        team_id: r.try_get(3)?,
        // An unknown stored role grants the least.
        role: UserRole::parse(&role).unwrap_or(UserRole::Viewer),
        models: r.try_get::<Option<String>, _>(5)?.map(|s| serde_json::from_str(&s)).transpose()?,
        created_at: r.try_get(6)?,
        access_groups: groups_at(r, 7)?,
    })
}

const TEAM_COLUMNS: &str = "id, name, models, metadata, created_at, access_groups";
const USER_COLUMNS: &str = "id, name, email, team_id, role, models, created_at, access_groups";

impl Store {
    pub async fn teams(&self) -> anyhow::Result<Vec<TeamRecord>> {
        let rows = sqlx::query(&format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY created_at, id")).fetch_all(&self.pool).await?;
        rows.iter().map(team_from_row).collect()
    }

    pub async fn team(&self, id: &str) -> anyhow::Result<Option<TeamRecord>> {
        let row = sqlx::query(&format!("SELECT {TEAM_COLUMNS} FROM teams WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(team_from_row).transpose()
    }

    /// Inserts or replaces a team (by id).
    pub async fn put_team(&self, t: &TeamRecord, create: bool, audit: &Audit<'_>) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let sql = if create {
            "INSERT INTO teams (name, models, metadata, created_at, access_groups, id) VALUES ($1, $2, $3, $4, $5, $6)"
        } else {
            "UPDATE teams SET name = $1, models = $2, metadata = $3, created_at = $4, access_groups = $5 WHERE id = $6"
        };
        sqlx::query(sql)
            .bind(&t.name)
            .bind(json_opt(t.models.as_ref())?)
            .bind(json_opt(t.metadata.as_ref())?)
            .bind(t.created_at)
            .bind(serde_json::to_string(&t.access_groups)?)
            .bind(&t.id)
            .execute(&mut *tx)
            .await?;
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn users(&self) -> anyhow::Result<Vec<UserRecord>> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id")).fetch_all(&self.pool).await?;
        rows.iter().map(user_from_row).collect()
    }

    pub async fn user(&self, id: &str) -> anyhow::Result<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Inserts or replaces a user (by id).
    pub async fn put_user(&self, u: &UserRecord, create: bool, audit: &Audit<'_>) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let sql = if create {
            "INSERT INTO users (name, email, team_id, role, models, created_at, access_groups, id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        } else {
            "UPDATE users SET name = $1, email = $2, team_id = $3, role = $4, models = $5, created_at = $6, access_groups = $7 WHERE id = $8"
        };
        sqlx::query(sql)
            .bind(&u.name)
            .bind(u.email.as_deref())
            .bind(u.team_id.as_deref())
            .bind(u.role.as_str())
            .bind(json_opt(u.models.as_ref())?)
            .bind(u.created_at)
            .bind(serde_json::to_string(&u.access_groups)?)
            .bind(&u.id)
            .execute(&mut *tx)
            .await?;
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keys matching `q`, oldest first (by id within a second), one page.
    pub async fn list_keys(&self, q: &KeyQuery) -> anyhow::Result<Vec<KeyRecord>> {
        let mut sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let mut bind = |sql: &mut String, clause: &str, v: &str| {
            binds.push(v.to_owned());
            sql.push_str(&clause.replace('?', &format!("${}", binds.len())));
        };
        if let Some(t) = &q.team_id {
            bind(&mut sql, " AND team_id = ?", t);
        }
        if let Some(u) = &q.user_id {
            bind(&mut sql, " AND user_id = ?", u);
        }
        if let Some(after) = &q.after_id {
            bind(&mut sql, " AND id > ?", after);
        }
        if q.include_revoked == Some(false) {
            sql.push_str(" AND revoked_at IS NULL");
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", page_size(q.limit)));
        let mut query = sqlx::query(&sql);
        for b in &binds {
            query = query.bind(b);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let keys = rows.iter().map(key_from_row).collect::<anyhow::Result<Vec<_>>>()?;
        // Tags are a JSON list: filtered here, exactly (no LIKE on user text).
        Ok(match &q.tag {
            Some(tag) => keys.into_iter().filter(|k| k.tags.iter().any(|t| t == tag)).collect(),
            None => keys,
        })
    }

    /// Replaces a key row, provided its secret digest is still `expected_digest` (a concurrent
    /// rotation makes this one fail instead of losing either). False when nothing matched.
    pub async fn update_key(&self, k: &KeyRecord, expected_digest: &str, audit: &Audit<'_>) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Every column but the id, from the same binds as an insert; `$20` the digest expected.
        let set = KEY_COLUMNS.split(',').map(str::trim).enumerate().skip(1).map(|(i, c)| format!("{c} = ${}", i + 1)).collect::<Vec<_>>().join(", ");
        let sql = format!("UPDATE api_keys SET {set} WHERE id = $1 AND digest = ${}", KEY_COLUMN_COUNT + 1);
        let done = bind_key(sqlx::query(&sql), k)?
            .bind(expected_digest)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Where each credential row came from (`file` or `api`).
    pub async fn credential_sources(&self) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
        let rows = sqlx::query("SELECT name, source FROM credentials").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Creates (`create`) or replaces an API-managed credential; false when the row to replace is
    /// not there.
    pub async fn put_credential(&self, name: &str, spec: &crate::model::CredentialRef, create: bool, audit: &Audit<'_>) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let json = serde_json::to_string(spec)?;
        let done = if create {
            sqlx::query("INSERT INTO credentials (name, spec, source) VALUES ($1, $2, 'api')").bind(name).bind(&json).execute(&mut *tx).await?
        } else {
            sqlx::query("UPDATE credentials SET spec = $1 WHERE name = $2 AND source = 'api'").bind(&json).bind(name).execute(&mut *tx).await?
        };
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn delete_credential(&self, name: &str, audit: &Audit<'_>) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM credentials WHERE name = $1 AND source = 'api'").bind(name).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Where each model row came from (`file` or `api`).
    pub async fn model_sources(&self) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
        let rows = sqlx::query("SELECT name, source FROM models").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Creates (after every other model), replaces or deletes (`spec: None`) an API-managed model.
    pub async fn put_model(&self, name: &str, spec: Option<&crate::model::ModelSpec>, create: bool, now: i64, audit: &Audit<'_>) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = match (spec, create) {
            (Some(spec), true) => {
                let next: i64 = sqlx::query("SELECT COALESCE(MAX(position), -1) + 1 FROM models").fetch_one(&mut *tx).await?.try_get(0)?;
                sqlx::query("INSERT INTO models (name, position, spec, created_at, source) VALUES ($1, $2, $3, $4, 'api')")
                    .bind(name)
                    .bind(next)
                    .bind(serde_json::to_string(spec)?)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
            }
            (Some(spec), false) => {
                sqlx::query("UPDATE models SET spec = $1 WHERE name = $2 AND source = 'api'")
                    .bind(serde_json::to_string(spec)?)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
            }
            (None, _) => sqlx::query("DELETE FROM models WHERE name = $1 AND source = 'api'").bind(name).execute(&mut *tx).await?,
        };
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn access_groups(&self) -> anyhow::Result<Vec<AccessGroup>> {
        let rows = sqlx::query("SELECT name, models, created_at FROM access_groups ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(AccessGroup { name: r.try_get(0)?, models: serde_json::from_str(&r.try_get::<String, _>(1)?)?, created_at: r.try_get(2)? }))
            .collect()
    }

    /// Creates, replaces (`create: false`) or, with `delete`, removes an access group.
    pub async fn put_access_group(&self, g: &AccessGroup, create: bool, delete: bool, audit: &Audit<'_>) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = if delete {
            sqlx::query("DELETE FROM access_groups WHERE name = $1").bind(&g.name).execute(&mut *tx).await?
        } else if create {
            sqlx::query("INSERT INTO access_groups (models, created_at, name) VALUES ($1, $2, $3)")
                .bind(serde_json::to_string(&g.models)?)
                .bind(g.created_at)
                .bind(&g.name)
                .execute(&mut *tx)
                .await?
        } else {
            sqlx::query("UPDATE access_groups SET models = $1 WHERE name = $2")
                .bind(serde_json::to_string(&g.models)?)
                .bind(&g.name)
                .execute(&mut *tx)
                .await?
        };
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn audit_log(&self, q: &AuditQuery) -> anyhow::Result<Vec<AuditEntry>> {
        let mut sql = "SELECT id, at, actor, action, target, team_id, source, before_state, after_state FROM audit_log WHERE 1 = 1".to_owned();
        let mut text: Vec<String> = Vec::new();
        let mut nums: Vec<i64> = Vec::new();
        let mut n = 0usize;
        let mut push = |sql: &mut String, clause: &str| {
            n += 1;
            sql.push_str(&clause.replace('?', &format!("${n}")));
        };
        for (clause, v) in [(" AND actor = ?", &q.actor), (" AND action = ?", &q.action), (" AND target = ?", &q.target), (" AND team_id = ?", &q.team_id)] {
            if let Some(v) = v {
                push(&mut sql, clause);
                text.push(v.clone());
            }
        }
        for (clause, v) in [(" AND at >= ?", q.since), (" AND at < ?", q.until), (" AND id < ?", q.before_id)] {
            if let Some(v) = v {
                push(&mut sql, clause);
                nums.push(v);
            }
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", page_size(q.limit)));
        let mut query = sqlx::query(&sql);
        for t in &text {
            query = query.bind(t);
        }
        for v in &nums {
            query = query.bind(*v);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let json = |r: &AnyRow, i: usize| -> anyhow::Result<Option<serde_json::Value>> {
            Ok(r.try_get::<Option<String>, _>(i)?.map(|s| serde_json::from_str(&s)).transpose()?)
        };
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    team_id: r.try_get(5)?,
                    source: r.try_get(6)?,
                    before: json(r, 7)?,
                    after: json(r, 8)?,
                })
            })
            .collect()
    }
}
