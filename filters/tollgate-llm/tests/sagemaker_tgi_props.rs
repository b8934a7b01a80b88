//! Property tests for OpenAI → TGI: the request translator never panics on any parsed request,
//! with any template; what it accepts is a valid TGI request (TGI's own validation rules); the
//! stop-sequence hold-back never loses or invents text.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{json, Value};
use tollgate_llm::openai::ChatRequest;
use tollgate_llm::openai_to_tgi::{self, PromptTemplate, StreamToOpenAi};
use tollgate_llm::StreamTranslator;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z ]{0,12}",
        "\\PC{0,8}",
        Just("<|eot_id|>".to_owned()),
        Just("<|im_start|>".to_owned()),
        Just("[INST]".to_owned()),
        Just("</s>".to_owned()),
    ]
}

fn content() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        text().prop_map(Value::from),
        prop::collection::vec(
            prop_oneof![
                text().prop_map(|t| json!({"type": "text", "text": t})),
                Just(json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})),
                Just(json!({"type": "input_audio", "input_audio": {}})),
            ],
            0..3
        )
        .prop_map(Value::from),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![Just(Value::Null), (-1.0f64..3.0).prop_map(Value::from), Just(json!(0)), Just(json!(1)), Just(json!(-5))]
}

fn request() -> impl Strategy<Value = Value> {
    let role = prop::sample::select(vec!["system", "developer", "user", "assistant", "tool", "function", "x"]);
    (
        prop::collection::vec((role, content()), 0..6),
        (number(), number(), number(), number()),
        prop::option::of(prop::collection::vec(text(), 0..3)),
        any::<bool>(),
    )
        .prop_map(|(msgs, (temperature, top_p, max_tokens, seed), stop, stream)| {
            let messages: Vec<Value> = msgs.into_iter().map(|(r, c)| json!({"role": r, "content": c})).collect();
            json!({"model": "m", "messages": messages, "temperature": temperature, "top_p": top_p,
                   "max_tokens": max_tokens, "seed": seed, "stop": stop, "stream": stream})
        })
}

const TEMPLATES: [PromptTemplate; 4] =
    [PromptTemplate::Llama3, PromptTemplate::Chatml, PromptTemplate::Mistral, PromptTemplate::Plain];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn requests_never_panic_and_are_valid_tgi(req in request()) {
        let Ok(parsed) = serde_json::from_value::<ChatRequest>(req) else { return Ok(()) };
        for template in TEMPLATES {
            let Ok(body) = openai_to_tgi::request(&parsed, template) else { continue };
            let body: Value = serde_json::from_slice(&body).unwrap();
            let p = &body["parameters"];
            prop_assert!(!body["inputs"].as_str().unwrap().is_empty());
            prop_assert_eq!(&p["details"], &json!(true));
            prop_assert_eq!(&p["return_full_text"], &json!(false));
            if let Some(t) = p.get("temperature") {
                prop_assert!(t.as_f64().unwrap() > 0.0);
            }
            if let Some(t) = p.get("top_p") {
                let t = t.as_f64().unwrap();
                prop_assert!(t > 0.0 && t < 1.0);
            }
            if let Some(m) = p.get("max_new_tokens") {
                prop_assert!(m.as_u64().unwrap() > 0);
            }
            let streaming = body.get("stream") == Some(&json!(true));
            prop_assert!(!(streaming && p.get("decoder_input_details").is_some()));
        }
    }

    /// Whatever the tokens and stop sequences, the client receives the generated text, minus
    /// the stop sequence when TGI stopped on one.
    #[test]
    fn hold_back_keeps_the_text(tokens in prop::collection::vec("\\PC{0,4}", 1..8), stop in prop::collection::vec("\\PC{1,3}", 0..3), stopped in any::<bool>()) {
        let mut sse = String::new();
        let full: String = tokens.concat();
        for (i, t) in tokens.iter().enumerate() {
            let last = i + 1 == tokens.len();
            let details = last.then(|| json!({"finish_reason": if stopped { "stop_sequence" } else { "length" }, "generated_tokens": tokens.len()}));
            sse.push_str(&format!("data:{}\n\n", json!({"token": {"id": i, "text": t, "special": false}, "details": details})));
        }
        let mut tr = StreamToOpenAi::new("m", "id", 0, false).with_stop_sequences(stop.clone());
        let mut out = tr.feed(sse.as_bytes()).unwrap().bytes;
        out.extend(tr.finish().unwrap().bytes);
        let mut d = tollgate_llm::sse::Decoder::new();
        let text: String = d.feed(&out).unwrap().into_iter()
            .filter(|e| e.data != "[DONE]")
            .filter_map(|e| serde_json::from_str::<Value>(&e.data).unwrap()["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect();
        let expected = if stopped { openai_to_tgi::strip_stop_sequence(&full, &stop).to_owned() } else { full.clone() };
        prop_assert_eq!(text, expected);
    }
}
