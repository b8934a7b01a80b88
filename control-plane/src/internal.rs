//! The internal listener (`--internal-addr`), for the data plane only and apart from the admin
//! API: `GET /internal/v1/credentials`, authenticated by the data-plane token, served from the
//! document the publisher keeps in memory (ETag = its version; `If-None-Match` → 304).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;
use tollgate_contract::keys::presented_key;
use tollgate_contract::{ErrorKind, GatewayError};

use crate::admin::ApiError;
use crate::publisher::Publisher;

#[derive(Clone)]
pub struct InternalState {
    pub publisher: Arc<Publisher>,
    /// Usage ingestion.
    pub service: crate::service::Service,
    /// The token the data plane presents to fetch credentials.
    pub data_plane_token: Arc<String>,
}

pub fn router(state: InternalState) -> Router {
    Router::new()
        .route(tollgate_contract::contract::CREDENTIALS_PATH, get(credentials))
        .route(tollgate_contract::contract::USAGE_PATH, post(usage))
        .fallback(|| async { ApiError::from(GatewayError::new(ErrorKind::NotFound, "Unknown path.").code("unknown_url")) })
        .with_state(state)
}

fn data_plane(state: &InternalState, headers: &HeaderMap) -> Result<(), ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let presented = presented_key(authorization, None).unwrap_or("");
    if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(state.data_plane_token.as_bytes())) {
        return Err(ApiError::from(GatewayError::new(ErrorKind::Authentication, "Invalid data-plane token.")));
    }
    Ok(())
}

/// `POST /internal/v1/usage`: a batch of usage records, stored once (idempotent by request id
/// and attempt); answers how many were new.
pub async fn usage(State(state): State<InternalState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    data_plane(&state, &headers)?;
    let batch: tollgate_contract::usage::UsageBatch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::from(GatewayError::new(ErrorKind::InvalidRequest, format!("Invalid usage batch: {e}.")).code("invalid_json"))
    })?;
    let ack = state.service.ingest_usage(batch).await?;
    Ok(axum::Json(ack).into_response())
}

pub async fn credentials(State(state): State<InternalState>, headers: HeaderMap) -> Result<Response, ApiError> {
    data_plane(&state, &headers)?;
    let doc = state.publisher.credentials();
    let etag = format!("\"{}\"", doc.version);
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json".to_owned()), (header::ETAG, etag), (header::CACHE_CONTROL, "no-store".to_owned())],
        doc.body.clone(),
    )
        .into_response())
}
