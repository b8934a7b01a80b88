//! Golden fixtures for the OpenAI Responses ingress (`responses_to_openai`), under
//! `tests/fixtures/responses`:
//! - `request/<case>.in.json` → the chat pivot `<case>.out.json` (or `<case>.err.txt` for
//!   `err_*` cases: the refusal, naming the parameter);
//! - `response/<case>.in.json` (a `chat.completion`) → the Response object `<case>.out.json`;
//! - `stream/<case>.sse` (an OpenAI chunk stream) → the Responses event stream
//!   `<case>.events.sse` and the usage `<case>.usage.json`, replayed whole, one byte at a time
//!   and at random split points (proptest): all must give the same bytes and usage.
//!
//! The outputs are parsed by the `openai` SDK's types in `tests/unit/test_responses_fixtures.py`.
//! Regenerate with `TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test responses_golden`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "anthropic_support/mod.rs"]
mod support;

use std::fs;

use proptest::prelude::*;
use support::{byte_by_byte, cases, fixtures_under, golden, pretty, pretty_value, replay, report};
use tollgate_llm::responses_to_openai::{request, response, Echo, StreamFromOpenAi};
use tollgate_llm::Usage;

fn echo() -> Echo {
    request(br#"{"model":"gpt-4o-mini","input":"hi","instructions":"Be brief.","max_output_tokens":64}"#).unwrap().1
}

#[test]
fn requests() {
    let dir = fixtures_under("responses", "request");
    let mut failures = Vec::new();
    for (case, path) in cases(&dir, ".in.json") {
        let input = fs::read(&path).unwrap();
        let result = request(&input);
        let outcome = match (case.starts_with("err_"), result) {
            (false, Ok((chat, _))) => golden(&dir.join(format!("{case}.out.json")), &pretty_value(&chat)),
            (true, Err(e)) => golden(&dir.join(format!("{case}.err.txt")), &format!("{e}\n")),
            (false, Err(e)) => Err(format!("{case}: unexpected error {e}")),
            (true, Ok(_)) => Err(format!("{case}: expected an error")),
        };
        failures.extend(outcome.err());
    }
    report(failures);
}

#[test]
fn stateful_refusals_name_the_parameter() {
    for (body, param) in [
        (r#"{"model":"m","input":"x","previous_response_id":"resp_1"}"#, "previous_response_id"),
        (r#"{"model":"m","input":"x","store":true}"#, "store"),
        (r#"{"model":"m","input":"x","conversation":{"id":"c"}}"#, "conversation"),
        (r#"{"model":"m","input":"x","background":true}"#, "background"),
    ] {
        let e = request(body.as_bytes()).unwrap_err();
        assert_eq!(e.param(), Some(param), "{body}");
        assert!(e.is_client_fault());
    }
    // Explicitly stateless requests are served.
    assert!(request(br#"{"model":"m","input":"x","store":false,"previous_response_id":null}"#).is_ok());
}

#[test]
fn responses() {
    let dir = fixtures_under("responses", "response");
    let mut failures = Vec::new();
    for (case, path) in cases(&dir, ".in.json") {
        let input = fs::read(&path).unwrap();
        match response(&input, "resp_req1", 1_700_000_000, "gpt-4o-mini", &echo()) {
            Ok((out, usage)) => {
                let usage = pretty_value(&usage);
                failures.extend(golden(&dir.join(format!("{case}.out.json")), &(pretty(&out))).err());
                failures.extend(golden(&dir.join(format!("{case}.usage.json")), &usage).err());
            }
            Err(e) => failures.push(format!("{case}: {e}")),
        }
    }
    report(failures);
}

fn translator() -> StreamFromOpenAi {
    StreamFromOpenAi::new("resp_req1", "gpt-4o-mini", 1_700_000_000, echo())
}

fn stream_cases() -> Vec<(String, Vec<u8>)> {
    cases(&fixtures_under("responses", "stream"), ".sse").into_iter().map(|(c, p)| (c, fs::read(p).unwrap())).collect()
}

#[test]
fn streams_whole_and_byte_by_byte() {
    let dir = fixtures_under("responses", "stream");
    let mut failures = Vec::new();
    for (case, input) in stream_cases() {
        let (whole, usage) = replay(&mut translator(), &input, &[]);
        let (bytes, byte_usage) = byte_by_byte(&mut translator(), &input);
        if bytes != whole || byte_usage != usage {
            failures.push(format!("{case}: byte-by-byte replay differs"));
        }
        failures.extend(golden(&dir.join(format!("{case}.events.sse")), &String::from_utf8(whole.clone()).unwrap()).err());
        failures.extend(golden(&dir.join(format!("{case}.usage.json")), &pretty_value(&usage)).err());
        // Sequence numbers count every event from 0, in order.
        let seqs: Vec<u64> = String::from_utf8(whole)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap()["sequence_number"].as_u64().unwrap())
            .collect();
        if seqs != (0..seqs.len() as u64).collect::<Vec<_>>() {
            failures.push(format!("{case}: sequence numbers {seqs:?}"));
        }
    }
    report(failures);
}

#[test]
fn text_then_tool_usage_keeps_cached_tokens() {
    let input = fs::read(fixtures_under("responses", "stream").join("text_then_tool.sse")).unwrap();
    let (out, usage) = replay(&mut translator(), &input, &[]);
    assert_eq!(usage, Some(Usage { input: Some(18), output: Some(12), cache_read: Some(32), cache_write: None, reasoning: None }));
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""input_tokens_details":{"cache_write_tokens":0,"cached_tokens":32}"#), "{text}");
    assert!(text.contains("event: response.function_call_arguments.done"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random split points give the same bytes and usage as one whole feed.
    #[test]
    fn random_splits(case in 0usize..16, mut splits in proptest::collection::vec(0usize..4096, 0..24)) {
        let all = stream_cases();
        let (_, input) = &all[case % all.len()];
        splits.sort_unstable();
        let whole = replay(&mut translator(), input, &[]);
        prop_assert_eq!(replay(&mut translator(), input, &splits), whole);
    }

    /// Any JSON body gives a pivot request or an error, never a panic.
    #[test]
    fn requests_never_panic(body in any_json()) {
        let _ = request(body.to_string().as_bytes());
    }

    /// Any byte string fed to the stream translator gives events or an error event, never a panic.
    #[test]
    fn streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), prefix in 0usize..3) {
        let heads: [&[u8]; 3] = [b"", b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n", b"data: "];
        let input = [heads[prefix], &bytes].concat();
        let _ = replay(&mut translator(), &input, &[]);
    }

    /// Any completion-shaped JSON gives a Response or an error, never a panic.
    #[test]
    fn responses_never_panic(body in any_json()) {
        let _ = response(body.to_string().as_bytes(), "resp_x", 0, "m", &Echo::default());
    }
}

/// JSON values shaped like Responses requests (and completions) often enough to reach deep.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just("message"), Just("function_call"), Just("function_call_output"), Just("input_text"),
            Just("input_image"), Just("user"), Just("assistant"), Just("function"), Just("auto"), Just("x")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("model"), Just("input"), Just("type"), Just("role"), Just("content"), Just("text"), Just("call_id"),
            Just("name"), Just("arguments"), Just("output"), Just("tools"), Just("tool_choice"), Just("image_url"),
            Just("choices"), Just("message"), Just("instructions"), Just("stream"), Just("format"), Just("usage")
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(keys.prop_map(str::to_owned), inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
