//! Golden fixtures for Bedrock InvokeModel ingress (`bedrock_invoke`), under
//! `tests/fixtures/bedrock_invoke`:
//! - `request/<case>.in.json` (an Anthropic-on-Bedrock body) → the chat pivot `<case>.out.json`;
//!   `err_*` cases are other models' native bodies: not Anthropic, their family in `<case>.err.txt`;
//! - `stream/<case>.sse` (an OpenAI chunk stream) → through the Anthropic SSE translator →
//!   InvokeModelWithResponseStream frames `<case>.bin` (parsed by botocore in
//!   `tests/unit/test_bedrock_invoke_fixtures.py`), decoded in `<case>.events.json` (each
//!   chunk's `bytes` base64-decoded), replayed whole, byte by byte and at random splits.
//!
//! Regenerate with `TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test bedrock_invoke_golden`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "anthropic_support/mod.rs"]
mod support;

use std::fs;

use base64::Engine;
use proptest::prelude::*;
use serde_json::{json, Value};
use support::{byte_by_byte, cases, fixtures_under, golden, pretty_value, replay, report, updating};
use tollgate_llm::anthropic_to_openai;
use tollgate_llm::bedrock_invoke::{self, StreamFromAnthropicSse};
use tollgate_llm::eventstream::Decoder;
use tollgate_llm::Chain;

#[test]
fn requests() {
    let dir = fixtures_under("bedrock_invoke", "request");
    let mut failures = Vec::new();
    for (case, path) in cases(&dir, ".in.json") {
        let input = fs::read(&path).unwrap();
        let outcome = if case.starts_with("err_") {
            if bedrock_invoke::is_anthropic(&input) {
                Err(format!("{case}: taken for an Anthropic body"))
            } else {
                golden(&dir.join(format!("{case}.err.txt")), &format!("{}\n", bedrock_invoke::native_family(&input)))
            }
        } else if !bedrock_invoke::is_anthropic(&input) {
            Err(format!("{case}: not taken for an Anthropic body"))
        } else {
            let stream = case.contains("stream");
            match bedrock_invoke::request(&input, "claude-model", stream) {
                Ok(chat) => golden(&dir.join(format!("{case}.out.json")), &pretty_value(&chat)),
                Err(e) => Err(format!("{case}: {e}")),
            }
        };
        failures.extend(outcome.err());
    }
    report(failures);
}

fn translator() -> Chain<anthropic_to_openai::StreamFromOpenAi, StreamFromAnthropicSse> {
    Chain { first: anthropic_to_openai::StreamFromOpenAi::new("claude-model"), second: StreamFromAnthropicSse::new() }
}

fn decode(bytes: &[u8]) -> Vec<Value> {
    let mut decoder = Decoder::new();
    let messages = decoder.feed(bytes).unwrap();
    decoder.finish().unwrap();
    messages
        .iter()
        .map(|m| {
            let payload: Value = serde_json::from_slice(&m.payload).unwrap();
            match m.message_type() {
                Some("event") => {
                    assert_eq!(m.event_type(), Some("chunk"));
                    let raw = base64::engine::general_purpose::STANDARD.decode(payload["bytes"].as_str().unwrap()).unwrap();
                    json!({"chunk": serde_json::from_slice::<Value>(&raw).unwrap()})
                }
                Some("exception") => json!({"exception": m.exception_type().unwrap(), "payload": payload}),
                other => panic!("unexpected :message-type {other:?}"),
            }
        })
        .collect()
}

fn stream_cases() -> Vec<(String, Vec<u8>)> {
    cases(&fixtures_under("bedrock_invoke", "stream"), ".sse").into_iter().map(|(c, p)| (c, fs::read(p).unwrap())).collect()
}

#[test]
fn streams() {
    let dir = fixtures_under("bedrock_invoke", "stream");
    let mut failures = Vec::new();
    for (case, input) in stream_cases() {
        let (whole, _) = replay(&mut translator(), &input, &[]);
        let (bytes, _) = byte_by_byte(&mut translator(), &input);
        if bytes != whole {
            failures.push(format!("{case}: byte-by-byte replay differs"));
        }
        let bin = dir.join(format!("{case}.bin"));
        if updating() {
            fs::write(&bin, &whole).unwrap();
        } else if fs::read(&bin).ok().as_deref() != Some(&whole[..]) {
            failures.push(format!("{case}: {} differs", bin.display()));
        }
        failures.extend(golden(&dir.join(format!("{case}.events.json")), &pretty_value(&decode(&whole))).err());
    }
    report(failures);
}

#[test]
fn message_stop_carries_the_invocation_metrics() {
    let input = fs::read(fixtures_under("bedrock_invoke", "stream").join("text_then_tool.sse")).unwrap();
    let events = decode(&replay(&mut translator(), &input, &[]).0);
    let last = events.last().unwrap();
    assert_eq!(last["chunk"]["type"], "message_stop");
    assert_eq!(last["chunk"]["amazon-bedrock-invocationMetrics"], json!({"inputTokenCount": 50, "outputTokenCount": 12}));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_splits(case in 0usize..16, mut splits in proptest::collection::vec(0usize..4096, 0..24)) {
        let all = stream_cases();
        let (_, input) = &all[case % all.len()];
        splits.sort_unstable();
        let whole = replay(&mut translator(), input, &[]);
        prop_assert_eq!(replay(&mut translator(), input, &splits), whole);
    }

    /// Any bytes through the SSE → frames translator: frames or an exception, never a panic.
    #[test]
    fn frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = replay(&mut StreamFromAnthropicSse::new(), &bytes, &[]);
    }

    /// Any JSON body: classified, and translated or refused, never a panic.
    #[test]
    fn requests_never_panic(keys in proptest::collection::vec(prop_oneof![
        Just("anthropic_version"), Just("messages"), Just("max_tokens"), Just("system"), Just("stream"), Just("model"),
        Just("inputText"), Just("prompt"), Just("tools")], 0..6), vals in proptest::collection::vec(prop_oneof![
        Just(json!("bedrock-2023-05-31")), Just(json!([{"role": "user", "content": "hi"}])), Just(json!(10)),
        Just(json!(null)), Just(json!([{"role": "assistant", "content": [{"type": "tool_use"}]}])), Just(json!({}))], 0..6)) {
        let body: serde_json::Map<String, Value> = keys.iter().zip(vals).map(|(k, v)| ((*k).to_owned(), v)).collect();
        let bytes = serde_json::to_vec(&body).unwrap();
        let _ = bedrock_invoke::native_family(&bytes);
        if bedrock_invoke::is_anthropic(&bytes) {
            let _ = bedrock_invoke::request(&bytes, "m", true);
        }
    }
}
