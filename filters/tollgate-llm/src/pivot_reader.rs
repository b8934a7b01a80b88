//! The one reader of the OpenAI pivot stream, for the translators that turn it into another
//! client API ([`anthropic_to_openai::StreamFromOpenAi`](crate::anthropic_to_openai::StreamFromOpenAi),
//! [`bedrock_to_openai::StreamFromOpenAi`](crate::bedrock_to_openai::StreamFromOpenAi)).
//!
//! Push-based like the decoders under it: [`PivotReader::feed`] takes the OpenAI SSE bytes as
//! they arrive, split anywhere, and returns the neutral [`PivotEvent`]s they complete;
//! [`PivotReader::finish`] ends the stream. The reader does what every such translator would
//! otherwise repeat:
//!
//! - SSE decoding; `data: [DONE]` → [`PivotEvent::Done`];
//! - each `chat.completion.chunk`, read leniently (compatible providers omit fields):
//!   [`PivotEvent::Start`] once, on the first chunk; [`PivotEvent::Usage`] when a chunk carries
//!   usage (from any chunk, cumulative: replace, do not add), before that chunk's deltas; for
//!   choice 0 (the client translators serve one choice), [`PivotEvent::TextDelta`] for
//!   non-empty content, the tool-call deltas, then [`PivotEvent::Finish`];
//! - tool calls: OpenAI sends a call's `id` and `name` in its first delta and the `arguments` as
//!   partial JSON strings after. A delta opens a call ([`PivotEvent::ToolCallStart`]) when its
//!   `index` is new, or when it names another `id` than the call open at that index; its
//!   non-empty `arguments` follow as [`PivotEvent::ToolArgsDelta`];
//! - failures, all terminal ([`PivotEvent::Error`]): an OpenAI `data: {"error": ...}` event
//!   ([`PivotError::Provider`], its fields as sent), a malformed chunk or SSE framing, and a
//!   stream that ends before any finish reason ([`PivotError::Stream`]). A stream that ends
//!   after a finish reason but without `[DONE]` ends with [`PivotEvent::Done`] all the same.
//!
//! After a terminal event ([`PivotEvent::Done`] or [`PivotEvent::Error`]) the reader ignores
//! the rest of its input. `feed` and `finish` never fail and never panic.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::TranslateError;
use crate::openai::{OpenAiUsage, ToolCallDelta};
use crate::sse::{Decoder, Event};
use crate::usage::Usage;

/// One thing the OpenAI pivot stream said, in a form any client API can be written from.
#[derive(Debug, Clone, PartialEq)]
pub enum PivotEvent {
    /// The first chunk arrived: its `id` (empty if it had none).
    Start { id: String },
    /// The usage so far (cumulative).
    Usage(Usage),
    /// Non-empty text of choice 0.
    TextDelta(String),
    /// A tool call opens: OpenAI's call `index`, its `id` if the provider sent one, its name.
    ToolCallStart { index: u32, id: Option<String>, name: String },
    /// A piece of a tool call's arguments (partial JSON), by OpenAI's call `index`.
    ToolArgsDelta { index: u32, partial: String },
    /// Choice 0 finished: OpenAI's `finish_reason` and the provider's own beside it
    /// (`native_finish_reason`, the pivot's extension).
    Finish { reason: String, native_reason: Option<String> },
    /// Terminal: the stream failed.
    Error(PivotError),
    /// Terminal: `[DONE]`, or the end of a stream that had a finish reason.
    Done,
}

/// Why a pivot stream failed.
#[derive(Debug, Clone, PartialEq)]
pub enum PivotError {
    /// The provider reported it: an OpenAI `data: {"error": {"message", "type", "code"}}` event.
    Provider { kind: Option<String>, code: Option<Value>, message: Option<String> },
    /// The stream is malformed, or ended before it finished.
    Stream(TranslateError),
}

/// Reads one OpenAI SSE response body as [`PivotEvent`]s.
#[derive(Debug)]
pub struct PivotReader {
    decoder: Decoder,
    started: bool,
    /// A finish reason came for choice 0.
    finished: bool,
    /// A terminal event was returned.
    ended: bool,
    /// OpenAI tool call index → the id the open call there was given (if any).
    calls: HashMap<u32, Option<String>>,
}

impl Default for PivotReader {
    fn default() -> Self {
        Self::new()
    }
}

impl PivotReader {
    pub fn new() -> Self {
        Self { decoder: Decoder::new(), started: false, finished: false, ended: false, calls: HashMap::new() }
    }

    /// Reads the next bytes of the stream; returns the events they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<PivotEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        match self.decoder.feed(bytes) {
            Ok(events) => self.events(&events, &mut out),
            Err(e) => self.end(PivotEvent::Error(PivotError::Stream(e)), &mut out),
        }
        out
    }

    /// End of input: the events left, and the terminal event if none came yet.
    pub fn finish(&mut self) -> Vec<PivotEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        // An unterminated last line may be cut short: the SSE decoder drops it.
        if let Ok(events) = self.decoder.finish() {
            self.events(&events, &mut out);
        }
        if !self.ended {
            let last = if self.finished {
                PivotEvent::Done
            } else {
                let e = TranslateError::StreamDecode("the provider's stream ended before it finished".to_owned());
                PivotEvent::Error(PivotError::Stream(e))
            };
            self.end(last, &mut out);
        }
        out
    }

    fn end(&mut self, event: PivotEvent, out: &mut Vec<PivotEvent>) {
        self.ended = true;
        out.push(event);
    }

    fn events(&mut self, events: &[Event], out: &mut Vec<PivotEvent>) {
        for event in events {
            if self.ended {
                return;
            }
            self.event(event, out);
        }
    }

    fn event(&mut self, event: &Event, out: &mut Vec<PivotEvent>) {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.end(PivotEvent::Done, out);
            return;
        }
        let chunk: Chunk = match serde_json::from_str(data) {
            Ok(c) => c,
            Err(e) => {
                let e = TranslateError::StreamDecode(format!("bad OpenAI stream chunk: {e}"));
                self.end(PivotEvent::Error(PivotError::Stream(e)), out);
                return;
            }
        };
        if let Some(error) = chunk.error {
            let error = PivotError::Provider { kind: error.kind, code: error.code, message: error.message };
            self.end(PivotEvent::Error(error), out);
            return;
        }
        if !self.started {
            self.started = true;
            out.push(PivotEvent::Start { id: chunk.id });
        }
        if let Some(u) = &chunk.usage {
            out.push(PivotEvent::Usage(Usage::from(u)));
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    out.push(PivotEvent::TextDelta(text));
                }
                for call in delta.tool_calls.into_iter().flatten() {
                    self.tool_call(call, out);
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finished = true;
                out.push(PivotEvent::Finish { reason, native_reason: choice.native_finish_reason });
            }
        }
    }

    fn tool_call(&mut self, call: ToolCallDelta, out: &mut Vec<PivotEvent>) {
        let (name, arguments) = call.function.map_or((None, None), |f| (f.name, f.arguments));
        let open = self.calls.get(&call.index).is_some_and(|id| call.id.is_none() || call.id == *id);
        if !open {
            self.calls.insert(call.index, call.id.clone());
            out.push(PivotEvent::ToolCallStart { index: call.index, id: call.id, name: name.unwrap_or_default() });
        }
        if let Some(partial) = arguments.filter(|a| !a.is_empty()) {
            out.push(PivotEvent::ToolArgsDelta { index: call.index, partial });
        }
    }
}

/// An OpenAI stream chunk, read leniently (compatible providers omit fields).
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: String,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
    #[serde(default)]
    error: Option<OpenAiError>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<ChunkDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    native_finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct OpenAiError {
    #[serde(default)]
    message: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    code: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOOLS: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        ": comment\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Let me 🎉 look\"}},{\"index\":1,\"delta\":{\"content\":\"other choice\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_b\",\"function\":{\"name\":\"put\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\",\"native_finish_reason\":\"tool_use\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\n",
        "data: [DONE]\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"after done\"}}]}\n\n",
    );

    fn read(input: &[u8], split: usize) -> Vec<PivotEvent> {
        let mut r = PivotReader::new();
        let mut out = Vec::new();
        for piece in input.chunks(split.max(1)) {
            out.extend(r.feed(piece));
        }
        out.extend(r.finish());
        assert!(r.feed(b"data: {}\n\n").is_empty() && r.finish().is_empty(), "ended");
        out
    }

    #[test]
    fn chunks_become_neutral_events_whatever_the_split() {
        use PivotEvent::*;
        let expected = vec![
            Start { id: "chatcmpl-1".into() },
            TextDelta("Let me 🎉 look".into()),
            ToolCallStart { index: 0, id: Some("call_a".into()), name: "get".into() },
            ToolArgsDelta { index: 0, partial: "{\"q\":".into() },
            ToolArgsDelta { index: 0, partial: "1}".into() },
            ToolCallStart { index: 0, id: Some("call_b".into()), name: "put".into() },
            Usage(crate::Usage { input: Some(5), output: Some(3), ..crate::Usage::default() }),
            Finish { reason: "tool_calls".into(), native_reason: Some("tool_use".into()) },
            Done,
        ];
        for split in [1, 2, 7, 64, TOOLS.len()] {
            assert_eq!(read(TOOLS.as_bytes(), split), expected, "split {split}");
        }
    }

    #[test]
    fn a_stream_without_done_ends_by_its_finish_reason_or_as_an_error() {
        let finished = "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        assert_eq!(read(finished.as_bytes(), 5).last(), Some(&PivotEvent::Done));
        let cut = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"cho";
        match read(cut.as_bytes(), 3).last() {
            Some(PivotEvent::Error(PivotError::Stream(TranslateError::StreamDecode(m)))) => assert!(m.contains("ended before"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_are_terminal() {
        let provider = "data: {\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_error\",\"code\":429}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            read(provider.as_bytes(), 4),
            vec![PivotEvent::Error(PivotError::Provider {
                kind: Some("rate_limit_error".into()),
                code: Some(Value::from(429)),
                message: Some("slow down".into()),
            })]
        );
        let events = read(b"data: {not json\n\ndata: [DONE]\n\n", 3);
        assert!(matches!(events.as_slice(), [PivotEvent::Error(PivotError::Stream(TranslateError::StreamDecode(_)))]), "{events:?}");
        let mut r = PivotReader { decoder: Decoder::with_limit(8), ..PivotReader::new() };
        let events = r.feed(b"data: 0123456789abcdef");
        assert!(matches!(events.as_slice(), [PivotEvent::Error(PivotError::Stream(TranslateError::TooLarge { .. }))]), "{events:?}");
        assert!(r.finish().is_empty());
    }
}
