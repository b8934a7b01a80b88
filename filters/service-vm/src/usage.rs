//! Usage records from the workers to the control plane's ledger. The provider filter's workers
//! enqueue records in their binary frames (`tollgate_contract::usage::encode_record`) on the
//! [`contract::USAGE_QUEUE`] this VM registers;
//! this VM keeps them in a bounded buffer and posts them in batches to
//! [`contract::USAGE_PATH`], one call at a time, the next as soon as one is acknowledged.
//!
//! Nothing lost, nothing doubled: a batch leaves the buffer only when the control plane has
//! answered 200 (ingestion is idempotent by request id and attempt, so a batch sent again after
//! a timeout is stored once); a failed call is retried with a growing pause (up to
//! [`MAX_BACKOFF`]) while the buffer keeps filling. Policy when the buffer is full
//! ([`MAX_BUFFER_BYTES`], about 200,000 records, several minutes of a busy gateway): new records
//! are dropped and counted in the `tollgate_usage_records_dropped` counter, with one log line
//! when dropping starts and one when it stops; the oldest are kept, as they are sent first.
//! A batch the control plane refuses as malformed (400) cannot succeed by being sent again: it is
//! dropped, counted the same way and logged.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tollgate_contract::contract;
use tollgate_wasm::Host;

/// Records buffered before new ones are dropped.
pub const MAX_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// One call carries at most this much (the control plane takes up to 50,000 records).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// How long a batch waits for more records before it is sent.
pub const LINGER: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
pub const DROPPED_COUNTER: &str = "tollgate_usage_records_dropped";

#[derive(Default)]
pub struct UsageShipper {
    queue: Option<u32>,
    /// JSON lines, in arrival order; the front is sent first.
    buffer: VecDeque<Vec<u8>>,
    buffered_bytes: usize,
    /// The call in flight and the lines it carries (put back in front if it fails).
    in_flight: Option<(u32, Vec<Vec<u8>>)>,
    /// Oldest unsent record's arrival, for [`LINGER`].
    oldest: Option<SystemTime>,
    failures: u32,
    retry_at: Option<SystemTime>,
    dropping: bool,
    dropped_counter: Option<u32>,
}

fn records_in(frames: &[u8]) -> u64 {
    tollgate_contract::usage::count_frames(frames).unwrap_or(1)
}

impl UsageShipper {
    /// Registers the queue the workers resolve.
    pub fn register<H: Host>(&mut self, host: &H) {
        match host.register_queue(contract::USAGE_QUEUE) {
            Ok(id) => self.queue = Some(id),
            Err(e) => log::error!("tollgate service: could not register the usage queue ({e}); usage records cannot be collected"),
        }
    }

    pub fn owns_queue(&self, queue: u32) -> bool {
        self.queue == Some(queue)
    }

    pub fn owns_call(&self, token: u32) -> bool {
        self.in_flight.as_ref().is_some_and(|(t, _)| *t == token)
    }

    fn count_dropped<H: Host>(&mut self, host: &H, records: u64) {
        if self.dropped_counter.is_none() {
            self.dropped_counter = host.define_counter(DROPPED_COUNTER).ok();
        }
        if let Some(id) = self.dropped_counter {
            let _ = host.increment_counter(id, records);
        }
    }

    /// Takes every item waiting in the queue.
    pub fn drain<H: Host>(&mut self, host: &H) {
        let Some(queue) = self.queue else { return };
        while let Ok(Some(item)) = host.dequeue(queue) {
            if item.is_empty() {
                continue;
            }
            if self.buffered_bytes + item.len() > MAX_BUFFER_BYTES {
                if !self.dropping {
                    self.dropping = true;
                    log::error!("tollgate service: usage buffer full ({} bytes unsent: the control plane is not taking records); dropping new records, counted in {DROPPED_COUNTER}", self.buffered_bytes);
                }
                self.count_dropped(host, records_in(&item));
                continue;
            }
            if self.dropping {
                self.dropping = false;
                log::warn!("tollgate service: usage buffer has room again; records are kept");
            }
            if self.oldest.is_none() {
                self.oldest = host.now().ok();
            }
            self.buffered_bytes += item.len();
            self.buffer.push_back(item);
        }
    }

    /// Sends the next batch if one is due and none is in flight.
    pub fn send<H: Host>(&mut self, host: &H, cluster: &str, token: &str) {
        if self.in_flight.is_some() || self.buffer.is_empty() {
            return;
        }
        let now = host.now().unwrap_or(SystemTime::UNIX_EPOCH);
        if self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        let full = self.buffered_bytes >= MAX_BATCH_BYTES;
        let lingered = self.oldest.is_none_or(|t| now.duration_since(t).unwrap_or_default() >= LINGER);
        if !full && !lingered {
            return;
        }
        let mut lines = Vec::new();
        let mut size = 0;
        while let Some(item) = self.buffer.front() {
            if !lines.is_empty() && size + item.len() > MAX_BATCH_BYTES {
                break;
            }
            size += item.len();
            if let Some(item) = self.buffer.pop_front() {
                lines.push(item);
            }
        }
        self.buffered_bytes -= size;
        let body = batch_body(&lines);
        let auth = format!("Bearer {token}");
        let headers = [
            (":method", "POST"),
            (":path", contract::USAGE_PATH),
            (":authority", "tollgate-control-plane"),
            ("authorization", auth.as_str()),
            ("content-type", tollgate_contract::usage::BINARY_CONTENT_TYPE),
        ];
        match host.http_call(cluster, &headers, &body, CALL_TIMEOUT) {
            Ok(call) => {
                self.in_flight = Some((call, lines));
                self.oldest = if self.buffer.is_empty() { None } else { Some(now) };
            }
            Err(e) => {
                log::warn!("tollgate service: cannot reach the control plane for usage ({e}); kept for a retry");
                self.put_back(lines);
                self.back_off(now);
            }
        }
    }

    fn put_back(&mut self, lines: Vec<Vec<u8>>) {
        for item in lines.into_iter().rev() {
            self.buffered_bytes += item.len();
            self.buffer.push_front(item);
        }
    }

    fn back_off(&mut self, now: SystemTime) {
        self.failures = self.failures.saturating_add(1);
        let wait = Duration::from_millis(250u64.saturating_mul(1 << self.failures.min(6))).min(MAX_BACKOFF);
        self.retry_at = Some(now + wait);
    }

    /// The answer to the batch in flight. `status` is `None` when the call failed (timeout, reset).
    pub fn answered<H: Host>(&mut self, host: &H, status: Option<&[u8]>) {
        let Some((_, lines)) = self.in_flight.take() else { return };
        match status {
            Some(b"200") => {
                if self.failures > 0 {
                    log::info!("tollgate service: the control plane takes usage records again");
                }
                self.failures = 0;
                self.retry_at = None;
            }
            Some(b"400") => {
                let records: u64 = lines.iter().map(|l| records_in(l)).sum();
                log::error!("tollgate service: the control plane refused a usage batch of {records} records as malformed; dropped, counted in {DROPPED_COUNTER}");
                self.count_dropped(host, records);
            }
            other => {
                if self.failures == 0 {
                    let status = other.map(String::from_utf8_lossy).unwrap_or_else(|| "none (no answer)".into());
                    log::warn!("tollgate service: usage batch not taken (status {status}); kept and retried");
                }
                self.put_back(lines);
                self.back_off(host.now().unwrap_or(SystemTime::UNIX_EPOCH));
            }
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }
}

/// A binary batch: the magic, then every item's frames in order.
pub fn batch_body(items: &[Vec<u8>]) -> Vec<u8> {
    let magic = tollgate_contract::usage::BATCH_MAGIC;
    let mut body = Vec::with_capacity(magic.len() + items.iter().map(Vec::len).sum::<usize>());
    body.extend_from_slice(magic);
    for item in items {
        body.extend_from_slice(item);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_contract::usage::{decode_batch, encode_record, UsageRecord};

    #[test]
    fn batch_body_joins_items_into_one_batch() {
        let rec = |id: &str| UsageRecord { request_id: id.into(), ..Default::default() };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_record(&rec("1"), &mut a);
        encode_record(&rec("2"), &mut a);
        encode_record(&rec("3"), &mut b);
        assert_eq!(records_in(&a), 2);
        let batch = decode_batch(&batch_body(&[a, b])).unwrap();
        assert_eq!(batch.records.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(), ["1", "2", "3"]);
        assert_eq!(decode_batch(&batch_body(&[])).unwrap().records, Vec::new());
    }
}
