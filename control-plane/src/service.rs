//! The service layer: every admin operation, used by the REST API (and the gRPC API to come).
//! It validates, writes the store, records the audit trail, and republishes the snapshot.

use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use tollgate_contract::keys::{digest_hex, Role, KEY_PREFIX};

use crate::clock::unix_now;
use crate::model::{self, DeploymentSpec, KeyRecord};
use crate::publisher::Publisher;
use crate::store::{AuditEntry, Store};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

#[derive(Clone)]
pub struct Service {
    pub store: Store,
    pub publisher: Arc<Publisher>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub role: Option<Role>,
}

/// A key as shown by the API: never the secret or its digest.
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub models: Option<Vec<String>>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> Self {
        Self {
            id: k.id,
            name: k.name,
            role: k.role,
            models: k.models,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// The answer to a key creation: the only time the secret is shown.
#[derive(Debug, Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    pub key: String,
}

/// A model as shown by the admin API.
#[derive(Debug, Serialize)]
pub struct ModelView {
    pub name: String,
    /// As stored (empty when the stored row does not parse).
    pub deployments: Vec<DeploymentSpec>,
    /// Whether the gateway serves it (at least one deployment can be served).
    pub served: bool,
    /// What is not served, and why.
    pub problems: Vec<ModelProblem>,
}

#[derive(Debug, Serialize)]
pub struct ModelProblem {
    /// Index into `deployments`; `null`: the model as a whole.
    pub deployment: Option<usize>,
    pub reason: String,
}

/// Who is calling the admin API (by public key id).
#[derive(Debug, Clone)]
pub struct Actor {
    pub key_id: String,
}

pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

fn new_key_id() -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    format!("key_{}", hex::encode(bytes))
}

impl Service {
    /// The admin key presented on the admin API, if it is an active admin key.
    pub async fn authenticate_admin(&self, secret: &str) -> Result<Option<Actor>, ServiceError> {
        let Some(k) = self.store.key_by_digest(&digest_hex(secret)).await? else { return Ok(None) };
        let now = unix_now();
        let active = k.revoked_at.is_none() && k.expires_at.is_none_or(|t| now < t);
        Ok((active && k.role == Role::Admin).then_some(Actor { key_id: k.id }))
    }

    /// Creates the first admin key if there is none. Returns the secret when it was generated
    /// here (the caller shows it once); `seed` is used instead when given.
    pub async fn ensure_admin_key(&self, seed: Option<String>) -> Result<Option<String>, ServiceError> {
        if self.store.count_admin_keys().await? > 0 {
            return Ok(None);
        }
        let generated = seed.is_none();
        let secret = seed.unwrap_or_else(new_secret);
        let rec = KeyRecord {
            id: new_key_id(),
            name: "admin (created on first start)".into(),
            digest: digest_hex(&secret),
            role: Role::Admin,
            models: None,
            created_at: unix_now(),
            expires_at: None,
            revoked_at: None,
        };
        self.store.insert_key(&rec).await?;
        self.store.audit(rec.created_at, "system", "key.create", &rec.id).await?;
        self.publisher.refresh().await?;
        Ok(generated.then_some(secret))
    }

    pub async fn create_key(&self, actor: &Actor, req: NewKey) -> Result<CreatedKey, ServiceError> {
        let name = req.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(ServiceError::Invalid("'name' must be 1 to 200 characters.".into()));
        }
        let now = unix_now();
        if let Some(t) = req.expires_at {
            if t <= 0 {
                return Err(ServiceError::Invalid("'expires_at' must be a unix time in seconds.".into()));
            }
        }
        if let Some(models) = &req.models {
            if models.iter().any(|m| m.is_empty()) {
                return Err(ServiceError::Invalid("'models' must not contain empty names.".into()));
            }
        }
        let secret = new_secret();
        let rec = KeyRecord {
            id: new_key_id(),
            name: name.to_owned(),
            digest: digest_hex(&secret),
            role: req.role.unwrap_or_default(),
            models: req.models,
            created_at: now,
            expires_at: req.expires_at,
            revoked_at: None,
        };
        self.store.insert_key(&rec).await?;
        self.store.audit(now, &actor.key_id, "key.create", &rec.id).await?;
        self.publisher.refresh().await?;
        Ok(CreatedKey { view: rec.into(), key: secret })
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyView>, ServiceError> {
        Ok(self.store.keys(true).await?.into_iter().map(KeyView::from).collect())
    }

    pub async fn revoke_key(&self, actor: &Actor, id: &str) -> Result<KeyView, ServiceError> {
        let now = unix_now();
        if !self.store.revoke_key(id, now).await? {
            return Err(ServiceError::NotFound(format!("No active key with id '{id}'.")));
        }
        self.store.audit(now, &actor.key_id, "key.revoke", id).await?;
        self.publisher.refresh().await?;
        let key = self.store.keys(true).await?.into_iter().find(|k| k.id == id);
        key.map(KeyView::from).ok_or_else(|| ServiceError::NotFound(format!("No key with id '{id}'.")))
    }

    /// Every stored model as written, whether it is served, and what of it is not and why.
    pub async fn list_models(&self) -> Result<Vec<ModelView>, ServiceError> {
        let rows = self.store.load().await?;
        let resolved = model::resolve(&rows, self.publisher.secrets(), self.publisher.own_ports());
        Ok(rows
            .models
            .into_iter()
            .map(|row| ModelView {
                served: resolved.model.models.iter().any(|m| m.name == row.name),
                problems: resolved.problems_of(&row.name).map(|p| ModelProblem { deployment: p.deployment, reason: p.reason.clone() }).collect(),
                deployments: row.spec.map(|s| s.deployments).unwrap_or_default(),
                name: row.name,
            })
            .collect())
    }

    pub async fn audit_log(&self) -> Result<Vec<AuditEntry>, ServiceError> {
        Ok(self.store.audit_log(200).await?)
    }
}
