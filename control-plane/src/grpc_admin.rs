//! The admin API over gRPC (`proto/tollgate/admin/v1/admin.proto`), on `--grpc-addr`, with
//! server reflection. Every call authenticates with the `authorization: Bearer <key>` metadata
//! and goes through the same service layer, with the same authorisation and audit trail, as
//! the REST API; errors keep the service's messages, mapped to gRPC codes.

use std::net::SocketAddr;

use tollgate_contract::keys::{presented_key, Role};
use tonic::{Request, Response, Status};

use crate::authz::Actor;
use crate::model::{TeamRecord, UserRecord, UserRole};
use crate::service::{CreatedKey, KeyPatch, KeyView, NewKey, NewTeam, NewUser, RotateKey, Service, ServiceError};
use crate::store::{AuditEntry, AuditQuery, KeyQuery};

#[allow(clippy::all, clippy::pedantic, clippy::nursery, unreachable_pub, missing_docs)]
pub mod pb {
    tonic::include_proto!("tollgate.admin.v1");
    /// For server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));
}

use pb::admin_service_server::{AdminService, AdminServiceServer};

pub struct AdminGrpc {
    service: Service,
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) | ServiceError::InvalidCode(m, _) => Status::invalid_argument(m),
            ServiceError::NotFound(m) => Status::not_found(m),
            ServiceError::Forbidden(m) => Status::permission_denied(m),
            ServiceError::Conflict(m) => Status::aborted(m),
            ServiceError::Internal(err) => {
                tracing::error!(error = %format!("{err:#}"), "admin gRPC internal error");
                Status::internal("Internal error; see the control plane's log.")
            }
        }
    }
}

fn models(m: Option<Vec<String>>) -> Option<pb::ModelList> {
    m.map(|names| pb::ModelList { names })
}

fn json_text(v: Option<serde_json::Value>) -> Option<String> {
    v.map(|v| v.to_string())
}

fn parse_json(text: Option<String>, field: &str) -> Result<Option<serde_json::Value>, Status> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| Status::invalid_argument(format!("'{field}' is not JSON: {e}")))).transpose()
}

fn key(k: KeyView) -> pb::Key {
    pb::Key {
        id: k.id,
        name: k.name,
        role: match k.role {
            Role::Admin => "admin".into(),
            Role::User => "user".into(),
        },
        models: models(k.models),
        created_at: k.created_at,
        expires_at: k.expires_at,
        revoked_at: k.revoked_at,
        user_id: k.user_id,
        team_id: k.team_id,
        tags: k.tags,
        metadata_json: json_text(k.metadata),
        access_groups: k.access_groups,
        blocked: k.blocked,
        rotated_at: k.rotated_at,
        previous_valid_until: k.previous_valid_until,
    }
}

fn created(c: CreatedKey) -> pb::CreatedKey {
    pb::CreatedKey { key: Some(key(c.view)), secret: c.key }
}

fn team(t: TeamRecord) -> pb::Team {
    pb::Team {
        id: t.id,
        name: t.name,
        models: models(t.models),
        access_groups: t.access_groups,
        metadata_json: json_text(t.metadata),
        created_at: t.created_at,
    }
}

fn user(u: UserRecord) -> pb::User {
    pb::User {
        id: u.id,
        name: u.name,
        email: u.email,
        team_id: u.team_id,
        role: u.role.as_str().into(),
        models: models(u.models),
        access_groups: u.access_groups,
        created_at: u.created_at,
    }
}

fn audit(e: AuditEntry) -> pb::AuditEvent {
    pb::AuditEvent {
        id: e.id,
        at: e.at,
        actor: e.actor,
        action: e.action,
        target: e.target,
        team_id: e.team_id,
        source: e.source,
        before_json: json_text(e.before),
        after_json: json_text(e.after),
    }
}

impl AdminGrpc {
    pub fn server(service: Service) -> AdminServiceServer<Self> {
        AdminServiceServer::new(Self { service })
    }

    /// The caller, from the presented key; the peer address goes to the audit trail.
    async fn actor<T>(&self, req: &Request<T>) -> Result<Actor, Status> {
        let authorization = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let unauthenticated =
            || Status::unauthenticated("The admin API needs a key with an admin-API role: authorization: Bearer <key>.");
        let secret = presented_key(authorization, None).ok_or_else(unauthenticated)?;
        let mut actor = self.service.authenticate_admin(secret).await?.ok_or_else(unauthenticated)?;
        actor.source = req.remote_addr().map(|a: SocketAddr| a.ip().to_string());
        Ok(actor)
    }
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn me(&self, req: Request<pb::MeRequest>) -> Result<Response<pb::MeResponse>, Status> {
        let a = self.actor(&req).await?;
        Ok(Response::new(pb::MeResponse { key_id: a.key_id, role: a.role.as_str().into(), user_id: a.user_id, team_id: a.team_id }))
    }

    async fn create_key(&self, req: Request<pb::CreateKeyRequest>) -> Result<Response<pb::CreatedKey>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let new = NewKey {
            name: r.name,
            models: r.models.map(|m| m.names),
            expires_at: r.expires_at,
            role: None,
            user_id: r.user_id,
            team_id: r.team_id,
            tags: r.tags,
            metadata: parse_json(r.metadata_json, "metadata_json")?,
            access_groups: r.access_groups,
        };
        Ok(Response::new(created(self.service.create_key(&actor, new).await?)))
    }

    async fn list_keys(&self, req: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let q = KeyQuery { team_id: r.team_id, user_id: r.user_id, tag: r.tag, include_revoked: None, after_id: r.after_id, limit: r.limit };
        let keys = self.service.list_keys(&actor, q).await?;
        Ok(Response::new(pb::ListKeysResponse { keys: keys.into_iter().map(key).collect() }))
    }

    async fn get_key(&self, req: Request<pb::KeyId>) -> Result<Response<pb::Key>, Status> {
        let actor = self.actor(&req).await?;
        Ok(Response::new(key(self.service.get_key(&actor, &req.into_inner().id).await?)))
    }

    async fn set_key_blocked(&self, req: Request<pb::SetKeyBlockedRequest>) -> Result<Response<pb::Key>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let patch = KeyPatch { blocked: Some(r.blocked), ..Default::default() };
        Ok(Response::new(key(self.service.update_key(&actor, &r.id, patch).await?)))
    }

    async fn rotate_key(&self, req: Request<pb::RotateKeyRequest>) -> Result<Response<pb::CreatedKey>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let rotate = RotateKey { grace_seconds: r.grace_seconds, idempotency_key: r.idempotency_key };
        Ok(Response::new(created(self.service.rotate_key(&actor, &r.id, rotate).await?)))
    }

    async fn revoke_key(&self, req: Request<pb::KeyId>) -> Result<Response<pb::Key>, Status> {
        let actor = self.actor(&req).await?;
        Ok(Response::new(key(self.service.revoke_key(&actor, &req.into_inner().id).await?)))
    }

    async fn create_team(&self, req: Request<pb::CreateTeamRequest>) -> Result<Response<pb::Team>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let new = NewTeam {
            name: r.name,
            models: r.models.map(|m| m.names),
            access_groups: r.access_groups,
            metadata: parse_json(r.metadata_json, "metadata_json")?,
        };
        Ok(Response::new(team(self.service.create_team(&actor, new).await?)))
    }

    async fn list_teams(&self, req: Request<pb::ListTeamsRequest>) -> Result<Response<pb::ListTeamsResponse>, Status> {
        let actor = self.actor(&req).await?;
        Ok(Response::new(pb::ListTeamsResponse { teams: self.service.list_teams(&actor).await?.into_iter().map(team).collect() }))
    }

    async fn create_user(&self, req: Request<pb::CreateUserRequest>) -> Result<Response<pb::User>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let role = UserRole::parse(&r.role)
            .ok_or_else(|| Status::invalid_argument("'role' must be admin, team_admin, member or viewer."))?;
        let new = NewUser { name: r.name, email: r.email, team_id: r.team_id, role, models: r.models.map(|m| m.names), access_groups: r.access_groups };
        Ok(Response::new(user(self.service.create_user(&actor, new).await?)))
    }

    async fn list_users(&self, req: Request<pb::ListUsersRequest>) -> Result<Response<pb::ListUsersResponse>, Status> {
        let actor = self.actor(&req).await?;
        Ok(Response::new(pb::ListUsersResponse { users: self.service.list_users(&actor).await?.into_iter().map(user).collect() }))
    }

    async fn list_audit_events(&self, req: Request<pb::ListAuditEventsRequest>) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let actor = self.actor(&req).await?;
        let r = req.into_inner();
        let q = AuditQuery { actor: r.actor, action: r.action, target: r.target, team_id: r.team_id, before_id: r.before_id, limit: r.limit, ..Default::default() };
        let events = self.service.audit_log(&actor, q).await?;
        Ok(Response::new(pb::ListAuditEventsResponse { events: events.into_iter().map(audit).collect() }))
    }
}
