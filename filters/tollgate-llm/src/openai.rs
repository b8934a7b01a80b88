//! OpenAI Chat Completions wire types: the pivot format. Client request types keep unknown
//! fields in `rest`, so same-API passthrough loses nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::usage::Usage;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Every other field (n, user, seed, response_format, ...), kept as sent.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl ChatRequest {
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Did the client ask for the final usage chunk of a stream?
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true)
    }

    /// `max_completion_tokens` wins over the older `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl Content {
    /// An assistant message's content from its parts: `None` when empty, one string when all
    /// parts are plain text (as OpenAI assistants speak), the parts otherwise.
    pub fn from_assistant_parts(parts: Vec<ContentPart>) -> Option<Self> {
        if parts.is_empty() {
            return None;
        }
        if parts.iter().all(|p| matches!(p, ContentPart::Text { cache_control: None, .. })) {
            return Some(Self::Text(
                parts
                    .iter()
                    .map(|p| match p {
                        ContentPart::Text { text, .. } => text.as_str(),
                        _ => "",
                    })
                    .collect(),
            ));
        }
        Some(Self::Parts(parts))
    }

    /// The text parts joined (images and unknown parts skipped).
    pub fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text {
        text: String,
        /// Anthropic-style prompt-cache marker some clients send on OpenAI parts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheControl {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// `https://...` or `data:image/png;base64,...`
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON document as a string.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema (opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// "none" | "auto" | "required"
    Mode(String),
    Named(NamedToolChoice),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: NamedFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

// ---- responses ----

impl FunctionCall {
    /// The arguments as a JSON value (`{}` when empty), for APIs that carry tool input as JSON.
    pub fn parsed_arguments(&self) -> Result<Value, crate::TranslateError> {
        let args = self.arguments.trim();
        if args.is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_str(args).map_err(|e| {
            crate::TranslateError::ResponseParse(format!("tool call arguments are not valid JSON: {e}"))
        })
    }
}

impl ChatCompletion {
    pub fn parse(body: &[u8]) -> Result<Self, crate::TranslateError> {
        serde_json::from_slice(body).map_err(|e| crate::TranslateError::ResponseParse(e.to_string()))
    }

    pub fn first_choice(&self) -> Result<&Choice, crate::TranslateError> {
        self.choices
            .first()
            .ok_or_else(|| crate::TranslateError::ResponseParse("the completion has no choices".to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<OpenAiUsage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: ResponseMessage,
    pub finish_reason: Option<String>,
    /// See [`ChunkChoice::native_finish_reason`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    pub role: String,
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<OpenAiUsage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
    /// The provider's own stop reason, when it says more than `finish_reason` can (Bedrock's
    /// or Anthropic's `stop_sequence`, `guardrail_intervened`, `refusal`...): a pivot extension
    /// (OpenRouter returns the same field) that lets the client translators give an Anthropic
    /// or Bedrock client the reason its own API would have reported. OpenAI SDKs ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
}

impl From<&Usage> for OpenAiUsage {
    fn from(u: &Usage) -> Self {
        let prompt = u.prompt_tokens();
        let completion = u.completion_tokens();
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: u.cache_read.map(|c| PromptTokensDetails { cached_tokens: Some(c) }),
            completion_tokens_details: u.reasoning.map(|r| CompletionTokensDetails { reasoning_tokens: Some(r) }),
        }
    }
}

impl From<&OpenAiUsage> for Usage {
    /// OpenAI reports cached tokens inside `prompt_tokens`; `input` here excludes them.
    fn from(u: &OpenAiUsage) -> Self {
        let cached = u.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens);
        Self {
            input: Some(u.prompt_tokens.saturating_sub(cached.unwrap_or(0))),
            output: Some(u.completion_tokens),
            cache_read: cached,
            cache_write: None,
            reasoning: u.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens),
        }
    }
}

/// Encodes one SSE `data:` event.
pub fn sse_event(json: &impl Serialize) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    // Serialising our own types cannot fail.
    out.extend(serde_json::to_vec(json).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    out
}

pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// Writes the chunks of one OpenAI stream (its `id`, `model` and `created` fixed), for the
/// translators that turn a provider's stream into the OpenAI pivot.
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    pub id: String,
    pub model: String,
    pub created: u64,
}

impl ChunkWriter {
    pub fn new(id: &str, model: &str, created: u64) -> Self {
        Self { id: id.to_owned(), model: model.to_owned(), created }
    }

    /// A chunk with these choices (none for the usage chunk) and usage.
    pub fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<OpenAiUsage>) -> Vec<u8> {
        sse_event(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
    }

    /// A chunk of choice 0: a delta, and the finish reason with the provider's own beside it.
    pub fn delta(&self, delta: Delta, finish_reason: Option<&str>, native: Option<&str>) -> Vec<u8> {
        let choice = ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish_reason.map(str::to_owned),
            native_finish_reason: native.map(str::to_owned),
        };
        self.chunk(vec![choice], None)
    }

    /// The usage chunk (`choices: []`).
    pub fn usage(&self, usage: &Usage) -> Vec<u8> {
        self.chunk(Vec::new(), Some(OpenAiUsage::from(usage)))
    }
}

/// A terminal `data: {"error": {"message", "type", "param", "code"}}` event, OpenAI's shape for
/// a failure in the middle of a stream.
pub fn error_event(message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    #[derive(Serialize)]
    struct ErrorEvent<'a> {
        error: ErrorBody<'a>,
    }
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        param: Option<&'a str>,
        code: Option<&'a str>,
    }
    sse_event(&ErrorEvent { error: ErrorBody { message, kind, param: None, code } })
}

/// Whether an OpenAI chat parameter that a translation cannot honour is at its neutral value
/// (`n: 1`, `logprobs: false`, zero penalties, an empty `logit_bias`, a text `response_format`,
/// text-only `modalities`), so dropping it changes nothing. Any other parameter is not neutral.
pub(crate) fn neutral_parameter(name: &str, value: &Value) -> bool {
    match name {
        "n" => value.as_u64() == Some(1),
        "logprobs" => value == &Value::Bool(false),
        "top_logprobs" => value.as_u64() == Some(0),
        "frequency_penalty" | "presence_penalty" => value.as_f64() == Some(0.0),
        "logit_bias" => value.as_object().is_some_and(|m| m.is_empty()),
        "response_format" => value.get("type").and_then(Value::as_str) == Some("text"),
        "modalities" => value.as_array().is_some_and(|m| m.iter().all(|v| v.as_str() == Some("text"))),
        _ => false,
    }
}
