//! Property tests: the Anthropic translators and the SSE decoder never panic, whatever they are
//! given (arbitrary bytes, and structurally plausible requests, responses and streams).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{json, Value};
use tollgate_llm::anthropic_to_openai::{self, StreamFromOpenAi};
use tollgate_llm::openai::ChatRequest;
use tollgate_llm::openai_to_anthropic::{self, StreamToOpenAi};
use tollgate_llm::sse::Decoder;
use tollgate_llm::StreamTranslator;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z ]{0,12}",
        "\\PC{0,8}",
        Just("{\"a\":1}".to_owned()),
        Just("[DONE]".to_owned())
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3.0f64..3.0).prop_map(Value::from),
        text().prop_map(Value::from),
    ]
}

/// A JSON value biased towards the shapes the translators look at.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        scalar(),
        Just(json!({"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}})),
        Just(json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})),
        Just(json!({"type": "image_url", "image_url": {"url": "data:;base64"}})),
        Just(json!({"type": "image", "source": {"type": "url", "url": "x"}})),
        Just(json!({"type": "tool_use", "id": "t", "name": "f", "input": {}})),
        Just(
            json!({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "r"}]})
        ),
        Just(
            json!({"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"x\":"}})
        ),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "role",
                        "content",
                        "type",
                        "text",
                        "tool_calls",
                        "tool_call_id",
                        "function",
                        "name",
                        "arguments",
                        "id",
                        "index",
                        "delta",
                        "choices",
                        "finish_reason",
                        "usage",
                        "error",
                        "message",
                        "input",
                        "partial_json",
                        "stop_reason",
                        "source",
                        "max_tokens",
                        "n",
                        "response_format",
                        "tool_choice",
                        "tools",
                        "system",
                        "messages",
                        "stream",
                    ]),
                    inner
                ),
                0..5,
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn role() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        "system",
        "developer",
        "user",
        "assistant",
        "tool",
        "function",
        "other",
    ])
    .prop_map(Value::from)
}

fn openai_request() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((role(), value(), value(), value()), 0..6),
        value(),
        value(),
        prop::option::of(0.0f64..2.0),
    )
        .prop_map(|(msgs, tools, tool_choice, temperature)| {
            let messages: Vec<Value> = msgs
                .into_iter()
                .map(|(role, content, calls, id)| json!({"role": role, "content": content, "tool_calls": calls, "tool_call_id": id}))
                .collect();
            json!({"model": "m", "messages": messages, "tools": tools, "tool_choice": tool_choice, "temperature": temperature})
        })
}

fn anthropic_request() -> impl Strategy<Value = Value> {
    (prop::collection::vec((prop::sample::select(vec!["user", "assistant", "x"]), value()), 0..6), value(), value(), value())
        .prop_map(|(msgs, system, tools, choice)| {
            let messages: Vec<Value> = msgs.into_iter().map(|(r, c)| json!({"role": r, "content": c})).collect();
            json!({"model": "m", "max_tokens": 10, "messages": messages, "system": system, "tools": tools, "tool_choice": choice})
        })
}

fn anthropic_events() -> impl Strategy<Value = Vec<u8>> {
    let event = prop_oneof![
        Just(json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3}}})),
        (0u32..3).prop_map(|i| json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}})),
        (0u32..3).prop_map(|i| json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": "a"}})),
        (0u32..3, text()).prop_map(|(i, t)| json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": t}})),
        (0u32..3, text()).prop_map(|(i, t)| json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": t}})),
        Just(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}})),
        Just(json!({"type": "message_stop"})),
        Just(json!({"type": "ping"})),
        Just(json!({"type": "error", "error": {"type": "overloaded_error", "message": "x"}})),
        value(),
    ];
    prop::collection::vec(event, 0..10).prop_map(|events| {
        events
            .iter()
            .flat_map(|e| format!("event: x\ndata: {e}\n\n").into_bytes())
            .collect()
    })
}

fn openai_chunks() -> impl Strategy<Value = Vec<u8>> {
    let chunk = prop_oneof![
        text().prop_map(|t| json!({"id": "c", "choices": [{"index": 0, "delta": {"content": t}}]})),
        (0u32..3, prop::option::of(text()), text()).prop_map(|(i, id, a)| json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "id": id, "function": {"name": "f", "arguments": a}}]}}]})),
        Just(json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
        Just(json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})),
        Just(json!({"error": {"message": "x", "type": "server_error"}})),
        Just(Value::from("[DONE]")),
        value(),
    ];
    prop::collection::vec(chunk, 0..10).prop_map(|chunks| {
        chunks
            .iter()
            .flat_map(|c| match c.as_str() {
                Some("[DONE]") => b"data: [DONE]\n\n".to_vec(),
                _ => format!("data: {c}\n\n").into_bytes(),
            })
            .collect()
    })
}

fn run_stream(t: &mut dyn StreamTranslator, input: &[u8], cut: usize) {
    let cut = cut.min(input.len());
    t.feed(&input[..cut]).unwrap();
    t.feed(&input[cut..]).unwrap();
    t.finish().unwrap();
    t.finish().unwrap();
    t.feed(b"data: late\n\n").unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), cut in 0usize..256) {
        let _ = anthropic_to_openai::request(&bytes);
        let _ = anthropic_to_openai::response(&bytes, "m");
        let _ = openai_to_anthropic::response(&bytes, "m", "id", 0);
        let mut d = Decoder::with_limit(64);
        let _ = d.feed(&bytes);
        let _ = d.finish();
        run_stream(&mut StreamToOpenAi::new("m", "id", 0, true), &bytes, cut);
        run_stream(&mut StreamFromOpenAi::new("m"), &bytes, cut);
    }

    #[test]
    fn openai_requests_never_panic(req in openai_request()) {
        if let Ok(parsed) = serde_json::from_value::<ChatRequest>(req) {
            let _ = openai_to_anthropic::request(&parsed, "claude");
        }
    }

    #[test]
    fn anthropic_requests_never_panic(req in anthropic_request()) {
        if let Ok(pivot) = anthropic_to_openai::request(&serde_json::to_vec(&req).unwrap()) {
            // And whatever the pivot holds can go on to an Anthropic provider without a panic.
            let _ = openai_to_anthropic::request(&pivot, "claude");
        }
    }

    #[test]
    fn responses_never_panic(content in value(), reason in value(), usage in value()) {
        let anthropic = json!({"id": "m", "content": content, "stop_reason": reason, "stop_sequence": null, "usage": usage});
        let _ = openai_to_anthropic::response(&serde_json::to_vec(&anthropic).unwrap(), "m", "id", 0);
        let openai = json!({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reason, "tool_calls": content}, "finish_reason": "stop"}],
            "usage": usage});
        let _ = anthropic_to_openai::response(&serde_json::to_vec(&openai).unwrap(), "m");
    }

    #[test]
    fn anthropic_streams_never_panic(input in anthropic_events(), cut in 0usize..2048, usage in any::<bool>()) {
        run_stream(&mut StreamToOpenAi::new("m", "id", 0, usage), &input, cut);
    }

    #[test]
    fn openai_streams_never_panic(input in openai_chunks(), cut in 0usize..2048) {
        run_stream(&mut StreamFromOpenAi::new("m"), &input, cut);
    }
}
