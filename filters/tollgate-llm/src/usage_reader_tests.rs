//! Samples are the providers' documented shapes (OpenAI's API reference, Anthropic's streaming
//! docs, botocore's Converse/InvokeModel models); each is fed whole and one byte at a time.

use super::*;

fn read(format: UsageFormat, body: &[u8]) -> (Option<Usage>, Option<Usage>) {
    let mut whole = UsageReader::new(format);
    whole.feed(body);
    let whole = whole.finish();
    let mut split = UsageReader::new(format);
    for b in body {
        split.feed(std::slice::from_ref(b));
    }
    (whole, split.finish())
}

fn usage(input: u64, output: u64, cache_read: Option<u64>, cache_write: Option<u64>) -> Option<Usage> {
    Some(Usage { input: Some(input), output: Some(output), cache_read, cache_write, reasoning: None })
}

#[test]
fn openai_chat_json_with_cached_tokens() {
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \"usage\": {}"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":1200,"completion_tokens":30,"total_tokens":1230,"prompt_tokens_details":{"cached_tokens":1024}}}"#;
    let (a, b) = read(UsageFormat::OpenAiChat, body);
    assert_eq!(a, usage(176, 30, Some(1024), None));
    assert_eq!(a, b);
}

#[test]
fn openai_embeddings_json_has_no_completion_count() {
    let body = br#"{"object":"list","data":[],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
    assert_eq!(read(UsageFormat::OpenAiChat, body).0, usage(8, 0, None, None));
}

#[test]
fn responses_json_and_stream() {
    let body = br#"{"id":"resp_1","object":"response","status":"completed","output":[],
        "usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}}"#;
    let (a, b) = read(UsageFormat::OpenAiResponses, body);
    assert_eq!(a.map(|u| (u.input, u.output, u.cache_read)), Some((Some(36), Some(87), Some(0))));
    assert_eq!(a, b);
    let stream = b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"usage\":null}}\n\n\
event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"usage\":{\"input_tokens\":10,\"output_tokens\":2,\"total_tokens\":12}}}\n\n";
    let (a, b) = read(UsageFormat::OpenAiResponses, stream);
    assert_eq!(a.map(|u| (u.input, u.output)), Some((Some(10), Some(2))));
    assert_eq!(a, b);
}

#[test]
fn anthropic_json_and_stream() {
    let body = br#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn",
        "usage":{"input_tokens":25,"cache_creation_input_tokens":100,"cache_read_input_tokens":0,"output_tokens":9}}"#;
    let (a, b) = read(UsageFormat::Anthropic, body);
    assert_eq!(a, usage(25, 9, Some(0), Some(100)));
    assert_eq!(a, b);
    let stream = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let (a, b) = read(UsageFormat::Anthropic, stream);
    assert_eq!(a, usage(25, 15, None, None));
    assert_eq!(a, b);
}

#[test]
fn bedrock_converse_json_and_stream() {
    let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hi"}]}},"stopReason":"end_turn",
        "usage":{"inputTokens":30,"outputTokens":5,"totalTokens":35,"cacheReadInputTokens":4},"metrics":{"latencyMs":100}}"#;
    let (a, b) = read(UsageFormat::BedrockConverse { stream: false }, body);
    assert_eq!(a, usage(30, 5, Some(4), None));
    assert_eq!(a, b);
    let ev = |kind: &str, payload: &str| {
        eventstream::encode(&[(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")], payload.as_bytes())
    };
    let mut stream = ev("messageStart", r#"{"role":"assistant"}"#);
    stream.extend(ev("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#));
    stream.extend(ev("messageStop", r#"{"stopReason":"end_turn"}"#));
    stream.extend(ev("metadata", r#"{"usage":{"inputTokens":12,"outputTokens":3,"totalTokens":15},"metrics":{"latencyMs":5}}"#));
    let (a, b) = read(UsageFormat::BedrockConverse { stream: true }, &stream);
    assert_eq!(a, usage(12, 3, None, None));
    assert_eq!(a, b);
}

#[test]
fn bedrock_invoke_stream_reads_the_anthropic_events_or_the_invocation_metrics() {
    let chunk = |event: &str| {
        let payload = format!(r#"{{"bytes":"{}"}}"#, base64::engine::general_purpose::STANDARD.encode(event));
        eventstream::encode(&[(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")], payload.as_bytes())
    };
    let mut stream = chunk(r#"{"type":"message_start","message":{"usage":{"input_tokens":14,"output_tokens":1}}}"#);
    stream.extend(chunk(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":6}}"#));
    stream.extend(chunk(
        r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":14,"outputTokenCount":6,"invocationLatency":9,"firstByteLatency":3}}"#,
    ));
    let (a, b) = read(UsageFormat::BedrockInvoke { stream: true }, &stream);
    assert_eq!(a, usage(14, 6, None, None));
    assert_eq!(a, b);
    let only_metrics = chunk(r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":7,"outputTokenCount":2}}"#);
    assert_eq!(read(UsageFormat::BedrockInvoke { stream: true }, &only_metrics).0, usage(7, 2, None, None));
}

#[test]
fn unreadable_or_usage_free_bodies_report_none() {
    assert_eq!(read(UsageFormat::OpenAiChat, b"not json").0, None);
    assert_eq!(read(UsageFormat::OpenAiChat, br#"{"id":"x"}"#).0, None);
    assert_eq!(read(UsageFormat::Anthropic, b"event: ping\ndata: {}\n\n").0, None);
    assert_eq!(read(UsageFormat::BedrockConverse { stream: true }, b"\x00\x00\x00\x10garbage").0, None);
    let mut big = UsageReader::new(UsageFormat::OpenAiChat);
    big.feed(&vec![b' '; MAX_JSON_BYTES]);
    big.feed(br#"{"usage":{"prompt_tokens":1}}"#);
    assert_eq!(big.finish(), None);
}

#[test]
fn final_usage_is_told_from_a_first_count() {
    let mut r = UsageReader::new(UsageFormat::Anthropic);
    r.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n");
    assert!(r.usage().is_some() && !r.is_final());
    r.feed(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n");
    assert!(r.is_final());
}

/// An end marker for the tests (OpenAI's last line).
const DONE: &[u8] = b"[DONE]";

#[test]
fn end_markers_are_found_across_chunk_boundaries() {
    let stream = b"data: {\"x\":1}\n\ndata: [DONE]\n\n";
    for cut in 0..stream.len() {
        let mut m = EndMarker::new(DONE);
        m.feed(&stream[..cut]);
        m.feed(&stream[cut..]);
        assert!(m.seen(), "cut at {cut}");
    }
    let mut bytes = EndMarker::new(DONE);
    for b in stream.iter() {
        bytes.feed(std::slice::from_ref(b));
    }
    assert!(bytes.seen());
    let mut none = EndMarker::new(EndMarker::ANTHROPIC);
    none.feed(b"event: message_start\ndata: {}\n\n");
    assert!(!none.seen());
    let frame = eventstream::encode(&[(":event-type", "metadata"), (":message-type", "event")], b"{}");
    let mut bedrock = EndMarker::new(EndMarker::BEDROCK);
    bedrock.feed(&frame);
    assert!(bedrock.seen());
}

proptest::proptest! {
    /// However a stream is cut into chunks, the marker is seen exactly when the bytes hold it.
    #[test]
    fn end_marker_agrees_with_a_search_of_the_whole(
        body in proptest::collection::vec(proptest::sample::select(b"[DONE]\n data:x".to_vec()), 0..120),
        cuts in proptest::collection::vec(0usize..120, 0..12),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
        cuts.sort_unstable();
        let mut m = EndMarker::new(DONE);
        let mut from = 0;
        for c in cuts.into_iter().chain([body.len()]) {
            m.feed(&body[from..c]);
            from = c;
        }
        let whole = body.windows(DONE.len()).any(|w| w == DONE);
        proptest::prop_assert_eq!(m.seen(), whole);
    }
}

#[test]
fn a_whole_answer_read_in_place_reads_as_if_fed() {
    let bodies: [(UsageFormat, &[u8]); 6] = [
        (UsageFormat::OpenAiChat, br#"{"choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":9}"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":1}}}"#),
        (UsageFormat::OpenAiChat, br#"{"usage":null}"#),
        (UsageFormat::OpenAiChat, br#"{"usage":{"prompt_tokens":"three"}}"#),
        (UsageFormat::OpenAiResponses, br#"  {"output":[],"usage":{"input_tokens":4,"output_tokens":2}}"#),
        (UsageFormat::Anthropic, br#"{"content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":5,"output_tokens":6,"cache_read_input_tokens":2}}"#),
        (UsageFormat::BedrockConverse { stream: false }, br#"{"output":{},"usage":{"inputTokens":3,"outputTokens":1,"totalTokens":4}}"#),
    ];
    for (format, body) in bodies {
        let mut fed = UsageReader::new(format);
        fed.feed(body);
        let want = fed.finish();
        let mut in_place = UsageReader::new(format);
        assert_eq!(in_place.feed_last(body), want, "{}", String::from_utf8_lossy(body));
        assert_eq!(in_place.is_final(), fed.is_final());
        // After an earlier chunk, the rest is appended as before.
        let mut split = UsageReader::new(format);
        let (a, b) = body.split_at(body.len() / 2);
        split.feed(a);
        assert_eq!(split.feed_last(b), want);
    }
    let mut chat = UsageReader::new(UsageFormat::OpenAiChat);
    let u = chat.feed_last(bodies[0].1).unwrap();
    assert_eq!((u.input, u.output, u.cache_read), (Some(2), Some(1), Some(1)));
}
