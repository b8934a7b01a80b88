//! The built-in demo model: an OpenAI-compatible endpoint served by the control plane, so a new
//! gateway answers before any provider is configured. It echoes, streams word by word, and
//! reports usage like a real provider. It goes through Envoy and both filters like any other.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

pub const DEMO_MODEL_ID: &str = "tollgate-demo-1";

#[derive(Deserialize)]
pub struct DemoChat {
    model: String,
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<Value>,
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

pub async fn chat(body: axum::body::Bytes) -> Response {
    let req: DemoChat = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": format!("invalid request: {e}"), "type": "invalid_request_error", "param": null, "code": null}})),
            )
                .into_response()
        }
    };
    let last_user = req
        .messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(text_of)
        .unwrap_or_default();
    let prompt_tokens: u64 = req.messages.iter().filter_map(|m| m.get("content")).map(|c| words(&text_of(c)) + 3).sum();
    let reply = format!("Hello from the Tollgate demo model. You said: {last_user}");
    let completion_tokens = words(&reply);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    let id = format!("chatcmpl-demo{}", crate::clock::unix_now());
    let created = crate::clock::unix_now();
    if !req.stream {
        return Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop", "logprobs": null}],
            "usage": usage,
        }))
        .into_response();
    }
    let include_usage = req.stream_options.as_ref().and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": req.model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]})
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    for (i, w) in reply.split(' ').enumerate() {
        let piece = if i == 0 { w.to_owned() } else { format!(" {w}") };
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        events.push(json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": req.model, "choices": [], "usage": usage}));
    }
    let mut text = String::new();
    for e in events {
        text.push_str("data: ");
        text.push_str(&e.to_string());
        text.push_str("\n\n");
    }
    text.push_str("data: [DONE]\n\n");
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from(text))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub async fn embeddings(body: axum::body::Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())).collect(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": "'input' is required", "type": "invalid_request_error", "param": "input", "code": null}})),
            )
                .into_response()
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let v: Vec<f64> = (0..8u32).map(|d| ((s.len() as u32 * 31 + d * 17) % 100) as f64 / 100.0).collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|s| words(s)).sum();
    Json(json!({"object": "list", "data": data, "model": req.get("model").cloned().unwrap_or(Value::Null),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
    .into_response()
}
