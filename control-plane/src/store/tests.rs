//! Store tests against real SQLite (temp file) and real PostgreSQL (a database created for the
//! test and dropped after; skipped only if no server answers at 127.0.0.1:5432 and
//! TOLLGATE_REQUIRE_POSTGRES is unset).

use super::*;
use crate::model::{TeamRecord, UserRecord, UserRole};
use crate::model::{resolve, DeploymentSpec, Provider};
use tollgate_contract::keys::Role;

fn key(id: &str, role: Role) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        name: format!("name {id}"),
        digest: tollgate_contract::keys::digest_hex(id),
        role,
        models: Some(vec!["m".into()]),
        created_at: 10,
        ..Default::default()
    }
}

fn audit<'a>(action: &'a str, target: &'a str) -> Audit<'a> {
    Audit { at: 1, actor: "a", action, target, ..Default::default() }
}

/// The quota authority's grants: never more than the limit in all, even from concurrent
/// callers (PostgreSQL's row lock; SQLite's one writer); a new window starts from zero and
/// drops the rows of windows before the current one.
fn ask(window: u64, want: u64, need: u64, returned: u64) -> tollgate_contract::quota_lease::Ask {
    tollgate_contract::quota_lease::Ask { quota: "quota_g".into(), window, want, need, least: 0, returned }
}

async fn exercise_grants(store: &Store) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut got = 0;
                let envoy = format!("envoy-{}", i % 4);
                for _ in 0..40 {
                    got += store.grant_quota(&ask(5, 7, u64::from(i % 2 == 0), 0), &envoy, 5, 600, 2, 100).await.unwrap().0;
                }
                got
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 600, "every unit granted once");
    assert_eq!(store.quota_granted("quota_g", 5).await.unwrap(), 600);
    let mut held = 0;
    for i in 0..4 {
        held += store.quota_held("quota_g", 5, &format!("envoy-{i}")).await.unwrap();
    }
    assert_eq!(held, 600, "what each Envoy holds adds up to what was granted");
    let e0 = store.quota_held("quota_g", 5, "envoy-0").await.unwrap();
    assert!(e0 >= 40, "{e0}");
    assert_eq!(store.grant_quota(&ask(5, 7, 1, 0), "envoy-0", 5, 600, 2, 100).await.unwrap(), (0, 0, 0));
    assert_eq!(store.grant_quota(&ask(5, 0, 0, 40), "envoy-0", 5, 600, 2, 100).await.unwrap(), (0, 40, 0), "a return is taken back");
    assert_eq!(store.quota_held("quota_g", 5, "envoy-0").await.unwrap(), e0 - 40);
    assert_eq!(store.grant_quota(&ask(5, 7, 0, 0), "envoy-0", 5, 600, 2, 100).await.unwrap(), (7, 33, 0));
    assert_eq!(store.quota_granted("quota_g", 5).await.unwrap(), 567);
    // An Envoy cannot give back what it does not hold: one that was never granted anything, and
    // one that says it gives back more than it holds, make no room.
    assert_eq!(store.grant_quota(&ask(5, 0, 0, 50), "envoy-stranger", 5, 600, 2, 100).await.unwrap(), (0, 33, 50));
    let e1 = store.quota_held("quota_g", 5, "envoy-1").await.unwrap();
    assert_eq!(store.grant_quota(&ask(5, 0, 0, e1 + 100), "envoy-1", 5, 600, 2, 100).await.unwrap(), (0, 33 + e1, 100));
    assert_eq!(store.quota_held("quota_g", 5, "envoy-1").await.unwrap(), 0);
    assert_eq!(store.quota_granted("quota_g", 5).await.unwrap(), 567 - e1);
    assert_eq!(store.grant_quota(&ask(6, 7, 0, 0), "envoy-0", 5, 600, 2, 100).await.unwrap(), (7, 593, 0), "the next window, ahead");
    assert_eq!(store.quota_granted("quota_g", 5).await.unwrap(), 567 - e1, "the current window's row is kept");
    assert_eq!(store.grant_quota(&ask(7, 7, 0, 0), "envoy-0", 7, 600, 2, 100).await.unwrap(), (7, 593, 0));
    assert_eq!(store.quota_granted("quota_g", 5).await.unwrap(), 0, "windows before the current one are dropped");
    assert_eq!(store.quota_held("quota_g", 5, "envoy-0").await.unwrap(), 0, "and what the Envoys held of them");
    assert_eq!(store.quota_granted("quota_g", 7).await.unwrap(), 7);
    assert_eq!(store.touch_quota_envoy("envoy-a", 100, 50).await.unwrap(), 1);
    assert_eq!(store.touch_quota_envoy("envoy-b", 110, 50).await.unwrap(), 2);
    assert_eq!(store.touch_quota_envoy("envoy-a", 200, 150).await.unwrap(), 1, "envoy-b has not asked lately");
}

async fn exercise(store: &Store) {
    exercise_grants(store).await;
    let mut creds = BTreeMap::new();
    creds.insert("c1".to_owned(), CredentialRef { api_key_env: Some("TG_TEST_SET".into()), ..Default::default() });
    creds.insert("c2".to_owned(), CredentialRef { api_key_env: Some("TG_TEST_UNSET".into()), ..Default::default() });
    let dep = |c: Option<&str>| DeploymentSpec {
        provider: Provider::Openai,
        base_url: Some("http://x/v1".into()),
        model: None,
        credential: c.map(str::to_owned),
        weight: 1,
        priority: 0,
        region: None,
        api_version: None,
        payload: None,
        prompt_template: None,
        responses_api: false,
    };
    let models = vec![
        ModelSpec { name: "zeta".into(), deployments: vec![dep(Some("c1"))] },
        ModelSpec { name: "alpha".into(), deployments: vec![dep(Some("c2"))] },
        ModelSpec { name: "mixed".into(), deployments: vec![dep(Some("c2")), dep(None)] },
    ];
    store.replace_config(&Settings::default(), &creds, &models, 100).await.unwrap();
    store.replace_config(&Settings::default(), &creds, &models, 200).await.unwrap();
    let env = |name: &str| (name == "TG_TEST_SET").then(|| "v".to_owned());
    let rows = store.load().await.unwrap();
    // declaration order kept, every row as written
    assert_eq!(rows.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), vec!["zeta", "alpha", "mixed"]);
    assert_eq!(rows.models[2].spec.as_ref().unwrap(), &models[2]);
    assert_eq!(rows.models[0].created, 100, "creation time survives a reload");
    // a model whose only credential is unset is not served (the rule is the model's, not the store's)
    let m = resolve(&rows, &env, &[]).model;
    assert_eq!(m.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), vec!["zeta", "mixed"]);
    assert_eq!(m.models[1].deployments.len(), 1);
    // a row that does not parse is that row's problem only
    store.execute_for_tests("UPDATE models SET spec = '{\"name\": \"alpha\", \"deployments\": [{\"provider\": \"vertex\"}]}' WHERE name = 'alpha'").await.unwrap();
    store.execute_for_tests("UPDATE credentials SET spec = 'not json' WHERE name = 'c2'").await.unwrap();
    let rows = store.load().await.unwrap();
    assert!(rows.models[1].spec.as_ref().unwrap_err().contains("vertex"));
    assert!(rows.credentials["c2"].is_err());
    assert_eq!(store.credentials().await.unwrap().keys().collect::<Vec<_>>(), vec!["c1"]);
    assert_eq!(resolve(&rows, &env, &[]).model.models.len(), 2);

    store.insert_key(&key("a", Role::Admin), &audit("key.create", "a")).await.unwrap();
    store.insert_key(&key("b", Role::User), &audit("key.create", "b")).await.unwrap();
    assert!(store.insert_key(&key("b", Role::User), &audit("key.create", "b")).await.is_err(), "duplicate id");
    assert_eq!(store.count_admin_keys().await.unwrap(), 1);
    let found = store.key_by_digest(&tollgate_contract::keys::digest_hex("b"), 0).await.unwrap().unwrap();
    assert_eq!(found, key("b", Role::User));
    assert!(store.revoke_key("b", 50, &audit("key.revoke", "b")).await.unwrap());
    assert!(!store.revoke_key("b", 51, &audit("key.revoke", "b")).await.unwrap(), "already revoked");
    assert!(!store.revoke_key("nope", 51, &audit("key.revoke", "nope")).await.unwrap());
    assert_eq!(store.keys(false).await.unwrap().len(), 1);
    let all = store.keys(true).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all.iter().find(|k| k.id == "b").unwrap().revoked_at, Some(50));
    assert_eq!(store.changed_keys(None).await.unwrap().0.len(), 1, "revoked keys are not sent to the data plane");

    // Each write above has its audit row (the failed duplicate and the no-op revocations none).
    let log = store.audit_log(&AuditQuery::default()).await.unwrap();
    assert_eq!(log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), vec!["key.revoke", "key.create", "key.create"]);
    let only_b = store.audit_log(&AuditQuery { target: Some("b".into()), limit: Some(1), ..Default::default() }).await.unwrap();
    assert_eq!(only_b.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), vec!["key.revoke"]);
    let older = store.audit_log(&AuditQuery { before_id: Some(only_b[0].id), ..Default::default() }).await.unwrap();
    assert_eq!(older.len(), 2);
    // Append-only, in the database itself.
    let err = store.execute_for_tests("UPDATE audit_log SET actor = 'someone else'").await.unwrap_err();
    assert!(format!("{err:#}").contains("append-only"), "{err:#}");
    let err = store.execute_for_tests("DELETE FROM audit_log").await.unwrap_err();
    assert!(format!("{err:#}").contains("append-only"), "{err:#}");
    assert_eq!(store.audit_log(&AuditQuery::default()).await.unwrap().len(), 3);

    // Teams, users, key owners, rotation: stored byte-exact (SQL and script text is data).
    let hostile = "x'); DROP TABLE api_keys;-- <script>{{7*7}}";
    let team = TeamRecord { id: "t1".into(), name: hostile.into(), models: Some(vec!["m".into()]), metadata: Some(serde_json::json!({"k": hostile})), created_at: 5, access_groups: vec!["g".into()] };
    store.put_team(&team, true, &Audit { team_id: Some("t1"), ..audit("team.create", "t1") }).await.unwrap();
    assert_eq!(store.team("t1").await.unwrap().unwrap(), team);
    let user = UserRecord { id: "u1".into(), name: hostile.into(), email: Some("a@b".into()), team_id: Some("t1".into()), role: UserRole::TeamAdmin, models: None, created_at: 6, access_groups: vec![] };
    store.put_user(&user, true, &audit("user.create", "u1")).await.unwrap();
    assert_eq!(store.users().await.unwrap(), vec![user.clone()]);
    let owned = KeyRecord { user_id: Some("u1".into()), team_id: Some("t1".into()), tags: vec![hostile.into()], ..key("c", Role::User) };
    store.insert_key(&owned, &audit("key.create", "c")).await.unwrap();
    let q = |team: &str| KeyQuery { team_id: Some(team.into()), ..Default::default() };
    assert_eq!(store.list_keys(&q("t1")).await.unwrap(), vec![owned.clone()]);
    assert!(store.list_keys(&q("t2")).await.unwrap().is_empty());
    let tagged = store.list_keys(&KeyQuery { tag: Some(hostile.into()), ..Default::default() }).await.unwrap();
    assert_eq!(tagged.len(), 1);
    let rotated = KeyRecord { digest: "new".into(), previous_digest: Some(owned.digest.clone()), previous_valid_until: Some(100), rotated_at: Some(40), ..owned.clone() };
    assert!(store.update_key(&rotated, &owned.digest, &audit("key.rotate", "c")).await.unwrap());
    assert!(!store.update_key(&rotated, &owned.digest, &audit("key.rotate", "c")).await.unwrap(), "a stale rotation loses");
    assert_eq!(store.key_by_digest(&owned.digest, 99).await.unwrap().unwrap().id, "c", "old secret within its grace");
    assert!(store.key_by_digest(&owned.digest, 100).await.unwrap().is_none(), "old secret after its grace");
    assert_eq!(store.key_by_digest("new", 1000).await.unwrap().unwrap(), rotated);
    let group = crate::model::AccessGroup { name: "g".into(), models: vec!["claude-*".into()], created_at: 7 };
    assert!(store.put_access_group(&group, true, false, &audit("access_group.create", "g")).await.unwrap());
    assert_eq!(store.access_groups().await.unwrap(), vec![group.clone()]);
    let rows = store.load().await.unwrap();
    assert_eq!((rows.teams.len(), rows.users.len(), rows.groups.len()), (1, 1, 1));
    ledger(store).await;
    assert!(store.put_access_group(&group, false, true, &audit("access_group.delete", "g")).await.unwrap());
    assert!(store.access_groups().await.unwrap().is_empty());
    key_changes(store).await;
}

/// Migration 9's change stamps: a change is read back alone, revocations included, and the
/// first load is every key that is not revoked.
async fn key_changes(store: &Store) {
    let ids = |keys: &[KeyRecord]| {
        let mut v: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
        v.sort();
        v
    };
    let (active, s0) = store.changed_keys(None).await.unwrap();
    assert_eq!(ids(&active), vec!["a", "c"], "the first load: every key not revoked");
    assert!(s0 > 0);
    assert_eq!(store.changed_keys(Some(s0)).await.unwrap(), (vec![], s0), "nothing changed since");
    store.insert_key(&key("d", Role::User), &audit("key.create", "d")).await.unwrap();
    let (changed, s1) = store.changed_keys(Some(s0)).await.unwrap();
    assert_eq!((ids(&changed), s1 > s0), (vec!["d".to_owned()], true));
    assert!(store.revoke_key("d", 60, &audit("key.revoke", "d")).await.unwrap());
    let (changed, s2) = store.changed_keys(Some(s1)).await.unwrap();
    assert_eq!((ids(&changed), changed[0].revoked_at, s2 > s1), (vec!["d".to_owned()], Some(60), true));
    // a bulk insert stamps every row; an update of another row stamps it after them
    let (e, f) = (key("e", Role::User), key("f", Role::User));
    store.insert_keys(&[(&e, &audit("key.create", "e")), (&f, &audit("key.create", "f"))]).await.unwrap();
    let blocked = KeyRecord { blocked: true, ..store.key("a").await.unwrap().unwrap() };
    assert!(store.update_key(&blocked, &blocked.digest, &audit("key.block", "a")).await.unwrap());
    let (changed, s3) = store.changed_keys(Some(s2)).await.unwrap();
    assert_eq!(changed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), vec!["e", "f", "a"]);
    assert!(changed[2].blocked && s3 > s2);
    let (_, s4) = store.changed_keys(Some(s3 - 1)).await.unwrap();
    assert_eq!(s4, s3);
}

#[tokio::test]
async fn sqlite_store() {
    let dir = std::env::temp_dir().join(format!("tollgate-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
    let store = Store::connect(&url).await.unwrap();
    exercise(&store).await;
    store.close().await;
    // migrations are idempotent on restart
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.keys(true).await.unwrap().len(), 6);
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn postgres_store() {
    let admin_url = std::env::var("TOLLGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    sqlx::any::install_default_drivers();
    let admin = match sqlx::AnyPool::connect(&admin_url).await {
        Ok(p) => p,
        Err(e) if std::env::var("TOLLGATE_REQUIRE_POSTGRES").is_err() => {
            eprintln!("skipping: PostgreSQL not reachable: {e}");
            return;
        }
        Err(e) => panic!("PostgreSQL required but not reachable: {e}"),
    };
    let db = format!("tollgate_test_{}_{}", std::process::id(), rand::random::<u32>());
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&admin).await.unwrap();
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("bad url"),
    };
    let result = async {
        let store = Store::connect(&url).await.unwrap();
        exercise(&store).await;
        store.close().await;
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(store.keys(true).await.unwrap().len(), 6);
        store.close().await;
    };
    result.await;
    sqlx::query(&format!("DROP DATABASE {db}")).execute(&admin).await.unwrap();
}

#[test]
fn redacts_database_passwords() {
    assert_eq!(redact_url("postgres://u:pw@h:5432/db"), "postgres://<credentials>@h:5432/db");
    assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
}

/// The ledger: a batch stored once however often it is sent, aggregates equal to the rows.
async fn ledger(store: &Store) {
    use crate::metering::{price, prices, Owners};
    use tollgate_contract::usage::UsageRecord;
    let cat = prices::Catalogue::new(&[], &prices::default_entries());
    let mut owners = std::collections::HashMap::new();
    owners.insert("c".to_owned(), Owners { user_id: Some("u1".into()), team_id: Some("t1".into()) });
    let rec = |i: u32, attempt: u32, model: &str| UsageRecord {
        request_id: format!("req-{i}"),
        attempt,
        at_ms: 1_733_270_400_000 + u64::from(i),
        key_id: "c".into(),
        model: "gpt".into(),
        provider: "openai".into(),
        provider_model: model.into(),
        status: 200,
        input_tokens: 1000,
        output_tokens: 500,
        ..Default::default()
    };
    let mut batch: Vec<UsageRecord> = (0..1200).map(|i| rec(i, 0, "gpt-4o-mini")).collect();
    batch.push(rec(0, 1, "gpt-4o-mini")); // a retry of request 0
    batch.push(rec(5000, 0, "unpriced-model"));
    let rows = price(batch.clone(), &cat, &owners);
    assert_eq!(store.ingest(&rows).await.unwrap(), 1202);
    assert_eq!(store.ingest(&rows).await.unwrap(), 0, "sent twice, stored once");
    assert_eq!(store.ingest(&rows[..10]).await.unwrap(), 0);
    assert_eq!(store.usage_count().await.unwrap(), 1202);
    let q = |scope: &str, id: Option<&str>| crate::store::SpendQuery { scope: scope.into(), scope_id: id.map(str::to_owned), ..Default::default() };
    let team = store.spend(&q("team", Some("t1"))).await.unwrap();
    assert_eq!(team.len(), 1);
    assert_eq!((team[0].day.as_str(), team[0].requests, team[0].unpriced), ("2024-12-04", 1202, 1));
    assert_eq!(team[0].input_tokens, 1202 * 1000);
    // 1201 priced records × 450,000 nano-USD
    assert_eq!(team[0].cost_usd, super::ledger::usd(1201 * 450_000));
    let by_key = store.spend(&q("key", Some("c"))).await.unwrap();
    assert_eq!(by_key[0].cost_usd, team[0].cost_usd);
    assert!(store.spend(&q("team", Some("t2"))).await.unwrap().is_empty());
    let range = crate::store::SpendQuery { from: Some("2024-12-05".into()), ..q("model", None) };
    assert!(store.spend(&range).await.unwrap().is_empty());
    // Raw records: newest first, by key and request id.
    let raw = store.usage_records(&crate::store::UsageQuery { request_id: Some("req-0".into()), ..Default::default() }).await.unwrap();
    assert_eq!(raw.iter().map(|r| r.attempt).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!((raw[0].user_id.as_deref(), raw[0].cost_usd.as_deref()), (Some("u1"), Some("0.000450000")));
    // Retention: batches delete the raw rows older than the cutoff, the aggregates stay.
    let cutoff = 1_733_270_400_000 + 1000; // requests 0..999 (and 0's retry) are older
    assert_eq!(store.delete_usage_before(cutoff, 600).await.unwrap(), 600);
    assert_eq!(store.delete_usage_before(cutoff, 600).await.unwrap(), 401);
    assert_eq!(store.delete_usage_before(cutoff, 600).await.unwrap(), 0);
    assert_eq!(store.usage_count().await.unwrap(), 1202 - 1001);
    assert_eq!(store.spend(&q("team", Some("t1"))).await.unwrap()[0].requests, 1202, "aggregates kept");
    // A quota's use from the ledger (PostgreSQL sums BIGINTs as NUMERIC: read back as integers).
    let spec = |metric: &str| -> crate::store::QuotaSpec {
        serde_json::from_value(serde_json::json!({"metric": metric, "limit": 1, "key_id": "c"})).unwrap()
    };
    let left = 201; // records 1001..1200 and the unpriced one
    assert_eq!(store.quota_ledger_usage(&spec("cost_usd"), 0).await.unwrap(), (left - 1) * 450_000);
    assert_eq!(store.quota_ledger_usage(&spec("total_tokens"), 0).await.unwrap(), left * 1500);
    assert_eq!(store.quota_ledger_usage(&spec("output_tokens"), 0).await.unwrap(), left * 500);
    assert_eq!(store.quota_ledger_usage(&spec("requests"), 0).await.unwrap(), left);
}

/// Ingest throughput into PostgreSQL (issue 12: at least 20,000 records/s): 200,000 records in
/// batches of 5,000, each with 5 distinct keys over 3 days. Run with
/// `cargo test -p tollgate-control-plane --release ingest_throughput -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check: prints records per second"]
async fn ingest_throughput_postgres() {
    use crate::metering::{price, prices, Owners};
    use tollgate_contract::usage::UsageRecord;
    let admin_url = std::env::var("TOLLGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&admin_url).await.unwrap();
    let db = format!("tollgate_ingest_{}_{}", std::process::id(), rand::random::<u32>());
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&admin).await.unwrap();
    let url = format!("{}/{db}", admin_url.rsplit_once('/').unwrap().0);
    let store = Store::connect(&url).await.unwrap();
    let cat = prices::Catalogue::new(&[], &prices::default_entries());
    let owners: std::collections::HashMap<String, Owners> =
        (0..5).map(|k| (format!("key_{k}"), Owners { user_id: Some(format!("u{k}")), team_id: Some("t".into()) })).collect();
    let (total, per_batch) = (200_000u32, 5_000u32);
    let started = std::time::Instant::now();
    for b in 0..total / per_batch {
        let batch: Vec<UsageRecord> = (0..per_batch)
            .map(|i| {
                let n = b * per_batch + i;
                UsageRecord {
                    request_id: format!("req-{n:08}-0123456789abcdef"),
                    at_ms: 1_733_270_400_000 + u64::from(n % 3) * 86_400_000,
                    key_id: format!("key_{}", n % 5),
                    model: "gpt-4o-mini".into(),
                    provider: "openai".into(),
                    provider_model: "gpt-4o-mini-2024-07-18".into(),
                    status: 200,
                    input_tokens: 812,
                    output_tokens: 233,
                    latency_ms: 420,
                    ..Default::default()
                }
            })
            .collect();
        store.ingest(&price(batch, &cat, &owners)).await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let bytes: i64 = sqlx::query("SELECT pg_total_relation_size('usage_records')").fetch_one(&store.pool).await.unwrap().try_get(0).unwrap();
    println!(
        "{{\"ingest_records\": {total}, \"seconds\": {secs:.2}, \"ingest_records_per_s\": {:.0}, \"bytes_per_row_with_indexes\": {}}}",
        f64::from(total) / secs,
        bytes / i64::from(total)
    );
    assert_eq!(store.usage_count().await.unwrap(), i64::from(total));
    store.close().await;
    sqlx::query(&format!("DROP DATABASE {db}")).execute(&admin).await.unwrap();
}
