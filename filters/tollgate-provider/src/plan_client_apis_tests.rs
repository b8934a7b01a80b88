//! Planning the Responses and InvokeModel client APIs: the pairs `AttemptKind::of` decides.

use std::time::{Duration, UNIX_EPOCH};

use tollgate_contract::config::AwsCredential;

use super::*;

fn meta(provider: ProviderKind, model: &str, responses_api: bool) -> DeploymentMeta {
    DeploymentMeta {
        id: "d".into(),
        provider,
        model: model.into(),
        authority: "provider.example".into(),
        base_path: if provider == ProviderKind::Openai { "/v1".into() } else { String::new() },
        credential: Some("c".into()),
        region: Some("us-east-1".into()),
        api_version: None,
        payload: None,
        responses_api,
        price: None,
    }
}

fn cred(provider: ProviderKind) -> Credential {
    match provider {
        ProviderKind::Bedrock => Credential {
            api_key: None,
            aws: Some(AwsCredential { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: "s".into(), session_token: None }),
        },
        _ => Credential { api_key: Some("sk-test".into()), aws: None },
    }
}

fn kind(m: &DeploymentMeta, op: &Operation, len: u64, stream: bool) -> AttemptKind {
    let c = cred(m.provider);
    let facts = BodyFacts { stream, include_usage: false, body_len: Some(len), quotas: false };
    AttemptKind::of(&HeaderAttempt { meta: m, op, facts, client_model: "alias", credential: Some(&c) }).unwrap()
}

fn plan_for(m: &DeploymentMeta, op: &Operation, body: &[u8]) -> Result<Plan, GatewayError> {
    let c = cred(m.provider);
    let a = Attempt { meta: m, op, credential: Some(&c), body, request_id: "req1", now: UNIX_EPOCH + Duration::from_secs(1_700_000_000) };
    plan(&a)
}

const RESPONSES: &[u8] = br#"{"model":"alias","input":"hi","stream":true}"#;
const CLAUDE: &[u8] = br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
const TITAN: &[u8] = br#"{"inputText":"hi"}"#;

#[test]
fn responses_pass_through_only_to_a_declared_openai_deployment() {
    let op = Operation::OpenAiResponses;
    let declared = meta(ProviderKind::Openai, "alias", true);
    assert_eq!(kind(&declared, &op, 5, false).body, BodyUse::AsSent { len: 5 });
    let renamed = meta(ProviderKind::Openai, "gpt-x", true);
    assert_eq!(kind(&renamed, &op, 5, true).body, BodyUse::Read);
    let p = plan_for(&renamed, &op, RESPONSES).unwrap();
    assert_eq!(p.path, "/v1/responses");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&p.body).unwrap()["model"], "gpt-x");
    assert!(matches!(p.response, ResponsePlan::Tap(_)));
    for provider in [ProviderKind::Openai, ProviderKind::Azure, ProviderKind::Anthropic, ProviderKind::Bedrock] {
        let m = meta(provider, "x", false);
        assert_eq!(kind(&m, &op, 5, false).body, BodyUse::Translated, "{provider:?}");
    }
}

#[test]
fn translated_responses_go_to_chat_completions_with_stream_usage() {
    let m = meta(ProviderKind::Openai, "gpt-x", false);
    let p = plan_for(&m, &Operation::OpenAiResponses, RESPONSES).unwrap();
    assert_eq!(p.path, "/v1/chat/completions");
    let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(body["messages"][0]["content"], "hi");
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert!(matches!(p.response, ResponsePlan::Stream(_)));
}

#[test]
fn invoke_model_is_native_on_bedrock_and_translated_elsewhere() {
    let op = Operation::BedrockInvoke { model: "alias".into(), stream: true };
    let br = meta(ProviderKind::Bedrock, "us.anthropic.claude-3-5-haiku-20241022-v1:0", false);
    assert_eq!(kind(&br, &op, 5, true).body, BodyUse::Read);
    let p = plan_for(&br, &op, TITAN).unwrap();
    assert_eq!(p.path, "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream");
    assert_eq!(p.body, TITAN);
    assert!(p.header("authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256")));
    assert!(matches!(p.response, ResponsePlan::Tap(_)));

    let oa = meta(ProviderKind::Openai, "gpt-x", false);
    assert_eq!(kind(&oa, &op, 5, true).body, BodyUse::Translated);
    let p = plan_for(&oa, &op, CLAUDE).unwrap();
    assert_eq!(p.path, "/v1/chat/completions");
    let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
    assert_eq!((body["model"].as_str(), body["stream"].as_bool()), (Some("gpt-x"), Some(true)));
    assert!(body.get("anthropic_version").is_none());

    let Err(e) = plan_for(&oa, &op, TITAN) else { panic!("a Titan body on OpenAI must be refused") };
    assert_eq!(e.status(), 400);
    assert!(e.message.contains("Amazon Titan"), "{}", e.message);
    assert_eq!(e.aws_error_type(), "ValidationException");
}
