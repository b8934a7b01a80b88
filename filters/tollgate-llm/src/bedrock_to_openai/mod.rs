//! Bedrock-runtime-format client (`POST /bedrock/model/{modelId}/converse` and
//! `/converse-stream` ingress: boto3's `bedrock-runtime` client or `aws-sdk-bedrockruntime`
//! pointed at the gateway) → the OpenAI pivot, and back.
//!
//! - [`request`]: a Converse request body (+ the model id from the path) → an OpenAI
//!   [`ChatRequest`](crate::openai::ChatRequest), which then goes to any provider through that
//!   provider's `openai_to_*` translator.
//! - [`response`]: an OpenAI `chat.completion` → a Converse response body.
//! - [`StreamFromOpenAi`]: OpenAI `chat.completion.chunk` SSE → ConverseStream event-stream
//!   frames, in the order the AWS SDKs expect.
//! - [`error_body`], [`error_type`]: a Bedrock-format error body and its `x-amzn-errortype`.
//!
//! # Request fields
//!
//! | Converse | OpenAI |
//! | --- | --- |
//! | `modelId` (path, percent-decoded by the caller) | `model` |
//! | `system` text blocks | a leading `system` message (a string for one block, else text parts) |
//! | `messages` user / assistant | same roles |
//! | `text` blocks | text parts (a plain string when there is one text block without a cache point; an assistant's texts are joined into one string) |
//! | `image` blocks, `source.bytes` | `image_url` parts with a `data:image/{png,jpeg,gif,webp};base64,` URL |
//! | `cachePoint` after a text block (messages or system) | `cache_control: {type: "ephemeral"}` on that text part |
//! | `toolUse` blocks (assistant) | `tool_calls`, `input` as compact JSON `arguments` |
//! | `toolResult` blocks (user) | `tool` messages, before the rest of that user message; `text` content as is, `json` content as compact JSON text (one block: a string, several: text parts) |
//! | `reasoningContent` blocks (assistant history) | dropped |
//! | `inferenceConfig` `maxTokens`, `temperature`, `topP`, `stopSequences` | `max_tokens`, `temperature`, `top_p`, `stop` |
//! | `toolConfig.tools[].toolSpec` | `type: function` tools, `inputSchema.json` → `parameters` |
//! | `toolConfig.toolChoice` `auto` / `any` / `tool` | `auto` / `required` / named |
//! | `converse-stream` (the `stream` argument) | `stream: true`, with `stream_options.include_usage: true` (the final `metadata` event needs usage) |
//!
//! Refused with [`TranslateError::Unsupported`](crate::TranslateError::Unsupported), naming the
//! Converse field, because they would change the answer: `guardrailConfig`,
//! `additionalModelRequestFields` (non-empty), `promptVariables`, `outputConfig` (structured
//! output), any top-level field this translation does not know; content blocks other than
//! those above (`document`, `video`, `audio`, `guardContent`, `citationsContent`,
//! `searchResult`...), images from `s3Location`, `image` or `document` content in a
//! `toolResult`, system blocks other than `text` / `cachePoint`, tools other than `toolSpec`
//! (`systemTool`).
//!
//! Dropped (they do not change the answer, or the pivot cannot carry them):
//! `requestMetadata`, `performanceConfig`, `serviceTier`, `projectIdentifier`,
//! `additionalModelResponseFieldPaths`, a `modelId` in the body, `cachePoint` blocks that do not
//! follow a text block (after an image or tool block, and in the tool list), the cache point
//! `ttl`, `status: error` on tool results, `strict` on tool specs, and `null` / empty values.
//! Roles, alternation and the first-message rule are left to the provider, as Bedrock would
//! check them.
//!
//! # Response mapping
//!
//! `output.message {role: assistant, content: [{text}, {toolUse: {toolUseId, name, input}}]}`
//! (the tool arguments parsed; invalid JSON is a [`ResponseParse`](crate::TranslateError::ResponseParse)
//! error). `finish_reason` → `stopReason`: `stop` → `end_turn`, `length` → `max_tokens`,
//! `tool_calls` / `function_call` → `tool_use`, `content_filter` → `content_filtered`, anything
//! else → `end_turn`. `usage` is always present (the SDKs require it; zeros if unreported):
//! `inputTokens` excludes cached tokens (OpenAI `prompt_tokens` − `cached_tokens`),
//! `cacheReadInputTokens` / `cacheWriteInputTokens` when known, `totalTokens` = input + cache
//! read + cache write + output, as Bedrock counts it. `metrics.latencyMs` is 0 (this crate does
//! not read the clock).
//!
//! # Errors
//!
//! Bedrock errors are an HTTP status, the `x-amzn-errortype` header ([`error_type`]) and a
//! `{"message": ...}` body ([`error_body`]); botocore and the Rust SDK pick the exception class
//! from the header.

mod request;
mod response;
mod stream;

pub use request::request;
pub use response::{response, response_with_usage};
pub use stream::StreamFromOpenAi;

use serde::Serialize;

use crate::bedrock::TokenUsage;
use crate::usage::Usage;

/// `{"message": message}`, the body of a Bedrock error response.
pub fn error_body(message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        message: &'a str,
    }
    // Serialising our own types cannot fail.
    serde_json::to_vec(&ErrorBody { message }).unwrap_or_default()
}

/// The `x-amzn-errortype` value for an error response with this HTTP status: the Bedrock
/// Runtime exception the AWS SDKs raise for it.
///
/// | status | `x-amzn-errortype` |
/// | --- | --- |
/// | 401, 403 | `AccessDeniedException` |
/// | 404 | `ResourceNotFoundException` |
/// | 408, 504 | `ModelTimeoutException` |
/// | 424 | `ModelErrorException` |
/// | 429 | `ThrottlingException` |
/// | other 4xx (400, 413, 422...) | `ValidationException` |
/// | 502, 503 | `ServiceUnavailableException` |
/// | 500, other 5xx and anything else | `InternalServerException` |
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 | 403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 | 504 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        400..=499 => "ValidationException",
        502 | 503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}


/// Bedrock's usage: `inputTokens` excludes the cached tokens; `totalTokens` counts them.
fn token_usage(u: &Usage) -> TokenUsage {
    TokenUsage {
        input_tokens: u.input.unwrap_or(0),
        output_tokens: u.completion_tokens(),
        total_tokens: u.prompt_tokens() + u.completion_tokens(),
        cache_read_input_tokens: u.cache_read,
        cache_write_input_tokens: u.cache_write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_follow_the_service_model() {
        assert_eq!(error_type(400), "ValidationException");
        assert_eq!(error_type(413), "ValidationException");
        assert_eq!(error_type(401), "AccessDeniedException");
        assert_eq!(error_type(403), "AccessDeniedException");
        assert_eq!(error_type(404), "ResourceNotFoundException");
        assert_eq!(error_type(429), "ThrottlingException");
        assert_eq!(error_type(500), "InternalServerException");
        assert_eq!(error_type(502), "ServiceUnavailableException");
        assert_eq!(error_type(503), "ServiceUnavailableException");
        assert_eq!(error_type(504), "ModelTimeoutException");
        assert_eq!(error_type(200), "InternalServerException");
        assert_eq!(
            error_body("bad \"input\""),
            br#"{"message":"bad \"input\""}"#.to_vec()
        );
    }

    #[test]
    fn usage_counts_cache_apart_from_input() {
        let u = Usage {
            input: Some(20),
            output: Some(7),
            cache_read: Some(1800),
            cache_write: Some(1000),
            reasoning: None,
        };
        let t = token_usage(&u);
        assert_eq!(
            (t.input_tokens, t.output_tokens, t.total_tokens),
            (20, 7, 2827)
        );
        assert_eq!(crate::Usage::from(&t), u);
    }
}
