//! An OpenAI `chat.completion` → a Response object.

use serde_json::{json, Value};

use super::{call_item_id, message_item_id, response_object, status_of, usage_json, Echo};
use crate::error::TranslateError;
use crate::openai::ChatCompletion;
use crate::usage::Usage;

/// Translates a completion; usage as the completion reports it.
pub fn response(openai_body: &[u8], id: &str, created: u64, model: &str, echo: &Echo) -> Result<(Vec<u8>, Usage), TranslateError> {
    response_with_usage(openai_body, id, created, model, echo, None)
}

/// As [`response`], with `exact` usage (from the provider, before the pivot) reported instead
/// of the completion's when given.
pub fn response_with_usage(
    openai_body: &[u8],
    id: &str,
    created: u64,
    model: &str,
    echo: &Echo,
    exact: Option<&Usage>,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let completion = ChatCompletion::parse(openai_body)?;
    let choice = completion.first_choice()?;
    let usage = match exact {
        Some(u) => *u,
        None => completion.usage.as_ref().map(Usage::from).unwrap_or_default(),
    };
    let mut output = Vec::new();
    if let Some(text) = choice.message.content.as_deref().filter(|t| !t.is_empty()) {
        output.push(json!({
            "type": "message",
            "id": message_item_id(id),
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }));
    }
    for (n, call) in choice.message.tool_calls.iter().flatten().enumerate() {
        output.push(json!({
            "type": "function_call",
            "id": call_item_id(id, n),
            "call_id": call.id,
            "name": call.function.name,
            "arguments": call.function.arguments,
            "status": "completed",
        }));
    }
    let (status, incomplete) = status_of(choice.finish_reason.as_deref());
    let body: Value =
        response_object(id, created, model, echo, (status, incomplete), output, Some(usage_json(&usage)));
    let bytes = serde_json::to_vec(&body).map_err(|e| TranslateError::ResponseParse(e.to_string()))?;
    Ok((bytes, usage))
}
