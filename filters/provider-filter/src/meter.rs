//! Metering in the provider filter: one usage record per attempt that was sent to a provider,
//! built when the attempt's stream ends (the context's deletion, a VM entry every stream has
//! anyway), kept in the worker's outbox and handed to the service VM through a shared queue in
//! batches (on the root's timer, or at once when the outbox holds [`FLUSH_BYTES`]). Per request
//! this costs two clock reads (three for a stream: time to first byte) and no other host call.
//!
//! Nothing is silently lost: an outbox the service VM cannot take (its queue not registered
//! yet, Envoy refusing the item) keeps its records up to [`MAX_OUTBOX_BYTES`]; past that new
//! records are dropped and counted in the `tollgate_usage_records_dropped` counter, with one
//! log line each time dropping starts.

use std::time::{SystemTime, UNIX_EPOCH};

use tollgate_contract::config::{DeploymentMeta, Price};
use tollgate_contract::contract;
use tollgate_contract::state::{Operation, RequestState};
use tollgate_contract::usage::UsageRecord;
use tollgate_llm::Usage;
use tollgate_wasm::{Headers, Host};

/// An outbox this full is handed over at once, not at the next tick.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// What a worker keeps while the service VM cannot take its records (about 10,000 records).
pub const MAX_OUTBOX_BYTES: usize = 4 * 1024 * 1024;
/// Envoy stat counting records dropped because the outbox was full.
pub const DROPPED_COUNTER: &str = "tollgate_usage_records_dropped";

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// The worker's records on their way to the service VM.
#[derive(Default)]
pub struct Outbox {
    /// Records in their binary frames (`usage::encode_record`): serialising one as JSON cost
    /// about 9,000 wasm instructions a request.
    lines: Vec<u8>,
    queue: Option<u32>,
    dropped_counter: Option<u32>,
    dropping: bool,
}

impl Outbox {
    pub fn push<H: Host>(&mut self, host: &H, record: &UsageRecord) {
        if self.lines.len() >= MAX_OUTBOX_BYTES {
            if !self.dropping {
                self.dropping = true;
                log::error!("provider filter: usage outbox full (the service VM is not taking records); dropping new records, counted in {DROPPED_COUNTER}");
            }
            self.count_dropped(host);
            return;
        }
        tollgate_contract::usage::encode_record(record, &mut self.lines);
        if self.lines.len() >= FLUSH_BYTES {
            self.flush(host);
        }
    }

    fn count_dropped<H: Host>(&mut self, host: &H) {
        if self.dropped_counter.is_none() {
            self.dropped_counter = host.define_counter(DROPPED_COUNTER).ok();
        }
        if let Some(id) = self.dropped_counter {
            let _ = host.increment_counter(id, 1);
        }
    }

    /// Hands the records to the service VM's queue; keeps them if it cannot.
    pub fn flush<H: Host>(&mut self, host: &H) {
        if self.lines.is_empty() {
            return;
        }
        if self.queue.is_none() {
            self.queue = host.resolve_queue(contract::VM_ID, contract::USAGE_QUEUE).ok();
        }
        let Some(queue) = self.queue else { return };
        match host.enqueue(queue, &self.lines) {
            Ok(()) => {
                self.lines.clear();
                if self.dropping {
                    self.dropping = false;
                    log::info!("provider filter: usage outbox drained; records are kept again");
                }
            }
            // The service VM may have been replaced: resolve the queue again next time.
            Err(_) => self.queue = None,
        }
    }
}

/// What one attempt's meter has seen; the record is built from it when the stream ends.
#[derive(Default)]
pub struct Meter {
    /// Set once the attempt was sent to the provider (only those are recorded).
    started: Option<SystemTime>,
    /// When the gateway filter admitted the request (Unix nanoseconds; 0: not known).
    admitted_ns: u64,
    request_id: String,
    attempt: u32,
    key_id: String,
    model: String,
    provider: &'static str,
    provider_model: String,
    stream: bool,
    request_bytes: u64,
    pub status: u16,
    first_byte: Option<SystemTime>,
    /// Response body bytes the client was sent (for an estimate when no usage came).
    pub delivered: u64,
    /// The response reached its end (not reset, not abandoned by the client).
    pub complete: bool,
    /// The deployment's rates, for the cost header of a non-streamed answer.
    pub price: Option<Price>,
}

fn header_str<'h>(headers: &'h Headers, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| std::str::from_utf8(v).ok())
}

impl Meter {
    /// What the attempt is, known from its headers.
    pub fn prepare(&mut self, state: &RequestState, meta: &DeploymentMeta) {
        self.provider = meta.provider.as_str();
        self.provider_model.clone_from(&meta.model);
        self.stream = state.facts.stream
            || matches!(state.op, Operation::BedrockConverse { stream: true, .. } | Operation::BedrockInvoke { stream: true, .. });
        self.request_bytes = state.facts.body_len.unwrap_or(0);
        self.price = meta.price;
        self.admitted_ns = state.holds.as_ref().map_or(0, |h| h.admitted_ns);
    }

    /// The key and the model the client asked for (moved in once the attempt is planned).
    pub fn owner(&mut self, key_id: String, model: String) {
        (self.key_id, self.model) = (key_id, model);
    }

    /// Whether the answer's cost goes back to the client in a header: a non-streamed answer of
    /// a priced deployment (its response headers are then held until its body is read).
    pub fn prices_answer(&self) -> bool {
        self.price.is_some() && !self.stream
    }

    /// `x-tollgate-cost-usd` for this usage, if priced.
    pub fn cost_header(&self, usage: Option<Usage>) -> Option<String> {
        let (price, u) = (self.price?, usage?);
        let n = |v: Option<u64>| v.unwrap_or(0);
        Some(tollgate_contract::config::usd(price.cost_nanos(n(u.input), n(u.output), n(u.cache_read), n(u.cache_write))))
    }

    /// The attempt goes out now (its request headers are final); `now` if the caller has
    /// read the clock already (SigV4). A first attempt of a request with quotas starts when the
    /// gateway filter admitted it (`admitted_ns`, read in the same event-loop pass): no clock
    /// read of its own.
    pub fn sent<H: Host>(&mut self, host: &H, headers: &Headers, now: Option<SystemTime>) {
        self.request_id = header_str(headers, "x-request-id").unwrap_or_default().to_owned();
        self.attempt = attempt_of(headers);
        self.started = now.or_else(|| self.admitted_for(self.attempt)).or_else(|| host.now().ok()).or(Some(UNIX_EPOCH));
    }

    /// When the gateway filter admitted the request, if it has quotas and the attempt with
    /// `headers` is its first (read in the same event-loop pass: a first attempt needs no clock
    /// read of its own, to start its meter or to sign).
    pub fn admitted(&self, headers: &Headers) -> Option<SystemTime> {
        self.admitted_for(attempt_of(headers))
    }

    /// [`Meter::admitted`] for attempt `attempt` (0: the first).
    fn admitted_for(&self, attempt: u32) -> Option<SystemTime> {
        match (attempt, self.admitted_ns) {
            (0, ns) if ns > 0 => UNIX_EPOCH.checked_add(std::time::Duration::from_nanos(ns)),
            _ => None,
        }
    }

    /// A response body chunk passed: the first one of a stream marks its time to first byte.
    pub fn chunk<H: Host>(&mut self, host: &H, bytes: usize) {
        if self.stream && self.first_byte.is_none() && bytes > 0 {
            self.first_byte = host.now().ok();
        }
        self.delivered = self.delivered.saturating_add(bytes as u64);
    }

    /// The record of a finished attempt (`None` if it never went out).
    /// `final_usage`: the provider's final count was read (not only a first one).
    /// Called once, when the attempt's stream ends: the meter's texts move into the record.
    pub fn record<H: Host>(&mut self, host: &H, usage: Option<Usage>, final_usage: bool) -> Option<UsageRecord> {
        let started = self.started?;
        let ended = host.now().unwrap_or(started);
        let ms = |from: SystemTime, to: SystemTime| u32::try_from(millis(to).saturating_sub(millis(from))).unwrap_or(u32::MAX);
        let mut r = UsageRecord {
            request_id: std::mem::take(&mut self.request_id),
            attempt: self.attempt,
            at_ms: millis(ended),
            key_id: std::mem::take(&mut self.key_id),
            model: std::mem::take(&mut self.model),
            provider: self.provider.to_owned(),
            provider_model: std::mem::take(&mut self.provider_model),
            status: self.status,
            stream: self.stream,
            latency_ms: ms(started, ended),
            ttft_ms: self.first_byte.map(|t| ms(started, t)),
            ..UsageRecord::default()
        };
        let ok = (200..300).contains(&self.status);
        match usage {
            Some(u) => {
                r.input_tokens = u.input.unwrap_or(0);
                r.output_tokens = u.output.unwrap_or(0);
                r.cache_read_tokens = u.cache_read.unwrap_or(0);
                r.cache_write_tokens = u.cache_write.unwrap_or(0);
                // A stream cut short (the client went away, the connection reset) after a first
                // count (Anthropic's message_start) but before the final one: the input is exact,
                // the output is at least what was delivered; flagged as estimated.
                if ok && !self.complete && !final_usage {
                    r.estimated = true;
                    r.output_tokens = r.output_tokens.max(self.delivered.div_ceil(4));
                }
            }
            // A successful answer whose usage never came (the client went away mid-stream, a
            // provider that does not report it): about four bytes a token of what was sent and
            // delivered, flagged as estimated.
            None if ok => {
                r.estimated = true;
                r.input_tokens = self.request_bytes.div_ceil(4);
                r.output_tokens = self.delivered.div_ceil(4);
            }
            None => {}
        }
        Some(r)
    }
}

/// Which attempt of its request one with `headers` is (0: the first; Envoy's
/// `x-envoy-attempt-count` counts from 1).
fn attempt_of(headers: &Headers) -> u32 {
    header_str(headers, "x-envoy-attempt-count").and_then(|v| v.parse::<u32>().ok()).unwrap_or(1).saturating_sub(1)
}
