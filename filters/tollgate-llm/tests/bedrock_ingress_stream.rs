//! Streaming fixtures for Bedrock-format clients: each `stream/<case>.sse` (an OpenAI SSE
//! stream) is translated to ConverseStream event-stream bytes, replayed whole, one byte at a
//! time and at random split points (proptest); all must give the same bytes and usage. The
//! bytes must equal `<case>.bin` (read by botocore in `tests/unit/test_bedrock_ingress_fixtures.py`),
//! and decoded with `eventstream::Decoder` they must equal `<case>.events.json`; the usage
//! must equal `<case>.usage.json`.
//! Regenerate with `TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test bedrock_ingress_stream`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "anthropic_support/mod.rs"]
mod support;

use std::fs;
use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{json, Value};
use support::{byte_by_byte, cases, golden, pretty_value, replay, report, updating};
use tollgate_llm::bedrock_to_openai::StreamFromOpenAi;
use tollgate_llm::eventstream::Decoder;
use tollgate_llm::openai_to_bedrock::StreamToOpenAi;
use tollgate_llm::Usage;

fn fixtures(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bedrock_ingress")
        .join(sub)
}

fn all_cases() -> Vec<(String, Vec<u8>)> {
    cases(&fixtures("stream"), ".sse")
        .into_iter()
        .map(|(case, path)| (case, fs::read(path).unwrap()))
        .collect()
}

fn read(case: &str) -> Vec<u8> {
    fs::read(fixtures("stream").join(format!("{case}.sse"))).unwrap()
}

fn whole(input: &[u8]) -> (Vec<u8>, Option<Usage>) {
    replay(&mut StreamFromOpenAi::new(), input, &[])
}

/// Decodes event-stream bytes into `[{"event"|"exception": type, "payload": json}]`, checking
/// the headers of every frame on the way.
fn decode(bytes: &[u8]) -> Vec<Value> {
    let mut decoder = Decoder::new();
    let messages = decoder.feed(bytes).unwrap();
    decoder.finish().unwrap();
    messages
        .iter()
        .map(|m| {
            assert_eq!(m.content_type(), Some("application/json"));
            assert_eq!(m.headers.len(), 3, "{:?}", m.headers);
            let payload: Value = serde_json::from_slice(&m.payload).unwrap();
            match m.message_type() {
                Some("event") => json!({"event": m.event_type().unwrap(), "payload": payload}),
                Some("exception") => {
                    json!({"exception": m.exception_type().unwrap(), "payload": payload})
                }
                other => panic!("unexpected :message-type {other:?}"),
            }
        })
        .collect()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e.get("event")
                .or_else(|| e.get("exception"))
                .and_then(Value::as_str)
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The `.bin` snapshot: compared byte for byte, written when updating.
fn golden_bin(case: &str, bytes: &[u8]) -> Result<(), String> {
    let path = fixtures("stream").join(format!("{case}.bin"));
    if updating() {
        fs::write(&path, bytes).unwrap();
        return Ok(());
    }
    match fs::read(&path) {
        Ok(expected) if expected == bytes => Ok(()),
        Ok(_) => Err(format!("{} differs", path.display())),
        Err(e) => Err(format!(
            "{}: {e} (run with TOLLGATE_UPDATE_GOLDEN=1 to create it)",
            path.display()
        )),
    }
}

#[test]
fn golden_whole_and_byte_by_byte() {
    let mut failures = Vec::new();
    for (case, input) in all_cases() {
        let (bytes, usage) = whole(&input);
        let d = fixtures("stream");
        let events = decode(&bytes);
        failures.extend(
            golden(
                &d.join(format!("{case}.events.json")),
                &pretty_value(&events),
            )
            .err(),
        );
        failures.extend(golden(&d.join(format!("{case}.usage.json")), &pretty_value(&usage)).err());
        failures.extend(golden_bin(&case, &bytes).err());
        let (b2, u2) = byte_by_byte(&mut StreamFromOpenAi::new(), &input);
        if b2 != bytes || u2 != usage {
            failures.push(format!(
                "{case}: byte-by-byte replay differs from the whole replay"
            ));
        }
    }
    report(failures);
}

#[test]
fn event_sequences_are_what_converse_stream_sends() {
    // Text: messageStart, deltas, contentBlockStop, messageStop, metadata; no contentBlockStart
    // for text, as Bedrock does.
    let events = decode(&whole(&read("text")).0);
    assert_eq!(
        kinds(&events),
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert_eq!(events[0]["payload"], json!({"role": "assistant"}));
    assert_eq!(
        events[1]["payload"],
        json!({"contentBlockIndex": 0, "delta": {"text": "Hello"}})
    );
    assert_eq!(events[4]["payload"], json!({"stopReason": "end_turn"}));
    // Cached tokens are kept apart from input tokens, and counted in the total.
    assert_eq!(
        events[5]["payload"],
        json!({"usage": {"inputTokens": 176, "outputTokens": 3, "totalTokens": 1203,
                          "cacheReadInputTokens": 1024}, "metrics": {"latencyMs": 0}})
    );

    // Text then a tool call: two blocks, the tool one started with its id and name.
    let events = decode(&whole(&read("text_then_tool")).0);
    assert_eq!(
        kinds(&events),
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "contentBlockStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert_eq!(
        events[4]["payload"],
        json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "call_w", "name": "get_weather"}}})
    );
    let input: String = events
        .iter()
        .filter_map(|e| e["payload"]["delta"]["toolUse"]["input"].as_str())
        .collect();
    assert_eq!(input, r#"{"location": "Lyon"}"#);
    assert_eq!(events[8]["payload"]["stopReason"], "tool_use");

    // A rate limit is a throttlingException frame; other provider errors a
    // modelStreamErrorException; both terminal.
    let events = decode(&whole(&read("throttled")).0);
    assert_eq!(kinds(&events), ["throttlingException"]);
    assert!(events[0]["payload"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Rate limit reached"));
    for case in ["error", "truncated", "bad_chunk"] {
        let mut t = StreamFromOpenAi::new();
        let events = decode(&replay(&mut t, &read(case), &[]).0);
        assert_eq!(
            kinds(&events).last().unwrap(),
            "modelStreamErrorException",
            "{case}"
        );
        assert!(
            !kinds(&events).iter().any(|k| k == "messageStop"),
            "{case}: no stop reason made up"
        );
        assert!(t.failure().is_some(), "{case}");
    }

    // A finished stream without [DONE] still ends cleanly, with the stop reason it gave.
    let events = decode(&whole(&read("no_done_after_finish")).0);
    assert_eq!(
        kinds(&events)[kinds(&events).len() - 2..],
        ["messageStop", "metadata"]
    );
    assert_eq!(
        events[events.len() - 2]["payload"]["stopReason"],
        "max_tokens"
    );
}

#[test]
fn exact_usage_and_latency_are_reported() {
    let mut t = StreamFromOpenAi::new();
    let exact = Usage {
        input: Some(1),
        output: Some(2),
        cache_read: Some(3),
        cache_write: Some(4),
        reasoning: None,
    };
    t.set_exact_usage(Some(exact));
    t.set_latency_ms(1234);
    let (out, usage) = replay(&mut t, &read("text"), &[]);
    assert_eq!(usage, Some(exact));
    let events = decode(&out);
    assert_eq!(
        events.last().unwrap()["payload"],
        json!({"usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 10,
                          "cacheReadInputTokens": 3, "cacheWriteInputTokens": 4},
               "metrics": {"latencyMs": 1234}})
    );
}

/// A Bedrock client talking to a Bedrock provider through the pivot gets the provider's
/// events back: ConverseStream → OpenAI SSE → ConverseStream, usage exact (cache writes too).
#[test]
fn chained_bedrock_to_bedrock() {
    let provider = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bedrock/stream");
    for case in ["tool_use", "usage_cache"] {
        let input = fs::read(provider.join(format!("{case}.bin"))).unwrap();
        let original = decode_lenient(&input);
        let mut first = StreamToOpenAi::new("m", "chatcmpl-x", 1, true);
        let (openai, usage) = replay(&mut first, &input, &[]);
        let mut second = StreamFromOpenAi::new();
        second.set_exact_usage(usage);
        let (back, usage2) = replay(&mut second, &openai, &[]);
        assert_eq!(usage, usage2, "{case}");
        let back = decode(&back);
        // Same tool starts, same concatenated text and tool input, same stop and usage.
        let pick = |events: &[Value], kind: &str| -> Vec<Value> {
            events
                .iter()
                .filter(|e| e["event"] == kind)
                .map(|e| e["payload"].clone())
                .collect()
        };
        let text = |events: &[Value]| -> String {
            events
                .iter()
                .filter_map(|e| e["payload"]["delta"]["text"].as_str())
                .collect()
        };
        let starts = |events: &[Value]| -> Vec<Value> {
            pick(events, "contentBlockStart")
                .into_iter()
                .map(|p| p["start"].clone())
                .collect()
        };
        assert_eq!(text(&back), text(&original), "{case}");
        assert_eq!(starts(&back), starts(&original), "{case}");
        assert_eq!(
            pick(&back, "messageStop")[0]["stopReason"],
            pick(&original, "messageStop")[0]["stopReason"]
        );
        assert_eq!(
            pick(&back, "metadata")[0]["usage"],
            pick(&original, "metadata")[0]["usage"],
            "{case}"
        );
    }
}

/// Like [`decode`], for Bedrock's own frames (which may carry extra headers or padding).
fn decode_lenient(bytes: &[u8]) -> Vec<Value> {
    let mut decoder = Decoder::new();
    decoder
        .feed(bytes)
        .unwrap()
        .iter()
        .map(|m| {
            let payload: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
            json!({"event": m.event_type(), "payload": payload})
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_splits_give_the_same_output(pick in any::<prop::sample::Index>(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        let cases = all_cases();
        let (case, input) = &cases[pick.index(cases.len())];
        let mut splits: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        splits.sort_unstable();
        let expected = whole(input);
        let actual = replay(&mut StreamFromOpenAi::new(), input, &splits);
        prop_assert_eq!(actual, expected, "{} split at {:?}", case, splits);
    }
}
