//! OpenAI Chat Completions ↔ Amazon Bedrock Converse / ConverseStream.
//!
//! - [`converse_path`]: the request path, model id percent-encoded as one segment.
//! - [`request`]: an OpenAI [`ChatRequest`](crate::openai::ChatRequest) → the Converse body.
//! - [`response`]: a Converse response → an OpenAI `chat.completion` and its [`Usage`](crate::Usage).
//! - [`StreamToOpenAi`]: ConverseStream event-stream bytes → OpenAI SSE chunks.
//!
//! # Request mapping
//!
//! | OpenAI | Converse |
//! |---|---|
//! | `system` / `developer` messages (anywhere) | `system: [{text}]`, in order (hoisted: Converse has one system prompt) |
//! | `user` content string / text parts | `{text}` blocks (empty text left out) |
//! | `image_url` with a `data:image/{png,jpeg,gif,webp};base64,` URL | `{image: {format, source: {bytes}}}` |
//! | `image_url` with an http(s) URL, other part types | **400** `Unsupported`, naming `messages[i].content[j]...` |
//! | `cache_control` on a text part (or on a message) | a `{cachePoint: {type: "default"}}` block after it (at the end of the message) |
//! | `assistant` `tool_calls` | `{toolUse: {toolUseId, name, input}}` (arguments parsed; `""` is `{}`; invalid JSON is a 400 naming it) |
//! | `tool` messages | a `user` message of `{toolResult: {toolUseId, content: [{text}]}}` |
//! | consecutive messages of one role (after the above) | merged into one message: Converse needs user/assistant alternation |
//! | `tools` (`type: "function"`) | `toolConfig.tools[].toolSpec {name, description, inputSchema: {json}}` |
//! | `tool_choice` `auto` / `required` / `{function: {name}}` | `toolChoice` `{auto: {}}` / `{any: {}}` / `{tool: {name}}` |
//! | `tool_choice: "none"` | `toolConfig` left out, so no tool can be called; but if the conversation already holds tool calls or results, Converse requires `toolConfig` and cannot forbid tool use: **400** `Unsupported` (`tool_choice`) |
//! | tool calls or results in the conversation but no `tools` | **400** `Unsupported` (`tools`): Converse requires the definitions |
//! | `max_completion_tokens` (else `max_tokens`), `temperature`, `top_p`, `stop` | `inferenceConfig {maxTokens, temperature, topP, stopSequences}`; temperature and top_p above 1 are a 400 (Converse accepts 0 to 1) |
//!
//! Parameters that would change the answer and that Converse cannot express are a 400
//! [`TranslateError::Unsupported`] naming them: `n` > 1, `logprobs: true`, `top_logprobs`,
//! `response_format` other than `text`, non-zero `frequency_penalty` / `presence_penalty`,
//! non-empty `logit_bias`, `parallel_tool_calls: false`, `reasoning_effort`, `verbosity`,
//! `audio`, `modalities` other than `["text"]`, `web_search_options`, the legacy
//! `functions` / `function_call`, the `function` role, and any top-level parameter this
//! translation does not know. Dropped because they do not change the answer: `stream`
//! (chosen by the path), `stream_options`, `user`, `seed` (a best-effort hint), `metadata`,
//! `store`, `service_tier`, `prediction` (a latency hint), `safety_identifier`,
//! `prompt_cache_key`, `prompt_cache_retention`, and `null` values of anything. A message's
//! `name` is dropped (Converse has no speaker names).
//!
//! # Response mapping
//!
//! Text blocks are joined; `toolUse` blocks become `tool_calls` with the input as compact JSON;
//! reasoning blocks are not returned. `stopReason` → `finish_reason`: `end_turn`,
//! `stop_sequence` → `stop`; `tool_use` → `tool_calls`; `max_tokens`,
//! `model_context_window_exceeded` → `length`; `guardrail_intervened`, `content_filtered` →
//! `content_filter`; anything else → `stop`. Usage: Bedrock's `inputTokens` excludes cached
//! tokens, so `Usage {input: inputTokens, output: outputTokens, cache_read:
//! cacheReadInputTokens, cache_write: cacheWriteInputTokens}`, and OpenAI's `prompt_tokens` =
//! input + cache read + cache write, `cached_tokens` = cache read.

mod request;
mod response;
mod stream;

pub use request::request;
pub use response::response;
pub use stream::StreamToOpenAi;

/// The Converse path for a model id, base id, inference profile id or ARN:
/// `/model/{id}/converse` or `/model/{id}/converse-stream`, the id percent-encoded as one path
/// segment (everything but `A-Z a-z 0-9 - . _ ~` is encoded, so `:` → `%3A`, `/` → `%2F`), as
/// the AWS SDKs send it. Sign exactly this path.
pub fn converse_path(model_id: &str, stream: bool) -> String {
    let action = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!("/model/{}/{action}", encode_path_segment(model_id))
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters kept, upper-case hex).
pub fn encode_path_segment(segment: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(segment.len());
    for &b in segment.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_ids_profiles_and_arns() {
        assert_eq!(
            converse_path("anthropic.claude-3-5-sonnet-20240620-v1:0", false),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
        assert_eq!(
            converse_path("us.anthropic.claude-3-7-sonnet-20250219-v1:0", true),
            "/model/us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse-stream"
        );
        assert_eq!(
            converse_path("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123", false),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fabc123/converse"
        );
        assert_eq!(encode_path_segment("a b+é~"), "a%20b%2B%C3%A9~");
    }
}
