//! The HTTP side of the control plane (axum): the admin REST API, the demo model, and health.
//! Errors use the OpenAI error format. The data plane's credential endpoint is on the internal
//! listener (`crate::internal`).

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tollgate_contract::keys::presented_key;
use tollgate_contract::{ErrorKind, GatewayError};

use crate::authz::Actor;
use crate::service::{
    AccessGroupPatch, CreatedKey, CredentialInput, CredentialView, KeyPatch, KeyView, NewAccessGroup, NewKey, NewTeam, NewUser, RotateKey, Service,
    ServiceError, TeamPatch, UserPatch,
};
use crate::store::{AuditQuery, KeyQuery};

#[derive(Clone)]
pub struct AppState {
    pub service: Service,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/admin/v1/openapi.json", get(openapi))
        .route("/admin/v1/me", get(me))
        .route("/admin/v1/keys", post(create_key).get(list_keys))
        .route("/admin/v1/keys/bulk", post(create_keys))
        .route("/admin/v1/keys/{id}", get(get_key).patch(update_key).delete(revoke_key))
        .route("/admin/v1/keys/{id}/rotate", post(rotate_key))
        .route("/admin/v1/teams", post(create_team).get(list_teams))
        .route("/admin/v1/teams/{id}", get(get_team).patch(update_team))
        .route("/admin/v1/users", post(create_user).get(list_users))
        .route("/admin/v1/users/{id}", get(get_user).patch(update_user))
        .route("/admin/v1/access-groups", post(create_access_group).get(list_access_groups))
        .route("/admin/v1/access-groups/{name}", axum::routing::patch(update_access_group).delete(delete_access_group))
        .route("/admin/v1/credentials", post(create_credential).get(list_credentials))
        .route("/admin/v1/credentials/{name}", axum::routing::put(replace_credential).delete(delete_credential))
        .route("/admin/v1/spend", get(spend))
        .route("/admin/v1/usage", get(usage_records))
        .route("/admin/v1/prices", get(list_prices).post(add_price))
        .route("/admin/v1/quotas", get(list_quotas).post(create_quota))
        .route("/admin/v1/quotas/{id}", axum::routing::delete(delete_quota))
        .route("/admin/v1/quotas/{id}/state", get(quota_state))
        .route("/admin/v1/models", get(list_models).post(create_model))
        .route("/admin/v1/models/{name}", axum::routing::put(replace_model).delete(delete_model))
        .route("/admin/v1/audit", get(audit))
        .route("/demo/v1/chat/completions", post(crate::demo::chat))
        .route("/demo/v1/embeddings", post(crate::demo::embeddings))
        .fallback(|| async { ApiError(GatewayError::new(ErrorKind::NotFound, "Unknown admin API path.").code("unknown_url")) })
        .with_state(state)
}

pub struct ApiError(pub(crate) GatewayError);

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, [(header::CONTENT_TYPE, "application/json")], self.0.to_openai_json()).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => Self(GatewayError::new(ErrorKind::InvalidRequest, m)),
            ServiceError::InvalidCode(m, code) => {
                let e = GatewayError::new(ErrorKind::InvalidRequest, m);
                Self(match code {
                    Some(c) => e.code(c),
                    None => e,
                })
            }
            ServiceError::NotFound(m) => Self(GatewayError::new(ErrorKind::NotFound, m)),
            ServiceError::Forbidden(m) => Self(GatewayError::new(ErrorKind::Permission, m).code("forbidden")),
            ServiceError::Unauthenticated => Self(GatewayError::new(ErrorKind::Authentication, "Invalid API key.").code("invalid_api_key")),
            ServiceError::Conflict(m) => Self(GatewayError::new(ErrorKind::InvalidRequest, m).code("conflict")),
            ServiceError::Internal(err) => {
                tracing::error!(error = %format!("{err:#}"), "admin API internal error");
                Self(GatewayError::new(ErrorKind::Internal, "Internal error; see the control plane's log."))
            }
        }
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

type Peer = ConnectInfo<std::net::SocketAddr>;

/// The caller, from the key it presented (any active key whose owner has an admin-API role).
pub(crate) async fn admin(state: &AppState, headers: &HeaderMap, peer: &Peer) -> Result<Actor, ApiError> {
    let unauthorized = || {
        ApiError(
            GatewayError::new(
                ErrorKind::Authentication,
                "The admin API needs a key with an admin-API role: Authorization: Bearer <key>.",
            )
            .code("invalid_admin_key"),
        )
    };
    let secret = presented_key(header_str(headers, "authorization"), header_str(headers, "x-api-key")).ok_or_else(unauthorized)?;
    let mut actor = state.service.authenticate_admin(secret).await?.ok_or_else(unauthorized)?;
    actor.source = Some(peer.0.ip().to_string());
    Ok(actor)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(GatewayError::new(ErrorKind::InvalidRequest, format!("Invalid JSON body: {e}.")).code("invalid_json"))
    })
}

/// The query string as a typed filter; unknown parameters are a 400 naming them.
pub(crate) fn parse_query<T: serde::de::DeserializeOwned + Default>(raw: Option<String>) -> Result<T, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else { return Ok(T::default()) };
    let mut map = serde_json::Map::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k), decode(v));
        let value = match v.parse::<i64>() {
            Ok(n) if !matches!(k.as_str(), "actor" | "action" | "target" | "team_id" | "user_id" | "tag" | "after_id") => serde_json::Value::from(n),
            _ if v == "true" || v == "false" => serde_json::Value::Bool(v == "true"),
            _ => serde_json::Value::String(v),
        };
        map.insert(k, value);
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
        ApiError(GatewayError::new(ErrorKind::InvalidRequest, format!("Invalid query: {e}.")).code("invalid_query"))
    })
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space, `%XX` a byte).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|&c| char::from(c).to_digit(16));
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn data<T: serde::Serialize>(items: Vec<T>) -> Response {
    Json(json!({ "data": items })).into_response()
}

#[utoipa::path(get, path = "/admin/v1/me", tag = "caller", responses((status = 200, description = "The caller: key id, role, user, team, allowance"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn me(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Result<Response, ApiError> {
    let a = admin(&state, &headers, &peer).await?;
    Ok(Json(json!({"key_id": a.key_id, "role": a.role, "user_id": a.user_id, "team_id": a.team_id, "models": a.models, "expires_at": a.expires_at})).into_response())
}

#[utoipa::path(post, path = "/admin/v1/keys", tag = "keys", request_body = NewKey, responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn create_key(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let req: NewKey = parse_json(&body)?;
    let created = state.service.create_key(&actor, req).await?;
    tracing::info!(key_id = %created.view.id, by = %actor.key_id, "key created");
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[utoipa::path(get, path = "/admin/v1/keys", tag = "keys", params(KeyQuery), responses((status = 200, description = "`{\"data\": [KeyView]}`"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn list_keys(State(state): State<AppState>, peer: Peer, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let q: KeyQuery = parse_query(q)?;
    Ok(data(state.service.list_keys(&actor, q).await?))
}

#[utoipa::path(get, path = "/admin/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "The object's id")), responses((status = 200, body = KeyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_key(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(Json(state.service.get_key(&actor, &id).await?).into_response())
}

#[utoipa::path(patch, path = "/admin/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "The object's id")), request_body = KeyPatch, responses((status = 200, body = KeyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn update_key(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let patch: KeyPatch = parse_json(&body)?;
    let key = state.service.update_key(&actor, &id, patch).await?;
    tracing::info!(key_id = %id, by = %actor.key_id, blocked = key.blocked, "key updated");
    Ok(Json(key).into_response())
}

#[utoipa::path(post, path = "/admin/v1/keys/{id}/rotate", tag = "keys", params(("id" = String, Path, description = "The object's id")), request_body = RotateKey, responses((status = 200, body = CreatedKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn rotate_key(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let mut req: RotateKey = if body.is_empty() { RotateKey::default() } else { parse_json(&body)? };
    if req.idempotency_key.is_none() {
        req.idempotency_key = header_str(&headers, "idempotency-key").map(str::to_owned);
    }
    let rotated = state.service.rotate_key(&actor, &id, req).await?;
    tracing::info!(key_id = %id, by = %actor.key_id, "key rotated");
    Ok(Json(rotated).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "The object's id")), responses((status = 200, body = KeyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn revoke_key(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let key = state.service.revoke_key(&actor, &id).await?;
    tracing::info!(key_id = %id, by = %actor.key_id, "key revoked");
    Ok(Json(key).into_response())
}

#[utoipa::path(post, path = "/admin/v1/teams", tag = "teams", request_body = NewTeam, responses((status = 201, body = crate::model::TeamRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn create_team(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let team = state.service.create_team(&actor, parse_json::<NewTeam>(&body)?).await?;
    Ok((StatusCode::CREATED, Json(team)).into_response())
}

#[utoipa::path(get, path = "/admin/v1/teams", tag = "teams", responses((status = 200, description = "`{\"data\": [TeamRecord]}`"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn list_teams(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(data(state.service.list_teams(&actor).await?))
}

#[utoipa::path(get, path = "/admin/v1/teams/{id}", tag = "teams", params(("id" = String, Path, description = "The object's id")), responses((status = 200, body = crate::model::TeamRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_team(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(Json(state.service.get_team(&actor, &id).await?).into_response())
}

#[utoipa::path(patch, path = "/admin/v1/teams/{id}", tag = "teams", params(("id" = String, Path, description = "The object's id")), request_body = TeamPatch, responses((status = 200, body = crate::model::TeamRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn update_team(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(Json(state.service.update_team(&actor, &id, parse_json::<TeamPatch>(&body)?).await?).into_response())
}

#[utoipa::path(post, path = "/admin/v1/users", tag = "users", request_body = NewUser, responses((status = 201, body = crate::model::UserRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn create_user(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let user = state.service.create_user(&actor, parse_json::<NewUser>(&body)?).await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

#[utoipa::path(get, path = "/admin/v1/users", tag = "users", responses((status = 200, description = "`{\"data\": [UserRecord]}`"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn list_users(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(data(state.service.list_users(&actor).await?))
}

#[utoipa::path(get, path = "/admin/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "The object's id")), responses((status = 200, body = crate::model::UserRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_user(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(Json(state.service.get_user(&actor, &id).await?).into_response())
}

#[utoipa::path(patch, path = "/admin/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "The object's id")), request_body = UserPatch, responses((status = 200, body = crate::model::UserRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn update_user(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(Json(state.service.update_user(&actor, &id, parse_json::<UserPatch>(&body)?).await?).into_response())
}

#[utoipa::path(get, path = "/admin/v1/models", tag = "models", responses((status = 200, description = "`{\"data\": [ModelView]}`"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn list_models(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(data(state.service.list_models_as(&actor).await?))
}

#[utoipa::path(get, path = "/admin/v1/audit", tag = "audit", params(AuditQuery), responses((status = 200, description = "`{\"data\": [AuditEntry]}`"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn audit(State(state): State<AppState>, peer: Peer, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let q: AuditQuery = parse_query(q)?;
    Ok(data(state.service.audit_log(&actor, q).await?))
}

#[utoipa::path(post, path = "/admin/v1/access-groups", tag = "access groups", request_body = NewAccessGroup, responses((status = 201, body = crate::model::AccessGroup), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn create_access_group(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let group = state.service.create_access_group(&actor, parse_json::<NewAccessGroup>(&body)?).await?;
    Ok((StatusCode::CREATED, Json(group)).into_response())
}

#[utoipa::path(get, path = "/admin/v1/access-groups", tag = "access groups", responses((status = 200, description = "`{\"data\": [AccessGroup]}`"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn list_access_groups(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(data(state.service.list_access_groups(&actor).await?))
}

#[utoipa::path(patch, path = "/admin/v1/access-groups/{name}", tag = "access groups", params(("name" = String, Path, description = "The object's name")), request_body = AccessGroupPatch, responses((status = 200, body = crate::model::AccessGroup), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn update_access_group(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let group = state.service.update_access_group(&actor, &name, Some(parse_json::<AccessGroupPatch>(&body)?)).await?;
    Ok(Json(group).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/access-groups/{name}", tag = "access groups", params(("name" = String, Path, description = "The object's name")), responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn delete_access_group(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(name): Path<String>) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    state.service.update_access_group(&actor, &name, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/admin/v1/credentials", tag = "credentials", request_body = CredentialInput, responses((status = 201, body = CredentialView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn create_credential(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let input: CredentialInput = parse_json(&body)?;
    let name = input.name.clone().ok_or_else(|| ApiError(GatewayError::new(ErrorKind::InvalidRequest, "Missing required parameter: 'name'.").param("name")))?;
    let view = state.service.put_credential(&actor, &name, input, false).await?;
    tracing::info!(credential = %name, by = %actor.key_id, "credential created");
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(get, path = "/admin/v1/credentials", tag = "credentials", responses((status = 200, description = "`{\"data\": [CredentialView]}`"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn list_credentials(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(data(state.service.list_credentials(&actor).await?))
}

#[utoipa::path(put, path = "/admin/v1/credentials/{name}", tag = "credentials", params(("name" = String, Path, description = "The object's name")), request_body = CredentialInput, responses((status = 200, body = CredentialView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn replace_credential(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let view = state.service.put_credential(&actor, &name, parse_json(&body)?, true).await?;
    tracing::info!(credential = %name, by = %actor.key_id, "credential replaced");
    Ok(Json(view).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/credentials/{name}", tag = "credentials", params(("name" = String, Path, description = "The object's name")), responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn delete_credential(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(name): Path<String>) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    state.service.delete_credential(&actor, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/admin/v1/models", tag = "models", request_body = crate::model::ModelSpec, responses((status = 201, description = "`{\"name\"}`"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn create_model(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let spec: crate::model::ModelSpec = parse_json(&body)?;
    let name = spec.name.clone();
    state.service.put_model(&actor, &name, Some(spec), false).await?;
    tracing::info!(model = %name, by = %actor.key_id, "model created");
    Ok((StatusCode::CREATED, Json(json!({"name": name}))).into_response())
}

#[utoipa::path(put, path = "/admin/v1/models/{name}", tag = "models", params(("name" = String, Path, description = "The object's name")), request_body = crate::model::ModelSpec, responses((status = 200, description = "`{\"name\"}`"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn replace_model(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    state.service.put_model(&actor, &name, Some(parse_json(&body)?), true).await?;
    Ok(Json(json!({"name": name})).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/models/{name}", tag = "models", params(("name" = String, Path, description = "The object's name")), responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn delete_model(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(name): Path<String>) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    state.service.put_model(&actor, &name, None, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An error, in OpenAI's format (for the OpenAPI document).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `not_found_error`...
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    /// e.g. `invalid_admin_key`, `forbidden`, `conflict`, `forbidden_destination`, `invalid_query`
    pub code: Option<String>,
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// The admin API, as served: every handler above with its types.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Tollgate admin API", description = "Teams, users, keys, access groups, credentials, models and the audit trail. Authenticate with `Authorization: Bearer <key>`; what a key may do follows its user's role and team."),
    paths(
        me, create_key, create_keys, list_keys, get_key, update_key, rotate_key, revoke_key, create_team, list_teams, get_team, update_team,
        create_user, list_users, get_user, update_user, list_models, create_model, replace_model, delete_model, audit,
        create_access_group, list_access_groups, update_access_group, delete_access_group, create_credential,
        list_credentials, replace_credential, delete_credential, spend, usage_records, list_prices, add_price, list_quotas, create_quota, delete_quota, quota_state
    ),
    components(schemas(ErrorBody, ErrorDetail, crate::service::ModelView, crate::store::AuditEntry, crate::store::SpendRow, crate::store::UsageRow, crate::store::QuotaSpec)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// `GET /admin/v1/openapi.json`: the document (no key needed: it holds no data).
async fn openapi() -> Response {
    use utoipa::OpenApi;
    match ApiDoc::openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => ApiError(GatewayError::new(ErrorKind::Internal, format!("could not render the OpenAPI document: {e}"))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    /// Every route of the admin router is in the document, with its methods, and nothing else.
    #[test]
    fn the_openapi_document_lists_every_admin_route() {
        let doc = super::ApiDoc::openapi();
        let documented: std::collections::BTreeSet<(String, String)> = doc
            .paths
            .paths
            .iter()
            .flat_map(|(path, item)| {
                let methods = [
                    ("get", item.get.is_some()),
                    ("post", item.post.is_some()),
                    ("put", item.put.is_some()),
                    ("patch", item.patch.is_some()),
                    ("delete", item.delete.is_some()),
                ];
                methods.into_iter().filter(|(_, on)| *on).map(move |(m, _)| (path.clone(), m.to_owned()))
            })
            .collect();
        // The routes as registered in `router` (this file's source, the one place they are).
        let source = include_str!("admin.rs");
        let mut routed = std::collections::BTreeSet::new();
        for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(\"/admin/v1/")) {
            let path = line.split('"').nth(1).unwrap_or_default().to_owned();
            if path.ends_with("openapi.json") {
                continue;
            }
            for m in ["get", "post", "put", "patch", "delete"] {
                if line.contains(&format!("{m}(")) {
                    routed.insert((path.clone(), m.to_owned()));
                }
            }
        }
        assert!(!routed.is_empty());
        assert_eq!(documented, routed);
        let json = doc.to_json().unwrap();
        assert!(json.contains("\"bearer\"") && json.contains("KeyView") && json.contains("CredentialInput"));
    }
}

#[utoipa::path(get, path = "/admin/v1/spend", tag = "spend", params(crate::store::SpendQuery), responses((status = 200, description = "`{\"data\": [SpendRow]}`"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn spend(State(state): State<AppState>, peer: Peer, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let q: crate::store::SpendQuery = parse_query(q)?;
    Ok(data(state.service.spend(&actor, q).await?))
}

#[utoipa::path(get, path = "/admin/v1/usage", tag = "spend", params(crate::store::UsageQuery), responses((status = 200, description = "`{\"data\": [UsageRow]}`, newest first"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn usage_records(State(state): State<AppState>, peer: Peer, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let q: crate::store::UsageQuery = parse_query(q)?;
    Ok(data(state.service.usage_records(&actor, q).await?))
}

#[utoipa::path(get, path = "/admin/v1/quotas", tag = "quotas", responses((status = 200, description = "`{\"data\": [QuotaSpec]}`"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn list_quotas(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(data(state.service.list_quotas(&actor).await?))
}

#[utoipa::path(post, path = "/admin/v1/quotas", tag = "quotas", request_body = crate::store::QuotaSpec, responses((status = 201, body = crate::store::QuotaSpec), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn create_quota(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let q = state.service.create_quota(&actor, parse_json(&body)?).await?;
    Ok((StatusCode::CREATED, Json(q)).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/quotas/{id}", tag = "quotas", params(("id" = String, Path, description = "The quota's id")), responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn delete_quota(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    state.service.delete_quota(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/admin/v1/quotas/{id}/state", tag = "quotas", params(("id" = String, Path, description = "The quota's id")), responses((status = 200, body = crate::service::QuotaState), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn quota_state(State(state): State<AppState>, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(Json(state.service.quota_state(&actor, &id).await?).into_response())
}

#[utoipa::path(get, path = "/admin/v1/prices", tag = "spend", responses((status = 200, description = "`{\"version\", \"overrides\": [PriceEntry], \"defaults\": [PriceEntry]}`"), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
async fn list_prices(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    Ok(Json(state.service.list_prices(&actor).await?).into_response())
}

#[utoipa::path(post, path = "/admin/v1/prices", tag = "spend", request_body = crate::metering::prices::PriceEntry, responses((status = 201, description = "`{\"version\", \"entry\"}`"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn add_price(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let out = state.service.add_price(&actor, parse_json(&body)?).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// `{"keys": [NewKey, ...]}`
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkKeys {
    pub keys: Vec<NewKey>,
}

#[utoipa::path(post, path = "/admin/v1/keys/bulk", tag = "keys", request_body = BulkKeys, responses((status = 201, description = "`{\"data\": [CreatedKey]}`: every secret, once"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn create_keys(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers, &peer).await?;
    let req: BulkKeys = parse_json(&body)?;
    let created = state.service.create_keys(&actor, req.keys).await?;
    tracing::info!(keys = created.len(), by = %actor.key_id, "keys created in bulk");
    Ok((StatusCode::CREATED, data(created)).into_response())
}
