//! The provider adapter's decisions for one attempt: which path, authority and credential to
//! send, and the rewritten body. For OpenAI-compatible providers the body is rewritten loss-free:
//! only `model` changes; every other field travels byte for byte.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use tollgate_contract::config::{DeploymentMeta, ProviderKind};
use tollgate_contract::error::{ErrorKind, GatewayError};
use crate::json_members;
use tollgate_contract::state::Operation;

/// The edits to apply to the upstream request of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEdit {
    pub path: String,
    pub authority: String,
    pub body: Vec<u8>,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client asked for the final usage chunk of its stream (the gateway always asks the
    /// provider for it, and drops it on the way back when the client did not).
    pub client_wants_usage: bool,
}

pub fn request(
    meta: &DeploymentMeta,
    op: &Operation,
    body: &[u8],
) -> Result<RequestEdit, GatewayError> {
    match meta.provider {
        ProviderKind::Openai | ProviderKind::Azure | ProviderKind::Sagemaker => openai_request(meta, op, body),
        ProviderKind::Bedrock | ProviderKind::Anthropic | ProviderKind::Unknown => Err(GatewayError::new(
            ErrorKind::Internal,
            "This deployment uses a provider this gateway version does not support.",
        )),
    }
}

fn openai_request(
    meta: &DeploymentMeta,
    op: &Operation,
    body: &[u8],
) -> Result<RequestEdit, GatewayError> {
    let path = openai_path(meta, op)?;
    let (body, stream, client_wants_usage) = match openai_in_place(body, &meta.model, op) {
        Some(done) => done,
        None => openai_reencoded(body, &meta.model, op)?,
    };
    Ok(RequestEdit {
        path,
        authority: meta.authority.clone(),
        body,
        stream,
        client_wants_usage,
    })
}

/// The provider path of an OpenAI-format operation: the deployment's base path and the
/// operation's suffix.
pub fn openai_path(meta: &DeploymentMeta, op: &Operation) -> Result<String, GatewayError> {
    let suffix = match op {
        Operation::ChatCompletions => "/chat/completions",
        Operation::Embeddings => "/embeddings",
        Operation::OpenAiResponses => "/responses",
        Operation::ListModels
        | Operation::KeyUsage
        | Operation::RetrieveModel(_)
        | Operation::AnthropicMessages
        | Operation::BedrockConverse { .. }
        | Operation::BedrockInvoke { .. } => {
            return Err(GatewayError::new(ErrorKind::Internal, "operation is not sent to OpenAI providers as is"))
        }
    };
    // Concatenated, not `format!` (its machinery costs about 1,000 wasm instructions a call).
    Ok([meta.base_path.trim_end_matches('/'), suffix].concat())
}

/// The OpenAI body for the provider, edited in place: the `model` value replaced and, for a
/// stream whose client did not ask for usage, `stream_options.include_usage` set; every other
/// byte as the client sent it. `None` when the body is not a plain object this can edit
/// (escaped or duplicate keys, no `model`...): [`openai_reencoded`] then decides.
fn openai_in_place(body: &[u8], model: &str, op: &Operation) -> Option<(Vec<u8>, bool, bool)> {
    let members = json_members::scan(body)?;
    let model_span = members.get("model").ok()??;
    let stream = members.get("stream").ok()?.is_some_and(|r| &body[r] == b"true");
    let options_span = members.get("stream_options").ok()?;
    let mut options: serde_json::Map<String, serde_json::Value> = match &options_span {
        Some(r) => serde_json::from_slice(&body[r.clone()]).unwrap_or_default(),
        None => serde_json::Map::new(),
    };
    let client_wants_usage = options.get("include_usage").and_then(serde_json::Value::as_bool) == Some(true);
    let mut edits = vec![(model_span, serde_json::to_vec(model).ok()?)];
    if stream && !client_wants_usage && *op == Operation::ChatCompletions {
        options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
        let value = serde_json::to_vec(&options).ok()?;
        edits.push(match options_span {
            Some(span) => (span, value),
            None => (members.close..members.close, [&b",\"stream_options\":"[..], &value].concat()),
        });
    }
    Some((json_members::splice(body, edits), stream, client_wants_usage))
}

/// [`openai_in_place`] by a full parse and re-encoding of the top-level object (keys end up
/// sorted; values stay as written).
fn openai_reencoded(body: &[u8], model: &str, op: &Operation) -> Result<(Vec<u8>, bool, bool), GatewayError> {
    let mut fields = object_fields(body)?;
    set_raw(&mut fields, "model", &model)?;
    let stream = fields.get("stream").is_some_and(|v| v.get().trim() == "true");
    let mut options: serde_json::Map<String, serde_json::Value> = match fields.get("stream_options") {
        Some(raw) => serde_json::from_str(raw.get()).unwrap_or_default(),
        None => serde_json::Map::new(),
    };
    let client_wants_usage = options.get("include_usage").and_then(serde_json::Value::as_bool) == Some(true);
    if stream && !client_wants_usage && *op == Operation::ChatCompletions {
        options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
        set_raw(&mut fields, "stream_options", &options)?;
    }
    let body = serde_json::to_vec(&fields)
        .map_err(|_| GatewayError::new(ErrorKind::Internal, "could not encode the provider request"))?;
    Ok((body, stream, client_wants_usage))
}

type Fields = BTreeMap<String, Box<RawValue>>;

/// The top-level fields of a JSON object body, values kept as raw text.
fn object_fields(body: &[u8]) -> Result<Fields, GatewayError> {
    serde_json::from_slice(body).map_err(|_| {
        GatewayError::new(ErrorKind::InvalidRequest, "The request body must be a JSON object.").code("invalid_json")
    })
}

fn set_raw(fields: &mut Fields, name: &str, value: &impl serde::Serialize) -> Result<(), GatewayError> {
    let raw = serde_json::to_string(value)
        .ok()
        .and_then(|s| RawValue::from_string(s).ok())
        .ok_or_else(|| GatewayError::new(ErrorKind::Internal, "could not encode a request field"))?;
    fields.insert(name.to_owned(), raw);
    Ok(())
}

/// Replaces the top-level `model` of a JSON object body; every other field travels byte for byte.
pub fn rewrite_model(body: &[u8], model: &str) -> Result<Vec<u8>, GatewayError> {
    let in_place = json_members::scan(body).and_then(|m| {
        let span = m.get("model").ok()??;
        Some(json_members::splice(body, vec![(span, serde_json::to_vec(model).ok()?)]))
    });
    if let Some(out) = in_place {
        return Ok(out);
    }
    let mut fields = object_fields(body)?;
    set_raw(&mut fields, "model", &model)?;
    serde_json::to_vec(&fields).map_err(|_| GatewayError::new(ErrorKind::Internal, "could not encode the provider request"))
}

/// Maps a provider's error answer (status >= 400) to the error the client sees, always in
/// OpenAI format. Authentication failures at the provider are the gateway's configuration
/// problem, not the client's: they become 502 without the provider's message (which may quote
/// part of the provider key).
pub fn provider_error(status: u16, body: &[u8]) -> GatewayError {
    let message = provider_message(body);
    let with_message = |kind: ErrorKind, fallback: &str| {
        GatewayError::new(kind, message.clone().unwrap_or_else(|| fallback.to_owned()))
    };
    match status {
        401 | 403 => GatewayError::new(
            ErrorKind::BadGateway,
            "The provider rejected the gateway's credentials for this model. Ask your administrator to check the provider key.",
        )
        .code("provider_auth_error"),
        404 => GatewayError::new(
            ErrorKind::BadGateway,
            "The provider does not know this deployment's model or URL. Ask your administrator to check the model's configuration.",
        )
        .code("provider_not_found"),
        429 => with_message(ErrorKind::RateLimited, "The provider is rate limiting this model; retry with back-off.")
            .code("provider_rate_limited"),
        400..=499 => with_message(ErrorKind::InvalidRequest, "The provider rejected the request.").code("provider_invalid_request"),
        500..=599 => with_message(ErrorKind::Upstream(status), "The provider failed to answer; retry later.").code("provider_error"),
        _ => GatewayError::new(ErrorKind::BadGateway, "The provider answered with an unexpected status.").code("provider_error"),
    }
}

/// The human message of a provider's JSON error body, if there is one (`{"error": {"message"}}`,
/// `{"error": "..."}`, `{"message"}`, AWS's `{"Message"}`), redacted and capped
/// ([`crate::sanitize::redact`]): it may quote a key, the gateway's or the client's.
fn provider_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum ErrorField {
        Object { message: Option<String> },
        Text(String),
    }
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: Option<ErrorField>,
        message: Option<String>,
        #[serde(rename = "Message")]
        aws_message: Option<String>,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    let msg = match parsed.error {
        Some(ErrorField::Object { message: Some(m) }) | Some(ErrorField::Text(m)) => m,
        _ => parsed.message.or(parsed.aws_message)?,
    };
    let msg = crate::sanitize::redact(&msg);
    (!msg.is_empty()).then_some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta() -> DeploymentMeta {
        DeploymentMeta {
            id: "d1".into(),
            provider: ProviderKind::Openai,
            model: "gpt-4o-mini-2024".into(),
            authority: "api.example.com".into(),
            base_path: "/v1/".into(),
            credential: Some("c".into()),
            region: None,
            api_version: None,
            payload: None,
            responses_api: false,
            price: None,
        }
    }

    #[test]
    fn rewrites_only_the_model() {
        let body = br#"{"model":"alias","messages":[{"role":"user","content":"hi"}],"temperature":0.10000000000000001,"x_custom":{"a":[1,2]}}"#;
        let edit = request(&meta(), &Operation::ChatCompletions, body).unwrap();
        assert_eq!(edit.path, "/v1/chat/completions");
        assert_eq!(edit.authority, "api.example.com");
        let s = String::from_utf8(edit.body).unwrap();
        assert!(s.contains(r#""model":"gpt-4o-mini-2024""#), "{s}");
        // unknown fields and exact number spelling survive
        assert!(s.contains(r#""temperature":0.10000000000000001"#), "{s}");
        assert!(s.contains(r#""x_custom":{"a":[1,2]}"#), "{s}");
        assert!(s.contains(r#""messages":[{"role":"user","content":"hi"}]"#), "{s}");
    }

    #[test]
    fn streams_always_ask_the_provider_for_usage() {
        let body = br#"{"model":"a","stream":true,"messages":[]}"#;
        let edit = request(&meta(), &Operation::ChatCompletions, body).unwrap();
        assert!(edit.stream && !edit.client_wants_usage);
        let v: serde_json::Value = serde_json::from_slice(&edit.body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        let body = br#"{"model":"a","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
        let edit = request(&meta(), &Operation::ChatCompletions, body).unwrap();
        assert!(edit.stream && edit.client_wants_usage);
        let edit = request(&meta(), &Operation::ChatCompletions, br#"{"model":"a","messages":[]}"#).unwrap();
        assert!(!edit.stream);
        assert!(!String::from_utf8(edit.body).unwrap().contains("stream_options"));
    }

    /// Arbitrary JSON values, a few levels deep, with strings that need escaping.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "[a-z\"\\\\\n\u{e9}\u{1F600}]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The in-place edit says the same as a full parse and re-encoding, for any object,
        /// compact or pretty-printed.
        #[test]
        fn in_place_edit_matches_reencoding(
            extra in prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..5),
            model in "[a-z0-9.\"-]{1,12}",
            stream in prop::option::of(any::<bool>()),
            options in prop::option::of(json_value()),
            usage in prop::option::of(any::<bool>()),
            pretty in any::<bool>(),
        ) {
            let mut obj: serde_json::Map<String, serde_json::Value> = extra.into_iter().collect();
            obj.insert("model".into(), serde_json::Value::String("alias".into()));
            if let Some(s) = stream { obj.insert("stream".into(), s.into()); }
            match (options, usage) {
                (_, Some(u)) => { obj.insert("stream_options".into(), serde_json::json!({"include_usage": u})); }
                (Some(o), None) => { obj.insert("stream_options".into(), o); }
                (None, None) => {}
            }
            let value = serde_json::Value::Object(obj);
            let body = if pretty { serde_json::to_vec_pretty(&value) } else { serde_json::to_vec(&value) }.unwrap();
            for op in [Operation::ChatCompletions, Operation::Embeddings] {
                let fast = openai_in_place(&body, &model, &op).expect("a plain object is edited in place");
                let full = openai_reencoded(&body, &model, &op).unwrap();
                let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
                prop_assert_eq!(parse(&fast.0), parse(&full.0));
                prop_assert_eq!((fast.1, fast.2), (full.1, full.2));
            }
            let rewritten: serde_json::Value = serde_json::from_slice(&rewrite_model(&body, &model).unwrap()).unwrap();
            prop_assert_eq!(&rewritten["model"], &serde_json::Value::String(model.clone()));
        }
    }

    #[test]
    fn in_place_keeps_the_clients_bytes_and_falls_back_when_ambiguous() {
        let body = br#"{ "messages": [{"role":"user","content":"hi"}], "model" : "alias", "temperature": 1.0E0 }"#;
        let edit = request(&meta(), &Operation::ChatCompletions, body).unwrap();
        assert_eq!(
            String::from_utf8(edit.body).unwrap(),
            r#"{ "messages": [{"role":"user","content":"hi"}], "model" : "gpt-4o-mini-2024", "temperature": 1.0E0 }"#
        );
        let stream = br#"{"model":"a","stream":true}"#;
        let edit = request(&meta(), &Operation::ChatCompletions, stream).unwrap();
        assert_eq!(edit.body, br#"{"model":"gpt-4o-mini-2024","stream":true,"stream_options":{"include_usage":true}}"#);
        // An escaped key could spell `model`: the full parse decides (and sees the duplicate).
        let escaped = br#"{"model":"a","mod\u0065l":"b"}"#;
        assert!(openai_in_place(escaped, "m", &Operation::ChatCompletions).is_none());
        let v: serde_json::Value = serde_json::from_slice(&request(&meta(), &Operation::ChatCompletions, escaped).unwrap().body).unwrap();
        assert_eq!(v["model"], "gpt-4o-mini-2024");
    }

    #[test]
    fn embeddings_path() {
        let edit = request(&meta(), &Operation::Embeddings, br#"{"model":"a","input":"x"}"#).unwrap();
        assert_eq!(edit.path, "/v1/embeddings");
    }

    #[test]
    fn rejects_non_object() {
        let err = request(&meta(), &Operation::ChatCompletions, b"[1]").unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn provider_errors_become_openai_errors() {
        let e = provider_error(500, b"<html>oops</html>");
        assert_eq!((e.status(), e.kind.openai_type()), (500, "api_error"));
        let e = provider_error(503, br#"{"error":{"message":"overloaded","type":"server_error"}}"#);
        assert_eq!((e.status(), e.message.as_str()), (503, "overloaded"));
        let e = provider_error(401, br#"{"error":{"message":"Incorrect API key provided: sk-abc***wxyz"}}"#);
        assert_eq!(e.status(), 502);
        assert!(!e.message.contains("sk-"));
        let e = provider_error(400, br#"{"error":{"message":"context too long"}}"#);
        assert_eq!((e.status(), e.message.as_str()), (400, "context too long"));
        assert_eq!(provider_error(429, br#"{"message":"slow down"}"#).message, "slow down");
        assert_eq!(provider_error(422, br#"{"error":"bad field"}"#).message, "bad field");
        assert_eq!(provider_error(404, b"").status(), 502);
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "é".repeat(2000));
        assert!(provider_error(400, long.as_bytes()).message.len() <= crate::sanitize::MAX_PROVIDER_MESSAGE);
        // AWS (SageMaker's ModelError, Bedrock) says `Message`.
        let e = provider_error(424, br#"{"ErrorCode":"CLIENT_ERROR_FROM_MODEL","Message":"Received client error (400) from primary"}"#);
        assert_eq!(e.message, "Received client error (400) from primary");
        // Keys quoted in a message never reach the client.
        let e = provider_error(400, br#"{"error":{"message":"bad key sk-proj-Abc123Def456Ghi789 for tg-0123456789abcdef0123"}}"#);
        assert_eq!(e.message, "bad key [redacted] for [redacted]");
    }

    #[test]
    fn unknown_provider_is_internal_error() {
        let mut m = meta();
        m.provider = ProviderKind::Unknown;
        assert_eq!(request(&m, &Operation::ChatCompletions, b"{}").unwrap_err().status(), 500);
    }
}
