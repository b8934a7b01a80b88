//! OpenAI `chat.completion.chunk` SSE → the Responses event stream.
//!
//! Items are written in the order the pivot opens them: the assistant's text (one `message`
//! item with one `output_text` part), then each tool call (one `function_call` item). An item
//! is closed (its `.done` events) when the next one opens or the response finishes. A failed
//! pivot stream ends with an `error` event and `response.failed`, never with a
//! `response.completed` for a short answer.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{call_item_id, message_item_id, response_object, status_of, usage_json, Echo};
use crate::error::TranslateError;
use crate::pivot_reader::{PivotError, PivotEvent, PivotReader};
use crate::usage::Usage;
use crate::{StreamOutput, StreamTranslator};

enum Item {
    Message { id: String, text: String, done: bool },
    Call { id: String, call_id: String, name: String, arguments: String, done: bool },
}

pub struct StreamFromOpenAi {
    id: String,
    model: String,
    created: u64,
    echo: Echo,
    reader: PivotReader,
    seq: u64,
    started: bool,
    ended: bool,
    items: Vec<Item>,
    /// The pivot's tool call index → the output index of its item.
    calls: HashMap<u32, usize>,
    calls_seen: usize,
    usage: Option<Usage>,
    exact_usage: Option<Usage>,
    finish_reason: Option<String>,
    failure: Option<TranslateError>,
}

impl StreamFromOpenAi {
    /// `id`: the response id (`resp_...`); `model`: the model name the client sees.
    pub fn new(id: &str, model: &str, created: u64, echo: Echo) -> Self {
        Self {
            id: id.to_owned(),
            model: model.to_owned(),
            created,
            echo,
            reader: PivotReader::new(),
            seq: 0,
            started: false,
            ended: false,
            items: Vec::new(),
            calls: HashMap::new(),
            calls_seen: 0,
            usage: None,
            exact_usage: None,
            finish_reason: None,
            failure: None,
        }
    }

    /// Reports `usage` instead of the pivot's (the provider's exact usage, when chained).
    pub fn set_exact_usage(&mut self, usage: Option<Usage>) {
        self.exact_usage = usage;
    }

    /// Why the stream failed, if it did; the client has been sent `response.failed`.
    pub fn failure(&self) -> Option<&TranslateError> {
        self.failure.as_ref()
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut body: Value) {
        if let Value::Object(m) = &mut body {
            m.insert("type".to_owned(), Value::String(kind.to_owned()));
            m.insert("sequence_number".to_owned(), Value::from(self.seq));
        }
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend(serde_json::to_vec(&body).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
    }

    fn snapshot(&self, status: &str, incomplete: Value, usage: Option<Value>) -> Value {
        let output = self.items.iter().map(item_json).collect();
        response_object(&self.id, self.created, &self.model, &self.echo, (status, incomplete), output, usage)
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.snapshot("in_progress", Value::Null, None);
        self.emit(out, "response.created", json!({"response": response}));
        let response = self.snapshot("in_progress", Value::Null, None);
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    /// Closes every open item before `keep` (`None`: all).
    fn close_open(&mut self, out: &mut Vec<u8>, keep: Option<usize>) {
        for index in 0..self.items.len() {
            if Some(index) == keep {
                continue;
            }
            let events = match &mut self.items[index] {
                Item::Message { id, text, done: done @ false } => {
                    *done = true;
                    let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                    vec![
                        ("response.output_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []})),
                        ("response.content_part.done", json!({"item_id": id, "output_index": index, "content_index": 0, "part": part})),
                    ]
                }
                Item::Call { id, name, arguments, done: done @ false, .. } => {
                    *done = true;
                    vec![(
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments}),
                    )]
                }
                _ => continue,
            };
            for (kind, body) in events {
                self.emit(out, kind, body);
            }
            let item = item_json(&self.items[index]);
            self.emit(out, "response.output_item.done", json!({"output_index": index, "item": item}));
        }
    }

    fn text(&mut self, out: &mut Vec<u8>, delta: String) {
        let open = self.items.iter().position(|i| matches!(i, Item::Message { done: false, .. }));
        let index = match open {
            Some(i) => i,
            None => {
                self.close_open(out, None);
                let index = self.items.len();
                let id = message_item_id(&self.id);
                self.items.push(Item::Message { id: id.clone(), text: String::new(), done: false });
                let item = item_json(&self.items[index]);
                self.emit(out, "response.output_item.added", json!({"output_index": index, "item": item}));
                let part = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
                self.emit(out, "response.content_part.added", json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}));
                index
            }
        };
        let id = match &mut self.items[index] {
            Item::Message { id, text, .. } => {
                text.push_str(&delta);
                id.clone()
            }
            Item::Call { .. } => return,
        };
        self.emit(out, "response.output_text.delta", json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}));
    }

    fn call_start(&mut self, out: &mut Vec<u8>, index: u32, call_id: Option<String>, name: String) {
        self.close_open(out, None);
        let output_index = self.items.len();
        let n = self.calls_seen;
        self.calls_seen += 1;
        let id = call_item_id(&self.id, n);
        let call_id = call_id.unwrap_or_else(|| format!("call_{}_{n}", self.id.strip_prefix("resp_").unwrap_or(&self.id)));
        self.items.push(Item::Call { id, call_id, name, arguments: String::new(), done: false });
        self.calls.insert(index, output_index);
        let item = item_json(&self.items[output_index]);
        self.emit(out, "response.output_item.added", json!({"output_index": output_index, "item": item}));
    }

    fn call_args(&mut self, out: &mut Vec<u8>, index: u32, partial: String) {
        let Some(&output_index) = self.calls.get(&index) else { return };
        let Some(Item::Call { id, arguments, .. }) = self.items.get_mut(output_index) else { return };
        arguments.push_str(&partial);
        let id = id.clone();
        self.emit(out, "response.function_call_arguments.delta", json!({"item_id": id, "output_index": output_index, "delta": partial}));
    }

    fn done(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close_open(out, None);
        let usage = self.exact_usage.or(self.usage).unwrap_or_default();
        let (status, incomplete) = status_of(self.finish_reason.as_deref());
        let response = self.snapshot(status, incomplete, Some(usage_json(&usage)));
        let kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
        self.emit(out, kind, json!({"response": response}));
        self.ended = true;
    }

    fn fail(&mut self, out: &mut Vec<u8>, e: PivotError) {
        self.start(out);
        let (code, message) = match &e {
            PivotError::Provider { kind, message, .. } => (
                match kind.as_deref() {
                    Some("rate_limit_error") | Some("rate_limit_exceeded") => "rate_limit_exceeded",
                    _ => "server_error",
                },
                message.clone().unwrap_or_else(|| "The provider reported an error.".to_owned()),
            ),
            PivotError::Stream(e) => ("server_error", e.to_string()),
        };
        self.failure = Some(match e {
            PivotError::Stream(e) => e,
            PivotError::Provider { kind, message, .. } => TranslateError::StreamException {
                kind: kind.unwrap_or_default(),
                message: message.unwrap_or_default(),
            },
        });
        self.emit(out, "error", json!({"code": code, "message": message, "param": null}));
        let mut response = self.snapshot("failed", Value::Null, None);
        response["error"] = json!({"code": code, "message": message});
        self.emit(out, "response.failed", json!({"response": response}));
        self.ended = true;
    }

    fn events(&mut self, events: Vec<PivotEvent>) -> StreamOutput {
        let mut out = Vec::new();
        for event in events {
            if self.ended {
                break;
            }
            match event {
                PivotEvent::Start { .. } => self.start(&mut out),
                PivotEvent::Usage(u) => self.usage = Some(u),
                PivotEvent::TextDelta(t) => {
                    self.start(&mut out);
                    self.text(&mut out, t);
                }
                PivotEvent::ToolCallStart { index, id, name } => {
                    self.start(&mut out);
                    self.call_start(&mut out, index, id, name);
                }
                PivotEvent::ToolArgsDelta { index, partial } => self.call_args(&mut out, index, partial),
                PivotEvent::Finish { reason, .. } => self.finish_reason = Some(reason),
                PivotEvent::Error(e) => self.fail(&mut out, e),
                PivotEvent::Done => self.done(&mut out),
            }
        }
        let usage = if self.ended && self.failure.is_none() { self.exact_usage.or(self.usage) } else { None };
        StreamOutput { bytes: out, usage }
    }
}

fn item_json(item: &Item) -> Value {
    match item {
        Item::Message { id, text, done } => {
            // An open message is announced without content (`output_item.added`).
            let content: Vec<Value> = if *done {
                vec![json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})]
            } else {
                Vec::new()
            };
            json!({"type": "message", "id": id, "status": if *done { "completed" } else { "in_progress" }, "role": "assistant", "content": content})
        }
        Item::Call { id, call_id, name, arguments, done } => json!({
            "type": "function_call",
            "id": id,
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
            "status": if *done { "completed" } else { "in_progress" },
        }),
    }
}

impl StreamTranslator for StreamFromOpenAi {
    fn feed(&mut self, chunk: &[u8]) -> Result<StreamOutput, TranslateError> {
        let events = self.reader.feed(chunk);
        Ok(self.events(events))
    }

    fn finish(&mut self) -> Result<StreamOutput, TranslateError> {
        let events = self.reader.finish();
        Ok(self.events(events))
    }
}
