//! `bench-mock`: a fast mock model provider for the benchmark (OpenAI chat completions, streaming
//! and not, and embeddings; Bedrock Converse and ConverseStream). It must never be the bottleneck: every answer is prepared at start,
//! a request body is only scanned for `"stream": true`, and one thread serves everything.
//!
//! ```text
//! bench-mock [--port 0] [--chunks 20] [--chunk-delay-us 0] [--api-key KEY] [--error-every N]
//! ```
//!
//! `--error-every N` (the soak's upstream faults): every Nth chat completion is answered with a
//! 500 and an OpenAI `server_error` body (N = 20: 5% of requests).
//!
//! Prints `READY port=N` once listening. With `--api-key`, a request whose `Authorization` is
//! not `Bearer KEY` gets a 401 (so a gateway that forgot to inject the provider key fails loudly).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::time::{Instant, Sleep};

#[derive(Parser, Debug)]
#[command(about = "Fast mock OpenAI-compatible provider for the Tollgate benchmark")]
struct Args {
    /// Address to listen on (loopback only is sensible).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (printed as `READY port=N`).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Content chunks in a streamed answer (plus role, finish and usage chunks and `[DONE]`).
    #[arg(long, default_value_t = 20)]
    chunks: usize,
    /// Delay between two streamed chunks, in microseconds (0: send them back to back).
    #[arg(long, default_value_t = 0)]
    chunk_delay_us: u64,
    /// Require `Authorization: Bearer <KEY>` on every request.
    #[arg(long)]
    api_key: Option<String>,
    /// Answer every Nth chat completion with a 500 (0: never).
    #[arg(long, default_value_t = 0)]
    error_every: u64,
}

const MODEL: &str = "mock-model-1";
const CREATED: u64 = 1_750_000_000;
const ANSWER_WORDS: &[&str] = &[
    "Envoy", " is", " a", " high", "-performance", " proxy", " designed", " for", " cloud",
    "-native", " applications", ";", " it", " handles", " routing", ",", " retries", " and",
    " observability", ".",
];

/// Every answer, serialised once at start.
struct Canned {
    chat: Bytes,
    converse: Bytes,
    stream: Arc<[Bytes]>,
    /// ConverseStream's events, one event-stream frame each.
    converse_stream: Arc<[Bytes]>,
    embeddings: Bytes,
    unauthorized: Bytes,
    not_found: Bytes,
    bad_request: Bytes,
    expected_auth: Option<Bytes>,
    chunk_delay: Option<Duration>,
    server_error: Bytes,
    error_every: u64,
    chats: std::sync::atomic::AtomicU64,
}

fn usage() -> serde_json::Value {
    json!({
        "prompt_tokens": 412,
        "completion_tokens": 20,
        "total_tokens": 432,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0}
    })
}

fn error(message: &str, kind: &str) -> Bytes {
    Bytes::from(
        json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
            .to_string(),
    )
}

fn sse(value: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// One AWS event-stream frame (`application/vnd.amazon.eventstream`): the prelude (total and
/// headers lengths, big-endian, and their CRC32), the headers (name length, name, type 7 for a
/// string, value length, value), the payload, and the CRC32 of all that came before.
fn event_frame(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&u32::try_from(h.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    Bytes::from(out)
}

/// A ConverseStream event (botocore's `ConverseStreamOutput` members).
fn converse_event(event_type: &str, payload: &serde_json::Value) -> Bytes {
    event_frame(
        &[(":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")],
        payload.to_string().as_bytes(),
    )
}

impl Canned {
    fn new(args: &Args) -> Self {
        let id = "chatcmpl-bench0000000000000000000000";
        let content: String = ANSWER_WORDS.concat();
        let chat = json!({
            "id": id, "object": "chat.completion", "created": CREATED, "model": MODEL,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": null,
                            "annotations": []},
                "logprobs": null, "finish_reason": "stop"
            }],
            "usage": usage(),
            "service_tier": "default",
            "system_fingerprint": "fp_bench000"
        });
        let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
            sse(&json!({
                "id": id, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
                "service_tier": "default", "system_fingerprint": "fp_bench000",
                "choices": [{"index": 0, "delta": delta, "logprobs": null,
                             "finish_reason": finish}]
            }))
        };
        let mut stream = Vec::with_capacity(args.chunks + 4);
        stream.push(chunk(json!({"role": "assistant", "content": "", "refusal": null}),
                          serde_json::Value::Null));
        for i in 0..args.chunks {
            let word = ANSWER_WORDS.get(i % ANSWER_WORDS.len()).copied().unwrap_or(" word");
            stream.push(chunk(json!({"content": word}), serde_json::Value::Null));
        }
        stream.push(chunk(json!({}), json!("stop")));
        stream.push(sse(&json!({
            "id": id, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
            "choices": [], "usage": usage()
        })));
        stream.push(Bytes::from_static(b"data: [DONE]\n\n"));
        let embeddings = json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0,
                      "embedding": (0..64).map(|i| f64::from(i) / 64.0 - 0.5).collect::<Vec<_>>()}],
            "model": "mock-embedding-1",
            "usage": {"prompt_tokens": 8, "total_tokens": 8}
        });
        let mut converse_stream = Vec::with_capacity(args.chunks + 4);
        converse_stream.push(converse_event("messageStart", &json!({"role": "assistant"})));
        for i in 0..args.chunks {
            let word = ANSWER_WORDS.get(i % ANSWER_WORDS.len()).copied().unwrap_or(" word");
            converse_stream.push(converse_event("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": word}})));
        }
        converse_stream.push(converse_event("contentBlockStop", &json!({"contentBlockIndex": 0})));
        converse_stream.push(converse_event("messageStop", &json!({"stopReason": "end_turn"})));
        converse_stream.push(converse_event("metadata", &json!({
            "usage": {"inputTokens": 412, "outputTokens": 24, "totalTokens": 436},
            "metrics": {"latencyMs": 120}
        })));
        let converse = json!({
            "output": {"message": {"role": "assistant", "content": [{"text": content}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 412, "outputTokens": 24, "totalTokens": 436},
            "metrics": {"latencyMs": 120}
        });
        Canned {
            chat: Bytes::from(chat.to_string()),
            converse: Bytes::from(converse.to_string()),
            stream: stream.into(),
            converse_stream: converse_stream.into(),
            embeddings: Bytes::from(embeddings.to_string()),
            unauthorized: error("Incorrect API key provided.", "invalid_request_error"),
            not_found: error("Unknown path.", "invalid_request_error"),
            bad_request: error("Could not read the request body.", "invalid_request_error"),
            expected_auth: args.api_key.as_ref().map(|k| Bytes::from(format!("Bearer {k}"))),
            chunk_delay: (args.chunk_delay_us > 0)
                .then(|| Duration::from_micros(args.chunk_delay_us)),
            server_error: error("The server had an error while processing your request (bench fault).", "server_error"),
            error_every: args.error_every,
            chats: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// A response body: either one prepared buffer, or the prepared SSE chunks one frame each.
enum MockBody {
    Full(Option<Bytes>),
    /// Chunk `i` is due at `start + i * delay` (a fixed schedule, so timer lateness does not
    /// accumulate over the stream).
    Stream {
        chunks: Arc<[Bytes]>,
        next: usize,
        delay: Option<Duration>,
        start: Instant,
        sleep: Option<Pin<Box<Sleep>>>,
    },
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            MockBody::Stream { chunks, next, delay, start, sleep } => {
                let Some(chunk) = chunks.get(*next) else { return Poll::Ready(None) };
                if let (true, Some(d)) = (*next > 0, *delay) {
                    let steps = u32::try_from(*next).unwrap_or(u32::MAX);
                    let due = *start + d.saturating_mul(steps);
                    let timer =
                        sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *sleep = None;
                }
                *next += 1;
                Poll::Ready(Some(Ok(Frame::data(chunk.clone()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(data) => data.is_none(),
            MockBody::Stream { chunks, next, .. } => *next >= chunks.len(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Stream { .. } => SizeHint::default(),
        }
    }
}

/// Whether a JSON request body asks for streaming: `"stream"` then `:` then `true`, with any
/// whitespace. Cheap on purpose (no parse); `"stream_options"` does not match.
fn wants_stream(body: &[u8]) -> bool {
    const KEY: &[u8] = b"\"stream\"";
    let mut rest = body;
    while let Some(pos) = rest.windows(KEY.len()).position(|w| w == KEY) {
        let after = rest.get(pos + KEY.len()..).unwrap_or_default();
        let trimmed = after.trim_ascii_start();
        if let Some(value) = trimmed.strip_prefix(b":") {
            if value.trim_ascii_start().starts_with(b"true") {
                return true;
            }
        }
        rest = after;
    }
    false
}

fn respond(status: StatusCode, content_type: &'static str, body: MockBody) -> Response<MockBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

fn json_response(status: StatusCode, body: &Bytes) -> Response<MockBody> {
    respond(status, "application/json", MockBody::Full(Some(body.clone())))
}

async fn handle(req: Request<Incoming>, canned: Arc<Canned>) -> Result<Response<MockBody>, Infallible> {
    let converse_stream = req.uri().path().ends_with("/converse-stream");
    let converse = converse_stream || req.uri().path().ends_with("/converse");
    let auth = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
    // Bedrock Converse must be SigV4-signed (checked for shape only: the mock must stay cheap);
    // the OpenAI paths must carry the configured provider key.
    let authorized = if converse {
        auth.starts_with(b"AWS4-HMAC-SHA256 Credential=")
    } else {
        canned.expected_auth.as_ref().is_none_or(|expected| auth == expected.as_ref())
    };
    if !authorized {
        return Ok(json_response(StatusCode::UNAUTHORIZED, &canned.unauthorized));
    }
    let is_post = req.method() == Method::POST;
    let path = req.uri().path();
    let chat = path.ends_with("/chat/completions");
    let embeddings = path.ends_with("/embeddings");
    if is_post && converse_stream {
        let _ = req.into_body().collect().await;
        let body = MockBody::Stream {
            chunks: canned.converse_stream.clone(),
            next: 0,
            delay: canned.chunk_delay,
            start: Instant::now(),
            sleep: None,
        };
        return Ok(respond(StatusCode::OK, "application/vnd.amazon.eventstream", body));
    }
    if is_post && converse {
        let _ = req.into_body().collect().await;
        return Ok(json_response(StatusCode::OK, &canned.converse));
    }
    if !is_post || !(chat || embeddings) {
        return Ok(json_response(StatusCode::NOT_FOUND, &canned.not_found));
    }
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(json_response(StatusCode::BAD_REQUEST, &canned.bad_request)),
    };
    if embeddings {
        return Ok(json_response(StatusCode::OK, &canned.embeddings));
    }
    let n = canned.chats.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if canned.error_every > 0 && n.is_multiple_of(canned.error_every) {
        return Ok(json_response(StatusCode::INTERNAL_SERVER_ERROR, &canned.server_error));
    }
    if wants_stream(&body) {
        let body = MockBody::Stream {
            chunks: canned.stream.clone(),
            next: 0,
            delay: canned.chunk_delay,
            start: Instant::now(),
            sleep: None,
        };
        let mut resp = respond(StatusCode::OK, "text/event-stream", body);
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
        return Ok(resp);
    }
    Ok(json_response(StatusCode::OK, &canned.chat))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("bench-mock: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench-mock: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let canned = Arc::new(Canned::new(&args));
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let port = listener.local_addr()?.port();
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY port={port}")?;
        out.flush()?;
    }
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                eprintln!("bench-mock: accept: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let canned = canned.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, canned.clone()));
            // A client closing its connection is normal; nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{event_frame, wants_stream};

    #[test]
    fn event_frames_carry_their_lengths_and_checksums() {
        let f = event_frame(&[(":event-type", "messageStop")], br#"{"stopReason":"end_turn"}"#);
        let total = u32::from_be_bytes(f[0..4].try_into().unwrap()) as usize;
        let headers = u32::from_be_bytes(f[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, f.len());
        assert_eq!(u32::from_be_bytes(f[8..12].try_into().unwrap()), crc32fast::hash(&f[0..8]));
        assert_eq!(u32::from_be_bytes(f[total - 4..].try_into().unwrap()), crc32fast::hash(&f[..total - 4]));
        assert_eq!(&f[12..12 + headers], b"\x0b:event-type\x07\x00\x0bmessageStop");
        assert_eq!(&f[12 + headers..total - 4], br#"{"stopReason":"end_turn"}"#);
    }

    #[test]
    fn detects_stream_flag() {
        assert!(wants_stream(br#"{"model":"m","stream":true}"#));
        assert!(wants_stream(br#"{"model":"m", "stream" :  true }"#));
        assert!(!wants_stream(br#"{"model":"m","stream":false}"#));
        assert!(!wants_stream(br#"{"model":"m","stream_options":{"include_usage":true}}"#));
        assert!(!wants_stream(br#"{"model":"m"}"#));
        assert!(wants_stream(br#"{"stream_options":{},"stream":true}"#));
    }
}
