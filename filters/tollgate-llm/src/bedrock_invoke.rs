//! Bedrock Runtime InvokeModel ingress (`POST /model/{modelId}/invoke` and
//! `/invoke-with-response-stream`) with the Anthropic-on-Bedrock body, to and from the pivot.
//!
//! - [`is_anthropic`]: whether a body is Anthropic-on-Bedrock (`anthropic_version:
//!   bedrock-...` and `messages`); other native bodies (Titan, Llama, Mistral, Cohere,
//!   embeddings) reach Bedrock deployments only, as sent.
//! - [`request`]: the body → an OpenAI [`ChatRequest`] through the Anthropic ingress
//!   ([`anthropic_to_openai::request`]): the model from the path, `stream` from the path,
//!   `anthropic_version` and `anthropic_beta` dropped.
//! - The non-streamed answer is the Anthropic Messages JSON
//!   ([`anthropic_to_openai::response_with_usage`]), as Bedrock answers for Claude.
//! - [`StreamFromAnthropicSse`]: Anthropic Messages SSE (from
//!   [`anthropic_to_openai::StreamFromOpenAi`]) → InvokeModelWithResponseStream frames:
//!   each event's JSON becomes one `chunk` event whose payload is `{"bytes": base64(JSON)}`
//!   (`PayloadPart.bytes` is a member of a JSON payload in `bedrock-runtime`'s service model,
//!   not an event payload); `message_stop` carries `amazon-bedrock-invocationMetrics` with the
//!   token counts, as Bedrock adds them; `ping` is dropped (Bedrock sends none); an `error`
//!   event becomes an exception frame (`throttlingException` for rate limits,
//!   else `modelStreamErrorException`), terminal.

use base64::Engine;
use serde_json::{Map, Value};

use crate::anthropic_to_openai;
use crate::error::TranslateError;
use crate::eventstream;
use crate::openai::ChatRequest;
use crate::sse::Decoder;
use crate::usage::Usage;
use crate::{StreamOutput, StreamTranslator};

/// The provider path of an InvokeModel request for `model_id` (percent-encoded).
pub fn invoke_path(model_id: &str, stream: bool) -> String {
    let action = if stream { "invoke-with-response-stream" } else { "invoke" };
    format!("/model/{}/{action}", crate::openai_to_bedrock::encode_path_segment(model_id))
}

/// Whether an InvokeModel body is Anthropic-on-Bedrock (`anthropic_version: "bedrock-..."`
/// and a `messages` list).
pub fn is_anthropic(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        anthropic_version: Option<String>,
        #[serde(default)]
        messages: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Probe>(body)
        .is_ok_and(|p| p.messages.is_some() && p.anthropic_version.is_some_and(|v| v.starts_with("bedrock-")))
}

/// The model family a native body is for, named in the 400 a non-Bedrock deployment answers.
pub fn native_family(body: &[u8]) -> &'static str {
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) else { return "an unknown" };
    let has = |k: &str| o.contains_key(k);
    if has("anthropic_version") || has("prompt") && has("max_tokens_to_sample") {
        "an Anthropic (not Messages API)"
    } else if has("inputText") || has("textGenerationConfig") {
        "an Amazon Titan"
    } else if has("texts") || has("input_type") {
        "a Cohere Embed"
    } else if has("max_gen_len") {
        "a Meta Llama"
    } else if has("prompt") && (has("max_tokens") || has("stop")) {
        "a Mistral"
    } else if has("message") || has("chat_history") || has("p") && has("k") {
        "a Cohere Command"
    } else if has("schemaVersion") || has("inferenceConfig") {
        "an Amazon Nova"
    } else {
        "an unknown"
    }
}

/// The Anthropic-on-Bedrock body as an OpenAI chat request for `model`.
pub fn request(body: &[u8], model: &str, stream: bool) -> Result<ChatRequest, TranslateError> {
    let mut fields: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| TranslateError::RequestParse(e.to_string()))?;
    fields.remove("anthropic_version");
    fields.remove("anthropic_beta");
    fields.insert("model".to_owned(), Value::String(model.to_owned()));
    if stream {
        fields.insert("stream".to_owned(), Value::Bool(true));
    } else {
        fields.remove("stream");
    }
    let messages = serde_json::to_vec(&fields).map_err(|e| TranslateError::RequestParse(e.to_string()))?;
    anthropic_to_openai::request(&messages)
}

/// Anthropic Messages SSE → InvokeModelWithResponseStream event-stream frames.
pub struct StreamFromAnthropicSse {
    decoder: Decoder,
    usage: Usage,
    ended: bool,
}

impl Default for StreamFromAnthropicSse {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamFromAnthropicSse {
    pub fn new() -> Self {
        Self { decoder: Decoder::new(), usage: Usage::default(), ended: false }
    }

    fn frames(&mut self, events: Vec<crate::sse::Event>, out: &mut Vec<u8>) {
        for event in events {
            if self.ended {
                return;
            }
            let Ok(mut json) = serde_json::from_str::<Value>(&event.data) else {
                self.exception(out, "modelStreamErrorException", "The model's stream could not be read.");
                continue;
            };
            let kind = json.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
            match kind.as_str() {
                "ping" => continue,
                "error" => {
                    let error = json.get("error");
                    let message = error.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("The model's stream failed.");
                    let exception = match error.and_then(|e| e.get("type")).and_then(Value::as_str) {
                        Some("rate_limit_error") => "throttlingException",
                        _ => "modelStreamErrorException",
                    };
                    let message = message.to_owned();
                    self.exception(out, exception, &message);
                    continue;
                }
                "message_start" => self.read_usage(json.pointer("/message/usage")),
                "message_delta" => self.read_usage(json.get("usage")),
                "message_stop" => {
                    let metrics = serde_json::json!({
                        "inputTokenCount": self.usage.prompt_tokens(),
                        "outputTokenCount": self.usage.completion_tokens(),
                    });
                    if let Value::Object(o) = &mut json {
                        o.insert("amazon-bedrock-invocationMetrics".to_owned(), metrics);
                    }
                    self.ended = true;
                }
                _ => {}
            }
            let bytes = serde_json::to_vec(&json).unwrap_or_default();
            let payload = serde_json::json!({ "bytes": base64::engine::general_purpose::STANDARD.encode(bytes) });
            let payload = serde_json::to_vec(&payload).unwrap_or_default();
            out.extend(eventstream::encode(
                &[(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")],
                &payload,
            ));
        }
    }

    fn read_usage(&mut self, usage: Option<&Value>) {
        let Some(u) = usage else { return };
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        self.usage.merge(&Usage {
            input: n("input_tokens"),
            output: n("output_tokens"),
            cache_read: n("cache_read_input_tokens"),
            cache_write: n("cache_creation_input_tokens"),
            reasoning: None,
        });
    }

    fn exception(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        let payload = serde_json::to_vec(&serde_json::json!({ "message": message })).unwrap_or_default();
        out.extend(eventstream::encode(
            &[(":exception-type", kind), (":content-type", "application/json"), (":message-type", "exception")],
            &payload,
        ));
        self.ended = true;
    }
}

impl StreamTranslator for StreamFromAnthropicSse {
    fn feed(&mut self, chunk: &[u8]) -> Result<StreamOutput, TranslateError> {
        let mut out = Vec::new();
        match self.decoder.feed(chunk) {
            Ok(events) => self.frames(events, &mut out),
            // The frame reports it to the client; the stream ends there.
            Err(_) if !self.ended => {
                self.exception(&mut out, "modelStreamErrorException", "The model's stream could not be read.");
            }
            Err(_) => {}
        }
        Ok(StreamOutput { bytes: out, usage: None })
    }

    fn finish(&mut self) -> Result<StreamOutput, TranslateError> {
        let mut out = Vec::new();
        if let Ok(events) = self.decoder.finish() {
            self.frames(events, &mut out);
        }
        if !self.ended {
            self.exception(&mut out, "modelStreamErrorException", "The model's stream ended before it finished.");
        }
        Ok(StreamOutput { bytes: out, usage: None })
    }
}
