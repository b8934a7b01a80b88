//! Planning one attempt, as a pure function: from the deployment, the client operation, the
//! credential and the client body, decide the provider path, every provider header (set or
//! removed: the header map is shared by all attempts), the body to send, and how to translate
//! the response. Signing happens here, last, over exactly the bytes sent.

use std::time::{SystemTime, UNIX_EPOCH};

use tollgate_llm::openai::ChatRequest;
use tollgate_llm::openai_to_tgi::{self, PromptTemplate};
use tollgate_llm::responses_to_openai::{self, Echo};
use tollgate_llm::{anthropic_to_openai, bedrock_embeddings, bedrock_invoke, bedrock_to_openai, openai_stream, openai_to_anthropic, openai_to_bedrock, sagemaker, Chain, StreamTranslator, TranslateError, Usage};
use tollgate_llm::usage_reader::{UsageFormat, UsageReader};
use tollgate_contract::config::{self, ContainerPayload, Credential, DeploymentMeta, ProviderKind};
use crate::rewrite as provider;
use tollgate_contract::state::{BodyFacts, Operation};
use tollgate_contract::{ClientApi, ErrorKind, GatewayError};

use crate::sigv4::{sign_request, ToSign};

/// Every header some provider uses for auth or negotiation. Each attempt sets or removes all.
pub const PROVIDER_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "anthropic-version",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "accept",
];

pub const ANTHROPIC_VERSION: &str = "2023-06-01";

pub struct Attempt<'a> {
    pub meta: &'a DeploymentMeta,
    pub op: &'a Operation,
    pub credential: Option<&'a Credential>,
    pub body: &'a [u8],
    /// Used to build response ids (`chatcmpl-<request id>`).
    pub request_id: &'a str,
    pub now: SystemTime,
}

/// How the provider's (successful) response reaches the client.
pub enum ResponsePlan {
    /// Same API: bytes pass untouched, streaming included; nothing is read.
    Passthrough,
    /// Same API: bytes pass untouched, streaming included; the usage is read on the way.
    Tap(UsageReader),
    /// Buffer the whole JSON body and translate it.
    Json(JsonResponse),
    /// Translate the stream chunk by chunk.
    Stream(Box<dyn StreamTranslator>),
}

/// The API a provider answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderApi {
    /// OpenAI chat completions (the pivot): OpenAI, Azure, OpenAI-style SageMaker containers.
    OpenAi,
    Bedrock,
    Anthropic,
    /// Hugging Face TGI's generate API (a SageMaker TGI container), chat rendered with a template.
    Tgi(PromptTemplate),
}

impl ProviderApi {
    /// The deployment's provider API; an error for a provider or container payload this
    /// version does not know.
    pub fn of(meta: &DeploymentMeta) -> Result<Self, GatewayError> {
        let unknown = |what: &str| {
            GatewayError::new(
                ErrorKind::Internal,
                format!("This deployment uses a {what} this gateway version does not support."),
            )
        };
        match (meta.provider, meta.payload) {
            (ProviderKind::Unknown, _) => Err(unknown("provider")),
            (ProviderKind::Bedrock, _) => Ok(Self::Bedrock),
            (ProviderKind::Anthropic, _) => Ok(Self::Anthropic),
            (ProviderKind::Openai | ProviderKind::Azure, _) => Ok(Self::OpenAi),
            (ProviderKind::Sagemaker, None | Some(ContainerPayload::Openai)) => Ok(Self::OpenAi),
            (ProviderKind::Sagemaker, Some(ContainerPayload::Tgi { prompt_template })) => {
                let template = match prompt_template {
                    config::PromptTemplate::Llama3 => PromptTemplate::Llama3,
                    config::PromptTemplate::Chatml => PromptTemplate::Chatml,
                    config::PromptTemplate::Mistral => PromptTemplate::Mistral,
                    config::PromptTemplate::Plain => PromptTemplate::Plain,
                    config::PromptTemplate::Unknown => return Err(unknown("prompt template")),
                };
                Ok(Self::Tgi(template))
            }
            (ProviderKind::Sagemaker, Some(ContainerPayload::Unknown)) => Err(unknown("SageMaker container payload")),
        }
    }
}

/// The API the client speaks, finer than [`ClientApi`] (which decides only the error format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientWire {
    /// OpenAI chat completions and embeddings (the pivot).
    OpenAiChat,
    /// The OpenAI Responses API.
    OpenAiResponses,
    /// Anthropic Messages.
    Anthropic,
    /// Bedrock Converse / ConverseStream.
    BedrockConverse,
    /// Bedrock InvokeModel / InvokeModelWithResponseStream.
    BedrockInvoke,
}

impl ClientWire {
    pub fn of(op: &Operation) -> Self {
        match op {
            Operation::OpenAiResponses => Self::OpenAiResponses,
            Operation::AnthropicMessages => Self::Anthropic,
            Operation::BedrockConverse { .. } => Self::BedrockConverse,
            Operation::BedrockInvoke { .. } => Self::BedrockInvoke,
            Operation::ChatCompletions | Operation::Embeddings | Operation::ListModels | Operation::RetrieveModel(_) | Operation::KeyUsage => {
                Self::OpenAiChat
            }
        }
    }
}

/// A whole-body response translation: provider format → OpenAI pivot → client format.
pub struct JsonResponse {
    /// The provider's API.
    pub provider: ProviderApi,
    /// Set for Bedrock embeddings (InvokeModel), answered as an OpenAI embeddings list.
    pub embeddings: Option<(bedrock_embeddings::Family, bedrock_embeddings::Encoding)>,
    pub client: ClientWire,
    /// The Responses request's echoed fields (Responses clients only).
    pub echo: Option<Box<Echo>>,
    pub model: String,
    pub id: String,
    pub created: u64,
    /// The request's stop sequences (TGI leaves the matched one in the text).
    pub stop: Vec<String>,
}

impl JsonResponse {
    /// True when the usage is in the response header `bedrock_embeddings::INPUT_TOKEN_COUNT_HEADER`
    /// (Cohere Embed on Bedrock): the filter reads that one header and passes it on.
    pub fn wants_token_count_header(&self) -> bool {
        matches!(self.embeddings, Some((family, _)) if bedrock_embeddings::usage_from_header(family))
    }

    pub fn translate(&self, body: &[u8]) -> Result<(Vec<u8>, Usage), TranslateError> {
        self.translate_with_header_tokens(body, None)
    }

    /// `translate`, with the provider's token-count header when `wants_token_count_header`.
    pub fn translate_with_header_tokens(&self, body: &[u8], header_tokens: Option<u64>) -> Result<(Vec<u8>, Usage), TranslateError> {
        if let Some((family, encoding)) = self.embeddings {
            return bedrock_embeddings::response(body, family, encoding, &self.model, header_tokens);
        }
        let (pivot, usage) = match self.provider {
            ProviderApi::Bedrock => openai_to_bedrock::response(body, &self.model, &self.id, self.created)?,
            ProviderApi::Anthropic => openai_to_anthropic::response(body, &self.model, &self.id, self.created)?,
            ProviderApi::Tgi(_) => openai_to_tgi::response(body, &self.model, &self.id, self.created, &self.stop)?,
            ProviderApi::OpenAi => (body.to_vec(), Usage::default()),
        };
        let pivot_native = self.provider == ProviderApi::OpenAi;
        let exact = (!pivot_native).then_some(&usage);
        let keep = |(out, client_usage): (Vec<u8>, Usage)| (out, if pivot_native { client_usage } else { usage });
        match self.client {
            ClientWire::OpenAiChat => Ok((pivot, usage)),
            ClientWire::OpenAiResponses => {
                let echo = self.echo.as_deref().cloned().unwrap_or_default();
                let id = responses_to_openai::response_id(&self.id);
                responses_to_openai::response_with_usage(&pivot, &id, self.created, &self.model, &echo, exact).map(keep)
            }
            // Bedrock answers InvokeModel with Claude's own Messages JSON.
            ClientWire::Anthropic | ClientWire::BedrockInvoke => {
                let exact = (!pivot_native).then_some(&usage);
                let (out, client_usage) = anthropic_to_openai::response_with_usage(&pivot, &self.model, exact)?;
                Ok((out, if pivot_native { client_usage } else { usage }))
            }
            ClientWire::BedrockConverse => {
                let exact = (!pivot_native).then_some(&usage);
                let (out, client_usage) = bedrock_to_openai::response_with_usage(&pivot, exact)?;
                Ok((out, if pivot_native { client_usage } else { usage }))
            }
        }
    }
}

pub struct Plan {
    pub path: String,
    pub authority: String,
    /// Every header in [`PROVIDER_HEADERS`] plus `content-type`: `Some` sets, `None` removes.
    pub headers: Vec<(&'static str, Option<String>)>,
    pub body: Vec<u8>,
    /// The client's body goes to the provider as it is, with this length: `body` is empty and
    /// unused, and the body is neither read nor rewritten.
    pub body_as_sent: Option<u64>,
    pub response: ResponsePlan,
}

impl Plan {
    fn new(path: String, authority: String, body: Vec<u8>, response: ResponsePlan) -> Self {
        let mut headers: Vec<(&'static str, Option<String>)> = PROVIDER_HEADERS.iter().map(|h| (*h, None)).collect();
        headers.push(("content-type", Some("application/json".to_owned())));
        Self { path, authority, headers, body, body_as_sent: None, response }
    }

    fn with_body_as_sent(mut self, body_len: u64) -> Self {
        self.body_as_sent = Some(body_len);
        self
    }

    fn set(&mut self, name: &'static str, value: impl Into<String>) {
        if let Some(h) = self.headers.iter_mut().find(|(n, _)| *n == name) {
            h.1 = Some(value.into());
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.as_deref())
    }
}

pub fn translate_error(e: TranslateError) -> GatewayError {
    if e.is_client_fault() {
        let mut err = GatewayError::new(ErrorKind::InvalidRequest, e.to_string()).code("unsupported_for_provider");
        if let Some(p) = e.param() {
            err = err.param(p);
        }
        err
    } else {
        GatewayError::new(ErrorKind::BadGateway, format!("The provider's answer could not be translated: {e}"))
            .code("provider_translation_error")
    }
}

fn credential_missing() -> GatewayError {
    GatewayError::new(
        ErrorKind::Internal,
        "The deployment's provider credential is not configured; ask your administrator.",
    )
    .code("credential_missing")
}

/// What the provider filter knows of an attempt before reading the body.
pub struct HeaderAttempt<'a> {
    pub meta: &'a DeploymentMeta,
    pub op: &'a Operation,
    pub facts: BodyFacts,
    /// The model name the client asked for.
    pub client_model: &'a str,
    pub credential: Option<&'a Credential>,
}

/// What an attempt does with the client's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyUse {
    /// It goes to the provider byte for byte, with this length: the attempt is planned from
    /// the headers and the body is neither read nor copied.
    AsSent { len: u64 },
    /// Same API, but the body is read: the model id or the stream options change, or the
    /// signature covers it.
    Read,
    /// Another API: the body is translated.
    Translated,
}

/// How one attempt is carried out, decided once from the deployment, the operation and what
/// the gateway filter learned of the body. Every planning decision follows it: whether the
/// body is read ([`AttemptKind::needs_body`]), whether the clock is ([`AttemptKind::needs_clock`]),
/// and which plan ([`plan_from_headers`] or [`plan_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptKind {
    pub client: ClientApi,
    pub wire: ClientWire,
    pub provider: ProviderApi,
    pub body: BodyUse,
    /// SigV4 over the request (SageMaker; Bedrock without a Bedrock API key).
    pub signed: bool,
}

impl AttemptKind {
    pub fn of(h: &HeaderAttempt<'_>) -> Result<Self, GatewayError> {
        let client = h.op.client_api();
        let provider = ProviderApi::of(h.meta)?;
        let signed = match h.meta.provider {
            ProviderKind::Sagemaker => true,
            ProviderKind::Bedrock => h.credential.is_none_or(|c| c.api_key.is_none()),
            _ => false,
        };
        let same_model = h.meta.model == h.client_model;
        let as_sent = h.facts.body_len.filter(|_| same_model && !signed);
        let wire = ClientWire::of(h.op);
        let body = match (wire, provider, h.meta.provider) {
            // An OpenAI deployment that declares the Responses API gets Responses as sent.
            (ClientWire::OpenAiResponses, ProviderApi::OpenAi, ProviderKind::Openai) if h.meta.responses_api => {
                match as_sent {
                    Some(len) => BodyUse::AsSent { len },
                    None => BodyUse::Read,
                }
            }
            // Bedrock gets an InvokeModel body as sent, signed (so read).
            (ClientWire::BedrockInvoke, ProviderApi::Bedrock, _) => BodyUse::Read,
            (ClientWire::OpenAiResponses | ClientWire::BedrockInvoke, _, _) => BodyUse::Translated,
            (ClientWire::OpenAiChat, ProviderApi::OpenAi, ProviderKind::Openai | ProviderKind::Azure) => {
                let chat_stream = h.facts.stream && *h.op == Operation::ChatCompletions;
                // A stream whose client did not ask for usage: the gateway asks for it.
                match as_sent.filter(|_| !chat_stream || h.facts.include_usage) {
                    Some(len) => BodyUse::AsSent { len },
                    None => BodyUse::Read,
                }
            }
            (ClientWire::Anthropic, ProviderApi::Anthropic, _) => match as_sent {
                Some(len) => BodyUse::AsSent { len },
                None => BodyUse::Read,
            },
            (ClientWire::OpenAiChat, ProviderApi::OpenAi, _) | (ClientWire::BedrockConverse, ProviderApi::Bedrock, _) => {
                BodyUse::Read
            }
            _ => BodyUse::Translated,
        };
        Ok(Self { client, wire, provider, body, signed })
    }

    /// The kind of an attempt known only from its body-reading inputs (no body facts): the
    /// body is always read.
    fn of_attempt(a: &Attempt<'_>) -> Result<Self, GatewayError> {
        let h = HeaderAttempt { meta: a.meta, op: a.op, facts: BodyFacts::default(), client_model: "", credential: a.credential };
        Self::of(&h)
    }

    pub fn needs_body(&self) -> bool {
        !matches!(self.body, BodyUse::AsSent { .. })
    }

    /// Response ids and `created` of a translated answer, and SigV4, read the clock.
    pub fn needs_clock(&self) -> bool {
        self.signed || self.body == BodyUse::Translated
    }
}

/// Plans an attempt whose body goes to the provider byte for byte ([`BodyUse::AsSent`]) from
/// the request headers alone; `None` for any other kind.
pub fn plan_from_headers(h: &HeaderAttempt<'_>, kind: &AttemptKind) -> Option<Result<Plan, GatewayError>> {
    let BodyUse::AsSent { len } = kind.body else { return None };
    // Only the deployment, the operation and the credential are used by these providers.
    let a = Attempt { meta: h.meta, op: h.op, credential: h.credential, body: &[], request_id: "", now: UNIX_EPOCH };
    let plan = match kind.provider {
        ProviderApi::Anthropic => anthropic_plan(&a, Vec::new()),
        // A Responses stream passes through untouched (no chat usage chunk to read).
        _ => openai_as_sent(&a, h.facts.stream && *h.op == Operation::ChatCompletions),
    };
    Some(plan.map(|p| p.with_body_as_sent(len)))
}

fn openai_as_sent(a: &Attempt<'_>, stream: bool) -> Result<Plan, GatewayError> {
    let path = provider::openai_path(a.meta, a.op)?;
    let response = if stream {
        // The client asked for the usage chunk: it passes through, and is read on the way.
        ResponsePlan::Stream(Box::new(openai_stream::UsageTap::new(true)))
    } else if *a.op == Operation::OpenAiResponses {
        ResponsePlan::Tap(UsageReader::new(UsageFormat::OpenAiResponses))
    } else {
        ResponsePlan::Tap(UsageReader::new(UsageFormat::OpenAiChat))
    };
    let mut plan = Plan::new(path, a.meta.authority.clone(), Vec::new(), response);
    openai_compatible_transport(&mut plan, a, stream)?;
    Ok(plan)
}

/// Plans an attempt from its body, classifying it first.
pub fn plan(a: &Attempt<'_>) -> Result<Plan, GatewayError> {
    plan_with(a, &AttemptKind::of_attempt(a)?)
}

/// Plans an attempt of the given kind from its body.
pub fn plan_with(a: &Attempt<'_>, kind: &AttemptKind) -> Result<Plan, GatewayError> {
    match (kind.wire, kind.provider, kind.body) {
        (_, provider, BodyUse::Translated) => translated(a, kind.wire, provider),
        (ClientWire::OpenAiResponses, ProviderApi::OpenAi, _) => responses_passthrough(a),
        (ClientWire::OpenAiChat, ProviderApi::OpenAi, _) => openai_passthrough(a),
        (ClientWire::Anthropic, ProviderApi::Anthropic, _) => anthropic_passthrough(a),
        (ClientWire::BedrockConverse, ProviderApi::Bedrock, _) => bedrock_passthrough(a),
        (ClientWire::BedrockInvoke, ProviderApi::Bedrock, _) => bedrock_invoke_passthrough(a),
        (wire, provider, _) => translated(a, wire, provider),
    }
}

/// Responses to a deployment that serves them: only `model` changes; the answer (stream
/// included) passes untouched.
fn responses_passthrough(a: &Attempt<'_>) -> Result<Plan, GatewayError> {
    let path = provider::openai_path(a.meta, a.op)?;
    let body = provider::rewrite_model(a.body, &a.meta.model)?;
    let reader = UsageReader::new(UsageFormat::OpenAiResponses);
    let mut plan = Plan::new(path, a.meta.authority.clone(), body, ResponsePlan::Tap(reader));
    openai_compatible_transport(&mut plan, a, false)?;
    Ok(plan)
}

fn openai_passthrough(a: &Attempt<'_>) -> Result<Plan, GatewayError> {
    let edit = provider::request(a.meta, a.op, a.body)?;
    let response = if edit.stream {
        let tap: Box<dyn StreamTranslator> = Box::new(openai_stream::UsageTap::new(edit.client_wants_usage));
        ResponsePlan::Stream(unwrap_transport(a.meta.provider, tap))
    } else {
        ResponsePlan::Tap(UsageReader::new(UsageFormat::OpenAiChat))
    };
    let mut plan = Plan::new(edit.path, edit.authority, edit.body, response);
    openai_compatible_transport(&mut plan, a, edit.stream)?;
    Ok(plan)
}

/// Path and auth for the OpenAI-compatible providers, whose `plan.path` starts as
/// `base_path + /chat/completions` (or `/embeddings`).
fn openai_compatible_transport(plan: &mut Plan, a: &Attempt<'_>, stream: bool) -> Result<(), GatewayError> {
    let api_key = a.credential.and_then(|c| c.api_key.as_deref());
    match a.meta.provider {
        ProviderKind::Azure => {
            let version = a.meta.api_version.as_deref().unwrap_or("2024-10-21");
            plan.path = format!("{}?api-version={version}", plan.path);
            plan.set("api-key", api_key.ok_or_else(credential_missing)?);
        }
        ProviderKind::Sagemaker => {
            if !matches!(
                a.op,
                Operation::ChatCompletions
                    | Operation::AnthropicMessages
                    | Operation::BedrockConverse { .. }
                    | Operation::OpenAiResponses
                    | Operation::BedrockInvoke { .. }
            ) {
                return Err(GatewayError::new(ErrorKind::InvalidRequest, "SageMaker deployments serve chat only.")
                    .code("unsupported_for_provider"));
            }
            plan.path = format!(
                "{}{}",
                a.meta.base_path.trim_end_matches('/'),
                sagemaker::invocations_path(&a.meta.model, stream)
            );
            plan.set("accept", if stream { "application/vnd.amazon.eventstream" } else { "application/json" });
            sigv4_auth(plan, a, "sagemaker")?;
        }
        _ => match api_key {
            Some(key) => plan.set("authorization", ["Bearer ", key].concat()),
            None if a.meta.credential.is_some() => return Err(credential_missing()),
            None => {}
        },
    }
    Ok(())
}

/// SageMaker streams wrap the container's bytes in event-stream frames: unwrap them first.
fn unwrap_transport(provider: ProviderKind, next: Box<dyn StreamTranslator>) -> Box<dyn StreamTranslator> {
    match provider {
        ProviderKind::Sagemaker => Box::new(Chain { first: Box::new(sagemaker::PayloadStream::new()), second: next }),
        _ => next,
    }
}

fn anthropic_passthrough(a: &Attempt<'_>) -> Result<Plan, GatewayError> {
    anthropic_plan(a, provider::rewrite_model(a.body, &a.meta.model)?)
}

fn anthropic_plan(a: &Attempt<'_>, body: Vec<u8>) -> Result<Plan, GatewayError> {
    let path = [a.meta.base_path.trim_end_matches('/'), openai_to_anthropic::MESSAGES_SUFFIX].concat();
    let mut plan = Plan::new(path, a.meta.authority.clone(), body, ResponsePlan::Tap(UsageReader::new(UsageFormat::Anthropic)));
    anthropic_auth(&mut plan, a)?;
    Ok(plan)
}

fn bedrock_passthrough(a: &Attempt<'_>) -> Result<Plan, GatewayError> {
    let Operation::BedrockConverse { stream, .. } = a.op else {
        return Err(GatewayError::new(ErrorKind::Internal, "not a Converse request"));
    };
    let path = format!("{}{}", a.meta.base_path.trim_end_matches('/'), openai_to_bedrock::converse_path(&a.meta.model, *stream));
    let reader = UsageReader::new(UsageFormat::BedrockConverse { stream: *stream });
    let mut plan = Plan::new(path, a.meta.authority.clone(), a.body.to_vec(), ResponsePlan::Tap(reader));
    plan.set("accept", if *stream { "application/vnd.amazon.eventstream" } else { "application/json" });
    bedrock_auth(&mut plan, a)?;
    Ok(plan)
}

/// InvokeModel on Bedrock: the model's own body, as sent, to the deployment's model id.
fn bedrock_invoke_passthrough(a: &Attempt<'_>) -> Result<Plan, GatewayError> {
    let Operation::BedrockInvoke { stream, .. } = a.op else {
        return Err(GatewayError::new(ErrorKind::Internal, "not an InvokeModel request"));
    };
    let path = format!("{}{}", a.meta.base_path.trim_end_matches('/'), bedrock_invoke::invoke_path(&a.meta.model, *stream));
    let reader = UsageReader::new(UsageFormat::BedrockInvoke { stream: *stream });
    let mut plan = Plan::new(path, a.meta.authority.clone(), a.body.to_vec(), ResponsePlan::Tap(reader));
    plan.set("accept", if *stream { "application/vnd.amazon.eventstream" } else { "application/json" });
    bedrock_auth(&mut plan, a)?;
    Ok(plan)
}

fn anthropic_auth(plan: &mut Plan, a: &Attempt<'_>) -> Result<(), GatewayError> {
    let key = a.credential.and_then(|c| c.api_key.as_deref()).ok_or_else(credential_missing)?;
    plan.set("x-api-key", key);
    plan.set("anthropic-version", ANTHROPIC_VERSION);
    Ok(())
}

/// The client's request as the OpenAI pivot.
/// The client's request as the OpenAI pivot, with the echoed fields of a Responses request.
fn pivot_request(a: &Attempt<'_>, client: ClientWire) -> Result<(ChatRequest, Option<Echo>), GatewayError> {
    let req = match (client, a.op) {
        (ClientWire::OpenAiChat, _) => serde_json::from_slice(a.body).map_err(|e| {
            GatewayError::new(ErrorKind::InvalidRequest, format!("Invalid chat completion request: {e}."))
                .code("invalid_request")
        }),
        (ClientWire::OpenAiResponses, _) => {
            let (req, echo) = responses_to_openai::request(a.body).map_err(translate_error)?;
            return Ok((req, Some(echo)));
        }
        (ClientWire::Anthropic, _) => anthropic_to_openai::request(a.body).map_err(translate_error),
        (ClientWire::BedrockConverse, Operation::BedrockConverse { model, stream }) => {
            bedrock_to_openai::request(a.body, model, *stream).map_err(translate_error)
        }
        (ClientWire::BedrockInvoke, Operation::BedrockInvoke { model, stream }) => {
            if !bedrock_invoke::is_anthropic(a.body) {
                return Err(GatewayError::new(
                    ErrorKind::InvalidRequest,
                    format!(
                        "This InvokeModel body is {} model's native body, which only a Bedrock deployment can serve; \
                         this model's {:?} deployment serves the Anthropic Claude Messages body \
                         (anthropic_version: bedrock-2023-05-31) or the Converse API.",
                        bedrock_invoke::native_family(a.body),
                        a.meta.provider
                    ),
                )
                .code("unsupported_for_provider"));
            }
            bedrock_invoke::request(a.body, model, *stream).map_err(translate_error)
        }
        _ => Err(GatewayError::new(ErrorKind::Internal, "the operation does not match the client API")),
    }?;
    Ok((req, None))
}

/// OpenAI embeddings on Bedrock (InvokeModel, Titan or Cohere).
fn bedrock_embeddings_plan(a: &Attempt<'_>) -> Result<Plan, GatewayError> {
    let family = bedrock_embeddings::Family::of(&a.meta.model).ok_or_else(|| {
        GatewayError::new(
            ErrorKind::InvalidRequest,
            "This model's Bedrock deployment is not an embedding model (Titan or Cohere Embed).",
        )
        .code("unsupported_for_provider")
    })?;
    let (body, encoding) = bedrock_embeddings::request(a.body, family).map_err(translate_error)?;
    let path = format!("{}{}", a.meta.base_path.trim_end_matches('/'), bedrock_embeddings::invoke_path(&a.meta.model));
    let created = a.now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let response = ResponsePlan::Json(JsonResponse {
        provider: ProviderApi::Bedrock,
        embeddings: Some((family, encoding)),
        client: ClientWire::OpenAiChat,
        echo: None,
        model: a.meta.model.clone(),
        id: String::new(),
        created,
        stop: Vec::new(),
    });
    let mut plan = Plan::new(path, a.meta.authority.clone(), body, response);
    plan.set("accept", "application/json");
    bedrock_auth(&mut plan, a)?;
    Ok(plan)
}

fn translated(a: &Attempt<'_>, client: ClientWire, provider: ProviderApi) -> Result<Plan, GatewayError> {
    if *a.op == Operation::Embeddings && provider == ProviderApi::Bedrock {
        return bedrock_embeddings_plan(a);
    }
    if matches!(a.op, Operation::Embeddings | Operation::ListModels | Operation::RetrieveModel(_) | Operation::KeyUsage) {
        return Err(GatewayError::new(
            ErrorKind::InvalidRequest,
            format!("The {:?} deployments of this model serve chat only.", a.meta.provider),
        )
        .code("unsupported_for_provider"));
    }
    let (mut req, echo) = pivot_request(a, client)?;
    let stream = req.is_stream();
    // Anthropic and Bedrock clients always get usage at the end of a stream.
    let provider_stream_usage = req.wants_stream_usage() || client != ClientWire::OpenAiChat;
    let created = a.now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let id = format!("chatcmpl-{}", a.request_id);
    let base = a.meta.base_path.trim_end_matches('/');
    let model = a.meta.model.clone();
    let stop = req.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default();
    let response = if stream {
        let to_pivot: Option<Box<dyn StreamTranslator>> = match provider {
            ProviderApi::Bedrock => {
                Some(Box::new(openai_to_bedrock::StreamToOpenAi::new(&model, &id, created, provider_stream_usage)))
            }
            ProviderApi::Anthropic => {
                Some(Box::new(openai_to_anthropic::StreamToOpenAi::new(&model, &id, created, provider_stream_usage)))
            }
            ProviderApi::Tgi(_) => Some(unwrap_transport(
                a.meta.provider,
                Box::new(
                    openai_to_tgi::StreamToOpenAi::new(&model, &id, created, provider_stream_usage)
                        .with_stop_sequences(stop.clone()),
                ),
            )),
            ProviderApi::OpenAi => None,
        };
        let to_client: Option<Box<dyn StreamTranslator>> = match client {
            ClientWire::OpenAiChat => None,
            ClientWire::OpenAiResponses => Some(Box::new(responses_to_openai::StreamFromOpenAi::new(
                &responses_to_openai::response_id(&id),
                &model,
                created,
                echo.clone().unwrap_or_default(),
            ))),
            ClientWire::Anthropic => Some(Box::new(anthropic_to_openai::StreamFromOpenAi::new(&model))),
            ClientWire::BedrockConverse => Some(Box::new(bedrock_to_openai::StreamFromOpenAi::new())),
            ClientWire::BedrockInvoke => Some(Box::new(Chain {
                first: anthropic_to_openai::StreamFromOpenAi::new(&model),
                second: bedrock_invoke::StreamFromAnthropicSse::new(),
            })),
        };
        match (to_pivot, to_client) {
            (Some(first), Some(second)) => ResponsePlan::Stream(Box::new(Chain { first, second })),
            (Some(t), None) => ResponsePlan::Stream(t),
            (None, Some(t)) => ResponsePlan::Stream(unwrap_transport(a.meta.provider, t)),
            (None, None) => ResponsePlan::Passthrough,
        }
    } else {
        ResponsePlan::Json(JsonResponse {
            provider,
            embeddings: None,
            client,
            echo: echo.map(Box::new),
            model: model.clone(),
            id: id.clone(),
            created,
            stop: stop.clone(),
        })
    };
    match provider {
        ProviderApi::OpenAi => {
            req.model = model;
            let body = serde_json::to_vec(&req)
                .map_err(|_| GatewayError::new(ErrorKind::Internal, "could not encode the provider request"))?;
            let mut plan = Plan::new(format!("{base}/chat/completions"), a.meta.authority.clone(), body, response);
            openai_compatible_transport(&mut plan, a, stream)?;
            Ok(plan)
        }
        ProviderApi::Tgi(template) => {
            let body = openai_to_tgi::request(&req, template).map_err(translate_error)?;
            // The SageMaker transport sets the invocations path.
            let mut plan = Plan::new(String::new(), a.meta.authority.clone(), body, response);
            openai_compatible_transport(&mut plan, a, stream)?;
            Ok(plan)
        }
        ProviderApi::Bedrock => {
            let body = openai_to_bedrock::request(&req).map_err(translate_error)?;
            let path = format!("{base}{}", openai_to_bedrock::converse_path(&a.meta.model, stream));
            let mut plan = Plan::new(path, a.meta.authority.clone(), body, response);
            plan.set("accept", if stream { "application/vnd.amazon.eventstream" } else { "application/json" });
            bedrock_auth(&mut plan, a)?;
            Ok(plan)
        }
        ProviderApi::Anthropic => {
            let body = openai_to_anthropic::request(&req, &a.meta.model).map_err(translate_error)?;
            let path = format!("{base}{}", openai_to_anthropic::MESSAGES_SUFFIX);
            let mut plan = Plan::new(path, a.meta.authority.clone(), body, response);
            anthropic_auth(&mut plan, a)?;
            plan.set("accept", if stream { "text/event-stream" } else { "application/json" });
            Ok(plan)
        }
    }
}

/// Bedrock: a Bedrock API key as a bearer token, or SigV4 over the final request.
fn bedrock_auth(plan: &mut Plan, a: &Attempt<'_>) -> Result<(), GatewayError> {
    let cred = a.credential.ok_or_else(credential_missing)?;
    if let Some(key) = &cred.api_key {
        plan.set("authorization", ["Bearer ", key.as_str()].concat());
        return Ok(());
    }
    sigv4_auth(plan, a, "bedrock")
}

/// SigV4 over the final request (path, headers and body as sent).
fn sigv4_auth(plan: &mut Plan, a: &Attempt<'_>, service: &str) -> Result<(), GatewayError> {
    let aws = a.credential.and_then(|c| c.aws.as_ref()).ok_or_else(credential_missing)?;
    let region = a.meta.region.as_deref().ok_or_else(|| {
        GatewayError::new(ErrorKind::Internal, "The AWS deployment has no region.").code("config_error")
    })?;
    let accept = plan.header("accept").unwrap_or_default().to_owned();
    let signed = sign_request(
        &ToSign {
            method: "POST",
            authority: &plan.authority,
            path: &plan.path,
            headers: &[("accept", &accept), ("content-type", "application/json")],
            body: &plan.body,
            region,
            service,
        },
        aws,
        a.now,
    )
    .map_err(|e| GatewayError::new(ErrorKind::Internal, format!("SigV4 signing failed: {e}")))?;
    for (k, v) in signed {
        if let Some(name) = PROVIDER_HEADERS.iter().find(|h| **h == k) {
            plan.set(name, v);
        }
    }
    Ok(())
}

impl From<Box<dyn StreamTranslator>> for ResponsePlan {
    fn from(t: Box<dyn StreamTranslator>) -> Self {
        Self::Stream(t)
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "plan_client_apis_tests.rs"]
mod client_apis_tests;
