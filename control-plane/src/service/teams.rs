//! Teams and users: the tenants of the admin API and their members' roles.

use super::*;

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
        let allowed = authz::allows(actor, verb, Object::Team { id });
        scoped(self.store.team(id).await?, |_| allowed, actor, format!("No team with id '{id}'."), "This team is not yours, or does not exist.")
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
        self.patched_level(actor, &mut new.models, &mut new.access_groups, patch.models, patch.access_groups).await?;
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
        scoped(
            self.store.user(id).await?,
            |u| authz::allows(actor, verb, Object::User { id, team_id: u.team_id.as_deref() }),
            actor,
            format!("No user with id '{id}'."),
            "This user is not in your team, or does not exist.",
        )
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
        self.patched_level(actor, &mut new.models, &mut new.access_groups, patch.models, patch.access_groups).await?;
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
