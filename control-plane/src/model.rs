//! The validated domain model: everything the snapshot builder needs, nothing it does not.
//! Built from the store; no secrets (credentials are references to environment variables,
//! keys are digests).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tollgate_types::config::PromptTemplate;
use tollgate_types::keys::Role;

/// Where a credential's secrets come from: names of the control plane's environment variables.
/// Only these references are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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
}

impl CredentialRef {
    /// The environment variables that must be set for this credential to be usable.
    pub fn required_env(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.api_key_env.iter().map(String::as_str).collect();
        v.extend(self.aws_access_key_id_env.as_deref());
        v.extend(self.aws_secret_access_key_env.as_deref());
        v
    }

    /// Resolves the secrets from `env`; `None` when a required variable is unset or empty.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<tollgate_types::config::Credential> {
        let get = |name: &str| env(name).filter(|v| !v.is_empty());
        let api_key = match &self.api_key_env {
            Some(n) => Some(get(n)?),
            None => None,
        };
        let aws = match (&self.aws_access_key_id_env, &self.aws_secret_access_key_env) {
            (Some(id), Some(secret)) => Some(tollgate_types::config::AwsCredential {
                access_key_id: get(id)?,
                secret_access_key: get(secret)?,
                session_token: self.aws_session_token_env.as_deref().and_then(get),
            }),
            _ => None,
        };
        Some(tollgate_types::config::Credential { api_key, aws })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    pub prompt_template: Option<PromptTemplate>,
}

/// The payload format of a SageMaker endpoint's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub deployments: Vec<DeploymentSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub digest: String,
    pub role: Role,
    pub models: Option<Vec<String>>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
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
}

fn default_max_body() -> u64 {
    tollgate_types::config::DEFAULT_MAX_BODY_BYTES
}
fn default_timeout() -> u64 {
    600
}
fn default_retries() -> u32 {
    2
}

impl Default for Settings {
    fn default() -> Self {
        Self { max_body_bytes: default_max_body(), request_timeout_seconds: default_timeout(), num_retries: default_retries() }
    }
}

/// One model with the deployments that can serve it now (a deployment whose credential's
/// environment variable is unset is left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServedModel {
    pub name: String,
    pub created: i64,
    pub deployments: Vec<DeploymentSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Model {
    pub settings: Settings,
    pub credentials: BTreeMap<String, CredentialRef>,
    pub models: Vec<ServedModel>,
    /// Keys that are not revoked (expired ones stay: the filter refuses them by time).
    pub keys: Vec<KeyRecord>,
}
