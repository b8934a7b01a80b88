//! What the gateway filter hands on to the provider filter about a routed request, written once
//! as one filter-state value ([`crate::contract::STATE_REQUEST`]) and read by every attempt.
//!
//! The value is a small versioned binary record, so that later versions can append fields
//! (reservations, usage) and a reader never misreads a record written by another version:
//!
//! ```text
//! byte 0      version (1)
//! byte 1      operation code (see `Operation::code`; codes are only ever added, so a record
//!             of an older build reads the same)
//! byte 2      flags: bit 0 stream, bit 1 include_usage, bit 2 body length present, bit 3
//!             quotas held (filter state `tollgate_quota`)
//! [8 bytes]   body length, little endian (only with flag bit 2)
//! 2 + n       key id: u16 little-endian length, then UTF-8 bytes
//! 2 + n       model:  u16 little-endian length, then UTF-8 bytes
//! ```
//!
//! Decoding checks every length against what is there and refuses trailing bytes: a record
//! that does not decode exactly is an error, never a partial value.

use crate::error::ClientApi;

/// The codec version this build writes and reads.
pub const STATE_VERSION: u8 = 2;

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    ChatCompletions,
    Embeddings,
    ListModels,
    RetrieveModel(String),
    /// Anthropic Messages API (`POST /v1/messages`).
    AnthropicMessages,
    /// Bedrock Runtime Converse (`POST [/bedrock]/model/{modelId}/converse[-stream]`); the model
    /// is in the path.
    BedrockConverse { model: String, stream: bool },
    /// OpenAI Responses API (`POST /v1/responses`).
    OpenAiResponses,
    /// Bedrock Runtime InvokeModel (`POST [/bedrock]/model/{modelId}/invoke` and
    /// `/invoke-with-response-stream`); the model is in the path, the body is the model's own.
    BedrockInvoke { model: String, stream: bool },
    /// The key's own usage and spend (`GET /v1/usage`): authenticated here, answered by the
    /// control plane's internal listener.
    KeyUsage,
}

impl Operation {
    /// Does the operation carry a body to validate and route on?
    pub fn has_body(&self) -> bool {
        matches!(
            self,
            Self::ChatCompletions
                | Self::Embeddings
                | Self::AnthropicMessages
                | Self::BedrockConverse { .. }
                | Self::OpenAiResponses
                | Self::BedrockInvoke { .. }
        )
    }

    /// The API the client speaks, which decides the error format.
    pub fn client_api(&self) -> ClientApi {
        match self {
            Self::AnthropicMessages => ClientApi::Anthropic,
            Self::BedrockConverse { .. } | Self::BedrockInvoke { .. } => ClientApi::Bedrock,
            _ => ClientApi::OpenAi,
        }
    }

    /// The code of a routable operation in the state record; `None` for the ones answered by
    /// the gateway filter itself.
    fn code(&self) -> Option<u8> {
        match self {
            Self::ChatCompletions => Some(1),
            Self::Embeddings => Some(2),
            Self::AnthropicMessages => Some(3),
            Self::BedrockConverse { stream: false, .. } => Some(4),
            Self::BedrockConverse { stream: true, .. } => Some(5),
            Self::OpenAiResponses => Some(6),
            Self::BedrockInvoke { stream: false, .. } => Some(7),
            Self::BedrockInvoke { stream: true, .. } => Some(8),
            Self::ListModels | Self::RetrieveModel(_) | Self::KeyUsage => None,
        }
    }

    /// The operation of a code; Bedrock clients name the model in the path, so it comes along.
    fn from_code(code: u8, model: &str) -> Option<Self> {
        match code {
            1 => Some(Self::ChatCompletions),
            2 => Some(Self::Embeddings),
            3 => Some(Self::AnthropicMessages),
            4 => Some(Self::BedrockConverse { model: model.to_owned(), stream: false }),
            5 => Some(Self::BedrockConverse { model: model.to_owned(), stream: true }),
            6 => Some(Self::OpenAiResponses),
            7 => Some(Self::BedrockInvoke { model: model.to_owned(), stream: false }),
            8 => Some(Self::BedrockInvoke { model: model.to_owned(), stream: true }),
            _ => None,
        }
    }
}

/// What the gateway filter learned from a chat body that every attempt needs without reading
/// the body again: with these the provider filter can plan an attempt whose body goes to the
/// provider as sent from the request headers alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyFacts {
    /// `"stream": true`.
    pub stream: bool,
    /// `"stream_options": {"include_usage": true}`.
    pub include_usage: bool,
    /// The client body's length. Every attempt that sends the body as is sets
    /// `content-length` to it: the header map is shared by the attempts, and an earlier one
    /// may have sent a rewritten body of another length.
    pub body_len: Option<u64>,
    /// Quotas applied: what the request holds follows in the request state ([`RequestState::holds`]).
    pub quotas: bool,
}

/// What the gateway filter hands on about a routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestState {
    pub op: Operation,
    pub facts: BodyFacts,
    /// Public id of the virtual key that authenticated the request.
    pub key_id: String,
    /// The model name the client asked for.
    pub model: String,
    /// What the request holds of its quotas (with `facts.quotas`).
    pub holds: Option<Box<crate::quota::Holds>>,
}

/// Why a state record could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the request state was written by codec version {0}, this build reads {STATE_VERSION}")]
    Version(u8),
    #[error("the request state is truncated or malformed")]
    Malformed,
    #[error("the operation is not routed to a provider")]
    NotRouted,
    #[error("a request state field is longer than 65535 bytes")]
    TooLong,
}

const FLAG_STREAM: u8 = 1;
const FLAG_USAGE: u8 = 2;
const FLAG_LEN: u8 = 4;
const FLAG_QUOTA: u8 = 8;

impl RequestState {
    pub fn encode(&self) -> Result<Vec<u8>, StateError> {
        Self::encode_from(&self.op, self.facts, &self.key_id, &self.model, self.holds.as_deref())
    }

    /// [`RequestState::encode`] from borrowed parts (the gateway filter's request path). The
    /// holds, when the request has quotas, follow the model.
    pub fn encode_from(op: &Operation, facts: BodyFacts, key_id: &str, model: &str, holds: Option<&crate::quota::Holds>) -> Result<Vec<u8>, StateError> {
        let code = op.code().ok_or(StateError::NotRouted)?;
        // Room for all of it, holds included (one allocation, no growing).
        let held = holds.map_or(0, |h| 96 + h.holds.iter().map(|x| 29 + x.id.len() + x.group.as_deref().map_or(0, str::len)).sum::<usize>());
        let mut out = Vec::with_capacity(16 + key_id.len() + model.len() + held);
        let mut flags = 0;
        if facts.stream {
            flags |= FLAG_STREAM;
        }
        if facts.include_usage {
            flags |= FLAG_USAGE;
        }
        if facts.body_len.is_some() {
            flags |= FLAG_LEN;
        }
        if facts.quotas {
            flags |= FLAG_QUOTA;
        }
        out.extend_from_slice(&[STATE_VERSION, code, flags]);
        if let Some(len) = facts.body_len {
            out.extend_from_slice(&len.to_le_bytes());
        }
        for text in [key_id, model] {
            let len = u16::try_from(text.len()).map_err(|_| StateError::TooLong)?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        if let Some(h) = holds.filter(|_| facts.quotas) {
            h.encode_into(&mut out).ok_or(StateError::TooLong)?;
        }
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut r = Reader(bytes);
        let version = r.byte()?;
        if version != STATE_VERSION {
            return Err(StateError::Version(version));
        }
        let code = r.byte()?;
        let flags = r.byte()?;
        if flags & !(FLAG_STREAM | FLAG_USAGE | FLAG_LEN | FLAG_QUOTA) != 0 {
            return Err(StateError::Malformed);
        }
        let body_len = if flags & FLAG_LEN != 0 {
            let raw: [u8; 8] = r.take(8)?.try_into().map_err(|_| StateError::Malformed)?;
            Some(u64::from_le_bytes(raw))
        } else {
            None
        };
        let key_id = r.text()?;
        let model = r.text()?;
        let holds = match (flags & FLAG_QUOTA != 0, r.0.is_empty()) {
            (_, true) => None,
            (true, false) => Some(Box::new(crate::quota::Holds::decode(r.0).ok_or(StateError::Malformed)?)),
            (false, false) => return Err(StateError::Malformed),
        };
        let op = Operation::from_code(code, model).ok_or(StateError::Malformed)?;
        let facts = BodyFacts { stream: flags & FLAG_STREAM != 0, include_usage: flags & FLAG_USAGE != 0, body_len, quotas: flags & FLAG_QUOTA != 0 };
        Ok(Self { op, facts, key_id: key_id.to_owned(), model: model.to_owned(), holds })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.0.len() < n {
            return Err(StateError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    fn text(&mut self) -> Result<&'a str, StateError> {
        let len = self.take(2)?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        std::str::from_utf8(self.take(len)?).map_err(|_| StateError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op_strategy() -> impl Strategy<Value = Operation> {
        prop_oneof![
            Just(Operation::ChatCompletions),
            Just(Operation::Embeddings),
            Just(Operation::AnthropicMessages),
            any::<bool>().prop_map(|stream| Operation::BedrockConverse { model: String::new(), stream }),
            Just(Operation::OpenAiResponses),
            any::<bool>().prop_map(|stream| Operation::BedrockInvoke { model: String::new(), stream }),
        ]
    }

    proptest! {
        /// Every state the gateway filter can write reads back as itself.
        #[test]
        fn round_trip(op in op_strategy(), stream: bool, include_usage: bool, body_len: Option<u64>, quotas: bool,
                      key_id in "\\PC{0,40}", model in "\\PC{0,80}") {
            // Bedrock operations carry the model in the record's model field.
            let op = match op {
                Operation::BedrockConverse { stream, .. } => Operation::BedrockConverse { model: model.clone(), stream },
                Operation::BedrockInvoke { stream, .. } => Operation::BedrockInvoke { model: model.clone(), stream },
                other => other,
            };
            let holds = quotas.then(|| Box::new(crate::quota::Holds {
                holds: vec![crate::quota::Hold { id: key_id.as_str().into(), metric: crate::quota::Metric::TotalTokens, window: 7, reserved: 4096, group: None, epoch: 3, tag: 0 }],
                tagged: Vec::new(),
                limits: crate::quota::RateLimits { tokens: Some((1000, 10, Some(3))), ..Default::default() },
                body_len: 77,
                max_output: 0,
                tally: 9,
                admitted_ns: 11,
            }));
            let state = RequestState { op, facts: BodyFacts { stream, include_usage, body_len, quotas }, key_id, model, holds };
            let bytes = state.encode().unwrap();
            prop_assert_eq!(RequestState::decode(&bytes).unwrap(), state);
        }

        /// Any byte string decodes to a state or an error, never a panic; a decoded state
        /// encodes back to the same bytes.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(state) = RequestState::decode(&bytes) {
                prop_assert_eq!(state.encode().unwrap(), bytes);
            }
        }

        /// Every proper prefix of a record is refused (no partial reads).
        #[test]
        fn truncations_are_refused(key_id in "[a-z0-9_]{0,12}", model in "[a-z0-9.-]{0,20}", body_len: Option<u64>) {
            let bytes = RequestState::encode_from(&Operation::ChatCompletions, BodyFacts { body_len, ..Default::default() }, &key_id, &model, None).unwrap();
            for cut in 0..bytes.len() {
                prop_assert!(RequestState::decode(&bytes[..cut]).is_err());
            }
        }
    }

    /// The codes of the first operations never change (records of older builds read the same).
    #[test]
    fn operation_codes_are_stable() {
        let code = |op: Operation| RequestState::encode_from(&op, BodyFacts::default(), "", "m", None).unwrap()[1];
        assert_eq!(code(Operation::ChatCompletions), 1);
        assert_eq!(code(Operation::BedrockConverse { model: "m".into(), stream: true }), 5);
        assert_eq!(code(Operation::OpenAiResponses), 6);
        assert_eq!(code(Operation::BedrockInvoke { model: "m".into(), stream: false }), 7);
        assert_eq!(code(Operation::BedrockInvoke { model: "m".into(), stream: true }), 8);
    }

    #[test]
    fn another_version_is_refused_by_name() {
        let mut bytes = RequestState::encode_from(&Operation::Embeddings, BodyFacts::default(), "k", "m", None).unwrap();
        bytes[0] = 1;
        assert_eq!(RequestState::decode(&bytes), Err(StateError::Version(1)));
    }

    #[test]
    fn operations_the_gateway_answers_are_not_written() {
        let r = RequestState::encode_from(&Operation::ListModels, BodyFacts::default(), "k", "m", None);
        assert_eq!(r, Err(StateError::NotRouted));
    }

    #[test]
    fn layout_is_as_documented() {
        let facts = BodyFacts { stream: true, include_usage: false, body_len: Some(2048), quotas: false };
        let bytes = RequestState::encode_from(&Operation::ChatCompletions, facts, "k1", "gpt", None).unwrap();
        let mut want = vec![STATE_VERSION, 1, FLAG_STREAM | FLAG_LEN];
        want.extend_from_slice(&2048u64.to_le_bytes());
        want.extend_from_slice(&[2, 0, b'k', b'1', 3, 0, b'g', b'p', b't']);
        assert_eq!(bytes, want);
    }
}
