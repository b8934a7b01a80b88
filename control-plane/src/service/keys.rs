//! Virtual keys: creation (one or in bulk, never more than the creator may), listing scoped to
//! the caller, changes, blocking, rotation with a grace period (idempotent), revocation.

use super::*;

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

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    pub grace_seconds: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl Service {
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
        scoped(
            self.store.key(id).await?,
            |k| authz::allows(actor, verb, Object::Key { user_id: k.user_id.as_deref(), team_id: k.team_id.as_deref() }),
            actor,
            format!("No key with id '{id}'."),
            "This key is not yours or your team's, or does not exist.",
        )
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
        self.patched_level(actor, &mut new.models, &mut new.access_groups, patch.models, patch.access_groups).await?;
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
}
