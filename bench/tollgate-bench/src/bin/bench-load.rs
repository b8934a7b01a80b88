//! `bench-load`: an HTTP/1.1 load generator for the benchmark, on one thread.
//!
//! - `--mode closed`: `--concurrency` keep-alive connections, each sending its next request as
//!   soon as the previous answer is complete.
//! - `--mode open --rate R`: requests are scheduled every 1/R seconds and served by up to
//!   `--concurrency` connections. A request that finds every connection busy at its scheduled
//!   time has its latency measured from that scheduled time, so a slow server is not hidden by
//!   the generator waiting for it (no coordinated omission); one sent on time is measured from
//!   the real send (tokio's timer may wake up to 1 ms late, which is not the server's doing).
//! - `--stream`: also records the time to the first body byte (TTFB).
//!
//! Warm-up (`--warmup` seconds) runs first and is not recorded; statistics cover the requests
//! started during the next `--duration` seconds. Every run is bounded by `--duration`,
//! `--timeout` and `--max-requests`. On stderr it prints `BENCH WARMUP_DONE` and
//! `BENCH MEASURE_END` at the window's edges (the runner samples the target's CPU time there);
//! the result is one JSON object on stdout.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::time::Instant;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Fixed concurrency, back to back.
    Closed,
    /// Fixed request rate (`--rate`).
    Open,
}

#[derive(Parser, Debug)]
#[command(about = "HTTP/1.1 load generator for the Tollgate benchmark (one thread)")]
struct Args {
    /// Full URL, e.g. http://127.0.0.1:8080/v1/chat/completions (http only).
    #[arg(long)]
    url: String,
    #[arg(long, default_value = "POST")]
    method: String,
    /// File whose bytes are the request body (none: empty body).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Extra request header `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    mode: Mode,
    /// Connections (closed loop), or the most connections used to keep the rate (open loop).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Requests per second (open loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up, not recorded.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Record the time to the first body byte (for SSE answers).
    #[arg(long)]
    stream: bool,
    /// Seconds after which one request counts as an error.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Upper bound on the requests sent (warm-up included).
    #[arg(long, default_value_t = 20_000_000)]
    max_requests: u64,
    /// A successful answer's body must contain this (else it counts as an error `bad_body`).
    #[arg(long)]
    expect: Option<String>,
}

/// What every connection task shares (single-threaded: `Rc` and `RefCell` are enough).
struct Shared {
    target: Target,
    mode: Mode,
    period: Option<Duration>,
    start: Instant,
    measure_start: Instant,
    measure_end: Instant,
    timeout: Duration,
    max_requests: u64,
    expect: Option<Vec<u8>>,
    stream: bool,
    sent: Cell<u64>,
    next_slot: Cell<u64>,
    stats: RefCell<Stats>,
}

struct Target {
    addr: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

struct Stats {
    /// Successful requests started in the window (the latency histogram's population).
    ok: u64,
    /// Successful answers completed inside the window, whenever sent (what `rps` counts).
    completed_in_window: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    ttfb: Histogram<u64>,
    bytes: u64,
}

impl Stats {
    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }
}

#[derive(Debug)]
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(err: E) -> Self {
        Failure(err.to_string())
    }
}

fn histogram() -> Result<Histogram<u64>, Failure> {
    // Nanoseconds, 1 ns to 10 minutes, 3 significant digits.
    Ok(Histogram::new_with_bounds(1, 600_000_000_000, 3)?)
}

fn parse_target(args: &Args) -> Result<Target, Failure> {
    let uri: Uri = args.url.parse()?;
    if uri.scheme_str() != Some("http") {
        return Err(Failure(format!("only http:// URLs are supported: {}", args.url)));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| Failure(format!("no host in {}", args.url)))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let addr = format!("{}:{port}", authority.host());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = HeaderMap::new();
    headers.insert(hyper::header::HOST, HeaderValue::from_str(authority.as_str())?);
    let body = match &args.body_file {
        Some(path) => Bytes::from(std::fs::read(path).map_err(|e| {
            Failure(format!("cannot read {}: {e}", path.display()))
        })?),
        None => Bytes::new(),
    };
    if !body.is_empty() {
        headers.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    for line in &args.headers {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| Failure(format!("header without ':': {line}")))?;
        headers.insert(HeaderName::from_bytes(name.trim().as_bytes())?, HeaderValue::from_str(value.trim())?);
    }
    Ok(Target { addr, method: Method::from_bytes(args.method.as_bytes())?, uri: path.parse()?, headers, body })
}

async fn connect(shared: &Shared) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let stream = tokio::net::TcpStream::connect(&shared.target.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        // The connection ends when the server closes it or the sender is dropped.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Outcome of one request: `Ok(Some(ttfb))` on success.
enum Outcome {
    Ok { ttfb: Option<Instant>, bytes: u64 },
    Status(u16),
    BadBody,
}

async fn one_request(
    shared: &Shared,
    sender: &mut SendRequest<Full<Bytes>>,
    buf: &mut Vec<u8>,
) -> Result<Outcome, Failure> {
    sender.ready().await?;
    let target = &shared.target;
    let mut req = Request::new(Full::new(target.body.clone()));
    *req.method_mut() = target.method.clone();
    *req.uri_mut() = target.uri.clone();
    *req.headers_mut() = target.headers.clone();
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut ttfb = None;
    let mut bytes = 0u64;
    buf.clear();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            if data.is_empty() {
                continue;
            }
            if ttfb.is_none() {
                ttfb = Some(Instant::now());
            }
            bytes += data.len() as u64;
            if shared.expect.is_some() {
                buf.extend_from_slice(data);
            }
        }
    }
    if !status.is_success() {
        return Ok(Outcome::Status(status.as_u16()));
    }
    if let Some(expect) = &shared.expect {
        if !expect.is_empty() && !buf.windows(expect.len()).any(|w| w == expect.as_slice()) {
            return Ok(Outcome::BadBody);
        }
    }
    Ok(Outcome::Ok { ttfb, bytes })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

async fn worker(shared: Rc<Shared>) {
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        if shared.sent.get() >= shared.max_requests {
            break;
        }
        // When this request is due: now (closed loop) or its slot (open loop).
        let due = match (shared.mode, shared.period) {
            (Mode::Open, Some(period)) => {
                let slot = shared.next_slot.get();
                shared.next_slot.set(slot + 1);
                let offset = period.checked_mul(u32::try_from(slot).unwrap_or(u32::MAX));
                let due = offset.map_or(shared.measure_end, |o| shared.start + o);
                if due >= shared.measure_end {
                    break;
                }
                let now = Instant::now();
                if now >= shared.measure_end {
                    // Past the window with a backlog: the target cannot keep the rate. The slots
                    // never sent are counted (`backlog`) instead of draining an unbounded queue.
                    if due >= shared.measure_start {
                        shared.stats.borrow_mut().error("backlog".to_owned());
                    }
                    continue;
                }
                if now >= due {
                    // Overdue: every connection was busy. The wait counts as latency
                    // (no coordinated omission).
                    due
                } else {
                    // On time: the timer may wake us late (tokio's resolution is 1 ms); that
                    // lateness is ours, not the server's, so latency starts at the real send.
                    tokio::time::sleep_until(due).await;
                    Instant::now()
                }
            }
            _ => {
                let now = Instant::now();
                if now >= shared.measure_end {
                    break;
                }
                now
            }
        };
        let recorded = due >= shared.measure_start;
        shared.sent.set(shared.sent.get() + 1);
        let result = tokio::time::timeout(shared.timeout, async {
            if sender.as_ref().is_none_or(|s| s.is_closed()) {
                sender = Some(connect(&shared).await.map_err(|e| ("connect", e))?);
            }
            match sender.as_mut() {
                Some(s) => one_request(&shared, s, &mut buf).await.map_err(|e| ("transport", e)),
                None => Err(("connect", Failure("no connection".to_owned()))),
            }
        })
        .await;
        let done = Instant::now();
        let backoff = record(&shared, &mut sender, result, recorded, due, done);
        if backoff {
            // Refused: back off a little instead of spinning on connect.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

type Attempt = Result<Result<Outcome, (&'static str, Failure)>, tokio::time::error::Elapsed>;

/// Records one attempt's outcome; returns whether the worker should back off (connect failed).
fn record(
    shared: &Shared,
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    result: Attempt,
    recorded: bool,
    due: Instant,
    done: Instant,
) -> bool {
    let mut stats = shared.stats.borrow_mut();
    let mut count_error = |kind: &str| {
        if recorded {
            stats.error(kind.to_owned());
        }
    };
    match result {
        Ok(Ok(Outcome::Ok { ttfb, bytes })) => {
            if done >= shared.measure_start && done <= shared.measure_end {
                stats.completed_in_window += 1;
            }
            if recorded {
                stats.ok += 1;
                stats.bytes += bytes;
                stats.latency.saturating_record(nanos(done - due));
                if let (true, Some(t)) = (shared.stream, ttfb) {
                    stats.ttfb.saturating_record(nanos(t - due));
                }
            }
            false
        }
        Ok(Ok(Outcome::Status(code))) => {
            count_error(&format!("status_{code}"));
            false
        }
        Ok(Ok(Outcome::BadBody)) => {
            count_error("bad_body");
            false
        }
        Ok(Err((kind, _failure))) => {
            *sender = None;
            count_error(kind);
            kind == "connect"
        }
        Err(_elapsed) => {
            *sender = None;
            count_error("timeout");
            false
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    if h.is_empty() {
        return serde_json::Value::Null;
    }
    json!({
        "p50": us(h.value_at_quantile(0.50)),
        "p90": us(h.value_at_quantile(0.90)),
        "p99": us(h.value_at_quantile(0.99)),
        "p999": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
        "mean": (h.mean() / 100.0).round() / 10.0,
    })
}

async fn run(args: Args) -> Result<serde_json::Value, Failure> {
    let target = parse_target(&args)?;
    let secs = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s).map_err(|e| Failure(format!("--{what} {s}: {e}")))
    };
    let warmup = secs(args.warmup, "warmup")?;
    let duration = secs(args.duration, "duration")?;
    let timeout = secs(args.timeout, "timeout")?;
    let period = match (args.mode, args.rate) {
        (Mode::Open, Some(rate)) if rate > 0.0 => Some(secs(1.0 / rate, "rate")?),
        (Mode::Open, _) => return Err(Failure("--mode open needs --rate > 0".to_owned())),
        (Mode::Closed, _) => None,
    };
    let concurrency = args.concurrency.max(1);
    let start = Instant::now();
    let shared = Rc::new(Shared {
        target,
        mode: args.mode,
        period,
        start,
        measure_start: start + warmup,
        measure_end: start + warmup + duration,
        timeout,
        max_requests: args.max_requests,
        expect: args.expect.as_ref().map(|e| e.as_bytes().to_vec()),
        stream: args.stream,
        sent: Cell::new(0),
        next_slot: Cell::new(0),
        stats: RefCell::new(Stats {
            ok: 0,
            completed_in_window: 0,
            errors: BTreeMap::new(),
            latency: histogram()?,
            ttfb: histogram()?,
            bytes: 0,
        }),
    });
    let markers = {
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(shared.measure_start).await;
            eprintln!("BENCH WARMUP_DONE");
            tokio::time::sleep_until(shared.measure_end).await;
            eprintln!("BENCH MEASURE_END");
        })
    };
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::task::spawn_local(worker(shared.clone())))
        .collect();
    for w in workers {
        w.await?;
    }
    markers.await?;
    let finished = Instant::now();
    let stats = shared.stats.borrow();
    let errors: u64 = stats.errors.values().sum();
    let measured = duration.as_secs_f64();
    let rps = stats.completed_in_window as f64 / measured;
    Ok(json!({
        "mode": match args.mode { Mode::Closed => "closed", Mode::Open => "open" },
        "concurrency": concurrency,
        "rate_target": args.rate,
        "stream": args.stream,
        "warmup_s": args.warmup,
        "duration_s": measured,
        "tail_s": (finished - shared.measure_end).as_secs_f64(),
        "requests": stats.ok,
        "completed_in_window": stats.completed_in_window,
        "errors": errors,
        "error_kinds": stats.errors,
        "sent_total": shared.sent.get(),
        "rps": (rps * 10.0).round() / 10.0,
        "bytes_received": stats.bytes,
        "latency_us": percentiles(&stats.latency),
        "ttfb_us": if args.stream { percentiles(&stats.ttfb) } else { serde_json::Value::Null },
    }))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("bench-load: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(args)) {
        Ok(result) => {
            println!("{result}");
            std::process::ExitCode::SUCCESS
        }
        Err(Failure(message)) => {
            eprintln!("bench-load: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
