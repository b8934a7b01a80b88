//! Schema migrations, applied in order at start, recorded in `schema_migrations`.
//! Each is plain SQL accepted by both SQLite and PostgreSQL, or marked `sqlite: ` or
//! `postgres: ` for one of them.

use sqlx::{AnyPool, Row};

const MIGRATIONS: &[(i64, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE settings (id BIGINT PRIMARY KEY, spec TEXT NOT NULL)",
        "CREATE TABLE credentials (name TEXT PRIMARY KEY, spec TEXT NOT NULL)",
        "CREATE TABLE models (name TEXT PRIMARY KEY, position BIGINT NOT NULL, spec TEXT NOT NULL, created_at BIGINT NOT NULL)",
        "CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, role TEXT NOT NULL, \
         models TEXT, created_at BIGINT NOT NULL, expires_at BIGINT, revoked_at BIGINT)",
        "CREATE TABLE audit_log (id BIGINT PRIMARY KEY GENERATED_ID, at BIGINT NOT NULL, actor TEXT NOT NULL, \
         action TEXT NOT NULL, target TEXT NOT NULL)",
    ],
), (
    2,
    &[
        // Governance (issue 11): teams, users with an admin-API role, key owners, blocking,
        // rotation with a grace period, and an audit trail with its source and before/after.
        "CREATE TABLE teams (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, models TEXT, metadata TEXT, \
         created_at BIGINT NOT NULL)",
        "CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE, team_id TEXT, \
         role TEXT NOT NULL, models TEXT, created_at BIGINT NOT NULL)",
        "ALTER TABLE api_keys ADD COLUMN user_id TEXT",
        "ALTER TABLE api_keys ADD COLUMN team_id TEXT",
        "ALTER TABLE api_keys ADD COLUMN tags TEXT",
        "ALTER TABLE api_keys ADD COLUMN metadata TEXT",
        "ALTER TABLE api_keys ADD COLUMN blocked BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE api_keys ADD COLUMN previous_digest TEXT",
        "ALTER TABLE api_keys ADD COLUMN previous_valid_until BIGINT",
        "ALTER TABLE api_keys ADD COLUMN rotated_at BIGINT",
        "CREATE INDEX api_keys_team ON api_keys (team_id)",
        "CREATE INDEX api_keys_previous_digest ON api_keys (previous_digest)",
        "CREATE INDEX users_team ON users (team_id)",
        "ALTER TABLE audit_log ADD COLUMN team_id TEXT",
        "ALTER TABLE audit_log ADD COLUMN source TEXT",
        "ALTER TABLE audit_log ADD COLUMN before_state TEXT",
        "ALTER TABLE audit_log ADD COLUMN after_state TEXT",
    ],
), (
    3,
    &[
        // Access groups: named model sets referenced by keys, users and teams.
        "CREATE TABLE access_groups (name TEXT PRIMARY KEY, models TEXT NOT NULL, created_at BIGINT NOT NULL)",
        "ALTER TABLE api_keys ADD COLUMN access_groups TEXT",
        "ALTER TABLE users ADD COLUMN access_groups TEXT",
        "ALTER TABLE teams ADD COLUMN access_groups TEXT",
    ],
), (
    4,
    &[
        // Credentials and models managed at runtime beside the config file's: a file load
        // replaces the file's rows only.
        "ALTER TABLE credentials ADD COLUMN source TEXT NOT NULL DEFAULT 'file'",
        "ALTER TABLE models ADD COLUMN source TEXT NOT NULL DEFAULT 'file'",
    ],
), (
    5,
    &[
        // The audit trail is append-only in the database itself: an UPDATE or DELETE of a row
        // fails, whoever runs it.
        "sqlite: CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
        "sqlite: CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
        "postgres: CREATE FUNCTION tollgate_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
        "postgres: CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log \
         FOR EACH ROW EXECUTE FUNCTION tollgate_audit_append_only()",
    ],
), (
    6,
    &[
        // Idempotent key rotation across replicas.
        "ALTER TABLE api_keys ADD COLUMN rotation_idempotency TEXT",
        "ALTER TABLE api_keys ADD COLUMN rotation_answer TEXT",
    ],
), (
    7,
    &[
        // Metering: one row per attempt (idempotent by request id and attempt), daily aggregates
        // per scope (key, user, team, model, provider), price overrides.
        "CREATE TABLE usage_records (request_id TEXT NOT NULL, attempt BIGINT NOT NULL, at_ms BIGINT NOT NULL, \
         key_id TEXT NOT NULL, user_id TEXT, team_id TEXT, model TEXT NOT NULL, provider TEXT NOT NULL, \
         provider_model TEXT NOT NULL, status BIGINT NOT NULL, stream BIGINT NOT NULL, input_tokens BIGINT NOT NULL, \
         output_tokens BIGINT NOT NULL, cache_read_tokens BIGINT NOT NULL, cache_write_tokens BIGINT NOT NULL, \
         estimated BIGINT NOT NULL, latency_ms BIGINT NOT NULL, ttft_ms BIGINT, cost_nanos BIGINT, price_version TEXT NOT NULL, \
         PRIMARY KEY (request_id, attempt))",
        "CREATE INDEX usage_records_at ON usage_records (at_ms)",
        "CREATE TABLE spend_daily (day TEXT NOT NULL, scope TEXT NOT NULL, scope_id TEXT NOT NULL, requests BIGINT NOT NULL, \
         input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL, cache_read_tokens BIGINT NOT NULL, \
         cache_write_tokens BIGINT NOT NULL, cost_nanos BIGINT NOT NULL, unpriced BIGINT NOT NULL, \
         PRIMARY KEY (day, scope, scope_id))",
        "CREATE TABLE prices (position BIGINT NOT NULL, entry TEXT NOT NULL, created_at BIGINT NOT NULL)",
    ],
), (
    8,
    &[
        // Quotas (issue 13): the spec as JSON.
        "CREATE TABLE quotas (id TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at BIGINT NOT NULL)",
    ],
), (
    9,
    &[
        // The data plane's key table is kept incrementally: every insert or update of a key row
        // stamps it with the next value of one counter, so a change re-reads only the rows
        // stamped since the last read. The counter is a row (not a sequence) so that writers
        // take it in commit order on PostgreSQL: a reader that has seen stamp n has seen every
        // stamp below n. Rows from before this migration keep 0 (read by the first full load).
        "CREATE TABLE key_changes (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL)",
        "INSERT INTO key_changes (id, seq) VALUES (1, 0)",
        "ALTER TABLE api_keys ADD COLUMN seq BIGINT NOT NULL DEFAULT 0",
        "CREATE INDEX api_keys_seq ON api_keys (seq)",
        "sqlite: CREATE TRIGGER api_keys_seq_insert AFTER INSERT ON api_keys BEGIN \
         UPDATE key_changes SET seq = seq + 1 WHERE id = 1; \
         UPDATE api_keys SET seq = (SELECT seq FROM key_changes WHERE id = 1) WHERE rowid = NEW.rowid; END",
        // (the trigger's own stamp changes seq, so it does not fire itself)
        "sqlite: CREATE TRIGGER api_keys_seq_update AFTER UPDATE ON api_keys WHEN NEW.seq = OLD.seq BEGIN \
         UPDATE key_changes SET seq = seq + 1 WHERE id = 1; \
         UPDATE api_keys SET seq = (SELECT seq FROM key_changes WHERE id = 1) WHERE rowid = NEW.rowid; END",
        "postgres: CREATE FUNCTION tollgate_api_keys_seq() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN UPDATE key_changes SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO NEW.seq; RETURN NEW; END $$",
        "postgres: CREATE TRIGGER api_keys_seq BEFORE INSERT OR UPDATE ON api_keys \
         FOR EACH ROW EXECUTE FUNCTION tollgate_api_keys_seq()",
    ],
), (
    10,
    &[
        // The quota authority (issue 13): what has been granted of each quota's window, and
        // the Envoys that asked lately (their number sets the fall-back shares).
        "CREATE TABLE quota_grants (quota_id TEXT NOT NULL, win BIGINT NOT NULL, granted BIGINT NOT NULL, \
         updated_at BIGINT NOT NULL, PRIMARY KEY (quota_id, win))",
        "CREATE TABLE quota_envoys (envoy TEXT PRIMARY KEY, seen_at BIGINT NOT NULL)",
    ],
), (
    11,
    &[
        // Quota threshold alerts sent: one per quota, window and threshold, whichever control
        // plane replica claims it first.
        "CREATE TABLE quota_alerts (quota_id TEXT NOT NULL, win BIGINT NOT NULL, threshold BIGINT NOT NULL, \
         at BIGINT NOT NULL, PRIMARY KEY (quota_id, win, threshold))",
    ],
), (
    12,
    &[
        // What each Envoy holds of a quota's window (granted, less what it gave back): an Envoy
        // cannot give back more than it was granted.
        "CREATE TABLE quota_leases (quota_id TEXT NOT NULL, win BIGINT NOT NULL, envoy TEXT NOT NULL, \
         held BIGINT NOT NULL, PRIMARY KEY (quota_id, win, envoy))",
    ],
)];

pub async fn run(pool: &AnyPool) -> anyhow::Result<()> {
    let backend = pool.connect_options().database_url.scheme().to_owned();
    let generated_id = if backend.starts_with("postgres") { "GENERATED BY DEFAULT AS IDENTITY" } else { "" };
    // SQLite: "INTEGER PRIMARY KEY" is the rowid alias; BIGINT PRIMARY KEY is not auto-increment.
    let sqlite = !backend.starts_with("postgres");
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .execute(pool)
        .await?;
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetch_one(pool).await?;
    let current: i64 = row.try_get(0)?;
    for (version, statements) in MIGRATIONS {
        if *version <= current {
            continue;
        }
        let mut tx = pool.begin().await?;
        for sql in *statements {
            // A statement for one backend only says so first.
            let sql = match (sql.strip_prefix("sqlite: "), sql.strip_prefix("postgres: ")) {
                (Some(s), _) if sqlite => s,
                (_, Some(s)) if !sqlite => s,
                (Some(_), _) | (_, Some(_)) => continue,
                _ => sql,
            };
            let mut sql = sql.replace("GENERATED_ID", generated_id);
            if sqlite {
                sql = sql.replace("id BIGINT PRIMARY KEY ", "id INTEGER PRIMARY KEY ");
            }
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(crate::clock::unix_now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, "database migration applied");
    }
    Ok(())
}
