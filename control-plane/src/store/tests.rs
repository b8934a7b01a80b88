//! Store tests against real SQLite (temp file) and real PostgreSQL (a database created for the
//! test and dropped after; skipped only if no server answers at 127.0.0.1:5432 and
//! TOLLGATE_REQUIRE_POSTGRES is unset).

use super::*;
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
        expires_at: None,
        revoked_at: None,
    }
}

async fn exercise(store: &Store) {
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

    store.insert_key(&key("a", Role::Admin)).await.unwrap();
    store.insert_key(&key("b", Role::User)).await.unwrap();
    assert!(store.insert_key(&key("b", Role::User)).await.is_err(), "duplicate id");
    assert_eq!(store.count_admin_keys().await.unwrap(), 1);
    let found = store.key_by_digest(&tollgate_contract::keys::digest_hex("b")).await.unwrap().unwrap();
    assert_eq!(found, key("b", Role::User));
    assert!(store.revoke_key("b", 50).await.unwrap());
    assert!(!store.revoke_key("b", 51).await.unwrap(), "already revoked");
    assert!(!store.revoke_key("nope", 51).await.unwrap());
    assert_eq!(store.keys(false).await.unwrap().len(), 1);
    let all = store.keys(true).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all.iter().find(|k| k.id == "b").unwrap().revoked_at, Some(50));
    assert_eq!(store.load().await.unwrap().keys.len(), 1, "revoked keys are not sent to the data plane");

    store.audit(1, "a", "key.create", "b").await.unwrap();
    store.audit(2, "a", "key.revoke", "b").await.unwrap();
    let log = store.audit_log(10).await.unwrap();
    assert_eq!(log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), vec!["key.revoke", "key.create"]);
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
    assert_eq!(store.keys(true).await.unwrap().len(), 2);
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
        assert_eq!(store.keys(true).await.unwrap().len(), 2);
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
