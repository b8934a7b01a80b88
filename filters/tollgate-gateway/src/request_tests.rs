use super::*;
use tollgate_contract::config::{GatewayConfigDoc, ModelDoc, SCHEMA_VERSION};
use tollgate_contract::error::ClientApi;
use tollgate_contract::keys::{digest, presented_key, Role};
use tollgate_contract::keytable::{EntrySpec, Table};
use tollgate_contract::state::RequestState;

fn cfg() -> GatewayConfig {
    GatewayConfig::compile(GatewayConfigDoc {
        schema: SCHEMA_VERSION,
        quotas: Vec::new(),
        model_prices: Default::default(),
        quota_hold_seconds: 660,
        max_body_bytes: 1024,
        models: vec![
            ModelDoc { name: "a".into(), cluster: "ca".into(), owned_by: "tollgate".into(), created: 1, providers: Vec::new(), without: Vec::new() },
            ModelDoc { name: "b".into(), cluster: "cb".into(), owned_by: "tollgate".into(), created: 1, providers: Vec::new(), without: Vec::new() },
        ],
        fault_injection: false,
    })
    .unwrap()
}

fn keys() -> Table {
    let only_a = ["a".to_owned()];
    let key = |secret: &str, id: &'static str, models, expires_at| EntrySpec { digest: digest(secret), id, role: Role::User, expires_at, models };
    Table::from_entries(
        1,
        1,
        &[key("tg-all", "all", None, None), key("tg-only-a", "only-a", Some(&only_a[..]), None), key("tg-old", "old", None, Some(10))],
    )
    .unwrap()
}

#[test]
fn classify_paths() {
    assert_eq!(classify("POST", "/v1/chat/completions").unwrap(), Operation::ChatCompletions);
    assert_eq!(classify("POST", "/v1/chat/completions?x=1").unwrap(), Operation::ChatCompletions);
    assert_eq!(classify("POST", "/v1/embeddings/").unwrap(), Operation::Embeddings);
    assert_eq!(classify("GET", "/v1/models").unwrap(), Operation::ListModels);
    assert_eq!(classify("GET", "/v1/models/a%2Fb").unwrap(), Operation::RetrieveModel("a/b".into()));
    assert_eq!(classify("GET", "/v1/nope").unwrap_err().status(), 404);
    assert_eq!(classify("GET", "/v1/chat/completions").unwrap_err().status(), 405);
    assert_eq!(classify("GET", "/v1/models/").unwrap(), Operation::ListModels);
}

#[test]
fn classify_percent_escapes_never_cut_a_character() {
    // Found by the fuzzer (fuzz/corpus/gateway_classify): a non-ASCII byte right after `%` used
    // to panic (a `str` slice inside a character), killing the VM.
    assert_eq!(classify("GET", "/v1/models/a%2\u{fffd}Fb").unwrap(), Operation::RetrieveModel("a%2\u{fffd}Fb".into()));
    assert_eq!(classify("GET", "/v1/models/%\u{e9}").unwrap(), Operation::RetrieveModel("%\u{e9}".into()));
    assert_eq!(classify("GET", "/v1/models/a%2").unwrap(), Operation::RetrieveModel("a%2".into()));
    // a sign is not a hex digit (`from_str_radix` took `%+1` for byte 1)
    assert_eq!(classify("GET", "/v1/models/%+1").unwrap(), Operation::RetrieveModel("%+1".into()));
    assert_eq!(classify("GET", "/v1/models/%41%62").unwrap(), Operation::RetrieveModel("Ab".into()));
}

#[test]
fn key_extraction() {
    assert_eq!(presented_key(Some("Bearer tg-x"), None), Some("tg-x"));
    assert_eq!(presented_key(Some("bearer   tg-x "), None), Some("tg-x"));
    assert_eq!(presented_key(Some("Basic abc"), None), None);
    assert_eq!(presented_key(Some("Basic abc"), Some("tg-z")), Some("tg-z"));
    assert_eq!(presented_key(Some("Bearer "), None), None);
    assert_eq!(presented_key(None, Some("tg-y")), Some("tg-y"));
    assert_eq!(presented_key(None, None), None);
}

#[test]
fn authentication_errors() {
    assert_eq!(authenticate(Some(&keys()), None, None, 0).unwrap_err().code, Some("missing_api_key"));
    assert_eq!(authenticate(Some(&keys()), Some("Bearer tg-nope"), None, 0).unwrap_err().code, Some("invalid_api_key"));
    assert_eq!(authenticate(Some(&keys()), Some("Bearer tg-old"), None, 11).unwrap_err().code, Some("expired_api_key"));
    // no key table yet: a presented key is refused with a 503 (fail closed), a missing one is still a 401
    let not_loaded = authenticate(None, Some("Bearer tg-all"), None, 0).unwrap_err();
    assert_eq!((not_loaded.status(), not_loaded.code), (503, Some("keys_not_loaded")));
    assert_eq!(authenticate(None, None, None, 0).unwrap_err().code, Some("missing_api_key"));
    assert_eq!(authenticate(Some(&keys()), Some("Bearer tg-old"), None, 9).unwrap().id, "old");
}

#[test]
fn routes_chat() {
    let c = cfg();
    let key = authenticate(Some(&keys()), Some("Bearer tg-all"), None, 0).unwrap();
    let r = route(&c, &key, &Operation::ChatCompletions, br#"{"model":"b","messages":[{"role":"user","content":"hi"}]}"#)
        .unwrap();
    let len = Some(57);
    assert_eq!(r, Route { model: "b".into(), cluster: "cb", facts: BodyFacts { body_len: len, ..BodyFacts::default() }, max_output: None });
}

#[test]
fn the_output_limit_is_read_in_each_apis_words_and_leniently() {
    let c = cfg();
    let key = authenticate(Some(&keys()), Some("Bearer tg-all"), None, 0).unwrap();
    let max = |op: &Operation, body: &[u8]| route(&c, &key, op, body).unwrap().max_output;
    let chat = Operation::ChatCompletions;
    assert_eq!(max(&chat, br#"{"model":"b","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#), Some(50));
    assert_eq!(max(&chat, br#"{"model":"b","max_tokens":50,"max_completion_tokens":60,"messages":[{"role":"user","content":"hi"}]}"#), Some(60));
    // Anything but an unsigned integer is left for the provider to judge.
    for odd in ["-1", "1.5", "\"9\"", "null", "[1]", "{\"a\":1}"] {
        let body = format!(r#"{{"model":"b","max_tokens":{odd},"messages":[{{"role":"user","content":"hi"}}]}}"#);
        assert_eq!(max(&chat, body.as_bytes()), None, "{odd}");
    }
    assert_eq!(max(&Operation::OpenAiResponses, br#"{"model":"b","input":"hi","max_output_tokens":70}"#), Some(70));
    assert_eq!(max(&Operation::AnthropicMessages, br#"{"model":"b","max_tokens":80,"messages":[{"role":"user","content":"hi"}]}"#), Some(80));
}

#[test]
fn chat_validation_errors() {
    let c = cfg();
    let key = authenticate(Some(&keys()), Some("Bearer tg-all"), None, 0).unwrap();
    let op = Operation::ChatCompletions;
    let err = |body: &[u8]| route(&c, &key, &op, body).unwrap_err();
    assert_eq!(err(b"{not json").code, Some("invalid_json"));
    assert_eq!(err(b"").code, Some("invalid_json"));
    assert_eq!(err(b"[]").status(), 400);
    assert_eq!(err(br#"["a",[{"role":"user"}]]"#).code, Some("invalid_json"));
    assert_eq!(err(b"{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}").code, Some("invalid_json"));
    assert_eq!(err(br#"{"messages":[{"role":"user"}]}"#).param.as_deref(), Some("model"));
    assert_eq!(err(br#"{"model":"a"}"#).param.as_deref(), Some("messages"));
    assert_eq!(err(br#"{"model":"a","messages":[]}"#).param.as_deref(), Some("messages"));
    assert_eq!(err(br#"{"model":"a","messages":[{"content":"x"}]}"#).param.as_deref(), Some("messages[0].role"));
    assert_eq!(err(br#"{"model":"a","messages":[{"role":"robot"}]}"#).param.as_deref(), Some("messages[0].role"));
    assert_eq!(err(br#"{"model":7,"messages":[{"role":"user"}]}"#).status(), 400);
    assert_eq!(err(br#"{"model":"zzz","messages":[{"role":"user"}]}"#).status(), 404);
}

#[test]
fn model_permission() {
    let c = cfg();
    let key = authenticate(Some(&keys()), Some("Bearer tg-only-a"), None, 0).unwrap();
    let body = br#"{"model":"b","messages":[{"role":"user","content":"hi"}]}"#;
    let e = route(&c, &key, &Operation::ChatCompletions, body).unwrap_err();
    assert_eq!(e.status(), 403);
    assert_eq!(e.code, Some("model_not_allowed"));
    let list: serde_json::Value = serde_json::from_slice(&list_models(&c, &key)).unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], "a");
    assert_eq!(retrieve_model(&c, &key, "b").unwrap_err().status(), 403);
    assert!(retrieve_model(&c, &key, "a").is_ok());
}

#[test]
fn embeddings_validation() {
    let c = cfg();
    let key = authenticate(Some(&keys()), Some("Bearer tg-all"), None, 0).unwrap();
    let op = Operation::Embeddings;
    assert_eq!(route(&c, &key, &op, br#"{"model":"a","input":["x"]}"#).unwrap().cluster, "ca");
    assert_eq!(route(&c, &key, &op, br#"{"model":"a"}"#).unwrap_err().param.as_deref(), Some("input"));
}

#[test]
fn anthropic_messages_validation() {
    let c = cfg();
    let key = authenticate(Some(&keys()), None, Some("tg-all"), 0).unwrap();
    let op = classify("POST", "/v1/messages").unwrap();
    assert_eq!(op.client_api(), ClientApi::Anthropic);
    let ok = br#"{"model":"a","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(route(&c, &key, &op, ok).unwrap().cluster, "ca");
    let no_max = br#"{"model":"a","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(route(&c, &key, &op, no_max).unwrap_err().param.as_deref(), Some("max_tokens"));
    assert_eq!(route(&c, &key, &op, br#"{"model":"a","max_tokens":1,"messages":[]}"#).unwrap_err().status(), 400);
    let state = RequestState { op: op.clone(), facts: BodyFacts::default(), key_id: "k".into(), model: "a".into(), holds: None };
    assert_eq!(RequestState::decode(&state.encode().unwrap()).unwrap().op, op);
}

#[test]
fn bedrock_converse_paths() {
    let op = classify("POST", "/bedrock/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse").unwrap();
    assert_eq!(op, Operation::BedrockConverse { model: "us.anthropic.claude-3-5-sonnet-20240620-v1:0".into(), stream: false });
    assert_eq!(op.client_api(), ClientApi::Bedrock);
    let op = classify("POST", "/model/a/converse-stream").unwrap();
    assert_eq!(op, Operation::BedrockConverse { model: "a".into(), stream: true });
    let arn = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Aapplication-inference-profile%2Fabc";
    let op = classify("POST", &format!("/bedrock/model/{arn}/converse")).unwrap();
    assert!(matches!(op, Operation::BedrockConverse { ref model, .. } if model.ends_with("profile/abc")));
    assert_eq!(classify("POST", "/bedrock/model/a/count-tokens").unwrap_err().status(), 404);
    assert_eq!(classify("GET", "/bedrock/model/a/converse").unwrap_err().status(), 405);
    let c = cfg();
    let key = authenticate(Some(&keys()), Some("Bearer tg-all"), None, 0).unwrap();
    let op = Operation::BedrockConverse { model: "a".into(), stream: true };
    assert_eq!(route(&c, &key, &op, br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#).unwrap().model, "a");
    assert_eq!(route(&c, &key, &op, br#"{"messages":[]}"#).unwrap_err().status(), 400);
    let op = Operation::BedrockConverse { model: "zz".into(), stream: false };
    assert_eq!(route(&c, &key, &op, br#"{"messages":[{"role":"user"}]}"#).unwrap_err().status(), 404);
    // The model travels in the request state's model field.
    let state = RequestState { op: op.clone(), facts: BodyFacts::default(), key_id: "k".into(), model: "zz".into(), holds: None };
    assert_eq!(RequestState::decode(&state.encode().unwrap()).unwrap().op, op);
}

#[test]
fn chat_body_facts_travel_in_the_operation_state() {
    let c = cfg();
    let key = authenticate(Some(&keys()), Some("Bearer tg-all"), None, 0).unwrap();
    let op = Operation::ChatCompletions;
    let facts = |body: &str| {
        let f = route(&c, &key, &op, body.as_bytes()).unwrap().facts;
        assert_eq!(f.body_len, Some(body.len() as u64));
        BodyFacts { body_len: None, ..f }
    };
    let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
    assert_eq!(facts(&format!(r#"{{"model":"b",{msgs}}}"#)), BodyFacts::default());
    assert_eq!(facts(&format!(r#"{{"model":"b","stream":false,{msgs}}}"#)), BodyFacts::default());
    let streamed = facts(&format!(r#"{{"model":"b","stream":true,"stream_options":null,{msgs}}}"#));
    assert_eq!(streamed, BodyFacts { stream: true, include_usage: false, body_len: None, quotas: false });
    let usage = facts(&format!(r#"{{"model":"b","stream":true,"stream_options":{{"include_usage":true}},{msgs}}}"#));
    assert_eq!(usage, BodyFacts { stream: true, include_usage: true, body_len: None, quotas: false });
    assert!(!facts(&format!(r#"{{"model":"b","stream":true,"stream_options":{{"include_usage":"yes"}},{msgs}}}"#)).include_usage);

    let sized = BodyFacts { body_len: Some(2048), ..usage };
    for f in [BodyFacts::default(), streamed, usage, sized] {
        for (key_id, model) in [("k1", "gpt-4o"), ("odd;key%3B", "a;model=b")] {
            let state = RequestState { op: op.clone(), facts: f, key_id: key_id.into(), model: model.into(), holds: None };
            assert_eq!(RequestState::decode(&state.encode().unwrap()).as_ref(), Ok(&state));
        }
    }
}

#[test]
fn nesting_deeper_than_any_parser_on_the_way_accepts_is_refused() {
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let c = cfg();
    let key = authenticate(Some(&keys()), Some("Bearer tg-all"), None, 0).unwrap();
    let body = |depth: usize| {
        format!(r#"{{"model":"a","messages":[{{"role":"user","content":"hi"}}],"extra":{}}}"#, nested(depth))
    };
    // The top-level object, and the two levels of messages, count too.
    assert!(route(&c, &key, &Operation::ChatCompletions, body(MAX_NESTING - 1).as_bytes()).is_ok());
    let err = route(&c, &key, &Operation::ChatCompletions, body(MAX_NESTING).as_bytes()).unwrap_err();
    assert_eq!((err.status(), err.code), (400, Some("invalid_json")));
    assert!(route(&c, &key, &Operation::ChatCompletions, body(10_000).as_bytes()).is_err());
    // Brackets inside strings are text.
    let text = format!(r#"{{"model":"a","messages":[{{"role":"user","content":"{}"}}]}}"#, "[{".repeat(500));
    assert!(route(&c, &key, &Operation::ChatCompletions, text.as_bytes()).is_ok());
    let escaped = format!(r#"{{"model":"a","messages":[{{"role":"user","content":"\"{}"}}]}}"#, "[".repeat(500));
    assert!(route(&c, &key, &Operation::ChatCompletions, escaped.as_bytes()).is_ok());
}

proptest::proptest! {
    /// Whatever the gateway accepts, serde_json (the parser after it) parses to a value.
    #[test]
    fn what_passes_the_depth_check_parses(depth in 1usize..300, wrap in 0usize..4) {
        let inner = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let mut doc = format!(r#"{{"x":{inner}}}"#);
        for _ in 0..wrap {
            doc = format!(r#"{{"w":{doc}}}"#);
        }
        let refused = crate::json_scan::scan(doc.as_bytes(), MAX_NESTING).is_some();
        let parsed = serde_json::from_str::<serde_json::Value>(&doc).is_ok();
        proptest::prop_assert_eq!(refused, !parsed, "depth {} wrap {}", depth, wrap);
    }
}

#[test]
fn classifies_responses_and_invoke_model() {
    assert_eq!(classify("POST", "/v1/responses").unwrap(), Operation::OpenAiResponses);
    assert_eq!(
        classify("POST", "/bedrock/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke").unwrap(),
        Operation::BedrockInvoke { model: "anthropic.claude-3-haiku-20240307-v1:0".into(), stream: false }
    );
    assert_eq!(
        classify("POST", "/model/a/invoke-with-response-stream").unwrap(),
        Operation::BedrockInvoke { model: "a".into(), stream: true }
    );
    assert_eq!(classify("GET", "/v1/responses").unwrap_err().status(), 405);
}

#[test]
fn responses_refuse_stateful_features_before_routing() {
    let c = cfg();
    let key = authenticate(Some(&keys()), Some("Bearer tg-all"), None, 0).unwrap();
    for (body, param) in [
        (r#"{"model":"b","input":"x","previous_response_id":"r"}"#, "previous_response_id"),
        (r#"{"model":"b","input":"x","store":true}"#, "store"),
        (r#"{"model":"b","input":"x","conversation":{"id":"c"}}"#, "conversation"),
        (r#"{"model":"b","input":"x","background":true}"#, "background"),
        (r#"{"model":"b"}"#, "input"),
    ] {
        let e = route(&c, &key, &Operation::OpenAiResponses, body.as_bytes()).unwrap_err();
        assert_eq!((e.status(), e.param.as_deref()), (400, Some(param)), "{body}");
    }
    let r = route(&c, &key, &Operation::OpenAiResponses, br#"{"model":"b","input":"x","stream":true,"store":false}"#).unwrap();
    assert!(r.facts.stream);
}

#[test]
fn only_json_bodies_are_taken() {
    for ok in [None, Some("application/json"), Some("Application/JSON; charset=utf-8"), Some("application/vnd.api+json")] {
        assert!(check_content_type(ok).is_ok(), "{ok:?}");
    }
    for bad in ["text/plain", "multipart/form-data; boundary=----x", "application/x-www-form-urlencoded", "", "json", "+json"] {
        let e = check_content_type(Some(bad)).unwrap_err();
        assert_eq!((e.status(), e.code), (415, Some("unsupported_media_type")), "{bad}");
    }
    // A boundary of 100k dashes costs one split: the parameters are never parsed.
    let long = format!("multipart/form-data; boundary={}", "-".repeat(100_000));
    assert!(check_content_type(Some(&long)).unwrap_err().message.len() < 300);
}

#[test]
fn the_output_limit_is_rewritten_in_each_client_apis_words() {
    let chat = Operation::ChatCompletions;
    let read = |op: &Operation, b: &[u8]| -> serde_json::Value { serde_json::from_slice(&with_output_limit(op, b, 40).unwrap()).unwrap() };
    let v = read(&chat, br#"{"model":"a","messages":[{"role":"user","content":"hi"}],"max_tokens":500,"temperature":0.7}"#);
    assert_eq!((v["max_tokens"].as_u64(), v.get("max_completion_tokens"), v["temperature"].as_f64()), (Some(40), None, Some(0.7)));
    let v = read(&chat, br#"{"model":"a","messages":[],"max_completion_tokens":500}"#);
    assert_eq!((v["max_completion_tokens"].as_u64(), v.get("max_tokens")), (Some(40), None));
    let v = read(&chat, br#"{"model":"a","messages":[],"max_completion_tokens":500,"max_tokens":300}"#);
    assert_eq!((v["max_completion_tokens"].as_u64(), v["max_tokens"].as_u64()), (Some(40), Some(40)));
    // Neither set: max_tokens (and the limit the gateway reads back is the new one).
    let out = with_output_limit(&chat, br#"{"model":"a","messages":[{"role":"user","content":"hi"}]}"#, 40).unwrap();
    assert_eq!(validate_chat(&out).unwrap().2, Some(40));
    let v = read(&Operation::AnthropicMessages, br#"{"model":"a","max_tokens":1024,"messages":[]}"#);
    assert_eq!(v["max_tokens"].as_u64(), Some(40));
    let v = read(&Operation::OpenAiResponses, br#"{"model":"a","input":"hi"}"#);
    assert_eq!(v["max_output_tokens"].as_u64(), Some(40));
    let converse = Operation::BedrockConverse { model: "m".into(), stream: false };
    let v = read(&converse, br#"{"messages":[],"inferenceConfig":{"maxTokens":900,"temperature":0.2}}"#);
    assert_eq!((v["inferenceConfig"]["maxTokens"].as_u64(), v["inferenceConfig"]["temperature"].as_f64()), (Some(40), Some(0.2)));
    let v = read(&converse, br#"{"messages":[]}"#);
    assert_eq!(v["inferenceConfig"]["maxTokens"].as_u64(), Some(40));
    // InvokeModel's body is the model's own; embeddings have no output.
    let invoke = Operation::BedrockInvoke { model: "m".into(), stream: false };
    assert_eq!((least_output_limit(&invoke), least_output_limit(&Operation::Embeddings)), (None, None));
    assert_eq!((least_output_limit(&chat), least_output_limit(&Operation::OpenAiResponses)), (Some(1), Some(16)));
    assert_eq!(with_output_limit(&invoke, br#"{"max_tokens":5}"#, 40), None);
    assert_eq!(with_output_limit(&chat, b"[1]", 40), None);
}
