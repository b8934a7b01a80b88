//! Fuzz targets for every parser and decoder on the request and response paths.
//!
//! Each target is a plain `fn(&[u8])` that must return for any input; it panics only when a
//! property fails (a panic in the code under test, a round trip that loses text, a stream
//! translator whose output depends on how its input was split, an output out of bounds).
//! The same functions serve three drivers:
//! - `cargo test` replays every file under `fuzz/corpus/<target>/` (tests/replay.rs): the CI
//!   gate, no fuzzer needed;
//! - `make fuzz` builds the `tollgate-fuzz` binary with libFuzzer (crate `libfuzzer-sys`, on
//!   stable Rust with `-Cpasses=sancov-module`) and runs each target for `FUZZ_SECONDS`;
//! - the amplification report (tests/replay.rs, ignored by default) times each corpus input.
//!
//! Inputs that need a choice (which operation, which translator, how to split a stream) take it
//! from their first byte(s), so one corpus file is one exact, replayable case.

// A fuzz target's job is to panic when a property fails; nothing here runs in a filter.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod codecs;
pub mod gateway;
pub mod requests;
pub mod streams;

/// One fuzz target: its name (the corpus folder) and its function.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order the request travels.
pub const TARGETS: &[Target] = &[
    Target { name: "gateway_classify", run: gateway::classify },
    Target { name: "gateway_route", run: gateway::route },
    Target { name: "openai_request", run: requests::openai_request },
    Target { name: "anthropic_request", run: requests::anthropic_request },
    Target { name: "bedrock_request", run: requests::bedrock_request },
    Target { name: "embeddings_request", run: requests::embeddings_request },
    Target { name: "provider_response", run: requests::provider_response },
    Target { name: "sse_decoder", run: streams::sse_decoder },
    Target { name: "eventstream_decoder", run: streams::eventstream_decoder },
    Target { name: "sagemaker_payload", run: streams::sagemaker_payload },
    Target { name: "stream_translator", run: streams::stream_translator },
    Target { name: "json_field", run: streams::json_field },
    Target { name: "gateway_config", run: codecs::gateway_config },
    Target { name: "request_state", run: codecs::request_state },
    Target { name: "key_shard", run: codecs::key_shard },
    Target { name: "wasm_header_map", run: codecs::wasm_header_map },
    Target { name: "upstream_url", run: codecs::upstream_url },
    Target { name: "egress_classifier", run: codecs::egress_classifier },
];

/// The target with this name.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Splits `data` into chunks whose sizes follow a small generator seeded by `seed`
/// (sizes 1..=seed%97+1), so a fuzz input also chooses where a stream is cut.
pub fn split(seed: u8, data: &[u8]) -> Vec<&[u8]> {
    let max = usize::from(seed % 97) + 1;
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (usize::try_from(state >> 16).unwrap_or(1) % max + 1).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

/// The first byte (the selector) and the rest; an empty input selects 0.
pub fn selector(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, data),
    }
}
