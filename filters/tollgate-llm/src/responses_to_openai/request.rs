//! A Responses request body → the chat pivot.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::TranslateError;
use crate::openai::{
    ChatRequest, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl, Message, NamedFunction, NamedToolChoice,
    Role, StreamOptions, Tool, ToolCall, ToolChoice,
};

/// The request fields a Response object repeats back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Echo {
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub parallel_tool_calls: bool,
    pub tool_choice: Value,
    pub tools: Value,
    pub text: Value,
    pub user: Option<String>,
    pub metadata: Value,
    pub reasoning_effort: Option<String>,
}

#[derive(Deserialize)]
struct ResponsesRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    service_tier: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    prompt: Option<Value>,
}

fn unsupported(param: &str, reason: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported { param: param.to_owned(), reason: reason.into() }
}

/// Why a stateless gateway refuses a Responses request, naming the parameter; `None` when it
/// does not. The gateway filter asks this before routing, so a passthrough deployment refuses
/// the same requests as a translated one.
pub fn stateful_parameter(body: &Value) -> Option<(&'static str, &'static str)> {
    let set = |name: &str| body.get(name).is_some_and(|v| !v.is_null());
    if set("previous_response_id") {
        return Some(("previous_response_id", "this gateway does not store responses; send the whole conversation in 'input'"));
    }
    if body.get("store") == Some(&Value::Bool(true)) {
        return Some(("store", "this gateway does not store responses; send 'store': false or leave it out"));
    }
    if set("conversation") {
        return Some(("conversation", "this gateway does not keep conversations; send the whole conversation in 'input'"));
    }
    if body.get("background") == Some(&Value::Bool(true)) {
        return Some(("background", "background responses need stored responses, which this gateway does not keep"));
    }
    None
}

/// Translates a Responses request; `model` as the client sent it (the provider translator
/// replaces it).
pub fn request(body: &[u8]) -> Result<(ChatRequest, Echo), TranslateError> {
    let raw: Value = serde_json::from_slice(body).map_err(|e| TranslateError::RequestParse(e.to_string()))?;
    if let Some((param, reason)) = stateful_parameter(&raw) {
        return Err(unsupported(param, reason));
    }
    let req: ResponsesRequest = serde_json::from_value(raw).map_err(|e| TranslateError::RequestParse(e.to_string()))?;
    if req.prompt.as_ref().is_some_and(|p| !p.is_null()) {
        return Err(unsupported("prompt", "stored prompt templates are not available through this gateway"));
    }
    let mut messages = Vec::new();
    if let Some(text) = &req.instructions {
        messages.push(message(Role::System, Some(Content::Text(text.clone()))));
    }
    match &req.input {
        None | Some(Value::Null) => return Err(TranslateError::RequestParse("'input' is required".to_owned())),
        Some(Value::String(s)) => messages.push(message(Role::User, Some(Content::Text(s.clone())))),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages)?;
            }
        }
        Some(_) => return Err(TranslateError::RequestParse("'input' must be a string or a list of items".to_owned())),
    }
    if messages.iter().all(|m| m.role == Role::System) {
        return Err(TranslateError::RequestParse("'input' must contain at least one message".to_owned()));
    }
    let tools = req.tools.as_deref().unwrap_or_default();
    let chat_tools = tools.iter().enumerate().map(|(i, t)| tool(t, i)).collect::<Result<Vec<_>, _>>()?;
    let tool_choice = req.tool_choice.as_ref().map(tool_choice).transpose()?;
    let mut rest = Map::new();
    if let Some(p) = req.parallel_tool_calls {
        rest.insert("parallel_tool_calls".to_owned(), Value::Bool(p));
    }
    if let Some(user) = &req.user {
        rest.insert("user".to_owned(), Value::String(user.clone()));
    }
    if let Some(tier) = req.service_tier.clone().filter(|v| !v.is_null()) {
        rest.insert("service_tier".to_owned(), tier);
    }
    if let Some(format) = req.text.as_ref().and_then(|t| t.get("format")).filter(|f| !f.is_null()) {
        if let Some(rf) = response_format(format)? {
            rest.insert("response_format".to_owned(), rf);
        }
    }
    let effort = req.reasoning.as_ref().and_then(|r| r.get("effort")).and_then(Value::as_str).map(str::to_owned);
    if let Some(e) = &effort {
        rest.insert("reasoning_effort".to_owned(), Value::String(e.clone()));
    }
    let stream = req.stream == Some(true);
    let echo = Echo {
        instructions: req.instructions.clone(),
        max_output_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        tool_choice: req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        tools: Value::Array(tools.to_vec()),
        text: req.text.clone().filter(|t| !t.is_null()).unwrap_or_else(|| json!({"format": {"type": "text"}})),
        user: req.user.clone(),
        metadata: req.metadata.clone().filter(|m| !m.is_null()).unwrap_or_else(|| json!({})),
        reasoning_effort: effort,
    };
    let chat = ChatRequest {
        model: req.model,
        messages,
        stream: stream.then_some(true),
        stream_options: stream.then(|| StreamOptions { include_usage: Some(true), rest: Map::new() }),
        max_tokens: None,
        max_completion_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: None,
        tools: (!chat_tools.is_empty()).then_some(chat_tools),
        tool_choice,
        rest,
    };
    Ok((chat, echo))
}

fn message(role: Role, content: Option<Content>) -> Message {
    Message { role, content, name: None, tool_calls: None, tool_call_id: None, rest: Map::new() }
}

fn str_field<'v>(v: &'v Value, name: &str, at: &str) -> Result<&'v str, TranslateError> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::RequestParse(format!("'{at}.{name}' must be a string")))
}

fn input_item(item: &Value, i: usize, messages: &mut Vec<Message>) -> Result<(), TranslateError> {
    let at = format!("input[{i}]");
    let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
    match kind {
        "message" => {
            let role = match item.get("role").and_then(Value::as_str) {
                Some("user") => Role::User,
                Some("system") => Role::System,
                Some("developer") => Role::Developer,
                Some("assistant") => Role::Assistant,
                _ => {
                    return Err(TranslateError::RequestParse(format!(
                        "'{at}.role' must be one of user, system, developer, assistant"
                    )))
                }
            };
            let content = match item.get("content") {
                Some(Value::String(s)) => Content::Text(s.clone()),
                Some(Value::Array(parts)) => {
                    let parts =
                        parts.iter().enumerate().map(|(j, p)| part(p, &format!("{at}.content[{j}]"))).collect::<Result<Vec<_>, _>>()?;
                    if role == Role::Assistant {
                        Content::from_assistant_parts(parts).unwrap_or(Content::Text(String::new()))
                    } else if parts.iter().all(|p| matches!(p, ContentPart::Text { .. })) && parts.len() == 1 {
                        Content::Text(Content::Parts(parts).text())
                    } else {
                        Content::Parts(parts)
                    }
                }
                _ => return Err(TranslateError::RequestParse(format!("'{at}.content' must be a string or a list of parts"))),
            };
            messages.push(message(role, Some(content)));
        }
        "function_call" => {
            let call = ToolCall {
                id: str_field(item, "call_id", &at)?.to_owned(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: str_field(item, "name", &at)?.to_owned(),
                    arguments: str_field(item, "arguments", &at)?.to_owned(),
                },
            };
            // Calls join the assistant message just before them (text then calls, as one turn).
            match messages.last_mut() {
                Some(last) if last.role == Role::Assistant => last.tool_calls.get_or_insert_with(Vec::new).push(call),
                _ => {
                    let mut m = message(Role::Assistant, None);
                    m.tool_calls = Some(vec![call]);
                    messages.push(m);
                }
            }
        }
        "function_call_output" => {
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .enumerate()
                    .map(|(j, p)| match p.get("type").and_then(Value::as_str) {
                        Some("input_text" | "output_text") => Ok(p.get("text").and_then(Value::as_str).unwrap_or("")),
                        _ => Err(unsupported(
                            &format!("{at}.output[{j}]"),
                            "only text parts can be sent back as a function call's output",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(""),
                _ => return Err(TranslateError::RequestParse(format!("'{at}.output' must be a string or a list of parts"))),
            };
            let mut m = message(Role::Tool, Some(Content::Text(output)));
            m.tool_call_id = Some(str_field(item, "call_id", &at)?.to_owned());
            messages.push(m);
        }
        "reasoning" => {}
        "item_reference" => {
            return Err(unsupported(&at, "item references need stored responses, which this gateway does not keep"))
        }
        other => {
            return Err(unsupported(&format!("{at}.type"), format!("input items of type '{}' cannot be served here", truncate(other))))
        }
    }
    Ok(())
}

fn part(p: &Value, at: &str) -> Result<ContentPart, TranslateError> {
    match p.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => {
            Ok(ContentPart::Text { text: str_field(p, "text", at)?.to_owned(), cache_control: None })
        }
        Some("input_image") => match p.get("image_url").and_then(Value::as_str) {
            Some(url) => Ok(ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: url.to_owned(),
                    detail: p.get("detail").and_then(Value::as_str).filter(|d| *d != "auto").map(str::to_owned),
                },
            }),
            None => Err(unsupported(&format!("{at}.file_id"), "images by file id need the Files API; send image_url")),
        },
        Some("refusal") => Ok(ContentPart::Text { text: str_field(p, "refusal", at)?.to_owned(), cache_control: None }),
        Some(other) => Err(unsupported(&format!("{at}.type"), format!("content parts of type '{}' cannot be served here", truncate(other)))),
        None => Err(TranslateError::RequestParse(format!("'{at}.type' is required"))),
    }
}

fn tool(t: &Value, i: usize) -> Result<Tool, TranslateError> {
    let at = format!("tools[{i}]");
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {
            // `strict` has no place in the pivot's function: the provider's default applies.
            Ok(Tool {
                kind: "function".to_owned(),
                function: FunctionDef {
                    name: str_field(t, "name", &at)?.to_owned(),
                    description: t.get("description").and_then(Value::as_str).map(str::to_owned),
                    parameters: t.get("parameters").cloned().filter(|p| !p.is_null()),
                },
            })
        }
        Some(other) => Err(unsupported(
            &format!("{at}.type"),
            format!("hosted tools ('{}') are not available through this gateway; use function tools", truncate(other)),
        )),
        None => Err(TranslateError::RequestParse(format!("'{at}.type' is required"))),
    }
}

fn tool_choice(c: &Value) -> Result<ToolChoice, TranslateError> {
    match c {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Ok(ToolChoice::Mode(s.clone())),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name").and_then(Value::as_str).ok_or_else(|| {
                TranslateError::RequestParse("'tool_choice.name' must be a string".to_owned())
            })?;
            Ok(ToolChoice::Named(NamedToolChoice { kind: "function".to_owned(), function: NamedFunction { name: name.to_owned() } }))
        }
        _ => Err(unsupported("tool_choice", "use auto, none, required or a function tool")),
    }
}

fn response_format(format: &Value) -> Result<Option<Value>, TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key) {
                    schema.insert(key.to_owned(), v.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err(unsupported("text.format", "use text, json_object or json_schema")),
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
