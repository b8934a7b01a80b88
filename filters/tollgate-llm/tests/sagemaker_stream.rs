//! SageMaker `InvokeEndpointWithResponseStream` wire fixtures (`tests/fixtures/sagemaker/stream`):
//! each `<case>.frames.json` describes frames as SageMaker sends them (botocore's
//! `sagemaker-runtime` service model: `PayloadPart.Bytes` is the event payload, so a part's
//! frame payload is the container's raw bytes; `ModelStreamError` / `InternalStreamFailure`
//! exception frames). It is encoded into `<case>.bin` (checked in, kept in sync; the Python
//! unit test `tests/unit/test_sagemaker_fixtures.py` parses every `.bin` with botocore's own
//! event-stream parser, so these bytes are proven against AWS's client, not only against our
//! decoder). Each `.bin` is replayed through `sagemaker::PayloadStream` and the container's
//! translator (OpenAI-style: `openai_stream::UsageTap`; TGI: `openai_to_tgi::StreamToOpenAi`)
//! whole, one byte at a time and at random split points; every replay must give exactly
//! `<case>.out.sse` and `<case>.usage.json`.
//!
//! `frames.json`: `{"container": "openai" | "tgi", "include_usage": bool, "frames": [...],
//! "truncate_bytes": n?}`; a frame is `{"parts_of": "<file>", "range": [start, end|null]?,
//! "sizes": [...], "cut_inside_characters": bool}` (`PayloadPart`s of cycling sizes over that
//! slice of the container's output, also cut inside every multi-byte UTF-8 character when
//! asked), `{"part": "<text>"}` (one `PayloadPart`), `{"exception": "<:exception-type>",
//! "payload": {...}}` or `{"event": "<:event-type>", "payload": {...}}` (a JSON event frame).
//! Regenerate with `TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test sagemaker_stream`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod anthropic_support;

use std::fs;
use std::path::{Path, PathBuf};

use anthropic_support::{byte_by_byte, cases, fixtures_under, golden, pretty_value, replay, report, updating};
use proptest::prelude::*;
use serde_json::Value;
use tollgate_llm::sagemaker::PayloadStream;
use tollgate_llm::{anthropic_to_openai, eventstream, openai_stream, openai_to_tgi, Chain, StreamTranslator, Usage};

fn dir() -> PathBuf {
    fixtures_under("sagemaker", "stream")
}

fn spec(case: &str) -> Value {
    serde_json::from_slice(&fs::read(dir().join(format!("{case}.frames.json"))).unwrap()).unwrap()
}

/// The container's translator after the SageMaker unwrapper.
fn translator(spec: &Value) -> Chain<PayloadStream, Box<dyn StreamTranslator>> {
    let include_usage = spec["include_usage"].as_bool().unwrap();
    let second: Box<dyn StreamTranslator> = match spec["container"].as_str().unwrap() {
        "openai" => Box::new(openai_stream::UsageTap::new(include_usage)),
        "tgi" => Box::new(openai_to_tgi::StreamToOpenAi::new("my-llama", "chatcmpl-gw-1", 1_700_000_000, include_usage)),
        other => panic!("unknown container {other}"),
    };
    Chain { first: PayloadStream::new(), second }
}

fn part(bytes: &[u8]) -> Vec<u8> {
    eventstream::encode(
        &[(":event-type", "PayloadPart"), (":content-type", "application/octet-stream"), (":message-type", "event")],
        bytes,
    )
}

/// Slice boundaries: cycling `sizes`, plus (when asked) one inside every multi-byte character.
fn cuts(bytes: &[u8], sizes: &[usize], inside_characters: bool) -> Vec<usize> {
    let mut cuts = Vec::new();
    let (mut pos, mut i) = (0, 0);
    while pos < bytes.len() && !sizes.is_empty() {
        pos += sizes[i % sizes.len()];
        i += 1;
        cuts.push(pos.min(bytes.len()));
    }
    if inside_characters {
        cuts.extend((1..bytes.len()).filter(|&p| bytes[p] & 0xC0 == 0x80 && bytes[p - 1] & 0xC0 == 0xC0));
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// The wire bytes a fixture describes.
fn encode(spec: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in spec["frames"].as_array().unwrap() {
        if let Some(file) = frame["parts_of"].as_str() {
            let all = fs::read(dir().join(file)).unwrap();
            let start = frame["range"][0].as_u64().unwrap_or(0) as usize;
            let end = frame["range"][1].as_u64().map_or(all.len(), |e| e as usize);
            let slice = &all[start..end];
            let sizes: Vec<usize> = frame["sizes"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap() as usize).collect();
            let mut from = 0;
            for cut in cuts(slice, &sizes, frame["cut_inside_characters"].as_bool().unwrap_or(false)) {
                out.extend(part(&slice[from..cut]));
                from = cut;
            }
        } else if let Some(text) = frame["part"].as_str() {
            out.extend(part(text.as_bytes()));
        } else if let Some(kind) = frame["exception"].as_str() {
            let payload = serde_json::to_vec(&frame["payload"]).unwrap();
            out.extend(eventstream::encode(
                &[(":exception-type", kind), (":content-type", "application/json"), (":message-type", "exception")],
                &payload,
            ));
        } else if let Some(kind) = frame["event"].as_str() {
            let payload = serde_json::to_vec(&frame["payload"]).unwrap();
            out.extend(eventstream::encode(
                &[(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
                &payload,
            ));
        } else {
            panic!("unknown frame {frame}");
        }
    }
    let cut = spec["truncate_bytes"].as_u64().unwrap_or(0) as usize;
    out.truncate(out.len() - cut);
    out
}

/// Every case: its name, spec and wire bytes (`<case>.bin`, rewritten when updating).
fn all_cases() -> Vec<(String, Value, Vec<u8>)> {
    cases(&dir(), ".frames.json")
        .into_iter()
        .map(|(case, _)| {
            let spec = spec(&case);
            let bin = dir().join(format!("{case}.bin"));
            let bytes = encode(&spec);
            if updating() {
                fs::write(&bin, &bytes).unwrap();
            }
            (case, spec, bytes)
        })
        .collect()
}

fn whole(spec: &Value, wire: &[u8]) -> (Vec<u8>, Option<Usage>) {
    replay(&mut translator(spec), wire, &[])
}

#[test]
fn golden_whole_and_byte_by_byte() {
    let mut failures = Vec::new();
    for (case, spec, wire) in all_cases() {
        if fs::read(dir().join(format!("{case}.bin"))).ok().as_deref() != Some(&wire[..]) {
            failures.push(format!("{case}.bin is not what {case}.frames.json encodes to (TOLLGATE_UPDATE_GOLDEN=1)"));
        }
        let (bytes, usage) = whole(&spec, &wire);
        let text = String::from_utf8(bytes.clone()).expect("output is UTF-8");
        failures.extend(golden(&dir().join(format!("{case}.out.sse")), &text).err());
        failures.extend(golden(&dir().join(format!("{case}.usage.json")), &pretty_value(&usage)).err());
        if byte_by_byte(&mut translator(&spec), &wire) != (bytes, usage) {
            failures.push(format!("{case}: byte-by-byte replay differs from the whole replay"));
        }
    }
    report(failures);
}

fn data_events(bytes: &[u8]) -> Vec<Value> {
    let mut d = tollgate_llm::sse::Decoder::new();
    let mut events = d.feed(bytes).unwrap();
    events.extend(d.finish().unwrap());
    events.into_iter().filter(|e| e.data != "[DONE]").map(|e| serde_json::from_str(&e.data).unwrap()).collect()
}

fn content(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect()
}

fn read(case: &str) -> (Value, Vec<u8>) {
    (spec(case), fs::read(dir().join(format!("{case}.bin"))).unwrap())
}

#[test]
fn stream_semantics() {
    // OpenAI-style container: its chunks reach the client as it wrote them, usage exact.
    let (spec, wire) = read("openai_text");
    let (out, usage) = whole(&spec, &wire);
    assert_eq!(out, fs::read(dir().join("openai_text.container.sse")).unwrap());
    assert_eq!(content(&data_events(&out)), "Bonjour à vous 🎉!");
    assert_eq!(usage, Some(Usage { input: Some(12), output: Some(6), ..Usage::default() }));
    let (spec, wire) = read("openai_text_no_usage");
    let (out, usage) = whole(&spec, &wire);
    assert!(!String::from_utf8(out.clone()).unwrap().contains("\"usage\""));
    assert!(out.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(usage.unwrap().output, Some(6));
    // Unknown events are skipped.
    let (spec, wire) = read("openai_unknown_event");
    assert_eq!(whole(&spec, &wire).0, fs::read(dir().join("openai_text.container.sse")).unwrap());

    // TGI container: tokens → OpenAI chunks with the exact usage.
    let (spec, wire) = read("tgi_text");
    let (out, usage) = whole(&spec, &wire);
    assert_eq!(content(&data_events(&out)), "Bonjour à vous 🎉!");
    assert_eq!(usage, Some(Usage { input: Some(23), output: Some(7), ..Usage::default() }));

    // Exception frames and truncation: one terminal error event, nothing after, no [DONE], no
    // fabricated finish_reason.
    for (case, code, message) in [
        (
            "tgi_model_stream_error",
            "ModelStreamError",
            "The SageMaker endpoint failed mid-stream (ModelStreamError, ModelInvocationTimeExceeded): Your model did not finish sending the response in time.",
        ),
        (
            "openai_internal_stream_failure",
            "InternalStreamFailure",
            "The SageMaker endpoint failed mid-stream (InternalStreamFailure): The stream processing failed. Try your request again.",
        ),
        ("tgi_truncated", "provider_stream_truncated", ""),
    ] {
        let (spec, wire) = read(case);
        let (out, _) = whole(&spec, &wire);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains("[DONE]") && !text.contains("finish_reason\":\"") && !text.contains("never"), "{case}: {text}");
        let events = data_events(&out);
        assert!(!content(&events).is_empty(), "{case}: the parts before the error are delivered");
        let last = events.last().unwrap();
        assert_eq!(last["error"]["code"], code, "{case}");
        if !message.is_empty() {
            assert_eq!(last["error"]["message"], message, "{case}");
        }
    }
}

/// A mid-stream `ModelStreamError` reaches an Anthropic client as a terminal `event: error`.
#[test]
fn exception_reaches_an_anthropic_client_as_an_error_event() {
    let (spec, wire) = read("tgi_model_stream_error");
    let mut t = Chain { first: translator(&spec), second: anthropic_to_openai::StreamFromOpenAi::new("my-llama") };
    let (out, _) = byte_by_byte(&mut t, &wire);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("event: message_start") && text.contains(r#""text":"Bon""#), "{text}");
    assert!(text.trim_end().rsplit("\n\n").next().unwrap().starts_with("event: error"), "{text}");
    assert!(text.contains("ModelInvocationTimeExceeded") && !text.contains("message_stop"), "{text}");
}

fn at(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_splits_give_the_same_output(pick in any::<prop::sample::Index>(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16)) {
        let cases = cases(&dir(), ".frames.json");
        let (case, _) = &cases[pick.index(cases.len())];
        let spec = spec(case);
        let wire = at(&dir().join(format!("{case}.bin")));
        let mut splits: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        splits.sort_unstable();
        let expected = whole(&spec, &wire);
        prop_assert_eq!(replay(&mut translator(&spec), &wire, &splits), expected, "{} split at {:?}", case, splits);
    }
}
