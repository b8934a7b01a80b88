//! The service layer: every admin operation, used by the REST API and the gRPC API alike.
//! It validates, writes the store, records the audit trail, and republishes the snapshot.

use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use tollgate_contract::keys::{digest_hex, Role, KEY_PREFIX};

use crate::clock::unix_now;
use crate::model::{self, DeploymentSpec, KeyRecord, TeamRecord, UserRecord, UserRole};
use crate::publisher::Publisher;
use crate::authz::{self, Actor, Object, Verb};
use crate::model::access;
use crate::store::{Audit, AuditEntry, AuditQuery, KeyQuery, Store};

mod access_groups;
mod credentials;
mod keys;
mod metering;
mod models;
mod quotas;
mod teams;

pub use access_groups::*;
pub use credentials::*;
pub use keys::*;
pub use quotas::QuotaState;
pub use teams::*;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    /// Invalid, with an error code for the client (e.g. `forbidden_destination`).
    #[error("{0}")]
    InvalidCode(String, Option<&'static str>),
    #[error("{0}")]
    NotFound(String),
    /// The caller's role or tenant does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// The presented key is unknown, revoked, blocked or expired.
    #[error("invalid key")]
    Unauthenticated,
    /// A concurrent change, or an idempotent retry that cannot be answered again.
    #[error("{0}")]
    Conflict(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// (key id, idempotency key) -> (kept until, the answer).
pub type RotationCache = std::collections::HashMap<(String, String), (i64, CreatedKey)>;

#[derive(Clone)]
pub struct Service {
    pub store: Store,
    pub publisher: Arc<Publisher>,
    /// Rotations answered in this process, by key id and idempotency key: a retry gets the same
    /// answer (the new secret included) for as long as the old secret's grace lasts.
    pub rotations: Arc<std::sync::Mutex<RotationCache>>,
}

/// A model as shown by the admin API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelView {
    pub name: String,
    /// As stored (empty when the stored row does not parse).
    pub deployments: Vec<DeploymentSpec>,
    /// Whether the gateway serves it (at least one deployment can be served).
    pub served: bool,
    /// What is not served, and why.
    pub problems: Vec<ModelProblem>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelProblem {
    /// Index into `deployments`; `null`: the model as a whole.
    pub deployment: Option<usize>,
    pub reason: String,
}

pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// A public id: `prefix_` and 16 hex digits.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// A present field (even `null`) is `Some`.
fn some<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn checked_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ServiceError::Invalid("'name' must be 1 to 200 characters.".into()));
    }
    Ok(name.to_owned())
}

fn checked_models(models: Option<&Vec<String>>) -> Result<(), ServiceError> {
    if models.is_some_and(|m| m.iter().any(|m| m.is_empty() || m.len() > 200)) {
        return Err(ServiceError::Invalid("'models' must hold model names of 1 to 200 characters.".into()));
    }
    Ok(())
}

impl Service {
    pub fn new(store: Store, publisher: Arc<Publisher>) -> Self {
        Self { store, publisher, rotations: Arc::default() }
    }

    /// The caller of the admin API from the key it presented: an active, unblocked key that is
    /// an admin key, or that belongs to a user (whose role it acts with). `None` otherwise.
    pub async fn authenticate_admin(&self, secret: &str) -> Result<Option<Actor>, ServiceError> {
        let now = unix_now();
        let Some(k) = self.store.key_by_digest(&digest_hex(secret), now).await? else { return Ok(None) };
        let active = k.revoked_at.is_none() && !k.blocked && k.expires_at.is_none_or(|t| now < t);
        if !active {
            return Ok(None);
        }
        let (role, team_id) = match (&k.user_id, k.role) {
            (_, Role::Admin) => (UserRole::Admin, k.team_id.clone()),
            (Some(user_id), Role::User) => match self.store.user(user_id).await? {
                Some(u) => (u.role, u.team_id),
                None => return Ok(None),
            },
            (None, Role::User) => return Ok(None),
        };
        let catalog = self.catalog().await?;
        let models = catalog.key_allowance(&k, &self.user_map().await?, &self.team_map().await?);
        Ok(Some(Actor {
            key_id: k.id,
            role,
            user_id: k.user_id,
            team_id,
            source: None,
            models,
            expires_at: k.expires_at,
        }))
    }

    /// The models that exist and the access groups, to evaluate allowances with.
    async fn catalog(&self) -> Result<access::Catalog, ServiceError> {
        Ok(access::Catalog {
            models: self.store.model_rows().await?.into_iter().map(|m| m.name).collect(),
            groups: self.store.access_groups().await?.into_iter().map(|g| (g.name, g.models)).collect(),
        })
    }

    /// A level's allowance as asked (`models` and `access_groups`), checked: every group exists,
    /// and (unless the caller is an admin) it stays within the caller's own allowance.
    async fn checked_level(&self, actor: &Actor, models: Option<&[String]>, groups: &[String]) -> Result<(), ServiceError> {
        if models.is_none() && groups.is_empty() && actor.role == UserRole::Admin {
            return Ok(());
        }
        checked_models(models.map(<[String]>::to_vec).as_ref())?;
        let catalog = self.catalog().await?;
        if let Some(g) = groups.iter().find(|g| !catalog.groups.contains_key(*g)) {
            return Err(ServiceError::Invalid(format!("No access group named '{g}'.")));
        }
        if actor.role != UserRole::Admin && !access::within(catalog.level(models, groups).as_deref(), actor.models.as_deref()) {
            return Err(ServiceError::Forbidden("'models' or 'access_groups' name a model your own key may not use.".into()));
        }
        Ok(())
    }

    /// A level's allowance changed by a patch: the fields the patch names replace the old ones,
    /// and the result is checked as a new one is.
    async fn patched_level(
        &self,
        actor: &Actor,
        models: &mut Option<Vec<String>>,
        groups: &mut Vec<String>,
        patch_models: Option<Option<Vec<String>>>,
        patch_groups: Option<Vec<String>>,
    ) -> Result<(), ServiceError> {
        if patch_models.is_none() && patch_groups.is_none() {
            return Ok(());
        }
        let new_models = patch_models.unwrap_or_else(|| models.clone());
        let new_groups = patch_groups.unwrap_or_else(|| groups.clone());
        self.checked_level(actor, new_models.as_deref(), &new_groups).await?;
        (*models, *groups) = (new_models, new_groups);
        Ok(())
    }

    async fn user_map(&self) -> Result<std::collections::BTreeMap<String, UserRecord>, ServiceError> {
        Ok(self.store.users().await?.into_iter().map(|u| (u.id.clone(), u)).collect())
    }

    async fn team_map(&self) -> Result<std::collections::BTreeMap<String, TeamRecord>, ServiceError> {
        Ok(self.store.teams().await?.into_iter().map(|t| (t.id.clone(), t)).collect())
    }

    fn check(actor: &Actor, verb: Verb, object: Object<'_>) -> Result<(), ServiceError> {
        if authz::allows(actor, verb, object) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "Your role ({}) does not allow this here: ask an admin of the team, or a platform admin.",
                actor.role.as_str()
            )))
        }
    }

    fn audit<'a>(actor: &'a Actor, action: &'a str, target: &'a str, team_id: Option<&'a str>, now: i64) -> Audit<'a> {
        Audit { at: now, actor: &actor.key_id, action, target, team_id, source: actor.source.as_deref(), ..Default::default() }
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

    /// `list_models` for an admin-API caller (REST and gRPC).
    pub async fn list_models_as(&self, actor: &Actor) -> Result<Vec<ModelView>, ServiceError> {
        if !authz::allows(actor, Verb::Read, Object::Models) {
            return Err(ServiceError::Forbidden("Your role may not list models.".into()));
        }
        self.list_models().await
    }

    /// The audit trail, newest first, filtered; a caller who is not an admin (or a team-less
    /// viewer) sees its own team's entries only.
    pub async fn audit_log(&self, actor: &Actor, mut q: AuditQuery) -> Result<Vec<AuditEntry>, ServiceError> {
        let everything = actor.role == UserRole::Admin || (actor.role == UserRole::Viewer && actor.team_id.is_none());
        if !everything {
            if q.team_id.is_some() && q.team_id != actor.team_id {
                return Err(ServiceError::Forbidden("You may read only your own team's audit trail.".into()));
            }
            q.team_id = actor.team_id.clone();
            Self::check(actor, Verb::Read, Object::Audit { team_id: q.team_id.as_deref() })?;
        }
        Ok(self.store.audit_log(&q).await?)
    }
}

/// An object the caller asked for by id: itself when `allowed`; otherwise 403 whether or not
/// it exists (ids cannot be probed across tenants), except for admins, who get a 404 for one
/// that does not.
fn scoped<T>(found: Option<T>, allowed: impl FnOnce(&T) -> bool, actor: &Actor, missing: String, refused: &str) -> Result<T, ServiceError> {
    match found {
        Some(t) if allowed(&t) => Ok(t),
        None if actor.role == UserRole::Admin => Err(ServiceError::NotFound(missing)),
        _ => Err(ServiceError::Forbidden(refused.to_owned())),
    }
}
