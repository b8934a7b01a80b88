//! ConverseStream fixtures: each `stream/<case>.events.json` is encoded into real event-stream
//! bytes (`<case>.bin`, checked in and kept in sync), replayed through `StreamToOpenAi` whole,
//! one byte at a time and at random split points (proptest); every replay must give exactly
//! `<case>.expected.sse` and `<case>.usage.json`. `TOLLGATE_UPDATE_GOLDEN=1` rewrites them.

// Test support code outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::Value;
use tollgate_llm::eventstream;
use tollgate_llm::openai_to_bedrock::StreamToOpenAi;
use tollgate_llm::{StreamTranslator, Usage};

const MODEL: &str = "gateway-model";
const ID: &str = "chatcmpl-stream";
const CREATED: u64 = 1_700_000_000;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bedrock/stream")
}

fn update() -> bool {
    std::env::var("TOLLGATE_UPDATE_GOLDEN").as_deref() == Ok("1")
}

struct Case {
    name: String,
    include_usage: bool,
    bytes: Vec<u8>,
}

/// Encodes a fixture's frames as Bedrock sends them.
fn encode_spec(spec: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in spec["frames"].as_array().unwrap() {
        if let Some(total) = frame["raw_prelude_total"].as_u64() {
            let mut prelude = (total as u32).to_be_bytes().to_vec();
            prelude.extend_from_slice(&0u32.to_be_bytes());
            let crc = crc32fast::hash(&prelude);
            prelude.extend_from_slice(&crc.to_be_bytes());
            out.extend(prelude);
            continue;
        }
        let payload = serde_json::to_vec(&frame["payload"]).unwrap();
        let mut bytes = if let Some(event) = frame["event"].as_str() {
            eventstream::encode(
                &[
                    (":event-type", event),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                &payload,
            )
        } else {
            let exception = frame["exception"].as_str().unwrap();
            eventstream::encode(
                &[
                    (":exception-type", exception),
                    (":content-type", "application/json"),
                    (":message-type", "exception"),
                ],
                &payload,
            )
        };
        match frame["corrupt"].as_str() {
            None => {}
            Some("message_crc") => *bytes.last_mut().unwrap() ^= 0x01,
            Some("prelude_crc") => bytes[11] ^= 0x01,
            Some(other) => panic!("unknown corruption {other}"),
        }
        out.extend(bytes);
    }
    let cut = spec["truncate_bytes"].as_u64().unwrap_or(0) as usize;
    out.truncate(out.len() - cut);
    out
}

fn load_cases() -> Vec<Case> {
    let mut names: Vec<String> = fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".events.json")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 8, "stream fixtures missing");
    names
        .into_iter()
        .map(|name| {
            let spec: Value = serde_json::from_slice(
                &fs::read(dir().join(format!("{name}.events.json"))).unwrap(),
            )
            .unwrap();
            let bytes = encode_spec(&spec);
            let bin = dir().join(format!("{name}.bin"));
            if update() {
                fs::write(&bin, &bytes).unwrap();
            } else {
                let checked_in = fs::read(&bin).unwrap_or_else(|_| {
                    panic!(
                        "missing {}; run with TOLLGATE_UPDATE_GOLDEN=1",
                        bin.display()
                    )
                });
                assert_eq!(
                    checked_in, bytes,
                    "{name}.bin is out of date with {name}.events.json"
                );
            }
            Case {
                name,
                include_usage: spec["include_usage"].as_bool().unwrap_or(false),
                bytes,
            }
        })
        .collect()
}

/// Replays `bytes` cut at `cuts` (sorted, deduplicated, within the length); returns the
/// concatenated output and the usage after `finish`.
fn replay(case: &Case, cuts: &[usize]) -> (Vec<u8>, Option<Usage>) {
    let mut translator = StreamToOpenAi::new(MODEL, ID, CREATED, case.include_usage);
    let mut out = Vec::new();
    let mut start = 0;
    let mut usage = None;
    for &cut in cuts.iter().chain(std::iter::once(&case.bytes.len())) {
        let piece = translator.feed(&case.bytes[start..cut]).unwrap();
        out.extend(piece.bytes);
        usage = piece.usage;
        start = cut;
    }
    let last = translator.finish().unwrap();
    out.extend(last.bytes);
    if last.usage.is_some() || usage.is_none() {
        usage = last.usage;
    }
    (out, usage)
}

fn golden(case: &Case) -> (Vec<u8>, Option<Usage>) {
    let (out, usage) = replay(case, &[]);
    let sse = dir().join(format!("{}.expected.sse", case.name));
    let usage_path = dir().join(format!("{}.usage.json", case.name));
    if update() {
        fs::write(&sse, &out).unwrap();
        fs::write(
            &usage_path,
            serde_json::to_string_pretty(&usage).unwrap() + "\n",
        )
        .unwrap();
    }
    let expected = fs::read(&sse).unwrap_or_else(|_| {
        panic!(
            "missing {}; run with TOLLGATE_UPDATE_GOLDEN=1",
            sse.display()
        )
    });
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&expected),
        "{}: output differs from the golden file",
        case.name
    );
    let expected_usage: Option<Usage> =
        serde_json::from_slice(&fs::read(&usage_path).unwrap()).unwrap();
    assert_eq!(usage, expected_usage, "{}: usage", case.name);
    (expected, expected_usage)
}

#[test]
fn whole_and_byte_by_byte_match_golden() {
    for case in load_cases() {
        let expected = golden(&case);
        let every_byte: Vec<usize> = (1..case.bytes.len()).collect();
        assert_eq!(
            replay(&case, &every_byte),
            expected,
            "{}: byte by byte",
            case.name
        );
    }
}

/// What each fixture must show, beyond matching its golden file (so a wrong golden cannot pass).
#[test]
fn fixtures_end_as_they_should() {
    for case in load_cases() {
        let (out, usage) = replay(&case, &[]);
        let text = String::from_utf8(out).unwrap();
        let events: Vec<&str> = text.strip_suffix("\n\n").unwrap().split("\n\n").collect();
        for event in &events {
            assert!(
                event.starts_with("data: ") && !event.contains('\n'),
                "{}: bad SSE framing {event:?}",
                case.name
            );
        }
        let last = *events.last().unwrap();
        let is_error = |e: &str| {
            serde_json::from_str::<Value>(&e["data: ".len()..])
                .map(|v| v.get("error").is_some())
                .unwrap_or(false)
        };
        let ok_cases = ["text", "usage_cache", "tool_use", "unknown_events"];
        if ok_cases.contains(&case.name.as_str()) {
            assert_eq!(last, "data: [DONE]", "{}", case.name);
            assert!(usage.is_some(), "{}", case.name);
            assert!(!events.iter().any(|e| is_error(e)), "{}", case.name);
        } else {
            assert!(
                is_error(last),
                "{}: must end in an error event, got {last}",
                case.name
            );
            assert!(!text.contains("[DONE]"), "{}", case.name);
            assert_eq!(
                events.iter().filter(|e| is_error(e)).count(),
                1,
                "{}",
                case.name
            );
        }
        match case.name.as_str() {
            "usage_cache" => {
                assert_eq!(
                    usage,
                    Some(Usage {
                        input: Some(5),
                        output: Some(3),
                        cache_read: Some(1500),
                        cache_write: Some(500),
                        reasoning: None
                    })
                );
                assert!(
                    text.contains(r#""prompt_tokens":2005"#)
                        && text.contains(r#""cached_tokens":1500"#),
                    "{text}"
                );
                assert!(text.contains(r#""choices":[],"#));
            }
            "text" => {
                assert!(
                    !text.contains("usage"),
                    "usage chunk only when asked: {text}"
                );
                assert_eq!(usage.unwrap().input, Some(11));
            }
            "tool_use" => {
                assert!(text.contains(r#""tool_calls":[{"index":1,"id":"tooluse_def456","type":"function","function":{"name":"get_time","arguments":""}}]"#), "{text}");
                assert!(text.contains(r#""finish_reason":"tool_calls""#));
            }
            "exception_mid_stream" => {
                assert!(
                    last.contains("modelStreamErrorException") && !text.contains("never shown")
                );
                assert!(
                    !text.contains("finish_reason\":\""),
                    "no fabricated finish_reason: {text}"
                );
            }
            "throttled" => assert!(last.contains(r#""type":"rate_limit_error""#), "{last}"),
            "bad_crc" => assert!(
                text.contains("Good") && !text.contains("Corrupted") && last.contains("CRC")
            ),
            "oversized_frame" => assert!(last.contains("provider_stream_too_large"), "{last}"),
            "truncated" | "missing_final" => {
                assert!(last.contains("provider_stream_truncated"), "{last}")
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_split_points_give_identical_output(mut cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40)) {
        for case in load_cases() {
            let expected = replay(&case, &[]);
            let mut points: Vec<usize> = cuts.iter_mut().map(|i| i.index(case.bytes.len() + 1)).collect();
            points.sort_unstable();
            points.dedup();
            prop_assert_eq!(replay(&case, &points), expected, "{}: cuts {:?}", case.name, points);
        }
    }
}
