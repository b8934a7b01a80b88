//! ConverseStream (AWS event-stream frames) → OpenAI `chat.completion.chunk` SSE.
//!
//! | Bedrock | OpenAI |
//! |---|---|
//! | `messageStart` | first chunk, `delta: {role: "assistant", content: ""}` |
//! | `contentBlockDelta` `text` | `delta: {content}` |
//! | `contentBlockStart` `toolUse` | `delta: {tool_calls: [{index, id, type: "function", function: {name, arguments: ""}}]}` |
//! | `contentBlockDelta` `toolUse.input` | `delta: {tool_calls: [{index, function: {arguments}}]}` |
//! | `messageStop` | `delta: {}`, `finish_reason` mapped as for responses |
//! | `metadata` | usage chunk (`choices: []`) if the client asked for it, then `data: [DONE]` |
//! | `reasoningContent` deltas, `contentBlockStop`, unknown events | nothing |
//! | exception or error frame | a final `data: {"error": {...}}` event, nothing after |
//! | bad CRC, oversized frame, truncated stream, no `messageStop` + `metadata` at the end | a final `data: {"error": {...}}` event |
//!
//! Tool-call indexes count the tool calls (0, 1, ...) in the order Bedrock starts them,
//! whatever the content block index. `[DONE]` is sent once both `messageStop` and `metadata`
//! arrived (Bedrock sends them in that order). Usage is reported in every
//! [`StreamOutput`](crate::StreamOutput) once known, whether or not the client asked for the
//! usage chunk. `feed` and `finish` never fail: a broken stream becomes the error event.


use crate::bedrock::{
    ContentBlockDelta, ContentBlockStart, ConverseStreamEvent, StopReason, StreamException,
};
use crate::error::TranslateError;
use crate::eventstream::{Decoder, Message};
use crate::openai::{self, ChunkWriter, Delta, FunctionCallDelta, ToolCallDelta, SSE_DONE};
use crate::{StreamOutput, StreamTranslator, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Streaming,
    /// `[DONE]` or a terminal error event was sent; later input is ignored.
    Ended,
}

/// Translates one ConverseStream response body into OpenAI SSE.
#[derive(Debug)]
pub struct StreamToOpenAi {
    out: ChunkWriter,
    include_usage: bool,
    decoder: Decoder,
    state: State,
    role_sent: bool,
    /// (Bedrock content block index, OpenAI tool call index).
    tool_indexes: Vec<(u32, u32)>,
    stop: Option<StopReason>,
    metadata_seen: bool,
    usage: Option<Usage>,
}

impl StreamToOpenAi {
    /// `include_usage`: whether the client asked for the usage chunk
    /// (`stream_options.include_usage`).
    pub fn new(model: &str, id: &str, created: u64, include_usage: bool) -> Self {
        Self {
            out: ChunkWriter::new(id, model, created),
            include_usage,
            decoder: Decoder::new(),
            state: State::Streaming,
            role_sent: false,
            tool_indexes: Vec::new(),
            stop: None,
            metadata_seen: false,
            usage: None,
        }
    }

    /// The usage reported so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// True once the stream ended (`[DONE]` or an error event was produced).
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    fn output(&self, bytes: Vec<u8>) -> StreamOutput {
        StreamOutput {
            bytes,
            usage: self.usage,
        }
    }

    fn delta_chunk(&mut self, delta: Delta, finish_reason: Option<String>) -> Vec<u8> {
        self.delta_chunk_with(delta, finish_reason, None)
    }

    fn delta_chunk_with(
        &mut self,
        mut delta: Delta,
        finish_reason: Option<String>,
        native_finish_reason: Option<&str>,
    ) -> Vec<u8> {
        if !self.role_sent {
            self.role_sent = true;
            delta.role = Some("assistant".into());
        }
        self.out.delta(delta, finish_reason.as_deref(), native_finish_reason)
    }

    fn error_event(&mut self, message: &str, kind: &str, code: &str) -> Vec<u8> {
        self.state = State::Ended;
        openai::error_event(message, kind, Some(code))
    }

    fn decode_error(&mut self, err: &TranslateError) -> Vec<u8> {
        let code = match err {
            TranslateError::TooLarge { .. } => "provider_stream_too_large",
            _ => "provider_stream_error",
        };
        self.error_event(&err.to_string(), "api_error", code)
    }

    fn handle(&mut self, message: &Message, out: &mut Vec<u8>) {
        match message.message_type().unwrap_or("event") {
            "event" => {
                let Some(kind) = message.event_type() else {
                    return;
                };
                match ConverseStreamEvent::from_frame(kind, &message.payload) {
                    Ok(event) => self.handle_event(event, out),
                    Err(e) => {
                        let err =
                            TranslateError::StreamDecode(format!("malformed '{kind}' event: {e}"));
                        out.extend(self.decode_error(&err));
                    }
                }
            }
            "exception" => {
                let kind = message
                    .exception_type()
                    .unwrap_or("unknownException")
                    .to_owned();
                let exception: StreamException = serde_json::from_slice(&message.payload)
                    .unwrap_or_else(|_| StreamException {
                        message: Some(String::from_utf8_lossy(&message.payload).into_owned()),
                        ..Default::default()
                    });
                let text = exception
                    .message
                    .filter(|m| !m.trim().is_empty())
                    .unwrap_or_else(|| format!("Bedrock reported {kind} in the stream"));
                let error_type = match kind.as_str() {
                    "throttlingException" => "rate_limit_error",
                    "validationException" => "invalid_request_error",
                    _ => "api_error",
                };
                out.extend(self.error_event(&text, error_type, &kind));
            }
            "error" => {
                let code = message
                    .header_str(":error-code")
                    .unwrap_or("unknownError")
                    .to_owned();
                let text = message
                    .header_str(":error-message")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("Bedrock reported {code} in the stream"));
                out.extend(self.error_event(&text, "api_error", &code));
            }
            _ => {}
        }
    }

    fn handle_event(&mut self, event: ConverseStreamEvent, out: &mut Vec<u8>) {
        match event {
            ConverseStreamEvent::MessageStart(_) => {
                if !self.role_sent {
                    let delta = Delta {
                        content: Some(String::new()),
                        ..Default::default()
                    };
                    out.extend(self.delta_chunk(delta, None));
                }
            }
            ConverseStreamEvent::ContentBlockStart(start) => {
                if let ContentBlockStart::ToolUse(tool) = start.start {
                    let index = u32::try_from(self.tool_indexes.len()).unwrap_or(u32::MAX);
                    self.tool_indexes.push((start.content_block_index, index));
                    let delta = Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index,
                            id: Some(tool.tool_use_id),
                            kind: Some("function".into()),
                            function: Some(FunctionCallDelta {
                                name: Some(tool.name),
                                arguments: Some(String::new()),
                            }),
                        }]),
                        ..Default::default()
                    };
                    out.extend(self.delta_chunk(delta, None));
                }
            }
            ConverseStreamEvent::ContentBlockDelta(delta) => match delta.delta {
                ContentBlockDelta::Text(text) => {
                    if !text.is_empty() {
                        out.extend(self.delta_chunk(
                            Delta {
                                content: Some(text),
                                ..Default::default()
                            },
                            None,
                        ));
                    }
                }
                ContentBlockDelta::ToolUse(tool) => {
                    let block = delta.content_block_index;
                    let Some(&(_, index)) =
                        self.tool_indexes.iter().rev().find(|(b, _)| *b == block)
                    else {
                        let err = TranslateError::StreamDecode(format!(
                            "toolUse delta for content block {block}, which did not start a tool use"
                        ));
                        out.extend(self.decode_error(&err));
                        return;
                    };
                    if !tool.input.is_empty() {
                        let delta = Delta {
                            tool_calls: Some(vec![ToolCallDelta {
                                index,
                                id: None,
                                kind: None,
                                function: Some(FunctionCallDelta {
                                    name: None,
                                    arguments: Some(tool.input),
                                }),
                            }]),
                            ..Default::default()
                        };
                        out.extend(self.delta_chunk(delta, None));
                    }
                }
                ContentBlockDelta::ReasoningContent(_) | ContentBlockDelta::Unknown { .. } => {}
            },
            ConverseStreamEvent::MessageStop(stop) => {
                if self.stop.is_none() {
                    self.stop = Some(stop.stop_reason);
                    let finish = stop.stop_reason.openai_finish_reason().to_owned();
                    let native = stop.stop_reason.native_finish_reason();
                    out.extend(self.delta_chunk_with(Delta::default(), Some(finish), native));
                    self.maybe_done(out);
                }
            }
            ConverseStreamEvent::Metadata(meta) => {
                if let Some(usage) = &meta.usage {
                    // Streamed usage is cumulative: replace, do not add.
                    self.usage = Some(Usage::from(usage));
                }
                self.metadata_seen = true;
                self.maybe_done(out);
            }
            ConverseStreamEvent::InternalServerException(e)
            | ConverseStreamEvent::ModelStreamErrorException(e)
            | ConverseStreamEvent::ValidationException(e)
            | ConverseStreamEvent::ThrottlingException(e)
            | ConverseStreamEvent::ServiceUnavailableException(e) => {
                // An exception sent as an event-type (not the usual exception frame).
                let text = e
                    .message
                    .unwrap_or_else(|| "Bedrock reported an error in the stream".into());
                out.extend(self.error_event(&text, "api_error", "bedrock_stream_exception"));
            }
            ConverseStreamEvent::ContentBlockStop(_) | ConverseStreamEvent::Unknown { .. } => {}
        }
    }

    fn maybe_done(&mut self, out: &mut Vec<u8>) {
        if self.stop.is_none() || !self.metadata_seen {
            return;
        }
        if self.include_usage {
            if let Some(usage) = self.usage {
                out.extend(self.out.usage(&usage));
            }
        }
        out.extend_from_slice(SSE_DONE);
        self.state = State::Ended;
    }
}

impl StreamTranslator for StreamToOpenAi {
    fn feed(&mut self, chunk: &[u8]) -> Result<StreamOutput, TranslateError> {
        if self.state == State::Ended {
            return Ok(self.output(Vec::new()));
        }
        let mut out = Vec::new();
        match self.decoder.feed(chunk) {
            Ok(messages) => {
                for message in &messages {
                    self.handle(message, &mut out);
                    if self.state == State::Ended {
                        break;
                    }
                }
                // A framing error after the messages above (reported in full on the next call).
                if self.state != State::Ended {
                    if let Some(err) = self.decoder.error().cloned() {
                        out.extend(self.decode_error(&err));
                    }
                }
            }
            Err(err) => out.extend(self.decode_error(&err)),
        }
        Ok(self.output(out))
    }

    fn finish(&mut self) -> Result<StreamOutput, TranslateError> {
        if self.state == State::Ended {
            return Ok(self.output(Vec::new()));
        }
        let bytes = match self.decoder.finish() {
            Err(err) => {
                let message = err.to_string();
                self.error_event(&message, "api_error", "provider_stream_truncated")
            }
            Ok(()) => {
                let missing = match (self.stop.is_some(), self.metadata_seen) {
                    (false, false) => "messageStop and metadata",
                    (false, true) => "messageStop",
                    _ => "metadata",
                };
                let message = format!(
                    "the Bedrock stream ended before its {missing} event: the answer is incomplete"
                );
                self.error_event(&message, "api_error", "provider_stream_truncated")
            }
        };
        Ok(self.output(bytes))
    }
}
