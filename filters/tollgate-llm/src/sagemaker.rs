//! Amazon SageMaker Runtime endpoints: paths and the response-stream unwrapper, shared by the
//! OpenAI-style containers and the TGI containers ([`crate::openai_to_tgi`]).
//!
//! `InvokeEndpoint` takes and returns the container's own payload (OpenAI chat JSON, or TGI's
//! generate JSON); for OpenAI containers only the path and signing differ from an OpenAI
//! provider. `InvokeEndpointWithResponseStream`
//! wraps the container's output stream in AWS event-stream frames whose `PayloadPart.Bytes`
//! carry arbitrary slices of it: one SSE event can span several parts, one part can hold several
//! events or end inside a UTF-8 character. [`PayloadStream`] unwraps the parts into the
//! container's byte stream, unchanged, so the next stage (an SSE decoder) sees exactly what the
//! container wrote.

use serde::Deserialize;

use crate::eventstream;
use crate::openai_to_bedrock::encode_path_segment;
use crate::{StreamOutput, StreamTranslator, TranslateError};

/// `/endpoints/{name}/invocations` or `/invocations-response-stream`.
pub fn invocations_path(endpoint: &str, stream: bool) -> String {
    let action = if stream { "invocations-response-stream" } else { "invocations" };
    format!("/endpoints/{}/{action}", encode_path_segment(endpoint))
}

#[derive(Default)]
pub struct PayloadStream {
    decoder: eventstream::Decoder,
    failed: bool,
}

impl PayloadStream {
    pub fn new() -> Self {
        Self::default()
    }

    fn fail(&mut self, code: &str, message: &str) -> Vec<u8> {
        self.failed = true;
        let event = serde_json::json!({"error": {"message": message, "type": "api_error", "param": null, "code": code}});
        crate::openai::sse_event(&event)
    }

    fn messages(&mut self, msgs: Vec<eventstream::Message>) -> Vec<u8> {
        #[derive(Deserialize)]
        struct PayloadPart {
            #[serde(rename = "Bytes")]
            bytes: String,
        }
        let mut out = Vec::new();
        for m in msgs {
            if self.failed {
                break;
            }
            if m.message_type() == Some("exception") {
                let kind = m.exception_type().unwrap_or("ModelStreamError").to_owned();
                let text = String::from_utf8_lossy(&m.payload).into_owned();
                out.extend(self.fail(&kind, &format!("The SageMaker endpoint failed mid-stream ({kind}): {text}")));
                break;
            }
            if m.event_type() != Some("PayloadPart") {
                continue;
            }
            match serde_json::from_slice::<PayloadPart>(&m.payload) {
                Ok(part) => {
                    use base64::Engine as _;
                    match base64::engine::general_purpose::STANDARD.decode(part.bytes.as_bytes()) {
                        Ok(bytes) => out.extend(bytes),
                        Err(_) => out.extend(self.fail("provider_stream_error", "A SageMaker payload part is not base64.")),
                    }
                }
                Err(_) => out.extend(self.fail("provider_stream_error", "A SageMaker payload part is malformed.")),
            }
        }
        out
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
            Ok(()) => Ok(StreamOutput::default()),
            Err(e) => Ok(StreamOutput { bytes: self.fail("provider_stream_truncated", &e.to_string()), usage: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn part(bytes: &[u8]) -> Vec<u8> {
        let payload = serde_json::json!({"Bytes": base64::engine::general_purpose::STANDARD.encode(bytes)}).to_string();
        eventstream::encode(
            &[(":event-type", "PayloadPart"), (":content-type", "application/json"), (":message-type", "event")],
            payload.as_bytes(),
        )
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
            let mut s = PayloadStream::new();
            let mut out = Vec::new();
            for piece in wire.chunks(split) {
                out.extend(s.feed(piece).unwrap().bytes);
            }
            out.extend(s.finish().unwrap().bytes);
            assert_eq!(out, sse, "split {split}");
        }
    }

    #[test]
    fn exception_and_truncation_end_with_an_error_event() {
        let mut wire = part(b"data: {}\n\n");
        wire.extend(eventstream::encode(
            &[(":message-type", "exception"), (":exception-type", "ModelStreamError"), (":content-type", "application/json")],
            br#"{"Message":"boom"}"#,
        ));
        let mut s = PayloadStream::new();
        let out = String::from_utf8(s.feed(&wire).unwrap().bytes).unwrap();
        assert!(out.starts_with("data: {}\n\n") && out.contains("\"error\"") && out.contains("ModelStreamError"), "{out}");
        let mut s = PayloadStream::new();
        let full = part(b"data: x\n\n");
        s.feed(&full[..full.len() - 3]).unwrap();
        let end = String::from_utf8(s.finish().unwrap().bytes).unwrap();
        assert!(end.contains("provider_stream_truncated"), "{end}");
    }
}
