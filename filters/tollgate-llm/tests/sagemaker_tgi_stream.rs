//! Streaming fixtures for SageMaker TGI: each `stream/<case>.sse` is the container's SSE output.
//! It is replayed into the TGI translator whole, one byte at a time and at random split points
//! (proptest), and also the way SageMaker delivers it: wrapped in `PayloadPart` event-stream
//! frames cut at awkward places (inside SSE lines and inside UTF-8 characters: one byte per
//! part, cycling part sizes, random cuts), through `sagemaker::PayloadStream`. Every replay must
//! give exactly `<case>.out.sse` and `<case>.usage.json`.
//! Regenerate with `TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test sagemaker_tgi_stream`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod anthropic_support;

use std::fs;

use anthropic_support::{byte_by_byte, cases, fixtures_under, golden, pretty_value, replay, report};
use proptest::prelude::*;
use tollgate_llm::anthropic_to_openai::StreamFromOpenAi;
use tollgate_llm::openai_to_tgi::StreamToOpenAi;
use tollgate_llm::sagemaker::PayloadStream;
use tollgate_llm::{eventstream, Chain, StreamTranslator, Usage};

fn dir() -> std::path::PathBuf {
    fixtures_under("sagemaker_tgi", "stream")
}

/// The request's stop sequences, per case (`stop_*` cases: the request had some).
fn stop_sequences(case: &str) -> Vec<String> {
    match case {
        "stop_sequence" => vec!["\n\n".into(), "six".into()],
        "stop_no_match" => vec!["🎉!?".into(), "zz".into()],
        _ => Vec::new(),
    }
}

fn tgi(case: &str) -> StreamToOpenAi {
    StreamToOpenAi::new("my-llama", "chatcmpl-gw-1", 1_700_000_000, !case.ends_with("_no_usage"))
        .with_stop_sequences(stop_sequences(case))
}

fn sagemaker(case: &str) -> Chain<PayloadStream, StreamToOpenAi> {
    Chain { first: PayloadStream::new(), second: tgi(case) }
}

/// The container stream as SageMaker frames it (botocore's `sagemaker-runtime` service model:
/// `PayloadPart.Bytes` is the event payload): one `PayloadPart` per slice between `cuts`.
fn payload_parts(stream: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        let cut = cut.clamp(start, stream.len());
        if cut == start {
            continue;
        }
        // `PayloadPart.Bytes` is the event payload: the frame carries the slice itself.
        out.extend(eventstream::encode(
            &[(":event-type", "PayloadPart"), (":content-type", "application/octet-stream"), (":message-type", "event")],
            &stream[start..cut],
        ));
        start = cut;
    }
    out
}

/// Part boundaries of cycling sizes (as the SageMaker mock cuts them).
fn cycling_cuts(len: usize) -> Vec<usize> {
    let sizes = [7usize, 53, 3, 120, 1];
    let (mut cuts, mut pos, mut i) = (Vec::new(), 0, 0);
    while pos < len {
        pos += sizes[i % sizes.len()];
        i += 1;
        cuts.push(pos.min(len));
    }
    cuts
}

fn all_cases() -> Vec<(String, Vec<u8>)> {
    cases(&dir(), ".sse").into_iter().map(|(case, path)| (case, fs::read(path).unwrap())).collect()
}

fn whole(case: &str, input: &[u8]) -> (Vec<u8>, Option<Usage>) {
    replay(&mut tgi(case), input, &[])
}

#[test]
fn golden_whole_byte_by_byte_and_in_payload_parts() {
    let mut failures = Vec::new();
    for (case, input) in all_cases() {
        let (bytes, usage) = whole(&case, &input);
        let text = String::from_utf8(bytes.clone()).expect("output is UTF-8");
        failures.extend(golden(&dir().join(format!("{case}.out.sse")), &text).err());
        failures.extend(golden(&dir().join(format!("{case}.usage.json")), &pretty_value(&usage)).err());
        if byte_by_byte(&mut tgi(&case), &input) != (bytes.clone(), usage) {
            failures.push(format!("{case}: byte-by-byte replay differs from the whole replay"));
        }
        let every_byte: Vec<usize> = (1..input.len()).collect();
        for (layout, cuts) in [("one part", vec![]), ("one byte per part", every_byte), ("cycling parts", cycling_cuts(input.len()))] {
            let wire = payload_parts(&input, &cuts);
            if replay(&mut sagemaker(&case), &wire, &[]) != (bytes.clone(), usage) {
                failures.push(format!("{case}: {layout}, fed whole, differs"));
            }
            if byte_by_byte(&mut sagemaker(&case), &wire) != (bytes.clone(), usage) {
                failures.push(format!("{case}: {layout}, fed byte by byte, differs"));
            }
        }
    }
    report(failures);
}

fn data_events(bytes: &[u8]) -> Vec<serde_json::Value> {
    let mut d = tollgate_llm::sse::Decoder::new();
    let mut events = d.feed(bytes).unwrap();
    events.extend(d.finish().unwrap());
    events.into_iter().filter(|e| e.data != "[DONE]").map(|e| serde_json::from_str(&e.data).unwrap()).collect()
}

#[test]
fn stream_semantics() {
    let read = |case: &str| fs::read(dir().join(format!("{case}.sse"))).unwrap();
    let content = |events: &[serde_json::Value]| -> String {
        events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect()
    };

    // Text: special tokens skipped, exact usage (input_length, generated_tokens) in the usage chunk.
    let (out, usage) = whole("text", &read("text"));
    let events = data_events(&out);
    assert_eq!(content(&events), "Bonjour à vous 🎉!");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let usage_chunk = events.last().unwrap();
    assert_eq!(usage_chunk["choices"], serde_json::json!([]));
    assert_eq!((usage_chunk["usage"]["prompt_tokens"].clone(), usage_chunk["usage"]["completion_tokens"].clone()), (23.into(), 7.into()));
    assert_eq!(usage, Some(Usage { input: Some(23), output: Some(7), ..Usage::default() }));
    assert!(out.ends_with(b"data: [DONE]\n\n"));

    // Length: the last event's (non-special) token is part of the answer; no input_length (older TGI).
    let (out, usage) = whole("length_old_tgi", &read("length_old_tgi"));
    let events = data_events(&out);
    assert_eq!(content(&events), "One, two,");
    assert!(events.iter().any(|e| e["choices"][0]["finish_reason"] == "length"));
    assert_eq!(usage, Some(Usage { input: None, output: Some(4), ..Usage::default() }));

    // The stop sequence TGI stopped on is not part of the answer; text that only might have
    // started one is held back, then sent.
    let (out, _) = whole("stop_sequence", &read("stop_sequence"));
    let events = data_events(&out);
    assert_eq!(content(&events), "1, 2");
    assert!(events.iter().any(|e| e["choices"][0]["finish_reason"] == "stop"));
    let (out, _) = whole("stop_no_match", &read("stop_no_match"));
    assert_eq!(content(&data_events(&out)), "Bonjour à vous 🎉!");

    // Without include_usage there is no usage chunk, but the gateway still gets the usage.
    let (out, usage) = whole("text_no_usage", &read("text_no_usage"));
    assert!(!String::from_utf8(out).unwrap().contains("\"usage\""));
    assert_eq!(usage.unwrap().output, Some(7));

    // Errors and truncation end with one terminal error event: no finish_reason, no [DONE].
    for (case, code) in [
        ("error", "tgi_generation_error"),
        ("overloaded", "tgi_overloaded"),
        ("truncated", "provider_stream_truncated"),
        ("truncated_mid_event", "provider_stream_truncated"),
        ("malformed", "provider_stream_error"),
        ("sagemaker_exception", "ModelStreamError"),
    ] {
        let mut t = tgi(case);
        let (out, _) = replay(&mut t, &read(case), &[]);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains("[DONE]") && !text.contains("finish_reason\":\""), "{case}: {text}");
        let last = data_events(&out).pop().unwrap();
        assert_eq!(last["error"]["code"], code, "{case}");
        assert!(t.failure().is_some(), "{case}");
    }
    let (out, _) = whole("overloaded", &read("overloaded"));
    assert_eq!(data_events(&out).pop().unwrap()["error"]["type"], "rate_limit_error");
}

/// A TGI stream reaches an Anthropic client (SageMaker frames → TGI → OpenAI pivot → Messages)
/// with its text, stop reason and exact usage.
#[test]
fn chained_to_an_anthropic_client() {
    let input = fs::read(dir().join("text.sse")).unwrap();
    let wire = payload_parts(&input, &cycling_cuts(input.len()));
    let mut t = Chain { first: sagemaker("text"), second: StreamFromOpenAi::new("my-llama") };
    let (out, usage) = byte_by_byte(&mut t, &wire);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("event: message_start") && text.contains("event: message_stop"), "{text}");
    assert!(text.contains(r#""text":" 🎉""#), "{text}");
    assert!(text.contains(r#""stop_reason":"end_turn""#), "{text}");
    assert!(text.contains(r#""input_tokens":23"#) && text.contains(r#""output_tokens":7"#), "{text}");
    assert_eq!(usage.unwrap().output, Some(7));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_splits_give_the_same_output(pick in any::<prop::sample::Index>(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        let cases = all_cases();
        let (case, input) = &cases[pick.index(cases.len())];
        let mut splits: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        splits.sort_unstable();
        let expected = whole(case, input);
        prop_assert_eq!(replay(&mut tgi(case), input, &splits), expected, "{} split at {:?}", case, splits);
    }

    #[test]
    fn random_payload_parts_and_splits_give_the_same_output(
        pick in any::<prop::sample::Index>(),
        part_cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        feed_cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let cases = all_cases();
        let (case, input) = &cases[pick.index(cases.len())];
        let mut parts: Vec<usize> = part_cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        parts.sort_unstable();
        let wire = payload_parts(input, &parts);
        let mut splits: Vec<usize> = feed_cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        splits.sort_unstable();
        let expected = whole(case, input);
        prop_assert_eq!(replay(&mut sagemaker(case), &wire, &splits), expected, "{} parts {:?} feed {:?}", case, parts, splits);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), cut in 0usize..512, usage in any::<bool>()) {
        let cut = cut.min(bytes.len());
        let mut t = StreamToOpenAi::new("m", "id", 0, usage);
        t.feed(&bytes[..cut]).unwrap();
        t.feed(&bytes[cut..]).unwrap();
        t.finish().unwrap();
        t.finish().unwrap();
        t.feed(b"data:{}\n\n").unwrap();
        let _ = tollgate_llm::openai_to_tgi::response(&bytes, "m", "id", 0, &["\n".to_owned()]);
    }
}
