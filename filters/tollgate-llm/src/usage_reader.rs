//! Reads the usage out of a response that passes to the client untouched (same API on both
//! sides), for metering: the bytes are never changed, only looked at. Whole JSON bodies are
//! kept until the end (bounded); streams are decoded event by event and only the usage fields
//! are parsed. A body or stream this reader cannot read leaves the usage unknown (`None`), which
//! the meter records as such: it never invents a count.

use base64::Engine;
use serde::Deserialize;

use crate::anthropic::AnthropicUsage;
use crate::bedrock::TokenUsage;
use crate::{eventstream, sse, Usage};

/// A whole JSON body larger than this is not kept for its usage (provider answers are far
/// smaller; the bound keeps a hostile upstream from growing the VM).
pub const MAX_JSON_BYTES: usize = 8 * 1024 * 1024;

/// The API of the response being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageFormat {
    /// OpenAI chat completions or embeddings, whole JSON (`usage.prompt_tokens`...).
    OpenAiChat,
    /// OpenAI Responses, whole JSON or SSE (`response.completed`), told apart by the first byte.
    OpenAiResponses,
    /// Anthropic Messages, whole JSON or SSE (`message_start` + `message_delta`).
    Anthropic,
    /// Bedrock Converse, whole JSON or event stream (`metadata`).
    BedrockConverse { stream: bool },
    /// Bedrock InvokeModel with an Anthropic body, whole JSON or event stream (`chunk` events
    /// carrying Anthropic events, the last one `amazon-bedrock-invocationMetrics`).
    BedrockInvoke { stream: bool },
}

enum Mode {
    /// The first byte has not come yet (SSE or JSON).
    Unknown,
    Json(Vec<u8>),
    /// The JSON body outgrew [`MAX_JSON_BYTES`]: its usage is not read.
    TooLarge,
    Sse(sse::Decoder),
    EventStream(eventstream::Decoder),
}

pub struct UsageReader {
    format: UsageFormat,
    mode: Mode,
    usage: Option<Usage>,
    /// The provider's final usage has been read (a cut stream may have reported a first,
    /// partial count).
    final_seen: bool,
}

impl UsageReader {
    pub fn new(format: UsageFormat) -> Self {
        let mode = match format {
            UsageFormat::BedrockConverse { stream: true } | UsageFormat::BedrockInvoke { stream: true } => {
                Mode::EventStream(eventstream::Decoder::new())
            }
            UsageFormat::OpenAiResponses | UsageFormat::Anthropic => Mode::Unknown,
            _ => Mode::Json(Vec::new()),
        };
        Self { format, mode, usage: None, final_seen: false }
    }

    /// Whether the provider's final usage was read.
    pub fn is_final(&self) -> bool {
        self.final_seen
    }

    /// The usage known so far (streams report it as they go).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Looks at the next bytes of the response.
    pub fn feed(&mut self, chunk: &[u8]) {
        if let Mode::Unknown = self.mode {
            match chunk.iter().find(|b| !b.is_ascii_whitespace()) {
                None => return,
                Some(b'{') => self.mode = Mode::Json(Vec::new()),
                Some(_) => self.mode = Mode::Sse(sse::Decoder::new()),
            }
        }
        match &mut self.mode {
            Mode::Unknown | Mode::TooLarge => {}
            Mode::Json(buf) => {
                if buf.len() + chunk.len() > MAX_JSON_BYTES {
                    self.mode = Mode::TooLarge;
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            Mode::Sse(decoder) => {
                if let Ok(events) = decoder.feed(chunk) {
                    for ev in events {
                        self.sse_event(&ev.data);
                    }
                }
            }
            Mode::EventStream(decoder) => {
                if let Ok(messages) = decoder.feed(chunk) {
                    for m in messages {
                        self.frame(&m);
                    }
                }
            }
        }
    }

    /// The last bytes of the response, then [`Self::finish`]: a whole JSON answer that comes in
    /// one piece is read where it lies, not copied first.
    pub fn feed_last(&mut self, chunk: &[u8]) -> Option<Usage> {
        if let Mode::Unknown = self.mode {
            if chunk.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                self.mode = Mode::Json(Vec::new());
            }
        }
        if let Mode::Json(buf) = &self.mode {
            if buf.is_empty() {
                self.mode = Mode::TooLarge;
                if chunk.len() <= MAX_JSON_BYTES {
                    self.usage = json_usage(self.format, chunk);
                    self.final_seen = self.usage.is_some();
                }
                return self.usage;
            }
        }
        self.feed(chunk);
        self.finish()
    }

    /// The response is over: the usage it reported, if any.
    pub fn finish(&mut self) -> Option<Usage> {
        match std::mem::replace(&mut self.mode, Mode::TooLarge) {
            Mode::Json(body) => {
                self.usage = json_usage(self.format, &body);
                self.final_seen = self.usage.is_some();
            }
            Mode::Sse(mut decoder) => {
                if let Ok(events) = decoder.finish() {
                    for ev in events {
                        self.sse_event(&ev.data);
                    }
                }
            }
            _ => {}
        }
        self.usage
    }

    fn merge(&mut self, u: Usage) {
        self.usage.get_or_insert_with(Usage::default).merge(&u);
    }

    fn sse_event(&mut self, data: &str) {
        match self.format {
            UsageFormat::OpenAiResponses => {
                #[derive(Deserialize)]
                struct Event {
                    response: Option<Body<ResponsesUsage>>,
                }
                if let Ok(Event { response: Some(Body { usage: Some(u) }) }) = serde_json::from_str(data) {
                    self.usage = Some(u.into());
                    self.final_seen = true;
                }
            }
            UsageFormat::Anthropic => {
                if let Some((u, last)) = anthropic_event_usage(data.as_bytes()) {
                    self.merge(u);
                    self.final_seen |= last;
                }
            }
            _ => {}
        }
    }

    fn frame(&mut self, m: &eventstream::Message) {
        if m.message_type() != Some("event") {
            return;
        }
        match (self.format, m.event_type()) {
            (UsageFormat::BedrockConverse { .. }, Some("metadata")) => {
                if let Ok(Body { usage: Some(u) }) = serde_json::from_slice::<Body<TokenUsage>>(&m.payload) {
                    self.usage = Some(Usage::from(&u));
                    self.final_seen = true;
                }
            }
            (UsageFormat::BedrockInvoke { .. }, Some("chunk")) => {
                #[derive(Deserialize)]
                struct Chunk {
                    bytes: String,
                }
                let Ok(chunk) = serde_json::from_slice::<Chunk>(&m.payload) else { return };
                let Ok(event) = base64::engine::general_purpose::STANDARD.decode(chunk.bytes) else { return };
                if let Some((u, last)) = anthropic_event_usage(&event) {
                    self.merge(u);
                    self.final_seen |= last;
                } else if let Some(u) = invocation_metrics(&event) {
                    // Only when the model's own events carried none.
                    if self.usage.is_none() {
                        self.usage = Some(u);
                    }
                    self.final_seen = true;
                }
            }
            _ => {}
        }
    }
}

#[derive(Deserialize)]
struct Body<U> {
    usage: Option<U>,
}

/// OpenAI chat/embeddings usage, every field optional (embeddings have no completion count).
#[derive(Deserialize)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<Cached>,
    #[serde(default)]
    completion_tokens_details: Option<Reasoning>,
}

/// Responses usage: `input_tokens` includes the cached ones.
#[derive(Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<Cached>,
    #[serde(default)]
    output_tokens_details: Option<Reasoning>,
}

#[derive(Deserialize)]
struct Cached {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Reasoning {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

fn split_cached(total_input: u64, output: u64, cached: Option<&Cached>, reasoning: Option<&Reasoning>) -> Usage {
    let cached = cached.and_then(|c| c.cached_tokens);
    Usage {
        input: Some(total_input.saturating_sub(cached.unwrap_or(0))),
        output: Some(output),
        cache_read: cached,
        cache_write: None,
        reasoning: reasoning.and_then(|r| r.reasoning_tokens),
    }
}

impl From<ChatUsage> for Usage {
    fn from(u: ChatUsage) -> Self {
        split_cached(u.prompt_tokens, u.completion_tokens, u.prompt_tokens_details.as_ref(), u.completion_tokens_details.as_ref())
    }
}

impl From<ResponsesUsage> for Usage {
    fn from(u: ResponsesUsage) -> Self {
        split_cached(u.input_tokens, u.output_tokens, u.input_tokens_details.as_ref(), u.output_tokens_details.as_ref())
    }
}

/// The top-level `usage` of a whole JSON answer: only that value is parsed (by serde, strictly),
/// the rest is skimmed for its nesting (`json_field`).
fn json_usage(format: UsageFormat, body: &[u8]) -> Option<Usage> {
    let raw = crate::json_field::top_level(body, "usage")?;
    match format {
        UsageFormat::OpenAiChat => serde_json::from_slice::<Option<ChatUsage>>(raw).ok()?.map(Usage::from),
        UsageFormat::OpenAiResponses => serde_json::from_slice::<Option<ResponsesUsage>>(raw).ok()?.map(Usage::from),
        UsageFormat::Anthropic | UsageFormat::BedrockInvoke { .. } => {
            serde_json::from_slice::<Option<AnthropicUsage>>(raw).ok()?.as_ref().map(Usage::from)
        }
        UsageFormat::BedrockConverse { .. } => serde_json::from_slice::<Option<TokenUsage>>(raw).ok()?.as_ref().map(Usage::from),
    }
}

/// The usage of one Anthropic stream event: `message_start` (in `message.usage`) or
/// `message_delta` (in `usage`, the final count: `true`); `None` for the others.
fn anthropic_event_usage(event: &[u8]) -> Option<(Usage, bool)> {
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "type")]
        kind: String,
        message: Option<Body<AnthropicUsage>>,
        usage: Option<AnthropicUsage>,
    }
    let e: Event = serde_json::from_slice(event).ok()?;
    match e.kind.as_str() {
        "message_start" => e.message?.usage.as_ref().map(|u| (Usage::from(u), false)),
        "message_delta" => e.usage.as_ref().map(|u| (Usage::from(u), true)),
        _ => None,
    }
}

/// Bedrock's `amazon-bedrock-invocationMetrics` on the last InvokeModel stream chunk.
fn invocation_metrics(event: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Metrics {
        input_token_count: u64,
        output_token_count: u64,
        #[serde(default)]
        cache_read_input_token_count: Option<u64>,
        #[serde(default)]
        cache_write_input_token_count: Option<u64>,
    }
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "amazon-bedrock-invocationMetrics")]
        metrics: Option<Metrics>,
    }
    let m = serde_json::from_slice::<Event>(event).ok()?.metrics?;
    Some(Usage {
        input: Some(m.input_token_count),
        output: Some(m.output_token_count),
        cache_read: m.cache_read_input_token_count,
        cache_write: m.cache_write_input_token_count,
        reasoning: None,
    })
}

/// Whether a provider stream that is translated reached its final usage event, from its raw
/// bytes: a marker only that event carries (kept across chunk boundaries).
pub struct EndMarker {
    marker: &'static [u8],
    /// Built once a stream (building it on every search cost as much as the search).
    finder: memchr::memmem::Finder<'static>,
    tail: Vec<u8>,
    seen: bool,
}

impl EndMarker {
    /// Anthropic's `message_delta` (it carries the final usage).
    pub const ANTHROPIC: &'static [u8] = b"\"message_delta\"";
    /// A Converse stream's `metadata` event, by its `:event-type` header as framed.
    pub const BEDROCK: &'static [u8] = b"\x0b:event-type\x07\x00\x08metadata";

    pub fn new(marker: &'static [u8]) -> Self {
        Self { marker, finder: memchr::memmem::Finder::new(marker), tail: Vec::new(), seen: false }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.seen || self.marker.is_empty() {
            return;
        }
        // The chunk is searched where it lies; only the bytes across its start (the last
        // `k` bytes before it and its first `k`) are copied. Copying each chunk whole and
        // comparing every window cost about 7,000 wasm instructions a chunk.
        let k = self.marker.len() - 1;
        let head = chunk.get(..k.min(chunk.len())).unwrap_or_default();
        self.tail.extend_from_slice(head);
        if self.finder.find(&self.tail).is_some() || self.finder.find(chunk).is_some() {
            self.seen = true;
            self.tail = Vec::new();
            return;
        }
        match chunk.get(chunk.len().saturating_sub(k)..) {
            Some(last) if chunk.len() >= k => {
                self.tail.clear();
                self.tail.extend_from_slice(last);
            }
            _ => {
                let extra = self.tail.len().saturating_sub(k);
                self.tail.drain(..extra);
            }
        }
    }

    pub fn seen(&self) -> bool {
        self.seen
    }
}

#[cfg(test)]
#[path = "usage_reader_tests.rs"]
mod tests;
