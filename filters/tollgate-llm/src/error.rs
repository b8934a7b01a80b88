//! Translation errors, by phase. Each knows whose fault it is; one mapping at the edge turns
//! that into an HTTP status and a client-format error body with a message safe to show.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The client's request could not be parsed.
    #[error("invalid request: {0}")]
    RequestParse(String),
    /// The request uses something the target provider cannot do; names the parameter.
    #[error("'{param}' is not supported by this provider: {reason}")]
    Unsupported { param: String, reason: String },
    /// The provider's response could not be parsed.
    #[error("invalid provider response: {0}")]
    ResponseParse(String),
    /// The provider's stream is malformed (bad framing, CRC, truncated).
    #[error("invalid provider stream: {0}")]
    StreamDecode(String),
    /// The provider reported an error inside the stream (e.g. an exception frame in a 200).
    #[error("provider error in stream: {kind}: {message}")]
    StreamException { kind: String, message: String },
    /// A buffer bound was exceeded.
    #[error("{what} too large: {actual} bytes, limit {limit}")]
    TooLarge { what: &'static str, actual: usize, limit: usize },
}

impl TranslateError {
    /// True when the client caused it (maps to 400).
    pub fn is_client_fault(&self) -> bool {
        matches!(self, Self::RequestParse(_) | Self::Unsupported { .. })
    }

    /// The request parameter at fault, for OpenAI's `error.param`.
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::Unsupported { param, .. } => Some(param),
            _ => None,
        }
    }
}
