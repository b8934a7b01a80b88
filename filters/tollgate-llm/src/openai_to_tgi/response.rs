//! TGI generate response → OpenAI `chat.completion`.

use crate::error::TranslateError;
use crate::openai::{ChatCompletion, Choice, OpenAiUsage, ResponseMessage};
use crate::tgi::{FinishReason, GenerateOutput, GenerateResponse};
use crate::Usage;

/// Translates a TGI generate response body (`[{generated_text, details}]` or the object alone)
/// into an OpenAI `chat.completion` body (with `model`, `id` and `created` as given) and the
/// usage it reports. `stop` is the request's stop sequences: TGI ends the text with the one it
/// stopped on, OpenAI leaves it out, so it is removed.
pub fn response(
    body: &[u8],
    model: &str,
    id: &str,
    created: u64,
    stop: &[String],
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let parsed: GenerateOutput = serde_json::from_slice(body)
        .map_err(|e| TranslateError::ResponseParse(format!("TGI generate response: {e}")))?;
    let first = match &parsed {
        GenerateOutput::One(r) => r,
        GenerateOutput::List(list) => list
            .first()
            .ok_or_else(|| TranslateError::ResponseParse("TGI generate response: an empty list".into()))?,
    };
    let (completion, usage) = to_completion(first, model, id, created, stop);
    let bytes = serde_json::to_vec(&completion)
        .map_err(|e| TranslateError::ResponseParse(format!("cannot encode the response: {e}")))?;
    Ok((bytes, usage))
}

/// The usage TGI's details report: completion tokens from `generated_tokens`, prompt tokens
/// from the prefill (the prompt's tokens, sent back because the request set
/// `decoder_input_details`); `None` where not reported.
pub fn usage_of(r: &GenerateResponse) -> Usage {
    let Some(d) = &r.details else { return Usage::default() };
    Usage {
        input: (!d.prefill.is_empty()).then(|| u64::try_from(d.prefill.len()).unwrap_or(u64::MAX)),
        output: Some(d.generated_tokens),
        ..Usage::default()
    }
}

/// `text` without the longest of `stop` it ends with.
pub fn strip_stop_sequence<'a>(text: &'a str, stop: &[String]) -> &'a str {
    stop.iter()
        .filter(|s| !s.is_empty() && text.ends_with(s.as_str()))
        .map(String::len)
        .max()
        .and_then(|n| text.get(..text.len() - n))
        .unwrap_or(text)
}

/// The typed form of [`response`].
pub fn to_completion(r: &GenerateResponse, model: &str, id: &str, created: u64, stop: &[String]) -> (ChatCompletion, Usage) {
    let usage = usage_of(r);
    let finish = r.details.as_ref().map(|d| d.finish_reason.openai_finish_reason()).unwrap_or("stop");
    let text = match &r.details {
        Some(d) if d.finish_reason == FinishReason::StopSequence => strip_stop_sequence(&r.generated_text, stop),
        _ => r.generated_text.as_str(),
    };
    let completion = ChatCompletion {
        id: id.to_owned(),
        object: "chat.completion".into(),
        created,
        model: model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".into(),
                content: Some(text.to_owned()),
                tool_calls: None,
            },
            finish_reason: Some(finish.into()),
            native_finish_reason: r.details.as_ref().and_then(|d| d.finish_reason.native_finish_reason()).map(str::to_owned),
        }],
        usage: r.details.as_ref().map(|_| OpenAiUsage::from(&usage)),
    };
    (completion, usage)
}
