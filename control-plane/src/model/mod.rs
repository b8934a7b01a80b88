//! The domain model: everything the snapshot builder needs, nothing it does not, in types that
//! cannot hold a deployment the gateway cannot serve ("parse, don't validate").
//!
//! - `spec`: the stored rows as written (config file, admin API).
//! - this module: the parsed model: per-provider deployment variants with typed upstream URLs.
//! - `resolve`: stored rows → the servable model plus the list of what cannot be served and why.
//!   It never fails: a bad row is a problem reported for that row, never for the others.
//!
//! No secrets: credentials are references to environment variables or to an AWS credential
//! chain, keys are digests.

mod resolve;
mod settings;
mod spec;

use std::collections::BTreeMap;

use serde::Serialize;
use tollgate_contract::config::PromptTemplate;

pub mod access;
pub mod calendar;
pub use resolve::{resolve, ModelRow, Problem, Resolved, StoredConfig};
pub use spec::*;

use crate::egress::{Egress, EgressError};
use crate::upstream::{UpstreamUrl, UrlError};

/// The Azure OpenAI `api-version` used when a deployment names none.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// One deployment the gateway can serve: where it is, how to talk to it, with what credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployment {
    pub upstream: Upstream,
    /// The provider's model id, written into the request.
    pub model: String,
    /// Name of a credential that resolves (checked when the model is resolved).
    pub credential: Option<String>,
    /// At least 1.
    pub weight: u32,
    /// Lower is tried first.
    pub priority: u32,
    /// The catalogue's rates for this deployment (nano-dollars per token), if it has them.
    pub price: Option<tollgate_contract::config::Price>,
}

impl Upstream {
    /// The provider's name as usage records and the price catalogue spell it (the demo model
    /// speaks OpenAI).
    pub fn provider_name(&self) -> &'static str {
        match self {
            Self::Demo | Self::Openai { .. } => "openai",
            Self::Anthropic { .. } => "anthropic",
            Self::Azure { .. } => "azure",
            Self::Bedrock { .. } => "bedrock",
            Self::Sagemaker { .. } => "sagemaker",
        }
    }
}

/// Where a deployment is and what it speaks, with exactly the fields its provider needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum Upstream {
    /// The built-in demo model; its URL is a fact of the environment (`XdsEnv::demo_url`).
    Demo,
    Openai { url: UpstreamUrl, responses_api: bool },
    Anthropic { url: UpstreamUrl },
    Azure { url: UpstreamUrl, api_version: String },
    Bedrock { url: UpstreamUrl, region: String },
    Sagemaker { url: UpstreamUrl, region: String, container: Container },
}

/// What a SageMaker endpoint's container speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    /// OpenAI-style chat completions.
    OpenaiChat,
    /// Text Generation Inference with a known prompt template (never `PromptTemplate::Unknown`).
    Tgi(PromptTemplate),
}

/// One model with the deployments that can serve it now (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServedModel {
    pub name: String,
    pub created: i64,
    pub deployments: Vec<Deployment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Model {
    pub settings: Settings,
    /// Credential references that parsed (the credential document is resolved from these).
    pub credentials: BTreeMap<String, CredentialRef>,
    pub models: Vec<ServedModel>,
    pub quotas: Vec<crate::store::QuotaSpec>,
    /// The keys of each user- or team-scoped quota, by quota id (sorted).
    pub quota_keys: std::collections::BTreeMap<String, Vec<String>>,
    /// Envoys sharing the quotas (at least 1): each admits `limit / envoys` of each.
    pub envoys: u64,
}

/// Why a stored deployment cannot be served. Messages are safe to show and to log: they name
/// fields and credentials, never a URL or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeploymentError {
    #[error("a bedrock or sagemaker deployment needs region (e.g. us-east-1)")]
    NoRegion,
    #[error("a sagemaker deployment needs model (the endpoint name)")]
    NoEndpointName,
    #[error("payload and prompt_template apply to sagemaker deployments only")]
    PayloadNotSagemaker,
    #[error("a sagemaker deployment with payload: tgi needs prompt_template ({})", PromptTemplate::NAMES.join(", "))]
    NoPromptTemplate,
    #[error("unknown prompt_template; use one of {}", PromptTemplate::NAMES.join(", "))]
    UnknownPromptTemplate,
    #[error("prompt_template applies to payload: tgi only (OpenAI-style containers apply their own chat template)")]
    TemplateWithoutTgi,
    #[error("responses_api applies to openai deployments only")]
    ResponsesApiNotOpenai,
    #[error("this deployment needs base_url (e.g. https://api.openai.com/v1, or an Azure deployment URL)")]
    NoBaseUrl,
    #[error("base_url {0}")]
    BaseUrl(#[from] UrlError),
    #[error("base_url {0}")]
    Egress(#[from] EgressError),
    #[error("credential `{0}` is not declared")]
    UnknownCredential(String),
    #[error("credential `{name}` cannot be read from the store: {reason}")]
    UnreadableCredential { name: String, reason: String },
    #[error("credential `{0}` is not available (an environment variable it names is unset or empty, or its AWS chain has no current credentials)")]
    CredentialUnavailable(String),
}

impl DeploymentSpec {
    /// Parses the stored deployment of model `served_name` into what the gateway serves, without
    /// looking at its credential (see [`resolve`]). Its base URL must pass the egress policy.
    pub fn parse(&self, served_name: &str, egress: &Egress) -> Result<Deployment, DeploymentError> {
        if matches!(self.provider, Provider::Bedrock | Provider::Sagemaker) && self.region.is_none() {
            return Err(DeploymentError::NoRegion);
        }
        if self.provider == Provider::Sagemaker && self.model.is_none() {
            return Err(DeploymentError::NoEndpointName);
        }
        let container = self.container()?;
        if self.responses_api && self.provider != Provider::Openai {
            return Err(DeploymentError::ResponsesApiNotOpenai);
        }
        let url = || -> Result<UpstreamUrl, DeploymentError> {
            let url = UpstreamUrl::parse(&self.effective_base_url().ok_or(DeploymentError::NoBaseUrl)?)?;
            egress.check(&url)?;
            Ok(url)
        };
        let region = || self.region.clone().unwrap_or_default();
        let upstream = match self.provider {
            Provider::Demo => Upstream::Demo,
            Provider::Openai => Upstream::Openai { url: url()?, responses_api: self.responses_api },
            Provider::Anthropic => Upstream::Anthropic { url: url()? },
            Provider::Azure => Upstream::Azure {
                url: url()?,
                api_version: self.api_version.clone().unwrap_or_else(|| DEFAULT_AZURE_API_VERSION.to_owned()),
            },
            Provider::Bedrock => Upstream::Bedrock { url: url()?, region: region() },
            Provider::Sagemaker => Upstream::Sagemaker { url: url()?, region: region(), container },
        };
        let model = match (&self.model, self.provider) {
            (Some(m), _) => m.clone(),
            (None, Provider::Demo) => crate::demo::DEMO_MODEL_ID.to_owned(),
            (None, _) => served_name.to_owned(),
        };
        Ok(Deployment { upstream, model, credential: self.credential.clone(), weight: self.weight.max(1), priority: self.priority, price: None })
    }

    /// `payload` and `prompt_template` are SageMaker options; `payload: tgi` needs a known template.
    fn container(&self) -> Result<Container, DeploymentError> {
        if self.provider != Provider::Sagemaker && (self.payload.is_some() || self.prompt_template.is_some()) {
            return Err(DeploymentError::PayloadNotSagemaker);
        }
        match (self.payload, self.prompt_template) {
            (Some(SagemakerPayload::Tgi), None) => Err(DeploymentError::NoPromptTemplate),
            (Some(SagemakerPayload::Tgi), Some(PromptTemplate::Unknown)) => Err(DeploymentError::UnknownPromptTemplate),
            (Some(SagemakerPayload::Tgi), Some(t)) => Ok(Container::Tgi(t)),
            (None | Some(SagemakerPayload::Openai), Some(_)) => Err(DeploymentError::TemplateWithoutTgi),
            (None | Some(SagemakerPayload::Openai), None) => Ok(Container::OpenaiChat),
        }
    }
}
