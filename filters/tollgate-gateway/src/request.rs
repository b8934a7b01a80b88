//! The gateway filter's decisions, as pure functions: classify the client operation,
//! authenticate the key, validate the body and resolve the model to a cluster.

use tollgate_contract::config::GatewayConfig;
use tollgate_contract::error::{ErrorKind, GatewayError};
use tollgate_contract::keys::{presented_key, KeyEntry, KeyRejection};
use tollgate_contract::keytable::Table;
pub use tollgate_contract::state::{BodyFacts, Operation};

use crate::json_scan::{self, Problem};
use crate::openai::{ChatCompletionRequest, EmbeddingsRequest, MessageRole, Model, ModelList};

/// Maps `(method, path)` to an operation. The query string is ignored.
pub fn classify(method: &str, path: &str) -> Result<Operation, GatewayError> {
    let path = path.split('?').next().unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    let (expected, op) = match path {
        "/v1/chat/completions" | "/chat/completions" => ("POST", Operation::ChatCompletions),
        "/v1/embeddings" | "/embeddings" => ("POST", Operation::Embeddings),
        "/v1/models" | "/models" => ("GET", Operation::ListModels),
        "/v1/usage" | "/usage" => ("GET", Operation::KeyUsage),
        "/v1/messages" => ("POST", Operation::AnthropicMessages),
        "/v1/responses" | "/responses" => ("POST", Operation::OpenAiResponses),
        p => match (p.strip_prefix("/v1/models/").filter(|m| !m.is_empty()), bedrock_path(p)) {
            (Some(model), _) => ("GET", Operation::RetrieveModel(percent_decode(model))),
            (None, Some(op)) => ("POST", op),
            (None, None) => {
                return Err(GatewayError::new(
                    ErrorKind::NotFound,
                    format!("Unknown request URL: {method} {}. Please check the URL and method.", truncate(path, 200)),
                )
                .code("unknown_url"))
            }
        },
    };
    if method != expected {
        return Err(GatewayError::new(
            ErrorKind::MethodNotAllowed,
            format!("Method {method} is not allowed for {}; use {expected}.", truncate(path, 200)),
        )
        .code("method_not_allowed"));
    }
    Ok(op)
}

/// `[/bedrock]/model/{modelId}/converse[-stream]` and `.../invoke[-with-response-stream]`, the
/// model id percent-decoded.
fn bedrock_path(path: &str) -> Option<Operation> {
    let rest = path.strip_prefix("/bedrock").unwrap_or(path).strip_prefix("/model/")?;
    let (model, action) = rest.rsplit_once('/')?;
    let model = percent_decode(model);
    if !(!model.is_empty() && !model.contains('/') || model.starts_with("arn:")) {
        return None;
    }
    match action {
        "converse" => Some(Operation::BedrockConverse { model, stream: false }),
        "converse-stream" => Some(Operation::BedrockConverse { model, stream: true }),
        "invoke" => Some(Operation::BedrockInvoke { model, stream: false }),
        "invoke-with-response-stream" => Some(Operation::BedrockInvoke { model, stream: true }),
        _ => None,
    }
}

/// Every routable operation takes a JSON body. A body declared as something else (`text/plain`,
/// a form, `multipart/form-data`: catalogue B-09) is refused before it is read, with what to send
/// instead. A missing `Content-Type` is read as JSON: boto3's `invoke_model` sends none unless
/// the caller passes `contentType`.
pub fn check_content_type(content_type: Option<&str>) -> Result<(), GatewayError> {
    let Some(value) = content_type else { return Ok(()) };
    let media = value.split(';').next().unwrap_or_default().trim();
    let json = media.eq_ignore_ascii_case("application/json")
        || media.len() > 5 && media.get(media.len() - 5..).is_some_and(|t| t.eq_ignore_ascii_case("+json"));
    if json {
        return Ok(());
    }
    Err(GatewayError::new(
        ErrorKind::UnsupportedMediaType,
        format!(
            "Unsupported Content-Type `{}`: this endpoint takes a JSON body. Send `Content-Type: application/json`.",
            truncate(media, 100)
        ),
    )
    .code("unsupported_media_type"))
}

pub fn authenticate(
    keys: Option<&Table>,
    authorization: Option<&str>,
    x_api_key: Option<&str>,
    now: u64,
) -> Result<KeyEntry, GatewayError> {
    authenticate_at(keys, authorization, x_api_key, || now)
}

/// As [`authenticate`], reading the clock only for a key that expires. `keys` is `None` until
/// the data plane has a key table: a presented key is then refused with a 503 (fail closed).
pub fn authenticate_at(
    keys: Option<&Table>,
    authorization: Option<&str>,
    x_api_key: Option<&str>,
    now: impl FnOnce() -> u64,
) -> Result<KeyEntry, GatewayError> {
    authenticate_with(keys, authorization, x_api_key, now, tollgate_contract::keys::digest)
}

/// As [`authenticate_at`], with the presented key's SHA-256 digest from `digest` (a worker
/// keeps the digests of the keys it authenticated: see the gateway filter's key table).
pub fn authenticate_with(
    keys: Option<&Table>,
    authorization: Option<&str>,
    x_api_key: Option<&str>,
    now: impl FnOnce() -> u64,
    digest: impl FnOnce(&str) -> tollgate_contract::keys::KeyDigest,
) -> Result<KeyEntry, GatewayError> {
    let Some(secret) = presented_key(authorization, x_api_key) else {
        return Err(GatewayError::new(
            ErrorKind::Authentication,
            "You didn't provide an API key. Send your Tollgate key in an Authorization header (Authorization: Bearer YOUR_KEY).",
        )
        .code("missing_api_key"));
    };
    let Some(keys) = keys else {
        return Err(GatewayError::new(ErrorKind::Unavailable, "The gateway has not loaded its keys yet; retry in a moment.")
            .code("keys_not_loaded"));
    };
    keys.authenticate_digest(&digest(secret), now).map_err(|r| match r {
        KeyRejection::Unknown => GatewayError::new(
            ErrorKind::Authentication,
            "Incorrect API key provided. Check the key, or ask your administrator for a new one.",
        )
        .code("invalid_api_key"),
        KeyRejection::Expired => GatewayError::new(
            ErrorKind::Authentication,
            "This API key has expired. Ask your administrator for a new one.",
        )
        .code("expired_api_key"),
    })
}

/// Where a routable request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'c> {
    pub model: String,
    pub cluster: &'c str,
    pub facts: BodyFacts,
    /// The output limit the client set (`max_tokens` and its kin; quotas reserve it), when it
    /// set one the gateway reads (not for InvokeModel, whose body is the model's own).
    pub max_output: Option<u64>,
}

/// A number read leniently: an unsigned integer, or nothing (whatever else is there, the
/// provider judges).
#[derive(Debug, Default, Clone, Copy)]
pub struct Lenient(pub Option<u64>);

impl<'de> serde::Deserialize<'de> for Lenient {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Lenient;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Lenient, E> {
                Ok(Lenient(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Lenient, E> {
                Ok(Lenient(u64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E>(self) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Lenient, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Validates the body of a routable operation and resolves its model for this key.
pub fn route<'c>(
    cfg: &'c GatewayConfig,
    key: &KeyEntry,
    op: &Operation,
    body: &[u8],
) -> Result<Route<'c>, GatewayError> {
    let mut facts = BodyFacts::default();
    let mut max_output = None;
    let model = match op {
        Operation::ChatCompletions => {
            let (model, f, max) = validate_chat(body)?;
            (facts, max_output) = (f, max);
            model
        }
        Operation::Embeddings => validate_embeddings(body)?,
        Operation::AnthropicMessages => {
            let (model, max) = validate_anthropic(body)?;
            max_output = max;
            model
        }
        Operation::BedrockConverse { model, .. } => {
            let (model, max) = validate_converse(body, model)?;
            max_output = max;
            model
        }
        Operation::BedrockInvoke { model, .. } => {
            // The body is the model's own (Anthropic, Titan, Llama...): a JSON object, checked
            // per attempt against what the deployment serves.
            parse_object::<serde::de::IgnoredAny>(body)?;
            model.clone()
        }
        Operation::OpenAiResponses => {
            let (model, f, max) = validate_responses(body)?;
            (facts, max_output) = (f, max);
            model
        }
        Operation::ListModels | Operation::RetrieveModel(_) | Operation::KeyUsage => {
            return Err(GatewayError::new(ErrorKind::Internal, "operation has no body to route"))
        }
    };
    let cluster = resolve_model(cfg, key, &model)?;
    facts.body_len = u64::try_from(body.len()).ok();
    Ok(Route { model, cluster, facts, max_output })
}

fn resolve_model<'c>(cfg: &'c GatewayConfig, key: &KeyEntry, model: &str) -> Result<&'c str, GatewayError> {
    let Some(m) = cfg.model(model) else {
        return Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("The model `{}` does not exist. List available models with GET /v1/models.", truncate(model, 200)),
        )
        .param("model")
        .code("model_not_found"));
    };
    if !key.models.permits(model) {
        return Err(GatewayError::new(
            ErrorKind::Permission,
            format!("This API key is not allowed to use the model `{}`. Ask your administrator for access.", truncate(model, 200)),
        )
        .param("model")
        .code("model_not_allowed"));
    }
    Ok(&m.cluster)
}

fn invalid_json(e: &serde_json::Error) -> GatewayError {
    let what = if e.is_syntax() || e.is_eof() {
        "We could not parse the JSON body of your request. The body must be a valid JSON object."
            .to_string()
    } else {
        format!("Invalid request body: {e}.")
    };
    GatewayError::new(ErrorKind::InvalidRequest, what).code("invalid_json")
}

fn missing(param: &str) -> GatewayError {
    GatewayError::new(ErrorKind::InvalidRequest, format!("Missing required parameter: '{param}'."))
        .param(param)
        .code("missing_required_parameter")
}

fn non_empty_model(model: Option<String>) -> Result<String, GatewayError> {
    match model {
        Some(m) if !m.is_empty() => Ok(m),
        _ => Err(missing("model")),
    }
}

/// Parses a request body that must be a JSON object. serde would also fill a struct from a JSON
/// array, and does not check UTF-8 inside strings it skips, so both are checked first.
fn parse_object<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, GatewayError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        GatewayError::new(ErrorKind::InvalidRequest, "The request body is not valid UTF-8 JSON.").code("invalid_json")
    })?;
    if !text.trim_start().starts_with('{') {
        return Err(GatewayError::new(ErrorKind::InvalidRequest, "The request body must be a JSON object.")
            .code("invalid_json"));
    }
    match json_scan::scan(body, MAX_NESTING) {
        None => {}
        Some(Problem::TooDeep) => {
            return Err(GatewayError::new(
                ErrorKind::InvalidRequest,
                format!("The request body nests arrays and objects deeper than {MAX_NESTING} levels."),
            )
            .code("invalid_json"))
        }
        Some(Problem::NumberOutOfRange) => {
            return Err(GatewayError::new(
                ErrorKind::InvalidRequest,
                "The request body has a number too large to represent (beyond ±1e308). Send it as a string or a smaller number.",
            )
            .code("invalid_json"))
        }
        Some(Problem::Forbidden(name)) => {
            return Err(GatewayError::new(
                ErrorKind::InvalidRequest,
                format!("'{name}' cannot be set by a client: the gateway chooses the provider, its address and its credentials. Remove '{name}' from the request."),
            )
            .param(name)
            .code("forbidden_parameter"))
        }
    }
    serde_json::from_str(text).map_err(|e| invalid_json(&e))
}

/// The deepest nesting any parser on the way accepts: serde_json's recursion limit (it parses
/// 127 levels), which the provider filter's parse and the translators enforce. The gateway's own
/// parse skips unknown fields without a limit, so [`json_scan::scan`] checks: a body accepted here must not fail there, where a
/// refusal would come after routing (as an upstream reset, retried and counted against the
/// deployment's health).
pub const MAX_NESTING: usize = 127;

fn validate_chat(body: &[u8]) -> Result<(String, BodyFacts, Option<u64>), GatewayError> {
    let req: ChatCompletionRequest = parse_object(body)?;
    let facts = BodyFacts {
        stream: req.stream == Some(true),
        include_usage: req.stream_options.as_ref().and_then(|o| o.get("include_usage")).and_then(serde_json::Value::as_bool)
            == Some(true),
        body_len: None,
        quotas: false,
    };
    let model = non_empty_model(req.model)?;
    let messages = req.messages.ok_or_else(|| missing("messages"))?;
    if messages.is_empty() {
        return Err(GatewayError::new(ErrorKind::InvalidRequest, "'messages' must contain at least one message.")
            .param("messages")
            .code("invalid_value"));
    }
    for (i, m) in messages.iter().enumerate() {
        match m.role {
            None => return Err(missing(&format!("messages[{i}].role"))),
            Some(MessageRole::Unknown) => {
                return Err(GatewayError::new(
                    ErrorKind::InvalidRequest,
                    format!("Invalid value for 'messages[{i}].role': expected one of system, developer, user, assistant, tool."),
                )
                .param(format!("messages[{i}].role"))
                .code("invalid_value"))
            }
            Some(_) => {}
        }
    }
    let max_output = req.max_completion_tokens.0.or(req.max_tokens.0);
    Ok((model, facts, max_output))
}

/// The fields of an Anthropic Messages request the gateway validates and routes on.
#[derive(serde::Deserialize)]
struct AnthropicRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

fn validate_anthropic(body: &[u8]) -> Result<(String, Option<u64>), GatewayError> {
    let req: AnthropicRequest = parse_object(body)?;
    let model = non_empty_model(req.model)?;
    match req.messages {
        None => return Err(missing("messages")),
        Some(m) if m.is_empty() => {
            return Err(GatewayError::new(ErrorKind::InvalidRequest, "messages: at least one message is required")
                .param("messages"))
        }
        Some(_) => {}
    }
    if req.max_tokens.is_none() {
        return Err(missing("max_tokens"));
    }
    Ok((model, req.max_tokens))
}

#[derive(serde::Deserialize)]
struct ConverseRequest {
    #[serde(default)]
    messages: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default, rename = "inferenceConfig")]
    inference_config: Option<ConverseInference>,
}

#[derive(serde::Deserialize)]
struct ConverseInference {
    #[serde(default, rename = "maxTokens")]
    max_tokens: Lenient,
}

fn validate_converse(body: &[u8], model: &str) -> Result<(String, Option<u64>), GatewayError> {
    let req: ConverseRequest = parse_object(body)?;
    if req.messages.is_none_or(|m| m.is_empty()) {
        return Err(GatewayError::new(ErrorKind::InvalidRequest, "1 validation error detected: messages must not be empty")
            .param("messages"));
    }
    Ok((model.to_owned(), req.inference_config.and_then(|c| c.max_tokens.0)))
}

#[derive(serde::Deserialize)]
struct ResponsesRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_output_tokens: Lenient,
    #[serde(default)]
    input: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    conversation: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    background: Option<bool>,
}

/// The Responses API, stateless: what needs stored responses is refused here, before routing,
/// for every deployment (a passthrough one included).
fn validate_responses(body: &[u8]) -> Result<(String, BodyFacts, Option<u64>), GatewayError> {
    let req: ResponsesRequest = parse_object(body)?;
    let model = non_empty_model(req.model)?;
    let stateless = |param: &'static str, why: &str| {
        GatewayError::new(ErrorKind::InvalidRequest, format!("'{param}' is not supported: {why}."))
            .param(param)
            .code("unsupported_parameter")
    };
    if req.previous_response_id.is_some() {
        return Err(stateless("previous_response_id", "this gateway does not store responses; send the whole conversation in 'input'"));
    }
    if req.store == Some(true) {
        return Err(stateless("store", "this gateway does not store responses; send 'store': false or leave it out"));
    }
    if req.conversation.is_some() {
        return Err(stateless("conversation", "this gateway does not keep conversations; send the whole conversation in 'input'"));
    }
    if req.background == Some(true) {
        return Err(stateless("background", "background responses need stored responses, which this gateway does not keep"));
    }
    if req.input.is_none() {
        return Err(missing("input"));
    }
    Ok((model, BodyFacts { stream: req.stream == Some(true), include_usage: false, body_len: None, quotas: false }, req.max_output_tokens.0))
}

fn validate_embeddings(body: &[u8]) -> Result<String, GatewayError> {
    let req: EmbeddingsRequest = parse_object(body)?;
    let model = non_empty_model(req.model)?;
    if req.input.is_none() {
        return Err(missing("input"));
    }
    Ok(model)
}

/// Body of `GET /v1/models`: the models this key may use.
pub fn list_models(cfg: &GatewayConfig, key: &KeyEntry) -> Vec<u8> {
    let data = cfg
        .models
        .iter()
        .filter(|m| key.models.permits(&m.name))
        .map(|m| Model { id: &m.name, object: "model", created: m.created, owned_by: &m.owned_by })
        .collect();
    serde_json::to_vec(&ModelList { object: "list", data }).unwrap_or_default()
}

/// Body of `GET /v1/models/{model}`.
pub fn retrieve_model(cfg: &GatewayConfig, key: &KeyEntry, name: &str) -> Result<Vec<u8>, GatewayError> {
    resolve_model(cfg, key, name)?;
    let m = cfg.model(name).ok_or_else(|| GatewayError::new(ErrorKind::Internal, "model vanished"))?;
    let model = Model { id: &m.name, object: "model", created: m.created, owned_by: &m.owned_by };
    serde_json::to_vec(&model).map_err(|_| GatewayError::new(ErrorKind::Internal, "could not encode model"))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Decodes `%XX` escapes (two hex digits; anything else stays as it is). Works on bytes: the
/// path may hold any byte after `%`, and slicing the `str` there could cut a character (a panic
/// the fuzzer found with `%2\xff`).
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let (Some(hi), Some(lo)) = (bytes.get(i + 1).and_then(|&h| hex(h)), bytes.get(i + 2).and_then(|&l| hex(l))) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The least output limit [`with_output_limit`] may set for `op` (a quota's `fit_output`
/// lowering a request), or `None` when it cannot lower it: InvokeModel's body is the model's
/// own, and embeddings produce no output. OpenAI's Responses API refuses a
/// `max_output_tokens` below 16; the others take 1.
pub fn least_output_limit(op: &Operation) -> Option<u64> {
    match op {
        Operation::ChatCompletions | Operation::AnthropicMessages | Operation::BedrockConverse { .. } => Some(1),
        Operation::OpenAiResponses => Some(16),
        _ => None,
    }
}

/// `body` with its output limit set to `limit`, in the client API's words: OpenAI chat's
/// `max_completion_tokens` and `max_tokens` (whichever the client set, both if both;
/// `max_tokens` if neither, which every OpenAI-style server reads), Anthropic's `max_tokens`,
/// Converse's `inferenceConfig.maxTokens`, Responses' `max_output_tokens`. `None` for an
/// operation [`least_output_limit`] refuses, or a body that is not a JSON object (validated
/// already: not expected).
pub fn with_output_limit(op: &Operation, body: &[u8], limit: u64) -> Option<Vec<u8>> {
    let mut doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    let n = serde_json::Value::from(limit);
    match op {
        Operation::ChatCompletions => {
            let mut set = false;
            for field in ["max_completion_tokens", "max_tokens"] {
                if doc.get(field).is_some_and(|v| !v.is_null()) {
                    doc.insert(field.to_owned(), n.clone());
                    set = true;
                }
            }
            if !set {
                doc.insert("max_tokens".to_owned(), n);
            }
        }
        Operation::AnthropicMessages => {
            doc.insert("max_tokens".to_owned(), n);
        }
        Operation::OpenAiResponses => {
            doc.insert("max_output_tokens".to_owned(), n);
        }
        Operation::BedrockConverse { .. } => {
            let config = doc.entry("inferenceConfig").or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !config.is_object() {
                *config = serde_json::Value::Object(Default::default());
            }
            config.as_object_mut()?.insert("maxTokens".to_owned(), n);
        }
        _ => return None,
    }
    serde_json::to_vec(&doc).ok()
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
