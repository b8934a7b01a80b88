//! Streaming fixtures for the Anthropic pairs: each `<case>.sse` is replayed whole, one byte at
//! a time and at random split points (proptest); all must give the same bytes and usage, which
//! must match `<case>.out.sse` and `<case>.usage.json`.
//! Regenerate with `TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test anthropic_stream`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod anthropic_support;

use std::fs;

use anthropic_support::{byte_by_byte, cases, fixtures, golden, pretty_value, replay, report};
use proptest::prelude::*;
use tollgate_llm::anthropic_to_openai::StreamFromOpenAi;
use tollgate_llm::openai_to_anthropic::StreamToOpenAi;
use tollgate_llm::{StreamTranslator, Usage};

/// A fresh translator for a case of `dir`.
fn translator(dir: &str, case: &str) -> Box<dyn StreamTranslator> {
    match dir {
        "openai_to_anthropic/stream" => Box::new(StreamToOpenAi::new(
            "claude-gw",
            "chatcmpl-gw-1",
            1_700_000_000,
            !case.ends_with("_no_usage"),
        )),
        _ => Box::new(StreamFromOpenAi::new("claude-gw")),
    }
}

const DIRS: [&str; 2] = ["openai_to_anthropic/stream", "anthropic_to_openai/stream"];

fn all_cases() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in DIRS {
        for (case, path) in cases(&fixtures(dir), ".sse") {
            out.push((dir, case, fs::read(path).unwrap()));
        }
    }
    out
}

fn whole(dir: &str, case: &str, input: &[u8]) -> (Vec<u8>, Option<Usage>) {
    replay(translator(dir, case).as_mut(), input, &[])
}

#[test]
fn golden_whole_and_byte_by_byte() {
    let mut failures = Vec::new();
    for (dir, case, input) in all_cases() {
        let (bytes, usage) = whole(dir, &case, &input);
        let d = fixtures(dir);
        let text = String::from_utf8(bytes.clone()).expect("output is UTF-8");
        failures.extend(golden(&d.join(format!("{case}.out.sse")), &text).err());
        failures.extend(golden(&d.join(format!("{case}.usage.json")), &pretty_value(&usage)).err());
        let (b2, u2) = byte_by_byte(translator(dir, &case).as_mut(), &input);
        if b2 != bytes || u2 != usage {
            failures.push(format!(
                "{dir}/{case}: byte-by-byte replay differs from the whole replay"
            ));
        }
    }
    report(failures);
}

fn events(bytes: &[u8]) -> Vec<(Option<String>, String)> {
    let mut d = tollgate_llm::sse::Decoder::new();
    let mut out: Vec<_> = d
        .feed(bytes)
        .unwrap()
        .into_iter()
        .map(|e| (e.event, e.data))
        .collect();
    out.extend(d.finish().unwrap().into_iter().map(|e| (e.event, e.data)));
    out
}

fn last_data(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_str(&events(bytes).last().unwrap().1).unwrap()
}

#[test]
fn openai_output_semantics() {
    let dir = "openai_to_anthropic/stream";
    let read = |case: &str| fs::read(fixtures(dir).join(format!("{case}.sse"))).unwrap();

    // Usage split across message_start and message_delta is merged, not lost.
    let (out, usage) = whole(dir, "usage_split", &read("usage_split"));
    let usage = usage.unwrap();
    assert_eq!(
        (
            usage.input,
            usage.output,
            usage.cache_read,
            usage.cache_write
        ),
        (Some(6), Some(21), Some(41203), Some(42203))
    );
    let evs = events(&out);
    let usage_chunk: serde_json::Value = serde_json::from_str(&evs[evs.len() - 2].1).unwrap();
    assert_eq!(usage_chunk["choices"], serde_json::json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 6 + 41203 + 42203);
    assert_eq!(
        usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"],
        41203
    );
    assert_eq!(evs.last().unwrap().1, "[DONE]");

    // Without include_usage: no usage chunk, but usage still reported to the gateway.
    let (out, usage) = whole(dir, "text_no_usage", &read("text_no_usage"));
    assert!(!String::from_utf8(out).unwrap().contains("\"usage\""));
    assert_eq!(usage.unwrap().output, Some(15));

    // A provider error is a terminal OpenAI error event, with no finish_reason made up.
    let mut t = StreamToOpenAi::new("m", "id", 1, true);
    let (out, _) = replay(&mut t, &read("error"), &[]);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        !text.contains("finish_reason\":\"") && !text.contains("[DONE]"),
        "{text}"
    );
    assert_eq!(last_data(&out)["error"]["code"], "overloaded_error");
    assert!(t.failure().is_some());

    // A truncated stream ends with an error event at finish.
    let mut t = StreamToOpenAi::new("m", "id", 1, true);
    let (out, usage) = replay(&mut t, &read("truncated"), &[]);
    assert_eq!(last_data(&out)["error"]["type"], "server_error");
    assert_eq!(usage.unwrap().input, Some(25));
    assert!(t.failure().is_some());
}

#[test]
fn anthropic_output_semantics() {
    let dir = "anthropic_to_openai/stream";
    let read = |case: &str| fs::read(fixtures(dir).join(format!("{case}.sse"))).unwrap();
    let names = |out: &[u8]| {
        events(out)
            .into_iter()
            .map(|(e, _)| e.unwrap_or_default())
            .collect::<Vec<_>>()
    };

    let (out, usage) = whole(dir, "tool_use", &read("tool_use"));
    assert_eq!(
        names(&out),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(usage.unwrap().input, Some(82));
    let evs = events(&out);
    let delta: serde_json::Value = serde_json::from_str(&evs[8].1).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["input_tokens"], 82);

    // Cached tokens are reported apart from input tokens, as Anthropic does.
    let (out, _) = whole(dir, "text", &read("text"));
    let evs = events(&out);
    let delta: serde_json::Value = serde_json::from_str(&evs[evs.len() - 2].1).unwrap();
    assert_eq!(delta["usage"]["input_tokens"], 1200 - 1024);
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 1024);

    // Errors: an OpenAI error event and a truncated stream end with `event: error`.
    for case in ["error", "truncated"] {
        let mut t = StreamFromOpenAi::new("m");
        let (out, _) = replay(&mut t, &read(case), &[]);
        assert_eq!(names(&out).last().unwrap(), "error", "{case}");
        assert!(t.failure().is_some());
    }
    assert_eq!(
        last_data(&whole(dir, "error", &read("error")).0)["error"]["type"],
        "overloaded_error"
    );

    // Exact usage from a provider translator replaces the OpenAI-derived one.
    let mut t = StreamFromOpenAi::new("m");
    let exact = Usage {
        input: Some(1),
        output: Some(2),
        cache_read: Some(3),
        cache_write: Some(4),
        reasoning: None,
    };
    t.set_exact_usage(Some(exact));
    let (out, usage) = replay(&mut t, &read("text"), &[]);
    assert_eq!(usage, Some(exact));
    let evs = events(&out);
    let delta: serde_json::Value = serde_json::from_str(&evs[evs.len() - 2].1).unwrap();
    assert_eq!(delta["usage"]["cache_creation_input_tokens"], 4);
}

/// An Anthropic stream translated to OpenAI and back gives the Anthropic SDK the same text,
/// tool calls, stop reason and usage.
#[test]
fn chained_anthropic_to_anthropic() {
    let input = fs::read(fixtures("openai_to_anthropic/stream").join("tool_use.sse")).unwrap();
    let mut first = StreamToOpenAi::new("m", "chatcmpl-x", 1, true);
    let (openai, usage) = replay(&mut first, &input, &[]);
    let mut second = StreamFromOpenAi::new("m");
    second.set_exact_usage(usage);
    let (back, _) = replay(&mut second, &openai, &[]);
    let text = String::from_utf8(back).unwrap();
    assert!(
        text.contains(r#""partial_json":" \"San Francisco, CA\"}""#),
        "{text}"
    );
    assert!(text.contains(r#""stop_reason":"tool_use""#));
    assert!(text.contains(r#""output_tokens":89"#));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_splits_give_the_same_output(pick in any::<prop::sample::Index>(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        let cases = all_cases();
        let (dir, case, input) = &cases[pick.index(cases.len())];
        let mut splits: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        splits.sort_unstable();
        let expected = whole(dir, case, input);
        let actual = replay(translator(dir, case).as_mut(), input, &splits);
        prop_assert_eq!(actual, expected, "{}/{} split at {:?}", dir, case, splits);
    }
}
