//! OpenAI `ChatRequest` → Anthropic Messages request (see the table in the module above).

use serde_json::{Map, Value};

use crate::anthropic::{
    self, CacheControl, ContentBlock, ImageSource, MessageContent, MessagesRequest, Metadata,
    System, ToolChoice, ToolResultContent,
};
use crate::error::TranslateError;
use crate::openai::{self, ChatRequest, Content, ContentPart, Role};

/// `max_tokens` when the client gave none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Image media types the Messages API accepts.
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Translates an OpenAI chat request into a Messages request body for `model_id`.
pub fn request(req: &ChatRequest, model_id: &str) -> Result<Vec<u8>, TranslateError> {
    let out = translate(req, model_id)?;
    serde_json::to_vec(&out).map_err(|e| TranslateError::RequestParse(e.to_string()))
}

fn unsupported(param: &str, reason: &str) -> TranslateError {
    TranslateError::Unsupported {
        param: param.to_owned(),
        reason: reason.to_owned(),
    }
}

fn translate(req: &ChatRequest, model_id: &str) -> Result<MessagesRequest, TranslateError> {
    check_unsupported(&req.rest)?;
    if let Some(t) = req.temperature {
        if !(0.0..=1.0).contains(&t) {
            return Err(unsupported(
                "temperature",
                "Anthropic accepts a temperature from 0 to 1",
            ));
        }
    }

    let (system, messages) = messages(&req.messages)?;
    let tools = match &req.tools {
        Some(tools) if !tools.is_empty() => Some(
            tools
                .iter()
                .enumerate()
                .map(|(i, t)| tool(i, t))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => None,
    };
    let parallel = req.rest.get("parallel_tool_calls").and_then(Value::as_bool);
    let tool_choice = if tools.is_some() {
        tool_choice(req.tool_choice.as_ref(), parallel)?
    } else {
        None
    };

    let stop_sequences = req
        .stop
        .as_ref()
        .map(openai::Stop::to_vec)
        .filter(|s| !s.is_empty());
    let top_k = match req.rest.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|k| u32::try_from(k).ok())
                .ok_or_else(|| {
                    TranslateError::RequestParse("'top_k' must be a non-negative integer".into())
                })?,
        ),
    };
    let metadata = req
        .rest
        .get("user")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(|u| Metadata {
            user_id: Some(u.to_owned()),
            rest: Map::new(),
        });

    Ok(MessagesRequest {
        model: model_id.to_owned(),
        system,
        messages,
        max_tokens: Some(req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS)),
        stop_sequences,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k,
        stream: req.stream.filter(|s| *s),
        tools,
        tool_choice,
        metadata,
        rest: Map::new(),
    })
}

/// Parameters Anthropic cannot honour: a clear 400 rather than a silently different answer.
fn check_unsupported(rest: &Map<String, Value>) -> Result<(), TranslateError> {
    let is_set = |v: &Value| !matches!(v, Value::Null | Value::Bool(false));
    for (key, value) in rest {
        let refused = match key.as_str() {
            "n" => value.as_u64().is_some_and(|n| n > 1),
            "logprobs" => value.as_bool() == Some(true),
            "top_logprobs" | "audio" | "prediction" | "reasoning_effort" | "functions"
            | "function_call" => is_set(value),
            "response_format" => {
                is_set(value) && value.get("type").and_then(Value::as_str) != Some("text")
            }
            "presence_penalty" | "frequency_penalty" => value.as_f64().is_some_and(|p| p != 0.0),
            "logit_bias" => value.as_object().is_some_and(|m| !m.is_empty()),
            "modalities" => value
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x.as_str() != Some("text"))),
            _ => false,
        };
        if refused {
            let reason = match key.as_str() {
                "n" => "Anthropic returns one choice per request",
                "response_format" => "Anthropic has no JSON mode here; describe the format in the prompt or use a tool",
                "functions" | "function_call" => "use 'tools' and 'tool_choice'",
                _ => "Anthropic has no equivalent",
            };
            return Err(unsupported(key, reason));
        }
    }
    Ok(())
}

/// Consecutive blocks of one role, being built.
struct Turn {
    role: anthropic::Role,
    blocks: Vec<ContentBlock>,
}

fn messages(
    input: &[openai::Message],
) -> Result<(Option<System>, Vec<anthropic::Message>), TranslateError> {
    let mut system: Vec<ContentBlock> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    let mut push = |role: anthropic::Role, blocks: Vec<ContentBlock>| {
        if blocks.is_empty() {
            return;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.blocks.extend(blocks),
            _ => turns.push(Turn { role, blocks }),
        }
    };

    for (i, msg) in input.iter().enumerate() {
        let at = format!("messages[{i}]");
        match msg.role {
            Role::System | Role::Developer => {
                system.extend(text_blocks(msg.content.as_ref(), &at, false)?);
            }
            Role::User => push(
                anthropic::Role::User,
                user_blocks(msg.content.as_ref(), &at)?,
            ),
            Role::Assistant => {
                let mut blocks = text_blocks(msg.content.as_ref(), &at, false)?;
                for (j, call) in msg.tool_calls.iter().flatten().enumerate() {
                    blocks.push(tool_use(call, &format!("{at}.tool_calls[{j}]"))?);
                }
                push(anthropic::Role::Assistant, blocks);
            }
            Role::Tool => {
                let id = msg.tool_call_id.clone().ok_or_else(|| {
                    TranslateError::RequestParse(format!("{at}.tool_call_id is required"))
                })?;
                let blocks = text_blocks(msg.content.as_ref(), &at, false)?;
                let content = match blocks.as_slice() {
                    [] => None,
                    [ContentBlock::Text {
                        text,
                        cache_control: None,
                    }] => Some(ToolResultContent::Text(text.clone())),
                    _ => Some(ToolResultContent::Blocks(blocks)),
                };
                let result = ContentBlock::ToolResult {
                    tool_use_id: id,
                    content,
                    is_error: None,
                    cache_control: None,
                };
                push(anthropic::Role::User, vec![result]);
            }
            Role::Function => {
                return Err(unsupported(
                    &format!("{at}.role"),
                    "legacy 'function' messages: use 'tool' messages",
                ))
            }
            Role::Unknown => {
                return Err(TranslateError::RequestParse(format!(
                    "{at}.role is not a known role"
                )))
            }
        }
    }

    if turns.is_empty() {
        return Err(TranslateError::RequestParse(
            "'messages' must contain at least one user or assistant message".into(),
        ));
    }
    let system = match system.as_slice() {
        [] => None,
        blocks
            if blocks.iter().all(|b| {
                matches!(
                    b,
                    ContentBlock::Text {
                        cache_control: None,
                        ..
                    }
                )
            }) =>
        {
            let texts: Vec<&str> = blocks
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            Some(System::Text(texts.join("\n\n")))
        }
        _ => Some(System::Blocks(system)),
    };
    let messages = turns
        .into_iter()
        .map(|t| {
            let content = match t.blocks.as_slice() {
                [ContentBlock::Text {
                    text,
                    cache_control: None,
                }] => MessageContent::Text(text.clone()),
                _ => MessageContent::Blocks(t.blocks),
            };
            anthropic::Message {
                role: t.role,
                content,
            }
        })
        .collect();
    Ok((system, messages))
}

/// Text content as text blocks; images refused unless `images` (user messages only).
fn text_blocks(
    content: Option<&Content>,
    at: &str,
    images: bool,
) -> Result<Vec<ContentBlock>, TranslateError> {
    let mut out = Vec::new();
    match content {
        None => {}
        Some(Content::Text(t)) if t.is_empty() => {}
        Some(Content::Text(t)) => out.push(ContentBlock::Text {
            text: t.clone(),
            cache_control: None,
        }),
        Some(Content::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let at = format!("{at}.content[{j}]");
                match part {
                    ContentPart::Text {
                        text,
                        cache_control,
                    } => {
                        if !text.is_empty() {
                            out.push(ContentBlock::Text {
                                text: text.clone(),
                                cache_control: cache_control.as_ref().map(cache_control_in),
                            });
                        }
                    }
                    ContentPart::ImageUrl { image_url } if images => {
                        out.push(image(&image_url.url, &at)?)
                    }
                    ContentPart::ImageUrl { .. } => {
                        return Err(unsupported(
                            &at,
                            "images are only accepted in user messages",
                        ))
                    }
                    ContentPart::Unknown => {
                        return Err(unsupported(
                            &at,
                            "only text and image parts can be sent to Anthropic",
                        ))
                    }
                }
            }
        }
    }
    Ok(out)
}

fn user_blocks(content: Option<&Content>, at: &str) -> Result<Vec<ContentBlock>, TranslateError> {
    text_blocks(content, at, true)
}

fn cache_control_in(c: &openai::CacheControl) -> CacheControl {
    CacheControl {
        kind: c.kind.clone(),
        ttl: None,
    }
}

fn image(url: &str, at: &str) -> Result<ContentBlock, TranslateError> {
    let source = if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| TranslateError::RequestParse(format!("{at}: malformed data URL")))?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| TranslateError::RequestParse(format!("{at}: data URLs must be base64")))?
            .to_ascii_lowercase();
        if !IMAGE_TYPES.contains(&media_type.as_str()) {
            return Err(unsupported(
                at,
                "Anthropic accepts image/jpeg, image/png, image/gif and image/webp",
            ));
        }
        ImageSource::Base64 {
            media_type,
            data: data.to_owned(),
        }
    } else if url.starts_with("https://") || url.starts_with("http://") {
        ImageSource::Url {
            url: url.to_owned(),
        }
    } else {
        return Err(TranslateError::RequestParse(format!(
            "{at}: image URL must be https:// or a data URL"
        )));
    };
    Ok(ContentBlock::Image {
        source,
        cache_control: None,
    })
}

fn tool_use(call: &openai::ToolCall, at: &str) -> Result<ContentBlock, TranslateError> {
    let args = call.function.arguments.trim();
    let input = if args.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str::<Value>(args).map_err(|e| {
            TranslateError::RequestParse(format!("{at}.function.arguments is not valid JSON: {e}"))
        })?
    };
    if !input.is_object() {
        return Err(TranslateError::RequestParse(format!(
            "{at}.function.arguments must be a JSON object"
        )));
    }
    Ok(ContentBlock::ToolUse {
        id: call.id.clone(),
        name: call.function.name.clone(),
        input,
        cache_control: None,
    })
}

fn tool(i: usize, t: &openai::Tool) -> Result<anthropic::Tool, TranslateError> {
    if t.kind != "function" {
        return Err(unsupported(
            &format!("tools[{i}].type"),
            "only function tools can be sent to Anthropic",
        ));
    }
    let schema = t
        .function
        .parameters
        .clone()
        .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
    Ok(anthropic::Tool {
        kind: None,
        name: t.function.name.clone(),
        description: t.function.description.clone(),
        input_schema: Some(schema),
        cache_control: None,
    })
}

fn tool_choice(
    choice: Option<&openai::ToolChoice>,
    parallel: Option<bool>,
) -> Result<Option<ToolChoice>, TranslateError> {
    let disable = (parallel == Some(false)).then_some(true);
    let out = match choice {
        None if disable.is_some() => ToolChoice::Auto {
            disable_parallel_tool_use: disable,
        },
        None => return Ok(None),
        Some(openai::ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => ToolChoice::Auto {
                disable_parallel_tool_use: disable,
            },
            "required" => ToolChoice::Any {
                disable_parallel_tool_use: disable,
            },
            "none" => ToolChoice::None,
            other => {
                return Err(TranslateError::RequestParse(format!(
                    "'tool_choice' value '{other}' is not valid"
                )))
            }
        },
        Some(openai::ToolChoice::Named(named)) => ToolChoice::Tool {
            name: named.function.name.clone(),
            disable_parallel_tool_use: disable,
        },
    };
    Ok(Some(out))
}
