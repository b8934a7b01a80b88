//! OpenAI `chat.completion.chunk` SSE stream → Anthropic Messages SSE stream.
//!
//! Output, in the order the Anthropic SDKs expect:
//!
//! 1. `message_start` (on the first chunk): the message skeleton, `usage` zero or as known;
//! 2. per content block, `content_block_start`, `content_block_delta`s (`text_delta`, or
//!    `input_json_delta` for a `tool_use` block), `content_block_stop`; a block is closed when
//!    the next one opens or the choice finishes;
//! 3. at `data: [DONE]`: `message_delta` with `stop_reason` and the full usage (input, output
//!    and cache counts: OpenAI sends usage last, so `message_start` cannot carry it), then
//!    `message_stop`.
//!
//! A stream that ends after a `finish_reason` but without `[DONE]` is closed the same way at
//! [`finish`](StreamTranslator::finish). An OpenAI `data: {"error": ...}` event becomes
//! `event: error`, terminal; so do a malformed stream and one that ends before any
//! `finish_reason`.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::anthropic::{
    self, AnthropicUsage, BlockDelta, ContentBlock, ErrorDetail, MessageDeltaBody,
    MessagesResponse, StopReason, StreamEvent,
};
use crate::error::TranslateError;
use crate::pivot_reader::{PivotError, PivotEvent, PivotReader};
use crate::usage::Usage;
use crate::{StreamOutput, StreamTranslator};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Tool,
}

pub struct StreamFromOpenAi {
    model: String,
    reader: PivotReader,
    usage: Option<Usage>,
    exact_usage: Option<Usage>,
    started: bool,
    /// The open block: its kind and its Anthropic index.
    open: Option<(Open, u32)>,
    next_block: u32,
    /// OpenAI tool call index → Anthropic block index of the call open there.
    tools: HashMap<u32, u32>,
    stop_reason: Option<StopReason>,
    failure: Option<TranslateError>,
}

impl StreamFromOpenAi {
    /// `model`: the model name the client sees.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            reader: PivotReader::new(),
            usage: None,
            exact_usage: None,
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

    /// Why the stream failed, if it did; the client has been sent an `error` event.
    pub fn failure(&self) -> Option<&TranslateError> {
        self.failure.as_ref()
    }

    fn current_usage(&self) -> Option<Usage> {
        self.exact_usage.or(self.usage)
    }

    fn start(&mut self, id: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = if id.is_empty() {
            "msg_tollgate".to_owned()
        } else {
            super::message_id(id)
        };
        let message = MessagesResponse {
            id,
            kind: "message".to_owned(),
            role: "assistant".to_owned(),
            content: Vec::new(),
            model: self.model.clone(),
            stop_reason: None,
            stop_sequence: None,
            usage: AnthropicUsage::from(&self.current_usage().unwrap_or_default()),
        };
        out.extend(StreamEvent::MessageStart { message }.to_sse());
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            out.extend(StreamEvent::ContentBlockStop { index }.to_sse());
        }
    }

    fn open_block(&mut self, kind: Open, block: ContentBlock, out: &mut Vec<u8>) -> u32 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((kind, index));
        out.extend(
            StreamEvent::ContentBlockStart {
                index,
                content_block: block,
            }
            .to_sse(),
        );
        index
    }

    fn text(&mut self, text: String, out: &mut Vec<u8>) {
        let index = match self.open {
            Some((Open::Text, index)) => index,
            _ => self.open_block(
                Open::Text,
                ContentBlock::Text {
                    text: String::new(),
                    cache_control: None,
                },
                out,
            ),
        };
        out.extend(
            StreamEvent::ContentBlockDelta {
                index,
                delta: BlockDelta::TextDelta { text },
            }
            .to_sse(),
        );
    }

    fn tool_start(&mut self, call: u32, id: Option<String>, name: String, out: &mut Vec<u8>) {
        // A new call (OpenAI sends its id and name in its first delta).
        let block = ContentBlock::ToolUse {
            id: id.unwrap_or_else(|| format!("toolu_{call}")),
            name,
            input: Value::Object(Map::new()),
            cache_control: None,
        };
        let index = self.open_block(Open::Tool, block, out);
        self.tools.insert(call, index);
    }

    fn tool_args(&mut self, call: u32, partial_json: String, out: &mut Vec<u8>) {
        if let Some(&index) = self.tools.get(&call) {
            let delta = BlockDelta::InputJsonDelta { partial_json };
            out.extend(StreamEvent::ContentBlockDelta { index, delta }.to_sse());
        }
    }

    fn fail(&mut self, out: &mut Vec<u8>, error: TranslateError, kind: &str) {
        let message = match &error {
            TranslateError::StreamException { message, .. } if !message.is_empty() => {
                message.clone()
            }
            other => other.to_string(),
        };
        out.extend(
            StreamEvent::Error {
                error: ErrorDetail {
                    kind: kind.to_owned(),
                    message,
                },
            }
            .to_sse(),
        );
        self.failure = Some(error);
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.start("", out);
        self.close_block(out);
        let usage = AnthropicUsage::from(&self.current_usage().unwrap_or_default());
        let delta = MessageDeltaBody {
            stop_reason: Some(self.stop_reason.unwrap_or(StopReason::EndTurn)),
            stop_sequence: None,
        };
        out.extend(
            StreamEvent::MessageDelta {
                delta,
                usage: Some(usage),
            }
            .to_sse(),
        );
        out.extend(StreamEvent::MessageStop.to_sse());
    }

    fn handle(&mut self, event: PivotEvent, out: &mut Vec<u8>) {
        match event {
            PivotEvent::Start { id } => self.start(&id, out),
            PivotEvent::Usage(u) => self.usage = Some(u),
            PivotEvent::TextDelta(text) => self.text(text, out),
            PivotEvent::ToolCallStart { index, id, name } => self.tool_start(index, id, name, out),
            PivotEvent::ToolArgsDelta { index, partial } => self.tool_args(index, partial, out),
            PivotEvent::Finish { reason, native_reason } => {
                self.close_block(out);
                self.stop_reason = Some(StopReason::from_openai(Some(&reason), native_reason.as_deref()));
            }
            PivotEvent::Done => self.end(out),
            PivotEvent::Error(PivotError::Provider { kind, code, message }) => {
                let code = code.as_ref().and_then(Value::as_str).map(anthropic::anthropic_error_type);
                let kind = match code {
                    Some(k) if k != "api_error" => k,
                    _ => anthropic::anthropic_error_type(kind.as_deref().unwrap_or("")),
                };
                let err = TranslateError::StreamException {
                    kind: kind.to_owned(),
                    message: message.unwrap_or_default(),
                };
                self.fail(out, err, kind);
            }
            PivotEvent::Error(PivotError::Stream(e)) => self.fail(out, e, "api_error"),
        }
    }

    fn output(&self, bytes: Vec<u8>) -> StreamOutput {
        StreamOutput {
            bytes,
            usage: self.current_usage(),
        }
    }
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
