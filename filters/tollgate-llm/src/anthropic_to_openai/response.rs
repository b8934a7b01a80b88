//! OpenAI `chat.completion` → Anthropic Messages response.


use crate::anthropic::{AnthropicUsage, ContentBlock, MessagesResponse, StopReason};
use crate::error::TranslateError;
use crate::openai::ChatCompletion;
use crate::usage::Usage;

/// Translates an OpenAI completion body into a Messages response for `model`.
pub fn response(openai_body: &[u8], model: &str) -> Result<(Vec<u8>, Usage), TranslateError> {
    response_with_usage(openai_body, model, None)
}

/// As [`response`], but reports `exact` usage instead of the body's when given: OpenAI usage
/// has no cache-write count, so a caller that knows the provider's own numbers (e.g. the
/// Anthropic or Bedrock response this body was made from) passes them to keep them exact.
pub fn response_with_usage(
    openai_body: &[u8],
    model: &str,
    exact: Option<&Usage>,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let completion = ChatCompletion::parse(openai_body)?;
    let choice = completion.first_choice()?;

    let mut content = Vec::new();
    if let Some(text) = choice.message.content.as_ref().filter(|t| !t.is_empty()) {
        content.push(ContentBlock::Text {
            text: text.clone(),
            cache_control: None,
        });
    }
    for call in choice.message.tool_calls.iter().flatten() {
        let input = call.function.parsed_arguments()?;
        content.push(ContentBlock::ToolUse {
            id: call.id.clone(),
            name: call.function.name.clone(),
            input,
            cache_control: None,
        });
    }

    let usage = match (exact, &completion.usage) {
        (Some(u), _) => *u,
        (None, Some(u)) => Usage::from(u),
        (None, None) => Usage::default(),
    };
    let stop_reason = StopReason::from_openai(choice.finish_reason.as_deref(), choice.native_finish_reason.as_deref());
    let message = MessagesResponse {
        id: super::message_id(&completion.id),
        kind: "message".to_owned(),
        role: "assistant".to_owned(),
        content,
        model: model.to_owned(),
        stop_reason: Some(stop_reason),
        stop_sequence: None,
        usage: AnthropicUsage::from(&usage),
    };
    let bytes =
        serde_json::to_vec(&message).map_err(|e| TranslateError::ResponseParse(e.to_string()))?;
    Ok((bytes, usage))
}
