//! The validated domain model: everything the snapshot builder needs, nothing it does not.
//! Built from the store; no secrets (credentials are references to environment variables,
//! keys are digests).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tollgate_types::keys::Role;

/// Where a credential's secret comes from. Only the reference is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRef {
    /// Environment variable of the control plane holding the API key.
    pub api_key_env: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// OpenAI or any OpenAI-compatible endpoint.
    Openai,
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
