//! Property tests: the Bedrock-ingress translator never panics, whatever it is given (arbitrary
//! bytes, and structurally plausible Converse requests, OpenAI responses and streams), and its
//! stream output always decodes as well-formed event-stream frames that end in either
//! `metadata` or one exception frame.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{json, Value};
use tollgate_llm::bedrock_to_openai::{self, StreamFromOpenAi};
use tollgate_llm::eventstream::Decoder;
use tollgate_llm::{openai_to_bedrock, StreamTranslator};

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

/// A JSON value biased towards the shapes the translator looks at.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        scalar(),
        Just(json!({"text": "hi"})),
        Just(json!({"cachePoint": {"type": "default"}})),
        Just(json!({"image": {"format": "png", "source": {"bytes": "AAAA"}}})),
        Just(json!({"image": {"format": "tiff", "source": {"s3Location": {"uri": "s3://x"}}}})),
        Just(json!({"toolUse": {"toolUseId": "t", "name": "f", "input": {"a": [1]}}})),
        Just(
            json!({"toolResult": {"toolUseId": "t", "content": [{"text": "r"}, {"json": {"k": 1}}]}})
        ),
        Just(json!({"reasoningContent": {"reasoningText": {"text": "r"}}})),
        Just(json!({"document": {"name": "d"}})),
        Just(json!({"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}})),
        Just(json!({"auto": {}})),
        Just(json!({"tool": {"name": "f"}})),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "role",
                        "content",
                        "text",
                        "messages",
                        "system",
                        "toolConfig",
                        "tools",
                        "toolChoice",
                        "inferenceConfig",
                        "maxTokens",
                        "stopSequences",
                        "guardrailConfig",
                        "id",
                        "choices",
                        "message",
                        "tool_calls",
                        "function",
                        "arguments",
                        "finish_reason",
                        "usage",
                        "error",
                    ]),
                    inner
                ),
                0..5,
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn converse_request() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(
            (
                prop::sample::select(vec!["user", "assistant", "system", "x"]),
                prop::collection::vec(value(), 0..4),
            ),
            0..5,
        ),
        value(),
        value(),
        value(),
    )
        .prop_map(|(msgs, system, tools, choice)| {
            let messages: Vec<Value> = msgs
                .into_iter()
                .map(|(r, c)| json!({"role": r, "content": c}))
                .collect();
            json!({"messages": messages, "system": [system], "toolConfig": {"tools": [tools], "toolChoice": choice}})
        })
}

fn openai_response() -> impl Strategy<Value = Value> {
    (value(), prop::option::of(text()), value(), value()).prop_map(|(content, finish, calls, usage)| {
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "tool_calls": calls}, "finish_reason": finish}],
               "usage": usage})
    })
}

fn openai_chunks() -> impl Strategy<Value = Vec<u8>> {
    let chunk = prop_oneof![
        text().prop_map(|t| json!({"id": "c", "choices": [{"index": 0, "delta": {"content": t}}]})),
        (0u32..3, prop::option::of(text()), text()).prop_map(|(i, id, a)| json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "id": id, "function": {"name": "f", "arguments": a}}]}}]})),
        prop::sample::select(vec!["stop", "length", "tool_calls", "content_filter", "x"]).prop_map(|r| json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": r}]})),
        Just(json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "prompt_tokens_details": {"cached_tokens": 9}}})),
        Just(json!({"error": {"message": "x", "type": "server_error"}})),
        Just(json!({"error": {"message": "slow down", "code": 429}})),
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

/// Feeds `input` cut once, finishes (twice), feeds late input; checks the frames.
fn run_stream(input: &[u8], cut: usize) {
    let mut t = StreamFromOpenAi::new();
    let cut = cut.min(input.len());
    let mut out = t.feed(&input[..cut]).unwrap().bytes;
    out.extend(t.feed(&input[cut..]).unwrap().bytes);
    out.extend(t.finish().unwrap().bytes);
    assert!(t.finish().unwrap().bytes.is_empty());
    assert!(t.feed(b"data: late\n\n").unwrap().bytes.is_empty());

    let mut decoder = Decoder::new();
    let frames = decoder.feed(&out).unwrap();
    decoder.finish().unwrap();
    let last = frames.last().expect("the stream always ends with a frame");
    let ended_ok = last.event_type() == Some("metadata");
    let failed = last.message_type() == Some("exception");
    assert!(ended_ok || failed, "{:?}", last.headers);
    for frame in &frames[..frames.len() - 1] {
        assert_eq!(frame.message_type(), Some("event"));
        serde_json::from_slice::<Value>(&frame.payload).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), cut in 0usize..256, stream in any::<bool>()) {
        let _ = bedrock_to_openai::request(&bytes, "m", stream);
        let _ = bedrock_to_openai::response(&bytes);
        run_stream(&bytes, cut);
    }

    #[test]
    fn converse_requests_never_panic(req in converse_request(), stream in any::<bool>()) {
        let bytes = serde_json::to_vec(&req).unwrap();
        if let Ok(pivot) = bedrock_to_openai::request(&bytes, "m", stream) {
            prop_assert_eq!(pivot.is_stream(), stream);
            let _ = openai_to_bedrock::request(&pivot);
        }
    }

    #[test]
    fn openai_responses_never_panic(resp in openai_response()) {
        let bytes = serde_json::to_vec(&resp).unwrap();
        if let Ok((body, _)) = bedrock_to_openai::response(&bytes) {
            let body: Value = serde_json::from_slice(&body).unwrap();
            prop_assert!(body["usage"]["totalTokens"].is_u64());
        }
    }

    #[test]
    fn openai_streams_never_panic(input in openai_chunks(), cut in 0usize..2048) {
        run_stream(&input, cut);
    }
}
