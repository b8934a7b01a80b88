//! Usage records: what the data plane reports for every attempt that reached a provider, and
//! the control plane's ledger ingests (issue 12). The wire form is JSON lines in a batch
//! (`POST` [`crate::contract::USAGE_PATH`] on the internal listener, data-plane token), one record
//! per attempt; ingestion is idempotent by `(request_id, attempt)`.

use serde::{Deserialize, Serialize};

/// One attempt of one request, as the provider filter saw it end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    /// Envoy's `x-request-id`: the same for every attempt of a request.
    pub request_id: String,
    /// 0 for the first attempt, then 1, 2... (retries and failovers).
    #[serde(default)]
    pub attempt: u32,
    /// When the attempt ended, Unix milliseconds.
    pub at_ms: u64,
    /// The virtual key's public id.
    pub key_id: String,
    /// The model the client asked for (the served name).
    pub model: String,
    /// `openai`, `azure`, `anthropic`, `bedrock`, `sagemaker`, `demo`.
    pub provider: String,
    /// The provider's model id (or endpoint name) this attempt called.
    pub provider_model: String,
    /// The provider's HTTP status (0: no response, e.g. a reset).
    pub status: u16,
    #[serde(default)]
    pub stream: bool,
    /// Input tokens not read from or written to a prompt cache.
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// The provider never reported usage (e.g. the client went away mid-stream): the counts are
    /// estimated from what was delivered.
    #[serde(default)]
    pub estimated: bool,
    #[serde(default)]
    pub latency_ms: u32,
    /// Time to first byte of the response, for streams.
    #[serde(default)]
    pub ttft_ms: Option<u32>,
}

/// What the data plane sends: records in a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    pub records: Vec<UsageRecord>,
}

/// The control plane's answer: how many records were new, how many it had already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageAck {
    pub accepted: u64,
    pub duplicates: u64,
    /// Records that failed the checks (each refused alone; the rest of the batch is stored).
    #[serde(default)]
    pub rejected: u64,
}
