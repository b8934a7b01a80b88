//! Golden fixtures for OpenAI → SageMaker TGI (`tests/fixtures/sagemaker_tgi/`, see its
//! README): every `request/<case>.in.json` is rendered with each prompt template into
//! `<case>.<template>.out.json` (or `.err.txt`); `response/<case>.in.json` → `<case>.out.json`.
//! Regenerate with `TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test sagemaker_tgi_golden`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod anthropic_support;

use std::fs;

use anthropic_support::{cases, fixtures_under, golden, pretty, pretty_value, report};
use tollgate_llm::openai::ChatRequest;
use tollgate_llm::openai_to_tgi::{self, PromptTemplate};
use tollgate_llm::TranslateError;

const ROOT: &str = "sagemaker_tgi";

const TEMPLATES: [(&str, PromptTemplate); 4] = [
    ("llama3", PromptTemplate::Llama3),
    ("chatml", PromptTemplate::Chatml),
    ("mistral", PromptTemplate::Mistral),
    ("plain", PromptTemplate::Plain),
];

/// Non-`err_*` cases that a template must refuse (its own conversation rules).
const TEMPLATE_FAILURES: &[(&str, &str)] = &[
    ("assistant_last", "mistral"),
    ("control_tokens", "llama3"),
    ("control_tokens", "chatml"),
    ("control_tokens", "mistral"),
];

fn error_text(e: &TranslateError) -> String {
    format!("{e}\nclient_fault={}\nparam={:?}\n", e.is_client_fault(), e.param())
}

#[test]
fn requests_for_each_template() {
    let dir = fixtures_under(ROOT, "request");
    let mut failures = Vec::new();
    for (case, input) in cases(&dir, ".in.json") {
        let bytes = fs::read(&input).unwrap();
        for (name, template) in TEMPLATES {
            let expect_err = case.starts_with("err_") || TEMPLATE_FAILURES.contains(&(case.as_str(), name));
            let result = serde_json::from_slice::<ChatRequest>(&bytes)
                .map_err(|e| TranslateError::RequestParse(e.to_string()))
                .and_then(|req| openai_to_tgi::request(&req, template));
            let (path, actual, is_err) = match result {
                Ok(out) => (dir.join(format!("{case}.{name}.out.json")), pretty(&out), false),
                Err(e) => (dir.join(format!("{case}.{name}.err.txt")), error_text(&e), true),
            };
            if is_err != expect_err {
                failures.push(format!("{case} with {name}: expected {}, got {actual}", if expect_err { "an error" } else { "success" }));
                continue;
            }
            failures.extend(golden(&path, &actual).err());
        }
    }
    report(failures);
}

#[test]
fn responses() {
    let dir = fixtures_under(ROOT, "response");
    let mut failures = Vec::new();
    for (case, input) in cases(&dir, ".in.json") {
        let bytes = fs::read(&input).unwrap();
        // Every case is translated as if the request had these stop sequences.
        let stop = ["\n\n".to_owned(), "six".to_owned()];
        let (path, actual, is_err) = match openai_to_tgi::response(&bytes, "my-llama", "chatcmpl-gw-1", 1_700_000_000, &stop) {
            Ok((body, usage)) => {
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                (dir.join(format!("{case}.out.json")), pretty_value(&serde_json::json!({"body": body, "usage": usage})), false)
            }
            Err(e) => (dir.join(format!("{case}.err.txt")), error_text(&e), true),
        };
        if is_err != case.starts_with("err_") {
            failures.push(format!("{case}: unexpected {actual}"));
            continue;
        }
        failures.extend(golden(&path, &actual).err());
    }
    report(failures);
}

/// What the request goldens show, asserted so a regenerated snapshot cannot quietly change it.
#[test]
fn request_semantics() {
    let read = |case: &str| -> ChatRequest {
        serde_json::from_slice(&fs::read(fixtures_under(ROOT, "request").join(format!("{case}.in.json"))).unwrap()).unwrap()
    };
    let body = |case: &str, t: PromptTemplate| -> serde_json::Value {
        serde_json::from_slice(&openai_to_tgi::request(&read(case), t).unwrap()).unwrap()
    };
    let simple = body("simple", PromptTemplate::Llama3);
    assert_eq!(
        simple["inputs"],
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    let p = &simple["parameters"];
    assert_eq!((p["details"].clone(), p["decoder_input_details"].clone(), p["return_full_text"].clone()), (true.into(), true.into(), false.into()));
    assert!(simple.get("stream").is_none());
    // temperature 0 is greedy; TGI refuses temperature 0 and top_p 1
    let greedy = body("greedy", PromptTemplate::Chatml);
    assert_eq!(greedy["parameters"]["do_sample"], false);
    assert_eq!(greedy["parameters"]["max_new_tokens"], 16);
    assert!(greedy["parameters"].get("temperature").is_none() && greedy["parameters"].get("top_p").is_none());
    let params = body("params", PromptTemplate::Plain);
    assert_eq!(params["parameters"]["seed"], 42);
    assert_eq!(params["parameters"]["stop"], serde_json::json!(["\n\n", "six"]));
    // streaming: no decoder_input_details (TGI refuses it when streaming)
    let stream = body("stream", PromptTemplate::Mistral);
    assert_eq!(stream["stream"], true);
    assert!(stream["parameters"].get("decoder_input_details").is_none());
    assert_eq!(stream["inputs"], "[INST] Be brief.\n\nHello? [/INST]");
    // unsupported features are a client error naming the parameter
    for (case, param) in [
        ("err_tools", "tools"),
        ("err_image", "messages[0].content[1]"),
        ("err_tool_message", "messages[1].tool_calls"),
        ("err_json_schema", "response_format"),
    ] {
        let err = openai_to_tgi::request(&read(case), PromptTemplate::Llama3).unwrap_err();
        assert!(err.is_client_fault(), "{case}");
        assert_eq!(err.param(), Some(param), "{case}");
    }
}

/// The README lists every case on disk.
#[test]
fn readme_lists_every_case() {
    let readme = fs::read_to_string(fixtures_under(ROOT, "README.md")).unwrap();
    for (dir, suffix) in [("request", ".in.json"), ("response", ".in.json"), ("stream", ".sse")] {
        for (case, _) in cases(&fixtures_under(ROOT, dir), suffix) {
            assert!(readme.contains(&format!("`{case}`")), "README.md does not list {dir}/{case}");
        }
    }
}
