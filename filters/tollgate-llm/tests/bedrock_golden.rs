//! Golden fixtures for OpenAI → Bedrock Converse requests and Converse → OpenAI responses.
//!
//! `tests/fixtures/bedrock/request/<case>.openai.json` is translated and compared with
//! `<case>.converse.json`; `response/<case>.converse.json` with `<case>.openai.json` (the body
//! and the usage). `unsupported.json` lists requests that must fail with `Unsupported` naming a
//! parameter. `TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test bedrock_golden`
//! rewrites the expected files; review the diff.

// Test support code outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tollgate_llm::openai::ChatRequest;
use tollgate_llm::openai_to_bedrock;
use tollgate_llm::TranslateError;

const MODEL: &str = "gateway-model";
const ID: &str = "chatcmpl-golden";
const CREATED: u64 = 1_700_000_000;

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bedrock")
        .join(sub)
}

fn update() -> bool {
    std::env::var("TOLLGATE_UPDATE_GOLDEN").as_deref() == Ok("1")
}

/// The cases in `sub` whose input file ends in `suffix`, sorted, as (name, input path).
fn cases(sub: &str, suffix: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<_> = fs::read_dir(dir(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.strip_suffix(suffix)?.to_owned();
            Some((name, p))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {sub}");
    out
}

fn check_json(path: &Path, actual: &Value) {
    if update() {
        fs::write(path, serde_json::to_string_pretty(actual).unwrap() + "\n").unwrap();
        return;
    }
    let expected = fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "missing {}; run with TOLLGATE_UPDATE_GOLDEN=1",
            path.display()
        )
    });
    let expected: Value = serde_json::from_str(&expected).unwrap();
    assert_eq!(
        actual,
        &expected,
        "{} differs; actual:\n{}",
        path.display(),
        serde_json::to_string_pretty(actual).unwrap()
    );
}

#[test]
fn requests_match_golden() {
    for (name, input) in cases("request", ".openai.json") {
        let req: ChatRequest = serde_json::from_slice(&fs::read(&input).unwrap()).unwrap();
        let body = openai_to_bedrock::request(&req).unwrap_or_else(|e| panic!("{name}: {e}"));
        let actual: Value = serde_json::from_slice(&body).unwrap();
        check_json(
            &dir("request").join(format!("{name}.converse.json")),
            &actual,
        );
    }
}

#[test]
fn responses_match_golden() {
    for (name, input) in cases("response", ".converse.json") {
        let (body, usage) =
            openai_to_bedrock::response(&fs::read(&input).unwrap(), MODEL, ID, CREATED)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let actual = json!({
            "body": serde_json::from_slice::<Value>(&body).unwrap(),
            "usage": usage,
        });
        check_json(
            &dir("response").join(format!("{name}.openai.json")),
            &actual,
        );
    }
}

#[test]
fn unsupported_parameters_are_named() {
    let table: Vec<Value> =
        serde_json::from_slice(&fs::read(dir("").join("unsupported.json")).unwrap()).unwrap();
    assert!(table.len() >= 10);
    for case in table {
        let name = case["name"].as_str().unwrap();
        let req: ChatRequest = serde_json::from_value(case["request"].clone()).unwrap();
        let err = openai_to_bedrock::request(&req).expect_err(name);
        match (&err, case["param"].as_str()) {
            (TranslateError::Unsupported { param, reason }, Some(expected)) => {
                assert_eq!(param, expected, "{name}");
                assert!(!reason.is_empty(), "{name}");
                assert!(err.is_client_fault());
            }
            (TranslateError::RequestParse(message), None) => {
                let needle = case["message_contains"].as_str().unwrap();
                assert!(message.contains(needle), "{name}: {message}");
            }
            _ => panic!("{name}: unexpected error {err:?}"),
        }
    }
}

#[test]
fn response_errors_are_provider_faults() {
    let err = openai_to_bedrock::response(b"{\"output\":", MODEL, ID, CREATED).unwrap_err();
    assert!(matches!(err, TranslateError::ResponseParse(_)));
    assert!(!err.is_client_fault());
}
