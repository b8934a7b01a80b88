//! OpenAI chat request → Converse request body (see the table in the module doc).

use base64::Engine as _;
use serde_json::Value;

use crate::bedrock::{
    CachePointBlock, ContentBlock, ConversationRole, ConverseRequest, Empty, ImageBlock,
    ImageFormat, ImageSource, InferenceConfiguration, Message, SpecificToolChoice,
    SystemContentBlock, Tool, ToolChoice, ToolConfiguration, ToolInputSchema, ToolResultBlock,
    ToolResultContentBlock, ToolSpecification, ToolUseBlock,
};
use crate::error::TranslateError;
use crate::openai::{self, ChatRequest, Content, ContentPart, Role};

/// Top-level parameters that do not change the answer and are dropped.
const DROPPED: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "seed",
    "metadata",
    "store",
    "service_tier",
    "prediction",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
];

fn unsupported(param: impl Into<String>, reason: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported {
        param: param.into(),
        reason: reason.into(),
    }
}

/// Translates an OpenAI chat request into a Converse request body (JSON bytes).
pub fn request(req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    let converse = to_converse(req)?;
    serde_json::to_vec(&converse)
        .map_err(|e| TranslateError::RequestParse(format!("cannot encode the request: {e}")))
}

/// The typed form of [`request`].
pub fn to_converse(req: &ChatRequest) -> Result<ConverseRequest, TranslateError> {
    check_parameters(req)?;
    let mut system = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    let mut has_tool_blocks = false;
    for (i, msg) in req.messages.iter().enumerate() {
        let (role, blocks) = match msg.role {
            Role::System | Role::Developer => {
                system.extend(system_blocks(i, msg)?);
                continue;
            }
            Role::User => (ConversationRole::User, user_blocks(i, msg)?),
            Role::Assistant => {
                let blocks = assistant_blocks(i, msg)?;
                has_tool_blocks |= blocks.iter().any(|b| matches!(b, ContentBlock::ToolUse(_)));
                (ConversationRole::Assistant, blocks)
            }
            Role::Tool => {
                has_tool_blocks = true;
                (ConversationRole::User, vec![tool_result_block(i, msg)?])
            }
            Role::Function => {
                return Err(unsupported(
                    format!("messages[{i}].role"),
                    "the legacy 'function' role is not supported; use 'tool' messages",
                ))
            }
            Role::Unknown => {
                return Err(TranslateError::RequestParse(format!(
                    "messages[{i}].role: unknown role"
                )))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(Message {
                role,
                content: blocks,
            }),
        }
    }
    match messages.first() {
        None => {
            return Err(TranslateError::RequestParse(
                "messages: at least one user message is required".into(),
            ))
        }
        Some(first) if first.role != ConversationRole::User => {
            return Err(unsupported(
                "messages",
                "Bedrock conversations must start with a user message",
            ))
        }
        Some(_) => {}
    }
    let tool_config = tool_config(req, has_tool_blocks)?;
    let inference = inference_config(req)?;
    Ok(ConverseRequest {
        messages,
        system,
        inference_config: (!inference.is_empty()).then_some(inference),
        tool_config,
        additional_model_request_fields: None,
        rest: serde_json::Map::new(),
    })
}

fn check_parameters(req: &ChatRequest) -> Result<(), TranslateError> {
    for (name, value) in &req.rest {
        if value.is_null() || DROPPED.contains(&name.as_str()) {
            continue;
        }
        let ok = match name.as_str() {
            "parallel_tool_calls" => value == &Value::Bool(true),
            other => openai::neutral_parameter(other, value),
        };
        if !ok {
            let reason = match name.as_str() {
                "n" => "Bedrock returns one choice per request",
                "logprobs" | "top_logprobs" => "Bedrock does not return log probabilities",
                "response_format" => "structured output (json_object / json_schema) is not available through this translation",
                "parallel_tool_calls" => "Bedrock cannot be told to avoid parallel tool calls",
                "frequency_penalty" | "presence_penalty" | "logit_bias" => "Bedrock Converse has no such sampling control",
                "functions" | "function_call" => "the legacy function-calling parameters are not supported; use 'tools'",
                "reasoning_effort" | "verbosity" | "audio" | "modalities" | "web_search_options" => {
                    "Bedrock Converse has no equivalent"
                }
                _ => "unknown parameter for the Bedrock translation",
            };
            return Err(unsupported(name.clone(), reason));
        }
    }
    Ok(())
}

fn has_cache_control(msg: &openai::Message) -> bool {
    msg.rest.get("cache_control").is_some_and(|v| !v.is_null())
}

fn system_blocks(
    i: usize,
    msg: &openai::Message,
) -> Result<Vec<SystemContentBlock>, TranslateError> {
    let mut out = Vec::new();
    match &msg.content {
        None => {}
        Some(Content::Text(text)) if text.is_empty() => {}
        Some(Content::Text(text)) => out.push(SystemContentBlock::Text(text.clone())),
        Some(Content::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                match part {
                    ContentPart::Text {
                        text,
                        cache_control,
                    } => {
                        if !text.is_empty() {
                            out.push(SystemContentBlock::Text(text.clone()));
                        }
                        if cache_control.is_some() {
                            out.push(SystemContentBlock::CachePoint(
                                CachePointBlock::default_point(),
                            ));
                        }
                    }
                    _ => {
                        return Err(unsupported(
                            format!("messages[{i}].content[{j}]"),
                            "system messages can only hold text on Bedrock",
                        ))
                    }
                }
            }
        }
    }
    if has_cache_control(msg) && !matches!(out.last(), Some(SystemContentBlock::CachePoint(_))) {
        out.push(SystemContentBlock::CachePoint(
            CachePointBlock::default_point(),
        ));
    }
    Ok(out)
}

fn user_blocks(i: usize, msg: &openai::Message) -> Result<Vec<ContentBlock>, TranslateError> {
    let mut out = Vec::new();
    match &msg.content {
        None => {}
        Some(Content::Text(text)) if text.is_empty() => {}
        Some(Content::Text(text)) => out.push(ContentBlock::Text(text.clone())),
        Some(Content::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                match part {
                    ContentPart::Text { text, cache_control } => {
                        if !text.is_empty() {
                            out.push(ContentBlock::Text(text.clone()));
                        }
                        if cache_control.is_some() {
                            out.push(ContentBlock::CachePoint(CachePointBlock::default_point()));
                        }
                    }
                    ContentPart::ImageUrl { image_url } => out.push(image_block(i, j, &image_url.url)?),
                    ContentPart::Unknown => {
                        return Err(unsupported(
                            format!("messages[{i}].content[{j}]"),
                            "this content part type is not supported on Bedrock (text and image_url are)",
                        ))
                    }
                }
            }
        }
    }
    push_message_cache_point(msg, &mut out);
    Ok(out)
}

fn push_message_cache_point(msg: &openai::Message, out: &mut Vec<ContentBlock>) {
    if has_cache_control(msg)
        && !out.is_empty()
        && !matches!(out.last(), Some(ContentBlock::CachePoint(_)))
    {
        out.push(ContentBlock::CachePoint(CachePointBlock::default_point()));
    }
}

fn image_block(i: usize, j: usize, url: &str) -> Result<ContentBlock, TranslateError> {
    let param = || format!("messages[{i}].content[{j}].image_url");
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(unsupported(
            param(),
            "Bedrock cannot fetch image URLs; send the image inline as a base64 data: URL",
        ));
    };
    let Some((media, data)) = rest.split_once(',') else {
        return Err(TranslateError::RequestParse(format!(
            "{}: malformed data: URL",
            param()
        )));
    };
    let Some(mime) = media.strip_suffix(";base64") else {
        return Err(unsupported(param(), "only base64 data: URLs are supported"));
    };
    let format = match mime.to_ascii_lowercase().as_str() {
        "image/png" => ImageFormat::Png,
        "image/jpeg" | "image/jpg" => ImageFormat::Jpeg,
        "image/gif" => ImageFormat::Gif,
        "image/webp" => ImageFormat::Webp,
        other => {
            return Err(unsupported(
                param(),
                format!("image type '{other}' is not supported (png, jpeg, gif, webp are)"),
            ))
        }
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| {
            TranslateError::RequestParse(format!("{}: the data: URL is not valid base64", param()))
        })?;
    Ok(ContentBlock::Image(ImageBlock {
        format,
        source: ImageSource::Bytes(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }))
}

fn assistant_blocks(i: usize, msg: &openai::Message) -> Result<Vec<ContentBlock>, TranslateError> {
    let mut out = Vec::new();
    match &msg.content {
        None => {}
        Some(Content::Text(text)) if text.is_empty() => {}
        Some(Content::Text(text)) => out.push(ContentBlock::Text(text.clone())),
        Some(Content::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                match part {
                    ContentPart::Text {
                        text,
                        cache_control,
                    } => {
                        if !text.is_empty() {
                            out.push(ContentBlock::Text(text.clone()));
                        }
                        if cache_control.is_some() {
                            out.push(ContentBlock::CachePoint(CachePointBlock::default_point()));
                        }
                    }
                    // `refusal` parts (and future ones) carry no content to send back.
                    ContentPart::Unknown => {}
                    ContentPart::ImageUrl { .. } => {
                        return Err(unsupported(
                            format!("messages[{i}].content[{j}]"),
                            "assistant messages cannot hold images",
                        ))
                    }
                }
            }
        }
    }
    for (k, call) in msg.tool_calls.iter().flatten().enumerate() {
        let args = call.function.arguments.trim();
        let input = if args.is_empty() {
            Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_str(args).map_err(|e| {
                TranslateError::RequestParse(format!(
                    "messages[{i}].tool_calls[{k}].function.arguments is not valid JSON: {e}"
                ))
            })?
        };
        out.push(ContentBlock::ToolUse(ToolUseBlock {
            tool_use_id: call.id.clone(),
            name: call.function.name.clone(),
            input,
        }));
    }
    push_message_cache_point(msg, &mut out);
    Ok(out)
}

fn tool_result_block(i: usize, msg: &openai::Message) -> Result<ContentBlock, TranslateError> {
    let Some(id) = msg.tool_call_id.as_ref().filter(|id| !id.is_empty()) else {
        return Err(TranslateError::RequestParse(format!(
            "messages[{i}].tool_call_id is required for tool messages"
        )));
    };
    let text = msg.content.as_ref().map(Content::text).unwrap_or_default();
    let content = if text.is_empty() {
        Vec::new()
    } else {
        vec![ToolResultContentBlock::Text(text)]
    };
    Ok(ContentBlock::ToolResult(ToolResultBlock {
        tool_use_id: id.clone(),
        content,
        status: None,
    }))
}

fn tool_config(
    req: &ChatRequest,
    has_tool_blocks: bool,
) -> Result<Option<ToolConfiguration>, TranslateError> {
    let tools = req.tools.as_deref().unwrap_or_default();
    let choice = match &req.tool_choice {
        None => None,
        Some(openai::ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => Some(ToolChoice::Auto(Empty {})),
            "required" => Some(ToolChoice::Any(Empty {})),
            "none" => {
                if has_tool_blocks {
                    return Err(unsupported(
                        "tool_choice",
                        "'none' cannot be honoured on Bedrock when the conversation holds tool calls or results: \
                         Converse then requires the tool definitions and cannot forbid calling them",
                    ));
                }
                return Ok(None);
            }
            other => {
                return Err(TranslateError::RequestParse(format!(
                    "tool_choice: unknown value '{other}'"
                )))
            }
        },
        Some(openai::ToolChoice::Named(named)) => {
            if named.kind != "function" {
                return Err(unsupported(
                    "tool_choice.type",
                    format!("tool type '{}' is not supported", named.kind),
                ));
            }
            Some(ToolChoice::Tool(SpecificToolChoice {
                name: named.function.name.clone(),
            }))
        }
    };
    if tools.is_empty() {
        if has_tool_blocks {
            return Err(unsupported(
                "tools",
                "Bedrock requires the tool definitions when the conversation holds tool calls or results",
            ));
        }
        if matches!(choice, Some(ToolChoice::Any(_) | ToolChoice::Tool(_))) {
            return Err(TranslateError::RequestParse(
                "tool_choice requires tools".into(),
            ));
        }
        return Ok(None);
    }
    let mut specs = Vec::with_capacity(tools.len());
    for (k, tool) in tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(unsupported(
                format!("tools[{k}].type"),
                format!("tool type '{}' is not supported", tool.kind),
            ));
        }
        let schema = tool
            .function
            .parameters
            .clone()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
        specs.push(Tool::ToolSpec(ToolSpecification {
            name: tool.function.name.clone(),
            description: tool.function.description.clone().filter(|d| !d.is_empty()),
            input_schema: ToolInputSchema::Json(schema),
        }));
    }
    Ok(Some(ToolConfiguration {
        tools: specs,
        tool_choice: choice,
    }))
}

fn inference_config(req: &ChatRequest) -> Result<InferenceConfiguration, TranslateError> {
    for (name, value) in [("temperature", req.temperature), ("top_p", req.top_p)] {
        if let Some(v) = value {
            if !(0.0..=1.0).contains(&v) {
                return Err(unsupported(
                    name,
                    format!("Bedrock accepts 0 to 1, got {v}"),
                ));
            }
        }
    }
    let max_tokens = req.max_output_tokens();
    if max_tokens == Some(0) {
        let param = if req.max_completion_tokens.is_some() {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        return Err(TranslateError::RequestParse(format!(
            "{param} must be at least 1"
        )));
    }
    Ok(InferenceConfiguration {
        max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop_sequences: req
            .stop
            .as_ref()
            .map(openai::Stop::to_vec)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect(),
    })
}
