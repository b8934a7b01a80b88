//! OpenAI Responses API client (`POST /v1/responses` ingress) → the OpenAI chat pivot, and back.
//!
//! - [`request`]: a Responses request body → an OpenAI [`ChatRequest`](crate::openai::ChatRequest)
//!   plus the [`Echo`] of the request fields a Response object repeats;
//! - [`response`]: an OpenAI `chat.completion` → a Response object;
//! - [`StreamFromOpenAi`]: OpenAI `chat.completion.chunk` SSE → the Responses event stream
//!   (`response.created`, `response.in_progress`, per item `response.output_item.added`,
//!   `response.content_part.added`, `response.output_text.delta`..., `response.output_text.done`,
//!   `response.content_part.done`, or `response.function_call_arguments.delta`...,
//!   `response.function_call_arguments.done`, then `response.output_item.done`; last
//!   `response.completed` (or `response.incomplete`) with usage; every event numbered by
//!   `sequence_number` from 0).
//!
//! Wire shapes follow the `openai` Python SDK's `openai.types.responses` (3.x).
//!
//! # Request fields
//!
//! | Responses | chat pivot |
//! | --- | --- |
//! | `instructions` | a leading `system` message |
//! | `input` string | one `user` message |
//! | `input` message items (`role` user / system / developer / assistant; `content` string or `input_text` / `output_text` / `input_image` parts) | messages of that role, text and `image_url` parts |
//! | `function_call` items | `tool_calls` of an assistant message (joined to the assistant message before them) |
//! | `function_call_output` items | `tool` messages (`call_id` → `tool_call_id`; list output: its text joined) |
//! | `reasoning` items | dropped (the pivot has no reasoning history) |
//! | `max_output_tokens` | `max_completion_tokens` |
//! | `temperature`, `top_p`, `user`, `parallel_tool_calls`, `service_tier` | same |
//! | `tools` of `type: function` (`name`, `description`, `parameters`, `strict`) | `function` tools |
//! | `tool_choice` `auto` / `none` / `required` / `{type: function, name}` | same / named |
//! | `text.format` `json_schema` / `json_object` / `text` | `response_format` (text: dropped) |
//! | `reasoning.effort` | `reasoning_effort` |
//! | `stream` | `stream`, with `stream_options.include_usage: true` |
//!
//! Refused ([`TranslateError::Unsupported`](crate::TranslateError::Unsupported), naming the
//! parameter): the stateful features (`previous_response_id`, `store: true`, `conversation`,
//! `background: true`, `item_reference` items: responses are not stored), hosted tools
//! (`web_search`, `file_search`, ...), `prompt` templates, and input item or part types the
//! pivot cannot carry (`input_file`, `input_audio`, computer calls...). Dropped: `metadata`,
//! `include`, `truncation`, `top_logprobs`, `prompt_cache_key`, `safety_identifier` and any
//! other field.

mod request;
mod response;
mod stream;

pub use request::{request, Echo};
pub use response::{response, response_with_usage};
pub use stream::StreamFromOpenAi;

use serde_json::{json, Value};

use crate::usage::Usage;

/// The Responses `usage` object for a usage: `input_tokens` counts every input token, cached
/// or not; the details are always present (the SDK's types require them).
pub fn usage_json(u: &Usage) -> Value {
    let input = u.prompt_tokens();
    let output = u.completion_tokens();
    json!({
        "input_tokens": input,
        "input_tokens_details": {
            "cached_tokens": u.cache_read.unwrap_or(0),
            "cache_write_tokens": u.cache_write.unwrap_or(0),
        },
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning.unwrap_or(0)},
        "total_tokens": input + output,
    })
}

/// `status` and `incomplete_details` of a Response for the pivot's finish reason.
fn status_of(finish_reason: Option<&str>) -> (&'static str, Value) {
    match finish_reason {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// The Response object around `output`, with the request's echoed fields.
fn response_object(
    id: &str,
    created: u64,
    model: &str,
    echo: &Echo,
    (status, incomplete): (&str, Value),
    output: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": echo.parallel_tool_calls,
        "previous_response_id": null,
        "reasoning": {"effort": echo.reasoning_effort, "summary": null},
        "store": false,
        "temperature": echo.temperature,
        "text": echo.text,
        "tool_choice": echo.tool_choice,
        "tools": echo.tools,
        "top_p": echo.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": echo.user,
        "metadata": echo.metadata,
    })
}

/// The Response id for a request id: `resp_` + the id.
pub fn response_id(request_id: &str) -> String {
    let bare = request_id.strip_prefix("chatcmpl-").unwrap_or(request_id);
    format!("resp_{}", bare.replace('-', ""))
}

/// The message item's id in a response.
fn message_item_id(response_id: &str) -> String {
    format!("msg_{}", response_id.strip_prefix("resp_").unwrap_or(response_id))
}

/// The id of the `n`th function call item in a response.
fn call_item_id(response_id: &str, n: usize) -> String {
    format!("fc_{}_{n}", response_id.strip_prefix("resp_").unwrap_or(response_id))
}
