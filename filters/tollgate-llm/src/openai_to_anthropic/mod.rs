//! OpenAI-format client → Anthropic Messages provider.
//!
//! - [`request`]: an OpenAI [`ChatRequest`](crate::openai::ChatRequest) → a Messages request
//!   body, sent to the deployment's base path + [`MESSAGES_SUFFIX`].
//! - [`response`]: a Messages response → an OpenAI `chat.completion`, with the usage.
//! - [`StreamToOpenAi`]: a Messages SSE stream → OpenAI `chat.completion.chunk` SSE.
//!
//! # Request parameters
//!
//! | OpenAI | Anthropic |
//! | --- | --- |
//! | `model` | replaced by the deployment's model id |
//! | `system` / `developer` messages (anywhere) | top-level `system`: a string, or text blocks when a part has `cache_control` |
//! | `user` / `assistant` messages | `messages`, consecutive same-role messages merged into one |
//! | text parts | `text` blocks (empty ones dropped), `cache_control` kept |
//! | `image_url` `data:<type>;base64,...` | `image` block, `source: {type: base64, media_type, data}` (jpeg, png, gif, webp) |
//! | `image_url` `http(s)://...` | `image` block, `source: {type: url, url}`; `detail` dropped |
//! | assistant `tool_calls` | `tool_use` blocks, `arguments` parsed (must be a JSON object; `""` is `{}`) |
//! | `tool` messages | `tool_result` blocks in a user message (consecutive ones merged) |
//! | `tools` (`type: function`) | `{name, description, input_schema}` (schema defaults to an empty object schema) |
//! | `tool_choice` `auto` / `required` / `none` / named | `{type: auto}` / `{type: any}` / `{type: none}` / `{type: tool, name}` |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use: true` |
//! | `max_completion_tokens`, else `max_tokens` | `max_tokens`; absent: [`DEFAULT_MAX_TOKENS`] (Anthropic requires it) |
//! | `stop` | `stop_sequences` |
//! | `temperature` (0 to 1 only), `top_p` | same; a temperature above 1 is refused, not clamped |
//! | `top_k` (non-standard) | `top_k` |
//! | `user` | `metadata.user_id` |
//! | `stream` | `stream` (usage always comes in the stream; `stream_options` only decides whether the client gets the usage chunk) |
//!
//! Refused with [`TranslateError::Unsupported`] (a 400 naming the parameter): `n` > 1,
//! `logprobs: true`, `top_logprobs`, `response_format` other than `text`, non-zero
//! `presence_penalty` / `frequency_penalty`, a non-empty `logit_bias`, `audio`, `modalities`
//! other than text, `prediction`, `reasoning_effort`, legacy `functions` / `function_call` and
//! `function` messages, non-function tools, content parts other than text and images.
//!
//! Dropped as harmless: `n: 1`, `seed`, `store`, `metadata`, `service_tier`, `stream_options`,
//! `parallel_tool_calls: true`, message `name`, and any other field.

mod request;
mod response;
mod stream;

pub use request::{request, DEFAULT_MAX_TOKENS};
pub use response::response;
pub use stream::StreamToOpenAi;

/// Appended to the deployment's base path (e.g. `https://api.anthropic.com/v1`).
pub const MESSAGES_SUFFIX: &str = "/messages";
