//! Golden fixtures for Bedrock-format clients (`tests/fixtures/bedrock_ingress/`, see its
//! README): Converse request `request/<case>.in.json` → OpenAI pivot `<case>.out.json`;
//! OpenAI completion `response/<case>.in.json` → Converse response `<case>.out.json`; cases
//! named `err_*` must fail, their snapshot is `<case>.err.txt`.
//! Regenerate with `TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test bedrock_ingress_golden`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "anthropic_support/mod.rs"]
mod support;

use std::fs;
use std::path::PathBuf;

use serde_json::{json, Value};
use support::{cases, golden, pretty_value, report};
use tollgate_llm::{bedrock_to_openai, openai_to_bedrock, TranslateError, Usage};

const MODEL_ID: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

fn fixtures(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bedrock_ingress")
        .join(sub)
}

/// Runs `f` on every case of `dir`: success goes to `.out.json`, an error to `.err.txt`; a case
/// named `err_*` must fail and every other case must succeed.
fn run(dir: &str, f: impl Fn(&str, &[u8]) -> Result<String, TranslateError>) {
    let dir = fixtures(dir);
    let mut failures = Vec::new();
    for (case, input) in cases(&dir, ".in.json") {
        let bytes = fs::read(&input).unwrap();
        let expect_err = case.starts_with("err_");
        let (path, actual, is_err) = match f(&case, &bytes) {
            Ok(out) => (dir.join(format!("{case}.out.json")), out, false),
            Err(e) => (
                dir.join(format!("{case}.err.txt")),
                format!("{e}\nclient_fault={}\n", e.is_client_fault()),
                true,
            ),
        };
        if is_err != expect_err {
            failures.push(format!(
                "{case}: expected {}, got {actual}",
                if expect_err { "an error" } else { "success" }
            ));
            continue;
        }
        failures.extend(golden(&path, &actual).err());
    }
    report(failures);
}

/// Cases whose name ends in `_stream` are translated as `converse-stream` calls.
fn pivot(case: &str, bytes: &[u8]) -> Result<tollgate_llm::openai::ChatRequest, TranslateError> {
    bedrock_to_openai::request(bytes, MODEL_ID, case.ends_with("_stream"))
}

#[test]
fn requests() {
    run("request", |case, bytes| {
        Ok(pretty_value(&pivot(case, bytes)?))
    });
}

#[test]
fn responses() {
    run("response", |_, bytes| {
        let (body, usage) = bedrock_to_openai::response(bytes)?;
        let body: Value = serde_json::from_slice(&body).unwrap();
        Ok(pretty_value(&json!({"body": body, "usage": usage})))
    });
}

#[test]
fn unsupported_requests_name_the_converse_field() {
    let expected = [
        ("err_document", "messages[0].content[1].document"),
        ("err_video", "messages[0].content[0].video"),
        ("err_guardrail", "guardrailConfig"),
        ("err_additional_fields", "additionalModelRequestFields"),
        ("err_prompt_variables", "promptVariables"),
        (
            "err_s3_image",
            "messages[0].content[0].image.source.s3Location",
        ),
        (
            "err_tool_result_image",
            "messages[0].content[0].toolResult.content[0].image",
        ),
        ("err_system_tool", "toolConfig.tools[0].systemTool"),
        ("err_unknown_field", "somethingNew"),
    ];
    for (case, param) in expected {
        let bytes = fs::read(fixtures("request").join(format!("{case}.in.json"))).unwrap();
        let err = pivot(case, &bytes).unwrap_err();
        assert!(err.is_client_fault(), "{case}");
        assert_eq!(err.param(), Some(param), "{case}: {err}");
    }
    for case in [
        "err_not_json",
        "err_tool_use_in_user",
        "err_zero_max_tokens",
    ] {
        let bytes = fs::read(fixtures("request").join(format!("{case}.in.json"))).unwrap();
        assert!(matches!(
            pivot(case, &bytes),
            Err(TranslateError::RequestParse(_))
        ));
    }
}

#[test]
fn stream_flag_asks_for_usage() {
    let bytes = fs::read(fixtures("request/simple.in.json")).unwrap();
    let req = bedrock_to_openai::request(&bytes, MODEL_ID, true).unwrap();
    assert!(req.is_stream() && req.wants_stream_usage());
    let req = bedrock_to_openai::request(&bytes, MODEL_ID, false).unwrap();
    assert!(!req.is_stream() && req.stream_options.is_none());
    assert_eq!(req.model, MODEL_ID);
}

/// A Converse client's request survives the trip through the OpenAI pivot to a Bedrock
/// provider: `openai_to_bedrock` gives back an equivalent Converse request. Normalisations
/// (documented in the module): the fields dropped on the way in, `json` tool-result content
/// becomes its JSON text, an assistant's text blocks are joined, reasoning history is dropped,
/// a cache point on the tool list is dropped, `status` on tool results is dropped.
#[test]
fn converse_request_round_trips_through_the_pivot() {
    let dir = fixtures("request");
    for (case, path) in cases(&dir, ".in.json") {
        if case.starts_with("err_") {
            continue;
        }
        let input = fs::read(&path).unwrap();
        let pivot = pivot(&case, &input).unwrap();
        let out = openai_to_bedrock::request(&pivot).unwrap();
        let actual: Value = serde_json::from_slice(&out).unwrap();
        let mut expected: Value = serde_json::from_slice(&input).unwrap();
        let obj = expected.as_object_mut().unwrap();
        for dropped in [
            "requestMetadata",
            "performanceConfig",
            "additionalModelRequestFields",
            "additionalModelResponseFieldPaths",
        ] {
            obj.remove(dropped);
        }
        match case.as_str() {
            "tools_round_trip" => {
                let result = &mut expected["messages"][2]["content"][1]["toolResult"];
                result["content"] = json!([{"text": r#"{"time":"21:04","tz":"Asia/Tokyo"}"#}]);
                result.as_object_mut().unwrap().remove("status");
            }
            "tool_choice_named_stream" => {
                expected["toolConfig"]["tools"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }
            "inference_params" => {
                // No tools: no toolConfig (Converse refuses an empty tool list anyway).
                obj.remove("toolConfig");
            }
            "reasoning_history" => {
                expected["messages"][1]["content"] = json!([{"text": "It is 4."}]);
            }
            _ => {}
        }
        assert_eq!(actual, expected, "{case}");
    }
}

/// Exact usage from the provider's own response replaces the OpenAI-derived one, so cache
/// writes survive the pivot.
#[test]
fn exact_usage_survives_the_pivot() {
    let bytes = fs::read(fixtures("response/cache_usage.in.json")).unwrap();
    let exact = Usage {
        input: Some(20),
        output: Some(7),
        cache_read: Some(1800),
        cache_write: Some(1000),
        reasoning: None,
    };
    let (body, usage) = bedrock_to_openai::response_with_usage(&bytes, Some(&exact)).unwrap();
    assert_eq!(usage, exact);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["usage"],
        json!({"inputTokens": 20, "outputTokens": 7, "totalTokens": 2827,
               "cacheReadInputTokens": 1800, "cacheWriteInputTokens": 1000})
    );
}

/// A Bedrock client talking to a Bedrock provider through the pivot gets the provider's answer
/// back: Converse response → OpenAI → Converse response.
#[test]
fn converse_response_round_trips_through_the_pivot() {
    let provider = fixtures("../bedrock/response/tool_use.converse.json");
    let provider = fs::read(provider).unwrap();
    let (openai, usage) = openai_to_bedrock::response(&provider, "m", "chatcmpl-x", 1).unwrap();
    let (back, usage2) = bedrock_to_openai::response_with_usage(&openai, Some(&usage)).unwrap();
    assert_eq!(usage, usage2);
    let back: Value = serde_json::from_slice(&back).unwrap();
    let original: Value = serde_json::from_slice(&provider).unwrap();
    assert_eq!(back["stopReason"], original["stopReason"]);
    assert_eq!(back["usage"], original["usage"]);
    let tools = |v: &Value| {
        v["output"]["message"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b.get("toolUse").is_some())
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(tools(&back), tools(&original));
}

/// The README lists every case on disk.
#[test]
fn readme_lists_every_case() {
    let readme = fs::read_to_string(fixtures("README.md")).unwrap();
    for (dir, suffix) in [
        ("request", ".in.json"),
        ("response", ".in.json"),
        ("stream", ".sse"),
    ] {
        for (case, _) in cases(&fixtures(dir), suffix) {
            assert!(
                readme.contains(&format!("`{case}`")),
                "README.md does not list {dir}/{case}"
            );
        }
    }
}
