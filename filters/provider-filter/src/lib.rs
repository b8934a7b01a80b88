//! The upstream (per-cluster) filter: the provider adapter. It runs once per attempt, reads the
//! attempt's deployment from the endpoint metadata, classifies the attempt and applies its plan
//! (`tollgate_provider::plan`): path, authority, credential and body for that provider,
//! translated and signed when the provider speaks another API; then translates the response
//! back, chunk by chunk when streaming.
//!
//! Provider credentials come from wasm shared data, where the service VM (`tollgate-service`)
//! publishes the document it fetches from the control plane: this filter makes no callout. The
//! root re-reads the document on a timer and on a stream that finds none yet.

mod meter;
mod quotas;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use tollgate_contract::bytes::same;
use tollgate_contract::config::{Credential, CredentialsDoc, DeploymentMeta, ProviderConfigDoc};
use tollgate_contract::contract;
use tollgate_contract::state::{Operation, RequestState};
use tollgate_contract::{ClientApi, ErrorKind, GatewayError};
use tollgate_llm::{bedrock_embeddings, Usage};
use tollgate_provider::plan::{self, Attempt, AttemptKind, HeaderAttempt, Plan, ResponsePlan};
use tollgate_provider::rewrite::provider_error;
use tollgate_provider::sanitize;
use tollgate_wasm::{Action, Buffer, Headers, Host, HttpFilter, Map, Plugin, WholeBody};

use meter::{Meter, Outbox};

tollgate_wasm::plugin!(
    ProviderPlugin,
    [request_headers, request_body, request_trailers, response_headers, response_body, tick]
);

thread_local! {
    /// The worker's usage records, one outbox for all the roots (one per cluster): a stream is
    /// made from the last root configured, which may go (its cluster removed) before the
    /// stream ends, and its records must still be handed over.
    static OUTBOX: Rc<RefCell<Outbox>> = Rc::default();
}

/// How often each worker looks for a new credential document in shared data.
const CREDENTIALS_TICK: Duration = Duration::from_millis(250);

/// The credential document as last read from shared data, with the CAS token it was read at.
#[derive(Default)]
struct Credentials {
    doc: Option<Rc<CredentialsDoc>>,
    cas: u32,
}

impl Credentials {
    /// Reads shared data; parses only when the value changed.
    fn refresh<H: Host>(&mut self, host: &H) {
        match host.shared_data(contract::SHARED_CREDENTIALS_KEY) {
            Ok((Some(bytes), cas)) if cas != self.cas || self.doc.is_none() => {
                match serde_json::from_slice::<CredentialsDoc>(&bytes) {
                    Ok(doc) => {
                        self.doc = Some(Rc::new(doc));
                        self.cas = cas;
                    }
                    Err(_) => log::warn!("provider filter: the shared credential document is invalid; keeping the previous one"),
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!("provider filter: could not read the credential document ({e})"),
        }
    }
}

type SharedCredentials = Rc<RefCell<Credentials>>;

pub struct ProviderPlugin {
    credentials: SharedCredentials,
    config: ProviderConfigDoc,
    outbox: Rc<RefCell<Outbox>>,
    /// The quotas of providers (with their shared-data keys), taken per attempt; re-read from
    /// shared data on the timer.
    quotas: quotas::SharedQuotas,
    deployments: Rc<RefCell<Deployments>>,
}

impl Plugin for ProviderPlugin {
    type Http = ProviderHttp;
    const NAME: &'static str = "provider filter";

    fn new() -> Self {
        Self {
            credentials: SharedCredentials::default(),
            config: ProviderConfigDoc::default(),
            outbox: OUTBOX.with(Rc::clone),
            quotas: quotas::SharedQuotas::default(),
            deployments: Rc::default(),
        }
    }

    fn configure<H: Host>(&mut self, host: &H, config: &[u8]) -> Result<(), String> {
        // An empty configuration is the default one.
        if !config.is_empty() {
            self.config = serde_json::from_slice(config).map_err(|e| format!("invalid provider filter configuration: {e}"))?;
        }
        self.quotas.refresh(host);
        self.credentials.borrow_mut().refresh(host);
        host.set_tick_period(CREDENTIALS_TICK).map_err(|e| e.to_string())
    }

    fn http_context(&mut self) -> ProviderHttp {
        ProviderHttp {
            credentials: self.credentials.clone(),
            deployments: self.deployments.clone(),
            fault_injection: self.config.fault_injection,
            metering: !self.config.metering_off,
            attempt: None,
            body: WholeBody::default(),
            response: ResponsePlan::Passthrough,
            error_status: None,
            usage: None,
            header_tokens: None,
            api: ClientApi::OpenAi,
            meter: Meter::default(),
            outbox: self.outbox.clone(),
            holds: None,
            provider: tollgate_contract::config::ProviderKind::Unknown,
            end: None,
            end_marker: None,
            usage_final: false,
            quotas: self.quotas.current(),
            attempt_holds: Vec::new(),
            refused: false,
        }
    }

    fn on_tick<H: Host>(&mut self, host: &H) {
        self.credentials.borrow_mut().refresh(host);
        self.quotas.refresh(host);
        if let Ok(mut outbox) = self.outbox.try_borrow_mut() {
            outbox.flush(host);
        }
        quotas::flush(host);
    }
}

/// What one attempt needs once the body is complete.
struct PendingAttempt {
    meta: Rc<DeploymentMeta>,
    op: Operation,
    kind: AttemptKind,
    /// The credential document as it was when the headers came (its credential was found).
    credentials: Option<Rc<CredentialsDoc>>,
}

pub struct ProviderHttp {
    credentials: SharedCredentials,
    deployments: Rc<RefCell<Deployments>>,
    fault_injection: bool,
    /// Usage records on (`settings.metering`, on by default).
    metering: bool,
    attempt: Option<PendingAttempt>,
    body: WholeBody,
    response: ResponsePlan,
    /// Status of a provider error response being buffered for rewriting.
    error_status: Option<u16>,
    usage: Option<Usage>,
    /// Bedrock's `X-Amzn-Bedrock-Input-Token-Count`, read only when the JSON translation needs it.
    header_tokens: Option<u64>,
    /// The client's API: errors are answered in its format.
    api: ClientApi,
    meter: Meter,
    outbox: Rc<RefCell<Outbox>>,
    /// What the request holds of its quotas (read only when the gateway filter says so).
    holds: Option<Box<tollgate_contract::quota::Holds>>,
    /// The attempt's provider (whose answers may carry rate-limit headers of their own).
    provider: tollgate_contract::config::ProviderKind,
    /// A translated stream's final usage event, looked for in the provider's bytes.
    end: Option<Box<tollgate_llm::usage_reader::EndMarker>>,
    /// The marker `end` looks for, until a stream's first chunk builds it (none for providers
    /// that report usage once, at the end).
    end_marker: Option<&'static [u8]>,
    /// The provider's final usage was read (else a stream cut short is estimated).
    usage_final: bool,
    quotas: Rc<quotas::ProviderQuotas>,
    /// What this attempt holds of the quotas of its provider.
    attempt_holds: Vec<tollgate_contract::quota::Hold>,
    /// This attempt was refused by a quota of its provider (the answer is this filter's own).
    refused: bool,
}

/// The deployment's credential from the document (`None` when it names none).
fn credential<'d>(doc: Option<&'d CredentialsDoc>, meta: &DeploymentMeta) -> Result<Option<&'d Credential>, GatewayError> {
    let Some(name) = &meta.credential else { return Ok(None) };
    let Some(doc) = doc else {
        return Err(GatewayError::new(
            ErrorKind::Unavailable,
            "The gateway has not loaded provider credentials yet; retry in a moment.",
        )
        .code("credentials_not_loaded"));
    };
    let cred = doc.credentials.get(name).ok_or_else(|| {
        log::warn!("provider filter: deployment {} names unknown credential {name}", meta.id);
        GatewayError::new(ErrorKind::Internal, "The deployment's provider credential is not configured.")
    })?;
    Ok(Some(cred))
}

/// How many parsed deployments a worker keeps (the endpoints it sends to; more only costs a
/// parse for those that fall out).
const DEPLOYMENT_CACHE: usize = 32;

/// Each deployment's metadata as last parsed, by its raw bytes: parsing it cost about 12,500
/// wasm instructions an attempt; comparing bytes costs a few hundred.
#[derive(Default)]
struct Deployments {
    /// Most recently used last.
    parsed: Vec<(Vec<u8>, Rc<DeploymentMeta>)>,
}

impl Deployments {
    fn get(&mut self, raw: Vec<u8>) -> Result<Rc<DeploymentMeta>, GatewayError> {
        if let Some(i) = self.parsed.iter().rposition(|(r, _)| same(r, &raw)) {
            let hit = self.parsed.remove(i);
            let meta = hit.1.clone();
            self.parsed.push(hit);
            return Ok(meta);
        }
        let meta: Rc<DeploymentMeta> = Rc::new(
            serde_json::from_slice(&raw)
                .map_err(|_| GatewayError::new(ErrorKind::Internal, "The upstream endpoint's deployment metadata is invalid."))?,
        );
        if self.parsed.len() >= DEPLOYMENT_CACHE {
            self.parsed.remove(0);
        }
        self.parsed.push((raw, meta.clone()));
        Ok(meta)
    }
}

fn deployment<H: Host>(host: &H, cache: &RefCell<Deployments>) -> Result<Rc<DeploymentMeta>, GatewayError> {
    let raw = host
        .property(&[
            "xds",
            "upstream_host_metadata",
            "filter_metadata",
            contract::METADATA_NAMESPACE,
            contract::METADATA_DEPLOYMENT_KEY,
        ])?
        .ok_or_else(|| GatewayError::new(ErrorKind::Internal, "The upstream endpoint has no deployment metadata."))?;
    match cache.try_borrow_mut() {
        Ok(mut cache) => cache.get(raw),
        Err(_) => Deployments::default().get(raw),
    }
}

/// What the gateway filter handed on (the downstream stream's filter state).
fn request_state<H: Host>(host: &H) -> Result<RequestState, GatewayError> {
    let state = host.property(&[contract::STATE_REQUEST])?.unwrap_or_default();
    RequestState::decode(&state).map_err(|e| {
        GatewayError::new(ErrorKind::Internal, format!("The request reached a provider without a valid request state ({e})."))
    })
}

impl ProviderHttp {
    /// The credential document, read from shared data now if the root has none yet.
    fn credential_doc<H: Host>(&self, host: &H) -> Option<Rc<CredentialsDoc>> {
        let mut creds = self.credentials.borrow_mut();
        if creds.doc.is_none() {
            creds.refresh(host);
        }
        creds.doc.clone()
    }

    /// Sets or removes every provider header (the header map is shared by every attempt),
    /// and the body unless it goes as sent.
    fn apply<H: Host>(&mut self, host: &H, plan: Plan, headers: &Headers) -> Result<(), GatewayError> {
        // What is there now, each header looked at once.
        let planned: Vec<&str> = plan.headers.iter().map(|(n, _)| *n).collect();
        let found = sanitize::survey(headers.iter_bytes(), &planned);
        // Already as planned when the path goes as the client sent it, and the authority when
        // the router's `auto_host_rewrite` put this endpoint's there (not after a failover to
        // another host: the map is shared by the attempts).
        for (name, value, now) in [(":path", &plan.path, found.path), (":authority", &plan.authority, found.authority)] {
            if now != Some(value.as_bytes()) {
                host.set_header(Map::RequestHeaders, name, Some(value.as_bytes()))?;
            }
        }
        for ((name, value), now) in plan.headers.iter().zip(&found.planned) {
            // A header already as wanted (or already absent) costs no host call.
            if *now != value.as_deref().map(str::as_bytes) {
                host.set_header(Map::RequestHeaders, name, value.as_deref().map(str::as_bytes))?;
            }
        }
        // Only allow-listed client headers reach the provider: one host call per other header
        // present (none for a plain SDK request: the router drops `accept-encoding`).
        for name in &found.remove {
            host.set_header(Map::RequestHeaders, name, None)?;
        }
        match plan.body_as_sent {
            // An earlier attempt may have sent a rewritten body of another length.
            Some(len) => {
                let mut buf = [0; 20];
                let len = tollgate_contract::bytes::decimal(len, &mut buf);
                if found.content_length != Some(len) {
                    host.set_header(Map::RequestHeaders, "content-length", Some(len))?;
                }
            }
            None => {
                let mut buf = [0; 20];
                host.set_header(Map::RequestHeaders, "content-length", Some(tollgate_contract::bytes::decimal(plan.body.len() as u64, &mut buf)))?;
                self.body.replace(host, Buffer::RequestBody, &plan.body)?;
            }
        }
        self.response = plan.response;
        Ok(())
    }

    /// The whole body is here (end of stream, or trailers): plan, sign and apply this attempt.
    fn finish<H: Host>(&mut self, host: &H) -> Result<Action, GatewayError> {
        let Some(attempt) = self.attempt.take() else {
            return Ok(Action::Continue);
        };
        let credential = credential(attempt.credentials.as_deref(), &attempt.meta)?;
        let body = self.body.read(host, Buffer::RequestBody)?;
        // One host call for every header: find the request id and which provider headers are
        // present (only those need removing).
        let headers = host.headers(Map::RequestHeaders)?;
        let request_id = headers.get("x-request-id").map(tollgate_contract::bytes::text).unwrap_or_default();
        // SigV4 signs with the time: a first attempt of a request with quotas takes the gateway's
        // admission time (the same event-loop pass, well within SigV4's allowed skew), a retry
        // reads the clock.
        let now = match (attempt.kind.needs_clock(), self.meter.admitted(&headers)) {
            (false, _) => UNIX_EPOCH,
            (true, Some(admitted)) => admitted,
            (true, None) => host.now()?,
        };
        let a = Attempt { meta: &attempt.meta, op: &attempt.op, credential, body: &body, request_id: &request_id, now };
        let plan = plan::plan_with(&a, &attempt.kind)?;
        self.apply(host, plan, &headers)?;
        if self.metering {
            self.meter.sent(host, &headers, attempt.kind.needs_clock().then_some(now));
        }
        Ok(Action::Continue)
    }

    /// Sets the error status and headers for a provider error; returns the new body.
    fn rewrite_error<H: Host>(&self, host: &H, status: u16, body: &[u8]) -> Result<Vec<u8>, GatewayError> {
        let err = provider_error(status, body);
        if err.kind == ErrorKind::BadGateway {
            log::warn!("provider filter: provider answered {status}; reported to the client as {}", err.status());
        }
        let out = err.to_json(self.api);
        host.set_header(Map::ResponseHeaders, ":status", Some(err.status().to_string().as_bytes()))?;
        host.set_header(Map::ResponseHeaders, "content-type", Some(b"application/json"))?;
        host.set_header(Map::ResponseHeaders, "content-length", Some(out.len().to_string().as_bytes()))?;
        if self.api == ClientApi::Bedrock {
            host.set_header(Map::ResponseHeaders, "x-amzn-errortype", Some(err.aws_error_type().as_bytes()))?;
        }
        Ok(out)
    }

    /// A provider's `Retry-After` (or `retry-after-ms`) on a 429/503: a wait longer than
    /// [`sanitize::MAX_RETRY_WAIT`] is not retried (`x-envoy-ratelimited` stops the router's
    /// retry, which reads these headers after this filter), and the client is told at most
    /// [`sanitize::MAX_CLIENT_RETRY_AFTER`]. Error path only: two header reads, the clock only
    /// when a value is present, a write or two when one is.
    fn bound_retry_after<H: Host>(&self, host: &H) -> Result<(), GatewayError> {
        let seconds = host.header(Map::ResponseHeaders, "retry-after")?;
        let millis = host.header(Map::ResponseHeaders, "retry-after-ms")?;
        if seconds.is_none() && millis.is_none() {
            return Ok(());
        }
        let now = host.now()?;
        let wait = seconds
            .as_deref()
            .and_then(|v| sanitize::retry_after(v, now))
            .or_else(|| millis.as_deref().and_then(sanitize::retry_after_ms))
            // A value that is neither seconds nor a date: the longest we would tell.
            .unwrap_or(sanitize::MAX_CLIENT_RETRY_AFTER);
        if wait > sanitize::MAX_RETRY_WAIT {
            host.set_header(Map::ResponseHeaders, "x-envoy-ratelimited", Some(b"true"))?;
        }
        let told = sanitize::client_retry_after(wait);
        if seconds.as_deref() != Some(told.as_bytes()) {
            host.set_header(Map::ResponseHeaders, "retry-after", Some(told.as_bytes()))?;
        }
        if millis.is_some() {
            host.set_header(Map::ResponseHeaders, "retry-after-ms", None)?;
        }
        Ok(())
    }

    /// `x-tollgate-cost-usd` on a non-streamed answer of a priced deployment (its headers are
    /// held until now).
    fn set_cost_header<H: Host>(&self, host: &H) -> Result<(), GatewayError> {
        if !self.metering || !self.meter.prices_answer() {
            return Ok(());
        }
        if let Some(cost) = self.meter.cost_header(self.usage) {
            host.set_header(Map::ResponseHeaders, contract::HEADER_COST, Some(cost.as_bytes()))?;
        }
        Ok(())
    }

    /// A stream's usage so far, when it reported one: final at once for a provider with no end
    /// marker to look for (it reports usage once, at its end).
    fn stream_usage(&mut self, usage: Option<Usage>) {
        if usage.is_some() {
            self.usage = usage;
            self.usage_final |= self.end.is_none();
        }
    }

    /// Translates a successful provider response into the client's API.
    fn translate_response<H: Host>(&mut self, host: &H, body_size: usize, end_of_stream: bool) -> Result<Action, GatewayError> {
        match &mut self.response {
            ResponsePlan::Passthrough => Ok(Action::Continue),
            ResponsePlan::Tap(_) if !self.metering => Ok(Action::Continue),
            ResponsePlan::Tap(_) if self.meter.prices_answer() && !end_of_stream => Ok(Action::Pause),
            ResponsePlan::Tap(reader) => {
                // A held answer is read whole at its end (the buffer holds every chunk).
                let chunk = host.buffer(Buffer::ResponseBody, 0, body_size)?;
                if end_of_stream {
                    self.usage = reader.feed_last(&chunk);
                } else {
                    reader.feed(&chunk);
                }
                self.usage_final = reader.is_final();
                if end_of_stream {
                    self.set_cost_header(host)?;
                }
                Ok(Action::Continue)
            }
            ResponsePlan::Json(json) => {
                if !end_of_stream {
                    return Ok(Action::Pause);
                }
                let body = host.buffer(Buffer::ResponseBody, 0, body_size)?;
                let out = match json.translate_with_header_tokens(&body, self.header_tokens) {
                    Ok((out, usage)) => {
                        self.usage = Some(usage);
                        self.usage_final = true;
                        self.set_cost_header(host)?;
                        out
                    }
                    Err(e) => {
                        log::warn!("provider filter: {e}");
                        host.set_header(Map::ResponseHeaders, ":status", Some(b"502"))?;
                        plan::translate_error(e).to_json(self.api)
                    }
                };
                host.set_buffer(Buffer::ResponseBody, 0, body_size, &out)?;
                Ok(Action::Continue)
            }
            ResponsePlan::Stream(translator) => {
                let chunk = host.buffer(Buffer::ResponseBody, 0, body_size)?;
                if let Some(marker) = self.end_marker.take() {
                    self.end = Some(Box::new(tollgate_llm::usage_reader::EndMarker::new(marker)));
                }
                if let Some(end) = &mut self.end {
                    end.feed(&chunk);
                    self.usage_final |= end.seen();
                }
                // A stream that passes as it came (the client's own, with its usage chunk) is
                // only read: no output built, nothing to compare or write back.
                if translator.passes_through() {
                    let mut usage = translator.read(&chunk).unwrap_or_else(|e| {
                        log::warn!("provider filter: stream usage: {e}");
                        None
                    });
                    if end_of_stream {
                        usage = translator.finish().ok().and_then(|o| o.usage).or(usage);
                    }
                    self.stream_usage(usage);
                    return Ok(Action::Continue);
                }
                let mut out = Vec::new();
                let mut usage = None;
                let mut step = |r: Result<tollgate_llm::StreamOutput, tollgate_llm::TranslateError>| match r {
                    Ok(o) => {
                        out.extend(o.bytes);
                        usage = o.usage.or(usage);
                    }
                    Err(e) => log::warn!("provider filter: stream translation: {e}"),
                };
                step(translator.feed(&chunk));
                if end_of_stream {
                    step(translator.finish());
                }
                self.stream_usage(usage);
                // A chunk that passes unchanged (a usage tap on the client's own stream) costs
                // no host call to write back.
                if !same(&out, &chunk) {
                    host.set_buffer(Buffer::ResponseBody, 0, body_size, &out)?;
                }
                Ok(Action::Continue)
            }
        }
    }
}

impl HttpFilter for ProviderHttp {
    fn client_api(&self) -> ClientApi {
        self.api
    }

    fn on_request_headers<H: Host>(&mut self, host: &H, end_of_stream: bool) -> Result<Action, GatewayError> {
        if self.fault_injection && host.header(Map::RequestHeaders, contract::HEADER_FAULT)?.as_deref() == Some(b"trap-provider") {
            std::process::abort();
        }
        let meta = deployment(host, &self.deployments)?;
        let state = request_state(host)?;
        self.meter.prepare(&state, &meta);
        if self.metering {
            use tollgate_contract::config::ProviderKind;
            use tollgate_llm::usage_reader::EndMarker;
            // Anthropic's and Converse's streams report a usage before their final one (or
            // besides their last event): the final event is looked for in the provider's bytes,
            // from a stream's first chunk. OpenAI-compatible and TGI streams report usage once,
            // in their last events, so the usage read is the final one (their end marker could
            // also be cut apart by SageMaker's event-stream framing).
            self.end_marker = match meta.provider {
                ProviderKind::Anthropic => Some(EndMarker::ANTHROPIC),
                ProviderKind::Bedrock => Some(EndMarker::BEDROCK),
                _ => None,
            };
        }
        let RequestState { op, facts, model: client_model, holds, key_id } = state;
        self.api = op.client_api();
        if let Some(by) = holds.as_ref().filter(|h| h.body_len > 0 && !self.quotas.is_empty()) {
            match self.quotas.admit(host, meta.provider, &key_id, &client_model, by, meta.price.as_ref())? {
                quotas::Attempt::Admitted(held) => self.attempt_holds = held,
                quotas::Attempt::Refused { quota, limit, retry_after } => {
                    // Envoy sends an upstream filter's own answer to the client as it is (no
                    // retry on another deployment).
                    self.refused = true;
                    tollgate_wasm::quota_slot::refuse(host, self.api, quota, limit, retry_after)?;
                    return Ok(Action::Pause);
                }
            }
        }
        self.holds = holds;
        self.provider = meta.provider;
        if end_of_stream {
            return Err(GatewayError::new(ErrorKind::InvalidRequest, "The request has no body."));
        }
        let creds = self.credential_doc(host);
        let credential = credential(creds.as_deref(), &meta)?;
        let header_attempt = HeaderAttempt { meta: &meta, op: &op, facts, client_model: &client_model, credential };
        let kind = AttemptKind::of(&header_attempt)?;
        let plan = plan::plan_from_headers(&header_attempt, &kind);
        // The meter's texts, moved rather than copied (its record is built at the end).
        self.meter.owner(key_id, client_model);
        if let Some(plan) = plan {
            // The body goes out as the client sent it: nothing to wait for.
            let headers = host.headers(Map::RequestHeaders)?;
            self.apply(host, plan?, &headers)?;
            if self.metering {
                self.meter.sent(host, &headers, None);
            }
            return Ok(Action::Continue);
        }
        self.attempt = Some(PendingAttempt { meta, op, kind, credentials: creds });
        Ok(Action::Pause)
    }

    fn on_request_body<H: Host>(&mut self, host: &H, body_size: usize, end_of_stream: bool) -> Result<Action, GatewayError> {
        if self.attempt.is_none() {
            return Ok(Action::Continue);
        }
        if !self.body.arrived(body_size, end_of_stream, None)? {
            return Ok(Action::Pause);
        }
        self.finish(host)
    }

    fn on_request_trailers<H: Host>(&mut self, host: &H) -> Result<Action, GatewayError> {
        self.finish(host)
    }

    fn on_response_headers<H: Host>(&mut self, host: &H, end_of_stream: bool) -> Result<Action, GatewayError> {
        if self.refused {
            return Ok(Action::Continue);
        }
        let status = host
            .header(Map::ResponseHeaders, ":status")?
            .and_then(|s| std::str::from_utf8(&s).ok().and_then(|s| s.parse::<u16>().ok()))
            .unwrap_or(0);
        self.meter.status = status;
        if let Some(holds) = &self.holds {
            // Replacing the provider's own where it may have sent them, else added (the same
            // headers, fewer of Envoy's instructions).
            if holds.limits.provider_may_send(self.provider) {
                holds.limits.each_header(|name, value| host.set_header(Map::ResponseHeaders, name, Some(value)))?;
            } else {
                holds.limits.each_header(|name, value| host.add_header(Map::ResponseHeaders, name, value))?;
            }
        }
        self.meter.complete |= end_of_stream;
        if status >= 400 {
            if status == 429 || status == 503 {
                self.bound_retry_after(host)?;
            }
            if end_of_stream {
                self.rewrite_error(host, status, &[])?;
                return Ok(Action::Continue);
            }
            // Errors are small: buffer the body and rewrite it into the client's format.
            self.error_status = Some(status);
            return Ok(Action::Pause);
        }
        match &self.response {
            ResponsePlan::Passthrough => Ok(Action::Continue),
            // Held until the body is read, for its cost header.
            ResponsePlan::Tap(_) if self.metering && self.meter.prices_answer() => Ok(Action::Pause),
            ResponsePlan::Tap(_) => Ok(Action::Continue),
            ResponsePlan::Json(json) => {
                if json.wants_token_count_header() {
                    // Cohere Embed on Bedrock: one header read, on this path only.
                    self.header_tokens = host
                        .header(Map::ResponseHeaders, bedrock_embeddings::INPUT_TOKEN_COUNT_HEADER)?
                        .and_then(|v| bedrock_embeddings::parse_token_count(&v));
                }
                host.set_header(Map::ResponseHeaders, "content-length", None)?;
                host.set_header(Map::ResponseHeaders, "content-type", Some(b"application/json"))?;
                Ok(Action::Pause)
            }
            ResponsePlan::Stream(_) => {
                host.set_header(Map::ResponseHeaders, "content-length", None)?;
                let content_type = match self.api {
                    ClientApi::Bedrock => "application/vnd.amazon.eventstream",
                    ClientApi::OpenAi | ClientApi::Anthropic => "text/event-stream",
                };
                host.set_header(Map::ResponseHeaders, "content-type", Some(content_type.as_bytes()))?;
                Ok(Action::Continue)
            }
        }
    }

    fn on_response_body<H: Host>(&mut self, host: &H, body_size: usize, end_of_stream: bool) -> Result<Action, GatewayError> {
        if self.refused {
            return Ok(Action::Continue);
        }
        if self.metering {
            self.meter.chunk(host, body_size);
        }
        self.meter.complete |= end_of_stream;
        if let Some(status) = self.error_status {
            if !end_of_stream {
                return Ok(Action::Pause);
            }
            let body = host.buffer(Buffer::ResponseBody, 0, body_size)?;
            let err = self.rewrite_error(host, status, &body)?;
            host.set_buffer(Buffer::ResponseBody, 0, body_size, &err)?;
            return Ok(Action::Continue);
        }
        self.translate_response(host, body_size, end_of_stream)
    }

    fn on_done<H: Host>(&mut self, host: &H) {
        let record = self.meter.record(host, self.usage, self.usage_final);
        if let Some(holds) = &self.holds {
            // This attempt's tokens count against its token quotas (estimated ones included).
            let (input, output) = match (&record, self.usage) {
                (Some(r), _) => (r.input_tokens + r.cache_read_tokens + r.cache_write_tokens, r.output_tokens),
                (None, Some(u)) => (u.prompt_tokens(), u.completion_tokens()),
                (None, None) => (0, 0),
            };
            // A budget counts what the ledger will charge: the deployment's price, cache tiers apart.
            let cost = match (&record, self.meter.price) {
                (Some(r), Some(p)) => p.cost_nanos(r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens),
                (None, Some(p)) => p.cost_nanos(input, output, 0, 0),
                (_, None) => 0,
            };
            // A slot of a window that is over is left alone.
            let used = |m: tollgate_contract::quota::Metric| match m {
                tollgate_contract::quota::Metric::CostUsd => cost,
                m if m.is_tokens() => m.of_usage(input, output),
                _ => 0,
            };
            // While the request's quotas are roomy, the usage goes to the gateway worker's tally
            // (its holds came tagged; in this VM's memory, written on the tick); else it is
            // settled in the slots, one read and one compare-and-swap per group.
            if !holds.tagged.is_empty() && !quotas::tally(holds.tally, &holds.tagged, used) {
                log::error!("provider filter: an attempt's usage could not be added to its tally (not counted)");
            }
            for (h, e) in tollgate_wasm::quota_slot::adjust(host, &holds.holds, |h| (0, used(h.metric))) {
                log::warn!("provider filter: could not count tokens against quota {} ({e})", h.id);
            }
            // The attempt's own quotas (of its provider): what they held given back, its
            // usage counted.
            let back = |h: &tollgate_contract::quota::Hold| match h.metric {
                tollgate_contract::quota::Metric::Concurrency => 1,
                _ => h.reserved,
            };
            for (h, e) in tollgate_wasm::quota_slot::adjust(host, &self.attempt_holds, |h| (back(h), used(h.metric))) {
                log::warn!("provider filter: could not settle quota {} ({e})", h.id);
            }
        }
        if let Some(record) = record {
            if let Ok(mut outbox) = self.outbox.try_borrow_mut() {
                outbox.push(host, &record);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: &str, model: &str) -> Vec<u8> {
        format!(r#"{{"id":"{id}","provider":"openai","model":"{model}","authority":"a","base_path":"/v1"}}"#).into_bytes()
    }

    #[test]
    fn deployments_are_parsed_once_and_again_when_they_change() {
        let mut cache = Deployments::default();
        let first = cache.get(raw("d1", "m1")).unwrap();
        assert!(Rc::ptr_eq(&first, &cache.get(raw("d1", "m1")).unwrap()), "a hit is the same parse");
        // The same deployment with new metadata (a configuration change) is parsed anew.
        let changed = cache.get(raw("d1", "m2")).unwrap();
        assert_eq!(changed.model, "m2");
        assert!(cache.get(b"{not json".to_vec()).is_err());
        // Bounded: the least recently used falls out, a used one stays.
        for i in 0..DEPLOYMENT_CACHE {
            cache.get(raw(&format!("x{i}"), "m")).unwrap();
            cache.get(raw("d1", "m2")).unwrap();
        }
        assert_eq!(cache.parsed.len(), DEPLOYMENT_CACHE);
        assert!(cache.parsed.iter().any(|(r, _)| *r == raw("d1", "m2")));
        assert!(!cache.parsed.iter().any(|(r, _)| *r == raw("d1", "m1")));
    }
}
