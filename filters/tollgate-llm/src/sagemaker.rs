//! Amazon SageMaker Runtime endpoints: paths and the response-stream unwrapper, shared by the
//! OpenAI-style containers and the TGI containers ([`crate::openai_to_tgi`]).
//!
//! `InvokeEndpoint` takes and returns the container's own payload (OpenAI chat JSON, or TGI's
//! generate JSON); for OpenAI containers only the path and signing differ from an OpenAI
//! provider.
//!
//! `InvokeEndpointWithResponseStream` answers with AWS event-stream frames, as the
//! `sagemaker-runtime` service model (botocore `data/sagemaker-runtime/2017-05-13/service-2.json`)
//! describes them:
//!
//! - `ResponseStream` member `PayloadPart` (`:message-type: event`, `:event-type: PayloadPart`):
//!   its one member `Bytes` is the event payload (`"eventpayload": true`, a blob), so the
//!   frame's payload *is* a slice of the container's output, raw — no JSON, no base64. (Bedrock's
//!   `InvokeModelWithResponseStream` is the other way round: its `PayloadPart.bytes` is not an
//!   event payload, so that frame's payload is JSON `{"bytes": <base64>}`.) The slices are
//!   arbitrary: one SSE event can span several parts, one part can hold several events or end
//!   inside a UTF-8 character.
//! - `ModelStreamError` and `InternalStreamFailure` (`:message-type: exception`,
//!   `:exception-type` naming the member, payload JSON `{"Message", "ErrorCode"}` /
//!   `{"Message"}`), ending the stream inside an HTTP 200.
//!
//! [`PayloadStream`] concatenates the parts into the container's byte stream, unchanged, so the
//! next stage (an SSE decoder) sees exactly what the container wrote. An exception frame, a
//! generic `:message-type: error` frame, a malformed frame or a stream cut inside a frame ends
//! it with one terminal OpenAI error event (`data: {"error": {...}}`, the code naming the
//! exception), which the next stage passes on to the client in its own format. Frames of any
//! other event type are skipped (forward compatibility).
//!
//! Both container kinds stream SSE, and an error can come in the middle of one of their
//! events (a `ModelStreamError` `StreamBroken` does). So that the error event is read as an
//! event of its own, not glued to half of the container's, the unwrapper passes the
//! container's bytes on up to the end of the last complete SSE event (a blank line; LF, CRLF
//! or CR line ends) and holds the rest back (at most [`sse::MAX_EVENT_BYTES`], as the SSE
//! decoder after it): on error the partial event is dropped, at a clean end it is passed on.
//! Nothing is delayed that the next stage could have used, since it acts on whole events only.

use serde::Deserialize;

use crate::openai_to_bedrock::encode_path_segment;
use crate::{eventstream, sse};
use crate::{StreamOutput, StreamTranslator, TranslateError};

/// `/endpoints/{name}/invocations` or `/invocations-response-stream`.
pub fn invocations_path(endpoint: &str, stream: bool) -> String {
    let action = if stream { "invocations-response-stream" } else { "invocations" };
    format!("/endpoints/{}/{action}", encode_path_segment(endpoint))
}

pub struct PayloadStream {
    decoder: eventstream::Decoder,
    failed: bool,
    /// Container bytes after the last complete SSE event, held back.
    pending: Vec<u8>,
    /// The current SSE line has no bytes yet (a line end here ends an event).
    line_empty: bool,
    /// The last byte was a CR (a LF next belongs to it).
    after_cr: bool,
    /// The last line end ended an event.
    at_boundary: bool,
}

impl Default for PayloadStream {
    fn default() -> Self {
        Self::new()
    }
}

impl PayloadStream {
    pub fn new() -> Self {
        Self {
            decoder: eventstream::Decoder::new(),
            failed: false,
            pending: Vec::new(),
            line_empty: true,
            after_cr: false,
            at_boundary: false,
        }
    }

    /// Appends the container bytes up to the end of the last complete SSE event to `out` and
    /// holds the rest back.
    fn pass(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let mut boundary = None;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\n' if self.after_cr => {
                    self.after_cr = false;
                    if self.at_boundary {
                        boundary = Some(i + 1);
                    }
                }
                b'\r' | b'\n' => {
                    self.at_boundary = self.line_empty;
                    if self.at_boundary {
                        boundary = Some(i + 1);
                    }
                    self.line_empty = true;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.line_empty = false;
                    self.after_cr = false;
                    self.at_boundary = false;
                }
            }
        }
        let (complete, rest) = bytes.split_at(boundary.unwrap_or(0));
        if !complete.is_empty() {
            out.append(&mut self.pending);
            out.extend_from_slice(complete);
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > sse::MAX_EVENT_BYTES {
            let e = TranslateError::TooLarge { what: "SSE event", actual: self.pending.len(), limit: sse::MAX_EVENT_BYTES };
            out.extend(self.fail("provider_stream_error", &e.to_string()));
        }
    }

    fn fail(&mut self, code: &str, message: &str) -> Vec<u8> {
        self.failed = true;
        self.pending = Vec::new();
        crate::openai::error_event(message, "api_error", Some(code))
    }

    fn messages(&mut self, msgs: Vec<eventstream::Message>) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            if self.failed {
                break;
            }
            match m.message_type() {
                Some("exception") => {
                    let kind = m.exception_type().unwrap_or("ModelStreamError").to_owned();
                    out.extend(self.fail(&kind, &exception_message(&kind, &m.payload)));
                }
                Some("error") => {
                    let code = m.header_str(":error-code").unwrap_or("InternalStreamFailure").to_owned();
                    let text = m.header_str(":error-message").unwrap_or_default();
                    let message = format!("The SageMaker endpoint failed mid-stream ({code}): {text}");
                    out.extend(self.fail(&code, &message));
                }
                _ if m.event_type() == Some("PayloadPart") => self.pass(&m.payload, &mut out),
                _ => {}
            }
        }
        out
    }
}

/// The message of a terminal error for an exception frame: its type, `ErrorCode` when there is
/// one, and `Message` (the payload as text if it is not the modelled JSON).
fn exception_message(kind: &str, payload: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Exception {
        #[serde(rename = "Message", alias = "message", default)]
        message: Option<String>,
        #[serde(rename = "ErrorCode", default)]
        error_code: Option<String>,
    }
    let (code, text) = match serde_json::from_slice::<Exception>(payload) {
        Ok(e) => (e.error_code, e.message.unwrap_or_default()),
        Err(_) => (None, String::from_utf8_lossy(payload).into_owned()),
    };
    match code {
        Some(code) => format!("The SageMaker endpoint failed mid-stream ({kind}, {code}): {text}"),
        None => format!("The SageMaker endpoint failed mid-stream ({kind}): {text}"),
    }
}

impl StreamTranslator for PayloadStream {
    fn feed(&mut self, chunk: &[u8]) -> Result<StreamOutput, TranslateError> {
        if self.failed {
            return Ok(StreamOutput::default());
        }
        match self.decoder.feed(chunk) {
            Ok(msgs) => Ok(StreamOutput { bytes: self.messages(msgs), usage: None }),
            Err(e) => Ok(StreamOutput { bytes: self.fail("provider_stream_error", &e.to_string()), usage: None }),
        }
    }

    fn finish(&mut self) -> Result<StreamOutput, TranslateError> {
        if self.failed {
            return Ok(StreamOutput::default());
        }
        match self.decoder.finish() {
            Ok(()) => Ok(StreamOutput { bytes: std::mem::take(&mut self.pending), usage: None }),
            Err(e) => {
                // A framing error found by the last feed, or a frame cut short.
                let code = if self.decoder.error().is_some() { "provider_stream_error" } else { "provider_stream_truncated" };
                Ok(StreamOutput { bytes: self.fail(code, &e.to_string()), usage: None })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `PayloadPart` frame as SageMaker sends it: the payload is the container's bytes.
    fn part(bytes: &[u8]) -> Vec<u8> {
        eventstream::encode(
            &[(":event-type", "PayloadPart"), (":content-type", "application/octet-stream"), (":message-type", "event")],
            bytes,
        )
    }

    fn exception(kind: &str, payload: &[u8]) -> Vec<u8> {
        eventstream::encode(
            &[(":exception-type", kind), (":content-type", "application/json"), (":message-type", "exception")],
            payload,
        )
    }

    fn run(wire: &[u8], split: usize) -> Vec<u8> {
        let mut s = PayloadStream::new();
        let mut out = Vec::new();
        for piece in wire.chunks(split.max(1)) {
            out.extend(s.feed(piece).unwrap().bytes);
        }
        out.extend(s.finish().unwrap().bytes);
        out
    }

    fn error_of(out: &[u8]) -> serde_json::Value {
        let text = std::str::from_utf8(out).unwrap();
        let at = text.rfind("data: {\"error\"").unwrap();
        assert!(text.ends_with("\n\n"), "{text}");
        serde_json::from_str(text[at + "data: ".len()..].trim_end()).unwrap()
    }

    #[test]
    fn path_encodes_the_endpoint() {
        assert_eq!(invocations_path("my-endpoint", false), "/endpoints/my-endpoint/invocations");
        assert_eq!(invocations_path("a b", true), "/endpoints/a%20b/invocations-response-stream");
    }

    #[test]
    fn reassembles_parts_split_anywhere() {
        let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"héllo\"}}]}\n\ndata: [DONE]\n\n".as_bytes();
        // parts cut inside an event and inside the UTF-8 "é"
        let cut = sse.iter().position(|&b| b == 0xc3).unwrap() + 1;
        let mut wire = part(&sse[..cut]);
        wire.extend(part(&sse[cut..]));
        for split in [1, 7, 50, wire.len()] {
            assert_eq!(run(&wire, split), sse, "split {split}");
        }
    }

    #[test]
    fn the_payload_is_taken_as_is_never_unwrapped() {
        // What the decoder used to expect (a JSON {"Bytes": base64} wrapper) is, on the real
        // wire, just container output that happens to look like that: passed on unchanged.
        let wrapped = br#"{"Bytes":"ZGF0YToge30KCg=="}"#;
        assert_eq!(run(&part(wrapped), 3), wrapped);
        // Frames of other event types are skipped; an empty part is nothing.
        let mut wire = part(b"");
        wire.extend(eventstream::encode(&[(":event-type", "SomethingNew"), (":message-type", "event")], b"{}"));
        wire.extend(part(b"data: x\n\n"));
        assert_eq!(run(&wire, 5), b"data: x\n\n");
    }

    #[test]
    fn exception_frames_end_with_an_error_event() {
        for (kind, payload, expected) in [
            (
                "ModelStreamError",
                &br#"{"Message":"boom","ErrorCode":"ModelInvocationTimeExceeded"}"#[..],
                "The SageMaker endpoint failed mid-stream (ModelStreamError, ModelInvocationTimeExceeded): boom",
            ),
            ("InternalStreamFailure", br#"{"Message":"try again"}"#, "The SageMaker endpoint failed mid-stream (InternalStreamFailure): try again"),
            ("ModelStreamError", b"not json", "The SageMaker endpoint failed mid-stream (ModelStreamError): not json"),
        ] {
            let mut wire = part(b"data: {}\n\n");
            wire.extend(exception(kind, payload));
            wire.extend(part(b"data: never\n\n"));
            for split in [1, 9, wire.len()] {
                let out = run(&wire, split);
                assert!(out.starts_with(b"data: {}\n\ndata: {\"error\""), "{}", String::from_utf8_lossy(&out));
                assert!(!out.windows(5).any(|w| w == b"never"));
                let error = error_of(&out);
                assert_eq!(error["error"]["code"], kind);
                assert_eq!(error["error"]["type"], "api_error");
                assert_eq!(error["error"]["message"], expected);
            }
        }
        let wire = eventstream::encode(
            &[(":message-type", "error"), (":error-code", "InternalFailure"), (":error-message", "oops")],
            b"",
        );
        let error = error_of(&run(&wire, 4));
        assert_eq!(error["error"]["code"], "InternalFailure");
        assert_eq!(error["error"]["message"], "The SageMaker endpoint failed mid-stream (InternalFailure): oops");
    }

    #[test]
    fn an_error_inside_a_container_event_drops_its_first_half() {
        for sse in [&b"data: {\"a\":1}\n\ndata: {\"b\""[..], b"data: {\"a\":1}\r\n\r\ndata: {\"b\"", b"data: {\"a\":1}\r\rdata: {\"b\""] {
            let mut wire = part(sse);
            wire.extend(exception("ModelStreamError", br#"{"Message":"StreamBroken","ErrorCode":"StreamBroken"}"#));
            for split in [1, 4, wire.len()] {
                let out = run(&wire, split);
                let text = String::from_utf8_lossy(&out);
                let first = sse.len() - br#"data: {"b""#.len();
                assert!(out.starts_with(&sse[..first]) && out[first..].starts_with(b"data: {\"error\""), "{text}");
                assert_eq!(error_of(&out)["error"]["code"], "ModelStreamError");
            }
        }
        // Without an error the held-back bytes are passed on at the end, unchanged.
        let sse = b"data: 1\n\ndata: 2\n\ndata: tail";
        assert_eq!(run(&part(sse), 3), sse);
        // The held-back bytes are bounded.
        let mut s = PayloadStream::new();
        let big = vec![b'x'; sse::MAX_EVENT_BYTES / 2 + 1];
        s.feed(&part(&big)).unwrap();
        let out = s.feed(&part(&big)).unwrap().bytes;
        assert_eq!(error_of(&out)["error"]["code"], "provider_stream_error");
        assert!(String::from_utf8_lossy(&out).contains("too large"));
    }

    #[test]
    fn truncation_and_bad_frames_end_with_an_error_event() {
        let full = part(b"data: x\n\n");
        let mut s = PayloadStream::new();
        assert!(s.feed(&full[..full.len() - 3]).unwrap().bytes.is_empty());
        let end = s.finish().unwrap().bytes;
        assert_eq!(error_of(&end)["error"]["code"], "provider_stream_truncated");
        let mut bad = full.clone();
        bad.extend(part(b"data: y\n\n"));
        *bad.last_mut().unwrap() ^= 1;
        for split in [1, 2, bad.len()] {
            let out = run(&bad, split);
            assert!(out.starts_with(b"data: x\n\ndata: {\"error\""), "{}", String::from_utf8_lossy(&out));
            assert_eq!(error_of(&out)["error"]["code"], "provider_stream_error", "split {split}");
        }
    }
}
