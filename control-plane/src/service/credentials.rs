//! Provider credentials managed at runtime: secrets encrypted under the KEK, never returned;
//! references to environment variables or AWS chains as in the config file.

use super::*;

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
