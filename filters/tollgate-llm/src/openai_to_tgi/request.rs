//! OpenAI chat request → TGI generate request body (see the table in the module doc).

use serde_json::Value;

use super::template::{PromptTemplate, Turn, TurnRole};
use crate::error::TranslateError;
use crate::openai::{self, ChatRequest, Content, ContentPart, Message, Role, ToolChoice};
use crate::tgi::{GenerateParameters, GenerateRequest};

/// Top-level parameters that do not change the answer and are dropped.
const DROPPED: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "prediction",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "parallel_tool_calls",
];

fn unsupported(param: impl Into<String>, reason: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported { param: param.into(), reason: reason.into() }
}

/// Translates an OpenAI chat request into a TGI generate request body (JSON bytes); the
/// request's `stream` flag selects TGI streaming.
pub fn request(req: &ChatRequest, template: PromptTemplate) -> Result<Vec<u8>, TranslateError> {
    let generate = to_generate(req, template)?;
    serde_json::to_vec(&generate)
        .map_err(|e| TranslateError::RequestParse(format!("cannot encode the request: {e}")))
}

/// The typed form of [`request`].
pub fn to_generate(req: &ChatRequest, template: PromptTemplate) -> Result<GenerateRequest, TranslateError> {
    check_parameters(req)?;
    let mut turns = Vec::with_capacity(req.messages.len());
    for (index, msg) in req.messages.iter().enumerate() {
        turns.push(turn(index, msg)?);
    }
    if turns.is_empty() {
        return Err(TranslateError::RequestParse("messages: at least one message is required".into()));
    }
    let inputs = template.render(&turns)?;
    let stream = req.is_stream();
    let mut parameters = sampling(req)?;
    parameters.max_new_tokens = max_new_tokens(req)?;
    parameters.stop = req.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default();
    parameters.stop.retain(|s| !s.is_empty());
    parameters.seed = seed(req)?;
    parameters.return_full_text = false;
    parameters.details = true;
    parameters.decoder_input_details = !stream;
    Ok(GenerateRequest { inputs, parameters, stream })
}

fn check_parameters(req: &ChatRequest) -> Result<(), TranslateError> {
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(unsupported("tools", "TGI's generate API has no tool calling"));
    }
    match &req.tool_choice {
        None => {}
        Some(ToolChoice::Mode(m)) if m == "none" || m == "auto" => {}
        Some(_) => return Err(unsupported("tool_choice", "TGI's generate API has no tool calling")),
    }
    for (name, value) in &req.rest {
        if value.is_null() || DROPPED.contains(&name.as_str()) || name == "seed" {
            continue;
        }
        let ok = openai::neutral_parameter(name, value);
        if !ok {
            let reason = match name.as_str() {
                "n" => "TGI returns one choice per request",
                "logprobs" | "top_logprobs" => "log probabilities are not returned from TGI",
                "frequency_penalty" | "presence_penalty" | "logit_bias" => {
                    "this sampling control is not mapped to TGI's generate parameters"
                }
                "response_format" => "structured output is not available through TGI's generate API",
                "functions" | "function_call" => "TGI's generate API has no function calling",
                "audio" | "modalities" => "TGI's generate API produces text only",
                _ => "this parameter is not supported for TGI deployments",
            };
            return Err(unsupported(name.clone(), reason));
        }
    }
    Ok(())
}

/// One message as a template turn: text only.
fn turn(index: usize, msg: &Message) -> Result<Turn, TranslateError> {
    let role = match msg.role {
        Role::System | Role::Developer => TurnRole::System,
        Role::User => TurnRole::User,
        Role::Assistant => TurnRole::Assistant,
        Role::Tool | Role::Function => {
            return Err(unsupported(
                format!("messages[{index}].role"),
                "TGI's generate API has no tool calling, so tool results cannot be sent",
            ))
        }
        Role::Unknown => return Err(TranslateError::RequestParse(format!("messages[{index}].role: unknown role"))),
    };
    if msg.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(unsupported(format!("messages[{index}].tool_calls"), "TGI's generate API has no tool calling"));
    }
    let text = match &msg.content {
        None => String::new(),
        Some(Content::Text(t)) => t.clone(),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match part {
                    ContentPart::Text { text: t, .. } => text.push_str(t),
                    ContentPart::ImageUrl { .. } => {
                        return Err(unsupported(
                            format!("messages[{index}].content[{j}]"),
                            "TGI's generate API takes text only (no images)",
                        ))
                    }
                    ContentPart::Unknown => {
                        return Err(unsupported(
                            format!("messages[{index}].content[{j}]"),
                            "only text parts can be sent to TGI's generate API",
                        ))
                    }
                }
            }
            text
        }
    };
    Ok(Turn { index, role, text })
}

/// `temperature` and `top_p` as TGI takes them. OpenAI samples by default (temperature 1);
/// TGI refuses `temperature: 0` and `top_p` outside (0, 1), so a temperature or top_p of 0
/// becomes greedy decoding (`do_sample: false`) and a top_p of 1 is left out (no filtering).
fn sampling(req: &ChatRequest) -> Result<GenerateParameters, TranslateError> {
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(TranslateError::RequestParse("temperature: must be between 0 and 2".into()));
        }
    }
    if let Some(p) = req.top_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(TranslateError::RequestParse("top_p: must be between 0 and 1".into()));
        }
    }
    if req.temperature == Some(0.0) || req.top_p == Some(0.0) {
        return Ok(GenerateParameters { do_sample: false, ..GenerateParameters::default() });
    }
    Ok(GenerateParameters {
        do_sample: true,
        temperature: req.temperature,
        top_p: req.top_p.filter(|p| *p < 1.0),
        ..GenerateParameters::default()
    })
}

fn max_new_tokens(req: &ChatRequest) -> Result<Option<u32>, TranslateError> {
    match req.max_output_tokens() {
        Some(0) => {
            let param = if req.max_completion_tokens.is_some() { "max_completion_tokens" } else { "max_tokens" };
            Err(TranslateError::RequestParse(format!("{param}: must be at least 1")))
        }
        other => Ok(other),
    }
}

fn seed(req: &ChatRequest) -> Result<Option<u64>, TranslateError> {
    match req.rest.get("seed") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| unsupported("seed", "TGI takes a non-negative integer seed")),
    }
}
