//! Pure LLM wire types, push-based stream decoders and translators between provider APIs.
//!
//! The OpenAI Chat Completions format is the pivot: a client request in any API is turned into
//! an OpenAI [`openai::ChatRequest`], then into the provider's request; a provider response or
//! stream is turned into OpenAI form, then into the client's API. Each translator is a value
//! owned by one request attempt; it never calls the host and never reads the clock.
//!
//! Module map (by pair, each split into request / response / stream):
//! - [`openai`]: OpenAI wire types (the pivot).
//! - [`bedrock`]: Bedrock Converse wire types; [`openai_to_bedrock`]: requests to Converse,
//!   Converse responses and ConverseStream events back to OpenAI.
//! - [`anthropic`]: Anthropic Messages wire types; [`openai_to_anthropic`]: requests to
//!   Messages, responses and stream events back to OpenAI.
//! - [`sagemaker`]: SageMaker Runtime paths and the `PayloadPart` stream unwrapper;
//!   [`tgi`]: Hugging Face TGI generate wire types; [`openai_to_tgi`]: requests to TGI (chat
//!   rendered with a prompt template), generate responses and streams back to OpenAI.
//! - [`responses_to_openai`]: OpenAI Responses API requests to the chat pivot, completions and
//!   chat streams back to Response objects and Responses events.
//! - [`bedrock_invoke`]: Bedrock InvokeModel ingress with the Anthropic-on-Bedrock body, through
//!   the Anthropic translators, and their SSE back as InvokeModelWithResponseStream frames.
//! - [`pivot_reader`]: the one reader of the OpenAI pivot stream (SSE chunks → neutral
//!   events), under every translator that writes another client API from the pivot.
//! - [`sse`], [`eventstream`]: push-based decoders with bounded buffers.
//! - [`usage`]: the one usage type and the table mapping each provider's fields into it.

pub mod anthropic;
pub mod anthropic_to_openai;
pub mod bedrock;
pub mod bedrock_embeddings;
pub mod bedrock_invoke;
pub mod bedrock_to_openai;
pub mod error;
pub mod eventstream;
pub mod json_field;
pub mod openai;
pub mod openai_stream;
pub mod openai_to_anthropic;
pub mod openai_to_bedrock;
pub mod openai_to_tgi;
pub mod pivot_reader;
pub mod responses_to_openai;
pub mod sagemaker;
pub mod sse;
pub mod tgi;
pub mod usage;
pub mod usage_reader;

pub use error::TranslateError;
pub use usage::Usage;

/// Output of a streaming translator for one input chunk: bytes to send to the client now
/// (possibly empty) and the usage known so far (cumulative, `None` if not reported yet).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamOutput {
    pub bytes: Vec<u8>,
    pub usage: Option<Usage>,
}

/// A streaming response translator: provider stream bytes in, client stream bytes out.
/// `feed` may be called with any split of the input (one byte at a time included) and must
/// produce the same concatenated output. `finish` is called once at end of stream; a stream
/// that ended early (no final event) yields a terminal error event, never a silent short answer.
pub trait StreamTranslator {
    fn feed(&mut self, chunk: &[u8]) -> Result<StreamOutput, TranslateError>;
    fn finish(&mut self) -> Result<StreamOutput, TranslateError>;

    /// Whether every byte goes out as it came in (the translator only reads the stream): the
    /// caller may then use [`StreamTranslator::read`] and pass the bytes on itself.
    fn passes_through(&self) -> bool {
        false
    }

    /// Reads the next bytes of a stream that [`StreamTranslator::passes_through`], without
    /// building the output (a copy of each chunk, and a comparison to find it unchanged);
    /// returns the usage known so far.
    fn read(&mut self, chunk: &[u8]) -> Result<Option<Usage>, TranslateError> {
        self.feed(chunk).map(|o| o.usage)
    }
}

impl<T: StreamTranslator + ?Sized> StreamTranslator for Box<T> {
    fn feed(&mut self, chunk: &[u8]) -> Result<StreamOutput, TranslateError> {
        (**self).feed(chunk)
    }

    fn passes_through(&self) -> bool {
        (**self).passes_through()
    }

    fn read(&mut self, chunk: &[u8]) -> Result<Option<Usage>, TranslateError> {
        (**self).read(chunk)
    }

    fn finish(&mut self) -> Result<StreamOutput, TranslateError> {
        (**self).finish()
    }
}

/// Two stream translators in series (provider → pivot → client, or a transport unwrapper
/// before a translator): the second is fed what the first puts out. The usage is the first's
/// when it reports one (it is nearer the provider), else the second's.
pub struct Chain<A, B> {
    pub first: A,
    pub second: B,
}

impl<A: StreamTranslator, B: StreamTranslator> StreamTranslator for Chain<A, B> {
    fn feed(&mut self, chunk: &[u8]) -> Result<StreamOutput, TranslateError> {
        let a = self.first.feed(chunk)?;
        let b = self.second.feed(&a.bytes)?;
        Ok(StreamOutput { bytes: b.bytes, usage: a.usage.or(b.usage) })
    }

    fn finish(&mut self) -> Result<StreamOutput, TranslateError> {
        let a = self.first.finish()?;
        let mut b = self.second.feed(&a.bytes)?;
        let end = self.second.finish()?;
        b.bytes.extend(end.bytes);
        Ok(StreamOutput { bytes: b.bytes, usage: a.usage.or(b.usage).or(end.usage) })
    }
}
