//! One usage type for every provider. `None` means "not reported". Streamed usage is
//! cumulative: replace the running value, do not add.

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens not read from or written to a prompt cache.
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cache_read: Option<u64>,
    pub cache_write: Option<u64>,
    /// Reasoning tokens (part of `output`).
    pub reasoning: Option<u64>,
}

impl Usage {
    /// OpenAI `prompt_tokens`: every input token, cached or not.
    pub fn prompt_tokens(&self) -> u64 {
        self.input.unwrap_or(0) + self.cache_read.unwrap_or(0) + self.cache_write.unwrap_or(0)
    }

    pub fn completion_tokens(&self) -> u64 {
        self.output.unwrap_or(0)
    }

    /// Overlays the fields `later` reports (streamed usage arrives in pieces, e.g. Anthropic's
    /// `message_start` then `message_delta`).
    pub fn merge(&mut self, later: &Usage) {
        for (mine, theirs) in [
            (&mut self.input, later.input),
            (&mut self.output, later.output),
            (&mut self.cache_read, later.cache_read),
            (&mut self.cache_write, later.cache_write),
            (&mut self.reasoning, later.reasoning),
        ] {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
    }
}
