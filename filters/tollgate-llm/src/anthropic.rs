//! Anthropic Messages API wire types (`POST /v1/messages`), in Anthropic's own terms.
//!
//! Used both ways: [`crate::openai_to_anthropic`] writes [`MessagesRequest`] and reads
//! [`MessagesResponse`] / [`StreamEvent`]; [`crate::anthropic_to_openai`] reads the request of an
//! Anthropic-format client and writes the response and stream events back.
//!
//! Forward compatible: unknown content blocks, deltas and stream events parse into `Unknown`
//! variants, unknown stop reasons into [`StopReason::Unknown`], and unrecognised request fields
//! are kept in `rest`.
//!
//! Usage table (Anthropic → [`Usage`]): `input_tokens` → `input` (Anthropic's count excludes
//! cached tokens, as ours does), `output_tokens` → `output`, `cache_read_input_tokens` →
//! `cache_read`, `cache_creation_input_tokens` → `cache_write`. In a stream, `message_start`
//! carries input and cache counts and `message_delta` the cumulative output count (and sometimes
//! input and cache counts again): merge them with [`Usage::merge`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::usage::Usage;

/// The `anthropic-version` header value the gateway sends.
pub const API_VERSION: &str = "2023-06-01";

// ---- requests ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    pub messages: Vec<Message>,
    /// Required by the API; optional here so a missing value gets a clear error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Every other field (thinking, service_tier, ...), kept as sent.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// `system`: a string, or text blocks (needed for `cache_control`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum System {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: MessageContent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

/// A content block, in requests and responses alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    Image {
        source: ImageSource,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    ToolUse {
        id: String,
        name: String,
        /// The tool's arguments (a JSON object).
        input: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    Thinking {
        thinking: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
    /// `document`, `search_result`, server tool blocks and anything newer.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 {
        media_type: String,
        data: String,
    },
    Url {
        url: String,
    },
    #[serde(other)]
    Unknown,
}

/// Prompt-cache breakpoint: `{"type": "ephemeral", "ttl": "5m" | "1h"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheControl {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

impl CacheControl {
    pub fn ephemeral() -> Self {
        Self {
            kind: "ephemeral".to_owned(),
            ttl: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Absent for client tools; set (`web_search_20250305`, `bash_20250124`...) for server and
    /// Anthropic-defined tools.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of the input (opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
    #[serde(other)]
    Unknown,
}

// ---- responses ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesResponse {
    pub id: String,
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    #[serde(default = "assistant_role")]
    pub role: String,
    #[serde(default)]
    pub content: Vec<ContentBlock>,
    #[serde(default)]
    pub model: String,
    pub stop_reason: Option<StopReason>,
    pub stop_sequence: Option<String>,
    #[serde(default)]
    pub usage: AnthropicUsage,
}

fn message_type() -> String {
    "message".to_owned()
}

fn assistant_role() -> String {
    "assistant".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    PauseTurn,
    Refusal,
    ModelContextWindowExceeded,
    #[serde(other)]
    Unknown,
}

impl StopReason {
    /// The OpenAI `finish_reason` for this stop reason.
    pub fn openai_finish_reason(self) -> &'static str {
        match self {
            Self::EndTurn | Self::StopSequence | Self::PauseTurn | Self::Unknown => "stop",
            Self::MaxTokens | Self::ModelContextWindowExceeded => "length",
            Self::ToolUse => "tool_calls",
            Self::Refusal => "content_filter",
        }
    }

    /// The stop reason for an OpenAI `finish_reason`.
    pub fn from_openai_finish_reason(reason: &str) -> Self {
        match reason {
            "length" => Self::MaxTokens,
            "tool_calls" | "function_call" => Self::ToolUse,
            "content_filter" => Self::Refusal,
            _ => Self::EndTurn,
        }
    }

    /// As [`StopReason::from_openai_finish_reason`], refined by the pivot's
    /// `native_finish_reason` when that names a reason Anthropic's API has.
    pub fn from_openai(finish_reason: Option<&str>, native: Option<&str>) -> Self {
        match native {
            Some("stop_sequence") => Self::StopSequence,
            Some("pause_turn") => Self::PauseTurn,
            Some("refusal") => Self::Refusal,
            Some("model_context_window_exceeded") => Self::ModelContextWindowExceeded,
            _ => Self::from_openai_finish_reason(finish_reason.unwrap_or("stop")),
        }
    }

    /// The reason to carry beside `finish_reason` in the pivot, when `finish_reason` loses it.
    pub fn native_finish_reason(self) -> Option<&'static str> {
        match self {
            Self::EndTurn | Self::MaxTokens | Self::ToolUse | Self::Unknown => None,
            Self::StopSequence => Some("stop_sequence"),
            Self::PauseTurn => Some("pause_turn"),
            Self::Refusal => Some("refusal"),
            Self::ModelContextWindowExceeded => Some("model_context_window_exceeded"),
        }
    }
}

/// `usage` of a message (and of `message_delta`, where every field but `output_tokens` is
/// optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnthropicUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
}

impl From<&AnthropicUsage> for Usage {
    fn from(u: &AnthropicUsage) -> Self {
        Self {
            input: u.input_tokens,
            output: u.output_tokens,
            cache_read: u.cache_read_input_tokens,
            cache_write: u.cache_creation_input_tokens,
            reasoning: None,
        }
    }
}

impl From<&Usage> for AnthropicUsage {
    /// Every field present (zero when not reported), as the API reports a message's usage.
    fn from(u: &Usage) -> Self {
        Self {
            input_tokens: Some(u.input.unwrap_or(0)),
            cache_creation_input_tokens: Some(u.cache_write.unwrap_or(0)),
            cache_read_input_tokens: Some(u.cache_read.unwrap_or(0)),
            output_tokens: Some(u.output.unwrap_or(0)),
        }
    }
}

// ---- stream events ----

/// One event of a Messages stream (the SSE `data:` payload; its `type` repeats the SSE event
/// name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: MessagesResponse,
    },
    ContentBlockStart {
        index: u32,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<AnthropicUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorDetail,
    },
    #[serde(other)]
    Unknown,
}

impl StreamEvent {
    /// The SSE event name (equal to the `type`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
            Self::Ping => "ping",
            Self::Error { .. } => "error",
            Self::Unknown => "unknown",
        }
    }

    /// Encodes the event as SSE: `event: <name>\ndata: <json>\n\n`.
    pub fn to_sse(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(self.name().as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // Serialising our own types cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    pub stop_reason: Option<StopReason>,
    pub stop_sequence: Option<String>,
}

// ---- errors ----

/// `{"type": "error", "error": {"type": ..., "message": ...}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    #[serde(rename = "type")]
    pub kind: String,
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

/// Anthropic error type → OpenAI error `type`.
pub fn openai_error_type(anthropic_kind: &str) -> &'static str {
    match anthropic_kind {
        "invalid_request_error" | "request_too_large" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "rate_limit_error" => "rate_limit_error",
        _ => "server_error",
    }
}

/// OpenAI error `type` (or `code`) → Anthropic error type.
pub fn anthropic_error_type(openai_kind: &str) -> &'static str {
    match openai_kind {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" | "invalid_api_key" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" | "model_not_found" => "not_found_error",
        "rate_limit_error" | "rate_limit_exceeded" | "requests" | "tokens" => "rate_limit_error",
        "overloaded_error" => "overloaded_error",
        "request_too_large" => "request_too_large",
        _ => "api_error",
    }
}
