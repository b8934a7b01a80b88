//! Anthropic Messages response → OpenAI `chat.completion`.

use crate::anthropic::{ContentBlock, ErrorResponse, MessagesResponse, StopReason};
use crate::error::TranslateError;
use crate::openai::{ChatCompletion, Choice, FunctionCall, OpenAiUsage, ResponseMessage, ToolCall};
use crate::usage::Usage;

/// Translates a Messages response body. `model`, `id` and `created` are the values the client
/// sees (the gateway's names for them). Text blocks are joined; `tool_use` blocks become
/// `tool_calls` with compact JSON arguments; thinking blocks are dropped.
pub fn response(
    body: &[u8],
    model: &str,
    id: &str,
    created: u64,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let parsed: MessagesResponse = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            if let Ok(err) = serde_json::from_slice::<ErrorResponse>(body) {
                return Err(TranslateError::ResponseParse(format!(
                    "provider returned an error: {}: {}",
                    err.error.kind, err.error.message
                )));
            }
            return Err(TranslateError::ResponseParse(e.to_string()));
        }
    };

    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in &parsed.content {
        match block {
            ContentBlock::Text { text: t, .. } => text.get_or_insert_with(String::new).push_str(t),
            ContentBlock::ToolUse {
                id, name, input, ..
            } => tool_calls.push(ToolCall {
                id: id.clone(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: name.clone(),
                    arguments: serde_json::to_string(input).unwrap_or_else(|_| "{}".to_owned()),
                },
            }),
            _ => {}
        }
    }

    let usage = Usage::from(&parsed.usage);
    let stop_reason = parsed.stop_reason.unwrap_or(StopReason::EndTurn);
    let finish = stop_reason.openai_finish_reason();
    let completion = ChatCompletion {
        id: id.to_owned(),
        object: "chat.completion".to_owned(),
        created,
        model: model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".to_owned(),
                content: text,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            },
            finish_reason: Some(finish.to_owned()),
            native_finish_reason: stop_reason.native_finish_reason().map(str::to_owned),
        }],
        usage: Some(OpenAiUsage::from(&usage)),
    };
    let bytes = serde_json::to_vec(&completion)
        .map_err(|e| TranslateError::ResponseParse(e.to_string()))?;
    Ok((bytes, usage))
}
