//! Push-based Server-Sent Events decoder (the HTML "event stream" parsing rules).
//!
//! Feed it bytes as they arrive, split anywhere (inside a line, a CRLF pair or a UTF-8
//! character); it returns each event once its terminating blank line has arrived.
//!
//! - Lines end with CRLF, LF or CR; a leading UTF-8 BOM is skipped.
//! - `data:` lines are joined with `\n`; one space after the colon is removed; a line without a
//!   colon is a field with an empty value; lines starting with `:` are comments.
//! - `event:` sets the event name; `id:` and `retry:` are accepted and ignored; unknown fields
//!   are ignored. An event whose data is empty is not dispatched (as the spec says).
//! - Lines are decoded as UTF-8 once complete, invalid sequences replaced with U+FFFD.
//! - The bytes of one pending event (its unterminated line and its data so far) are bounded by
//!   [`MAX_EVENT_BYTES`]; past it, [`TranslateError::TooLarge`].
//!
//! At [`Decoder::finish`], an event whose lines are complete but whose blank line never came
//! is still delivered; a final unterminated line is discarded (it may be cut short). Whether the
//! stream as a whole was complete is for the translator to judge (e.g. Anthropic's
//! `message_stop`, OpenAI's `[DONE]`).

use crate::error::TranslateError;

/// Bound on one pending event: 1 MiB.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, if any (`None` means the default, "message").
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of the current, unterminated line.
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF starting the next one belongs to it.
    after_cr: bool,
    /// Still at the very start of the stream (a BOM may follow).
    bom_pending: Option<Vec<u8>>,
    data: String,
    has_data: bool,
    event: Option<String>,
    limit: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }

    /// A decoder with another bound on one pending event (tests use small ones).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            bom_pending: Some(Vec::new()),
            limit,
            ..Self::default()
        }
    }

    /// Nothing pending: no partial line, no event begun, past the stream's start (where a BOM
    /// may come). Bytes that end with a blank line leave the decoder idle again.
    pub fn is_idle(&self) -> bool {
        self.bom_pending.is_none() && self.line.is_empty() && !self.after_cr && !self.has_data && self.data.is_empty() && self.event.is_none()
    }

    /// Decodes `bytes`, returning every event completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, TranslateError> {
        let mut events = Vec::new();
        let mut input = bytes;
        // A UTF-8 BOM (EF BB BF) at the very start is skipped, even when split across chunks.
        if let Some(mut seen) = self.bom_pending.take() {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            while let Some((&b, tail)) = input.split_first() {
                if seen.len() < BOM.len() && BOM[seen.len()] == b {
                    seen.push(b);
                    input = tail;
                    if seen.len() == BOM.len() {
                        break;
                    }
                } else {
                    break;
                }
            }
            if seen.len() < BOM.len() {
                if input.is_empty() {
                    self.bom_pending = Some(seen);
                    return Ok(events);
                }
                // Not a BOM after all: those bytes are content.
                self.push_bytes(&seen, &mut events)?;
            }
        }
        self.push_bytes(input, &mut events)?;
        Ok(events)
    }

    /// Ends the stream: returns the last event if its lines were complete but its blank line
    /// never came. A final unterminated line is dropped.
    pub fn finish(&mut self) -> Result<Vec<Event>, TranslateError> {
        let mut events = Vec::new();
        self.line.clear();
        self.after_cr = false;
        // A stream shorter than a BOM: its bytes form an unterminated line, dropped.
        self.bom_pending = None;
        self.dispatch(&mut events);
        Ok(events)
    }

    fn push_bytes(
        &mut self,
        mut input: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), TranslateError> {
        // A LF right after a chunk-ending CR completes that CRLF; once it is consumed (or any
        // other byte comes), the pair is over: a second LF is a blank line of its own. (An
        // empty chunk leaves the state as it is.)
        if self.after_cr {
            if let Some(rest) = input.strip_prefix(b"\n") {
                input = rest;
                self.after_cr = false;
            } else if !input.is_empty() {
                self.after_cr = false;
            }
        }
        while !input.is_empty() {
            match memchr::memchr2(b'\n', b'\r', input) {
                None => {
                    self.check_bound(input.len())?;
                    self.line.extend_from_slice(input);
                    return Ok(());
                }
                Some(pos) => {
                    self.check_bound(pos)?;
                    let (line, rest) = input.split_at(pos);
                    let was_cr = rest.first() == Some(&b'\r');
                    input = rest.get(1..).unwrap_or_default();
                    if was_cr {
                        if input.is_empty() {
                            self.after_cr = true;
                        } else if input.first() == Some(&b'\n') {
                            input = input.get(1..).unwrap_or_default();
                        }
                    }
                    if self.line.is_empty() {
                        // A whole line in this chunk is read where it lies.
                        self.process_line(line, events);
                    } else {
                        // The line's buffer is kept for the next one.
                        let mut whole = std::mem::take(&mut self.line);
                        whole.extend_from_slice(line);
                        self.process_line(&whole, events);
                        whole.clear();
                        self.line = whole;
                    }
                }
            }
        }
        Ok(())
    }

    fn check_bound(&self, extra: usize) -> Result<(), TranslateError> {
        let actual = self.line.len() + self.data.len() + extra;
        if actual > self.limit {
            return Err(TranslateError::TooLarge {
                what: "SSE event",
                actual,
                limit: self.limit,
            });
        }
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], events: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line[0] == b':' {
            return;
        }
        // `from_utf8_lossy` walks its input in chunks even when it is valid: about 25 wasm
        // instructions a byte against 3 for `from_utf8`, which is tried first.
        let text = match std::str::from_utf8(line) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(line),
        };
        let (field, value) = match text.find(':') {
            Some(i) => {
                let value = &text[i + 1..];
                (&text[..i], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {} // id, retry, unknown fields
        }
    }

    fn dispatch(&mut self, events: &mut Vec<Event>) {
        let event = self.event.take().filter(|e| !e.is_empty());
        if !self.has_data {
            self.data.clear();
            return;
        }
        self.has_data = false;
        events.push(Event {
            event,
            data: std::mem::take(&mut self.data),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<Event> {
        let mut d = Decoder::new();
        let mut out = d.feed(input).unwrap();
        out.extend(d.finish().unwrap());
        out
    }

    fn ev(event: Option<&str>, data: &str) -> Event {
        Event {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn basic_events_and_line_endings() {
        for input in [
            &b"event: a\ndata: 1\n\ndata: 2\ndata: 3\n\n"[..],
            b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\ndata: 3\r\n\r\n",
            b"event: a\rdata: 1\r\rdata: 2\rdata: 3\r\r",
            b"\xEF\xBB\xBFevent: a\ndata: 1\n\n: comment\ndata:2\ndata: 3\n\n",
        ] {
            assert_eq!(
                all(input),
                vec![ev(Some("a"), "1"), ev(None, "2\n3")],
                "{input:?}"
            );
        }
    }

    #[test]
    fn spec_details() {
        // Only one leading space is removed; a bare field name has an empty value.
        assert_eq!(all(b"data:  x\n\n"), vec![ev(None, " x")]);
        assert_eq!(all(b"data\n\n"), vec![ev(None, "")]);
        // No data: not dispatched, and the event name does not leak into the next event.
        assert_eq!(all(b"event: a\n\ndata: y\n\n"), vec![ev(None, "y")]);
        assert_eq!(
            all(b"id: 1\nretry: 5\nfoo: bar\ndata: z\n\n"),
            vec![ev(None, "z")]
        );
    }

    #[test]
    fn a_crlf_split_after_its_cr_ends_before_the_next_lf() {
        // Found by the fuzzer (fuzz/corpus/sse_decoder): CR | LF | LF in three chunks took the
        // second LF as part of the CRLF too, so the blank line was lost and two events merged.
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for chunk in [&b"data: a\r"[..], b"\n", b"\n", b"data: b\n\n"] {
            out.extend(d.feed(chunk).unwrap());
        }
        assert_eq!(out, vec![ev(None, "a"), ev(None, "b")]);
        // an empty chunk between CR and LF changes nothing
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for chunk in [&b"data: a\r"[..], b"", b"\n", b"\n"] {
            out.extend(d.feed(chunk).unwrap());
        }
        assert_eq!(out, vec![ev(None, "a")]);
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let input = "event: é\r\ndata: ünïcödé 🎉\r\n\r\ndata: a\rdata: b\r\r".as_bytes();
        let expected = all(input);
        for split in 0..=input.len() {
            let mut d = Decoder::new();
            let mut out = d.feed(&input[..split]).unwrap();
            out.extend(d.feed(&input[split..]).unwrap());
            out.extend(d.finish().unwrap());
            assert_eq!(out, expected, "split at {split}");
        }
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for b in input {
            out.extend(d.feed(std::slice::from_ref(b)).unwrap());
        }
        out.extend(d.finish().unwrap());
        assert_eq!(out, expected);
    }

    #[test]
    fn finish_keeps_complete_lines_drops_partial_line() {
        assert_eq!(all(b"data: whole\n"), vec![ev(None, "whole")]);
        assert_eq!(all(b"data: whole\ndata: cut"), vec![ev(None, "whole")]);
        assert_eq!(all(b"data: cut"), vec![]);
    }

    #[test]
    fn bounded() {
        let mut d = Decoder::with_limit(16);
        assert!(d.feed(b"data: 0123456789").is_ok());
        let err = d.feed(b"abcdef").unwrap_err();
        assert!(
            matches!(err, TranslateError::TooLarge { limit: 16, .. }),
            "{err:?}"
        );
        let mut d = Decoder::with_limit(16);
        assert!(d.feed(b"data: 0123456789\n").is_ok());
        assert!(d.feed(b"data: 0123456789\n").is_err());
    }
}
