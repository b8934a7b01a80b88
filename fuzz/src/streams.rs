//! Push-based stream decoders and stream translators: never panic, the same output however the
//! input is split (the `StreamTranslator` contract), output bounded by the input.

use tollgate_llm::{
    anthropic_to_openai, bedrock_to_openai, eventstream, openai_stream, openai_to_anthropic, openai_to_bedrock,
    openai_to_tgi, sagemaker, sse, StreamTranslator, TranslateError,
};

/// Bytes a translator may put out per input byte, plus a fixed allowance for the terminal
/// events `finish` writes: the catalogue's amplification bar (≤ 100 × input).
const OUT_PER_IN: usize = 100;
const OUT_FIXED: usize = 8192;

/// Makes a fresh translator (one per replay: whole, then split).
type Make = Box<dyn Fn() -> Box<dyn StreamTranslator>>;

fn sse_all(limit: usize, chunks: &[&[u8]]) -> Result<Vec<sse::Event>, TranslateError> {
    let mut d = sse::Decoder::with_limit(limit);
    let mut out = Vec::new();
    for c in chunks {
        out.extend(d.feed(c)?);
    }
    out.extend(d.finish()?);
    Ok(out)
}

/// Selector: buffer limit (small, to reach `TooLarge`, or the default); second byte: split.
pub fn sse_decoder(data: &[u8]) {
    let (sel, rest) = crate::selector(data);
    let (seed, stream) = crate::selector(rest);
    let limit = if sel & 1 == 0 { sse::MAX_EVENT_BYTES } else { 64 };
    let whole = sse_all(limit, &[stream]);
    let split = sse_all(limit, &crate::split(seed, stream));
    if let (Ok(a), Ok(b)) = (&whole, &split) {
        assert_eq!(a, b, "SSE events depend on the split");
        // Invalid UTF-8 becomes U+FFFD (3 bytes for 1): the data is at most 3 × the stream.
        let data: usize = a.iter().map(|e| e.data.len()).sum();
        assert!(data <= 3 * stream.len(), "SSE data {data} for a stream of {}", stream.len());
    }
    if whole.is_err() != split.is_err() && limit == sse::MAX_EVENT_BYTES {
        panic!("SSE accepts the stream whole xor split: {whole:?} / {split:?}");
    }
}

fn es_all(chunks: &[&[u8]]) -> Result<Vec<eventstream::Message>, TranslateError> {
    let mut d = eventstream::Decoder::new();
    let mut out = Vec::new();
    for c in chunks {
        out.extend(d.feed(c)?);
    }
    d.finish()?;
    Ok(out)
}

/// The AWS event-stream decoder: split invariance, and every decoded message re-encodes to a
/// frame that decodes to the same message.
pub fn eventstream_decoder(data: &[u8]) {
    let (seed, stream) = crate::selector(data);
    let whole = es_all(&[stream]);
    let split = es_all(&crate::split(seed, stream));
    assert_eq!(whole.is_ok(), split.is_ok(), "event-stream accepts the stream whole xor split");
    if let (Ok(a), Ok(b)) = (&whole, &split) {
        assert_eq!(a, b, "event-stream messages depend on the split");
        for m in a {
            let frame = m.encode().expect("a decoded message re-encodes");
            let again = es_all(&[&frame]).expect("a re-encoded message decodes");
            assert_eq!(again.as_slice(), std::slice::from_ref(m), "event-stream round trip");
        }
    }
}

/// Everything a translator puts out for these chunks (feeds then finish), or its first error.
fn translate(t: &mut dyn StreamTranslator, chunks: &[&[u8]]) -> Result<Vec<u8>, TranslateError> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend(t.feed(c)?.bytes);
    }
    out.extend(t.finish()?.bytes);
    Ok(out)
}

fn check_translator(make: &dyn Fn() -> Box<dyn StreamTranslator>, seed: u8, stream: &[u8], what: &str) {
    let whole = translate(&mut *make(), &[stream]);
    let split = translate(&mut *make(), &crate::split(seed, stream));
    match (&whole, &split) {
        (Ok(a), Ok(b)) => {
            assert!(a == b, "{what}: output depends on the split:\n{}\n----\n{}", String::from_utf8_lossy(a), String::from_utf8_lossy(b));
            assert!(
                a.len() <= OUT_PER_IN * stream.len() + OUT_FIXED,
                "{what}: {} bytes out for {} in",
                a.len(),
                stream.len()
            );
        }
        (Err(_), Err(_)) => {}
        _ => panic!("{what}: accepts the stream whole xor split: {whole:?} / {split:?}"),
    }
}

/// SageMaker `PayloadPart` reassembly (B-35): split invariance; the output is the parts' bytes
/// (never more than the frames that carried them) plus, for a stream cut short or an exception
/// frame, one terminal error event.
pub fn sagemaker_payload(data: &[u8]) {
    let (seed, stream) = crate::selector(data);
    check_translator(&|| Box::new(sagemaker::PayloadStream::new()), seed, stream, "PayloadStream");
    if let Ok(out) = translate(&mut sagemaker::PayloadStream::new(), &[stream]) {
        assert!(out.len() <= stream.len() + 1024, "PayloadStream: {} bytes out of {}", out.len(), stream.len());
    }
}

/// Selector: which translator (provider stream → pivot, pivot → client stream, the usage tap,
/// SageMaker unwrapping chained before TGI); second byte: split.
pub fn stream_translator(data: &[u8]) {
    let (sel, rest) = crate::selector(data);
    let (seed, stream) = crate::selector(rest);
    let usage = sel & 0x10 != 0;
    let (make, what): (Make, &str) = match sel % 8 {
        0 => (Box::new(move || Box::new(openai_to_anthropic::StreamToOpenAi::new("m", "id", 1, usage))), "anthropic→openai"),
        1 => (Box::new(move || Box::new(openai_to_bedrock::StreamToOpenAi::new("m", "id", 1, usage))), "bedrock→openai"),
        2 => (Box::new(move || Box::new(openai_to_tgi::StreamToOpenAi::new("m", "id", 1, usage))), "tgi→openai"),
        3 => (Box::new(|| Box::new(anthropic_to_openai::StreamFromOpenAi::new("m"))), "openai→anthropic client"),
        4 => (Box::new(|| Box::new(bedrock_to_openai::StreamFromOpenAi::new())), "openai→bedrock client"),
        5 => (Box::new(move || Box::new(openai_stream::UsageTap::new(usage))), "usage tap"),
        6 => (
            Box::new(move || {
                Box::new(tollgate_llm::Chain {
                    first: sagemaker::PayloadStream::new(),
                    second: openai_to_tgi::StreamToOpenAi::new("m", "id", 1, usage)
                        .with_stop_sequences(vec!["</s>".into()]),
                })
            }),
            "sagemaker→tgi→openai",
        ),
        _ => (
            Box::new(move || {
                Box::new(tollgate_llm::Chain {
                    first: openai_to_anthropic::StreamToOpenAi::new("m", "id", 1, usage),
                    second: bedrock_to_openai::StreamFromOpenAi::new(),
                })
            }),
            "anthropic→openai→bedrock client",
        ),
    };
    check_translator(&*make, seed, stream, what);
    // A translator that passes its stream through gives it back unchanged, and reading it
    // (what the provider filter does then) finds the usage feeding it finds.
    let mut t = make();
    if t.passes_through() {
        let mut fed = make();
        let (mut read_usage, mut fed_usage, mut out, mut failed) = (None, None, Vec::new(), false);
        for piece in crate::split(seed, stream) {
            match (t.read(piece), fed.feed(piece)) {
                (Ok(u), Ok(o)) => {
                    read_usage = u.or(read_usage);
                    fed_usage = o.usage.or(fed_usage);
                    out.extend(o.bytes);
                }
                (Err(_), Err(_)) => failed = true,
                (r, f) => panic!("{what}: read and feed disagree: {r:?} / {:?}", f.map(|o| o.usage)),
            }
        }
        if !failed {
            assert!(out == stream, "{what}: a pass-through changed the stream");
            assert_eq!(read_usage, fed_usage, "{what}: read and fed usage differ");
        }
    }
}

/// The metering's `usage` lookup (`tollgate_llm::json_field`): on any JSON object serde reads,
/// the value found is the one serde keeps (the last of a repeated key, escaped spellings
/// included); on any bytes, no panic. The usage reader reads the same whole or split.
pub fn json_field(data: &[u8]) {
    let (sel, body) = crate::selector(data);
    let key = ["usage", "id", "choices"][usize::from(sel % 3)];
    let got = tollgate_llm::json_field::top_level(body, key);
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        let want = map.get(key);
        let got_value = got.and_then(|raw| serde_json::from_slice::<serde_json::Value>(raw).ok());
        assert_eq!(got_value.as_ref(), want, "top-level {key:?} of {:?}", String::from_utf8_lossy(body));
    }
    use tollgate_llm::usage_reader::{UsageFormat, UsageReader};
    let format = [UsageFormat::OpenAiChat, UsageFormat::OpenAiResponses, UsageFormat::Anthropic, UsageFormat::BedrockConverse { stream: false }]
        [usize::from(sel / 3 % 4)];
    let mut whole = UsageReader::new(format);
    let whole = whole.feed_last(body);
    let mut split = UsageReader::new(format);
    let pieces = crate::split(sel, body);
    let (last, first) = pieces.split_last().map_or((&[][..], &[][..]), |(l, f)| (*l, f));
    for p in first {
        split.feed(p);
    }
    assert_eq!(split.feed_last(last), whole, "usage read whole and split");
}
