//! `tollgate-sdk-probe`: the official AWS Rust SDK (`aws-sdk-bedrockruntime`) pointed at the
//! gateway, configured the way a user of the SDK would, for `tests/e2e/test_rust_sdk.py`.
//!
//! ```text
//! AWS_BEARER_TOKEN_BEDROCK=<gateway key> AWS_REGION=us-east-1 \
//!   tollgate-sdk-probe --endpoint-url http://127.0.0.1:8080/bedrock --model gpt-4o-mini
//! ```
//!
//! It runs the scenarios asked for (`--scenario converse,tools,stream`, default all): a text
//! Converse; a Converse with a tool that the model calls, then the follow-up turn carrying the
//! tool result; a ConverseStream whose text deltas, stop reason and usage it collects. It prints
//! one JSON object on stdout with what the SDK returned and exits 0; on the first SDK error it
//! prints `{"error": {...}}` (the modeled exception, error code, message, HTTP status and
//! `x-amzn-errortype`) and exits 1. Bad arguments exit 2.
//!
//! `--ca-file PEM` trusts a private CA too, for a gateway serving TLS with its own certificate.
//!
//! Authentication (`--auth`):
//! - `env` (default): `aws_config::defaults(..).load()` reads the Bedrock API key from
//!   `AWS_BEARER_TOKEN_BEDROCK` and then prefers bearer auth to SigV4, exactly as for AWS itself;
//! - `explicit`: no `aws-config`; the key (still read from `AWS_BEARER_TOKEN_BEDROCK`) is given
//!   to `Config::builder().bearer_token(..)`, with bearer auth preferred over SigV4.

use std::collections::BTreeMap;
use std::process::ExitCode;

use aws_config::BehaviorVersion;
use aws_sdk_bedrockruntime::config::{Region, Token};
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::{ConverseError, ConverseOutput};
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ConversationRole, ConverseOutput as ConverseResult, ConverseStreamOutput,
    InferenceConfiguration, Message, SystemContentBlock, TokenUsage, Tool, ToolConfiguration, ToolInputSchema,
    ToolResultBlock, ToolResultContentBlock, ToolSpecification, ToolUseBlock,
};
use aws_sdk_bedrockruntime::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::Builder as HttpClientBuilder;
use aws_smithy_types::{Document, Number};
use serde_json::{json, Map, Value};

const KEY_ENV: &str = "AWS_BEARER_TOKEN_BEDROCK";
const TOOL_QUESTION: &str = "what is the weather in Paris";
const TOOL_RESULT: &str = "sunny";
const USAGE: &str = "usage: tollgate-sdk-probe --endpoint-url URL --model MODEL_ID [--prompt TEXT] \
[--system TEXT] [--max-tokens N] [--scenario converse,tools,stream] [--auth env|explicit] [--region REGION] [--ca-file PEM]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Converse,
    Tools,
    Stream,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Converse => "converse",
            Scenario::Tools => "tools",
            Scenario::Stream => "stream",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Env,
    Explicit,
}

#[derive(Debug)]
struct Args {
    endpoint_url: String,
    model: String,
    prompt: String,
    system: Option<String>,
    max_tokens: Option<i32>,
    scenarios: Vec<Scenario>,
    auth: Auth,
    region: Option<String>,
    /// Trust this CA (PEM) too, for a gateway serving TLS with a private certificate.
    ca_file: Option<String>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut endpoint_url, mut model, mut system, mut max_tokens, mut region, mut ca_file) =
        (None, None, None, None, None, None);
    let mut prompt = "hello from the rust sdk".to_owned();
    let mut scenarios = vec![Scenario::Converse, Scenario::Tools, Scenario::Stream];
    let mut auth = Auth::Env;
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint-url" => endpoint_url = Some(value()?),
            "--model" => model = Some(value()?),
            "--prompt" => prompt = value()?,
            "--system" => system = Some(value()?),
            "--region" => region = Some(value()?),
            "--ca-file" => ca_file = Some(value()?),
            "--max-tokens" => {
                let text = value()?;
                max_tokens = Some(text.parse().map_err(|_| format!("--max-tokens: not a number: {text}"))?);
            }
            "--auth" => {
                auth = match value()?.as_str() {
                    "env" => Auth::Env,
                    "explicit" => Auth::Explicit,
                    other => return Err(format!("--auth: expected env or explicit, got {other}")),
                }
            }
            "--scenario" => {
                scenarios = value()?
                    .split(',')
                    .map(|name| match name.trim() {
                        "converse" => Ok(Scenario::Converse),
                        "tools" => Ok(Scenario::Tools),
                        "stream" => Ok(Scenario::Stream),
                        other => Err(format!("--scenario: unknown scenario {other}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        endpoint_url: endpoint_url.ok_or("--endpoint-url is required")?,
        model: model.ok_or("--model is required")?,
        prompt,
        system,
        max_tokens,
        scenarios,
        auth,
        region,
        ca_file,
    })
}

/// A client configured as a user would: the endpoint is the gateway, the credential is the
/// gateway key as a Bedrock API key.
async fn client(args: &Args) -> Result<Client, String> {
    let region = args.region.clone().map(Region::new);
    // The SDK's default HTTP client (hyper 1 + rustls), with ring instead of aws-lc for crypto.
    let mut http_client = HttpClientBuilder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("--ca-file {path}: {e}"))?;
        let trust = tls::TrustStore::default().with_pem_certificate(pem);
        let context =
            tls::TlsContext::builder().with_trust_store(trust).build().map_err(|e| format!("--ca-file {path}: {e}"))?;
        http_client = http_client.tls_context(context);
    }
    let http_client = http_client.build_https();
    let config = match args.auth {
        Auth::Env => {
            let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client);
            if let Some(region) = region {
                loader = loader.region(region);
            }
            let shared = loader.load().await;
            aws_sdk_bedrockruntime::config::Builder::from(&shared).endpoint_url(&args.endpoint_url).build()
        }
        Auth::Explicit => {
            let key = std::env::var(KEY_ENV).map_err(|_| format!("{KEY_ENV} is not set"))?;
            aws_sdk_bedrockruntime::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .http_client(http_client)
                .region(region.unwrap_or_else(|| Region::new("us-east-1")))
                .endpoint_url(&args.endpoint_url)
                .bearer_token(Token::new(key, None))
                .auth_scheme_preference([aws_smithy_runtime_api::client::auth::http::HTTP_BEARER_AUTH_SCHEME_ID])
                .build()
        }
    };
    Ok(Client::from_conf(config))
}

/// What went wrong, as the SDK reports it.
#[derive(Debug)]
struct Failure {
    scenario: &'static str,
    operation: &'static str,
    /// The modeled exception the SDK parsed (`AccessDeniedException`...), or how the call failed
    /// before there was one (`dispatch`, `timeout`, `response`, `construction`, `Unhandled`).
    kind: String,
    code: Option<String>,
    message: Option<String>,
    http_status: Option<u16>,
    error_type_header: Option<String>,
    display: String,
}

impl Failure {
    fn other(scenario: Scenario, operation: &'static str, message: String) -> Self {
        Failure {
            scenario: scenario.name(),
            operation,
            kind: "probe".to_owned(),
            code: None,
            message: Some(message.clone()),
            http_status: None,
            error_type_header: None,
            display: message,
        }
    }

    fn to_json(&self) -> Value {
        json!({"error": {
            "scenario": self.scenario, "operation": self.operation, "kind": self.kind,
            "code": self.code, "message": self.message, "http_status": self.http_status,
            "x_amzn_errortype": self.error_type_header, "display": self.display,
        }})
    }
}

/// The name of the modeled exception an operation error is.
trait ExceptionName {
    fn exception_name(&self) -> &'static str;
}

macro_rules! exception_names {
    ($ty:ident { $($variant:ident),* $(,)? }) => {
        impl ExceptionName for $ty {
            fn exception_name(&self) -> &'static str {
                match self {
                    $($ty::$variant(_) => stringify!($variant),)*
                    _ => "Unhandled",
                }
            }
        }
    };
}

exception_names!(ConverseError {
    AccessDeniedException,
    InternalServerException,
    ModelErrorException,
    ModelNotReadyException,
    ModelTimeoutException,
    ResourceNotFoundException,
    ServiceUnavailableException,
    ThrottlingException,
    ValidationException,
});
exception_names!(ConverseStreamError {
    AccessDeniedException,
    InternalServerException,
    ModelErrorException,
    ModelNotReadyException,
    ModelTimeoutException,
    ResourceNotFoundException,
    ServiceUnavailableException,
    ThrottlingException,
    ValidationException,
    ModelStreamErrorException,
});
exception_names!(ConverseStreamOutputError {
    InternalServerException,
    ModelStreamErrorException,
    ServiceUnavailableException,
    ThrottlingException,
    ValidationException,
});

fn failure<E, R>(scenario: Scenario, operation: &'static str, err: SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + ExceptionName + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
    SdkError<E, R>: std::error::Error + 'static,
{
    let display = DisplayErrorContext(&err).to_string();
    let (http_status, error_type_header) = match raw_http(&err) {
        Some(resp) => (Some(resp.status().as_u16()), resp.headers().get("x-amzn-errortype").map(str::to_owned)),
        None => (None, None),
    };
    let (kind, code, message) = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            (e.exception_name().to_owned(), e.code().map(str::to_owned), e.message().map(str::to_owned))
        }
        SdkError::ConstructionFailure(_) => ("construction".to_owned(), None, source_text(&err)),
        SdkError::TimeoutError(_) => ("timeout".to_owned(), None, source_text(&err)),
        SdkError::DispatchFailure(_) => ("dispatch".to_owned(), None, source_text(&err)),
        SdkError::ResponseError(_) => ("response".to_owned(), None, source_text(&err)),
        _ => ("unknown".to_owned(), None, source_text(&err)),
    };
    Failure { scenario: scenario.name(), operation, kind, code, message, http_status, error_type_header, display }
}

/// The HTTP response behind an SDK error, when there was one (not for event-stream errors).
fn raw_http<E, R: 'static>(err: &SdkError<E, R>) -> Option<&aws_smithy_runtime_api::http::Response> {
    let raw: &dyn std::any::Any = err.raw_response()?;
    raw.downcast_ref()
}

fn source_text(err: &dyn std::error::Error) -> Option<String> {
    err.source().map(|s| DisplayErrorContext(s).to_string())
}

// ---- JSON <-> smithy Document ------------------------------------------------------------------

fn to_document(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(items) => Document::Array(items.iter().map(to_document).collect()),
        Value::Object(map) => Document::Object(map.iter().map(|(k, v)| (k.clone(), to_document(v))).collect()),
    }
}

fn to_json(doc: &Document) -> Value {
    match doc {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => json!(u),
        Document::Number(Number::NegInt(i)) => json!(i),
        Document::Number(Number::Float(f)) => json!(f),
        Document::String(s) => Value::String(s.clone()),
        Document::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Document::Object(map) => {
            let sorted: BTreeMap<_, _> = map.iter().collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), to_json(v))).collect::<Map<_, _>>())
        }
    }
}

// ---- the scenarios ----------------------------------------------------------------------------

fn usage_json(usage: Option<&TokenUsage>) -> Value {
    usage.map_or(Value::Null, |u| {
        json!({
            "input_tokens": u.input_tokens(), "output_tokens": u.output_tokens(),
            "total_tokens": u.total_tokens(), "cache_read_input_tokens": u.cache_read_input_tokens(),
            "cache_write_input_tokens": u.cache_write_input_tokens(),
        })
    })
}

fn text_message(role: ConversationRole, text: &str) -> Result<Message, String> {
    Message::builder().role(role).content(ContentBlock::Text(text.to_owned())).build().map_err(|e| e.to_string())
}

fn output_message(out: &ConverseOutput) -> Option<&Message> {
    match out.output() {
        Some(ConverseResult::Message(message)) => Some(message),
        _ => None,
    }
}

fn message_text(message: Option<&Message>) -> String {
    message
        .map(|m| m.content().iter().filter_map(|b| b.as_text().ok()).map(String::as_str).collect::<Vec<_>>().join(""))
        .unwrap_or_default()
}

async fn converse(client: &Client, args: &Args) -> Result<Value, Failure> {
    let scenario = Scenario::Converse;
    let user =
        text_message(ConversationRole::User, &args.prompt).map_err(|e| Failure::other(scenario, "Converse", e))?;
    let mut request = client.converse().model_id(&args.model).messages(user);
    if let Some(system) = &args.system {
        request = request.system(SystemContentBlock::Text(system.clone()));
    }
    if let Some(max_tokens) = args.max_tokens {
        request = request.inference_config(InferenceConfiguration::builder().max_tokens(max_tokens).build());
    }
    let out = request.send().await.map_err(|e| failure(scenario, "Converse", e))?;
    Ok(json!({
        "text": message_text(output_message(&out)),
        "role": output_message(&out).map(|m| m.role().as_str()),
        "stop_reason": out.stop_reason().as_str(),
        "usage": usage_json(out.usage()),
        "latency_ms": out.metrics().map(|m| m.latency_ms()),
    }))
}

fn weather_tool() -> Result<ToolConfiguration, String> {
    let schema = json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]});
    let spec = ToolSpecification::builder()
        .name("get_weather")
        .description("The current weather in a city")
        .input_schema(ToolInputSchema::Json(to_document(&schema)))
        .build()
        .map_err(|e| e.to_string())?;
    ToolConfiguration::builder().tools(Tool::ToolSpec(spec)).build().map_err(|e| e.to_string())
}

async fn tools(client: &Client, args: &Args) -> Result<Value, Failure> {
    let scenario = Scenario::Tools;
    let bad = |e: String| Failure::other(scenario, "Converse", e);
    let tool_config = weather_tool().map_err(bad)?;
    let question = text_message(ConversationRole::User, TOOL_QUESTION).map_err(bad)?;
    let first = client
        .converse()
        .model_id(&args.model)
        .messages(question.clone())
        .tool_config(tool_config.clone())
        .send()
        .await
        .map_err(|e| failure(scenario, "Converse", e))?;
    let assistant = output_message(&first).cloned().ok_or_else(|| bad("the first answer has no message".to_owned()))?;
    let tool_use: ToolUseBlock =
        assistant.content().iter().find_map(|b| b.as_tool_use().ok()).cloned().ok_or_else(|| {
            bad(format!("no toolUse in the first answer (stopReason {})", first.stop_reason().as_str()))
        })?;
    let result = ToolResultBlock::builder()
        .tool_use_id(tool_use.tool_use_id())
        .content(ToolResultContentBlock::Text(TOOL_RESULT.to_owned()))
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let answer = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::ToolResult(result))
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let second = client
        .converse()
        .model_id(&args.model)
        .messages(question)
        .messages(assistant)
        .messages(answer)
        .tool_config(tool_config)
        .send()
        .await
        .map_err(|e| failure(scenario, "Converse", e))?;
    Ok(json!({
        "question": TOOL_QUESTION,
        "tool_result": TOOL_RESULT,
        "first_stop_reason": first.stop_reason().as_str(),
        "first_text": message_text(output_message(&first)),
        "first_usage": usage_json(first.usage()),
        "tool_use": {"id": tool_use.tool_use_id(), "name": tool_use.name(), "input": to_json(tool_use.input())},
        "final_text": message_text(output_message(&second)),
        "final_stop_reason": second.stop_reason().as_str(),
        "final_usage": usage_json(second.usage()),
    }))
}

async fn stream(client: &Client, args: &Args) -> Result<Value, Failure> {
    let scenario = Scenario::Stream;
    let user = text_message(ConversationRole::User, &args.prompt)
        .map_err(|e| Failure::other(scenario, "ConverseStream", e))?;
    let mut request = client.converse_stream().model_id(&args.model).messages(user);
    if let Some(system) = &args.system {
        request = request.system(SystemContentBlock::Text(system.clone()));
    }
    if let Some(max_tokens) = args.max_tokens {
        request = request.inference_config(InferenceConfiguration::builder().max_tokens(max_tokens).build());
    }
    let mut out = request.send().await.map_err(|e| failure(scenario, "ConverseStream", e))?;
    let (mut text, mut deltas, mut stop_reason, mut usage) = (String::new(), Vec::new(), None, Value::Null);
    let mut events: BTreeMap<&'static str, u32> = BTreeMap::new();
    while let Some(event) = out.stream.recv().await.map_err(|e| failure(scenario, "ConverseStream events", e))? {
        let name = match &event {
            ConverseStreamOutput::MessageStart(_) => "messageStart",
            ConverseStreamOutput::ContentBlockStart(_) => "contentBlockStart",
            ConverseStreamOutput::ContentBlockDelta(delta) => {
                if let Some(ContentBlockDelta::Text(piece)) = delta.delta() {
                    text.push_str(piece);
                    deltas.push(piece.clone());
                }
                "contentBlockDelta"
            }
            ConverseStreamOutput::ContentBlockStop(_) => "contentBlockStop",
            ConverseStreamOutput::MessageStop(stop) => {
                stop_reason = Some(stop.stop_reason().as_str().to_owned());
                "messageStop"
            }
            ConverseStreamOutput::Metadata(metadata) => {
                usage = usage_json(metadata.usage());
                "metadata"
            }
            _ => "unknown",
        };
        *events.entry(name).or_default() += 1;
    }
    Ok(json!({"text": text, "deltas": deltas, "stop_reason": stop_reason, "usage": usage, "events": events}))
}

async fn run(args: &Args) -> Result<Value, Failure> {
    let first = args.scenarios.first().copied().unwrap_or(Scenario::Converse);
    let client = client(args).await.map_err(|e| Failure::other(first, "client", e))?;
    let mut summary = Map::new();
    summary.insert("model".to_owned(), json!(args.model));
    for scenario in &args.scenarios {
        let result = match scenario {
            Scenario::Converse => converse(&client, args).await?,
            Scenario::Tools => tools(&client, args).await?,
            Scenario::Stream => stream(&client, args).await?,
        };
        summary.insert(scenario.name().to_owned(), result);
    }
    Ok(Value::Object(summary))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("tollgate-sdk-probe: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("{}", failure.to_json());
            eprintln!("tollgate-sdk-probe: {} failed: {}", failure.operation, failure.display);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments_parse_and_default() {
        let a = args(&["--endpoint-url", "http://h/bedrock", "--model", "m"]).unwrap();
        assert_eq!(a.scenarios, vec![Scenario::Converse, Scenario::Tools, Scenario::Stream]);
        assert_eq!(a.auth, Auth::Env);
        let a = args(&["--endpoint-url", "u", "--model", "m", "--scenario", "stream,converse", "--auth", "explicit"])
            .unwrap();
        assert_eq!(a.scenarios, vec![Scenario::Stream, Scenario::Converse]);
        assert_eq!(a.auth, Auth::Explicit);
        assert!(args(&["--model", "m"]).unwrap_err().contains("--endpoint-url"));
        assert!(args(&["--endpoint-url", "u", "--model", "m", "--scenario", "nope"]).is_err());
        assert!(args(&["--endpoint-url"]).unwrap_err().contains("needs a value"));
    }

    #[test]
    fn json_round_trips_through_documents() {
        let value = json!({"a": [1, -2, 2.5, "x", null, true], "b": {"c": {}}});
        assert_eq!(to_json(&to_document(&value)), value);
    }
}
