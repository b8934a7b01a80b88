//! Converse request → OpenAI `ChatRequest` (see the table in the module above).

use serde_json::{Map, Value};

use crate::bedrock::{
    self, ContentBlock, ConversationRole, ConverseRequest, ImageBlock, ImageFormat, ImageSource,
    SystemContentBlock, ToolResultContentBlock,
};
use crate::error::TranslateError;
use crate::openai::{
    self, CacheControl, ChatRequest, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl,
    NamedFunction, NamedToolChoice, Role, StreamOptions, ToolCall,
};

/// Top-level Converse fields that do not change the answer and are dropped.
const DROPPED: &[&str] = &[
    // The model id travels in the path; botocore never puts it in the body.
    "modelId",
    "requestMetadata",
    "performanceConfig",
    "serviceTier",
    "projectIdentifier",
    "additionalModelResponseFieldPaths",
];

fn unsupported(param: impl Into<String>, reason: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported {
        param: param.into(),
        reason: reason.into(),
    }
}

fn parse_err(msg: String) -> TranslateError {
    TranslateError::RequestParse(msg)
}

/// Parses a Converse / ConverseStream request body for `model_id` (from the path, already
/// percent-decoded) into the OpenAI pivot. `stream`: the client called `converse-stream`.
pub fn request(body: &[u8], model_id: &str, stream: bool) -> Result<ChatRequest, TranslateError> {
    let req: ConverseRequest =
        serde_json::from_slice(body).map_err(|e| parse_err(e.to_string()))?;
    check_fields(&req)?;
    if req.messages.is_empty() {
        return Err(parse_err(
            "messages: at least one message is required".to_owned(),
        ));
    }

    let mut messages = Vec::new();
    if let Some(system) = system_message(&req.system)? {
        messages.push(system);
    }
    for (i, msg) in req.messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        match msg.role {
            ConversationRole::User => user(&msg.content, &at, &mut messages)?,
            ConversationRole::Assistant => messages.push(assistant(&msg.content, &at)?),
            ConversationRole::System | ConversationRole::Unknown => {
                return Err(parse_err(format!(
                    "{at}.role: must be 'user' or 'assistant'"
                )))
            }
        }
    }

    let (tools, tool_choice) = match &req.tool_config {
        Some(config) => tool_config(config)?,
        None => (None, None),
    };
    let inference = req.inference_config.clone().unwrap_or_default();
    if inference.max_tokens == Some(0) {
        return Err(parse_err(
            "inferenceConfig.maxTokens must be at least 1".to_owned(),
        ));
    }
    let stop: Vec<String> = inference
        .stop_sequences
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    Ok(ChatRequest {
        model: model_id.to_owned(),
        messages,
        stream: stream.then_some(true),
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            rest: Map::new(),
        }),
        max_tokens: inference.max_tokens,
        max_completion_tokens: None,
        temperature: inference.temperature,
        top_p: inference.top_p,
        stop: (!stop.is_empty()).then_some(openai::Stop::Many(stop)),
        tools,
        tool_choice,
        rest: Map::new(),
    })
}

/// Refuses the top-level fields that would change the answer and that the pivot cannot carry.
fn check_fields(req: &ConverseRequest) -> Result<(), TranslateError> {
    let meaningful = |v: &Value| match v {
        Value::Null => false,
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    };
    if req
        .additional_model_request_fields
        .as_ref()
        .is_some_and(meaningful)
    {
        return Err(unsupported(
            "additionalModelRequestFields",
            "model-specific request fields cannot be translated to this provider",
        ));
    }
    for (name, value) in &req.rest {
        if DROPPED.contains(&name.as_str()) || !meaningful(value) {
            continue;
        }
        let reason = match name.as_str() {
            "guardrailConfig" => "Bedrock guardrails cannot be applied through this provider",
            "promptVariables" => "prompt management variables need a Bedrock prompt resource",
            "outputConfig" => "structured output is not available through this translation",
            _ => "unknown Converse field for this translation",
        };
        return Err(unsupported(name.clone(), reason));
    }
    Ok(())
}

fn message(role: Role, content: Option<Content>) -> openai::Message {
    openai::Message {
        role,
        content,
        name: None,
        tool_calls: None,
        tool_call_id: None,
        rest: Map::new(),
    }
}

fn ephemeral() -> Option<CacheControl> {
    Some(CacheControl {
        kind: "ephemeral".to_owned(),
    })
}

fn text_part(text: &str) -> ContentPart {
    ContentPart::Text {
        text: text.to_owned(),
        cache_control: None,
    }
}

/// A `cachePoint` marks the end of a cacheable prefix: it goes on the text part before it.
/// Returns false when there is no such part (the point is then dropped).
fn mark_cache_point(parts: &mut [ContentPart]) -> bool {
    match parts.last_mut() {
        Some(ContentPart::Text { cache_control, .. }) => {
            *cache_control = ephemeral();
            true
        }
        _ => false,
    }
}

/// Parts as a plain string when there is one text part without a cache marker.
fn simplify(parts: Vec<ContentPart>) -> Content {
    match parts.as_slice() {
        [ContentPart::Text {
            text,
            cache_control: None,
        }] => Content::Text(text.clone()),
        _ => Content::Parts(parts),
    }
}

fn system_message(
    blocks: &[SystemContentBlock],
) -> Result<Option<openai::Message>, TranslateError> {
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        match block {
            SystemContentBlock::Text(text) => parts.push(text_part(text)),
            SystemContentBlock::CachePoint(_) => {
                mark_cache_point(&mut parts);
            }
            SystemContentBlock::Unknown { key, .. } => {
                return Err(unsupported(
                    format!("system[{j}].{key}"),
                    "only text and cachePoint system blocks can be translated to this provider",
                ))
            }
        }
    }
    Ok((!parts.is_empty()).then(|| message(Role::System, Some(simplify(parts)))))
}

fn block_name(block: &ContentBlock) -> &str {
    match block {
        ContentBlock::Text(_) => "text",
        ContentBlock::Image(_) => "image",
        ContentBlock::ToolUse(_) => "toolUse",
        ContentBlock::ToolResult(_) => "toolResult",
        ContentBlock::CachePoint(_) => "cachePoint",
        ContentBlock::ReasoningContent(_) => "reasoningContent",
        ContentBlock::Unknown { key, .. } => key,
    }
}

fn unknown_block(at: &str, key: &str) -> TranslateError {
    unsupported(
        format!("{at}.{key}"),
        "this content block type cannot be translated to this provider \
         (text, image, toolUse, toolResult and cachePoint can)",
    )
}

fn misplaced(at: &str, block: &ContentBlock, role: &str) -> TranslateError {
    parse_err(format!(
        "{at}: {} blocks are not allowed in {role} messages",
        block_name(block)
    ))
}

/// A user message: its tool results become `tool` messages (first, as OpenAI wants them right
/// after the assistant's calls), the rest one `user` message.
fn user(
    blocks: &[ContentBlock],
    at: &str,
    out: &mut Vec<openai::Message>,
) -> Result<(), TranslateError> {
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match block {
            ContentBlock::Text(text) => parts.push(text_part(text)),
            ContentBlock::Image(image) => parts.push(ContentPart::ImageUrl {
                image_url: image_url(image, &format!("{at}.image"))?,
            }),
            ContentBlock::CachePoint(_) => {
                mark_cache_point(&mut parts);
            }
            ContentBlock::ToolResult(result) => {
                let mut msg = message(
                    Role::Tool,
                    Some(tool_result_content(
                        &result.content,
                        &format!("{at}.toolResult"),
                    )?),
                );
                msg.tool_call_id = Some(result.tool_use_id.clone());
                out.push(msg);
            }
            ContentBlock::ToolUse(_) | ContentBlock::ReasoningContent(_) => {
                return Err(misplaced(&at, block, "user"))
            }
            ContentBlock::Unknown { key, .. } => return Err(unknown_block(&at, key)),
        }
    }
    if !parts.is_empty() {
        out.push(message(Role::User, Some(simplify(parts))));
    }
    Ok(())
}

fn tool_result_content(
    blocks: &[ToolResultContentBlock],
    at: &str,
) -> Result<Content, TranslateError> {
    let mut parts = Vec::new();
    for (k, block) in blocks.iter().enumerate() {
        match block {
            ToolResultContentBlock::Text(text) => parts.push(text_part(text)),
            // A JSON result is sent as its compact JSON text.
            ToolResultContentBlock::Json(value) => parts.push(text_part(
                &serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned()),
            )),
            ToolResultContentBlock::Image(_) => {
                return Err(unsupported(
                    format!("{at}.content[{k}].image"),
                    "tool results can only hold text and json on this provider",
                ))
            }
            ToolResultContentBlock::Unknown { key, .. } => {
                return Err(unsupported(
                    format!("{at}.content[{k}].{key}"),
                    "tool results can only hold text and json on this provider",
                ))
            }
        }
    }
    Ok(match parts.len() {
        0 => Content::Text(String::new()),
        _ => simplify(parts),
    })
}

fn image_url(image: &ImageBlock, at: &str) -> Result<ImageUrl, TranslateError> {
    let media_type = match image.format {
        ImageFormat::Png => "image/png",
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Gif => "image/gif",
        ImageFormat::Webp => "image/webp",
        ImageFormat::Unknown => {
            return Err(unsupported(
                format!("{at}.format"),
                "only png, jpeg, gif and webp images",
            ))
        }
    };
    match &image.source {
        ImageSource::Bytes(data) => Ok(ImageUrl {
            url: format!("data:{media_type};base64,{}", data.trim()),
            detail: None,
        }),
        ImageSource::Unknown { key, .. } => Err(unsupported(
            format!("{at}.source.{key}"),
            "only inline image bytes can be translated to this provider",
        )),
    }
}

fn assistant(blocks: &[ContentBlock], at: &str) -> Result<openai::Message, TranslateError> {
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match block {
            ContentBlock::Text(text) => parts.push(text_part(text)),
            ContentBlock::CachePoint(_) => {
                mark_cache_point(&mut parts);
            }
            ContentBlock::ToolUse(tool) => calls.push(ToolCall {
                id: tool.tool_use_id.clone(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: tool.name.clone(),
                    arguments: serde_json::to_string(&tool.input)
                        .unwrap_or_else(|_| "{}".to_owned()),
                },
            }),
            // Earlier reasoning is not replayed: the pivot cannot carry it.
            ContentBlock::ReasoningContent(_) => {}
            ContentBlock::Image(_) | ContentBlock::ToolResult(_) => {
                return Err(misplaced(&at, block, "assistant"))
            }
            ContentBlock::Unknown { key, .. } => return Err(unknown_block(&at, key)),
        }
    }
    let content = Content::from_assistant_parts(parts);
    let mut msg = message(Role::Assistant, content);
    msg.tool_calls = (!calls.is_empty()).then_some(calls);
    Ok(msg)
}

type Tools = (Option<Vec<openai::Tool>>, Option<openai::ToolChoice>);

fn tool_config(config: &bedrock::ToolConfiguration) -> Result<Tools, TranslateError> {
    let mut tools = Vec::new();
    for (k, tool) in config.tools.iter().enumerate() {
        match tool {
            bedrock::Tool::ToolSpec(spec) => {
                let bedrock::ToolInputSchema::Json(schema) = &spec.input_schema else {
                    return Err(unsupported(
                        format!("toolConfig.tools[{k}].toolSpec.inputSchema"),
                        "only json input schemas",
                    ));
                };
                tools.push(openai::Tool {
                    kind: "function".to_owned(),
                    function: FunctionDef {
                        name: spec.name.clone(),
                        description: spec.description.clone(),
                        parameters: Some(schema.clone()),
                    },
                });
            }
            // A cache hint on the tool list: dropped (it changes cost, not the answer).
            bedrock::Tool::CachePoint(_) => {}
            bedrock::Tool::Unknown { key, .. } => {
                return Err(unsupported(
                    format!("toolConfig.tools[{k}].{key}"),
                    "only toolSpec tools can be translated to this provider",
                ))
            }
        }
    }
    let choice = match &config.tool_choice {
        None => None,
        Some(bedrock::ToolChoice::Auto(_)) => Some(openai::ToolChoice::Mode("auto".to_owned())),
        Some(bedrock::ToolChoice::Any(_)) => Some(openai::ToolChoice::Mode("required".to_owned())),
        Some(bedrock::ToolChoice::Tool(named)) => {
            Some(openai::ToolChoice::Named(NamedToolChoice {
                kind: "function".to_owned(),
                function: NamedFunction {
                    name: named.name.clone(),
                },
            }))
        }
        Some(bedrock::ToolChoice::Unknown { key, .. }) => {
            return Err(unsupported(
                format!("toolConfig.toolChoice.{key}"),
                "unknown tool choice",
            ))
        }
    };
    if tools.is_empty() {
        return Ok((None, None));
    }
    Ok((Some(tools), choice))
}
