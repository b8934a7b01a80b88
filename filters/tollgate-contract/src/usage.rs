//! Usage records: what the data plane reports for every attempt that reached a provider, and
//! the control plane's ledger ingests (issue 12). The data plane sends batches in a binary form
//! ([`encode_record`] frames, [`BINARY_CONTENT_TYPE`]) or JSON (`{"records": [...]}`), `POST`
//! [`crate::contract::USAGE_PATH`] on the internal listener with the data-plane token, one record
//! per attempt; ingestion is idempotent by `(request_id, attempt)`.

use serde::{Deserialize, Serialize};

/// One attempt of one request, as the provider filter saw it end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    /// Envoy's `x-request-id`: the same for every attempt of a request.
    pub request_id: String,
    /// 0 for the first attempt, then 1, 2... (retries and failovers).
    #[serde(default)]
    pub attempt: u32,
    /// When the attempt ended, Unix milliseconds.
    pub at_ms: u64,
    /// The virtual key's public id.
    pub key_id: String,
    /// The model the client asked for (the served name).
    pub model: String,
    /// `openai`, `azure`, `anthropic`, `bedrock`, `sagemaker`, `demo`.
    pub provider: String,
    /// The provider's model id (or endpoint name) this attempt called.
    pub provider_model: String,
    /// The provider's HTTP status (0: no response, e.g. a reset).
    pub status: u16,
    #[serde(default)]
    pub stream: bool,
    /// Input tokens not read from or written to a prompt cache.
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// The provider never reported usage (e.g. the client went away mid-stream): the counts are
    /// estimated from what was delivered.
    #[serde(default)]
    pub estimated: bool,
    #[serde(default)]
    pub latency_ms: u32,
    /// Time to first byte of the response, for streams.
    #[serde(default)]
    pub ttft_ms: Option<u32>,
}

/// What the data plane sends: records in a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    pub records: Vec<UsageRecord>,
}

/// The control plane's answer: how many records were new, how many it had already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageAck {
    pub accepted: u64,
    pub duplicates: u64,
    /// Records that failed the checks (each refused alone; the rest of the batch is stored).
    #[serde(default)]
    pub rejected: u64,
}

/// The content type of a batch in the binary form ([`encode_record`] frames after
/// [`BATCH_MAGIC`]): what the data plane sends, because serialising a record as JSON cost the
/// provider filter about 9,000 wasm instructions a request (the control plane also takes JSON).
pub const BINARY_CONTENT_TYPE: &str = "application/x-tollgate-usage";
/// The first bytes of a binary batch (`TGU` and the codec version).
pub const BATCH_MAGIC: &[u8; 4] = b"TGU1";

fn put_text(out: &mut Vec<u8>, s: &str) {
    let mut n = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    let s = s.get(..n).unwrap_or_default();
    out.extend_from_slice(&u16::try_from(s.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends one record as a frame: its length (u32) then its fields, in declaration order
/// (texts as u16 length and bytes; `stream`, `estimated` and whether `ttft_ms` is set in one
/// flags byte; `ttft_ms` only when set). A text longer than 65,535 bytes is cut at a character
/// boundary.
pub fn encode_record(r: &UsageRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    put_text(out, &r.request_id);
    out.extend_from_slice(&r.attempt.to_le_bytes());
    out.extend_from_slice(&r.at_ms.to_le_bytes());
    for s in [&r.key_id, &r.model, &r.provider, &r.provider_model] {
        put_text(out, s);
    }
    out.extend_from_slice(&r.status.to_le_bytes());
    out.push(u8::from(r.stream) | u8::from(r.estimated) << 1 | u8::from(r.ttft_ms.is_some()) << 2);
    for n in [r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&r.latency_ms.to_le_bytes());
    if let Some(t) = r.ttft_ms {
        out.extend_from_slice(&t.to_le_bytes());
    }
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    if let Some(head) = out.get_mut(start..start + 4) {
        head.copy_from_slice(&len.to_le_bytes());
    }
}

/// How many frames `bytes` (concatenated [`encode_record`] frames) holds; `None` when they do
/// not add up.
pub fn count_frames(mut bytes: &[u8]) -> Option<u64> {
    let mut n = 0;
    while !bytes.is_empty() {
        let len = usize::try_from(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?)).ok()?;
        bytes = bytes.get(4 + len..)?;
        n += 1;
    }
    Some(n)
}

/// A binary batch ([`BATCH_MAGIC`] then frames) as records; `None` when anything is malformed.
pub fn decode_batch(bytes: &[u8]) -> Option<UsageBatch> {
    let mut b = bytes.strip_prefix(BATCH_MAGIC.as_slice())?;
    let mut records = Vec::new();
    while !b.is_empty() {
        let len = usize::try_from(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)).ok()?;
        let mut f = b.get(4..4 + len)?;
        b = b.get(4 + len..)?;
        records.push(decode_record(&mut f).filter(|_| f.is_empty())?);
    }
    Some(UsageBatch { records })
}

fn decode_record(f: &mut &[u8]) -> Option<UsageRecord> {
    fn take<'a>(f: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (f.get(..n)?, f.get(n..)?);
        *f = rest;
        Some(head)
    }
    fn text(f: &mut &[u8]) -> Option<String> {
        let len = usize::from(u16::from_le_bytes(take(f, 2)?.try_into().ok()?));
        String::from_utf8(take(f, len)?.to_vec()).ok()
    }
    fn u64_(f: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(f, 8)?.try_into().ok()?))
    }
    fn u32_(f: &mut &[u8]) -> Option<u32> {
        Some(u32::from_le_bytes(take(f, 4)?.try_into().ok()?))
    }
    let request_id = text(f)?;
    let attempt = u32_(f)?;
    let at_ms = u64_(f)?;
    let (key_id, model, provider, provider_model) = (text(f)?, text(f)?, text(f)?, text(f)?);
    let status = u16::from_le_bytes(take(f, 2)?.try_into().ok()?);
    let flags = take(f, 1)?.first().copied()?;
    if flags & !7 != 0 {
        return None;
    }
    let (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens) = (u64_(f)?, u64_(f)?, u64_(f)?, u64_(f)?);
    let latency_ms = u32_(f)?;
    let ttft_ms = if flags & 4 != 0 { Some(u32_(f)?) } else { None };
    Some(UsageRecord {
        request_id,
        attempt,
        at_ms,
        key_id,
        model,
        provider,
        provider_model,
        status,
        stream: flags & 1 != 0,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
        estimated: flags & 2 != 0,
        latency_ms,
        ttft_ms,
    })
}

#[cfg(test)]
mod binary_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn records_round_trip(request_id in "\\PC{0,40}", attempt: u32, at_ms: u64, key_id in "[a-z_0-9]{0,30}", status: u16,
                              stream: bool, estimated: bool, tokens: [u64; 4], latency_ms: u32, ttft_ms: Option<u32>, n in 0usize..4) {
            let r = UsageRecord { request_id, attempt, at_ms, key_id, model: "m".into(), provider: "openai".into(), provider_model: "gpt".into(), status, stream,
                input_tokens: tokens[0], output_tokens: tokens[1], cache_read_tokens: tokens[2], cache_write_tokens: tokens[3], estimated, latency_ms, ttft_ms };
            let mut frames = Vec::new();
            for _ in 0..n {
                encode_record(&r, &mut frames);
            }
            prop_assert_eq!(count_frames(&frames), Some(n as u64));
            let mut body = BATCH_MAGIC.to_vec();
            body.extend_from_slice(&frames);
            prop_assert_eq!(decode_batch(&body), Some(UsageBatch { records: vec![r; n] }));
            if !frames.is_empty() {
                for cut in [1, frames.len() - 1] {
                    let mut short = BATCH_MAGIC.to_vec();
                    short.extend_from_slice(&frames[..cut]);
                    prop_assert_eq!(decode_batch(&short), None);
                }
            }
        }
    }

    #[test]
    fn a_long_text_is_cut_at_a_character() {
        let r = UsageRecord { request_id: "é".repeat(40_000), ..Default::default() };
        let mut body = BATCH_MAGIC.to_vec();
        encode_record(&r, &mut body);
        let id = &decode_batch(&body).unwrap().records[0].request_id;
        assert_eq!(id.len(), 65_534);
        assert!(r.request_id.starts_with(id.as_str()));
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(decode_batch(b"TGU2"), None);
        assert_eq!(decode_batch(b"{\"records\":[]}"), None);
        assert_eq!(decode_batch(BATCH_MAGIC), Some(UsageBatch::default()));
        assert_eq!(count_frames(&[1, 0, 0]), None);
    }
}
