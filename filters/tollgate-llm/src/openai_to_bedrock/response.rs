//! Converse response → OpenAI `chat.completion`.

use crate::bedrock::{ContentBlock, ConverseOutput, ConverseResponse};
use crate::error::TranslateError;
use crate::openai::{ChatCompletion, Choice, FunctionCall, OpenAiUsage, ResponseMessage, ToolCall};
use crate::Usage;

/// Translates a Converse response body into an OpenAI `chat.completion` body (with `model`,
/// `id` and `created` as given) and the usage it reports.
pub fn response(
    body: &[u8],
    model: &str,
    id: &str,
    created: u64,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let parsed: ConverseResponse = serde_json::from_slice(body)
        .map_err(|e| TranslateError::ResponseParse(format!("Bedrock Converse response: {e}")))?;
    let (completion, usage) = to_completion(&parsed, model, id, created)?;
    let bytes = serde_json::to_vec(&completion)
        .map_err(|e| TranslateError::ResponseParse(format!("cannot encode the response: {e}")))?;
    Ok((bytes, usage))
}

/// The typed form of [`response`].
pub fn to_completion(
    parsed: &ConverseResponse,
    model: &str,
    id: &str,
    created: u64,
) -> Result<(ChatCompletion, Usage), TranslateError> {
    let ConverseOutput::Message(message) = &parsed.output else {
        return Err(TranslateError::ResponseParse(
            "Bedrock Converse response has no output message".into(),
        ));
    };
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in &message.content {
        match block {
            ContentBlock::Text(t) => text.get_or_insert_with(String::new).push_str(t),
            ContentBlock::ToolUse(tool) => tool_calls.push(ToolCall {
                id: tool.tool_use_id.clone(),
                kind: "function".into(),
                function: FunctionCall {
                    name: tool.name.clone(),
                    arguments: serde_json::to_string(&tool.input).unwrap_or_else(|_| "{}".into()),
                },
            }),
            // Reasoning, cache points and blocks this version does not know are not returned.
            _ => {}
        }
    }
    let content = match text {
        Some(t) => Some(t),
        None if tool_calls.is_empty() => Some(String::new()),
        None => None,
    };
    let usage = parsed.usage.as_ref().map(Usage::from).unwrap_or_default();
    let completion = ChatCompletion {
        id: id.to_owned(),
        object: "chat.completion".into(),
        created,
        model: model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".into(),
                content,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            },
            finish_reason: Some(parsed.stop_reason.openai_finish_reason().into()),
            native_finish_reason: parsed.stop_reason.native_finish_reason().map(str::to_owned),
        }],
        usage: parsed.usage.as_ref().map(|_| OpenAiUsage::from(&usage)),
    };
    Ok((completion, usage))
}
