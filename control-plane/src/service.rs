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

impl Service {
    pub fn new(store: Store, publisher: Arc<Publisher>) -> Self {
        Self { store, publisher, rotations: Arc::default() }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "user")]
    pub role: Option<Role>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub access_groups: Vec<String>,
}

/// A key as shown by the API: never the secret or its digest.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// `user` or `admin` (an admin key may use the admin API with every right).
    #[schema(value_type = String, example = "user")]
    pub role: Role,
    pub models: Option<Vec<String>>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub tags: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub access_groups: Vec<String>,
    pub blocked: bool,
    pub rotated_at: Option<i64>,
    /// Until when the secret before the last rotation is still accepted.
    pub previous_valid_until: Option<i64>,
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
            user_id: k.user_id,
            team_id: k.team_id,
            tags: k.tags,
            metadata: k.metadata,
            access_groups: k.access_groups,
            blocked: k.blocked,
            rotated_at: k.rotated_at,
            previous_valid_until: k.previous_valid_until,
        }
    }
}

/// The answer to a key creation or rotation: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    pub key: String,
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

/// The most keys one bulk creation takes.
pub const MAX_BULK_KEYS: usize = 10_000;

/// The grace period of a rotated secret when the request names none.
pub const DEFAULT_GRACE_SECONDS: i64 = 3600;
pub const MAX_GRACE_SECONDS: i64 = 30 * 86_400;

fn validate_tags(tags: &[String]) -> Result<(), ServiceError> {
    if tags.len() > 50 || tags.iter().any(|t| t.is_empty() || t.len() > 100) {
        return Err(ServiceError::Invalid("'tags' takes at most 50 tags of 1 to 100 characters.".into()));
    }
    Ok(())
}

/// A change to a key; absent fields stay. `models: null` lifts the key's own bound;
/// `expires_at: null` removes its expiry.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    pub name: Option<String>,
    #[schema(value_type = Option<Vec<String>>, nullable)]
    #[serde(default, deserialize_with = "some")]
    pub models: Option<Option<Vec<String>>>,
    #[schema(value_type = Option<i64>, nullable)]
    #[serde(default, deserialize_with = "some")]
    pub expires_at: Option<Option<i64>>,
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub blocked: Option<bool>,
    pub access_groups: Option<Vec<String>>,
}

/// A present field (even `null`) is `Some`.
fn some<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    pub grace_seconds: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl Service {
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

    async fn user_map(&self) -> Result<std::collections::BTreeMap<String, UserRecord>, ServiceError> {
        Ok(self.store.users().await?.into_iter().map(|u| (u.id.clone(), u)).collect())
    }

    async fn team_map(&self) -> Result<std::collections::BTreeMap<String, TeamRecord>, ServiceError> {
        Ok(self.store.teams().await?.into_iter().map(|t| (t.id.clone(), t)).collect())
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
            id: new_id("key"),
            name: "admin (created on first start)".into(),
            digest: digest_hex(&secret),
            role: Role::Admin,
            created_at: unix_now(),
            ..Default::default()
        };
        let after = serde_json::to_value(KeyView::from(rec.clone())).ok();
        self.store
            .insert_key(&rec, &Audit { at: rec.created_at, actor: "system", action: "key.create", target: &rec.id, after, ..Default::default() })
            .await?;
        self.publisher.refresh().await?;
        Ok(generated.then_some(secret))
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

    pub async fn create_key(&self, actor: &Actor, req: NewKey) -> Result<CreatedKey, ServiceError> {
        let now = unix_now();
        let (rec, secret) = self.prepare_key(actor, req, now).await?;
        let view = KeyView::from(rec.clone());
        let audit = Audit { after: serde_json::to_value(&view).ok(), ..Self::audit(actor, "key.create", &rec.id, rec.team_id.as_deref(), now) };
        self.store.insert_key(&rec, &audit).await?;
        self.publisher.refresh().await?;
        Ok(CreatedKey { view, key: secret })
    }

    /// Up to [`MAX_BULK_KEYS`] keys in one transaction (all or none), each checked as
    /// [`Self::create_key`] checks one, each with its audit row; one publication.
    pub async fn create_keys(&self, actor: &Actor, reqs: Vec<NewKey>) -> Result<Vec<CreatedKey>, ServiceError> {
        if reqs.is_empty() || reqs.len() > MAX_BULK_KEYS {
            return Err(ServiceError::Invalid(format!("'keys' must hold 1 to {MAX_BULK_KEYS} keys.")));
        }
        let now = unix_now();
        let mut prepared = Vec::with_capacity(reqs.len());
        for (i, req) in reqs.into_iter().enumerate() {
            let (rec, secret) = self.prepare_key(actor, req, now).await.map_err(|e| match e {
                ServiceError::Invalid(m) => ServiceError::Invalid(format!("keys[{i}]: {m}")),
                ServiceError::Forbidden(m) => ServiceError::Forbidden(format!("keys[{i}]: {m}")),
                other => other,
            })?;
            prepared.push((rec, secret));
        }
        let views: Vec<KeyView> = prepared.iter().map(|(r, _)| KeyView::from(r.clone())).collect();
        let audits: Vec<Audit<'_>> = prepared
            .iter()
            .zip(&views)
            .map(|((rec, _), view)| Audit { after: serde_json::to_value(view).ok(), ..Self::audit(actor, "key.create", &rec.id, rec.team_id.as_deref(), now) })
            .collect();
        let rows: Vec<(&KeyRecord, &Audit<'_>)> = prepared.iter().map(|(r, _)| r).zip(&audits).collect();
        self.store.insert_keys(&rows).await?;
        self.publisher.refresh().await?;
        Ok(prepared.into_iter().zip(views).map(|((_, key), view)| CreatedKey { view, key }).collect())
    }

    /// A new key as `actor` may make it (checked, not stored) and its secret.
    async fn prepare_key(&self, actor: &Actor, req: NewKey, now: i64) -> Result<(KeyRecord, String), ServiceError> {
        let name = req.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(ServiceError::Invalid("'name' must be 1 to 200 characters.".into()));
        }
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
        validate_tags(&req.tags)?;
        // Owners: a member's keys are its own, in its team; a team admin's go to its team.
        let (user_id, team_id) = match actor.role {
            UserRole::Admin => (req.user_id, req.team_id),
            // The owner's team comes from the user when one is named.
            _ if req.user_id.is_some() => (req.user_id, req.team_id),
            _ => (actor.user_id.clone(), req.team_id.or_else(|| actor.team_id.clone())),
        };
        let team_id = match (&user_id, team_id) {
            (Some(u), t) => {
                let user = self.store.user(u).await?;
                match (user, actor.role) {
                    (Some(user), _) => match t {
                        Some(t) if user.team_id.as_deref() != Some(t.as_str()) => {
                            return Err(if actor.role == UserRole::Admin {
                                ServiceError::Invalid(format!("User '{u}' is not in team '{t}'."))
                            } else {
                                ServiceError::Forbidden("Your role does not allow this here.".into())
                            });
                        }
                        _ => user.team_id,
                    },
                    (None, UserRole::Admin) => return Err(ServiceError::NotFound(format!("No user with id '{u}'."))),
                    (None, _) => return Err(ServiceError::Forbidden("Your role does not allow this here.".into())),
                }
            }
            (None, t) => t,
        };
        if let Some(t) = &team_id {
            if actor.role == UserRole::Admin && self.store.team(t).await?.is_none() {
                return Err(ServiceError::NotFound(format!("No team with id '{t}'.")));
            }
        }
        Self::check(actor, Verb::Write, Object::Key { user_id: user_id.as_deref(), team_id: team_id.as_deref() })?;
        // Never more than the creator may: models, role, expiry.
        if req.role == Some(Role::Admin) && actor.role != UserRole::Admin {
            return Err(ServiceError::Forbidden("Only an admin can create an admin key.".into()));
        }
        // Nothing asked: the creator's own allowance (a non-admin's key never has more).
        let models = if req.models.is_none() && req.access_groups.is_empty() && actor.role != UserRole::Admin {
            actor.models.clone()
        } else {
            self.checked_level(actor, req.models.as_deref(), &req.access_groups).await?;
            req.models
        };
        let expires_at = match (req.expires_at, actor.expires_at) {
            (Some(e), Some(mine)) if e > mine => {
                return Err(ServiceError::Forbidden("'expires_at' is later than your own key's expiry.".into()));
            }
            (None, mine) => mine,
            (e, _) => e,
        };
        let secret = new_secret();
        let rec = KeyRecord {
            id: new_id("key"),
            name: name.to_owned(),
            digest: digest_hex(&secret),
            role: req.role.unwrap_or_default(),
            models,
            created_at: now,
            expires_at,
            user_id,
            team_id,
            tags: req.tags,
            metadata: req.metadata,
            access_groups: req.access_groups,
            ..Default::default()
        };
        Ok((rec, secret))
    }

    /// Keys the caller may see, filtered and paged (`after_id`). Outside admins and team-less
    /// viewers, the caller's tenant is forced into the filter: a `team_id` of another team
    /// returns nothing.
    pub async fn list_keys(&self, actor: &Actor, mut q: KeyQuery) -> Result<Vec<KeyView>, ServiceError> {
        match actor.role {
            UserRole::Admin => {}
            UserRole::Viewer if actor.team_id.is_none() => {}
            UserRole::Member => {
                if q.team_id.is_some() && q.team_id != actor.team_id {
                    return Err(ServiceError::Forbidden("You may list only your own keys.".into()));
                }
                q.user_id = actor.user_id.clone();
                q.team_id = None;
            }
            UserRole::TeamAdmin | UserRole::Viewer => {
                if q.team_id.is_some() && q.team_id != actor.team_id {
                    return Err(ServiceError::Forbidden("You may list only your own team's keys.".into()));
                }
                q.team_id = actor.team_id.clone();
            }
        }
        let keys = self.store.list_keys(&q).await?;
        Ok(keys
            .into_iter()
            .filter(|k| authz::allows(actor, Verb::Read, Object::Key { user_id: k.user_id.as_deref(), team_id: k.team_id.as_deref() }))
            .map(KeyView::from)
            .collect())
    }

    /// A key the caller may act on, or 403 (whether or not it exists) / 404 (for those who may
    /// see everything).
    async fn key_for(&self, actor: &Actor, verb: Verb, id: &str) -> Result<KeyRecord, ServiceError> {
        let key = self.store.key(id).await?;
        match key {
            Some(k) if authz::allows(actor, verb, Object::Key { user_id: k.user_id.as_deref(), team_id: k.team_id.as_deref() }) => Ok(k),
            None if actor.role == UserRole::Admin => Err(ServiceError::NotFound(format!("No key with id '{id}'."))),
            _ => Err(ServiceError::Forbidden("This key is not yours or your team's, or does not exist.".into())),
        }
    }

    pub async fn get_key(&self, actor: &Actor, id: &str) -> Result<KeyView, ServiceError> {
        Ok(self.key_for(actor, Verb::Read, id).await?.into())
    }

    pub async fn update_key(&self, actor: &Actor, id: &str, patch: KeyPatch) -> Result<KeyView, ServiceError> {
        let now = unix_now();
        let old = self.key_for(actor, Verb::Write, id).await?;
        if old.revoked_at.is_some() {
            return Err(ServiceError::Invalid(format!("Key '{id}' is revoked; create a new key.")));
        }
        let mut new = old.clone();
        if let Some(name) = patch.name {
            let name = name.trim().to_owned();
            if name.is_empty() || name.len() > 200 {
                return Err(ServiceError::Invalid("'name' must be 1 to 200 characters.".into()));
            }
            new.name = name;
        }
        if let Some(tags) = patch.tags {
            validate_tags(&tags)?;
            new.tags = tags;
        }
        if let Some(metadata) = patch.metadata {
            new.metadata = Some(metadata);
        }
        if let Some(blocked) = patch.blocked {
            new.blocked = blocked;
        }
        if patch.models.is_some() || patch.access_groups.is_some() {
            let models = patch.models.unwrap_or_else(|| new.models.clone());
            let groups = patch.access_groups.unwrap_or_else(|| new.access_groups.clone());
            self.checked_level(actor, models.as_deref(), &groups).await?;
            new.models = models;
            new.access_groups = groups;
        }
        if let Some(expires_at) = patch.expires_at {
            if let (Some(e), Some(mine)) = (expires_at, actor.expires_at) {
                if e > mine {
                    return Err(ServiceError::Forbidden("'expires_at' is later than your own key's expiry.".into()));
                }
            }
            new.expires_at = expires_at;
        }
        let action = match patch.blocked {
            Some(true) if !old.blocked => "key.block",
            Some(false) if old.blocked => "key.unblock",
            _ => "key.update",
        };
        let audit = Audit {
            before: serde_json::to_value(KeyView::from(old.clone())).ok(),
            after: serde_json::to_value(KeyView::from(new.clone())).ok(),
            ..Self::audit(actor, action, id, old.team_id.as_deref(), now)
        };
        if !self.store.update_key(&new, &old.digest, &audit).await? {
            return Err(ServiceError::Conflict(format!("Key '{id}' changed while this request ran; read it again and retry.")));
        }
        self.publisher.refresh().await?;
        Ok(new.into())
    }

    /// A new secret under the same key id; the old one stays valid for `grace_seconds` (default
    /// [`DEFAULT_GRACE_SECONDS`]) and is refused after. With an `idempotency_key`, a retry of the
    /// same rotation gets the same answer.
    pub async fn rotate_key(&self, actor: &Actor, id: &str, req: RotateKey) -> Result<CreatedKey, ServiceError> {
        let now = unix_now();
        let grace = req.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
        if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
            return Err(ServiceError::Invalid(format!("'grace_seconds' must be 0 to {MAX_GRACE_SECONDS}.")));
        }
        let old = self.key_for(actor, Verb::Write, id).await?;
        let idem_hash = req.idempotency_key.as_deref().map(|idem| digest_hex(&format!("{id}\0{idem}")));
        if let Some(idem) = &req.idempotency_key {
            if idem.is_empty() || idem.len() > 200 {
                return Err(ServiceError::Invalid("'idempotency_key' must be 1 to 200 characters.".into()));
            }
            let cached = self.rotations.lock().ok().and_then(|m| m.get(&(id.to_owned(), idem.clone())).cloned());
            if let Some((_, answer)) = cached.filter(|(until, _)| *until > now) {
                return Ok(answer);
            }
            // Made by another replica (or before a restart): the stored, encrypted answer.
            let answered_until = old.previous_valid_until.max(old.rotated_at.map(|t| t + 60));
            if old.rotation_idempotency == idem_hash && answered_until.is_some_and(|t| t > now) {
                let secret = old
                    .rotation_answer
                    .as_ref()
                    .and_then(|a| crate::kek::keyring().decrypt(&format!("rotation:{id}"), a))
                    .and_then(|m| m.api_key);
                return match secret {
                    Some(key) => Ok(CreatedKey { view: KeyView::from(old), key }),
                    None => Err(ServiceError::Conflict(
                        "This rotation was already made (same idempotency key), and its secret cannot be shown again here \
                         (no TOLLGATE_KEK to keep it encrypted). If it was lost, rotate again with a new idempotency key."
                            .into(),
                    )),
                };
            }
        }
        if old.revoked_at.is_some() {
            return Err(ServiceError::Invalid(format!("Key '{id}' is revoked; create a new key.")));
        }
        let secret = new_secret();
        // The answer, kept encrypted for a retry on another replica (only with a KEK).
        let rotation_answer = idem_hash.as_ref().and_then(|_| {
            let m = model::SecretMaterial { api_key: Some(secret.clone()), ..Default::default() };
            crate::kek::keyring().encrypt(&format!("rotation:{id}"), &m).ok()
        });
        let new = KeyRecord {
            digest: digest_hex(&secret),
            previous_digest: (grace > 0).then(|| old.digest.clone()),
            previous_valid_until: (grace > 0).then_some(now + grace),
            rotated_at: Some(now),
            rotation_idempotency: idem_hash,
            rotation_answer,
            ..old.clone()
        };
        let view = KeyView::from(new.clone());
        let audit = Audit {
            before: serde_json::to_value(KeyView::from(old.clone())).ok(),
            after: serde_json::to_value(&view).ok(),
            ..Self::audit(actor, "key.rotate", id, old.team_id.as_deref(), now)
        };
        if !self.store.update_key(&new, &old.digest, &audit).await? {
            return Err(ServiceError::Conflict(format!("Key '{id}' was rotated by another request; read it again.")));
        }
        self.publisher.refresh().await?;
        let answer = CreatedKey { view, key: secret };
        if let (Some(idem), Ok(mut cache)) = (req.idempotency_key, self.rotations.lock()) {
            cache.retain(|_, (until, _)| *until > now);
            cache.insert((id.to_owned(), idem), (now + grace.max(60), answer.clone()));
        }
        Ok(answer)
    }

    pub async fn revoke_key(&self, actor: &Actor, id: &str) -> Result<KeyView, ServiceError> {
        let now = unix_now();
        let old = self.key_for(actor, Verb::Write, id).await?;
        let audit = Audit { before: serde_json::to_value(KeyView::from(old.clone())).ok(), ..Self::audit(actor, "key.revoke", id, old.team_id.as_deref(), now) };
        if !self.store.revoke_key(id, now, &audit).await? {
            return Err(ServiceError::NotFound(format!("No active key with id '{id}'.")));
        }
        self.publisher.refresh().await?;
        let key = self.store.key(id).await?;
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

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    pub name: String,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub access_groups: Vec<String>,
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamPatch {
    pub name: Option<String>,
    #[schema(value_type = Option<Vec<String>>, nullable)]
    #[serde(default, deserialize_with = "some")]
    pub models: Option<Option<Vec<String>>>,
    pub access_groups: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub role: UserRole,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub access_groups: Vec<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub name: Option<String>,
    #[schema(value_type = Option<String>, nullable)]
    #[serde(default, deserialize_with = "some")]
    pub email: Option<Option<String>>,
    pub role: Option<UserRole>,
    #[schema(value_type = Option<Vec<String>>, nullable)]
    #[serde(default, deserialize_with = "some")]
    pub models: Option<Option<Vec<String>>>,
    pub access_groups: Option<Vec<String>>,
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
    pub async fn create_team(&self, actor: &Actor, req: NewTeam) -> Result<TeamRecord, ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        self.checked_level(actor, req.models.as_deref(), &req.access_groups).await?;
        let team = TeamRecord {
            id: new_id("team"),
            name: checked_name(&req.name)?,
            models: req.models,
            access_groups: req.access_groups,
            metadata: req.metadata,
            created_at: unix_now(),
        };
        if self.store.teams().await?.iter().any(|t| t.name == team.name) {
            return Err(ServiceError::Conflict(format!("A team named '{}' exists.", team.name)));
        }
        let audit = Audit { after: serde_json::to_value(&team).ok(), ..Self::audit(actor, "team.create", &team.id, Some(&team.id), team.created_at) };
        self.store.put_team(&team, true, &audit).await?;
        Ok(team)
    }

    pub async fn list_teams(&self, actor: &Actor) -> Result<Vec<TeamRecord>, ServiceError> {
        Ok(self.store.teams().await?.into_iter().filter(|t| authz::allows(actor, Verb::Read, Object::Team { id: &t.id })).collect())
    }

    async fn team_for(&self, actor: &Actor, verb: Verb, id: &str) -> Result<TeamRecord, ServiceError> {
        match self.store.team(id).await? {
            Some(t) if authz::allows(actor, verb, Object::Team { id }) => Ok(t),
            None if actor.role == UserRole::Admin => Err(ServiceError::NotFound(format!("No team with id '{id}'."))),
            _ => Err(ServiceError::Forbidden("This team is not yours, or does not exist.".into())),
        }
    }

    pub async fn get_team(&self, actor: &Actor, id: &str) -> Result<TeamRecord, ServiceError> {
        self.team_for(actor, Verb::Read, id).await
    }

    pub async fn update_team(&self, actor: &Actor, id: &str, patch: TeamPatch) -> Result<TeamRecord, ServiceError> {
        let old = self.team_for(actor, Verb::Write, id).await?;
        let mut new = old.clone();
        if let Some(name) = patch.name {
            new.name = checked_name(&name)?;
        }
        if patch.models.is_some() || patch.access_groups.is_some() {
            let models = patch.models.unwrap_or_else(|| new.models.clone());
            let groups = patch.access_groups.unwrap_or_else(|| new.access_groups.clone());
            self.checked_level(actor, models.as_deref(), &groups).await?;
            new.models = models;
            new.access_groups = groups;
        }
        if let Some(metadata) = patch.metadata {
            new.metadata = Some(metadata);
        }
        let audit = Audit {
            before: serde_json::to_value(&old).ok(),
            after: serde_json::to_value(&new).ok(),
            ..Self::audit(actor, "team.update", id, Some(id), unix_now())
        };
        self.store.put_team(&new, false, &audit).await?;
        // A team's allowance bounds its keys: republish.
        self.publisher.refresh().await?;
        Ok(new)
    }

    pub async fn create_user(&self, actor: &Actor, req: NewUser) -> Result<UserRecord, ServiceError> {
        let team_id = match actor.role {
            UserRole::Admin => req.team_id,
            _ => req.team_id.or_else(|| actor.team_id.clone()),
        };
        Self::check(actor, Verb::Write, Object::User { id: "", team_id: team_id.as_deref() })?;
        if !authz::may_grant(actor, req.role) {
            return Err(ServiceError::Forbidden(format!("Your role cannot grant the role {}.", req.role.as_str())));
        }
        if let Some(t) = &team_id {
            if self.store.team(t).await?.is_none() {
                return Err(ServiceError::NotFound(format!("No team with id '{t}'.")));
            }
        }
        if req.role == UserRole::TeamAdmin && team_id.is_none() {
            return Err(ServiceError::Invalid("A team_admin needs a team_id.".into()));
        }
        self.checked_level(actor, req.models.as_deref(), &req.access_groups).await?;
        let email = req.email.map(|e| e.trim().to_owned()).filter(|e| !e.is_empty());
        if email.as_ref().is_some_and(|e| e.len() > 320 || !e.contains('@')) {
            return Err(ServiceError::Invalid("'email' must be an email address.".into()));
        }
        if let Some(e) = &email {
            if self.store.users().await?.iter().any(|u| u.email.as_deref() == Some(e)) {
                return Err(ServiceError::Conflict("A user with this email exists.".into()));
            }
        }
        let user = UserRecord {
            id: new_id("user"),
            name: checked_name(&req.name)?,
            email,
            team_id,
            role: req.role,
            models: req.models,
            access_groups: req.access_groups,
            created_at: unix_now(),
        };
        let audit = Audit { after: serde_json::to_value(&user).ok(), ..Self::audit(actor, "user.create", &user.id, user.team_id.as_deref(), user.created_at) };
        self.store.put_user(&user, true, &audit).await?;
        Ok(user)
    }

    pub async fn list_users(&self, actor: &Actor) -> Result<Vec<UserRecord>, ServiceError> {
        Ok(self
            .store
            .users()
            .await?
            .into_iter()
            .filter(|u| authz::allows(actor, Verb::Read, Object::User { id: &u.id, team_id: u.team_id.as_deref() }))
            .collect())
    }

    async fn user_for(&self, actor: &Actor, verb: Verb, id: &str) -> Result<UserRecord, ServiceError> {
        match self.store.user(id).await? {
            Some(u) if authz::allows(actor, verb, Object::User { id, team_id: u.team_id.as_deref() }) => Ok(u),
            None if actor.role == UserRole::Admin => Err(ServiceError::NotFound(format!("No user with id '{id}'."))),
            _ => Err(ServiceError::Forbidden("This user is not in your team, or does not exist.".into())),
        }
    }

    pub async fn get_user(&self, actor: &Actor, id: &str) -> Result<UserRecord, ServiceError> {
        self.user_for(actor, Verb::Read, id).await
    }

    pub async fn update_user(&self, actor: &Actor, id: &str, patch: UserPatch) -> Result<UserRecord, ServiceError> {
        let old = self.user_for(actor, Verb::Write, id).await?;
        let mut new = old.clone();
        if let Some(name) = patch.name {
            new.name = checked_name(&name)?;
        }
        if let Some(email) = patch.email {
            new.email = email;
        }
        if let Some(role) = patch.role {
            if actor.user_id.as_deref() == Some(id) && actor.role != UserRole::Admin {
                return Err(ServiceError::Forbidden("You cannot change your own role.".into()));
            }
            if !authz::may_grant(actor, role) || !authz::may_grant(actor, old.role) {
                return Err(ServiceError::Forbidden(format!("Your role cannot grant the role {}.", role.as_str())));
            }
            new.role = role;
        }
        if patch.models.is_some() || patch.access_groups.is_some() {
            let models = patch.models.unwrap_or_else(|| new.models.clone());
            let groups = patch.access_groups.unwrap_or_else(|| new.access_groups.clone());
            self.checked_level(actor, models.as_deref(), &groups).await?;
            new.models = models;
            new.access_groups = groups;
        }
        let audit = Audit {
            before: serde_json::to_value(&old).ok(),
            after: serde_json::to_value(&new).ok(),
            ..Self::audit(actor, "user.update", id, new.team_id.as_deref(), unix_now())
        };
        self.store.put_user(&new, false, &audit).await?;
        self.publisher.refresh().await?;
        Ok(new)
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccessGroup {
    pub name: String,
    pub models: Vec<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessGroupPatch {
    pub models: Vec<String>,
}

fn checked_group_name(name: &str) -> Result<(), ServiceError> {
    if name.is_empty() || name.len() > 100 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        return Err(ServiceError::Invalid("'name' must be 1 to 100 letters, digits, '-', '_', '.' or ':'.".into()));
    }
    Ok(())
}

impl Service {
    pub async fn list_access_groups(&self, actor: &Actor) -> Result<Vec<crate::model::AccessGroup>, ServiceError> {
        Self::check(actor, Verb::Read, Object::Models)?;
        Ok(self.store.access_groups().await?)
    }

    pub async fn create_access_group(&self, actor: &Actor, req: NewAccessGroup) -> Result<crate::model::AccessGroup, ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        checked_group_name(&req.name)?;
        checked_models(Some(&req.models))?;
        if self.store.access_groups().await?.iter().any(|g| g.name == req.name) {
            return Err(ServiceError::Conflict(format!("An access group named '{}' exists.", req.name)));
        }
        let group = crate::model::AccessGroup { name: req.name, models: req.models, created_at: unix_now() };
        let audit = Audit { after: serde_json::to_value(&group).ok(), ..Self::audit(actor, "access_group.create", &group.name, None, group.created_at) };
        self.store.put_access_group(&group, true, false, &audit).await?;
        self.publisher.refresh().await?;
        Ok(group)
    }

    pub async fn update_access_group(&self, actor: &Actor, name: &str, patch: Option<AccessGroupPatch>) -> Result<Option<crate::model::AccessGroup>, ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        let Some(old) = self.store.access_groups().await?.into_iter().find(|g| g.name == name) else {
            return Err(ServiceError::NotFound(format!("No access group named '{name}'.")));
        };
        let delete = patch.is_none();
        let new = match patch {
            Some(p) => {
                checked_models(Some(&p.models))?;
                crate::model::AccessGroup { models: p.models, ..old.clone() }
            }
            None => old.clone(),
        };
        let action = if delete { "access_group.delete" } else { "access_group.update" };
        let audit = Audit {
            before: serde_json::to_value(&old).ok(),
            after: (!delete).then(|| serde_json::to_value(&new).ok()).flatten(),
            ..Self::audit(actor, action, name, None, unix_now())
        };
        self.store.put_access_group(&new, false, delete, &audit).await?;
        self.publisher.refresh().await?;
        Ok((!delete).then_some(new))
    }
}

/// A provider credential as the admin API takes it: secret values (stored encrypted), or
/// references to environment variables, or an AWS credential chain, as in the config file.
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub aws_access_key_id: Option<String>,
    #[serde(default)]
    pub aws_secret_access_key: Option<String>,
    #[serde(default)]
    pub aws_session_token: Option<String>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub aws_access_key_id_env: Option<String>,
    #[serde(default)]
    pub aws_secret_access_key_env: Option<String>,
    #[serde(default)]
    pub aws_session_token_env: Option<String>,
    #[serde(default)]
    pub aws: Option<model::AwsChainSpec>,
}

/// A credential as shown: never a secret value; a fingerprint for stored ones.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    pub name: String,
    /// `api_key`, `aws_static` or `aws_chain`.
    pub kind: &'static str,
    /// `file` (the config file) or `api`.
    pub source: String,
    /// For a secret stored through the API.
    pub fingerprint: Option<String>,
    /// The environment variables it reads, for references.
    pub env: Vec<String>,
    /// Whether it resolves now (a stored secret whose KEK is missing does not).
    pub usable: bool,
}

fn credential_kind(c: &model::CredentialRef, m: Option<&model::SecretMaterial>) -> &'static str {
    match (c.aws.is_some(), c.aws_access_key_id_env.is_some() || m.is_some_and(|m| m.aws_access_key_id.is_some())) {
        (true, _) => "aws_chain",
        (false, true) => "aws_static",
        _ => "api_key",
    }
}

impl CredentialInput {
    /// The stored form: secret values encrypted under the current KEK.
    fn into_ref(self, name: &str) -> Result<model::CredentialRef, ServiceError> {
        let secret_given = self.api_key.is_some() || self.aws_access_key_id.is_some() || self.aws_secret_access_key.is_some();
        let env_given = self.api_key_env.is_some() || self.aws_access_key_id_env.is_some() || self.aws_secret_access_key_env.is_some();
        let kinds = [secret_given, env_given, self.aws.is_some()].iter().filter(|k| **k).count();
        if kinds != 1 {
            return Err(ServiceError::Invalid(
                "Give exactly one of: secret values (api_key, or aws_access_key_id with aws_secret_access_key), \
                 environment variable names (api_key_env, aws_*_env), or aws (a credential chain)."
                    .into(),
            ));
        }
        let nonempty = |v: &Option<String>, field: &str| -> Result<(), ServiceError> {
            if v.as_deref().is_some_and(|s| s.trim().is_empty() || s.len() > 8192) {
                return Err(ServiceError::Invalid(format!("'{field}' must be 1 to 8192 characters.")));
            }
            Ok(())
        };
        for (v, f) in [(&self.api_key, "api_key"), (&self.aws_access_key_id, "aws_access_key_id"), (&self.aws_secret_access_key, "aws_secret_access_key"), (&self.aws_session_token, "aws_session_token")] {
            nonempty(v, f)?;
        }
        if (self.aws_access_key_id.is_some() != self.aws_secret_access_key.is_some())
            || (self.aws_access_key_id_env.is_some() != self.aws_secret_access_key_env.is_some())
        {
            return Err(ServiceError::Invalid("The AWS access key id and secret access key go together.".into()));
        }
        if secret_given {
            let material = model::SecretMaterial {
                api_key: self.api_key,
                aws_access_key_id: self.aws_access_key_id,
                aws_secret_access_key: self.aws_secret_access_key,
                aws_session_token: self.aws_session_token,
            };
            let stored = crate::kek::keyring().encrypt(name, &material).map_err(ServiceError::Invalid)?;
            return Ok(model::CredentialRef { stored: Some(stored), ..Default::default() });
        }
        Ok(model::CredentialRef {
            api_key_env: self.api_key_env,
            aws_access_key_id_env: self.aws_access_key_id_env,
            aws_secret_access_key_env: self.aws_secret_access_key_env,
            aws_session_token_env: self.aws_session_token_env,
            aws: self.aws,
            stored: None,
        })
    }
}

fn checked_credential_name(name: &str) -> Result<(), ServiceError> {
    if name.is_empty() || name.len() > 100 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(ServiceError::Invalid("'name' must be 1 to 100 letters, digits, '-', '_' or '.'.".into()));
    }
    Ok(())
}

impl Service {
    fn credential_view(&self, name: &str, c: &model::CredentialRef, source: &str) -> CredentialView {
        let material = c.stored.as_ref().and_then(|s| crate::kek::keyring().decrypt(name, s));
        let usable = c.resolve(name, self.publisher.secrets()).is_some();
        CredentialView {
            name: name.to_owned(),
            kind: credential_kind(c, material.as_ref()),
            source: source.to_owned(),
            fingerprint: c.stored.as_ref().map(|s| s.fingerprint.clone()),
            env: c.required_env().into_iter().map(str::to_owned).collect(),
            usable,
        }
    }

    pub async fn list_credentials(&self, actor: &Actor) -> Result<Vec<CredentialView>, ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        let sources = self.store.credential_sources().await?;
        Ok(self
            .store
            .credentials()
            .await?
            .iter()
            .map(|(name, c)| self.credential_view(name, c, sources.get(name).map_or("file", String::as_str)))
            .collect())
    }

    /// Creates (`replace: false`) or replaces an API-managed credential. A replacement is a
    /// rotation: the data plane's credential document changes version and every Envoy takes the
    /// new secret within a second; requests in flight finish with the one they were signed with.
    pub async fn put_credential(&self, actor: &Actor, name: &str, input: CredentialInput, replace: bool) -> Result<CredentialView, ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        checked_credential_name(name)?;
        if input.name.as_deref().is_some_and(|n| n != name) {
            return Err(ServiceError::Invalid("'name' in the body differs from the name in the path.".into()));
        }
        let sources = self.store.credential_sources().await?;
        match (sources.get(name).map(String::as_str), replace) {
            (Some("file"), _) => {
                return Err(ServiceError::Conflict(format!("Credential '{name}' comes from the config file; change it there.")))
            }
            (Some(_), false) => return Err(ServiceError::Conflict(format!("A credential named '{name}' exists; PUT it to replace it."))),
            (None, true) => return Err(ServiceError::NotFound(format!("No credential named '{name}'."))),
            _ => {}
        }
        let before = if replace { self.store.credentials().await?.get(name).map(|c| self.credential_view(name, c, "api")) } else { None };
        let spec = input.into_ref(name)?;
        let view = self.credential_view(name, &spec, "api");
        let action = if replace { "credential.rotate" } else { "credential.create" };
        let audit = Audit {
            before: before.and_then(|b| serde_json::to_value(b).ok()),
            after: serde_json::to_value(&view).ok(),
            ..Self::audit(actor, action, name, None, unix_now())
        };
        if !self.store.put_credential(name, &spec, !replace, &audit).await? {
            return Err(ServiceError::NotFound(format!("No credential named '{name}'.")));
        }
        self.publisher.refresh().await?;
        Ok(view)
    }

    pub async fn delete_credential(&self, actor: &Actor, name: &str) -> Result<(), ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        let used_by: Vec<String> = self
            .store
            .model_rows()
            .await?
            .into_iter()
            .filter(|m| m.spec.as_ref().is_ok_and(|s| s.deployments.iter().any(|d| d.credential.as_deref() == Some(name))))
            .map(|m| m.name)
            .collect();
        if !used_by.is_empty() {
            return Err(ServiceError::Conflict(format!("Credential '{name}' is used by model(s) {}; change them first.", used_by.join(", "))));
        }
        let audit = Self::audit(actor, "credential.delete", name, None, unix_now());
        if !self.store.delete_credential(name, &audit).await? {
            return Err(ServiceError::NotFound(format!("No API-managed credential named '{name}'.")));
        }
        self.publisher.refresh().await?;
        Ok(())
    }

    /// After a KEK rotation: re-encrypts every stored secret still under the previous KEK.
    pub async fn reencrypt_credentials(&self, ring: &crate::kek::Keyring) -> Result<usize, ServiceError> {
        let mut done = 0;
        for (name, c) in self.store.credentials().await? {
            let Some(stored) = c.stored.as_ref().filter(|s| ring.is_stale(s)) else { continue };
            let Some(material) = ring.decrypt(&name, stored) else {
                tracing::error!(credential = %name, kek_id = %stored.kek_id, "a stored secret's key-encryption key is not configured; the credential is not served (set TOLLGATE_KEK_PREVIOUS to the old KEK)");
                continue;
            };
            let spec = model::CredentialRef { stored: Some(ring.encrypt(&name, &material).map_err(ServiceError::Invalid)?), ..c.clone() };
            let audit = Audit { at: unix_now(), actor: "system", action: "credential.reencrypt", target: &name, ..Default::default() };
            if self.store.put_credential(&name, &spec, false, &audit).await? {
                done += 1;
            }
        }
        if done > 0 {
            tracing::info!(credentials = done, "stored secrets re-encrypted under the current key-encryption key");
            self.publisher.refresh().await?;
        }
        Ok(done)
    }
}

impl Service {
    /// Checks a model as the admin API sets it: a name, at least one deployment, each of which
    /// parses, passes the egress policy and names a credential that exists. (A credential that
    /// exists but does not resolve now, e.g. an AWS chain still starting, is accepted: the model
    /// is served when it does, and `GET /admin/v1/models` says why not meanwhile.)
    async fn checked_model(&self, spec: &model::ModelSpec) -> Result<(), ServiceError> {
        if spec.name.is_empty() || spec.name.len() > 200 || spec.name.chars().any(char::is_control) {
            return Err(ServiceError::Invalid("'name' must be 1 to 200 characters, no control characters.".into()));
        }
        if spec.deployments.is_empty() {
            return Err(ServiceError::Invalid("'deployments' must hold at least one deployment.".into()));
        }
        let rows = self.store.load().await?;
        let egress = crate::egress::Egress { settings: &rows.settings.egress, own_ports: self.publisher.own_ports() };
        for (i, d) in spec.deployments.iter().enumerate() {
            if let Err(e) = d.parse(&spec.name, &egress) {
                let code = matches!(e, model::DeploymentError::Egress(_)).then_some("forbidden_destination");
                return Err(ServiceError::InvalidCode(format!("deployments[{i}]: {e}"), code));
            }
            if let Some(e) = resolves_to_refused(&egress, d.effective_base_url().as_deref()).await {
                return Err(ServiceError::InvalidCode(format!("deployments[{i}]: base_url's host resolves to an address that {e}"), Some("forbidden_destination")));
            }
            if let Some(c) = &d.credential {
                if !rows.credentials.contains_key(c) {
                    return Err(ServiceError::Invalid(format!("deployments[{i}]: credential `{c}` does not exist; create it with POST /admin/v1/credentials")));
                }
            }
        }
        Ok(())
    }

    /// Creates (`replace: false`), replaces or (`spec: None`) deletes an API-managed model.
    pub async fn put_model(&self, actor: &Actor, name: &str, spec: Option<model::ModelSpec>, replace: bool) -> Result<(), ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        if let Some(s) = &spec {
            if s.name != name {
                return Err(ServiceError::Invalid("'name' in the body differs from the name in the path.".into()));
            }
            self.checked_model(s).await?;
        }
        let sources = self.store.model_sources().await?;
        match (sources.get(name).map(String::as_str), replace || spec.is_none()) {
            (Some("file"), _) => return Err(ServiceError::Conflict(format!("Model '{name}' comes from the config file; change it there."))),
            (Some(_), false) => return Err(ServiceError::Conflict(format!("A model named '{name}' exists; PUT it to replace it."))),
            (None, true) => return Err(ServiceError::NotFound(format!("No model named '{name}'."))),
            _ => {}
        }
        let before = self.store.model_rows().await?.into_iter().find(|m| m.name == name).and_then(|m| m.spec.ok());
        let action = match (&spec, replace) {
            (None, _) => "model.delete",
            (Some(_), true) => "model.update",
            (Some(_), false) => "model.create",
        };
        let now = unix_now();
        let audit = Audit {
            before: before.and_then(|b| serde_json::to_value(b).ok()),
            after: spec.as_ref().and_then(|s| serde_json::to_value(s).ok()),
            ..Self::audit(actor, action, name, None, now)
        };
        if !self.store.put_model(name, spec.as_ref(), !replace && spec.is_some(), now, &audit).await? {
            return Err(ServiceError::NotFound(format!("No model named '{name}'.")));
        }
        self.publisher.refresh().await?;
        Ok(())
    }
}

/// A base URL whose host is a DNS name is resolved when it is set: a name that resolves to an
/// address the egress policy refuses (a metadata, link-local, private or loopback address not
/// allowed) is refused like the address itself. A name that does not resolve from here within
/// 2 s is accepted (the provider may be reachable only from Envoy's network). This does not stop
/// a name whose DNS changes later (rebinding): Envoy resolves it then, not the control plane.
async fn resolves_to_refused(egress: &crate::egress::Egress<'_>, base_url: Option<&str>) -> Option<crate::egress::EgressError> {
    let url = crate::upstream::UpstreamUrl::parse(base_url?).ok()?;
    if url.host.parse::<std::net::IpAddr>().is_ok() || url.host.contains(':') {
        return None;
    }
    let allowed_by_name = egress.settings.allow_hosts.iter().filter_map(|e| crate::egress::allow_entry(e)).any(|(h, port)| {
        h == crate::egress::normalize_host(&url.host) && port.is_none_or(|p| p == url.port)
    });
    if allowed_by_name {
        return None;
    }
    let lookup = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::lookup_host((url.host.as_str(), url.port)));
    let addrs: Vec<std::net::SocketAddr> = match lookup.await {
        Ok(Ok(addrs)) => addrs.collect(),
        _ => return None,
    };
    addrs.into_iter().find_map(|a| {
        let by_ip = crate::upstream::UpstreamUrl { host: a.ip().to_string(), ..url.clone() };
        egress.check(&by_ip).err()
    })
}


impl Service {
    /// The catalogue in force: the admin's entries before the shipped defaults.
    pub async fn catalogue(&self) -> Result<crate::metering::prices::Catalogue, ServiceError> {
        let overrides = self.store.price_overrides().await?;
        Ok(crate::metering::prices::Catalogue::new(&overrides, &crate::metering::prices::default_entries()))
    }

    /// A batch of usage records from the data plane: checked, priced, stored once.
    pub async fn ingest_usage(&self, batch: tollgate_contract::usage::UsageBatch) -> Result<tollgate_contract::usage::UsageAck, ServiceError> {
        if batch.records.len() > 50_000 {
            return Err(ServiceError::Invalid("A usage batch holds at most 50,000 records.".into()));
        }
        for (i, r) in batch.records.iter().enumerate() {
            crate::metering::validate(r).map_err(|e| ServiceError::Invalid(format!("records[{i}]: {e}")))?;
        }
        let total = batch.records.len() as u64;
        let mut ids: Vec<&str> = batch.records.iter().map(|r| r.key_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let owners = self.store.key_owners(&ids).await?;
        let rows = crate::metering::price(batch.records, &self.catalogue().await?, &owners);
        let accepted = self.store.ingest(&rows).await?;
        Ok(tollgate_contract::usage::UsageAck { accepted, duplicates: total - accepted })
    }

    /// Daily spend of a scope. Admins and team-less viewers see every scope; others see their
    /// team, its users and its keys.
    pub async fn spend(&self, actor: &Actor, q: crate::store::SpendQuery) -> Result<Vec<crate::store::SpendRow>, ServiceError> {
        if !["key", "user", "team", "model", "provider"].contains(&q.scope.as_str()) {
            return Err(ServiceError::Invalid("'scope' must be key, user, team, model or provider.".into()));
        }
        let everything = actor.role == UserRole::Admin || (actor.role == UserRole::Viewer && actor.team_id.is_none());
        if !everything {
            let id = q.scope_id.as_deref().ok_or_else(|| ServiceError::Forbidden("Name the scope_id of your team, one of its users or keys.".into()))?;
            let team = match q.scope.as_str() {
                "team" => Some(id.to_owned()),
                "user" => self.store.user(id).await?.and_then(|u| u.team_id),
                "key" => self.store.key(id).await?.and_then(|k| k.team_id),
                _ => None,
            };
            let own = team.is_some() && team == actor.team_id;
            let member_ok = actor.role != UserRole::Member
                || match q.scope.as_str() {
                    "user" => actor.user_id.as_deref() == Some(id),
                    "key" => self.store.key(id).await?.is_some_and(|k| k.user_id == actor.user_id),
                    _ => false,
                };
            if !own || !member_ok {
                return Err(ServiceError::Forbidden("You may read the spend of your own team, its users and keys only.".into()));
            }
        }
        Ok(self.store.spend(&q).await?)
    }

    pub async fn list_prices(&self, actor: &Actor) -> Result<serde_json::Value, ServiceError> {
        Self::check(actor, Verb::Read, Object::Models)?;
        let overrides = self.store.price_overrides().await?;
        let catalogue = self.catalogue().await?;
        Ok(serde_json::json!({
            "version": catalogue.version,
            "overrides": overrides,
            "defaults": crate::metering::prices::default_entries(),
        }))
    }

    pub async fn add_price(&self, actor: &Actor, entry: crate::metering::prices::PriceEntry) -> Result<serde_json::Value, ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        entry.rates().map_err(ServiceError::Invalid)?;
        if entry.provider.is_empty() || entry.model.is_empty() || entry.as_of.len() != 10 {
            return Err(ServiceError::Invalid("'provider', 'model' and 'as_of' (YYYY-MM-DD) are required.".into()));
        }
        let now = unix_now();
        let target = format!("{}:{}", entry.provider, entry.model);
        let audit = Audit { after: serde_json::to_value(&entry).ok(), ..Self::audit(actor, "price.create", &target, None, now) };
        self.store.add_price(&entry, now, &audit).await?;
        Ok(serde_json::json!({"version": self.catalogue().await?.version, "entry": entry}))
    }
}

#[cfg(test)]
mod dns_tests {
    use super::resolves_to_refused;
    use crate::egress::{Egress, EgressError};
    use crate::model::EgressSettings;

    #[tokio::test]
    async fn a_name_is_judged_by_what_it_resolves_to() {
        let strict = Egress::DEFAULT;
        // `localhost` resolves to loopback (here, from /etc/hosts).
        assert_eq!(resolves_to_refused(&strict, Some("http://localhost:9/v1")).await, Some(EgressError::Loopback));
        let loopback_ok = EgressSettings { allow_loopback: true, ..Default::default() };
        assert_eq!(resolves_to_refused(&Egress { settings: &loopback_ok, own_ports: &[] }, Some("http://localhost:9/v1")).await, None);
        let by_name = EgressSettings { allow_hosts: vec!["localhost:9".into()], ..Default::default() };
        assert_eq!(resolves_to_refused(&Egress { settings: &by_name, own_ports: &[] }, Some("http://localhost:9/v1")).await, None);
        // The gateway's own port, reached by a name.
        assert_eq!(resolves_to_refused(&Egress { settings: &loopback_ok, own_ports: &[9] }, Some("http://localhost:9/v1")).await, Some(EgressError::OwnPort));
        // Addresses are judged as written elsewhere; a name that does not resolve is let through.
        assert_eq!(resolves_to_refused(&strict, Some("http://127.0.0.1/v1")).await, None);
        assert_eq!(resolves_to_refused(&strict, Some("http://no-such-host.invalid/v1")).await, None);
    }
}
