//! Client requests into the pivot and the pivot into each provider's request, with round-trip
//! properties: a request that translates must come back through the reverse parser with the
//! same message text; and provider responses into client responses.

use tollgate_llm::openai::ChatRequest;
use tollgate_llm::openai_to_tgi::PromptTemplate;
use tollgate_llm::{
    anthropic_to_openai, bedrock_embeddings, bedrock_to_openai, openai_to_anthropic, openai_to_bedrock,
    openai_to_tgi,
};

/// The text of every message, in order (images, tool calls and unknown parts skipped), without
/// whitespace: translators may join consecutive messages of one role (Anthropic's system
/// blocks, Bedrock's alternating turns) with a blank line, which is not a lost word.
pub fn texts(req: &ChatRequest) -> String {
    let all: String = req.messages.iter().filter_map(|m| m.content.as_ref()).map(|c| c.text()).collect();
    all.split_whitespace().collect()
}

fn sorted(text: &str) -> Vec<char> {
    let mut c: Vec<char> = text.chars().collect();
    c.sort_unstable();
    c
}

/// Translates the pivot into each provider's request; where a provider API has a parser back
/// to the pivot (Anthropic, Bedrock Converse: the ingress routes), the text survives the trip.
fn pivot_out(pivot: &ChatRequest) {
    if let Ok(body) = openai_to_anthropic::request(pivot, "m") {
        let back = anthropic_to_openai::request(&body)
            .unwrap_or_else(|e| panic!("our Anthropic request does not parse back: {e}"));
        // Not in order: a user turn's tool results come back before its text (OpenAI wants the
        // `tool` messages right after the assistant's calls), so compare the text as a multiset.
        assert_eq!(sorted(&texts(&back)), sorted(&texts(pivot)), "text lost through Anthropic");
    }
    if let Ok(body) = openai_to_bedrock::request(pivot) {
        let back = bedrock_to_openai::request(&body, "m", false)
            .unwrap_or_else(|e| panic!("our Converse request does not parse back: {e}"));
        // As for Anthropic: Converse merges consecutive user turns with tool results first.
        assert_eq!(sorted(&texts(&back)), sorted(&texts(pivot)), "text lost through Bedrock");
    }
    for template in [PromptTemplate::Llama3, PromptTemplate::Chatml, PromptTemplate::Mistral, PromptTemplate::Plain] {
        if let Ok(body) = openai_to_tgi::request(pivot, template) {
            let v: serde_json::Value = serde_json::from_slice(&body).expect("TGI request is JSON");
            assert!(v.get("inputs").and_then(|i| i.as_str()).is_some(), "TGI request has no inputs");
        }
    }
}

/// An OpenAI chat request body (the pivot, as clients send it) into every provider.
pub fn openai_request(data: &[u8]) {
    if let Ok(pivot) = serde_json::from_slice::<ChatRequest>(data) {
        pivot_out(&pivot);
    }
}

/// An Anthropic Messages body into the pivot, then out again.
pub fn anthropic_request(data: &[u8]) {
    if let Ok(pivot) = anthropic_to_openai::request(data) {
        pivot_out(&pivot);
    }
}

/// A Bedrock Converse body into the pivot (selector bit 0: converse-stream), then out again.
pub fn bedrock_request(data: &[u8]) {
    let (sel, body) = crate::selector(data);
    if let Ok(pivot) = bedrock_to_openai::request(body, "m", sel & 1 == 1) {
        pivot_out(&pivot);
    }
}

/// An OpenAI embeddings body into Bedrock's InvokeModel body (Titan or Cohere by selector).
pub fn embeddings_request(data: &[u8]) {
    let (sel, body) = crate::selector(data);
    let family = if sel & 1 == 0 { bedrock_embeddings::Family::Titan } else { bedrock_embeddings::Family::Cohere };
    if let Ok((out, _)) = bedrock_embeddings::request(body, family) {
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok(), "embeddings request is not JSON");
    }
}

/// A provider's (or the pivot's) non-streaming response body into the client's format; the
/// selector picks the pair. Whatever comes out on success is JSON.
pub fn provider_response(data: &[u8]) {
    let (sel, body) = crate::selector(data);
    let stop = ["</s>".to_owned()];
    let out = match sel % 7 {
        0 => openai_to_anthropic::response(body, "m", "id", 1).map(|r| r.0),
        1 => openai_to_bedrock::response(body, "m", "id", 1).map(|r| r.0),
        2 => openai_to_tgi::response(body, "m", "id", 1, &stop).map(|r| r.0),
        3 => anthropic_to_openai::response(body, "m").map(|r| r.0),
        4 => bedrock_to_openai::response(body).map(|r| r.0),
        5 => bedrock_embeddings::response(body, bedrock_embeddings::Family::Titan, bedrock_embeddings::Encoding::Base64, "m", None)
            .map(|r| r.0),
        _ => bedrock_embeddings::response(body, bedrock_embeddings::Family::Cohere, bedrock_embeddings::Encoding::Float, "m", Some(7))
            .map(|r| r.0),
    };
    if let Ok(out) = out {
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok(), "response {sel} is not JSON");
        assert!(out.len() <= 100 * body.len() + 4096, "response {sel}: {} bytes out of {}", out.len(), body.len());
    }
}
