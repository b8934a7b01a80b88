//! OpenAI-compatible provider stream → the same stream for an OpenAI client. The gateway always
//! asks the provider for the final usage chunk (`stream_options.include_usage`), reads usage on
//! the way, and passes the usage chunk on only if the client asked for it. When the client asked
//! for it the stream passes byte for byte; otherwise events are re-framed (`data: ...\n\n`),
//! their JSON untouched unless usage must be removed from a chunk that also carries choices (some
//! compatible providers do that).

use serde::Deserialize;
use serde_json::Value;

use crate::openai::OpenAiUsage;
use crate::{sse, StreamOutput, StreamTranslator, TranslateError, Usage};

pub struct UsageTap {
    decoder: sse::Decoder,
    client_wants_usage: bool,
    usage: Option<Usage>,
}

impl UsageTap {
    pub fn new(client_wants_usage: bool) -> Self {
        Self { decoder: sse::Decoder::new(), client_wants_usage, usage: None }
    }

    fn translate(&mut self, events: Vec<sse::Event>) -> StreamOutput {
        let mut out = Vec::new();
        for ev in events {
            if let Some(kept) = self.event(&ev.data) {
                if let Some(name) = &ev.event {
                    out.extend_from_slice(b"event: ");
                    out.extend_from_slice(name.as_bytes());
                    out.push(b'\n');
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(kept.as_bytes());
                out.extend_from_slice(b"\n\n");
            }
        }
        StreamOutput { bytes: out, usage: self.usage }
    }

    /// The data to send for one event, or `None` to drop it.
    fn event(&mut self, data: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            usage: Option<OpenAiUsage>,
            #[serde(default)]
            choices: Option<Vec<serde::de::IgnoredAny>>,
        }
        if data.trim() == "[DONE]" || chunk_usage(data).is_none() {
            return Some(data.to_owned());
        }
        let Ok(probe) = serde_json::from_str::<Probe>(data) else { return Some(data.to_owned()) };
        let Some(u) = probe.usage else { return Some(data.to_owned()) };
        self.usage = Some(Usage::from(&u));
        if probe.choices.is_none_or(|c| c.is_empty()) {
            return None;
        }
        let mut v: Value = serde_json::from_str(data).ok()?;
        if let Some(obj) = v.as_object_mut() {
            obj.remove("usage");
        }
        serde_json::to_string(&v).ok()
    }
}

impl UsageTap {
    /// The client asked for the usage chunk: nothing is changed, the events are only read for
    /// it, and the bytes go on as they came (re-framing every event cost a copy of each).
    fn read_only(&mut self, chunk: &[u8]) -> Result<StreamOutput, TranslateError> {
        self.read_chunk(chunk)?;
        Ok(StreamOutput { bytes: chunk.to_vec(), usage: self.usage })
    }

    /// Reads a chunk of the client's own stream for its usage: decoded, unless it can hold no
    /// usage (see [`can_skip`]).
    fn read_chunk(&mut self, chunk: &[u8]) -> Result<(), TranslateError> {
        if self.decoder.is_idle() && can_skip(chunk) {
            return Ok(());
        }
        let events = self.decoder.feed(chunk)?;
        self.read_events(events);
        Ok(())
    }

    fn read_events(&mut self, events: Vec<sse::Event>) {
        for ev in events {
            if let Some(u) = chunk_usage(&ev.data) {
                self.usage = Some(u);
            }
        }
    }
}

/// Whether a chunk read by an idle decoder can be passed over unread: it ends its last event
/// (a blank line), so the decoder would be idle again after it, and none of its events has a
/// usage: every `"usage"` key in it has `null` for its value (with `include_usage` every chunk
/// but the last has `"usage":null`), and no key is spelt with a `\u` escape (which could spell
/// `usage`). Decoding a 150-byte chunk and looking for its usage cost about 4,000 wasm
/// instructions; this looks at it with two SIMD searches.
fn can_skip(chunk: &[u8]) -> bool {
    let ws = |b: &&u8| matches!(**b, b' ' | b'\t' | b'\n' | b'\r');
    if !chunk.ends_with(b"\n\n") || memchr::memmem::find(chunk, b"\\u").is_some() {
        return false;
    }
    memchr::memmem::find_iter(chunk, b"\"usage\"").all(|at| {
        let mut rest = chunk.get(at + 7..).unwrap_or_default().iter().skip_while(ws);
        // Not a key (no colon): nothing to read. A key: its value must be `null`.
        rest.next() != Some(&b':') || rest.find(|b| !ws(b)) == Some(&b'n')
    })
}

/// The usage a chunk carries, found without parsing the rest of it: with `include_usage` every
/// chunk has `"usage": null` but the last.
fn chunk_usage(data: &str) -> Option<Usage> {
    let raw = crate::json_field::top_level(data.as_bytes(), "usage")?;
    serde_json::from_slice::<Option<OpenAiUsage>>(raw).ok()?.as_ref().map(Usage::from)
}

impl StreamTranslator for UsageTap {
    fn feed(&mut self, chunk: &[u8]) -> Result<StreamOutput, TranslateError> {
        if self.client_wants_usage {
            return self.read_only(chunk);
        }
        let events = self.decoder.feed(chunk)?;
        Ok(self.translate(events))
    }

    fn finish(&mut self) -> Result<StreamOutput, TranslateError> {
        let events = self.decoder.finish()?;
        if self.client_wants_usage {
            self.read_events(events);
            return Ok(StreamOutput { bytes: Vec::new(), usage: self.usage });
        }
        Ok(self.translate(events))
    }

    fn passes_through(&self) -> bool {
        self.client_wants_usage
    }

    fn read(&mut self, chunk: &[u8]) -> Result<Option<Usage>, TranslateError> {
        if !self.client_wants_usage {
            return self.feed(chunk).map(|o| o.usage);
        }
        self.read_chunk(chunk)?;
        Ok(self.usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        ": keep-alive comment\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9,\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(t: &mut UsageTap, input: &[u8], split: usize) -> StreamOutput {
        let mut out = StreamOutput::default();
        for piece in input.chunks(split.max(1)) {
            let o = t.feed(piece).unwrap();
            out.bytes.extend(o.bytes);
            out.usage = o.usage.or(out.usage);
        }
        let o = t.finish().unwrap();
        out.bytes.extend(o.bytes);
        out.usage = o.usage.or(out.usage);
        out
    }

    #[test]
    fn drops_the_usage_chunk_the_client_did_not_ask_for() {
        for split in [1, 3, 17, STREAM.len()] {
            let out = run(&mut UsageTap::new(false), STREAM.as_bytes(), split);
            let text = String::from_utf8(out.bytes).unwrap();
            assert!(!text.contains("usage"), "{text}");
            assert!(text.contains("\"Hi\""));
            assert!(text.ends_with("data: [DONE]\n\n"));
            let u = out.usage.unwrap();
            assert_eq!((u.input, u.cache_read, u.output), (Some(4), Some(3), Some(2)));
        }
    }

    #[test]
    fn read_finds_the_usage_of_a_stream_that_passes_through() {
        let mut t = UsageTap::new(true);
        assert!(t.passes_through() && !UsageTap::new(false).passes_through());
        let mut usage = None;
        for piece in STREAM.as_bytes().chunks(9) {
            usage = t.read(piece).unwrap().or(usage);
        }
        assert_eq!(usage.unwrap().prompt_tokens(), 7);
    }

    #[test]
    fn keeps_it_when_asked() {
        for split in [1, 5, STREAM.len()] {
            let out = run(&mut UsageTap::new(true), STREAM.as_bytes(), split);
            // Byte for byte, comments included.
            assert_eq!(String::from_utf8(out.bytes).unwrap(), STREAM);
            assert_eq!(out.usage.unwrap().prompt_tokens(), 7);
        }
        // Every chunk carries `"usage": null` but the last (OpenAI with include_usage).
        let nulls = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\\"usage\\\": {}\"}}],\"usage\":null}\n\n";
        let out = run(&mut UsageTap::new(true), nulls.as_bytes(), 7);
        assert_eq!(out.usage, None);
        let out = run(&mut UsageTap::new(false), nulls.as_bytes(), 7);
        assert_eq!(String::from_utf8(out.bytes).unwrap(), nulls);
    }

    #[test]
    fn chunks_that_can_hold_no_usage_are_passed_over() {
        assert!(can_skip(b"data: {\"choices\":[],\"usage\":null}\n\ndata: {\"usage\" : null}\n\n"));
        assert!(can_skip(b"data: {\"content\":\"the word \\\"usage\\\": {\"}\n\n"), "an escaped quote is no key");
        assert!(!can_skip(b"data: {\"usage\":{\"prompt_tokens\":1}}\n\n"));
        assert!(!can_skip(b"data: {\"usage\":\n {\"prompt_tokens\":1}}\n\n"));
        assert!(!can_skip(b"data: {\"usage\":null}\n"), "does not end its event");
        assert!(!can_skip(b"data: {\"\\u0075sage\":{\"prompt_tokens\":1}}\n\n"), "a key spelt with an escape");
    }

    /// Reading with chunks passed over finds what decoding every chunk finds, however the
    /// stream is cut: every chunk but the last with `"usage":null`, the usage key in the last
    /// spelt plainly or with an escape.
    #[test]
    fn passing_over_chunks_finds_the_same_usage() {
        for key in ["usage", "\\u0075sage"] {
            let mut stream = String::new();
            for i in 0..6 {
                stream.push_str(&format!("data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i}\"}}}}],\"usage\":null}}\n\n"));
            }
            stream.push_str(&format!("data: {{\"id\":\"c\",\"choices\":[],\"{key}\":{{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}}}\n\ndata: [DONE]\n\n"));
            for split in [1, 2, 7, 50, 97, 120, stream.len()] {
                let mut t = UsageTap::new(true);
                let mut usage = None;
                for piece in stream.as_bytes().chunks(split) {
                    usage = t.read(piece).unwrap().or(usage);
                }
                let u = usage.unwrap_or_else(|| panic!("{key} split {split}: no usage"));
                assert_eq!((u.input, u.output), (Some(7), Some(2)), "{key} split {split}");
            }
        }
    }

    #[test]
    fn strips_usage_from_a_chunk_with_choices() {
        let s = "data: {\"choices\":[{\"index\":0,\"delta\":{}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n";
        let out = run(&mut UsageTap::new(false), s.as_bytes(), 4);
        let text = String::from_utf8(out.bytes).unwrap();
        assert!(text.contains("choices") && !text.contains("usage"), "{text}");
        assert_eq!(out.usage.unwrap().output, Some(1));
    }
}
