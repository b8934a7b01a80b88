//! The internal listener (`--internal-addr`), for the data plane only and apart from the admin
//! API: `GET /internal/v1/credentials`, authenticated by the data-plane token, served from the
//! document the publisher keeps in memory (ETag = its version; `If-None-Match` → 304);
//! `POST /internal/v1/keys?wait=N`, the key table's long poll (same token; the body is the
//! service VM's manifest; the answer the shards that differ from it, or 304 when none did for N
//! seconds); `POST /internal/v1/usage` (usage batches, same token); and `GET /v1/usage`, a key
//! holder's own spend, which the gateway filter routes here and which the key itself
//! authenticates.

use std::sync::Arc;

use std::time::Duration;

use axum::extract::{Query, RawQuery, State};
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
    /// Becomes true when the process is stopping: a held key poll then answers at once, so that
    /// a graceful shutdown does not wait out the poll.
    pub closing: tokio::sync::watch::Receiver<bool>,
    pub authority: crate::authority::Authority,
}

pub fn router(state: InternalState) -> Router {
    Router::new()
        .route(tollgate_contract::contract::CREDENTIALS_PATH, get(credentials))
        .route(tollgate_contract::contract::KEYS_PATH, post(keys))
        .route(tollgate_contract::contract::USAGE_PATH, post(usage))
        .route(tollgate_contract::contract::KEY_USAGE_PATH, get(key_usage))
        .route(tollgate_contract::quota_lease::GRANTS_PATH, post(grants).get(grant_stats))
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

/// `POST /internal/v1/quota/grants`: leases of quotas (the quota authority), for the service VM
/// (data-plane token) or a worker whose request waits (the grant ticket the service VM minted).
pub async fn grants(State(state): State<InternalState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let now = crate::clock::unix_now();
    let ticket = headers.get(tollgate_contract::quota_lease::HEADER_TICKET).and_then(|v| v.to_str().ok());
    let by_ticket = ticket.is_some_and(|t| tollgate_contract::quota_lease::check_ticket(&state.data_plane_token, t, u64::try_from(now).unwrap_or(0)));
    if !by_ticket {
        data_plane(&state, &headers)?;
    }
    let req: tollgate_contract::quota_lease::GrantRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::from(GatewayError::new(ErrorKind::InvalidRequest, format!("Invalid grant request: {e}.")).code("invalid_json"))
    })?;
    let answer = state.authority.grant(&state.service, &req, now).await.map_err(crate::service::ServiceError::Internal)?;
    Ok(axum::Json(answer).into_response())
}

/// `GET /internal/v1/quota/grants`: the authority's counters (data-plane token).
pub async fn grant_stats(State(state): State<InternalState>, headers: HeaderMap) -> Result<Response, ApiError> {
    data_plane(&state, &headers)?;
    Ok(axum::Json(state.authority.stats()).into_response())
}

/// The longest a key poll is held.
const MAX_WAIT_SECONDS: u64 = 60;

#[derive(serde::Deserialize)]
pub struct KeysQuery {
    #[serde(default)]
    wait: u64,
}

/// `POST /internal/v1/keys?wait=N`: the shards that differ from the manifest in the body, at
/// once when some do, else as soon as a change makes some differ, else 304 after N seconds.
pub async fn keys(State(state): State<InternalState>, headers: HeaderMap, Query(q): Query<KeysQuery>, body: Bytes) -> Result<Response, ApiError> {
    data_plane(&state, &headers)?;
    let have = tollgate_contract::keytable::Manifest::decode(&body).map_err(|e| {
        ApiError::from(GatewayError::new(ErrorKind::InvalidRequest, format!("Invalid key manifest: {e}.")).code("invalid_manifest"))
    })?;
    let mut table = state.publisher.key_table();
    let mut closing = state.closing.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(MAX_WAIT_SECONDS));
    loop {
        let update = table.borrow_and_update().update_for(&have);
        if let Some(update) = update {
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], update).into_response());
        }
        if *closing.borrow_and_update() {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, table.changed()) => match changed {
                Ok(Ok(())) => {}
                // The wait is over (or the publisher is gone): nothing changed.
                Ok(Err(_)) | Err(_) => return Ok(StatusCode::NOT_MODIFIED.into_response()),
            },
            _ = closing.changed() => {}
        }
    }
}

/// `POST /internal/v1/usage`: a batch of usage records, stored once (idempotent by request id
/// and attempt); answers how many were new.
pub async fn usage(State(state): State<InternalState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    data_plane(&state, &headers)?;
    // The data plane sends the binary form; JSON (`{"records": [...]}`) is taken too.
    let binary = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == tollgate_contract::usage::BINARY_CONTENT_TYPE.as_bytes());
    let batch: tollgate_contract::usage::UsageBatch = if binary {
        tollgate_contract::usage::decode_batch(&body)
            .ok_or_else(|| ApiError::from(GatewayError::new(ErrorKind::InvalidRequest, "Invalid usage batch: the binary frames do not add up.").code("invalid_batch")))?
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::from(GatewayError::new(ErrorKind::InvalidRequest, format!("Invalid usage batch: {e}.")).code("invalid_json"))
        })?
    };
    let ack = state.service.ingest_usage(batch).await?;
    Ok(axum::Json(ack).into_response())
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyUsageQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /v1/usage` (routed here by the gateway filter once it has checked the key): the
/// presenting key's own usage and spend per day (`?from=YYYY-MM-DD&to=...`), authenticated by
/// the key itself.
pub async fn key_usage(State(state): State<InternalState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let header = |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok());
    let secret = presented_key(header(header::AUTHORIZATION.as_str()), header("x-api-key"))
        .ok_or_else(|| ApiError::from(crate::service::ServiceError::Unauthenticated))?
        .to_owned();
    let q: KeyUsageQuery = crate::admin::parse_query(q)?;
    for day in [&q.from, &q.to].into_iter().flatten() {
        let ok = day.len() == 10 && day.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
        if !ok {
            return Err(ApiError::from(GatewayError::new(ErrorKind::InvalidRequest, "'from' and 'to' are days, YYYY-MM-DD.").code("invalid_query")));
        }
    }
    let view = state.service.key_usage(&secret, q.from, q.to).await?;
    Ok(axum::Json(view).into_response())
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
