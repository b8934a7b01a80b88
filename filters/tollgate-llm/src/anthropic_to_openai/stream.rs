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
use crate::openai::ToolCallDelta;
use crate::sse::{Decoder, Event};
use crate::usage::Usage;
use crate::{StreamOutput, StreamTranslator};
use crate::openai::lenient::Chunk;


#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Tool,
}

pub struct StreamFromOpenAi {
    model: String,
    decoder: Decoder,
    usage: Option<Usage>,
    exact_usage: Option<Usage>,
    started: bool,
    /// The open block: its kind and its Anthropic index.
    open: Option<(Open, u32)>,
    next_block: u32,
    /// OpenAI tool call index → (Anthropic block index, call id).
    tools: HashMap<u32, (u32, Option<String>)>,
    stop_reason: Option<StopReason>,
    done: bool,
    failure: Option<TranslateError>,
}

impl StreamFromOpenAi {
    /// `model`: the model name the client sees.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            decoder: Decoder::new(),
            usage: None,
            exact_usage: None,
            started: false,
            open: None,
            next_block: 0,
            tools: HashMap::new(),
            stop_reason: None,
            done: false,
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

    fn tool(&mut self, call: ToolCallDelta, out: &mut Vec<u8>) {
        let function = call.function.unwrap_or(crate::openai::FunctionCallDelta {
            name: None,
            arguments: None,
        });
        let known = self
            .tools
            .get(&call.index)
            .filter(|(_, id)| call.id.is_none() || call.id == *id);
        let index = match (known, call.id) {
            (Some(&(index, _)), _) => index,
            (None, id) => {
                // A new call (OpenAI sends its id and name in its first delta).
                let id = id.unwrap_or_else(|| format!("toolu_{}", call.index));
                let block = ContentBlock::ToolUse {
                    id: id.clone(),
                    name: function.name.clone().unwrap_or_default(),
                    input: Value::Object(Map::new()),
                    cache_control: None,
                };
                let index = self.open_block(Open::Tool, block, out);
                self.tools.insert(call.index, (index, Some(id)));
                index
            }
        };
        if let Some(args) = function.arguments.filter(|a| !a.is_empty()) {
            let delta = BlockDelta::InputJsonDelta { partial_json: args };
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
        self.done = true;
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
        self.done = true;
    }

    fn handle(&mut self, event: &Event, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            self.end(out);
            return;
        }
        let chunk: Chunk = match serde_json::from_str(data) {
            Ok(c) => c,
            Err(e) => {
                let err = TranslateError::StreamDecode(format!("bad OpenAI stream chunk: {e}"));
                self.fail(out, err, "api_error");
                return;
            }
        };
        if let Some(error) = chunk.error {
            let code = error
                .code
                .as_ref()
                .and_then(Value::as_str)
                .map(anthropic::anthropic_error_type);
            let kind = match code {
                Some(k) if k != "api_error" => k,
                _ => anthropic::anthropic_error_type(error.kind.as_deref().unwrap_or("")),
            };
            let err = TranslateError::StreamException {
                kind: kind.to_owned(),
                message: error.message.unwrap_or_default(),
            };
            self.fail(out, err, kind);
            return;
        }
        self.start(&chunk.id, out);
        if let Some(u) = &chunk.usage {
            self.usage = Some(Usage::from(u));
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    self.text(text, out);
                }
                for call in delta.tool_calls.into_iter().flatten() {
                    self.tool(call, out);
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.close_block(out);
                self.stop_reason = Some(StopReason::from_openai(Some(&reason), choice.native_finish_reason.as_deref()));
            }
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
        if !self.done {
            match self.decoder.feed(chunk) {
                Ok(events) => {
                    for event in &events {
                        self.handle(event, &mut out);
                    }
                }
                Err(e) => self.fail(&mut out, e, "api_error"),
            }
        }
        Ok(self.output(out))
    }

    fn finish(&mut self) -> Result<StreamOutput, TranslateError> {
        let mut out = Vec::new();
        if !self.done {
            if let Ok(events) = self.decoder.finish() {
                for event in &events {
                    self.handle(event, &mut out);
                }
            }
        }
        if !self.done {
            if self.stop_reason.is_some() {
                self.end(&mut out);
            } else {
                let err = TranslateError::StreamDecode(
                    "the provider's stream ended before it finished".to_owned(),
                );
                self.fail(&mut out, err, "api_error");
            }
        }
        Ok(self.output(out))
    }
}
