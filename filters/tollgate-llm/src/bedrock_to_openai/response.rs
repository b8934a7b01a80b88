//! OpenAI `chat.completion` → Converse response.


use crate::bedrock::{
    ContentBlock, ConversationRole, ConverseMetrics, ConverseOutput, ConverseResponse, Message,
    StopReason, ToolUseBlock,
};
use crate::error::TranslateError;
use crate::openai::ChatCompletion;
use crate::usage::Usage;

/// Translates an OpenAI completion body into a Converse response body and its usage.
pub fn response(openai_body: &[u8]) -> Result<(Vec<u8>, Usage), TranslateError> {
    response_with_usage(openai_body, None)
}

/// As [`response`], but reports `exact` usage instead of the body's when given: OpenAI usage
/// has no cache-write count, so a caller that knows the provider's own numbers (e.g. the
/// Anthropic or Bedrock response this body was made from) passes them to keep them exact.
pub fn response_with_usage(
    openai_body: &[u8],
    exact: Option<&Usage>,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let completion = ChatCompletion::parse(openai_body)?;
    let choice = completion.first_choice()?;

    let mut content = Vec::new();
    if let Some(text) = choice.message.content.as_ref().filter(|t| !t.is_empty()) {
        content.push(ContentBlock::Text(text.clone()));
    }
    for call in choice.message.tool_calls.iter().flatten() {
        let input = call.function.parsed_arguments()?;
        content.push(ContentBlock::ToolUse(ToolUseBlock {
            tool_use_id: call.id.clone(),
            name: call.function.name.clone(),
            input,
        }));
    }

    let usage = match (exact, &completion.usage) {
        (Some(u), _) => *u,
        (None, Some(u)) => Usage::from(u),
        (None, None) => Usage::default(),
    };
    let body = ConverseResponse {
        output: ConverseOutput::Message(Message {
            role: ConversationRole::Assistant,
            content,
        }),
        stop_reason: StopReason::from_openai(choice.finish_reason.as_deref(), choice.native_finish_reason.as_deref()),
        // Required by the SDKs: zeros when the provider reported nothing.
        usage: Some(super::token_usage(&usage)),
        metrics: Some(ConverseMetrics { latency_ms: 0 }),
        additional_model_response_fields: None,
    };
    let bytes =
        serde_json::to_vec(&body).map_err(|e| TranslateError::ResponseParse(e.to_string()))?;
    Ok((bytes, usage))
}
