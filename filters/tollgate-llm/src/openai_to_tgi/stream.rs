//! TGI `generate_stream` SSE → OpenAI `chat.completion.chunk` SSE.
//!
//! The input is the container's byte stream (on SageMaker, after
//! [`PayloadStream`](crate::sagemaker::PayloadStream) took it out of the `PayloadPart` frames).
//!
//! | TGI event | OpenAI output |
//! |---|---|
//! | the first event | a chunk with `delta: {role: "assistant", content: ""}` |
//! | `token` with `special: false` and text | `delta: {content}` (with stop sequences: all but the last characters, as many as the longest stop sequence, which wait for the next event) |
//! | `token` with `special: true` (end of sequence, end of turn) | nothing |
//! | the last event (`details` set; it carries the last token too) | the text held back and that token's (without the stop sequence for `stop_sequence`), then `delta: {}` with `finish_reason` (`eos_token`, `stop_sequence` → `stop`; `length` → `length`), the usage chunk (`choices: []`) if the client asked for it, `data: [DONE]` |
//! | `{"error": "...", "error_type": ...}` | a final `data: {"error": {...}}` event, nothing after (`type`: `rate_limit_error` for `overloaded`, `invalid_request_error` for `validation`, else `api_error`; `code`: `tgi_generation_error`, `tgi_incomplete_generation`, `tgi_overloaded`, `tgi_validation_error` or `tgi_error`) |
//! | an OpenAI-shaped error event (from the SageMaker frame decoder: exception frame, bad frame) | passed on as the final error event |
//! | malformed JSON, an oversized event, the stream ending without the `details` event | a final `data: {"error": {...}}` event |
//! | events without a token, comments, `[DONE]` | nothing |
//!
//! Usage: `output` = `details.generated_tokens`, `input` = `details.input_length` when TGI
//! reports it (recent versions), otherwise not reported. It is in every
//! [`StreamOutput`](crate::StreamOutput) once known. `feed` and `finish` never fail: a broken
//! stream becomes the error event.

use serde::Deserialize;
use serde_json::Value;

use crate::error::TranslateError;
use crate::openai::{self, ChunkWriter, Delta, SSE_DONE};
use crate::sse::{Decoder, Event};
use crate::tgi::{FinishReason, StreamResponse};
use crate::{StreamOutput, StreamTranslator, Usage};

use super::response::strip_stop_sequence;

/// Translates one TGI stream into OpenAI SSE.
#[derive(Debug)]
pub struct StreamToOpenAi {
    out: ChunkWriter,
    include_usage: bool,
    decoder: Decoder,
    started: bool,
    ended: bool,
    usage: Option<Usage>,
    failure: Option<TranslateError>,
    /// The request's stop sequences, and the length in characters of the longest.
    stop: Vec<String>,
    hold: usize,
    /// Answer text not sent yet: the last `hold` characters, which may start a stop sequence.
    pending: String,
}

/// An event probed for an error before it is read as a token event.
#[derive(Deserialize)]
struct ErrorProbe {
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    error_type: Option<String>,
}

impl StreamToOpenAi {
    /// `include_usage`: the client asked for the usage chunk (`stream_options.include_usage`).
    pub fn new(model: &str, id: &str, created: u64, include_usage: bool) -> Self {
        Self {
            out: ChunkWriter::new(id, model, created),
            include_usage,
            decoder: Decoder::new(),
            started: false,
            ended: false,
            usage: None,
            failure: None,
            stop: Vec::new(),
            hold: 0,
            pending: String::new(),
        }
    }

    /// The request's stop sequences: TGI sends the one it stopped on as text; OpenAI leaves it
    /// out. The last characters (as many as the longest stop sequence) are held back until the
    /// final event shows whether they are one.
    pub fn with_stop_sequences(mut self, stop: Vec<String>) -> Self {
        self.stop = stop.into_iter().filter(|s| !s.is_empty()).collect();
        self.hold = self.stop.iter().map(|s| s.chars().count()).max().unwrap_or(0);
        self
    }

    /// Adds answer text; returns what can be sent now (all but the held-back tail).
    fn push_text(&mut self, text: &str) -> Option<String> {
        if self.hold == 0 {
            return (!text.is_empty()).then(|| text.to_owned());
        }
        self.pending.push_str(text);
        let keep_from = self.pending.char_indices().rev().nth(self.hold - 1).map(|(i, _)| i)?;
        if keep_from == 0 {
            return None;
        }
        let tail = self.pending.split_off(keep_from);
        Some(std::mem::replace(&mut self.pending, tail))
    }

    /// Why the stream failed, if it did; the client has been sent a terminal error event.
    pub fn failure(&self) -> Option<&TranslateError> {
        self.failure.as_ref()
    }

    fn output(&self, bytes: Vec<u8>) -> StreamOutput {
        StreamOutput { bytes, usage: self.usage }
    }

    fn delta(&self, delta: Delta, finish_reason: Option<&str>) -> Vec<u8> {
        self.delta_with(delta, finish_reason, None)
    }

    fn delta_with(&self, delta: Delta, finish_reason: Option<&str>, native: Option<&str>) -> Vec<u8> {
        self.out.delta(delta, finish_reason, native)
    }

    fn fail(&mut self, out: &mut Vec<u8>, error: TranslateError, kind: &str, code: &str) {
        let message = match &error {
            TranslateError::StreamException { message, .. } => message.clone(),
            other => other.to_string(),
        };
        out.extend(openai::error_event(&message, kind, Some(code)));
        self.failure = Some(error);
        self.ended = true;
    }

    fn handle(&mut self, event: &Event, out: &mut Vec<u8>) {
        let data = event.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return;
        }
        let probe: ErrorProbe = match serde_json::from_str(data) {
            Ok(p) => p,
            Err(e) => {
                let err = TranslateError::StreamDecode(format!("malformed TGI stream event: {e}"));
                self.fail(out, err, "api_error", "provider_stream_error");
                return;
            }
        };
        match probe.error {
            None | Some(Value::Null) => {}
            // Already in OpenAI form (the SageMaker frame decoder's own error events).
            Some(Value::Object(_)) => {
                out.extend(b"data: ");
                out.extend(data.as_bytes());
                out.extend(b"\n\n");
                self.failure = Some(TranslateError::StreamException {
                    kind: "sagemaker".into(),
                    message: "the SageMaker stream failed".into(),
                });
                self.ended = true;
                return;
            }
            Some(other) => {
                let message = match other {
                    Value::String(s) => s,
                    v => v.to_string(),
                };
                let kind = probe.error_type.unwrap_or_default();
                // TGI's error types; anything else is reported as a generic TGI error.
                let (openai_type, code) = match kind.as_str() {
                    "generation" => ("api_error", "tgi_generation_error"),
                    "incomplete_generation" => ("api_error", "tgi_incomplete_generation"),
                    "overloaded" => ("rate_limit_error", "tgi_overloaded"),
                    "validation" => ("invalid_request_error", "tgi_validation_error"),
                    _ => ("api_error", "tgi_error"),
                };
                let err = TranslateError::StreamException { kind, message };
                self.fail(out, err, openai_type, code);
                return;
            }
        }
        let parsed: StreamResponse = match serde_json::from_str(data) {
            Ok(p) => p,
            Err(e) => {
                let err = TranslateError::StreamDecode(format!("malformed TGI stream event: {e}"));
                self.fail(out, err, "api_error", "provider_stream_error");
                return;
            }
        };
        if parsed.token.is_none() && parsed.details.is_none() {
            return;
        }
        if !self.started {
            self.started = true;
            let delta = Delta { role: Some("assistant".into()), content: Some(String::new()), ..Delta::default() };
            out.extend(self.delta(delta, None));
        }
        let text = parsed.token.filter(|t| !t.special).map(|t| t.text).unwrap_or_default();
        if let Some(now) = self.push_text(&text) {
            out.extend(self.delta(Delta { content: Some(now), ..Delta::default() }, None));
        }
        if let Some(details) = parsed.details {
            let mut rest = std::mem::take(&mut self.pending);
            if details.finish_reason == FinishReason::StopSequence {
                let kept = strip_stop_sequence(&rest, &self.stop).len();
                rest.truncate(kept);
            }
            if !rest.is_empty() {
                out.extend(self.delta(Delta { content: Some(rest), ..Delta::default() }, None));
            }
            let usage = Usage { input: details.input_length, output: Some(details.generated_tokens), ..Usage::default() };
            self.usage = Some(usage);
            out.extend(self.delta_with(
                Delta::default(),
                Some(details.finish_reason.openai_finish_reason()),
                details.finish_reason.native_finish_reason(),
            ));
            if self.include_usage {
                out.extend(self.out.usage(&usage));
            }
            out.extend_from_slice(SSE_DONE);
            self.ended = true;
        }
    }

    fn events(&mut self, events: Result<Vec<Event>, TranslateError>, out: &mut Vec<u8>) {
        match events {
            Ok(events) => {
                for event in &events {
                    if self.ended {
                        break;
                    }
                    self.handle(event, out);
                }
            }
            Err(err) => {
                let code = match err {
                    TranslateError::TooLarge { .. } => "provider_stream_too_large",
                    _ => "provider_stream_error",
                };
                self.fail(out, err, "api_error", code);
            }
        }
    }
}

impl StreamTranslator for StreamToOpenAi {
    fn feed(&mut self, chunk: &[u8]) -> Result<StreamOutput, TranslateError> {
        let mut out = Vec::new();
        if !self.ended {
            let events = self.decoder.feed(chunk);
            self.events(events, &mut out);
        }
        Ok(self.output(out))
    }

    fn finish(&mut self) -> Result<StreamOutput, TranslateError> {
        let mut out = Vec::new();
        if !self.ended {
            let events = self.decoder.finish();
            self.events(events, &mut out);
        }
        if !self.ended {
            let err = TranslateError::StreamDecode(
                "the TGI stream ended before its final details event: the answer is incomplete".into(),
            );
            self.fail(&mut out, err, "api_error", "provider_stream_truncated");
        }
        Ok(self.output(out))
    }
}
