//! Amazon Bedrock Runtime Converse / ConverseStream wire types, named and cased as the AWS
//! service model (`bedrock-runtime` 2023-09-30) names them.
//!
//! Forward compatible: AWS unions (`ContentBlock`, `ToolChoice`, `ContentBlockDelta`, ...) are
//! JSON objects with exactly one member; a member this version does not know parses into the
//! union's `Unknown { key, value }` variant and serialises back unchanged. String enums end in
//! `#[serde(other)] Unknown`. Struct fields this version does not model are ignored on input.
//! Blobs (image bytes) are base64 strings, as the JSON protocol carries them.

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// An AWS union: an enum of newtype variants, each the one member of a JSON object, plus
/// `Unknown { key, value }` for members this version does not know.
macro_rules! aws_union {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident($ty:ty) = $key:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $($(#[$vmeta])* $variant($ty),)*
            /// A member this version does not know, kept as sent.
            Unknown { key: String, value: Value },
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(1))?;
                match self {
                    $(Self::$variant(v) => map.serialize_entry($key, v)?,)*
                    Self::Unknown { key, value } => map.serialize_entry(key, value)?,
                }
                map.end()
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct UnionVisitor;
                impl<'de> Visitor<'de> for UnionVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " object with one member"))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        // The first known member wins; the first unknown one is kept otherwise.
                        let mut found: Option<$name> = None;
                        while let Some(key) = map.next_key::<String>()? {
                            let have_known = matches!(&found, Some(f) if !matches!(f, $name::Unknown { .. }));
                            match key.as_str() {
                                $($key if !have_known => {
                                    found = Some($name::$variant(map.next_value()?));
                                })*
                                _ if found.is_none() => {
                                    let value = map.next_value::<Value>()?;
                                    found = Some($name::Unknown { key: key.clone(), value });
                                }
                                _ => {
                                    map.next_value::<IgnoredAny>()?;
                                }
                            }
                        }
                        found.ok_or_else(|| de::Error::custom(concat!("empty ", stringify!($name))))
                    }
                }
                deserializer.deserialize_map(UnionVisitor)
            }
        }
    };
}

// ---- request ----

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseRequest {
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<SystemContentBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_config: Option<InferenceConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfiguration>,
    /// Model-specific parameters (opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_model_request_fields: Option<Value>,
    /// Every other field (guardrailConfig, performanceConfig, requestMetadata, ...), as sent.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationRole {
    User,
    Assistant,
    System,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub role: ConversationRole,
    #[serde(default)]
    pub content: Vec<ContentBlock>,
}

aws_union! {
    /// One block of a message's content.
    pub enum ContentBlock {
        Text(String) = "text",
        Image(ImageBlock) = "image",
        ToolUse(ToolUseBlock) = "toolUse",
        ToolResult(ToolResultBlock) = "toolResult",
        CachePoint(CachePointBlock) = "cachePoint",
        ReasoningContent(ReasoningContentBlock) = "reasoningContent",
    }
}

aws_union! {
    pub enum SystemContentBlock {
        Text(String) = "text",
        CachePoint(CachePointBlock) = "cachePoint",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageBlock {
    pub format: ImageFormat,
    pub source: ImageSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Png,
    Jpeg,
    Gif,
    Webp,
    #[serde(other)]
    Unknown,
}

aws_union! {
    pub enum ImageSource {
        /// Base64 of the image bytes.
        Bytes(String) = "bytes",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseBlock {
    pub tool_use_id: String,
    pub name: String,
    /// The tool's arguments (opaque JSON document).
    pub input: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResultBlock {
    pub tool_use_id: String,
    pub content: Vec<ToolResultContentBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ToolResultStatus>,
}

aws_union! {
    pub enum ToolResultContentBlock {
        Text(String) = "text",
        Json(Value) = "json",
        Image(ImageBlock) = "image",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolResultStatus {
    Success,
    Error,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachePointBlock {
    #[serde(rename = "type")]
    pub kind: CachePointType,
}

impl CachePointBlock {
    pub fn default_point() -> Self {
        Self {
            kind: CachePointType::Default,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CachePointType {
    Default,
    #[serde(other)]
    Unknown,
}

aws_union! {
    pub enum ReasoningContentBlock {
        ReasoningText(ReasoningTextBlock) = "reasoningText",
        /// Base64 of the redacted reasoning.
        RedactedContent(String) = "redactedContent",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasoningTextBlock {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
}

impl InferenceConfiguration {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfiguration {
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
}

aws_union! {
    pub enum Tool {
        ToolSpec(ToolSpecification) = "toolSpec",
        CachePoint(CachePointBlock) = "cachePoint",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpecification {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub input_schema: ToolInputSchema,
}

aws_union! {
    pub enum ToolInputSchema {
        /// A JSON schema (opaque).
        Json(Value) = "json",
    }
}

/// `AutoToolChoice` and `AnyToolChoice` are empty structures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

aws_union! {
    pub enum ToolChoice {
        Auto(Empty) = "auto",
        Any(Empty) = "any",
        Tool(SpecificToolChoice) = "tool",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecificToolChoice {
    pub name: String,
}

// ---- response ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseResponse {
    pub output: ConverseOutput,
    pub stop_reason: StopReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<ConverseMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_model_response_fields: Option<Value>,
}

aws_union! {
    pub enum ConverseOutput {
        Message(Message) = "message",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    StopSequence,
    GuardrailIntervened,
    ContentFiltered,
    MalformedModelOutput,
    MalformedToolUse,
    ModelContextWindowExceeded,
    #[serde(other)]
    Unknown,
}

impl StopReason {
    /// OpenAI's `finish_reason` for this stop reason. The malformed-output reasons and unknown
    /// future ones become `stop`; a context-window overflow is `length`.
    pub fn openai_finish_reason(self) -> &'static str {
        match self {
            Self::EndTurn | Self::StopSequence => "stop",
            Self::ToolUse => "tool_calls",
            Self::MaxTokens | Self::ModelContextWindowExceeded => "length",
            Self::GuardrailIntervened | Self::ContentFiltered => "content_filter",
            Self::MalformedModelOutput | Self::MalformedToolUse | Self::Unknown => "stop",
        }
    }

    /// The reason to carry beside `finish_reason` in the pivot, when `finish_reason` loses it.
    pub fn native_finish_reason(self) -> Option<&'static str> {
        match self {
            Self::EndTurn | Self::ToolUse | Self::MaxTokens | Self::Unknown => None,
            Self::StopSequence => Some("stop_sequence"),
            Self::GuardrailIntervened => Some("guardrail_intervened"),
            Self::ContentFiltered => Some("content_filtered"),
            Self::MalformedModelOutput => Some("malformed_model_output"),
            Self::MalformedToolUse => Some("malformed_tool_use"),
            Self::ModelContextWindowExceeded => Some("model_context_window_exceeded"),
        }
    }

    /// The stop reason for a pivot `finish_reason`, refined by its `native_finish_reason`
    /// when that names a Bedrock reason.
    pub fn from_openai(finish_reason: Option<&str>, native: Option<&str>) -> Self {
        let native = match native {
            Some("stop_sequence") => Some(Self::StopSequence),
            Some("guardrail_intervened") => Some(Self::GuardrailIntervened),
            Some("content_filtered") => Some(Self::ContentFiltered),
            Some("malformed_model_output") => Some(Self::MalformedModelOutput),
            Some("malformed_tool_use") => Some(Self::MalformedToolUse),
            Some("model_context_window_exceeded") => Some(Self::ModelContextWindowExceeded),
            _ => None,
        };
        native.unwrap_or(match finish_reason {
            Some("length") => Self::MaxTokens,
            Some("tool_calls" | "function_call") => Self::ToolUse,
            Some("content_filter") => Self::ContentFiltered,
            _ => Self::EndTurn,
        })
    }
}

/// Bedrock's usage. `inputTokens` excludes the tokens read from or written to the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_input_tokens: Option<u64>,
}

impl From<&TokenUsage> for crate::Usage {
    /// The one Bedrock row of the usage table: the four counters kept separate.
    fn from(u: &TokenUsage) -> Self {
        Self {
            input: Some(u.input_tokens),
            output: Some(u.output_tokens),
            cache_read: u.cache_read_input_tokens,
            cache_write: u.cache_write_input_tokens,
            reasoning: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseMetrics {
    #[serde(default)]
    pub latency_ms: u64,
}

// ---- stream events (the payload of each event-stream message) ----

aws_union! {
    /// One ConverseStream event, as the SDKs render the `ConverseStreamOutput` union. On the
    /// wire the member name is the `:event-type` (or `:exception-type`) header and the
    /// payload is the member's value: see [`ConverseStreamEvent::from_frame`].
    pub enum ConverseStreamEvent {
        MessageStart(MessageStartEvent) = "messageStart",
        ContentBlockStart(ContentBlockStartEvent) = "contentBlockStart",
        ContentBlockDelta(ContentBlockDeltaEvent) = "contentBlockDelta",
        ContentBlockStop(ContentBlockStopEvent) = "contentBlockStop",
        MessageStop(MessageStopEvent) = "messageStop",
        Metadata(ConverseStreamMetadataEvent) = "metadata",
        InternalServerException(StreamException) = "internalServerException",
        ModelStreamErrorException(StreamException) = "modelStreamErrorException",
        ValidationException(StreamException) = "validationException",
        ThrottlingException(StreamException) = "throttlingException",
        ServiceUnavailableException(StreamException) = "serviceUnavailableException",
    }
}

impl ConverseStreamEvent {
    /// Parses one frame's payload given its `:event-type` or `:exception-type`. An unknown
    /// type gives `Unknown` (its payload kept if it is JSON, else `null`).
    pub fn from_frame(kind: &str, payload: &[u8]) -> Result<Self, serde_json::Error> {
        fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, serde_json::Error> {
            // An empty payload is an empty structure (e.g. a bare exception).
            serde_json::from_slice(if payload.is_empty() { b"{}" } else { payload })
        }
        Ok(match kind {
            "messageStart" => Self::MessageStart(parse(payload)?),
            "contentBlockStart" => Self::ContentBlockStart(parse(payload)?),
            "contentBlockDelta" => Self::ContentBlockDelta(parse(payload)?),
            "contentBlockStop" => Self::ContentBlockStop(parse(payload)?),
            "messageStop" => Self::MessageStop(parse(payload)?),
            "metadata" => Self::Metadata(parse(payload)?),
            "internalServerException" => Self::InternalServerException(parse(payload)?),
            "modelStreamErrorException" => Self::ModelStreamErrorException(parse(payload)?),
            "validationException" => Self::ValidationException(parse(payload)?),
            "throttlingException" => Self::ThrottlingException(parse(payload)?),
            "serviceUnavailableException" => Self::ServiceUnavailableException(parse(payload)?),
            other => Self::Unknown {
                key: other.to_owned(),
                value: serde_json::from_slice(payload).unwrap_or(Value::Null),
            },
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStartEvent {
    pub role: ConversationRole,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentBlockStartEvent {
    #[serde(default)]
    pub content_block_index: u32,
    pub start: ContentBlockStart,
}

aws_union! {
    pub enum ContentBlockStart {
        ToolUse(ToolUseBlockStart) = "toolUse",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseBlockStart {
    pub tool_use_id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentBlockDeltaEvent {
    #[serde(default)]
    pub content_block_index: u32,
    pub delta: ContentBlockDelta,
}

aws_union! {
    pub enum ContentBlockDelta {
        Text(String) = "text",
        ToolUse(ToolUseBlockDelta) = "toolUse",
        /// Reasoning text, signature or redacted content (opaque here).
        ReasoningContent(Value) = "reasoningContent",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseBlockDelta {
    /// A piece of the tool input's JSON text.
    pub input: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentBlockStopEvent {
    #[serde(default)]
    pub content_block_index: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStopEvent {
    pub stop_reason: StopReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_model_response_fields: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseStreamMetadataEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<ConverseMetrics>,
}

/// The payload of an exception frame (`:message-type: exception`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamException {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `modelStreamErrorException` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unions_round_trip_and_keep_unknown_members() {
        let json = r#"[{"text":"hi"},{"document":{"name":"a","source":{"bytes":"AA=="}}},{"cachePoint":{"type":"default"}}]"#;
        let blocks: Vec<ContentBlock> = serde_json::from_str(json).unwrap();
        assert_eq!(blocks[0], ContentBlock::Text("hi".into()));
        assert!(matches!(&blocks[1], ContentBlock::Unknown { key, .. } if key == "document"));
        assert_eq!(serde_json::to_string(&blocks).unwrap(), json);
        assert!(serde_json::from_str::<ContentBlock>("{}").is_err());
    }

    #[test]
    fn enums_accept_future_values() {
        let stop: StopReason = serde_json::from_str(r#""some_new_reason""#).unwrap();
        assert_eq!(stop, StopReason::Unknown);
        assert_eq!(stop.openai_finish_reason(), "stop");
    }

    #[test]
    fn stream_events_ignore_padding_and_unknown_types() {
        let delta = ConverseStreamEvent::from_frame(
            "contentBlockDelta",
            br#"{"contentBlockIndex":0,"delta":{"text":"Hi"},"p":"abcdefghij"}"#,
        )
        .unwrap();
        assert!(
            matches!(delta, ConverseStreamEvent::ContentBlockDelta(ContentBlockDeltaEvent { delta: ContentBlockDelta::Text(t), .. }) if t == "Hi")
        );
        let unknown = ConverseStreamEvent::from_frame("somethingNew", b"{\"a\":1}").unwrap();
        assert!(
            matches!(unknown, ConverseStreamEvent::Unknown { key, .. } if key == "somethingNew")
        );
    }
}
