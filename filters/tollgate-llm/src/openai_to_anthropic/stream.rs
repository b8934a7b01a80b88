//! Anthropic Messages SSE stream → OpenAI `chat.completion.chunk` SSE stream.
//!
//! | Anthropic event | OpenAI output |
//! | --- | --- |
//! | `message_start` | a chunk with `delta: {role: assistant, content: ""}`; its usage is kept |
//! | `content_block_start` `text` | a content chunk if the block starts with text |
//! | `content_block_start` `tool_use` | `tool_calls: [{index: <tool ordinal>, id, type: function, function: {name, arguments: ""}}]` |
//! | `content_block_delta` `text_delta` | `delta.content` |
//! | `content_block_delta` `input_json_delta` | `tool_calls: [{index, function: {arguments}}]` |
//! | `message_delta` | a chunk with `finish_reason`; its usage is merged with `message_start`'s |
//! | `message_stop` | the usage chunk (`choices: []`) if the client asked for it, then `data: [DONE]` |
//! | `ping`, thinking deltas, unknown events | nothing |
//! | `error` | `data: {"error": {...}}`, terminal (no `finish_reason` is made up, no `[DONE]`) |
//!
//! A malformed stream (bad JSON, an oversized event) and a stream that ends before
//! `message_stop` also end with a terminal `data: {"error": ...}` event; [`StreamToOpenAi::failure`]
//! then says what went wrong. The usage in every [`StreamOutput`] is the cumulative usage so far.

use std::collections::HashMap;


use crate::anthropic::{self, BlockDelta, ContentBlock, StreamEvent};
use crate::error::TranslateError;
use crate::openai::{error_event, ChunkWriter, Delta, FunctionCallDelta, ToolCallDelta, SSE_DONE};
use crate::sse::{Decoder, Event};
use crate::usage::Usage;
use crate::{StreamOutput, StreamTranslator};

pub struct StreamToOpenAi {
    out: ChunkWriter,
    include_usage: bool,
    decoder: Decoder,
    usage: Option<Usage>,
    /// Anthropic block index → OpenAI tool call index, for `tool_use` blocks.
    tools: HashMap<u32, u32>,
    next_tool: u32,
    started: bool,
    done: bool,
    failure: Option<TranslateError>,
}


impl StreamToOpenAi {
    /// `include_usage`: the client asked for the usage chunk (`stream_options.include_usage`).
    pub fn new(model: &str, id: &str, created: u64, include_usage: bool) -> Self {
        Self {
            out: ChunkWriter::new(id, model, created),
            include_usage,
            decoder: Decoder::new(),
            usage: None,
            tools: HashMap::new(),
            next_tool: 0,
            started: false,
            done: false,
            failure: None,
        }
    }

    /// Why the stream failed, if it did (a provider `error` event, a malformed or truncated
    /// stream). The client has already been sent a terminal error event.
    pub fn failure(&self) -> Option<&TranslateError> {
        self.failure.as_ref()
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<&str>) -> Vec<u8> {
        self.chunk_with(delta, finish_reason, None)
    }

    fn chunk_with(&self, delta: Delta, finish_reason: Option<&str>, native: Option<&str>) -> Vec<u8> {
        self.out.delta(delta, finish_reason, native)
    }

    fn tool_delta(&self, delta: ToolCallDelta) -> Vec<u8> {
        self.chunk(
            Delta {
                tool_calls: Some(vec![delta]),
                ..Delta::default()
            },
            None,
        )
    }

    fn fail(&mut self, out: &mut Vec<u8>, error: TranslateError, kind: &str, code: Option<&str>) {
        let message = match &error {
            TranslateError::StreamException { message, .. } if !message.is_empty() => {
                message.clone()
            }
            other => other.to_string(),
        };
        out.extend(error_event(&message, kind, code));
        self.done = true;
        self.failure = Some(error);
    }

    fn handle(&mut self, event: &Event, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let parsed: StreamEvent = match serde_json::from_str(&event.data) {
            Ok(e) => e,
            Err(e) => {
                let err = TranslateError::StreamDecode(format!("bad Anthropic stream event: {e}"));
                self.fail(out, err, "server_error", None);
                return;
            }
        };
        match parsed {
            StreamEvent::MessageStart { message } => {
                self.merge_usage(&Usage::from(&message.usage));
                if !self.started {
                    self.started = true;
                    let delta = Delta {
                        role: Some("assistant".to_owned()),
                        content: Some(String::new()),
                        tool_calls: None,
                    };
                    out.extend(self.chunk(delta, None));
                }
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                ContentBlock::Text { text, .. } if !text.is_empty() => {
                    out.extend(self.chunk(
                        Delta {
                            content: Some(text),
                            ..Delta::default()
                        },
                        None,
                    ));
                }
                ContentBlock::ToolUse { id, name, .. } => {
                    let ordinal = self.next_tool;
                    self.next_tool += 1;
                    self.tools.insert(index, ordinal);
                    out.extend(self.tool_delta(ToolCallDelta {
                        index: ordinal,
                        id: Some(id),
                        kind: Some("function".to_owned()),
                        function: Some(FunctionCallDelta {
                            name: Some(name),
                            arguments: Some(String::new()),
                        }),
                    }));
                }
                _ => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } if !text.is_empty() => {
                    out.extend(self.chunk(
                        Delta {
                            content: Some(text),
                            ..Delta::default()
                        },
                        None,
                    ));
                }
                BlockDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    if let Some(&ordinal) = self.tools.get(&index) {
                        out.extend(self.tool_delta(ToolCallDelta {
                            index: ordinal,
                            id: None,
                            kind: None,
                            function: Some(FunctionCallDelta {
                                name: None,
                                arguments: Some(partial_json),
                            }),
                        }));
                    }
                }
                _ => {}
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    self.merge_usage(&Usage::from(&u));
                }
                if let Some(reason) = delta.stop_reason {
                    out.extend(self.chunk_with(
                        Delta::default(),
                        Some(reason.openai_finish_reason()),
                        reason.native_finish_reason(),
                    ));
                }
            }
            StreamEvent::MessageStop => {
                if self.include_usage {
                    out.extend(self.out.usage(&self.usage.unwrap_or_default()));
                }
                out.extend_from_slice(SSE_DONE);
                self.done = true;
            }
            StreamEvent::Error { error } => {
                let kind = anthropic::openai_error_type(&error.kind);
                let code = error.kind.clone();
                let err = TranslateError::StreamException {
                    kind: error.kind,
                    message: error.message,
                };
                self.fail(out, err, kind, Some(&code));
            }
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping | StreamEvent::Unknown => {}
        }
    }

    fn merge_usage(&mut self, later: &Usage) {
        self.usage.get_or_insert_with(Usage::default).merge(later);
    }

    fn output(&self, bytes: Vec<u8>) -> StreamOutput {
        StreamOutput {
            bytes,
            usage: self.usage,
        }
    }
}

impl StreamTranslator for StreamToOpenAi {
    fn feed(&mut self, chunk: &[u8]) -> Result<StreamOutput, TranslateError> {
        let mut out = Vec::new();
        if self.done {
            return Ok(self.output(out));
        }
        match self.decoder.feed(chunk) {
            Ok(events) => {
                for event in &events {
                    self.handle(event, &mut out);
                }
            }
            Err(e) => self.fail(&mut out, e, "server_error", None),
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
            let err = TranslateError::StreamDecode(
                "the provider's stream ended before message_stop".to_owned(),
            );
            self.fail(&mut out, err, "server_error", None);
        }
        Ok(self.output(out))
    }
}
