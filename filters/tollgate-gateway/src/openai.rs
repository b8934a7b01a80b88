//! OpenAI wire types: the parts of the client request the gateway filter reads to validate and
//! route, and the responses it writes itself. Provider-bound bodies are rewritten loss-free by
//! `tollgate_provider::rewrite`, so these types keep only what the gateway needs.

use serde::{Deserialize, Serialize};

/// The fields of `POST /v1/chat/completions` the gateway validates and routes on.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// Read leniently, as the provider filter reads it: only `include_usage: true` counts.
    #[serde(default)]
    pub stream_options: Option<serde_json::Value>,
    /// Output limits (quotas reserve them), read leniently.
    #[serde(default)]
    pub max_tokens: crate::request::Lenient,
    #[serde(default)]
    pub max_completion_tokens: crate::request::Lenient,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    #[serde(default)]
    pub role: Option<MessageRole>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
    #[serde(other)]
    Unknown,
}

/// The fields of `POST /v1/embeddings` the gateway validates and routes on.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub input: Option<serde::de::IgnoredAny>,
}

/// `GET /v1/models` response.
#[derive(Debug, Serialize)]
pub struct ModelList<'a> {
    pub object: &'static str,
    pub data: Vec<Model<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Model<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'a str,
}
