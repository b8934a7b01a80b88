//! The publisher and the service over a real SQLite store: broken rows never block a change,
//! and the credential document is built, versioned and served from memory.

use std::sync::Mutex as StdMutex;

use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::google::protobuf::StringValue;
use prost::Message;
use tollgate_contract::config::GatewayConfigDoc;
use tollgate_contract::contract;

use super::*;
use crate::model::{AwsChainSpec, DeploymentSpec, ModelSpec, Provider, Settings};
use crate::authz::Actor;
use crate::service::{NewKey, Service};
use crate::xds::snapshot::ECDS_TYPE;

fn env() -> XdsEnv {
    XdsEnv::for_tests()
}

/// Secrets whose one environment variable (`PROVIDER_KEY`) the test sets and unsets.
#[derive(Default)]
struct Env(StdMutex<Option<String>>);

impl Secrets for Env {
    fn env(&self, name: &str) -> Option<String> {
        if name == "PROVIDER_KEY" {
            self.0.lock().unwrap().clone()
        } else {
            None
        }
    }
    fn aws_chain(&self, _: &str, _: &AwsChainSpec) -> Option<tollgate_contract::config::AwsCredential> {
        None
    }
}

struct TempStore {
    store: Store,
    dir: std::path::PathBuf,
}

impl TempStore {
    async fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tollgate-publisher-{name}-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::connect(&format!("sqlite://{}?mode=rwc", dir.join("t.db").display())).await.unwrap();
        Self { store, dir }
    }

    async fn close(self) {
        self.store.close().await;
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

fn demo_model() -> ModelSpec {
    let demo = DeploymentSpec {
        provider: Provider::Demo,
        base_url: None,
        model: None,
        credential: None,
        weight: 1,
        priority: 0,
        region: None,
        api_version: None,
        payload: None,
        prompt_template: None,
        responses_api: false,
    };
    ModelSpec { name: "tollgate-demo".into(), deployments: vec![demo] }
}

/// The gateway filter's configuration in the published snapshot.
/// The key table the publisher serves, as a data plane that had nothing would hold it.
fn key_table(publisher: &Publisher) -> tollgate_contract::keytable::Table {
    use tollgate_contract::keytable::{Manifest, Shard, Table, Update};
    let p = publisher.key_table().borrow().clone();
    let (mut table, mut have) = (Table::default(), Manifest::default());
    while let Some(update) = p.update_for(&have) {
        for bytes in Update::decode(&update).unwrap().shards {
            let (i, e, v) = Shard::peek(bytes).unwrap();
            table.replace(Shard::decode(bytes, i).unwrap());
            have.set(i, e, v);
        }
    }
    table
}

fn gateway_doc(snapshots: &watch::Receiver<Arc<Snapshot>>) -> GatewayConfigDoc {
    let snap = snapshots.borrow().clone();
    let any = &snap.get(ECDS_TYPE).unwrap().items[contract::ECDS_GATEWAY_FILTER];
    let tec = TypedExtensionConfig::decode(any.value.as_slice()).unwrap();
    let wasm = Wasm::decode(tec.typed_config.unwrap().value.as_slice()).unwrap();
    let cfg = wasm.config.unwrap().configuration.unwrap();
    serde_json::from_str(&StringValue::decode(cfg.value.as_slice()).unwrap().value).unwrap()
}

/// Rows the config file and the admin API refuse, written straight into the store.
const BROKEN_ROWS: &[&str] = &[
    r#"INSERT INTO models (name, position, spec, created_at) VALUES ('bad-url', 1,
       '{"name": "bad-url", "deployments": [{"provider": "openai", "base_url": "ftp://user:hunter2@x/v1"}]}', 1)"#,
    r#"INSERT INTO models (name, position, spec, created_at) VALUES ('tgi', 2,
       '{"name": "tgi", "deployments": [{"provider": "sagemaker", "region": "us-east-1", "model": "ep", "payload": "tgi"}]}', 1)"#,
    r#"INSERT INTO models (name, position, spec, created_at) VALUES ('future', 3,
       '{"name": "future", "deployments": [{"provider": "vertex"}]}', 1)"#,
];

#[tokio::test]
async fn a_broken_deployment_row_does_not_stop_a_key_revocation() {
    let t = TempStore::new("broken").await;
    t.store.replace_config(&Settings::default(), &Default::default(), &[demo_model()], 1).await.unwrap();
    for sql in BROKEN_ROWS {
        t.store.execute_for_tests(sql).await.unwrap();
    }
    let (publisher, snapshots) = Publisher::new(t.store.clone(), env(), Arc::new(Env::default()));
    let service = Service::new(t.store.clone(), publisher.clone());
    service.ensure_admin_key(Some("tg-admin-seed-for-the-test".into())).await.unwrap();
    let actor: Actor = service.authenticate_admin("tg-admin-seed-for-the-test").await.unwrap().unwrap();
    let key = service.create_key(&actor, NewKey { name: "victim".into(), ..Default::default() }).await.unwrap();
    assert_eq!(key_table(&publisher).authenticate(&key.key, 0).unwrap().id, key.view.id);

    let revoked = service.revoke_key(&actor, &key.view.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let doc = gateway_doc(&snapshots);
    let table = key_table(&publisher);
    assert!(table.authenticate(&key.key, 0).is_err(), "the revoked key is still in the key table");
    assert_eq!(table.authenticate("tg-admin-seed-for-the-test", 0).unwrap().id, actor.key_id);
    // the good model is served, the broken ones are not
    assert_eq!(doc.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), vec!["tollgate-demo"]);
    assert_eq!(doc.quota_hold_seconds, 600 + 60, "reservations outlive the longest request (the request timeout)");

    // the admin API says what is not served and why
    let models = service.list_models().await.unwrap();
    let shown = serde_json::to_value(&models).unwrap();
    assert_eq!(shown[0]["name"], "tollgate-demo");
    assert_eq!((shown[0]["served"].as_bool(), shown[0]["problems"].as_array().map(Vec::len)), (Some(true), Some(0)));
    assert_eq!(shown[1]["name"], "bad-url");
    assert_eq!(shown[1]["served"], false);
    assert_eq!(shown[1]["problems"][0]["deployment"], 0);
    assert_eq!(shown[1]["problems"][0]["reason"], "base_url must start with http:// or https://");
    assert_eq!(shown[1]["problems"][1]["deployment"], serde_json::Value::Null);
    assert!(shown[2]["problems"][0]["reason"].as_str().unwrap().contains("needs prompt_template"));
    assert!(shown[3]["problems"][0]["reason"].as_str().unwrap().contains("does not parse"));
    assert_eq!(shown[3]["deployments"], serde_json::json!([]));
    // (the stored row is shown as written; the reasons never repeat it)
    assert!(!models.iter().flat_map(|m| &m.problems).any(|p| p.reason.contains("hunter2")));
    t.close().await;
}

/// Until the next snapshot is published (marks it seen).
async fn wait(rx: &mut watch::Receiver<Arc<Snapshot>>) {
    tokio::time::timeout(Duration::from_secs(20), rx.changed()).await.unwrap().unwrap();
    let _ = rx.borrow_and_update();
}

#[tokio::test]
async fn the_credential_document_follows_the_secrets_and_is_served_from_memory() {
    let t = TempStore::new("credentials").await;
    let mut refs = BTreeMap::new();
    refs.insert("c".to_owned(), CredentialRef { api_key_env: Some("PROVIDER_KEY".into()), ..Default::default() });
    let mut gpt = demo_model();
    gpt.name = "gpt".into();
    gpt.deployments[0].provider = Provider::Openai;
    gpt.deployments[0].base_url = Some("http://provider.example:9/v1".into());
    gpt.deployments[0].credential = Some("c".into());
    t.store.replace_config(&Settings::default(), &refs, &[demo_model(), gpt], 1).await.unwrap();
    let secrets = Arc::new(Env::default());
    let (publisher, mut snapshots) = Publisher::new(t.store.clone(), env(), secrets.clone());
    let (announce, changes) = watch::channel(());
    let task = publisher.clone().spawn_refresher(Duration::from_secs(3600), changes);
    wait(&mut snapshots).await;
    let empty = publisher.credentials();
    let parsed: CredentialsDoc = serde_json::from_slice(&empty.body).unwrap();
    assert_eq!(parsed.version, empty.version);
    assert!(parsed.credentials.is_empty());
    assert_eq!(gateway_doc(&snapshots).models.len(), 1, "gpt has no credential yet");

    // the secret appears; the announcement alone (the timer is an hour) republishes both
    *secrets.0.lock().unwrap() = Some("sk-test-value".into());
    announce.send_replace(());
    wait(&mut snapshots).await;
    assert_eq!(gateway_doc(&snapshots).models.len(), 2);
    let doc = publisher.credentials();
    assert_ne!(doc.version, empty.version);
    let parsed: CredentialsDoc = serde_json::from_slice(&doc.body).unwrap();
    assert_eq!((parsed.version.as_str(), parsed.credentials["c"].api_key.as_deref()), (doc.version.as_str(), Some("sk-test-value")));
    // the same secrets give the same version (one scheme: the content's hash)
    assert_eq!(credentials_document(&refs, &*secrets).version, doc.version);

    // served on the internal listener only, from memory, with the version as ETag
    let token = "tg-dp-token-for-the-test-0123456789".to_owned();
    let service = Service::new(t.store.clone(), publisher.clone());
    let closing = watch::channel(false).1;
    let state = crate::internal::InternalState { publisher: publisher.clone(), service, data_plane_token: Arc::new(token.clone()), closing, authority: crate::authority::Authority::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, crate::internal::router(state)).await });
    let client = reqwest::Client::new();
    let url = format!("{base}{}", contract::CREDENTIALS_PATH);
    let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", doc.version));
    assert_eq!(resp.bytes().await.unwrap(), doc.body);
    let again = client.get(&url).bearer_auth(&token).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    for bad in ["", "tg-dp-token-for-the-test-012345678X"] {
        let refused = client.get(&url).bearer_auth(bad).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        assert!(!refused.text().await.unwrap().contains("sk-test-value"));
    }
    for path in ["/admin/v1/keys", "/healthz", "/demo/v1/chat/completions"] {
        assert_eq!(client.get(format!("{base}{path}")).bearer_auth(&token).send().await.unwrap().status(), 404, "{path}");
    }
    server.abort();
    task.abort();
    t.close().await;
}

#[tokio::test]
async fn a_kek_rotation_re_encrypts_stored_secrets_and_the_old_kek_can_go() {
    use crate::kek::{Kek, Keyring};
    use crate::model::{CredentialRef, SecretMaterial};
    let t = TempStore::new("kek").await;
    let (publisher, _snapshots) = Publisher::new(t.store.clone(), env(), Arc::new(Env::default()));
    let service = Service::new(t.store.clone(), publisher);
    let k = |b: u8| Kek::parse(&hex::encode([b; 32])).unwrap();
    let material = SecretMaterial { api_key: Some("sk-stored-secret".into()), ..Default::default() };
    let old = Keyring { current: Some(k(1)), previous: None };
    let spec = CredentialRef { stored: Some(old.encrypt("c", &material).unwrap()), ..Default::default() };
    let audit = crate::store::Audit { actor: "test", action: "credential.create", target: "c", ..Default::default() };
    assert!(t.store.put_credential("c", &spec, true, &audit).await.unwrap());
    // Without the old KEK the secret does not decrypt, and nothing is rewritten.
    assert_eq!(service.reencrypt_credentials(&Keyring { current: Some(k(2)), previous: None }).await.unwrap(), 0);
    let rotating = Keyring { current: Some(k(2)), previous: Some(k(1)) };
    assert_eq!(service.reencrypt_credentials(&rotating).await.unwrap(), 1);
    assert_eq!(service.reencrypt_credentials(&rotating).await.unwrap(), 0, "idempotent");
    let stored = t.store.credentials().await.unwrap()["c"].stored.clone().unwrap();
    let new_only = Keyring { current: Some(k(2)), previous: None };
    assert_eq!(new_only.decrypt("c", &stored), Some(material));
    assert_eq!(old.decrypt("c", &stored), None);
    let log = t.store.audit_log(&Default::default()).await.unwrap();
    assert_eq!(log[0].action, "credential.reencrypt");
    t.close().await;
}

/// `POST /internal/v1/keys`: every shard for an empty manifest, 304 when nothing differs, a held
/// poll answered by the next change with only its shard, and ended at once by a shutdown.
#[tokio::test]
async fn the_key_poll_answers_changes_and_ends_on_shutdown() {
    use tollgate_contract::keytable::{Manifest, Shard, Update};
    let t = TempStore::new("keypoll").await;
    let (publisher, _snapshots) = Publisher::new(t.store.clone(), env(), Arc::new(Env::default()));
    let service = Service::new(t.store.clone(), publisher.clone());
    service.ensure_admin_key(Some("tg-admin-seed-for-the-poll".into())).await.unwrap();
    let actor: Actor = service.authenticate_admin("tg-admin-seed-for-the-poll").await.unwrap().unwrap();
    let token = "tg-dp-token-for-the-poll-0123456789".to_owned();
    let (closing_tx, closing) = watch::channel(false);
    let state = crate::internal::InternalState { publisher: publisher.clone(), service: service.clone(), data_plane_token: Arc::new(token.clone()), closing, authority: crate::authority::Authority::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{}", listener.local_addr().unwrap(), contract::KEYS_PATH);
    let server = tokio::spawn(async move { axum::serve(listener, crate::internal::router(state)).await });
    let client = reqwest::Client::new();
    let poll = |have: &Manifest, wait: u64| client.post(format!("{url}?wait={wait}")).bearer_auth(&token).body(have.encode()).send();

    // a data plane with nothing gets every shard
    let mut have = Manifest::default();
    let resp = poll(&have, 0).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    let update = Update::decode(&body).unwrap();
    assert_eq!(update.shards.len(), 256);
    for bytes in update.shards {
        let (i, e, v) = Shard::peek(bytes).unwrap();
        have.set(i, e, v);
    }
    // up to date: 304 after the wait
    assert_eq!(poll(&have, 0).await.unwrap().status(), 304);
    // a held poll is answered by the next change, with only that change's shard
    let held = tokio::spawn(poll(&have, 20));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let key = service.create_key(&actor, NewKey { name: "polled".into(), ..Default::default() }).await.unwrap();
    let resp = held.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    let update = Update::decode(&body).unwrap();
    assert_eq!(update.shards.len(), 1);
    let digest = tollgate_contract::keys::digest(&key.key);
    let shard = Shard::decode(update.shards[0], digest[0]).unwrap();
    assert_eq!(shard.lookup(&digest).unwrap().id, key.view.id);
    have.set(shard.index(), shard.epoch(), shard.version());
    // a held poll ends at once when the process stops
    let held = tokio::spawn(poll(&have, 20));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    closing_tx.send_replace(true);
    assert_eq!(held.await.unwrap().unwrap().status(), 304);
    assert!(started.elapsed() < Duration::from_secs(2));
    // the data-plane token, and a manifest that is one
    let refused = client.post(&url).bearer_auth("wrong").body(have.encode()).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let bad = client.post(&url).bearer_auth(&token).body("not a manifest").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    server.abort();
    t.close().await;
}
