//! What is stored: the rows of the configuration as written (config file or admin API), before
//! they are parsed into the domain model. No secrets (credentials are references to environment
//! variables or to an AWS credential chain, keys are digests).

use serde::{Deserialize, Serialize};
use tollgate_contract::config::PromptTemplate;
use tollgate_contract::keys::Role;

pub use super::settings::{EdgeSettings, EgressSettings};

/// Where a credential's secrets come from: names of the control plane's environment variables,
/// or an AWS credential chain (`aws`). Only these references are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialRef {
    /// An API key (OpenAI, Anthropic, or a Bedrock API key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// AWS static credentials for SigV4 (Bedrock, SageMaker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_access_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_session_token_env: Option<String>,
    /// AWS credentials for SigV4 obtained through the `aws-config` chain and kept fresh by the
    /// control plane (`crate::aws`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsChainSpec>,
    /// Secret values given through the admin API, encrypted (`crate::kek`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<StoredSecret>,
}

/// A provider secret encrypted at rest: AES-256-GCM under the KEK `kek_id`, the credential's
/// name as associated data. `fingerprint` identifies the secret without revealing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoredSecret {
    pub kek_id: String,
    pub nonce: String,
    pub ciphertext: String,
    pub fingerprint: String,
}

/// The secret values of a credential given through the admin API (only ever in memory, or
/// encrypted in a [`StoredSecret`]).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretMaterial {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_session_token: Option<String>,
}

impl std::fmt::Debug for SecretMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretMaterial").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl SecretMaterial {
    /// `sha256:` and the first 12 hex digits of the SHA-256 of the values: enough to tell two
    /// secrets apart in a list or an audit row, not to recover either.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [&self.api_key, &self.aws_access_key_id, &self.aws_secret_access_key, &self.aws_session_token] {
            h.update(part.as_deref().unwrap_or_default().as_bytes());
            h.update([0]);
        }
        format!("sha256:{}", &hex::encode(h.finalize())[..12])
    }
}

/// Where the AWS credential chain starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AwsSource {
    /// aws-config's default chain: environment, shared profile (`AWS_PROFILE` or `default`, with
    /// `credential_process` and `role_arn`/`source_profile`), web identity (IRSA), ECS container
    /// credentials, EC2 instance metadata.
    DefaultChain,
    /// Only the named profile of the shared config and credentials files.
    Profile,
}

/// An AWS credential resolved by the control plane, optionally with a role assumed on top.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsChainSpec {
    pub source: AwsSource,
    /// The profile name; required with `source: profile`, not allowed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Region for STS (web identity, assume-role); default: aws-config's region chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A role assumed (STS AssumeRole) with the credentials of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role_arn: Option<String>,
    /// `ExternalId` of the AssumeRole call (only with `assume_role_arn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// `RoleSessionName` of the AssumeRole call (only with `assume_role_arn`; default `tollgate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
}

impl AwsChainSpec {
    /// The session name used for `assume_role_arn`.
    pub fn effective_session_name(&self) -> &str {
        self.session_name.as_deref().unwrap_or("tollgate")
    }

    /// Why this spec cannot be used, if it cannot (checked when the config file is parsed).
    pub fn problem(&self) -> Option<String> {
        match (self.source, &self.profile) {
            (AwsSource::Profile, None) => return Some("`source: profile` needs `profile`".into()),
            (AwsSource::Profile, Some(p)) if p.trim().is_empty() => return Some("`profile` is empty".into()),
            (AwsSource::DefaultChain, Some(_)) => {
                return Some("`profile` goes with `source: profile` (the default chain reads AWS_PROFILE)".into())
            }
            _ => {}
        }
        if self.region.as_deref().is_some_and(|r| r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')) {
            return Some("`region` must look like us-east-1".into());
        }
        match &self.assume_role_arn {
            None if self.external_id.is_some() || self.session_name.is_some() => {
                Some("`external_id` and `session_name` go with `assume_role_arn`".into())
            }
            Some(arn) if !(arn.starts_with("arn:") && arn.contains(":role/")) => {
                Some("`assume_role_arn` must be a role ARN (arn:aws:iam::<account>:role/<name>)".into())
            }
            _ => {
                let name = self.effective_session_name();
                let valid = (2..=64).contains(&name.len())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c));
                (!valid).then(|| "`session_name` must be 2 to 64 characters of [A-Za-z0-9+=,.@_-]".into())
            }
        }
    }
}

/// What the control plane knows of secrets right now: its environment, and the AWS credentials
/// its refresher obtained through the chain. A plain `Fn(&str) -> Option<String>` is an
/// environment with no AWS chain credentials.
pub trait Secrets: Send + Sync {
    fn env(&self, name: &str) -> Option<String>;
    /// The current (unexpired) credentials obtained for credential `name` with `spec`.
    fn aws_chain(&self, _name: &str, _spec: &AwsChainSpec) -> Option<tollgate_contract::config::AwsCredential> {
        None
    }
    /// The secret values of a credential stored through the admin API.
    fn decrypt(&self, name: &str, stored: &StoredSecret) -> Option<SecretMaterial> {
        crate::kek::keyring().decrypt(name, stored)
    }
}

impl<F: Fn(&str) -> Option<String> + Send + Sync> Secrets for F {
    fn env(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl CredentialRef {
    /// The environment variables that must be set for this credential to be usable.
    pub fn required_env(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.api_key_env.iter().map(String::as_str).collect();
        v.extend(self.aws_access_key_id_env.as_deref());
        v.extend(self.aws_secret_access_key_env.as_deref());
        v
    }

    /// Resolves the secrets of credential `name`; `None` when a required variable is unset or
    /// empty, or its AWS chain has no current credentials.
    pub fn resolve(&self, name: &str, secrets: &dyn Secrets) -> Option<tollgate_contract::config::Credential> {
        let get = |var: &str| secrets.env(var).filter(|v| !v.is_empty());
        if let Some(stored) = &self.stored {
            let m = secrets.decrypt(name, stored)?;
            let aws = match (m.aws_access_key_id, m.aws_secret_access_key) {
                (Some(access_key_id), Some(secret_access_key)) => {
                    Some(tollgate_contract::config::AwsCredential { access_key_id, secret_access_key, session_token: m.aws_session_token })
                }
                _ => None,
            };
            return Some(tollgate_contract::config::Credential { api_key: m.api_key, aws });
        }
        let api_key = match &self.api_key_env {
            Some(n) => Some(get(n)?),
            None => None,
        };
        let aws = match (&self.aws_access_key_id_env, &self.aws_secret_access_key_env, &self.aws) {
            (Some(id), Some(secret), _) => Some(tollgate_contract::config::AwsCredential {
                access_key_id: get(id)?,
                secret_access_key: get(secret)?,
                session_token: self.aws_session_token_env.as_deref().and_then(get),
            }),
            (_, _, Some(spec)) => Some(secrets.aws_chain(name, spec)?),
            _ => None,
        };
        Some(tollgate_contract::config::Credential { api_key, aws })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// OpenAI or any OpenAI-compatible endpoint.
    Openai,
    /// Amazon Bedrock Runtime (Converse API); needs `region`.
    Bedrock,
    /// Anthropic Messages API.
    Anthropic,
    /// Azure OpenAI (`base_url` = the deployment URL, `api_version`).
    Azure,
    /// Amazon SageMaker endpoint (`model` = endpoint name), OpenAI-style chat or TGI (`payload`).
    Sagemaker,
    /// The built-in demo model served by the control plane itself.
    Demo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub provider: Provider,
    /// e.g. `https://api.openai.com/v1`; not used for `demo`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Provider model id; defaults to the model name.
    #[serde(default)]
    pub model: Option<String>,
    /// Name of a credential in `credentials`.
    #[serde(default)]
    pub credential: Option<String>,
    #[serde(default = "one")]
    pub weight: u32,
    /// Lower is tried first; higher priorities are failover targets.
    #[serde(default)]
    pub priority: u32,
    /// AWS region (Bedrock, SageMaker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Azure OpenAI `api-version` (default 2024-10-21).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// SageMaker: what the endpoint's container speaks (default `openai`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<SagemakerPayload>,
    /// SageMaker with `payload: tgi`: how chat messages become the prompt (required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "llama3")]
    pub prompt_template: Option<PromptTemplate>,
    /// OpenAI: the endpoint serves the Responses API (`POST /responses`), so Responses requests
    /// pass through instead of being translated to chat completions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub responses_api: bool,
}

/// The payload format of a SageMaker endpoint's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagemakerPayload {
    /// OpenAI-style chat completions (e.g. vLLM, LMI, TGI's Messages API).
    Openai,
    /// Hugging Face Text Generation Inference's generate API (`{"inputs", "parameters"}`).
    Tgi,
}

impl DeploymentSpec {
    /// The base URL, with the provider's default when none is configured.
    pub fn effective_base_url(&self) -> Option<String> {
        if let Some(u) = &self.base_url {
            return Some(u.clone());
        }
        match self.provider {
            Provider::Anthropic => Some("https://api.anthropic.com/v1".to_owned()),
            Provider::Bedrock => self.region.as_ref().map(|r| format!("https://bedrock-runtime.{r}.amazonaws.com")),
            Provider::Sagemaker => self.region.as_ref().map(|r| format!("https://runtime.sagemaker.{r}.amazonaws.com")),
            Provider::Openai | Provider::Azure | Provider::Demo => None,
        }
    }
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub deployments: Vec<DeploymentSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub digest: String,
    pub role: Role,
    pub models: Option<Vec<String>>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The user the key belongs to (its admin-API role and model allowance come from them).
    pub user_id: Option<String>,
    /// The team whose key it is (whose allowance bounds it, whose admins manage it).
    pub team_id: Option<String>,
    pub tags: Vec<String>,
    pub metadata: Option<serde_json::Value>,
    /// Named model sets ([`AccessGroup`]) added to `models`.
    pub access_groups: Vec<String>,
    /// A blocked key is refused until unblocked (not revoked: it can come back).
    pub blocked: bool,
    /// The secret's digest before the last rotation, accepted until `previous_valid_until`.
    pub previous_digest: Option<String>,
    pub previous_valid_until: Option<i64>,
    pub rotated_at: Option<i64>,
    /// SHA-256 (hex) of the key id and the idempotency key of the last rotation, and its answer
    /// (the new secret, encrypted under the KEK when there is one): a retry of that rotation,
    /// on any replica, gets the same answer while the old secret's grace lasts.
    pub rotation_idempotency: Option<String>,
    pub rotation_answer: Option<StoredSecret>,
}

/// A team: a tenant of the admin API, and a bound on what its keys may call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TeamRecord {
    pub id: String,
    pub name: String,
    /// `None` (and no access group): every model.
    pub models: Option<Vec<String>>,
    pub access_groups: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub created_at: i64,
}

/// A named set of models, by name or `*` pattern (`claude-*`), referenced by keys, users and
/// teams. An empty group, or a name no group has, grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessGroup {
    pub name: String,
    pub models: Vec<String>,
    pub created_at: i64,
}

/// An admin-API role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    /// Read only (its team's objects; everything when it has no team).
    Viewer,
    /// Its own keys, within its team's and its own allowance.
    #[default]
    Member,
    /// Its team's members, keys and limits.
    TeamAdmin,
    /// Everything.
    Admin,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::TeamAdmin => "team_admin",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Viewer, Self::Member, Self::TeamAdmin, Self::Admin].into_iter().find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub team_id: Option<String>,
    pub role: UserRole,
    /// `None` (and no access group): whatever the team allows.
    pub models: Option<Vec<String>>,
    pub access_groups: Vec<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    #[serde(default = "default_timeout")]
    pub request_timeout_seconds: u64,
    #[serde(default = "default_retries")]
    pub num_retries: u32,
    /// Envoy's client-facing limits and timeouts (see `EdgeSettings`).
    #[serde(default)]
    pub edge: EdgeSettings,
    /// Which provider URLs may be used (see `EgressSettings`).
    #[serde(default)]
    pub egress: EgressSettings,
    /// Usage records for the ledger (on by default; off only to measure what metering costs).
    #[serde(default = "default_metering")]
    pub metering: bool,
    /// Quota threshold alerts (see `crate::alerts`).
    #[serde(default)]
    pub alerts: AlertSettings,
}

/// Where quota threshold alerts go: a Slack-compatible webhook whose URL (a secret: it lets
/// anyone post to the channel) is read from the control plane's environment, never stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// The environment variable holding the webhook URL.
    #[serde(default)]
    pub webhook_url_env: Option<String>,
}

fn default_metering() -> bool {
    true
}

fn default_max_body() -> u64 {
    tollgate_contract::config::DEFAULT_MAX_BODY_BYTES
}
fn default_timeout() -> u64 {
    600
}
fn default_retries() -> u32 {
    2
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            request_timeout_seconds: default_timeout(),
            num_retries: default_retries(),
            edge: EdgeSettings::default(),
            egress: EgressSettings::default(),
            metering: true,
            alerts: AlertSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_contract::config::AwsCredential;

    /// An environment with one variable and one chain credential (for `chain` only).
    struct Fixed;

    impl Secrets for Fixed {
        fn env(&self, name: &str) -> Option<String> {
            (name == "SET").then(|| "value".to_owned())
        }
        fn aws_chain(&self, name: &str, _spec: &AwsChainSpec) -> Option<AwsCredential> {
            (name == "chain").then(|| AwsCredential {
                access_key_id: "ASIA1".into(),
                secret_access_key: "s".into(),
                session_token: Some("t".into()),
            })
        }
    }

    fn chain_ref() -> CredentialRef {
        let spec = AwsChainSpec {
            source: AwsSource::DefaultChain,
            profile: None,
            region: None,
            assume_role_arn: None,
            external_id: None,
            session_name: None,
        };
        CredentialRef { aws: Some(spec), ..Default::default() }
    }

    #[test]
    fn a_chain_credential_resolves_to_what_the_chain_obtained_for_it() {
        let c = chain_ref().resolve("chain", &Fixed).unwrap();
        assert_eq!(c.aws.unwrap().access_key_id, "ASIA1");
        assert!(c.api_key.is_none());
        // another credential with the same spec has not been obtained
        assert!(chain_ref().resolve("other", &Fixed).is_none());
        // a plain environment has no chain credentials
        let env = |_: &str| Some("x".to_owned());
        assert!(chain_ref().resolve("chain", &env).is_none());
    }

    #[test]
    fn env_credentials_resolve_as_before() {
        let key = CredentialRef { api_key_env: Some("SET".into()), ..Default::default() };
        assert_eq!(key.resolve("k", &Fixed).unwrap().api_key.as_deref(), Some("value"));
        let unset = CredentialRef { api_key_env: Some("UNSET".into()), ..Default::default() };
        assert!(unset.resolve("k", &Fixed).is_none());
        let aws = CredentialRef {
            aws_access_key_id_env: Some("SET".into()),
            aws_secret_access_key_env: Some("SET".into()),
            ..Default::default()
        };
        let resolved = aws.resolve("chain", &Fixed).unwrap().aws.unwrap();
        assert_eq!((resolved.access_key_id.as_str(), resolved.session_token), ("value", None));
    }
}
