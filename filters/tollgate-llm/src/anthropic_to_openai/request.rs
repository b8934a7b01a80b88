//! Anthropic Messages request → OpenAI `ChatRequest` (see the table in the module above).

use serde_json::{Map, Value};

use crate::anthropic::{
    self, CacheControl, ContentBlock, ImageSource, MessageContent, MessagesRequest, System,
    ToolChoice, ToolResultContent,
};
use crate::error::TranslateError;
use crate::openai::{
    self, ChatRequest, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl, NamedFunction,
    NamedToolChoice, Role, StreamOptions, ToolCall,
};

fn unsupported(param: &str, reason: &str) -> TranslateError {
    TranslateError::Unsupported {
        param: param.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_err(msg: String) -> TranslateError {
    TranslateError::RequestParse(msg)
}

/// Parses an Anthropic Messages request body into the OpenAI pivot.
pub fn request(body: &[u8]) -> Result<ChatRequest, TranslateError> {
    let req: MessagesRequest =
        serde_json::from_slice(body).map_err(|e| parse_err(e.to_string()))?;
    let max_tokens = req
        .max_tokens
        .ok_or_else(|| parse_err("max_tokens: Field required".to_owned()))?;

    let mut rest = Map::new();
    for (key, value) in &req.rest {
        let refused = match key.as_str() {
            "thinking" => {
                !value.is_null() && value.get("type").and_then(Value::as_str) != Some("disabled")
            }
            "mcp_servers" | "container" => !value.is_null(),
            _ => false,
        };
        if refused {
            return Err(unsupported(key, "cannot be translated to this provider"));
        }
    }

    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        let content = match system {
            System::Text(t) => Content::Text(t.clone()),
            System::Blocks(blocks) => text_content(blocks, "system")?,
        };
        messages.push(message(Role::System, Some(content)));
    }
    for (i, msg) in req.messages.iter().enumerate() {
        let at = format!("messages.{i}");
        match msg.role {
            anthropic::Role::User => user(&msg.content, &at, &mut messages)?,
            anthropic::Role::Assistant => messages.push(assistant(&msg.content, &at)?),
            anthropic::Role::Unknown => {
                return Err(parse_err(format!(
                    "{at}.role: must be 'user' or 'assistant'"
                )))
            }
        }
    }

    let tools = match &req.tools {
        Some(tools) if !tools.is_empty() => Some(
            tools
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    if t.kind.as_deref().is_some_and(|k| k != "custom") {
                        return Err(unsupported(
                            &format!("tools.{i}.type"),
                            "server tools cannot be translated to this provider",
                        ));
                    }
                    Ok(openai::Tool {
                        kind: "function".to_owned(),
                        function: FunctionDef {
                            name: t.name.clone(),
                            description: t.description.clone(),
                            parameters: t.input_schema.clone(),
                        },
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => None,
    };

    let mut tool_choice = None;
    match &req.tool_choice {
        None | Some(ToolChoice::Unknown) => {}
        Some(ToolChoice::Auto {
            disable_parallel_tool_use: d,
        }) => {
            tool_choice = Some(openai::ToolChoice::Mode("auto".to_owned()));
            no_parallel(*d, &mut rest);
        }
        Some(ToolChoice::Any {
            disable_parallel_tool_use: d,
        }) => {
            tool_choice = Some(openai::ToolChoice::Mode("required".to_owned()));
            no_parallel(*d, &mut rest);
        }
        Some(ToolChoice::Tool {
            name,
            disable_parallel_tool_use: d,
        }) => {
            tool_choice = Some(openai::ToolChoice::Named(NamedToolChoice {
                kind: "function".to_owned(),
                function: NamedFunction { name: name.clone() },
            }));
            no_parallel(*d, &mut rest);
        }
        Some(ToolChoice::None) => tool_choice = Some(openai::ToolChoice::Mode("none".to_owned())),
    }

    if let Some(k) = req.top_k {
        rest.insert("top_k".to_owned(), Value::from(k));
    }
    if let Some(user) = req.metadata.as_ref().and_then(|m| m.user_id.as_ref()) {
        rest.insert("user".to_owned(), Value::from(user.clone()));
    }
    let stream = req.stream == Some(true);
    Ok(ChatRequest {
        model: req.model.clone(),
        messages,
        stream: stream.then_some(true),
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            rest: Map::new(),
        }),
        max_tokens: Some(max_tokens),
        max_completion_tokens: None,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: req
            .stop_sequences
            .clone()
            .filter(|s| !s.is_empty())
            .map(openai::Stop::Many),
        tools,
        tool_choice,
        rest,
    })
}

fn no_parallel(disable: Option<bool>, rest: &mut Map<String, Value>) {
    if disable == Some(true) {
        rest.insert("parallel_tool_calls".to_owned(), Value::Bool(false));
    }
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

fn cache_control_out(c: &Option<CacheControl>) -> Option<openai::CacheControl> {
    c.as_ref().map(|c| openai::CacheControl {
        kind: c.kind.clone(),
    })
}

/// Parts as plain text when possible, else text parts (to keep `cache_control`).
fn simplify(parts: Vec<ContentPart>) -> Content {
    match parts.as_slice() {
        [ContentPart::Text {
            text,
            cache_control: None,
        }] => Content::Text(text.clone()),
        _ => Content::Parts(parts),
    }
}

/// Text blocks only (system, tool results).
fn text_content(blocks: &[ContentBlock], at: &str) -> Result<Content, TranslateError> {
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        match block {
            ContentBlock::Text {
                text,
                cache_control,
            } => parts.push(ContentPart::Text {
                text: text.clone(),
                cache_control: cache_control_out(cache_control),
            }),
            _ => {
                return Err(unsupported(
                    &format!("{at}.{j}"),
                    "only text blocks are accepted here by this provider",
                ))
            }
        }
    }
    Ok(simplify(parts))
}

fn user(
    content: &MessageContent,
    at: &str,
    out: &mut Vec<openai::Message>,
) -> Result<(), TranslateError> {
    let blocks = match content {
        MessageContent::Text(t) => {
            out.push(message(Role::User, Some(Content::Text(t.clone()))));
            return Ok(());
        }
        MessageContent::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content.{j}");
        match block {
            ContentBlock::Text {
                text,
                cache_control,
            } => parts.push(ContentPart::Text {
                text: text.clone(),
                cache_control: cache_control_out(cache_control),
            }),
            ContentBlock::Image { source, .. } => parts.push(ContentPart::ImageUrl {
                image_url: image_url(source, &at)?,
            }),
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                ..
            } => {
                let content = match content {
                    None => Content::Text(String::new()),
                    Some(ToolResultContent::Text(t)) => Content::Text(t.clone()),
                    Some(ToolResultContent::Blocks(b)) => {
                        text_content(b, &format!("{at}.content"))?
                    }
                };
                let mut msg = message(Role::Tool, Some(content));
                msg.tool_call_id = Some(tool_use_id.clone());
                out.push(msg);
            }
            ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. } => {}
            ContentBlock::ToolUse { .. } => {
                return Err(parse_err(format!(
                    "{at}: tool_use blocks belong in assistant messages"
                )))
            }
            ContentBlock::Unknown => {
                return Err(unsupported(
                    &at,
                    "this content block type cannot be translated to this provider",
                ))
            }
        }
    }
    if !parts.is_empty() {
        out.push(message(Role::User, Some(simplify(parts))));
    }
    Ok(())
}

fn image_url(source: &ImageSource, at: &str) -> Result<ImageUrl, TranslateError> {
    let url = match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url.clone(),
        ImageSource::Unknown => {
            return Err(unsupported(
                &format!("{at}.source"),
                "only base64 and url image sources",
            ))
        }
    };
    Ok(ImageUrl { url, detail: None })
}

fn assistant(content: &MessageContent, at: &str) -> Result<openai::Message, TranslateError> {
    let blocks = match content {
        MessageContent::Text(t) => {
            return Ok(message(Role::Assistant, Some(Content::Text(t.clone()))))
        }
        MessageContent::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content.{j}");
        match block {
            ContentBlock::Text {
                text,
                cache_control,
            } => parts.push(ContentPart::Text {
                text: text.clone(),
                cache_control: cache_control_out(cache_control),
            }),
            ContentBlock::ToolUse {
                id, name, input, ..
            } => calls.push(ToolCall {
                id: id.clone(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: name.clone(),
                    arguments: serde_json::to_string(input).unwrap_or_else(|_| "{}".to_owned()),
                },
            }),
            ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. } => {}
            ContentBlock::Image { .. } | ContentBlock::ToolResult { .. } => {
                return Err(parse_err(format!(
                    "{at}: this block is not allowed in assistant messages"
                )))
            }
            ContentBlock::Unknown => {
                return Err(unsupported(
                    &at,
                    "this content block type cannot be translated to this provider",
                ))
            }
        }
    }
    let content = Content::from_assistant_parts(parts);
    let mut msg = message(Role::Assistant, content);
    msg.tool_calls = (!calls.is_empty()).then_some(calls);
    Ok(msg)
}
