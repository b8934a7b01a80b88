use std::time::{Duration, UNIX_EPOCH};

use tollgate_contract::config::{AwsCredential, ContainerPayload};

use super::*;

fn meta(provider: ProviderKind, authority: &str, base: &str, model: &str) -> DeploymentMeta {
    DeploymentMeta {
        id: "d".into(),
        provider,
        model: model.into(),
        authority: authority.into(),
        base_path: base.into(),
        credential: Some("c".into()),
        region: Some("us-east-1".into()),
        api_version: None,
        payload: None,
        responses_api: false,
        price: None,
    }
}

const CHAT: &[u8] = br#"{"model":"alias","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &[u8] = br#"{"model":"alias","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn attempt<'a>(meta: &'a DeploymentMeta, cred: &'a Credential, body: &'a [u8]) -> Attempt<'a> {
    Attempt {
        meta,
        op: &Operation::ChatCompletions,
        credential: Some(cred),
        body,
        request_id: "req-1",
        now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

fn plan_err(a: &Attempt<'_>) -> GatewayError {
    match plan(a) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn key(k: &str) -> Credential {
    Credential { api_key: Some(k.into()), aws: None }
}

#[test]
fn openai_passthrough_sets_bearer_and_clears_other_provider_headers() {
    let m = meta(ProviderKind::Openai, "api.openai.com", "/v1", "gpt-x");
    let cred = key("sk-test");
    let p = plan(&attempt(&m, &cred, CHAT)).unwrap();
    assert_eq!(p.path, "/v1/chat/completions");
    assert_eq!(p.header("authorization"), Some("Bearer sk-test"));
    for h in ["x-api-key", "anthropic-version", "x-amz-date", "x-amz-security-token"] {
        assert_eq!(p.header(h), None, "{h}");
        assert!(p.headers.iter().any(|(n, _)| *n == h), "{h} must be explicitly removed");
    }
    assert!(matches!(p.response, ResponsePlan::Tap(_)));
}

#[test]
fn bedrock_is_signed_with_sigv4() {
    let m = meta(ProviderKind::Bedrock, "bedrock-runtime.us-east-1.amazonaws.com", "", "us.anthropic.claude-3-5-sonnet-20240620-v1:0");
    let cred = Credential {
        api_key: None,
        aws: Some(AwsCredential { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: "s".into(), session_token: Some("t".into()) }),
    };
    let p = plan(&attempt(&m, &cred, CHAT)).unwrap();
    assert_eq!(p.path, "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse");
    let auth = p.header("authorization").unwrap();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/bedrock/aws4_request"), "{auth}");
    assert_eq!(p.header("x-amz-security-token"), Some("t"));
    assert!(p.header("x-amz-date").is_some());
    assert!(matches!(p.response, ResponsePlan::Json(_)));
    let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
    assert!(body.get("messages").is_some(), "{body}");
    let sp = plan(&attempt(&m, &cred, STREAM)).unwrap();
    assert!(sp.path.ends_with("/converse-stream"));
    assert_eq!(sp.header("accept"), Some("application/vnd.amazon.eventstream"));
    assert!(matches!(sp.response, ResponsePlan::Stream(_)));
}

#[test]
fn bedrock_api_key_is_a_bearer_token() {
    let m = meta(ProviderKind::Bedrock, "bedrock-runtime.us-east-1.amazonaws.com", "", "m");
    let p = plan(&attempt(&m, &key("bedrock-api-key"), CHAT)).unwrap();
    assert_eq!(p.header("authorization"), Some("Bearer bedrock-api-key"));
    assert_eq!(p.header("x-amz-date"), None);
}

#[test]
fn anthropic_uses_x_api_key_and_version() {
    let m = meta(ProviderKind::Anthropic, "api.anthropic.com", "/v1", "claude-x");
    let p = plan(&attempt(&m, &key("ak-test"), CHAT)).unwrap();
    assert_eq!(p.path, "/v1/messages");
    assert_eq!(p.header("x-api-key"), Some("ak-test"));
    assert_eq!(p.header("anthropic-version"), Some(ANTHROPIC_VERSION));
    assert_eq!(p.header("authorization"), None);
    let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(body["model"], "claude-x");
}

#[test]
fn missing_credential_and_embeddings_on_translated_providers() {
    let m = meta(ProviderKind::Anthropic, "api.anthropic.com", "/v1", "claude-x");
    let k = key("k");
    let mut a = attempt(&m, &k, CHAT);
    a.credential = None;
    assert_eq!(plan_err(&a).code, Some("credential_missing"));
    let mut a = attempt(&m, &k, br#"{"model":"a","input":"x"}"#);
    a.op = &Operation::Embeddings;
    assert_eq!(plan_err(&a).status(), 400);
    // Bedrock serves embeddings through InvokeModel for Titan and Cohere models only
    let chat_model = meta(ProviderKind::Bedrock, "bedrock-runtime.us-east-1.amazonaws.com", "", "anthropic.claude-x");
    let mut a = attempt(&chat_model, &k, br#"{"model":"a","input":"x"}"#);
    a.op = &Operation::Embeddings;
    assert_eq!(plan_err(&a).code, Some("unsupported_for_provider"));
    let titan = meta(ProviderKind::Bedrock, "bedrock-runtime.us-east-1.amazonaws.com", "", "amazon.titan-embed-text-v2:0");
    let mut a = attempt(&titan, &k, br#"{"model":"a","input":"x"}"#);
    a.op = &Operation::Embeddings;
    let p = plan(&a).unwrap();
    assert_eq!(p.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    assert_eq!(p.header("authorization"), Some("Bearer k"));
    let a = attempt(&m, &k, b"{not json");
    assert_eq!(plan_err(&a).status(), 400);
}

#[test]
fn azure_uses_api_key_header_and_api_version() {
    let mut m = meta(ProviderKind::Azure, "res.openai.azure.com", "/openai/deployments/gpt4o", "gpt-4o");
    m.api_version = Some("2024-10-21".into());
    let p = plan(&attempt(&m, &key("az-key"), CHAT)).unwrap();
    assert_eq!(p.path, "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21");
    assert_eq!(p.header("api-key"), Some("az-key"));
    assert_eq!(p.header("authorization"), None);
}

#[test]
fn sagemaker_is_signed_for_the_sagemaker_service() {
    let m = meta(ProviderKind::Sagemaker, "runtime.sagemaker.us-east-1.amazonaws.com", "", "my-llm-endpoint");
    let cred = Credential {
        api_key: None,
        aws: Some(AwsCredential { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: "s".into(), session_token: None }),
    };
    let p = plan(&attempt(&m, &cred, CHAT)).unwrap();
    assert_eq!(p.path, "/endpoints/my-llm-endpoint/invocations");
    assert!(p.header("authorization").unwrap().contains("/us-east-1/sagemaker/aws4_request"));
    assert!(matches!(p.response, ResponsePlan::Tap(_)));
    let sp = plan(&attempt(&m, &cred, STREAM)).unwrap();
    assert_eq!(sp.path, "/endpoints/my-llm-endpoint/invocations-response-stream");
    assert!(matches!(sp.response, ResponsePlan::Stream(_)));
    let body: serde_json::Value = serde_json::from_slice(&sp.body).unwrap();
    assert_eq!(body["stream_options"]["include_usage"], true);
}

fn tgi_meta(template: tollgate_contract::config::PromptTemplate) -> DeploymentMeta {
    let mut m = meta(ProviderKind::Sagemaker, "runtime.sagemaker.us-east-1.amazonaws.com", "", "tgi-endpoint");
    m.payload = Some(ContainerPayload::Tgi { prompt_template: template });
    m
}

fn aws() -> Credential {
    Credential {
        api_key: None,
        aws: Some(AwsCredential { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: "s".into(), session_token: None }),
    }
}

#[test]
fn sagemaker_tgi_renders_the_prompt_and_signs_it() {
    let m = tgi_meta(tollgate_contract::config::PromptTemplate::Chatml);
    let cred = aws();
    let p = plan(&attempt(&m, &cred, CHAT)).unwrap();
    assert_eq!(p.path, "/endpoints/tgi-endpoint/invocations");
    assert!(p.header("authorization").unwrap().contains("/us-east-1/sagemaker/aws4_request"));
    assert_eq!(p.header("accept"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(body["inputs"], "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    assert_eq!(body["parameters"]["details"], true);
    let ResponsePlan::Json(json) = &p.response else { panic!("expected a JSON response plan") };
    let tgi = br#"[{"generated_text":"hello","details":{"finish_reason":"length","generated_tokens":3,"prefill":[{"id":1,"text":"a"},{"id":2,"text":"b"}]}}]"#;
    let (out, usage) = json.translate(tgi).unwrap();
    let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["choices"][0]["message"]["content"], "hello");
    assert_eq!(out["choices"][0]["finish_reason"], "length");
    assert_eq!((usage.input, usage.output), (Some(2), Some(3)));

    let sp = plan(&attempt(&m, &cred, STREAM)).unwrap();
    assert_eq!(sp.path, "/endpoints/tgi-endpoint/invocations-response-stream");
    assert_eq!(sp.header("accept"), Some("application/vnd.amazon.eventstream"));
    assert!(matches!(sp.response, ResponsePlan::Stream(_)));
    let body: serde_json::Value = serde_json::from_slice(&sp.body).unwrap();
    assert_eq!(body["stream"], true);
}

#[test]
fn sagemaker_tgi_serves_anthropic_clients_with_exact_usage() {
    let m = tgi_meta(tollgate_contract::config::PromptTemplate::Llama3);
    let cred = aws();
    let mut a = attempt(&m, &cred, br#"{"model":"alias","max_tokens":20,"system":"be brief","messages":[{"role":"user","content":"hi"}]}"#);
    a.op = &Operation::AnthropicMessages;
    let p = plan(&a).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
    assert!(body["inputs"].as_str().unwrap().starts_with("<|start_header_id|>system<|end_header_id|>\n\nbe brief"));
    assert_eq!(body["parameters"]["max_new_tokens"], 20);
    let ResponsePlan::Json(json) = &p.response else { panic!("expected a JSON response plan") };
    let tgi = br#"{"generated_text":"yo","details":{"finish_reason":"eos_token","generated_tokens":2,"prefill":[{"id":1,"text":"a"}]}}"#;
    let (out, usage) = json.translate(tgi).unwrap();
    let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["type"], "message");
    assert_eq!(out["content"][0]["text"], "yo");
    assert_eq!(out["stop_reason"], "end_turn");
    assert_eq!((out["usage"]["input_tokens"].as_u64(), usage.output), (Some(1), Some(2)));
}

#[test]
fn sagemaker_tgi_refuses_tools_and_unknown_payloads() {
    let m = tgi_meta(tollgate_contract::config::PromptTemplate::Mistral);
    let cred = aws();
    let tools = br#"{"model":"a","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#;
    let e = plan_err(&attempt(&m, &cred, tools));
    assert_eq!((e.status(), e.param.as_deref()), (400, Some("tools")));
    let mut unknown = m.clone();
    unknown.payload = Some(ContainerPayload::Unknown);
    assert_eq!(plan_err(&attempt(&unknown, &cred, CHAT)).status(), 500);
    let mut unknown = m;
    unknown.payload = Some(ContainerPayload::Tgi { prompt_template: tollgate_contract::config::PromptTemplate::Unknown });
    assert_eq!(plan_err(&attempt(&unknown, &cred, CHAT)).status(), 500);
}

#[test]
fn sagemaker_tgi_serves_bedrock_converse_clients() {
    let m = tgi_meta(tollgate_contract::config::PromptTemplate::Plain);
    let cred = aws();
    let op = Operation::BedrockConverse { model: "sm-tgi".into(), stream: false };
    let mut a = attempt(&m, &cred, br#"{"messages":[{"role":"user","content":[{"text":"hi there"}]}],"inferenceConfig":{"maxTokens":9,"stopSequences":["END"]}}"#);
    a.op = &op;
    let p = plan(&a).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(body["inputs"], "hi there");
    assert_eq!((body["parameters"]["max_new_tokens"].as_u64(), &body["parameters"]["stop"]), (Some(9), &serde_json::json!(["END"])));
    let ResponsePlan::Json(json) = &p.response else { panic!("expected a JSON response plan") };
    let tgi = br#"[{"generated_text":"fine END","details":{"finish_reason":"stop_sequence","generated_tokens":3,"prefill":[{"id":1,"text":"a"},{"id":2,"text":"b"}]}}]"#;
    let (out, usage) = json.translate(tgi).unwrap();
    let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["output"]["message"]["content"][0]["text"], "fine ");
    assert_eq!(out["usage"]["inputTokens"], 2);
    assert_eq!(usage.output, Some(3));
}

fn without_body(meta: &DeploymentMeta, op: &Operation, facts: BodyFacts, client_model: &str, cred: &Credential) -> Option<Plan> {
    let facts = BodyFacts { body_len: Some(100), ..facts };
    let h = HeaderAttempt { meta, op, facts, client_model, credential: Some(cred) };
    let kind = AttemptKind::of(&h).unwrap();
    let plan = plan_from_headers(&h, &kind).map(|r| r.unwrap());
    assert_eq!(plan.is_some(), !kind.needs_body());
    plan
}

#[test]
fn a_body_that_goes_as_sent_is_planned_from_the_headers() {
    let cred = key("sk-test");
    let chat = Operation::ChatCompletions;
    let plain = BodyFacts::default();
    let openai = meta(ProviderKind::Openai, "api.openai.com", "/v1", "gpt-x");
    let p = without_body(&openai, &chat, plain, "gpt-x", &cred).expect("same model, no stream");
    assert!(p.body_as_sent == Some(100) && p.body.is_empty());
    assert_eq!((p.path.as_str(), p.authority.as_str()), ("/v1/chat/completions", "api.openai.com"));
    assert_eq!(p.header("authorization"), Some("Bearer sk-test"));
    assert!(matches!(p.response, ResponsePlan::Tap(_)));
    // The same headers as the plan that reads the body.
    let full = plan(&attempt(&openai, &cred, br#"{"model":"gpt-x","messages":[]}"#)).unwrap();
    assert_eq!((p.path.clone(), p.headers.clone()), (full.path, full.headers));

    let usage = BodyFacts { stream: true, include_usage: true, body_len: None, quotas: false };
    let p = without_body(&openai, &chat, usage, "gpt-x", &cred).expect("the client asked for usage");
    assert!(matches!(p.response, ResponsePlan::Stream(_)));
    let embeddings = without_body(&openai, &Operation::Embeddings, plain, "gpt-x", &cred).unwrap();
    assert_eq!(embeddings.path, "/v1/embeddings");

    let mut azure = meta(ProviderKind::Azure, "r.openai.azure.com", "/openai/deployments/gpt-x", "gpt-x");
    azure.api_version = Some("2024-10-21".into());
    let p = without_body(&azure, &chat, plain, "gpt-x", &cred).unwrap();
    assert_eq!(p.path, "/openai/deployments/gpt-x/chat/completions?api-version=2024-10-21");
    assert_eq!((p.header("api-key"), p.header("authorization")), (Some("sk-test"), None));

    let anthropic = meta(ProviderKind::Anthropic, "api.anthropic.com", "/v1", "claude-x");
    let p = without_body(&anthropic, &Operation::AnthropicMessages, plain, "claude-x", &cred).unwrap();
    assert_eq!(p.body_as_sent, Some(100));
    assert_eq!((p.path.as_str(), p.header("x-api-key")), ("/v1/messages", Some("sk-test")));
    // Without the client body's length the body is read (the header map is shared by attempts).
    let h = HeaderAttempt { meta: &openai, op: &chat, facts: BodyFacts::default(), client_model: "gpt-x", credential: Some(&cred) };
    assert!(AttemptKind::of(&h).unwrap().needs_body());
}

#[test]
fn the_body_is_read_when_it_changes_or_is_signed() {
    let cred = key("sk-test");
    let chat = Operation::ChatCompletions;
    let openai = meta(ProviderKind::Openai, "api.openai.com", "/v1", "gpt-x");
    // Another model id, or a stream whose usage the gateway must ask for.
    assert!(without_body(&openai, &chat, BodyFacts::default(), "alias", &cred).is_none());
    assert!(without_body(&openai, &chat, BodyFacts { stream: true, include_usage: false, body_len: None, quotas: false }, "gpt-x", &cred).is_none());
    // Another API (translation), or SigV4 over the body.
    let anthropic = meta(ProviderKind::Anthropic, "api.anthropic.com", "/v1", "gpt-x");
    assert!(without_body(&anthropic, &chat, BodyFacts::default(), "gpt-x", &cred).is_none());
    for kind in [ProviderKind::Bedrock, ProviderKind::Sagemaker] {
        let m = meta(kind, "h", "", "gpt-x");
        assert!(without_body(&m, &chat, BodyFacts::default(), "gpt-x", &cred).is_none(), "{kind:?}");
    }
    let bedrock_client = Operation::BedrockConverse { model: "m".into(), stream: false };
    let bedrock = meta(ProviderKind::Bedrock, "h", "", "m");
    assert!(without_body(&bedrock, &bedrock_client, BodyFacts::default(), "m", &cred).is_none());
}

#[test]
fn only_signed_or_translated_attempts_read_the_clock() {
    let needs_clock = |m: &DeploymentMeta, op: &Operation, cred: &Credential| {
        let h = HeaderAttempt { meta: m, op, facts: BodyFacts::default(), client_model: "m", credential: Some(cred) };
        AttemptKind::of(&h).unwrap().needs_clock()
    };
    let (k, aws) = (key("k"), aws());
    let chat = Operation::ChatCompletions;
    for kind in [ProviderKind::Openai, ProviderKind::Azure] {
        assert!(!needs_clock(&meta(kind, "h", "", "m"), &chat, &k), "{kind:?}");
    }
    assert!(!needs_clock(&meta(ProviderKind::Anthropic, "h", "", "m"), &Operation::AnthropicMessages, &k));
    for kind in [ProviderKind::Bedrock, ProviderKind::Sagemaker, ProviderKind::Anthropic] {
        assert!(needs_clock(&meta(kind, "h", "", "m"), &chat, &aws), "{kind:?}");
    }
    let converse = Operation::BedrockConverse { model: "m".into(), stream: false };
    assert!(needs_clock(&meta(ProviderKind::Bedrock, "h", "", "m"), &converse, &aws));
    // A Bedrock client on Bedrock with a Bedrock API key: no signature, no translation.
    assert!(!needs_clock(&meta(ProviderKind::Bedrock, "h", "", "m"), &converse, &k));
    assert!(needs_clock(&meta(ProviderKind::Openai, "h", "", "m"), &converse, &k));
}
