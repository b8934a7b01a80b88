//! The HTTP side of the control plane (axum): the admin REST API, the demo model, and health.
//! Errors use the OpenAI error format. The data plane's credential endpoint is on the internal
//! listener (`crate::internal`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;
use tollgate_contract::keys::presented_key;
use tollgate_contract::{ErrorKind, GatewayError};

use crate::service::{Actor, NewKey, Service, ServiceError};

#[derive(Clone)]
pub struct AppState {
    pub service: Service,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/admin/v1/keys", post(create_key).get(list_keys))
        .route("/admin/v1/keys/{id}", delete(revoke_key))
        .route("/admin/v1/models", get(list_models))
        .route("/admin/v1/audit", get(audit))
        .route("/demo/v1/chat/completions", post(crate::demo::chat))
        .route("/demo/v1/embeddings", post(crate::demo::embeddings))
        .fallback(|| async { ApiError(GatewayError::new(ErrorKind::NotFound, "Unknown admin API path.").code("unknown_url")) })
        .with_state(state)
}

pub struct ApiError(GatewayError);

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
            ServiceError::NotFound(m) => Self(GatewayError::new(ErrorKind::NotFound, m)),
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

async fn admin(state: &AppState, headers: &HeaderMap) -> Result<Actor, ApiError> {
    let unauthorized = || {
        ApiError(
            GatewayError::new(ErrorKind::Authentication, "The admin API needs an admin key: Authorization: Bearer <admin key>.")
                .code("invalid_admin_key"),
        )
    };
    let secret = presented_key(header_str(headers, "authorization"), header_str(headers, "x-api-key")).ok_or_else(unauthorized)?;
    state.service.authenticate_admin(secret).await?.ok_or_else(unauthorized)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(GatewayError::new(ErrorKind::InvalidRequest, format!("Invalid JSON body: {e}.")).code("invalid_json"))
    })
}

async fn create_key(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers).await?;
    let req: NewKey = parse_json(&body)?;
    let created = state.service.create_key(&actor, req).await?;
    tracing::info!(key_id = %created.view.id, by = %actor.key_id, "key created");
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn list_keys(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin(&state, &headers).await?;
    Ok(Json(json!({ "data": state.service.list_keys().await? })).into_response())
}

async fn revoke_key(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let actor = admin(&state, &headers).await?;
    let key = state.service.revoke_key(&actor, &id).await?;
    tracing::info!(key_id = %id, by = %actor.key_id, "key revoked");
    Ok(Json(key).into_response())
}

async fn list_models(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin(&state, &headers).await?;
    Ok(Json(json!({ "data": state.service.list_models().await? })).into_response())
}

async fn audit(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin(&state, &headers).await?;
    Ok(Json(json!({ "data": state.service.audit_log().await? })).into_response())
}
