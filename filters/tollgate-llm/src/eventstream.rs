//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`), as used by
//! Bedrock ConverseStream and InvokeModelWithResponseStream, and SageMaker response streams.
//!
//! One message on the wire (all integers big-endian):
//!
//! ```text
//! total length (u32) | headers length (u32) | prelude CRC32 (u32, of the 8 bytes before)
//! headers (headers-length bytes) | payload | message CRC32 (u32, of every byte before it)
//! ```
//!
//! Each header is `name length (u8) | name (UTF-8) | value type (u8) | value`, with the value
//! types 0 bool true, 1 bool false, 2 byte, 3 short, 4 int, 5 long (big-endian signed),
//! 6 byte array and 7 string (u16 length then bytes), 8 timestamp (i64 milliseconds since the
//! epoch), 9 UUID (16 bytes). Both CRCs are CRC32 (IEEE 802.3, the gzip one).
//!
//! [`Decoder`] is push-based: feed it bytes split anywhere (inside the prelude included) and it
//! yields the complete messages; its buffer holds at most one message, bounded by
//! [`MAX_MESSAGE_LEN`] (a larger prelude is a [`TranslateError::TooLarge`] before any of the
//! message is buffered). After an error the decoder stays failed.

use crate::error::TranslateError;

/// Largest message accepted: 1 MiB. Bedrock events are a few hundred bytes; a larger prelude
/// is a corrupt or hostile stream.
pub const MAX_MESSAGE_LEN: usize = 1024 * 1024;

const PRELUDE_LEN: usize = 12;
/// Prelude (12) and message CRC (4).
const MIN_MESSAGE_LEN: usize = PRELUDE_LEN + 4;

/// One typed header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Vec<u8>),
    String(String),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

impl HeaderValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One decoded message: its headers in wire order and its payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Vec<u8>,
}

impl Message {
    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A string header's value (`None` if absent or not a string).
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(HeaderValue::as_str)
    }

    /// `:message-type`: `event`, `exception` or `error`.
    pub fn message_type(&self) -> Option<&str> {
        self.header_str(":message-type")
    }

    /// `:event-type` of an `event` message, e.g. `contentBlockDelta`.
    pub fn event_type(&self) -> Option<&str> {
        self.header_str(":event-type")
    }

    /// `:exception-type` of an `exception` message, e.g. `throttlingException`.
    pub fn exception_type(&self) -> Option<&str> {
        self.header_str(":exception-type")
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header_str(":content-type")
    }

    /// Encodes the message. Header names longer than 255 bytes and byte-array or string values
    /// longer than 65535 bytes cannot be framed and are an error.
    pub fn encode(&self) -> Result<Vec<u8>, TranslateError> {
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            encode_header(&mut headers, name, value)?;
        }
        Ok(frame(&headers, &self.payload))
    }
}

fn encode_header(out: &mut Vec<u8>, name: &str, value: &HeaderValue) -> Result<(), TranslateError> {
    let name_len = u8::try_from(name.len()).map_err(|_| {
        TranslateError::StreamDecode(format!("header name too long: {} bytes", name.len()))
    })?;
    out.push(name_len);
    out.extend_from_slice(name.as_bytes());
    let variable = |out: &mut Vec<u8>, kind: u8, bytes: &[u8]| -> Result<(), TranslateError> {
        let len = u16::try_from(bytes.len()).map_err(|_| {
            TranslateError::StreamDecode(format!(
                "header '{name}' value too long: {} bytes",
                bytes.len()
            ))
        })?;
        out.push(kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
        Ok(())
    };
    match value {
        HeaderValue::Bool(true) => out.push(0),
        HeaderValue::Bool(false) => out.push(1),
        HeaderValue::Byte(b) => {
            out.push(2);
            out.extend_from_slice(&b.to_be_bytes());
        }
        HeaderValue::Short(v) => {
            out.push(3);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Int(v) => {
            out.push(4);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Long(v) => {
            out.push(5);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Bytes(b) => variable(out, 6, b)?,
        HeaderValue::String(s) => variable(out, 7, s.as_bytes())?,
        HeaderValue::Timestamp(v) => {
            out.push(8);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Uuid(u) => {
            out.push(9);
            out.extend_from_slice(u);
        }
    }
    Ok(())
}

/// Frames already-encoded headers and a payload into one message.
fn frame(headers: &[u8], payload: &[u8]) -> Vec<u8> {
    let total = MIN_MESSAGE_LEN + headers.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    // Lengths beyond u32 cannot be framed; saturate (the decoder then rejects the message).
    out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(headers.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

/// Encodes one message with string headers (type 7), e.g.
/// `encode(&[(":event-type", "messageStart"), (":content-type", "application/json"),
/// (":message-type", "event")], br#"{"role":"assistant"}"#)`.
///
/// For tests, fixtures and Bedrock-compatible ingress, where the headers are our own short
/// constants: a header whose name exceeds 255 bytes or whose value exceeds 65535 bytes is left
/// out (use [`Message::encode`] to get an error instead).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::new();
    for (name, value) in headers {
        let mut one = Vec::new();
        if encode_header(&mut one, name, &HeaderValue::String((*value).to_owned())).is_ok() {
            encoded.extend_from_slice(&one);
        }
    }
    frame(&encoded, payload)
}

/// Push-based decoder: bytes in, complete messages out.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    limit: usize,
    failed: Option<TranslateError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::with_limit(MAX_MESSAGE_LEN)
    }

    /// A decoder accepting messages of at most `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            failed: None,
        }
    }

    /// Bytes received but not yet part of a complete message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds the next bytes; returns the messages they complete, in order. On a framing error
    /// (bad CRC, impossible lengths, oversized message, malformed header) the stream is
    /// unusable from there on: if this call completed messages before the error, they are
    /// returned and the error is returned by the next call; every later call (`finish`
    /// included) returns the same error. [`Decoder::error`] shows it at once.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Message>, TranslateError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.buf.extend_from_slice(bytes);
        let mut messages = Vec::new();
        let mut pos = 0;
        loop {
            match parse_one(&self.buf[pos..], self.limit) {
                Ok(Some((message, used))) => {
                    messages.push(message);
                    pos += used;
                }
                Ok(None) => {
                    self.buf.drain(..pos);
                    return Ok(messages);
                }
                Err(err) => {
                    self.failed = Some(err.clone());
                    self.buf = Vec::new();
                    return if messages.is_empty() {
                        Err(err)
                    } else {
                        Ok(messages)
                    };
                }
            }
        }
    }

    /// The framing error that ended the stream, if any.
    pub fn error(&self) -> Option<&TranslateError> {
        self.failed.as_ref()
    }

    /// End of input: an error if a partial message is left (a truncated stream).
    pub fn finish(&mut self) -> Result<(), TranslateError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(TranslateError::StreamDecode(format!(
                "event stream truncated: {} bytes of an incomplete message at the end",
                self.buf.len()
            )))
        }
    }
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Parses one message from the front of `buf`: `Ok(None)` if more bytes are needed.
fn parse_one(buf: &[u8], limit: usize) -> Result<Option<(Message, usize)>, TranslateError> {
    let (Some(total), Some(headers_len), Some(prelude_crc)) =
        (be_u32(buf, 0), be_u32(buf, 4), be_u32(buf, 8))
    else {
        return Ok(None);
    };
    let bad = |what: String| TranslateError::StreamDecode(what);
    if crc32fast::hash(&buf[..8]) != prelude_crc {
        return Err(bad("event stream prelude CRC mismatch".into()));
    }
    let total = total as usize;
    let headers_len = headers_len as usize;
    if total > limit {
        return Err(TranslateError::TooLarge {
            what: "event-stream message",
            actual: total,
            limit,
        });
    }
    if total < MIN_MESSAGE_LEN || headers_len > total - MIN_MESSAGE_LEN {
        return Err(bad(format!(
            "event stream message lengths are inconsistent (total {total}, headers {headers_len})"
        )));
    }
    let Some(message) = buf.get(..total) else {
        return Ok(None);
    };
    let body_end = total - 4;
    let expected = be_u32(message, body_end).unwrap_or_default();
    if crc32fast::hash(&message[..body_end]) != expected {
        return Err(bad("event stream message CRC mismatch".into()));
    }
    let headers = parse_headers(&message[PRELUDE_LEN..PRELUDE_LEN + headers_len])?;
    let payload = message[PRELUDE_LEN + headers_len..body_end].to_vec();
    Ok(Some((Message { headers, payload }, total)))
}

fn parse_headers(mut b: &[u8]) -> Result<Vec<(String, HeaderValue)>, TranslateError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], TranslateError> {
        if b.len() < n {
            return Err(TranslateError::StreamDecode(
                "event stream header truncated".into(),
            ));
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    fn fixed<const N: usize>(b: &mut &[u8]) -> Result<[u8; N], TranslateError> {
        let bytes = take(b, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
    let utf8 = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            TranslateError::StreamDecode("event stream header is not valid UTF-8".into())
        })
    };
    let mut headers = Vec::new();
    while !b.is_empty() {
        let [name_len] = fixed::<1>(&mut b)?;
        let name = utf8(take(&mut b, name_len as usize)?)?;
        let [kind] = fixed::<1>(&mut b)?;
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(fixed(&mut b)?)),
            3 => HeaderValue::Short(i16::from_be_bytes(fixed(&mut b)?)),
            4 => HeaderValue::Int(i32::from_be_bytes(fixed(&mut b)?)),
            5 => HeaderValue::Long(i64::from_be_bytes(fixed(&mut b)?)),
            6 | 7 => {
                let len = u16::from_be_bytes(fixed(&mut b)?) as usize;
                let bytes = take(&mut b, len)?;
                if kind == 6 {
                    HeaderValue::Bytes(bytes.to_vec())
                } else {
                    HeaderValue::String(utf8(bytes)?)
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(fixed(&mut b)?)),
            9 => HeaderValue::Uuid(fixed(&mut b)?),
            other => {
                return Err(TranslateError::StreamDecode(format!(
                    "event stream header '{name}' has unknown type {other}"
                )))
            }
        };
        headers.push((name, value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_from_the_spec_examples() {
        // `{"foo": "bar"}` with one header content-type: application/json, as encoded by an
        // independent implementation (the Elixir event_stream package's documented example).
        let bytes = encode(
            &[("content-type", "application/json")],
            br#"{"foo": "bar"}"#,
        );
        let expected: [u8; 62] = [
            0, 0, 0, 62, 0, 0, 0, 32, 64, 93, 249, 70, 12, 99, 111, 110, 116, 101, 110, 116, 45,
            116, 121, 112, 101, 7, 0, 16, 97, 112, 112, 108, 105, 99, 97, 116, 105, 111, 110, 47,
            106, 115, 111, 110, 123, 34, 102, 111, 111, 34, 58, 32, 34, 98, 97, 114, 34, 125, 111,
            162, 191, 59,
        ];
        assert_eq!(bytes, expected);
        let no_headers = encode(&[], br#"{"foo": "bar"}"#);
        assert_eq!(
            no_headers,
            [
                0, 0, 0, 30, 0, 0, 0, 0, 186, 242, 246, 138, 123, 34, 102, 111, 111, 34, 58, 32,
                34, 98, 97, 114, 34, 125, 174, 114, 88, 228
            ]
        );
    }

    #[test]
    fn round_trip_every_header_type_byte_by_byte() {
        let message = Message {
            headers: vec![
                ("t".into(), HeaderValue::Bool(true)),
                ("f".into(), HeaderValue::Bool(false)),
                ("b".into(), HeaderValue::Byte(-3)),
                ("s".into(), HeaderValue::Short(-300)),
                ("i".into(), HeaderValue::Int(70000)),
                ("l".into(), HeaderValue::Long(-1 << 40)),
                ("bytes".into(), HeaderValue::Bytes(vec![0, 1, 255])),
                (
                    ":event-type".into(),
                    HeaderValue::String("messageStart".into()),
                ),
                ("ts".into(), HeaderValue::Timestamp(1_700_000_000_000)),
                ("u".into(), HeaderValue::Uuid([7; 16])),
            ],
            payload: b"{}".to_vec(),
        };
        let bytes = message.encode().unwrap();
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for b in &bytes {
            out.extend(decoder.feed(std::slice::from_ref(b)).unwrap());
        }
        decoder.finish().unwrap();
        assert_eq!(out, vec![message.clone()]);
        assert_eq!(out[0].event_type(), Some("messageStart"));
    }

    #[test]
    fn bad_crcs_oversize_and_truncation() {
        let good = encode(&[(":message-type", "event")], b"{}");
        let mut bad_prelude = good.clone();
        bad_prelude[9] ^= 1;
        assert!(
            matches!(Decoder::new().feed(&bad_prelude), Err(TranslateError::StreamDecode(m)) if m.contains("prelude"))
        );
        let mut bad_message = good.clone();
        let last = bad_message.len() - 6;
        bad_message[last] ^= 1;
        let mut decoder = Decoder::new();
        assert!(
            matches!(decoder.feed(&bad_message), Err(TranslateError::StreamDecode(m)) if m.contains("message CRC"))
        );
        assert!(
            decoder.feed(&good).is_err(),
            "a failed decoder stays failed"
        );

        let big = encode(&[], &[b'x'; 100]);
        let mut small = Decoder::with_limit(64);
        assert!(matches!(
            small.feed(&big[..12]),
            Err(TranslateError::TooLarge {
                actual: 116,
                limit: 64,
                ..
            })
        ));

        let mut decoder = Decoder::new();
        assert!(decoder.feed(&good[..good.len() - 1]).unwrap().is_empty());
        assert!(decoder.finish().is_err());
    }
}
