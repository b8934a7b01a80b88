//! OpenAI `chat.completion.chunk` SSE stream → ConverseStream (AWS event-stream frames).
//!
//! Output, in the order Bedrock sends it and botocore / the Rust SDK parse it. On the wire the
//! `:event-type` header names the `ConverseStreamOutput` member and the payload is that
//! member's body (`{"role":"assistant"}` for `messageStart`, not `{"messageStart":{...}}`):
//!
//! 1. `messageStart {role: "assistant"}` on the first chunk;
//! 2. per content block: a text block is `contentBlockDelta {contentBlockIndex, delta: {text}}`
//!    events (Bedrock sends no `contentBlockStart` for text); a tool call is
//!    `contentBlockStart {contentBlockIndex, start: {toolUse: {toolUseId, name}}}` then
//!    `contentBlockDelta {delta: {toolUse: {input: "<partial JSON>"}}}`; each block ends with
//!    `contentBlockStop {contentBlockIndex}` when the next one opens or the choice finishes.
//!    Indexes count blocks from 0 in the order they open. (OpenAI streams tool calls one after
//!    the other; a provider that interleaves them gets each delta under its own call's index,
//!    even if that block was already stopped.)
//! 3. at `data: [DONE]`: `messageStop {stopReason}` (mapped as for responses), then
//!    `metadata {usage, metrics: {latencyMs}}`, usage always present (zeros if the provider
//!    reported none: the SDKs require it).
//!
//! Each event frame has the headers `:event-type`, `:content-type: application/json`,
//! `:message-type: event`. A stream that ends after a `finish_reason` but without `[DONE]` is
//! closed the same way at [`finish`](StreamTranslator::finish). An OpenAI
//! `data: {"error": ...}` event becomes an exception frame (`:message-type: exception`,
//! `:exception-type: throttlingException` for rate limits, else `modelStreamErrorException`,
//! payload `{"message": ...}`), terminal, as Bedrock reports errors inside an HTTP 200; so do
//! a malformed stream and one that ends before any `finish_reason`. `feed` and `finish` never
//! fail and never panic.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::bedrock::{
    ContentBlockDelta, ContentBlockDeltaEvent, ContentBlockStart, ContentBlockStartEvent,
    ContentBlockStopEvent, ConversationRole, ConverseMetrics, ConverseStreamMetadataEvent,
    MessageStartEvent, MessageStopEvent, StopReason, StreamException, ToolUseBlockDelta,
    ToolUseBlockStart,
};
use crate::error::TranslateError;
use crate::eventstream;
use crate::pivot_reader::{PivotError, PivotEvent, PivotReader};
use crate::usage::Usage;
use crate::{StreamOutput, StreamTranslator};

/// The exception type Bedrock would send for a failure of this kind.
const THROTTLING: &str = "throttlingException";
const MODEL_STREAM_ERROR: &str = "modelStreamErrorException";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Tool,
}

/// Translates one OpenAI SSE response body into ConverseStream event-stream frames.
pub struct StreamFromOpenAi {
    reader: PivotReader,
    usage: Option<Usage>,
    exact_usage: Option<Usage>,
    latency_ms: u64,
    started: bool,
    /// The open block: its kind and its Bedrock content block index.
    open: Option<(Open, u32)>,
    next_block: u32,
    /// OpenAI tool call index → Bedrock block index of the call open there.
    tools: HashMap<u32, u32>,
    stop_reason: Option<StopReason>,
    failure: Option<TranslateError>,
}

impl Default for StreamFromOpenAi {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamFromOpenAi {
    pub fn new() -> Self {
        Self {
            reader: PivotReader::new(),
            usage: None,
            exact_usage: None,
            latency_ms: 0,
            started: false,
            open: None,
            next_block: 0,
            tools: HashMap::new(),
            stop_reason: None,
            failure: None,
        }
    }

    /// Reports `usage` instead of the one in the OpenAI stream: a caller chaining this after a
    /// provider translator passes the provider's exact usage (OpenAI's has no cache-write
    /// count). Call before feeding the chunk that ends the stream.
    pub fn set_exact_usage(&mut self, usage: Option<Usage>) {
        self.exact_usage = usage;
    }

    /// The `metrics.latencyMs` of the final `metadata` event (0 unless set; this crate never
    /// reads the clock). Call before feeding the chunk that ends the stream.
    pub fn set_latency_ms(&mut self, latency_ms: u64) {
        self.latency_ms = latency_ms;
    }

    /// Why the stream failed, if it did; the client has been sent an exception frame.
    pub fn failure(&self) -> Option<&TranslateError> {
        self.failure.as_ref()
    }

    fn current_usage(&self) -> Option<Usage> {
        self.exact_usage.or(self.usage)
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let start = MessageStartEvent {
                role: ConversationRole::Assistant,
            };
            out.extend(event("messageStart", &start));
        }
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            let stop = ContentBlockStopEvent {
                content_block_index: index,
            };
            out.extend(event("contentBlockStop", &stop));
        }
    }

    fn open_block(&mut self, kind: Open, out: &mut Vec<u8>) -> u32 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block = self.next_block.saturating_add(1);
        self.open = Some((kind, index));
        index
    }

    fn delta(&self, index: u32, delta: ContentBlockDelta, out: &mut Vec<u8>) {
        let delta = ContentBlockDeltaEvent {
            content_block_index: index,
            delta,
        };
        out.extend(event("contentBlockDelta", &delta));
    }

    fn text(&mut self, text: String, out: &mut Vec<u8>) {
        let index = match self.open {
            Some((Open::Text, index)) => index,
            _ => self.open_block(Open::Text, out),
        };
        self.delta(index, ContentBlockDelta::Text(text), out);
    }

    fn tool_start(&mut self, call: u32, id: Option<String>, name: String, out: &mut Vec<u8>) {
        // A new call (OpenAI sends its id and name in its first delta).
        let index = self.open_block(Open::Tool, out);
        let start = ContentBlockStartEvent {
            content_block_index: index,
            start: ContentBlockStart::ToolUse(ToolUseBlockStart {
                tool_use_id: id.unwrap_or_else(|| format!("tooluse_{call}")),
                name,
            }),
        };
        out.extend(event("contentBlockStart", &start));
        self.tools.insert(call, index);
    }

    fn tool_args(&mut self, call: u32, input: String, out: &mut Vec<u8>) {
        if let Some(&index) = self.tools.get(&call) {
            self.delta(index, ContentBlockDelta::ToolUse(ToolUseBlockDelta { input }), out);
        }
    }

    fn fail(&mut self, out: &mut Vec<u8>, error: TranslateError, kind: &str) {
        let message = match &error {
            TranslateError::StreamException { message, .. } if !message.trim().is_empty() => {
                message.clone()
            }
            other => other.to_string(),
        };
        out.extend(exception(kind, &message));
        self.failure = Some(error);
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close_block(out);
        let stop = MessageStopEvent {
            stop_reason: self.stop_reason.unwrap_or(StopReason::EndTurn),
            additional_model_response_fields: None,
        };
        out.extend(event("messageStop", &stop));
        let metadata = ConverseStreamMetadataEvent {
            usage: Some(super::token_usage(
                &self.current_usage().unwrap_or_default(),
            )),
            metrics: Some(ConverseMetrics {
                latency_ms: self.latency_ms,
            }),
        };
        out.extend(event("metadata", &metadata));
    }

    fn handle(&mut self, event: PivotEvent, out: &mut Vec<u8>) {
        match event {
            PivotEvent::Start { .. } => self.start(out),
            // Streamed usage is cumulative: replace, do not add.
            PivotEvent::Usage(u) => self.usage = Some(u),
            PivotEvent::TextDelta(text) => self.text(text, out),
            PivotEvent::ToolCallStart { index, id, name } => self.tool_start(index, id, name, out),
            PivotEvent::ToolArgsDelta { index, partial } => self.tool_args(index, partial, out),
            PivotEvent::Finish { reason, native_reason } => {
                self.close_block(out);
                self.stop_reason = Some(StopReason::from_openai(Some(&reason), native_reason.as_deref()));
            }
            // As the other ingress translators: `[DONE]` ends the message, `end_turn` if no
            // finish reason came.
            PivotEvent::Done => self.end(out),
            PivotEvent::Error(PivotError::Provider { kind, code, message }) => {
                let kind = exception_type(kind.as_deref(), code.as_ref());
                let err = TranslateError::StreamException {
                    kind: kind.to_owned(),
                    message: message.unwrap_or_default(),
                };
                self.fail(out, err, kind);
            }
            PivotEvent::Error(PivotError::Stream(e)) => self.fail(out, e, MODEL_STREAM_ERROR),
        }
    }

    fn output(&self, bytes: Vec<u8>) -> StreamOutput {
        StreamOutput {
            bytes,
            usage: self.current_usage(),
        }
    }
}

/// `throttlingException` for an OpenAI rate-limit error, else `modelStreamErrorException`.
fn exception_type(kind: Option<&str>, code: Option<&Value>) -> &'static str {
    let rate_limited = |s: &str| {
        matches!(
            s,
            "rate_limit_error"
                | "rate_limit_exceeded"
                | "requests"
                | "tokens"
                | "429"
                | "throttlingException"
                | "ThrottlingException"
        )
    };
    let code_limited = match code {
        Some(Value::String(s)) => rate_limited(s),
        Some(Value::Number(n)) => n.as_u64() == Some(429),
        _ => false,
    };
    if code_limited || kind.is_some_and(rate_limited) {
        THROTTLING
    } else {
        MODEL_STREAM_ERROR
    }
}

/// One event frame: `:event-type`, `:content-type: application/json`, `:message-type: event`.
fn event(kind: &str, payload: &impl Serialize) -> Vec<u8> {
    // Serialising our own types cannot fail.
    let json = serde_json::to_vec(payload).unwrap_or_default();
    eventstream::encode(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        &json,
    )
}

/// One exception frame with payload `{"message": ...}`.
fn exception(kind: &str, message: &str) -> Vec<u8> {
    let body = StreamException {
        message: Some(message.to_owned()),
        ..StreamException::default()
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    eventstream::encode(
        &[
            (":exception-type", kind),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        &json,
    )
}

impl StreamTranslator for StreamFromOpenAi {
    fn feed(&mut self, chunk: &[u8]) -> Result<StreamOutput, TranslateError> {
        let mut out = Vec::new();
        for event in self.reader.feed(chunk) {
            self.handle(event, &mut out);
        }
        Ok(self.output(out))
    }

    fn finish(&mut self) -> Result<StreamOutput, TranslateError> {
        let mut out = Vec::new();
        for event in self.reader.finish() {
            self.handle(event, &mut out);
        }
        Ok(self.output(out))
    }
}
