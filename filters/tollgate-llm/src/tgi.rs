//! Hugging Face Text Generation Inference (TGI) wire types: the `generate` API as TGI serves it
//! on `/generate`, `/generate_stream` and, behind Amazon SageMaker, on `/invocations` (the
//! SageMaker Hugging Face LLM container takes the same `{"inputs", "parameters", "stream"}`
//! body on `InvokeEndpoint` and `InvokeEndpointWithResponseStream`).
//!
//! Names follow TGI's router (`GenerateRequest`, `GenerateParameters`, `Details`,
//! `StreamResponse`, `StreamDetails`, `FinishReason`). Response types are read leniently:
//! fields added by newer TGI versions are ignored, fields older versions omit default.

use serde::{Deserialize, Serialize};

/// The body of a generate request (`CompatGenerateRequest` in TGI: `stream` selects SSE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub inputs: String,
    pub parameters: GenerateParameters,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// The subset of TGI's `GenerateParameters` the gateway sets. Unset options keep TGI's
/// defaults. TGI's validation: `temperature` > 0, 0 < `top_p` < 1, `max_new_tokens` > 0, at
/// most `--max-stop-sequences` (default 4) stop sequences, `decoder_input_details` only
/// without streaming.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateParameters {
    /// Sample (`true`) or decode greedily (`false`).
    pub do_sample: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Always `false`: TGI's compatibility route defaults it to `true` for `text-generation`
    /// models, which would echo the prompt.
    pub return_full_text: bool,
    /// Always `true`: the finish reason and token counts are in the details.
    pub details: bool,
    /// `true` without streaming: the prompt's tokens come back in `details.prefill`, so the
    /// prompt token count is exact. TGI refuses it when streaming.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decoder_input_details: bool,
}

/// `/generate` (and SageMaker `InvokeEndpoint`) answer: a list of one, or the object alone.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum GenerateOutput {
    List(Vec<GenerateResponse>),
    One(GenerateResponse),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GenerateResponse {
    pub generated_text: String,
    #[serde(default)]
    pub details: Option<Details>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Details {
    pub finish_reason: FinishReason,
    pub generated_tokens: u64,
    /// The prompt's tokens, filled when the request set `decoder_input_details`.
    #[serde(default)]
    pub prefill: Vec<PrefillToken>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PrefillToken {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Length,
    EosToken,
    StopSequence,
    #[serde(other)]
    Unknown,
}

impl FinishReason {
    /// OpenAI's `finish_reason`.
    pub fn openai_finish_reason(self) -> &'static str {
        match self {
            Self::Length => "length",
            Self::EosToken | Self::StopSequence | Self::Unknown => "stop",
        }
    }

    /// The reason to carry beside `finish_reason` in the pivot, when `finish_reason` loses it.
    pub fn native_finish_reason(self) -> Option<&'static str> {
        (self == Self::StopSequence).then_some("stop_sequence")
    }
}

/// One event of `/generate_stream`: a token, and on the last event the generated text and the
/// details. An error mid-stream is `{"error": "...", "error_type": "..."}` instead.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StreamResponse {
    #[serde(default)]
    pub token: Option<Token>,
    #[serde(default)]
    pub generated_text: Option<String>,
    #[serde(default)]
    pub details: Option<StreamDetails>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Token {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub text: String,
    /// Special tokens (end of sequence, end of turn) are not part of the answer.
    #[serde(default)]
    pub special: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StreamDetails {
    pub finish_reason: FinishReason,
    pub generated_tokens: u64,
    /// The prompt's token count; recent TGI versions report it, older ones leave it out.
    #[serde(default)]
    pub input_length: Option<u64>,
}
