//! Property tests: the Bedrock translators never panic, whatever they are given.

// Test support code outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{json, Value};
use tollgate_llm::eventstream::{self, Decoder};
use tollgate_llm::openai::ChatRequest;
use tollgate_llm::openai_to_bedrock::{self, StreamToOpenAi};
use tollgate_llm::StreamTranslator;

/// Arbitrary JSON, biased towards the words the translators look at.
fn json_value() -> impl Strategy<Value = Value> {
    let word = prop_oneof![
        Just("text".to_owned()),
        Just("image_url".to_owned()),
        Just("function".to_owned()),
        Just("data:image/png;base64,AAAA".to_owned()),
        Just("https://x/y.png".to_owned()),
        Just("{\"a\":1}".to_owned()),
        Just(String::new()),
        "\\PC{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-3.0f64..3.0).prop_map(|f| json!(f)),
        word.prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("text".to_owned()),
                    Just("url".to_owned()),
                    Just("cache_control".to_owned()),
                    Just("name".to_owned()),
                    Just("arguments".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn message() -> impl Strategy<Value = Value> {
    let role = prop_oneof![
        Just("system"),
        Just("developer"),
        Just("user"),
        Just("assistant"),
        Just("tool"),
        Just("function"),
        Just("other")
    ];
    let part = prop_oneof![
        ("\\PC{0,10}", any::<bool>()).prop_map(|(t, c)| if c {
            json!({"type": "text", "text": t, "cache_control": {"type": "ephemeral"}})
        } else {
            json!({"type": "text", "text": t})
        }),
        prop_oneof![
            Just("data:image/png;base64,iVBORw0KGgo="),
            Just("data:image/webp;base64,@@"),
            Just("data:,x"),
            Just("http://a/b.png")
        ]
        .prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
        json_value(),
    ];
    let content = prop_oneof![
        Just(Value::Null),
        "\\PC{0,10}".prop_map(Value::String),
        proptest::collection::vec(part, 0..3).prop_map(Value::Array),
    ];
    let call = ("[a-z0-9_]{0,6}", prop_oneof![Just("{}"), Just(""), Just("{\"x\": [1]}"), Just("nope")])
        .prop_map(|(id, args)| json!({"id": id, "type": "function", "function": {"name": "f", "arguments": args}}));
    (
        role,
        content,
        proptest::option::of(proptest::collection::vec(call, 0..3)),
        proptest::option::of("[a-z0-9]{0,4}"),
    )
        .prop_map(|(role, content, calls, tool_call_id)| {
            let mut m = json!({"role": role, "content": content});
            if let Some(calls) = calls {
                m["tool_calls"] = json!(calls);
            }
            if let Some(id) = tool_call_id {
                m["tool_call_id"] = json!(id);
            }
            m
        })
}

fn chat_request() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(message(), 0..6),
        proptest::option::of(prop_oneof![Just(json!("auto")), Just(json!("none")), Just(json!("required")), Just(json!({"type": "function", "function": {"name": "f"}}))]),
        any::<bool>(),
        proptest::option::of(-1.0f64..3.0),
        proptest::collection::btree_map("[a-z_]{1,10}", json_value(), 0..3),
    )
        .prop_map(|(messages, tool_choice, tools, temperature, extra)| {
            let mut req = json!({"model": "m", "messages": messages});
            if let Some(choice) = tool_choice {
                req["tool_choice"] = choice;
            }
            if tools {
                req["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
            }
            if let Some(t) = temperature {
                req["temperature"] = json!(t);
            }
            for (k, v) in extra {
                req[k] = v;
            }
            req
        })
}

fn frame() -> impl Strategy<Value = Vec<u8>> {
    let event = prop_oneof![
        Just("messageStart"),
        Just("contentBlockStart"),
        Just("contentBlockDelta"),
        Just("contentBlockStop"),
        Just("messageStop"),
        Just("metadata"),
        Just("whatever"),
    ];
    let kind = prop_oneof![
        Just("event"),
        Just("exception"),
        Just("error"),
        Just("other")
    ];
    let payload = prop_oneof![
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        Just(br#"{"role":"assistant"}"#.to_vec()),
        Just(br#"{"contentBlockIndex":0,"delta":{"text":"hi"}}"#.to_vec()),
        Just(br#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{"}}}"#.to_vec()),
        Just(
            br#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"t","name":"f"}}}"#.to_vec()
        ),
        Just(br#"{"stopReason":"end_turn"}"#.to_vec()),
        Just(br#"{"usage":{"inputTokens":1,"outputTokens":2,"totalTokens":3}}"#.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..20),
    ];
    (event, kind, payload).prop_map(|(event, kind, payload)| {
        eventstream::encode(
            &[
                (":event-type", event),
                (":exception-type", event),
                (":message-type", kind),
            ],
            &payload,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_never_panics(req in chat_request()) {
        if let Ok(parsed) = serde_json::from_value::<ChatRequest>(req) {
            let _ = openai_to_bedrock::request(&parsed);
        }
    }

    #[test]
    fn response_never_panics(body in json_value(), raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = openai_to_bedrock::response(&serde_json::to_vec(&json!({"output": {"message": {"role": "assistant", "content": [body]}}, "stopReason": "end_turn"})).unwrap(), "m", "i", 0);
        let _ = openai_to_bedrock::response(&raw, "m", "i", 0);
    }

    #[test]
    fn stream_never_panics_on_frames(frames in proptest::collection::vec(frame(), 0..12), usage in any::<bool>(), split in 1usize..50) {
        let bytes: Vec<u8> = frames.concat();
        let mut t = StreamToOpenAi::new("m", "i", 0, usage);
        for piece in bytes.chunks(split) {
            prop_assert!(t.feed(piece).is_ok());
        }
        prop_assert!(t.finish().is_ok());
    }

    #[test]
    fn stream_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut t = StreamToOpenAi::new("m", "i", 0, true);
        prop_assert!(t.feed(&bytes).is_ok());
        let end = t.finish().unwrap();
        if !bytes.is_empty() {
            // Garbage never yields a successful end.
            prop_assert!(!String::from_utf8_lossy(&end.bytes).contains("[DONE]"));
        }
        let mut d = Decoder::new();
        let _ = d.feed(&bytes);
        let _ = d.finish();
    }
}
