//! OpenAI Chat Completions ↔ Hugging Face TGI's generate API (a SageMaker endpoint whose
//! container is TGI, as the SageMaker Hugging Face LLM container is).
//!
//! - [`request`]: an OpenAI [`ChatRequest`](crate::openai::ChatRequest) and the deployment's
//!   [`PromptTemplate`] → the generate body `{"inputs", "parameters", "stream"}`.
//! - [`response`]: a generate response → an OpenAI `chat.completion` and its [`Usage`](crate::Usage).
//! - [`StreamToOpenAi`]: the `generate_stream` SSE → OpenAI SSE chunks.
//!
//! # Request mapping
//!
//! | OpenAI | TGI |
//! |---|---|
//! | `messages` (`system` / `developer`, `user`, `assistant`; string or text parts) | `inputs`, rendered with the deployment's template ([`PromptTemplate`]); a message's `name` is dropped |
//! | `max_completion_tokens` (else `max_tokens`) | `parameters.max_new_tokens` (unset: the container's default, which depends on its TGI version and `MAX_TOTAL_TOKENS`) |
//! | `temperature` > 0, `top_p` in (0, 1) | `parameters.temperature`, `parameters.top_p`, `do_sample: true` (OpenAI samples by default) |
//! | `temperature: 0` or `top_p: 0` | `do_sample: false` (greedy; TGI refuses a temperature of 0) |
//! | `top_p: 1` | left out (no nucleus filtering; TGI refuses 1) |
//! | `stop` (string or list) | `parameters.stop` |
//! | `seed` (non-negative integer) | `parameters.seed` |
//! | (always) | `return_full_text: false`, `details: true`; `decoder_input_details: true` when not streaming (exact prompt token count); `stream: true` when streaming |
//!
//! **400** `Unsupported`, naming the parameter: `tools` (non-empty), `tool_choice` other than
//! `none` / `auto`, assistant `tool_calls`, `tool` / `function` messages, image and other
//! non-text parts (`messages[i].content[j]`), text containing a control token of the template
//! (`messages[i].content`), the mistral template's conversation rules (`messages`), `n` > 1,
//! `logprobs`, `top_logprobs`, non-zero `frequency_penalty` / `presence_penalty`, non-empty
//! `logit_bias`, `response_format` other than `text`, `modalities` other than text, `audio`,
//! `functions` / `function_call`, a negative or fractional `seed`, and any other top-level
//! parameter this translation does not know. Dropped because they do not change the answer:
//! `stream` (the body's flag), `stream_options`, `user`, `metadata`, `store`, `service_tier`,
//! `prediction`, `safety_identifier`, `prompt_cache_key`, `prompt_cache_retention`,
//! `parallel_tool_calls`, and `null` values of anything.
//!
//! # Response mapping
//!
//! `generated_text` → the message content. TGI ends the text with the stop sequence it stopped
//! on; OpenAI leaves it out, so with `finish_reason: stop_sequence` the longest of the
//! request's `stop` the text ends with is removed (when streaming, the last characters — as
//! many as the longest stop sequence — are held back until the final event shows whether they
//! are one). `details.finish_reason`: `eos_token`,
//! `stop_sequence` → `stop`; `length` → `length`. Usage: completion tokens =
//! `details.generated_tokens`; prompt tokens = the length of `details.prefill` (the prompt's
//! tokens, returned because the request set `decoder_input_details`). When streaming, prompt
//! tokens come from the final event's `details.input_length`, which older TGI versions do not
//! send: prompt tokens are then not reported (0 in OpenAI's usage). A response without
//! `details` has `finish_reason: "stop"` and no usage.

mod request;
mod response;
mod stream;
mod template;

pub use request::{request, to_generate};
pub use response::{response, strip_stop_sequence, to_completion, usage_of};
pub use stream::StreamToOpenAi;
pub use template::{PromptTemplate, Turn, TurnRole};
