//! The configuration the control plane sends the filters, used on both sides.
//! `*Doc` types are the JSON wire form; `parse` compiles them ("parse, don't validate") so a bad
//! configuration is rejected in `on_configure` (Envoy NACKs it and keeps the last good one).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};


pub const SCHEMA_VERSION: u32 = 1;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported configuration schema {actual}, this filter supports {supported}")]
    Schema { actual: u32, supported: u32 },
    #[error("model {name}: declared twice")]
    DuplicateModel { name: String },
}

/// Configuration of the downstream gateway filter (delivered by ECDS).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GatewayConfigDoc {
    pub schema: u32,
    pub max_body_bytes: u64,
    /// The virtual keys are not here: they travel as a binary table of shards
    /// ([`crate::keytable`]) fetched by the service VM, so that a change to one key costs a
    /// worker one shard, not the whole table.
    pub models: Vec<ModelDoc>,
    /// Test builds of the stack only (`tollgate serve --test-fault-injection`): a request with
    /// [`crate::contract::HEADER_FAULT`] makes the filter trap, to test VM failure handling.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fault_injection: bool,
    /// Quotas with this Envoy's share of each limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<crate::quota::QuotaDoc>,
    /// Each priced model's highest deployment rates, for budgets' worst-case reservations
    /// (ordered: the same prices always serialise to the same bytes, so the config's version
    /// does not change when nothing did).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_prices: BTreeMap<String, Price>,
    /// How long a quota reservation never given back is held before it expires: longer than
    /// any request may run (the control plane sends its request timeout and a minute more).
    #[serde(default = "default_hold_seconds")]
    pub quota_hold_seconds: u64,
}

/// [`GatewayConfigDoc::quota_hold_seconds`] when the control plane sends none: the default
/// request timeout (600 s) and a minute.
pub const DEFAULT_HOLD_SECONDS: u64 = 660;

fn default_hold_seconds() -> u64 {
    DEFAULT_HOLD_SECONDS
}


/// Configuration of the upstream provider filter (in each model cluster's filter chain). The
/// same on every cluster: the filter makes each stream from the root it configured last, not
/// from its own cluster's (`tollgate_wasm`'s dispatcher), so what differs per model or
/// deployment belongs in [`DeploymentMeta`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfigDoc {
    /// As [`GatewayConfigDoc::fault_injection`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fault_injection: bool,
    /// No usage records (`settings.metering: false`): to measure what metering costs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metering_off: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelDoc {
    pub name: String,
    /// Envoy cluster serving this model.
    pub cluster: String,
    pub owned_by: String,
    pub created: u64,
    /// The providers of its deployments, when a quota of a provider applies to it (whose lease
    /// the gateway filter makes sure of before an attempt may need it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderKind>,
    /// Clusters of this model without some of its providers' deployments, for each set of its
    /// providers that quotas apply to (leaving one at least): a request whose quotas at those
    /// providers are spent goes there instead (failover around spent providers; the provider
    /// filter cannot be retried past).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without: Vec<Detour>,
}

/// The model's cluster without some providers' deployments.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Detour {
    /// The providers left out (sorted by name, each once).
    pub providers: Vec<ProviderKind>,
    pub cluster: String,
}

impl ModelDoc {
    /// The cluster that leaves out exactly the model's providers among `spent` (its own when
    /// none of them is the model's; `None` when no cluster leaves out exactly those).
    pub fn cluster_without(&self, spent: &[ProviderKind]) -> Option<&str> {
        let mut out: Vec<ProviderKind> = spent.iter().copied().filter(|p| self.providers.contains(p)).collect();
        if out.is_empty() {
            return Some(&self.cluster);
        }
        out.sort_by_key(|p| p.as_str());
        out.dedup();
        self.without.iter().find(|d| d.providers == out).map(|d| d.cluster.as_str())
    }
}

/// The compiled gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub max_body_bytes: u64,
    /// Model name → index into `models`.
    pub model_index: HashMap<String, usize>,
    /// In declaration order (the order `/v1/models` lists them).
    pub models: Vec<ModelDoc>,
    pub fault_injection: bool,
    pub quotas: Vec<crate::quota::QuotaDoc>,
    pub model_prices: BTreeMap<String, Price>,
    pub quota_hold_seconds: u64,
    /// Some quota is a provider's (the models' providers are then worth looking up).
    pub provider_quotas: bool,
}

impl GatewayConfig {
    pub fn parse(json: &[u8]) -> Result<Self, ConfigError> {
        let doc: GatewayConfigDoc =
            serde_json::from_slice(json).map_err(|e| ConfigError::Json(e.to_string()))?;
        Self::compile(doc)
    }

    pub fn compile(doc: GatewayConfigDoc) -> Result<Self, ConfigError> {
        if doc.schema != SCHEMA_VERSION {
            return Err(ConfigError::Schema { actual: doc.schema, supported: SCHEMA_VERSION });
        }
        let mut model_index = HashMap::with_capacity(doc.models.len());
        for (i, m) in doc.models.iter().enumerate() {
            if model_index.insert(m.name.clone(), i).is_some() {
                return Err(ConfigError::DuplicateModel { name: m.name.clone() });
            }
        }
        Ok(Self {
            max_body_bytes: doc.max_body_bytes,
            model_index,
            models: doc.models,
            fault_injection: doc.fault_injection,
            provider_quotas: doc.quotas.iter().any(|q| q.provider.is_some()),
            quotas: doc.quotas,
            model_prices: doc.model_prices,
            quota_hold_seconds: doc.quota_hold_seconds.max(1),
        })
    }

    pub fn model(&self, name: &str) -> Option<&ModelDoc> {
        self.model_index.get(name).and_then(|&i| self.models.get(i))
    }
}

/// Provider API spoken by a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI or any OpenAI-compatible API (including the built-in demo model).
    Openai,
    /// Amazon Bedrock Runtime (Converse / ConverseStream), SigV4 or a Bedrock API key.
    Bedrock,
    /// Anthropic Messages API.
    Anthropic,
    /// Azure OpenAI: deployment URL, `api-version` query, `api-key` header.
    Azure,
    /// Amazon SageMaker endpoint (SigV4) whose container speaks OpenAI-style chat or TGI
    /// (`DeploymentMeta::payload`).
    Sagemaker,
    #[serde(other)]
    Unknown,
}

impl ProviderKind {
    /// The provider's name as usage records and the price catalogue spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Bedrock => "bedrock",
            Self::Anthropic => "anthropic",
            Self::Azure => "azure",
            Self::Sagemaker => "sagemaker",
            Self::Unknown => "unknown",
        }
    }
}

/// One deployment as the provider filter sees it, carried in the endpoint metadata of the
/// model's cluster (no secrets: credentials are referenced by name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeploymentMeta {
    pub id: String,
    pub provider: ProviderKind,
    /// The provider's model id, written into the request.
    pub model: String,
    /// `host[:port]` sent as `:authority`.
    pub authority: String,
    /// Path prefix of the API, e.g. `/v1`.
    pub base_path: String,
    /// Name of the credential to inject, if any.
    #[serde(default)]
    pub credential: Option<String>,
    /// AWS region (Bedrock, SageMaker): the SigV4 signing region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Azure OpenAI `api-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// SageMaker: what the endpoint's container speaks (`None`: OpenAI-style chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<ContainerPayload>,
    /// An OpenAI-compatible deployment that serves the Responses API (`POST /responses`):
    /// Responses requests pass through instead of being translated to chat completions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub responses_api: bool,
    /// The price catalogue's rates for this deployment's model, when it has them: the provider
    /// filter tells the client the cost of a non-streamed answer (`x-tollgate-cost-usd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
}

/// Nano-dollars per token (a price has at most three decimals per million tokens, so these are
/// exact integers).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Price {
    /// The cost of these token counts in nano-dollars (saturating).
    pub fn cost_nanos(&self, input: u64, output: u64, cache_read: u64, cache_write: u64) -> u64 {
        input
            .saturating_mul(self.input)
            .saturating_add(output.saturating_mul(self.output))
            .saturating_add(cache_read.saturating_mul(self.cache_read))
            .saturating_add(cache_write.saturating_mul(self.cache_write))
    }
}

/// Nano-dollars as decimal USD with nine places (`1234` → `"0.000001234"`), as the ledger
/// shows them.
pub fn usd(nanos: u64) -> String {
    // Written by hand: `format!` costs thousands of wasm instructions, and the provider filter
    // writes this on every priced answer (`x-tollgate-cost-usd`).
    let (mut whole, mut frac) = (nanos / 1_000_000_000, nanos % 1_000_000_000);
    let mut buf = [b'0'; 31];
    let mut i = buf.len();
    for _ in 0..9 {
        i -= 1;
        buf[i] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    i -= 1;
    buf[i] = b'.';
    loop {
        i -= 1;
        buf[i] = b'0' + (whole % 10) as u8;
        whole /= 10;
        if whole == 0 {
            break;
        }
    }
    buf[i..].iter().map(|&b| char::from(b)).collect()
}

/// The payload format of a SageMaker endpoint's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContainerPayload {
    /// OpenAI-style chat completions (the default).
    Openai,
    /// Hugging Face Text Generation Inference: `{"inputs", "parameters"}`, the chat rendered
    /// into `inputs` with a prompt template.
    Tgi { prompt_template: PromptTemplate },
    #[serde(other)]
    Unknown,
}

/// How chat messages are rendered into one prompt for a TGI container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptTemplate {
    Llama3,
    Chatml,
    Mistral,
    Plain,
    #[serde(other)]
    Unknown,
}

impl PromptTemplate {
    /// The names a configuration may use.
    pub const NAMES: &'static [&'static str] = &["llama3", "chatml", "mistral", "plain"];
}

/// The credential document the provider filter fetches from the control plane.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CredentialsDoc {
    pub version: String,
    pub credentials: HashMap<String, Credential>,
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Credential {
    /// A bearer API key (OpenAI, Anthropic `x-api-key`, Bedrock API key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// AWS credentials for SigV4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsCredential>,
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AwsCredential {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

impl fmt::Debug for CredentialsDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.credentials.keys().collect();
        names.sort();
        f.debug_struct("CredentialsDoc")
            .field("version", &self.version)
            .field("credentials", &names)
            .finish()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn usd_is_written_as_format_would() {
        for n in [0, 1, 999_999_999, 1_000_000_000, 1_000_000_001, 450_000, 123_456_789_012, u64::MAX] {
            assert_eq!(usd(n), format!("{}.{:09}", n / 1_000_000_000, n % 1_000_000_000));
        }
        assert_eq!(usd(900_000), "0.000900000");
    }

    use super::*;

    fn doc() -> GatewayConfigDoc {
        GatewayConfigDoc {
            schema: SCHEMA_VERSION,
            quotas: Vec::new(),
            model_prices: Default::default(),
            quota_hold_seconds: 660,
            max_body_bytes: 1024,
            models: vec![ModelDoc { name: "m".into(), cluster: "c".into(), owned_by: "o".into(), created: 1, providers: Vec::new(), without: Vec::new() }],
            fault_injection: false,
        }
    }

    #[test]
    fn parses_roundtrip() {
        let json = serde_json::to_vec(&doc()).unwrap();
        let cfg = GatewayConfig::parse(&json).unwrap();
        assert_eq!(cfg.model("m").unwrap().cluster, "c");
        assert!(cfg.model("n").is_none());
    }

    #[test]
    fn rejects_bad_schema_and_duplicates() {
        let mut d = doc();
        d.schema = 99;
        assert!(matches!(GatewayConfig::compile(d), Err(ConfigError::Schema { .. })));
        let mut d = doc();
        d.models.push(d.models[0].clone());
        assert!(matches!(GatewayConfig::compile(d), Err(ConfigError::DuplicateModel { .. })));
        assert!(matches!(GatewayConfig::parse(b"{"), Err(ConfigError::Json(_))));
    }

    #[test]
    fn unknown_provider_kind_parses() {
        let m: DeploymentMeta = serde_json::from_str(
            r#"{"id":"d","provider":"martian","model":"x","authority":"h","base_path":"/v1"}"#,
        )
        .unwrap();
        assert_eq!(m.provider, ProviderKind::Unknown);
    }

    #[test]
    fn container_payload_round_trips_and_unknown_parses() {
        let m: DeploymentMeta = serde_json::from_str(
            r#"{"id":"d","provider":"sagemaker","model":"e","authority":"h","base_path":"","payload":{"kind":"tgi","prompt_template":"llama3"}}"#,
        )
        .unwrap();
        assert_eq!(m.payload, Some(ContainerPayload::Tgi { prompt_template: PromptTemplate::Llama3 }));
        let back: DeploymentMeta = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let m: DeploymentMeta = serde_json::from_str(
            r#"{"id":"d","provider":"sagemaker","model":"e","authority":"h","base_path":"","payload":{"kind":"vllm"}}"#,
        )
        .unwrap();
        assert_eq!(m.payload, Some(ContainerPayload::Unknown));
        let t: PromptTemplate = serde_json::from_str(r#""gemma""#).unwrap();
        assert_eq!(t, PromptTemplate::Unknown);
    }

    #[test]
    fn credentials_debug_redacts() {
        let mut c = CredentialsDoc::default();
        c.credentials.insert("openai".into(), Credential { api_key: Some("sk-secret".into()), aws: None });
        let s = format!("{c:?}");
        assert!(s.contains("openai"));
        assert!(!s.contains("sk-secret"));
    }
}
