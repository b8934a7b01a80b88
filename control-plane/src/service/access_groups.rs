//! Access groups: named model sets (`*` patterns) that keys, users and teams reference.

use super::*;

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
