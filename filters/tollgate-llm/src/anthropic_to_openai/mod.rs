//! Anthropic-format client (`POST /v1/messages` ingress) → the OpenAI pivot, and back.
//!
//! - [`request`]: a Messages request body → an OpenAI [`ChatRequest`](crate::openai::ChatRequest),
//!   which then goes to any provider through that provider's `openai_to_*` translator.
//! - [`response`]: an OpenAI `chat.completion` → a Messages response body.
//! - [`StreamFromOpenAi`]: OpenAI `chat.completion.chunk` SSE → Messages SSE events, in the
//!   order the Anthropic SDKs expect.
//! - [`error_body`]: an Anthropic-format error body.
//!
//! # Request fields
//!
//! | Anthropic | OpenAI |
//! | --- | --- |
//! | `system` (string or text blocks) | a leading `system` message (text parts when blocks, `cache_control` kept) |
//! | `messages` user / assistant | same roles |
//! | `text` blocks | text parts, `cache_control` kept (a plain string when there is one text block without it) |
//! | `image` blocks, `base64` / `url` source | `image_url` parts with a `data:` URL / the URL |
//! | `tool_use` blocks (assistant) | `tool_calls`, `input` as compact JSON `arguments` |
//! | `tool_result` blocks (user) | `tool` messages, before the rest of that user message; text content joined |
//! | `thinking` / `redacted_thinking` blocks (assistant history) | dropped |
//! | `tools` (client tools) | `type: function` tools, `input_schema` → `parameters` |
//! | `tool_choice` auto / any / tool / none | `auto` / `required` / named / `none`; `disable_parallel_tool_use: true` → `parallel_tool_calls: false` |
//! | `max_tokens` (required) | `max_tokens` |
//! | `stop_sequences`, `temperature`, `top_p` | `stop`, `temperature`, `top_p` |
//! | `top_k` | kept as `top_k` (an OpenAI provider will refuse it by name) |
//! | `metadata.user_id` | `user` |
//! | `stream` | `stream`, with `stream_options.include_usage: true` so usage comes back |
//!
//! Refused with [`TranslateError::Unsupported`](crate::TranslateError::Unsupported): `thinking`
//! (enabled), `mcp_servers`, `container`, server tools (a tool with a `type` other than
//! `custom`), non-text blocks inside `system` or `tool_result`, and `document`, `search_result`
//! and other unknown blocks.
//!
//! Dropped (the pivot cannot carry them): cache markers on images, tools and tool results, the
//! cache `ttl`, `is_error` on tool results, `service_tier`, and any other field.

mod request;
mod response;
mod stream;

pub use request::request;
pub use response::{response, response_with_usage};
pub use stream::StreamFromOpenAi;

use crate::anthropic::{ErrorDetail, ErrorResponse};

/// `{"type":"error","error":{"type":kind,"message":message}}`
pub fn error_body(kind: &str, message: &str) -> Vec<u8> {
    let body = ErrorResponse {
        kind: "error".to_owned(),
        error: ErrorDetail {
            kind: kind.to_owned(),
            message: message.to_owned(),
        },
    };
    // Serialising our own types cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The Anthropic message id for an OpenAI completion id: `msg_` + the id without `chatcmpl-`.
pub fn message_id(openai_id: &str) -> String {
    let bare = openai_id.strip_prefix("chatcmpl-").unwrap_or(openai_id);
    if bare.starts_with("msg_") {
        bare.to_owned()
    } else {
        format!("msg_{bare}")
    }
}
