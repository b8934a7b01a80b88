//! The admin API over gRPC (tonic): `tollgate.admin.v1.AdminService`, generated from
//! proto/tollgate/admin/v1/admin.proto, served with server reflection (v1 and v1alpha, so
//! `grpcurl` works without the .proto file).
//!
//! Thin glue, like the REST handlers in `crate::admin`: each RPC authenticates the caller with the
//! REST code (same keys, same `authorization: Bearer` / `x-api-key`, the peer address as the
//! audit source), calls the same `Service` method, and maps the answer to the proto messages.
//! Errors go through the REST error mapping first, so the message is the REST message; the gRPC
//! code follows the REST status (see the .proto's header).

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use tollgate_contract::keys::Role;
use tollgate_contract::ErrorKind;
use tonic::{Code, Request, Response, Status};

use crate::admin::{ApiError, AppState};
use crate::authz::Actor;
use crate::model::{AccessGroup, TeamRecord, UserRecord, UserRole};
use crate::service::{
    AccessGroupPatch, CreatedKey, KeyPatch, KeyView, ModelView, NewAccessGroup, NewKey, NewTeam, NewUser, RotateKey, Service,
    ServiceError, TeamPatch, UserPatch,
};
use crate::store::{AuditEntry, AuditQuery, KeyQuery};

#[allow(clippy::all, clippy::pedantic, dead_code, missing_docs)]
pub mod pb {
    tonic::include_proto!("tollgate.admin.v1");

    /// The encoded descriptors of admin.proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tollgate_admin_v1_descriptor.bin"));
}

use pb::admin_service_server::{AdminService, AdminServiceServer};

/// The trailing metadata that carries the REST error code (`forbidden`, `conflict`...).
pub const ERROR_CODE_METADATA: &str = "tollgate-error-code";

pub struct AdminGrpc {
    state: AppState,
}

/// The admin service and the reflection services, ready for a tonic server.
pub fn routes(service: Service) -> Result<tonic::service::Routes, tonic_reflection::server::Error> {
    let v1 = tonic_reflection::server::Builder::configure().register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET).build_v1()?;
    let v1alpha =
        tonic_reflection::server::Builder::configure().register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET).build_v1alpha()?;
    let admin = AdminServiceServer::new(AdminGrpc { state: AppState { service } });
    Ok(tonic::service::Routes::new(admin).add_service(v1).add_service(v1alpha))
}

/// Serves the admin service on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let routes = routes(service)?;
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// The REST error as a gRPC status: the same message, the REST code in trailing metadata.
/// A conflict is `conflict` (`ALREADY_EXISTS` when creating, `ABORTED` otherwise).
fn to_status(e: ApiError, conflict: Code) -> Status {
    let e = e.0;
    let code = match (e.kind, e.code) {
        (_, Some("conflict")) => conflict,
        (ErrorKind::InvalidRequest, _) => Code::InvalidArgument,
        (ErrorKind::Authentication, _) => Code::Unauthenticated,
        (ErrorKind::Permission, _) => Code::PermissionDenied,
        (ErrorKind::NotFound, _) => Code::NotFound,
        _ => Code::Internal,
    };
    let mut status = Status::new(code, e.message);
    if let Some(c) = e.code.and_then(|c| c.parse().ok()) {
        status.metadata_mut().insert(ERROR_CODE_METADATA, c);
    }
    status
}

/// For every RPC but the `Create*` ones.
fn status(e: ServiceError) -> Status {
    to_status(e.into(), Code::Aborted)
}

fn created(e: ServiceError) -> Status {
    to_status(e.into(), Code::AlreadyExists)
}

fn invalid(message: String) -> Status {
    to_status(ServiceError::Invalid(message).into(), Code::Aborted)
}

impl AdminGrpc {
    /// The caller, authenticated exactly as on REST (the peer's address is the audit source).
    async fn actor<T>(&self, req: &Request<T>) -> Result<Actor, Status> {
        let peer = req.remote_addr();
        let headers = req.metadata().clone().into_headers();
        let mut actor = crate::admin::admin(&self.state, &headers, &ConnectInfo(peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))))
            .await
            .map_err(|e| to_status(e, Code::Aborted))?;
        if peer.is_none() {
            actor.source = None;
        }
        Ok(actor)
    }

    fn service(&self) -> &Service {
        &self.state.service
    }
}

fn list(v: Option<Vec<String>>) -> Option<pb::StringList> {
    v.map(|values| pb::StringList { values })
}

fn unlist(v: Option<pb::StringList>) -> Option<Vec<String>> {
    v.map(|l| l.values)
}

fn json_text(v: Option<serde_json::Value>) -> Option<String> {
    v.map(|v| v.to_string())
}

fn json_value(field: &str, text: Option<String>) -> Result<Option<serde_json::Value>, Status> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| invalid(format!("'{field}' is not JSON: {e}."))))
        .transpose()
}

/// A field that an update may set, leave, or clear (REST: a value, absent, or `null`).
fn tri<T>(field: &str, clear: bool, value: Option<T>) -> Result<Option<Option<T>>, Status> {
    match (clear, value) {
        (true, Some(_)) => Err(invalid(format!("'{field}' and 'clear_{field}' are both set."))),
        (true, None) => Ok(Some(None)),
        (false, v) => Ok(v.map(Some)),
    }
}

fn key_role(s: Option<String>) -> Result<Option<Role>, Status> {
    match s.as_deref() {
        None => Ok(None),
        Some("user") => Ok(Some(Role::User)),
        Some("admin") => Ok(Some(Role::Admin)),
        Some(_) => Err(invalid("'role' must be user or admin.".into())),
    }
}

fn user_role(s: Option<String>) -> Result<Option<UserRole>, Status> {
    s.map(|s| UserRole::parse(&s).ok_or_else(|| invalid("'role' must be admin, team_admin, member or viewer.".into()))).transpose()
}

fn role_str(r: Role) -> String {
    match r {
        Role::User => "user",
        Role::Admin => "admin",
    }
    .to_owned()
}

fn new_key(r: pb::CreateKeyRequest) -> Result<NewKey, Status> {
    Ok(NewKey {
        name: r.name,
        models: unlist(r.models),
        expires_at: r.expires_at,
        role: key_role(r.role)?,
        user_id: r.user_id,
        team_id: r.team_id,
        tags: r.tags,
        metadata: json_value("metadata_json", r.metadata_json)?,
        access_groups: r.access_groups,
    })
}

impl From<KeyView> for pb::Key {
    fn from(k: KeyView) -> Self {
        let KeyView {
            id,
            name,
            role,
            models,
            created_at,
            expires_at,
            revoked_at,
            user_id,
            team_id,
            tags,
            metadata,
            access_groups,
            blocked,
            rotated_at,
            previous_valid_until,
        } = k;
        Self {
            id,
            name,
            role: role_str(role),
            models: list(models),
            created_at,
            expires_at,
            revoked_at,
            user_id,
            team_id,
            tags,
            metadata_json: json_text(metadata),
            access_groups,
            blocked,
            rotated_at,
            previous_valid_until,
        }
    }
}

impl From<CreatedKey> for pb::CreatedKey {
    fn from(c: CreatedKey) -> Self {
        Self { key: Some(c.view.into()), secret: c.key }
    }
}

impl From<TeamRecord> for pb::Team {
    fn from(t: TeamRecord) -> Self {
        let TeamRecord { id, name, models, access_groups, metadata, created_at } = t;
        Self { id, name, models: list(models), access_groups, metadata_json: json_text(metadata), created_at }
    }
}

impl From<UserRecord> for pb::User {
    fn from(u: UserRecord) -> Self {
        let UserRecord { id, name, email, team_id, role, models, access_groups, created_at } = u;
        Self { id, name, email, team_id, role: role.as_str().to_owned(), models: list(models), access_groups, created_at }
    }
}

impl From<AccessGroup> for pb::AccessGroup {
    fn from(g: AccessGroup) -> Self {
        let AccessGroup { name, models, created_at } = g;
        Self { name, models, created_at }
    }
}

impl From<ModelView> for pb::Model {
    fn from(m: ModelView) -> Self {
        let ModelView { name, deployments, served, problems } = m;
        Self {
            name,
            deployments_json: serde_json::to_string(&deployments).unwrap_or_else(|_| "[]".into()),
            served,
            problems: problems
                .into_iter()
                .map(|p| pb::ModelProblem { deployment: p.deployment.and_then(|d| u32::try_from(d).ok()), reason: p.reason })
                .collect(),
        }
    }
}

impl From<AuditEntry> for pb::AuditEntry {
    fn from(a: AuditEntry) -> Self {
        let AuditEntry { id, at, actor, action, target, team_id, source, before, after } = a;
        Self { id, at, actor, action, target, team_id, source, before_json: json_text(before), after_json: json_text(after) }
    }
}

fn ok<T>(v: T) -> Result<Response<T>, Status> {
    Ok(Response::new(v))
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::Caller>, Status> {
        let a = self.actor(&req).await?;
        ok(pb::Caller {
            key_id: a.key_id,
            role: a.role.as_str().to_owned(),
            user_id: a.user_id,
            team_id: a.team_id,
            models: list(a.models),
            expires_at: a.expires_at,
        })
    }

    async fn create_key(&self, req: Request<pb::CreateKeyRequest>) -> Result<Response<pb::CreatedKey>, Status> {
        let actor = self.actor(&req).await?;
        let created = self.service().create_key(&actor, new_key(req.into_inner())?).await.map_err(created)?;
        tracing::info!(key_id = %created.view.id, by = %actor.key_id, api = "grpc", "key created");
        ok(created.into())
    }

    async fn create_keys(&self, req: Request<pb::CreateKeysRequest>) -> Result<Response<pb::CreateKeysResponse>, Status> {
        let actor = self.actor(&req).await?;
        let new = req.into_inner().keys.into_iter().map(new_key).collect::<Result<Vec<_>, _>>()?;
        let created = self.service().create_keys(&actor, new).await.map_err(created)?;
        tracing::info!(keys = created.len(), by = %actor.key_id, api = "grpc", "keys created in bulk");
        ok(pb::CreateKeysResponse { keys: created.into_iter().map(Into::into).collect() })
    }

    async fn list_keys(&self, req: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let q = KeyQuery { team_id: r.team_id, user_id: r.user_id, tag: r.tag, include_revoked: r.include_revoked, after_id: r.after_id, limit: r.limit };
        let keys = self.service().list_keys(&actor, q).await.map_err(status)?;
        ok(pb::ListKeysResponse { keys: keys.into_iter().map(Into::into).collect() })
    }

    async fn get_key(&self, req: Request<pb::GetKeyRequest>) -> Result<Response<pb::Key>, Status> {
        let actor = self.actor(&req).await?;
        ok(self.service().get_key(&actor, &req.into_inner().id).await.map_err(status)?.into())
    }

    async fn update_key(&self, req: Request<pb::UpdateKeyRequest>) -> Result<Response<pb::Key>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let patch = KeyPatch {
            name: r.name,
            models: tri("models", r.clear_models, unlist(r.models))?,
            expires_at: tri("expires_at", r.clear_expires_at, r.expires_at)?,
            tags: unlist(r.tags),
            metadata: json_value("metadata_json", r.metadata_json)?,
            blocked: r.blocked,
            access_groups: unlist(r.access_groups),
        };
        let key = self.service().update_key(&actor, &r.id, patch).await.map_err(status)?;
        tracing::info!(key_id = %r.id, by = %actor.key_id, blocked = key.blocked, api = "grpc", "key updated");
        ok(key.into())
    }

    async fn rotate_key(&self, req: Request<pb::RotateKeyRequest>) -> Result<Response<pb::CreatedKey>, Status> {
        let actor = self.actor(&req).await?;
        let header = req.metadata().get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let r = req.into_inner();
        let rotate = RotateKey { grace_seconds: r.grace_seconds, idempotency_key: r.idempotency_key.or(header) };
        let rotated = self.service().rotate_key(&actor, &r.id, rotate).await.map_err(status)?;
        tracing::info!(key_id = %r.id, by = %actor.key_id, api = "grpc", "key rotated");
        ok(rotated.into())
    }

    async fn revoke_key(&self, req: Request<pb::RevokeKeyRequest>) -> Result<Response<pb::Key>, Status> {
        let actor = self.actor(&req).await?;
        let id = req.into_inner().id;
        let key = self.service().revoke_key(&actor, &id).await.map_err(status)?;
        tracing::info!(key_id = %id, by = %actor.key_id, api = "grpc", "key revoked");
        ok(key.into())
    }

    async fn create_team(&self, req: Request<pb::CreateTeamRequest>) -> Result<Response<pb::Team>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let new = NewTeam {
            name: r.name,
            models: unlist(r.models),
            access_groups: r.access_groups,
            metadata: json_value("metadata_json", r.metadata_json)?,
        };
        ok(self.service().create_team(&actor, new).await.map_err(created)?.into())
    }

    async fn list_teams(&self, req: Request<pb::ListTeamsRequest>) -> Result<Response<pb::ListTeamsResponse>, Status> {
        let actor = self.actor(&req).await?;
        let teams = self.service().list_teams(&actor).await.map_err(status)?;
        ok(pb::ListTeamsResponse { teams: teams.into_iter().map(Into::into).collect() })
    }

    async fn get_team(&self, req: Request<pb::GetTeamRequest>) -> Result<Response<pb::Team>, Status> {
        let actor = self.actor(&req).await?;
        ok(self.service().get_team(&actor, &req.into_inner().id).await.map_err(status)?.into())
    }

    async fn update_team(&self, req: Request<pb::UpdateTeamRequest>) -> Result<Response<pb::Team>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let patch = TeamPatch {
            name: r.name,
            models: tri("models", r.clear_models, unlist(r.models))?,
            access_groups: unlist(r.access_groups),
            metadata: json_value("metadata_json", r.metadata_json)?,
        };
        ok(self.service().update_team(&actor, &r.id, patch).await.map_err(status)?.into())
    }

    async fn create_user(&self, req: Request<pb::CreateUserRequest>) -> Result<Response<pb::User>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let new = NewUser {
            name: r.name,
            email: r.email,
            team_id: r.team_id,
            role: user_role(r.role)?.unwrap_or_default(),
            models: unlist(r.models),
            access_groups: r.access_groups,
        };
        ok(self.service().create_user(&actor, new).await.map_err(created)?.into())
    }

    async fn list_users(&self, req: Request<pb::ListUsersRequest>) -> Result<Response<pb::ListUsersResponse>, Status> {
        let actor = self.actor(&req).await?;
        let users = self.service().list_users(&actor).await.map_err(status)?;
        ok(pb::ListUsersResponse { users: users.into_iter().map(Into::into).collect() })
    }

    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        let actor = self.actor(&req).await?;
        ok(self.service().get_user(&actor, &req.into_inner().id).await.map_err(status)?.into())
    }

    async fn update_user(&self, req: Request<pb::UpdateUserRequest>) -> Result<Response<pb::User>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let patch = UserPatch {
            name: r.name,
            email: tri("email", r.clear_email, r.email)?,
            role: user_role(r.role)?,
            models: tri("models", r.clear_models, unlist(r.models))?,
            access_groups: unlist(r.access_groups),
        };
        ok(self.service().update_user(&actor, &r.id, patch).await.map_err(status)?.into())
    }

    async fn create_access_group(&self, req: Request<pb::CreateAccessGroupRequest>) -> Result<Response<pb::AccessGroup>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let group = self.service().create_access_group(&actor, NewAccessGroup { name: r.name, models: r.models }).await.map_err(created)?;
        ok(group.into())
    }

    async fn list_access_groups(&self, req: Request<pb::ListAccessGroupsRequest>) -> Result<Response<pb::ListAccessGroupsResponse>, Status> {
        let actor = self.actor(&req).await?;
        let groups = self.service().list_access_groups(&actor).await.map_err(status)?;
        ok(pb::ListAccessGroupsResponse { access_groups: groups.into_iter().map(Into::into).collect() })
    }

    async fn update_access_group(&self, req: Request<pb::UpdateAccessGroupRequest>) -> Result<Response<pb::AccessGroup>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let group = self.service().update_access_group(&actor, &r.name, Some(AccessGroupPatch { models: r.models })).await.map_err(status)?;
        // An update (not a deletion) always answers the group.
        ok(group.map(Into::into).ok_or_else(|| Status::internal("The access group was not returned."))?)
    }

    async fn delete_access_group(&self, req: Request<pb::DeleteAccessGroupRequest>) -> Result<Response<pb::DeleteAccessGroupResponse>, Status> {
        let actor = self.actor(&req).await?;
        self.service().update_access_group(&actor, &req.into_inner().name, None).await.map_err(status)?;
        ok(pb::DeleteAccessGroupResponse {})
    }

    async fn list_models(&self, req: Request<pb::ListModelsRequest>) -> Result<Response<pb::ListModelsResponse>, Status> {
        let actor = self.actor(&req).await?;
        let models = self.service().list_models_as(&actor).await.map_err(status)?;
        ok(pb::ListModelsResponse { models: models.into_iter().map(Into::into).collect() })
    }

    async fn list_audit_entries(&self, req: Request<pb::ListAuditEntriesRequest>) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let q = AuditQuery {
            actor: r.actor,
            action: r.action,
            target: r.target,
            team_id: r.team_id,
            since: r.since,
            until: r.until,
            before_id: r.before_id,
            limit: r.limit,
        };
        let entries = self.service().audit_log(&actor, q).await.map_err(status)?;
        ok(pb::ListAuditEntriesResponse { entries: entries.into_iter().map(Into::into).collect() })
    }

    async fn put_model(&self, req: Request<pb::PutModelRequest>) -> Result<Response<pb::PutModelResponse>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let spec: crate::model::ModelSpec = from_json(&r.spec_json, "spec_json")?;
        let err = if r.replace { status } else { created };
        self.service().put_model(&actor, &r.name, Some(spec), r.replace).await.map_err(err)?;
        ok(pb::PutModelResponse { name: r.name })
    }

    async fn delete_model(&self, req: Request<pb::DeleteModelRequest>) -> Result<Response<pb::PutModelResponse>, Status> {
        let actor = self.actor(&req).await?;
        let name = req.into_inner().name;
        self.service().put_model(&actor, &name, None, true).await.map_err(status)?;
        ok(pb::PutModelResponse { name })
    }

    async fn list_credentials(&self, req: Request<pb::ListCredentialsRequest>) -> Result<Response<pb::ListCredentialsResponse>, Status> {
        let actor = self.actor(&req).await?;
        let views = self.service().list_credentials(&actor).await.map_err(status)?;
        ok(pb::ListCredentialsResponse { credentials: views.into_iter().map(Into::into).collect() })
    }

    async fn put_credential(&self, req: Request<pb::PutCredentialRequest>) -> Result<Response<pb::Credential>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let input: crate::service::CredentialInput = from_json(&r.credential_json, "credential_json")?;
        let err = if r.replace { status } else { created };
        let view = self.service().put_credential(&actor, &r.name, input, r.replace).await.map_err(err)?;
        ok(view.into())
    }

    async fn delete_credential(&self, req: Request<pb::DeleteCredentialRequest>) -> Result<Response<pb::DeleteCredentialResponse>, Status> {
        let actor = self.actor(&req).await?;
        let name = req.into_inner().name;
        self.service().delete_credential(&actor, &name).await.map_err(status)?;
        ok(pb::DeleteCredentialResponse { name })
    }

    async fn get_spend(&self, req: Request<pb::GetSpendRequest>) -> Result<Response<pb::GetSpendResponse>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let q = crate::store::SpendQuery { scope: r.scope, scope_id: r.scope_id, from: r.from, to: r.to };
        let rows = self.service().spend(&actor, q).await.map_err(status)?;
        ok(pb::GetSpendResponse {
            rows: rows
                .into_iter()
                .map(|d| pb::SpendRow {
                    day: d.day,
                    scope: d.scope,
                    scope_id: d.scope_id,
                    requests: d.requests,
                    input_tokens: d.input_tokens,
                    output_tokens: d.output_tokens,
                    cache_read_tokens: d.cache_read_tokens,
                    cache_write_tokens: d.cache_write_tokens,
                    cost_usd: d.cost_usd,
                    unpriced: d.unpriced,
                })
                .collect(),
        })
    }

    async fn list_usage_records(&self, req: Request<pb::ListUsageRecordsRequest>) -> Result<Response<pb::ListUsageRecordsResponse>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let q = crate::store::UsageQuery { key_id: r.key_id, request_id: r.request_id, since_ms: r.since_ms, limit: r.limit };
        let rows = self.service().usage_records(&actor, q).await.map_err(status)?;
        ok(pb::ListUsageRecordsResponse { records: rows.into_iter().map(Into::into).collect() })
    }

    async fn list_prices(&self, req: Request<pb::ListPricesRequest>) -> Result<Response<pb::ListPricesResponse>, Status> {
        let actor = self.actor(&req).await?;
        prices(self.service().list_prices(&actor).await.map_err(status)?)
    }

    async fn add_price(&self, req: Request<pb::PriceEntry>) -> Result<Response<pb::ListPricesResponse>, Status> {
        let actor = self.actor(&req).await?;
        let e = req.into_inner();
        let entry = PriceEntry {
            provider: e.provider,
            model: e.model,
            input: e.input,
            output: e.output,
            cache_read: e.cache_read,
            cache_write: e.cache_write,
            as_of: e.as_of,
            source: e.source,
        };
        self.service().add_price(&actor, entry).await.map_err(created)?;
        prices(self.service().list_prices(&actor).await.map_err(status)?)
    }

    async fn create_quota(&self, req: Request<pb::Quota>) -> Result<Response<pb::Quota>, Status> {
        let actor = self.actor(&req).await?;
        let q = req.into_inner();
        let metric = serde_json::from_value(serde_json::Value::String(q.metric.clone()))
            .map_err(|_| invalid(format!("Unknown metric '{}': requests, input_tokens, output_tokens, total_tokens or concurrency.", q.metric)))?;
        let spec = crate::store::QuotaSpec {
            id: String::new(),
            metric,
            window_seconds: q.window_seconds,
            window: q
                .window
                .map(|w| serde_json::from_value(serde_json::Value::String(w.clone())).map_err(|_| invalid(format!("Unknown window '{w}': day, week or month."))))
                .transpose()?,
            timezone: q.timezone,
            schedule: q
                .schedule_json
                .map(|j| serde_json::from_str(&j).map_err(|e| invalid(format!("Invalid schedule_json: {e}."))))
                .transpose()?,
            limit: q.limit,
            limit_usd: q.limit_usd,
            key_id: q.key_id,
            user_id: q.user_id,
            team_id: q.team_id,
            model: q.model,
            fail_mode: q
                .fail_mode
                .map(|f| serde_json::from_value(serde_json::Value::String(f.clone())).map_err(|_| invalid(format!("Unknown fail_mode '{f}': closed or share."))))
                .transpose()?,
            alert_thresholds: q
                .alert_thresholds_json
                .map(|j| serde_json::from_str(&j).map_err(|e| invalid(format!("Invalid alert_thresholds_json: {e}."))))
                .transpose()?,
            // Any other name reads as `Unknown`, which the service refuses.
            provider: q.provider.map(|p| serde_json::from_value(serde_json::Value::String(p)).unwrap_or(tollgate_contract::config::ProviderKind::Unknown)),
            fit_output_tokens: q.fit_output_tokens,
            created_at: 0,
        };
        ok(self.service().create_quota(&actor, spec).await.map_err(created)?.into())
    }

    async fn list_quotas(&self, req: Request<pb::ListQuotasRequest>) -> Result<Response<pb::ListQuotasResponse>, Status> {
        let actor = self.actor(&req).await?;
        let quotas = self.service().list_quotas(&actor).await.map_err(status)?;
        ok(pb::ListQuotasResponse { quotas: quotas.into_iter().map(Into::into).collect() })
    }

    async fn delete_quota(&self, req: Request<pb::DeleteQuotaRequest>) -> Result<Response<pb::DeleteQuotaResponse>, Status> {
        let actor = self.actor(&req).await?;
        let id = req.into_inner().id;
        self.service().delete_quota(&actor, &id).await.map_err(status)?;
        ok(pb::DeleteQuotaResponse { id })
    }
}

use crate::metering::prices::PriceEntry;

impl From<crate::store::QuotaSpec> for pb::Quota {
    fn from(q: crate::store::QuotaSpec) -> Self {
        let metric = serde_json::to_value(q.metric).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        Self {
            id: q.id,
            metric,
            window_seconds: q.window_seconds,
            limit: q.limit,
            key_id: q.key_id,
            user_id: q.user_id,
            team_id: q.team_id,
            model: q.model,
            created_at: q.created_at,
            limit_usd: q.limit_usd,
            fail_mode: q.fail_mode.and_then(|f| serde_json::to_value(f).ok()).and_then(|v| v.as_str().map(str::to_owned)),
            window: q.window.and_then(|w| serde_json::to_value(w).ok()).and_then(|v| v.as_str().map(str::to_owned)),
            timezone: q.timezone,
            schedule_json: q.schedule.and_then(|s| serde_json::to_string(&s).ok()),
            alert_thresholds_json: q.alert_thresholds.and_then(|t| serde_json::to_string(&t).ok()),
            provider: q.provider.map(|p| p.as_str().to_owned()),
            fit_output_tokens: q.fit_output_tokens,
        }
    }
}

/// A `*_json` field of a request, parsed as the REST body would be.
fn from_json<T: serde::de::DeserializeOwned>(text: &str, field: &str) -> Result<T, Status> {
    serde_json::from_str(text).map_err(|e| invalid(format!("Invalid JSON in {field}: {e}.")))
}

impl From<PriceEntry> for pb::PriceEntry {
    fn from(e: PriceEntry) -> Self {
        let PriceEntry { provider, model, input, output, cache_read, cache_write, as_of, source } = e;
        Self { provider, model, input, output, cache_read, cache_write, as_of, source }
    }
}

/// The catalogue as the service shows it (version, overrides, defaults).
fn prices(v: serde_json::Value) -> Result<Response<pb::ListPricesResponse>, Status> {
    #[derive(serde::Deserialize)]
    struct Catalogue {
        version: String,
        overrides: Vec<PriceEntry>,
        defaults: Vec<PriceEntry>,
    }
    let c: Catalogue = serde_json::from_value(v).map_err(|e| Status::internal(format!("price catalogue: {e}")))?;
    let list = |v: Vec<PriceEntry>| v.into_iter().map(Into::into).collect();
    ok(pb::ListPricesResponse { version: c.version, overrides: list(c.overrides), defaults: list(c.defaults) })
}

impl From<crate::service::CredentialView> for pb::Credential {
    fn from(v: crate::service::CredentialView) -> Self {
        Self { name: v.name, kind: v.kind.to_owned(), source: v.source, fingerprint: v.fingerprint, env: v.env, usable: v.usable }
    }
}

impl From<crate::store::UsageRow> for pb::UsageRecord {
    fn from(r: crate::store::UsageRow) -> Self {
        Self {
            request_id: r.request_id,
            attempt: r.attempt,
            at_ms: r.at_ms,
            key_id: r.key_id,
            user_id: r.user_id,
            team_id: r.team_id,
            model: r.model,
            provider: r.provider,
            provider_model: r.provider_model,
            status: r.status,
            stream: r.stream,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cache_read_tokens: r.cache_read_tokens,
            cache_write_tokens: r.cache_write_tokens,
            estimated: r.estimated,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            cost_usd: r.cost_usd,
            price_version: r.price_version,
        }
    }
}

#[cfg(test)]
#[path = "grpc_admin_tests.rs"]
mod tests;
