//! Golden fixtures for the Anthropic pairs (`tests/fixtures/anthropic/`, see its README):
//! `<case>.in.json` → `<case>.out.json` (or `<case>.err.txt` for cases named `err_*`).
//! Regenerate with `TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test anthropic_golden`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod anthropic_support;

use std::fs;

use anthropic_support::{cases, fixtures, golden, pretty, pretty_value, report};
use tollgate_llm::openai::ChatRequest;
use tollgate_llm::{anthropic_to_openai, openai_to_anthropic, TranslateError, Usage};

/// Runs `f` on every case of `dir`: success goes to `.out.json`, an error to `.err.txt`; a case
/// named `err_*` must fail and every other case must succeed.
fn run(dir: &str, f: impl Fn(&[u8]) -> Result<String, TranslateError>) {
    let dir = fixtures(dir);
    let mut failures = Vec::new();
    for (case, input) in cases(&dir, ".in.json") {
        let bytes = fs::read(&input).unwrap();
        let expect_err = case.starts_with("err_");
        let (path, actual) = match f(&bytes) {
            Ok(out) => (dir.join(format!("{case}.out.json")), out),
            Err(e) => (
                dir.join(format!("{case}.err.txt")),
                format!("{e}\nclient_fault={}\n", e.is_client_fault()),
            ),
        };
        let is_err = path.extension().is_some_and(|x| x == "txt");
        if is_err != expect_err {
            failures.push(format!(
                "{case}: expected {}, got {actual}",
                if expect_err { "an error" } else { "success" }
            ));
            continue;
        }
        if let Err(f) = golden(&path, &actual) {
            failures.push(f);
        }
    }
    report(failures);
}

fn with_usage(body: &[u8], usage: &Usage) -> String {
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    pretty_value(&serde_json::json!({"body": body, "usage": usage}))
}

#[test]
fn openai_to_anthropic_requests() {
    run("openai_to_anthropic/request", |bytes| {
        let req: ChatRequest = serde_json::from_slice(bytes)
            .map_err(|e| TranslateError::RequestParse(e.to_string()))?;
        Ok(pretty(&openai_to_anthropic::request(
            &req,
            "claude-sonnet-4-5-20250929",
        )?))
    });
}

#[test]
fn openai_to_anthropic_responses() {
    run("openai_to_anthropic/response", |bytes| {
        let (body, usage) =
            openai_to_anthropic::response(bytes, "claude-gw", "chatcmpl-gw-1", 1_700_000_000)?;
        Ok(with_usage(&body, &usage))
    });
}

#[test]
fn anthropic_to_openai_requests() {
    run("anthropic_to_openai/request", |bytes| {
        let req = anthropic_to_openai::request(bytes)?;
        Ok(pretty_value(&req))
    });
}

#[test]
fn anthropic_to_openai_responses() {
    run("anthropic_to_openai/response", |bytes| {
        let (body, usage) = anthropic_to_openai::response(bytes, "claude-gw")?;
        Ok(with_usage(&body, &usage))
    });
}

/// An Anthropic-format client's request survives the trip through the OpenAI pivot to an
/// Anthropic provider: the provider request equals the client's, up to the model name and
/// what the tables document as dropped.
#[test]
fn anthropic_request_round_trips_through_the_pivot() {
    let dir = fixtures("anthropic_to_openai/request");
    for case in [
        "simple",
        "images",
        "params",
        "cache_control",
        "tool_choice_named",
    ] {
        let input = fs::read(dir.join(format!("{case}.in.json"))).unwrap();
        let pivot = anthropic_to_openai::request(&input).unwrap();
        let out = openai_to_anthropic::request(&pivot, "claude-sonnet-4-5").unwrap();
        let mut expected: serde_json::Value = serde_json::from_slice(&input).unwrap();
        let actual: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let obj = expected.as_object_mut().unwrap();
        obj.remove("thinking"); // disabled: dropped
        if case == "cache_control" {
            // The pivot has no cache TTL; the breakpoint itself is kept.
            obj["system"][0]["cache_control"] = serde_json::json!({"type": "ephemeral"});
        }
        assert_eq!(actual, expected, "{case}");
    }
}

/// The README table lists every case on disk.
#[test]
fn readme_lists_every_case() {
    let readme = fs::read_to_string(fixtures("README.md")).unwrap();
    for dir in [
        "openai_to_anthropic/request",
        "openai_to_anthropic/response",
        "anthropic_to_openai/request",
        "anthropic_to_openai/response",
    ] {
        for (case, _) in cases(&fixtures(dir), ".in.json") {
            assert!(
                readme.contains(&format!("`{case}`")),
                "README.md does not list {dir}/{case}"
            );
        }
    }
    for dir in ["openai_to_anthropic/stream", "anthropic_to_openai/stream"] {
        for (case, _) in cases(&fixtures(dir), ".sse") {
            assert!(
                readme.contains(&format!("`{case}`")),
                "README.md does not list {dir}/{case}"
            );
        }
    }
}
