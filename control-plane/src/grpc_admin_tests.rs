//! The gRPC admin API served on 127.0.0.1:0 over a real SQLite store, driven with the generated
//! client: tenants, the secret shown once, rotation, revocation, the audit trail with the peer
//! address, error codes with the REST messages, and server reflection.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use super::pb;
use super::pb::admin_service_client::AdminServiceClient;
use crate::model::Secrets;
use crate::publisher::Publisher;
use crate::service::Service;
use crate::store::Store;
use crate::xds::snapshot::XdsEnv;

const ADMIN: &str = "tg-admin-seed-for-the-grpc-test";

struct NoSecrets;

impl Secrets for NoSecrets {
    fn env(&self, _: &str) -> Option<String> {
        None
    }
}

fn env() -> XdsEnv {
    XdsEnv::for_tests()
}

/// The control plane's admin side on ephemeral ports: gRPC, and REST to compare answers with.
struct Servers {
    grpc: AdminServiceClient<Channel>,
    channel: Channel,
    rest: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    store: Store,
    dir: std::path::PathBuf,
}

impl Servers {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("tollgate-grpc-admin-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::connect(&format!("sqlite://{}?mode=rwc", dir.join("t.db").display())).await.unwrap();
        let (publisher, _snapshots) = Publisher::new(store.clone(), env(), Arc::new(NoSecrets));
        let service = Service::new(store.clone(), publisher);
        service.ensure_admin_key(Some(ADMIN.into())).await.unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let grpc_task = tokio::spawn({
            let service = service.clone();
            async move {
                super::serve(listener, service, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            }
        });
        let rest_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rest = format!("http://{}", rest_listener.local_addr().unwrap());
        let app = crate::admin::router(crate::admin::AppState { service });
        let rest_task = tokio::spawn(async move {
            axum::serve(rest_listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.unwrap();
        });
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        Self { grpc: AdminServiceClient::new(channel.clone()), channel, rest, stop: Some(stop), tasks: vec![grpc_task, rest_task], store, dir }
    }

    async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The gRPC server ends on its shutdown signal; the REST one is aborted.
        let mut tasks = std::mem::take(&mut self.tasks);
        let rest = tasks.pop().unwrap();
        rest.abort();
        tokio::time::timeout(std::time::Duration::from_secs(10), tasks.pop().unwrap()).await.unwrap().unwrap();
        self.store.close().await;
        std::fs::remove_dir_all(&self.dir).unwrap();
    }

    /// A REST call's status and error message (to compare with the gRPC status).
    async fn rest_error(&self, method: reqwest::Method, path: &str, key: &str) -> (u16, String) {
        let resp = reqwest::Client::new().request(method, format!("{}{path}", self.rest)).bearer_auth(key).send().await.unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        (status, body["error"]["message"].as_str().unwrap().to_owned())
    }
}

/// A request with `authorization: Bearer <key>`.
fn with<T>(key: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {key}")).unwrap());
    req
}

fn error_code(status: &tonic::Status) -> Option<&str> {
    status.metadata().get(super::ERROR_CODE_METADATA).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn the_admin_api_over_grpc_with_tenants_rotation_revocation_and_audit() {
    let s = Servers::start().await;
    let mut c = s.grpc.clone();

    // No key, or an unknown one: UNAUTHENTICATED, with the REST message and code.
    let no_key = c.list_keys(pb::ListKeysRequest::default()).await.unwrap_err();
    assert_eq!(no_key.code(), Code::Unauthenticated);
    assert_eq!(no_key.message(), "The admin API needs a key with an admin-API role: Authorization: Bearer <key>.");
    assert_eq!(error_code(&no_key), Some("invalid_admin_key"));
    assert_eq!(c.list_keys(with("tg-not-a-key", pb::ListKeysRequest::default())).await.unwrap_err().code(), Code::Unauthenticated);

    let me = c.who_am_i(with(ADMIN, pb::WhoAmIRequest {})).await.unwrap().into_inner();
    assert_eq!((me.role.as_str(), me.models.is_none()), ("admin", true));

    // Teams; metadata is JSON text, returned byte-exact (an SQL payload is data).
    let metadata = r#"{"cost_center":4200000000123,"note":"'; DROP TABLE teams; --"}"#;
    let team = |name: &str, metadata: Option<&str>| pb::CreateTeamRequest {
        name: name.into(),
        metadata_json: metadata.map(str::to_owned),
        ..Default::default()
    };
    let a = c.create_team(with(ADMIN, team("team-a", Some(metadata)))).await.unwrap().into_inner();
    let b = c.create_team(with(ADMIN, team("team-b", None))).await.unwrap().into_inner();
    assert!(a.id.starts_with("team_") && a.id != b.id);
    assert_eq!(a.metadata_json.as_deref(), Some(metadata));
    assert_eq!(c.get_team(with(ADMIN, pb::GetTeamRequest { id: a.id.clone() })).await.unwrap().into_inner(), a);
    let again = c.create_team(with(ADMIN, team("team-a", None))).await.unwrap_err();
    assert_eq!((again.code(), again.message()), (Code::AlreadyExists, "A team named 'team-a' exists."));
    assert_eq!(error_code(&again), Some("conflict"));
    let bad_json = c.create_team(with(ADMIN, team("team-c", Some("{not json")))).await.unwrap_err();
    assert_eq!(bad_json.code(), Code::InvalidArgument);
    assert!(bad_json.message().starts_with("'metadata_json' is not JSON"), "{}", bad_json.message());

    // Users: a team admin of A, a member of B.
    let user = |name: &str, team: &str, role: &str| pb::CreateUserRequest {
        name: name.into(),
        team_id: Some(team.into()),
        role: Some(role.into()),
        ..Default::default()
    };
    let ta = c.create_user(with(ADMIN, user("alice", &a.id, "team_admin"))).await.unwrap().into_inner();
    let mb = c.create_user(with(ADMIN, user("bob", &b.id, "member"))).await.unwrap().into_inner();
    assert_eq!((ta.role.as_str(), ta.team_id.as_deref()), ("team_admin", Some(a.id.as_str())));
    let bad_role = c.create_user(with(ADMIN, user("carol", &a.id, "owner"))).await.unwrap_err();
    assert_eq!((bad_role.code(), bad_role.message()), (Code::InvalidArgument, "'role' must be admin, team_admin, member or viewer."));

    // Keys: the secret once, in the creation's answer; it authenticates as its user.
    let key_for = |name: &str, user: &str| pb::CreateKeyRequest { name: name.into(), user_id: Some(user.into()), ..Default::default() };
    let ta_key = c.create_key(with(ADMIN, key_for("alice's", &ta.id))).await.unwrap().into_inner();
    let ta_secret = ta_key.secret.clone();
    let ta_view = ta_key.key.unwrap();
    assert!(ta_secret.starts_with(tollgate_contract::keys::KEY_PREFIX) && ta_secret.len() > 40);
    assert_eq!(ta_view.team_id.as_deref(), Some(a.id.as_str()), "the owner's team");
    let mb_key = c.create_key(with(ADMIN, key_for("bob's", &mb.id))).await.unwrap().into_inner().key.unwrap();
    let me = c.who_am_i(with(&ta_secret, pb::WhoAmIRequest {})).await.unwrap().into_inner();
    assert_eq!((me.role.as_str(), me.team_id.as_deref(), me.key_id.as_str()), ("team_admin", Some(a.id.as_str()), ta_view.id.as_str()));

    // The team admin creates a key in its team (tags, metadata, models), and lists: its team only.
    let created = c
        .create_key(with(
            &ta_secret,
            pb::CreateKeyRequest {
                name: "ci".into(),
                tags: vec!["ci".into()],
                metadata_json: Some(r#"{"owner":"ci"}"#.into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let ci = created.key.unwrap();
    assert_eq!((ci.team_id.as_deref(), ci.tags.as_slice(), ci.metadata_json.as_deref()), (Some(a.id.as_str()), &["ci".to_owned()][..], Some(r#"{"owner":"ci"}"#)));
    assert_ne!(created.secret, ta_secret);
    let listed = |keys: &[pb::Key]| keys.iter().map(|k| k.id.clone()).collect::<std::collections::BTreeSet<_>>();
    let mine = c.list_keys(with(&ta_secret, pb::ListKeysRequest::default())).await.unwrap().into_inner().keys;
    assert_eq!(listed(&mine), [ta_view.id.clone(), ci.id.clone()].into_iter().collect());
    let all = c.list_keys(with(ADMIN, pb::ListKeysRequest::default())).await.unwrap().into_inner().keys;
    assert!(listed(&all).contains(&mb_key.id) && all.len() == 4, "the admin sees every key (its own included)");
    let by_tag = c.list_keys(with(ADMIN, pb::ListKeysRequest { tag: Some("ci".into()), ..Default::default() })).await.unwrap().into_inner().keys;
    assert_eq!(listed(&by_tag), [ci.id.clone()].into_iter().collect());
    let teams = c.list_teams(with(&ta_secret, pb::ListTeamsRequest {})).await.unwrap().into_inner().teams;
    assert_eq!(teams.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), vec![a.id.as_str()]);

    // Across tenants: PERMISSION_DENIED, through a list filter and through an id, and the same
    // message as REST gives for the same call.
    let other = c.list_keys(with(&ta_secret, pb::ListKeysRequest { team_id: Some(b.id.clone()), ..Default::default() })).await.unwrap_err();
    assert_eq!((other.code(), other.message()), (Code::PermissionDenied, "You may list only your own team's keys."));
    assert_eq!(error_code(&other), Some("forbidden"));
    let get_b = c.get_key(with(&ta_secret, pb::GetKeyRequest { id: mb_key.id.clone() })).await.unwrap_err();
    assert_eq!(get_b.code(), Code::PermissionDenied);
    let (rest_status, rest_message) = s.rest_error(reqwest::Method::GET, &format!("/admin/v1/keys/{}", mb_key.id), &ta_secret).await;
    assert_eq!((rest_status, rest_message.as_str()), (403, get_b.message()));
    for denied in [
        c.revoke_key(with(&ta_secret, pb::RevokeKeyRequest { id: mb_key.id.clone() })).await.map(|_| ()),
        c.rotate_key(with(&ta_secret, pb::RotateKeyRequest { id: mb_key.id.clone(), ..Default::default() })).await.map(|_| ()),
        c.get_team(with(&ta_secret, pb::GetTeamRequest { id: b.id.clone() })).await.map(|_| ()),
        c.get_user(with(&ta_secret, pb::GetUserRequest { id: mb.id.clone() })).await.map(|_| ()),
        c.create_team(with(&ta_secret, team("team-z", None))).await.map(|_| ()),
        c.list_audit_entries(with(&ta_secret, pb::ListAuditEntriesRequest { team_id: Some(b.id.clone()), ..Default::default() })).await.map(|_| ()),
    ] {
        assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    }
    // An id that does not exist: NOT_FOUND for the admin (the REST message).
    let missing = c.get_key(with(ADMIN, pb::GetKeyRequest { id: "key_0000000000000000".into() })).await.unwrap_err();
    assert_eq!((missing.code(), missing.message()), (Code::NotFound, "No key with id 'key_0000000000000000'."));
    let (rest_status, rest_message) = s.rest_error(reqwest::Method::GET, "/admin/v1/keys/key_0000000000000000", ADMIN).await;
    assert_eq!((rest_status, rest_message.as_str()), (404, missing.message()));
    let empty_name = c.create_key(with(ADMIN, pb::CreateKeyRequest::default())).await.unwrap_err();
    assert_eq!((empty_name.code(), empty_name.message()), (Code::InvalidArgument, "'name' must be 1 to 200 characters."));

    // In bulk: all or nothing, each secret once.
    let bulk = |names: &[&str]| pb::CreateKeysRequest {
        keys: names.iter().map(|n| pb::CreateKeyRequest { name: (*n).into(), tags: vec!["bulk".into()], ..Default::default() }).collect(),
    };
    let made = c.create_keys(with(&ta_secret, bulk(&["b1", "b2"]))).await.unwrap().into_inner().keys;
    assert_eq!(made.iter().map(|k| k.key.as_ref().unwrap().name.as_str()).collect::<Vec<_>>(), vec!["b1", "b2"]);
    assert!(made[0].secret != made[1].secret && made.iter().all(|k| k.key.as_ref().unwrap().team_id.as_deref() == Some(a.id.as_str())));
    let half_bad = c.create_keys(with(&ta_secret, bulk(&["b3", ""]))).await.unwrap_err();
    assert_eq!(half_bad.code(), Code::InvalidArgument);
    let tagged = c.list_keys(with(ADMIN, pb::ListKeysRequest { tag: Some("bulk".into()), ..Default::default() })).await.unwrap().into_inner().keys;
    assert_eq!(tagged.len(), 2, "nothing of the refused batch was created");
    for k in &made {
        c.revoke_key(with(ADMIN, pb::RevokeKeyRequest { id: k.key.as_ref().unwrap().id.clone() })).await.unwrap();
    }

    // Updates: set and clear are told apart, and both at once is refused.
    let both = c
        .update_key(with(
            &ta_secret,
            pb::UpdateKeyRequest { id: ci.id.clone(), models: Some(pb::StringList::default()), clear_models: true, ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!((both.code(), both.message()), (Code::InvalidArgument, "'models' and 'clear_models' are both set."));
    let blocked = c.update_key(with(&ta_secret, pb::UpdateKeyRequest { id: ci.id.clone(), blocked: Some(true), ..Default::default() })).await.unwrap().into_inner();
    assert!(blocked.blocked);
    assert_eq!(blocked.metadata_json, ci.metadata_json, "what the update does not name stays");

    // Rotation: a new secret under the same id, idempotent by the `idempotency-key` metadata.
    let mut rotate = with(&ta_secret, pb::RotateKeyRequest { id: ci.id.clone(), grace_seconds: Some(60), idempotency_key: None });
    rotate.metadata_mut().insert("idempotency-key", MetadataValue::from_static("rotate-ci-1"));
    let rotated = c.rotate_key(rotate).await.unwrap().into_inner();
    let rotated_view = rotated.key.clone().unwrap();
    assert_eq!(rotated_view.id, ci.id);
    assert!(rotated.secret != created.secret && rotated.secret.starts_with(tollgate_contract::keys::KEY_PREFIX));
    let until = rotated_view.previous_valid_until.unwrap();
    assert!(rotated_view.rotated_at.is_some_and(|t| until - t == 60), "{rotated_view:?}");
    let retried = c
        .rotate_key(with(&ta_secret, pb::RotateKeyRequest { id: ci.id.clone(), grace_seconds: Some(60), idempotency_key: Some("rotate-ci-1".into()) }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.secret, rotated.secret, "the same idempotency key answers the same rotation");

    // Revocation; the revoked key is left out when asked.
    let revoked = c.revoke_key(with(&ta_secret, pb::RevokeKeyRequest { id: ci.id.clone() })).await.unwrap().into_inner();
    assert!(revoked.revoked_at.is_some());
    let active = c
        .list_keys(with(&ta_secret, pb::ListKeysRequest { include_revoked: Some(false), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(listed(&active), [ta_view.id.clone()].into_iter().collect());

    // The audit trail: every write, by the team admin's key, from the peer's address, no secret.
    let trail = c
        .list_audit_entries(with(ADMIN, pb::ListAuditEntriesRequest { target: Some(ci.id.clone()), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(trail.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), vec!["key.revoke", "key.rotate", "key.block", "key.create"]);
    for e in &trail {
        assert_eq!((e.actor.as_str(), e.source.as_deref(), e.team_id.as_deref()), (ta_view.id.as_str(), Some("127.0.0.1"), Some(a.id.as_str())));
        for json in [&e.before_json, &e.after_json].into_iter().flatten() {
            serde_json::from_str::<serde_json::Value>(json).unwrap();
            assert!(!json.contains(&created.secret) && !json.contains(&rotated.secret), "a secret in the audit trail: {json}");
        }
    }
    // A team admin reads its own team's trail, not B's.
    let own_trail = c.list_audit_entries(with(&ta_secret, pb::ListAuditEntriesRequest::default())).await.unwrap().into_inner().entries;
    assert!(!own_trail.is_empty() && own_trail.iter().all(|e| e.team_id.as_deref() == Some(a.id.as_str())));
    assert!(!own_trail.iter().any(|e| e.target == mb_key.id || e.target == b.id));

    // Access groups and models, for completeness of the surface.
    let group = c
        .create_access_group(with(ADMIN, pb::CreateAccessGroupRequest { name: "claude".into(), models: vec!["claude-*".into()] }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(group.models, vec!["claude-*".to_owned()]);
    let changed = c
        .update_access_group(with(ADMIN, pb::UpdateAccessGroupRequest { name: "claude".into(), models: vec!["claude-3".into()] }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.models, vec!["claude-3".to_owned()]);
    let groups = c.list_access_groups(with(&ta_secret, pb::ListAccessGroupsRequest {})).await.unwrap().into_inner().access_groups;
    assert_eq!(groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), vec!["claude"]);
    c.delete_access_group(with(ADMIN, pb::DeleteAccessGroupRequest { name: "claude".into() })).await.unwrap();
    let gone = c.delete_access_group(with(ADMIN, pb::DeleteAccessGroupRequest { name: "claude".into() })).await.unwrap_err();
    assert_eq!((gone.code(), gone.message()), (Code::NotFound, "No access group named 'claude'."));
    assert!(c.list_models(with(&ta_secret, pb::ListModelsRequest {})).await.unwrap().into_inner().models.is_empty());

    s.close().await;
}

/// Models, credentials, prices, spend and raw usage over gRPC: the REST bodies as `*_json`, no
/// secret in any answer, the REST authorisation (a member may not read raw usage).
#[tokio::test]
async fn models_credentials_prices_and_spend_over_grpc() {
    let s = Servers::start().await;
    let mut c = s.grpc.clone();
    let cred = c
        .put_credential(with(ADMIN, pb::PutCredentialRequest { name: "c1".into(), credential_json: r#"{"api_key_env":"TG_GRPC_TEST_KEY"}"#.into(), replace: false }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((cred.name.as_str(), cred.kind.as_str(), cred.source.as_str(), cred.env.clone()), ("c1", "api_key", "api", vec!["TG_GRPC_TEST_KEY".to_owned()]));
    let again = c.put_credential(with(ADMIN, pb::PutCredentialRequest { name: "c1".into(), credential_json: "{}".into(), replace: false })).await.unwrap_err();
    assert!(matches!(again.code(), Code::AlreadyExists | Code::InvalidArgument), "{again:?}");
    let bad = c.put_credential(with(ADMIN, pb::PutCredentialRequest { name: "c2".into(), credential_json: "{not json".into(), replace: false })).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(c.list_credentials(with(ADMIN, pb::ListCredentialsRequest {})).await.unwrap().into_inner().credentials.len(), 1);

    let spec = r#"{"name":"grpc-model","deployments":[{"provider":"openai","base_url":"https://8.8.8.8/v1","model":"gpt-4o-mini","credential":"c1"}]}"#;
    let put = c.put_model(with(ADMIN, pb::PutModelRequest { name: "grpc-model".into(), spec_json: spec.into(), replace: false })).await;
    assert_eq!(put.unwrap().into_inner().name, "grpc-model");
    let models = c.list_models(with(ADMIN, pb::ListModelsRequest {})).await.unwrap().into_inner().models;
    assert!(models.iter().any(|m| m.name == "grpc-model"), "{models:?}");
    c.delete_model(with(ADMIN, pb::DeleteModelRequest { name: "grpc-model".into() })).await.unwrap();
    c.delete_credential(with(ADMIN, pb::DeleteCredentialRequest { name: "c1".into() })).await.unwrap();
    assert!(c.list_credentials(with(ADMIN, pb::ListCredentialsRequest {})).await.unwrap().into_inner().credentials.is_empty());

    let price = pb::PriceEntry { provider: "openai".into(), model: "grpc-model-id".into(), input: "1.00".into(), output: "2.00".into(), as_of: "2026-12-04".into(), ..Default::default() };
    let catalogue = c.add_price(with(ADMIN, price)).await.unwrap().into_inner();
    assert_eq!(catalogue.overrides[0].model, "grpc-model-id");
    assert!(!catalogue.defaults.is_empty() && !catalogue.version.is_empty());

    let record = tollgate_contract::usage::UsageRecord {
        request_id: "grpc-req".into(),
        at_ms: 1_796_400_000_000,
        key_id: "key_grpc".into(),
        model: "m".into(),
        provider: "openai".into(),
        provider_model: "grpc-model-id".into(),
        status: 200,
        input_tokens: 1000,
        output_tokens: 10,
        ..Default::default()
    };
    let service = crate::service::Service::new(s.store.clone(), Publisher::new(s.store.clone(), env(), Arc::new(NoSecrets)).0);
    service.ingest_usage(tollgate_contract::usage::UsageBatch { records: vec![record] }).await.unwrap();
    let spend = c.get_spend(with(ADMIN, pb::GetSpendRequest { scope: "key".into(), scope_id: Some("key_grpc".into()), ..Default::default() })).await.unwrap().into_inner();
    assert_eq!((spend.rows.len(), spend.rows[0].requests, spend.rows[0].cost_usd.as_str()), (1, 1, "0.001020000"));
    let raw = c.list_usage_records(with(ADMIN, pb::ListUsageRecordsRequest { key_id: Some("key_grpc".into()), ..Default::default() })).await.unwrap().into_inner();
    assert_eq!((raw.records[0].request_id.as_str(), raw.records[0].cost_usd.as_deref()), ("grpc-req", Some("0.001020000")));
    assert_eq!(c.get_spend(with(ADMIN, pb::GetSpendRequest { scope: "galaxy".into(), ..Default::default() })).await.unwrap_err().code(), Code::InvalidArgument);

    let q = pb::Quota { metric: "requests".into(), window_seconds: 60, limit: 600, ..Default::default() };
    let created = c.create_quota(with(ADMIN, q)).await.unwrap().into_inner();
    assert!(created.id.starts_with("quota_") && created.metric == "requests");
    assert_eq!(c.list_quotas(with(ADMIN, pb::ListQuotasRequest {})).await.unwrap().into_inner().quotas, vec![created.clone()]);
    let bad = pb::Quota { metric: "galaxies".into(), limit: 1, ..Default::default() };
    assert_eq!(c.create_quota(with(ADMIN, bad)).await.unwrap_err().code(), Code::InvalidArgument);
    c.delete_quota(with(ADMIN, pb::DeleteQuotaRequest { id: created.id })).await.unwrap();
    assert!(c.list_quotas(with(ADMIN, pb::ListQuotasRequest {})).await.unwrap().into_inner().quotas.is_empty());
    // Calendar windows, schedules, fail modes and alert thresholds travel as over REST.
    let monthly = pb::Quota {
        metric: "requests".into(),
        limit: 100,
        window: Some("month".into()),
        timezone: Some("Europe/Paris".into()),
        schedule_json: Some(r#"[{"days":["mon"],"from":"09:00","to":"18:00","limit":500}]"#.into()),
        fail_mode: Some("closed".into()),
        alert_thresholds_json: Some("[90]".into()),
        ..Default::default()
    };
    let made = c.create_quota(with(ADMIN, monthly.clone())).await.unwrap().into_inner();
    assert_eq!((made.window, made.timezone, made.fail_mode, made.alert_thresholds_json), (monthly.window, monthly.timezone, monthly.fail_mode, monthly.alert_thresholds_json));
    assert!(made.schedule_json.is_some_and(|j| j.contains("09:00")));
    // A budget that lowers a request's output limit to fit; not a request quota.
    let fit = pb::Quota { metric: "cost_usd".into(), limit_usd: Some("5".into()), fit_output_tokens: Some(16), ..Default::default() };
    assert_eq!(c.create_quota(with(ADMIN, fit)).await.unwrap().into_inner().fit_output_tokens, Some(16));
    let bad = pb::Quota { metric: "requests".into(), limit: 5, fit_output_tokens: Some(16), ..Default::default() };
    assert_eq!(c.create_quota(with(ADMIN, bad)).await.unwrap_err().code(), Code::InvalidArgument);
    let bad = pb::Quota { metric: "requests".into(), limit: 1, window: Some("fortnight".into()), ..Default::default() };
    assert_eq!(c.create_quota(with(ADMIN, bad)).await.unwrap_err().code(), Code::InvalidArgument);
    // A quota of a provider.
    let bedrock = pb::Quota { metric: "cost_usd".into(), limit_usd: Some("5".into()), provider: Some("bedrock".into()), ..Default::default() };
    assert_eq!(c.create_quota(with(ADMIN, bedrock)).await.unwrap().into_inner().provider.as_deref(), Some("bedrock"));
    let bad = pb::Quota { metric: "requests".into(), limit: 1, provider: Some("acme".into()), ..Default::default() };
    let err = c.create_quota(with(ADMIN, bad)).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().contains("bedrock"), "{err:?}");
    s.close().await;
}

/// What `grpcurl list` and `grpcurl describe` ask: the service by reflection, with its file.
#[tokio::test]
async fn server_reflection_describes_the_admin_service() {
    let s = Servers::start().await;
    let mut reflection = ServerReflectionClient::new(s.channel.clone());
    let ask = |m: MessageRequest| ServerReflectionRequest { host: String::new(), message_request: Some(m) };
    let requests = vec![ask(MessageRequest::ListServices(String::new())), ask(MessageRequest::FileContainingSymbol("tollgate.admin.v1.AdminService".into()))];
    let mut answers = reflection.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let services = match answers.message().await.unwrap().unwrap().message_response.unwrap() {
        MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect::<Vec<_>>(),
        other => panic!("unexpected answer {other:?}"),
    };
    assert!(services.contains(&"tollgate.admin.v1.AdminService".to_owned()), "{services:?}");
    let files = match answers.message().await.unwrap().unwrap().message_response.unwrap() {
        MessageResponse::FileDescriptorResponse(f) => f.file_descriptor_proto,
        other => panic!("unexpected answer {other:?}"),
    };
    use prost::Message;
    let file = prost_types::FileDescriptorProto::decode(files[0].as_slice()).unwrap();
    assert_eq!((file.package(), file.name()), ("tollgate.admin.v1", "tollgate/admin/v1/admin.proto"));
    let methods: Vec<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
    for m in ["CreateKey", "ListKeys", "RotateKey", "RevokeKey", "ListAuditEntries", "WhoAmI", "PutModel", "PutCredential", "GetSpend", "ListUsageRecords", "AddPrice"] {
        assert!(methods.contains(&m), "{m} missing from {methods:?}");
    }
    s.close().await;
}
