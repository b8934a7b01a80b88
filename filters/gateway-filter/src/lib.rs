//! The downstream (per-listener) filter: key auth, request validation, model resolution and
//! routing. It collects inputs from the host, calls the pure functions of
//! `tollgate_gateway::request`, and applies what they decide: a local answer, or the cluster
//! header and one filter-state value for the provider filter. The virtual keys are not in the
//! configuration: each worker keeps a copy of the key table the service VM publishes in shared
//! data (`keys`), brought up to date at the start of a request when it changed.

mod keys;
mod quotas;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use tollgate_contract::config::GatewayConfig;
use tollgate_contract::contract;
use tollgate_contract::keys::KeyEntry;
use tollgate_contract::state::{Operation, RequestState};
use tollgate_contract::{ClientApi, ErrorKind, GatewayError};
use tollgate_gateway::request;
use tollgate_wasm::{Action, Buffer, Host, HttpFilter, Map, Plugin, WholeBody};

tollgate_wasm::plugin!(GatewayPlugin, [request_headers, request_body, request_trailers, http_call_response, tick]);

/// How long a request waits for a quota grant before its quotas fall back (rate limits to this
/// Envoy's share, budgets closed).
const GRANT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

pub struct GatewayPlugin {
    config: Option<Rc<GatewayConfig>>,
    /// The quotas' shared-data keys, in the configuration's order.
    quota_keys: Rc<quotas::QuotaKeys>,
    /// The worker's key table, shared by its requests (a VM runs one callback at a time) and by
    /// every root context of this VM: a configuration change (a new root) keeps it.
    keys: Rc<RefCell<keys::Keys>>,
    /// Counter of requests that waited for a quota grant.
    waits_counter: Option<u32>,
}

impl Plugin for GatewayPlugin {
    type Http = GatewayHttp;
    const NAME: &'static str = "gateway filter";

    fn new() -> Self {
        Self { config: None, quota_keys: Rc::default(), keys: keys::vm_table(), waits_counter: None }
    }

    fn configure<H: Host>(&mut self, host: &H, config: &[u8]) -> Result<(), String> {
        let cfg = GatewayConfig::parse(config).map_err(|e| e.to_string())?;
        log::info!("gateway filter: configuration loaded: {} models", cfg.models.len());
        publish_leased_quotas(host, &cfg);
        if self.waits_counter.is_none() && cfg.quotas.iter().any(|q| q.lease) {
            self.waits_counter = host.define_counter("tollgate_quota_network_waits").ok();
        }
        self.quota_keys = Rc::new(quotas::QuotaKeys::new(&cfg.quotas));
        // Token and cost reservations of ended requests are given back late (see
        // `quotas::end`), and a worker's credits are (see `quotas`' documentation): at the
        // latest on this tick. Whatever an earlier configuration's requests left is given back
        // now.
        quotas::flush(host);
        if cfg.quotas.iter().any(|q| q.provider.is_none() && q.metric != tollgate_contract::quota::Metric::Concurrency) {
            if let Err(e) = host.set_tick_period(quotas::FLUSH_PERIOD) {
                log::warn!("gateway filter: no tick ({e}): reservations are given back with the next admission only");
            }
        }
        self.config = Some(Rc::new(cfg));
        Ok(())
    }

    fn on_tick<H: Host>(&mut self, host: &H) {
        quotas::flush(host);
    }

    fn http_context(&mut self) -> GatewayHttp {
        GatewayHttp {
            config: self.config.clone(),
            quota_keys: self.quota_keys.clone(),
            keys: self.keys.clone(),
            pending: None,
            body: WholeBody::default(),
            api: ClientApi::OpenAi,
            holds: Vec::new(),
            roomy: quotas::Roomy(false),
            waiting: None,
            waits_counter: self.waits_counter,
        }
    }
}

/// The request headers the gateway reads.
#[derive(Default)]
struct RequestHeaders {
    method: Option<String>,
    path: Option<String>,
    authorization: Option<String>,
    x_api_key: Option<String>,
    content_type: Option<String>,
}

/// A request waiting for its body.
struct Pending {
    op: Operation,
    key: KeyEntry,
}

/// A routed request waiting for a quota grant.
struct Waiting {
    pending: Pending,
    model: String,
    cluster: String,
    facts: tollgate_contract::state::BodyFacts,
    body_len: u64,
    max_output: Option<u64>,
    call: u32,
    /// What the request took of its quotas, once admitted.
    holds: Option<tollgate_contract::quota::Holds>,
}

/// Publishes the leased quotas for the service VM (which keeps their leases topped up), when
/// they changed. Every worker's VM does so with the same value.
fn publish_leased_quotas<H: Host>(host: &H, cfg: &GatewayConfig) {
    let leased: Vec<_> = cfg.quotas.iter().filter(|q| q.lease).collect();
    publish(host, tollgate_contract::quota_lease::SHARED_DOCS_KEY, serde_json::to_vec(&leased), "the leased quotas");
    // The quotas of providers, for the provider filter (taken per attempt).
    let providers = tollgate_contract::quota::ProviderQuotasDoc {
        quotas: cfg.quotas.iter().filter(|q| q.provider.is_some()).cloned().collect(),
        hold_seconds: cfg.quota_hold_seconds,
    };
    publish(host, tollgate_contract::quota::SHARED_PROVIDER_QUOTAS_KEY, serde_json::to_vec(&providers), "the quotas of providers");
}

/// Writes `doc` (JSON) under `key` unless it is there already.
fn publish<H: Host>(host: &H, key: &str, doc: serde_json::Result<Vec<u8>>, what: &str) {
    let Ok(doc) = doc else { return };
    let current = host.shared_data(key).ok().and_then(|(v, _)| v);
    if current.as_deref() != Some(doc.as_slice()) {
        if let Err(e) = host.set_shared_data(key, &doc, None) {
            log::warn!("gateway filter: could not publish {what} ({e})");
        }
    }
}

pub struct GatewayHttp {
    config: Option<Rc<GatewayConfig>>,
    quota_keys: Rc<quotas::QuotaKeys>,
    keys: Rc<RefCell<keys::Keys>>,
    pending: Option<Pending>,
    body: WholeBody,
    /// The client's API, once known: errors are answered in its format.
    api: ClientApi,
    /// What the request holds of its quotas, given back when it ends.
    holds: Vec<tollgate_contract::quota::Hold>,
    /// Whether those may be given back late (`quotas::end`).
    roomy: quotas::Roomy,
    /// The request waits for a quota grant.
    waiting: Option<Waiting>,
    waits_counter: Option<u32>,
}

/// Reads the headers the gateway needs in one host call, and removes every internal and
/// Envoy control header the client sent. Invalid UTF-8 is replaced (so a malformed key never
/// matches).
fn read_headers<H: Host>(host: &H, fault_injection: bool) -> Result<RequestHeaders, GatewayError> {
    let mut out = RequestHeaders::default();
    // Read in place: only the values kept are copied.
    let map = host.headers(Map::RequestHeaders)?;
    for (name, value) in map.iter_bytes() {
        if fault_injection && name == contract::HEADER_FAULT.as_bytes() {
            match value {
                b"trap-gateway" => std::process::abort(),
                // Left for the provider filter.
                b"trap-provider" => continue,
                _ => {}
            }
        }
        let slot = match name {
            b":method" => &mut out.method,
            b":path" => &mut out.path,
            b"authorization" => &mut out.authorization,
            b"x-api-key" => &mut out.x_api_key,
            b"content-type" => &mut out.content_type,
            n => {
                // Compared without a lowercase copy of every other header's name.
                let prefixed = |p: &str| n.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes()));
                if prefixed(contract::INTERNAL_HEADER_PREFIX) || prefixed(contract::ENVOY_HEADER_PREFIX) {
                    host.set_header(Map::RequestHeaders, &tollgate_contract::bytes::text(n), None)?;
                }
                continue;
            }
        };
        if slot.is_none() {
            *slot = Some(tollgate_contract::bytes::text(value).into_owned());
        }
    }
    Ok(out)
}

/// A 429 in the client's API format naming the quota, with `retry-after`.
fn refuse<H: Host>(host: &H, api: ClientApi, r: &quotas::Refusal<'_>) -> Result<Action, GatewayError> {
    tollgate_wasm::quota_slot::refuse(host, api, r.quota, r.limit, r.retry_after)?;
    Ok(Action::Pause)
}

fn reply_json<H: Host>(host: &H, body: &[u8]) -> Result<Action, GatewayError> {
    host.send_response(200, &[("content-type", "application/json")], body)?;
    Ok(Action::Pause)
}

impl GatewayHttp {
    /// The whole body is here (end of stream, or trailers): validate, route, take the quotas,
    /// continue.
    fn finish<H: Host>(&mut self, host: &H) -> Result<Action, GatewayError> {
        let (Some(cfg), Some(pending)) = (self.config.clone(), self.pending.take()) else {
            return Ok(Action::Continue);
        };
        let body = self.body.read(host, Buffer::RequestBody)?;
        let route = request::route(&cfg, &pending.key, &pending.op, &body)?;
        let body_len = u64::try_from(body.len()).unwrap_or(u64::MAX);
        // Token and cost quotas reserve the client's own output limit when it sets one (read
        // with the body's validation; an InvokeModel body, the model's own, only when needed).
        let invoke = matches!(pending.op, Operation::BedrockInvoke { .. });
        let tokens = || self.quota_keys.any_applies(&cfg.quotas, &pending.key.id, &route.model, |q| q.metric.is_tokens());
        let max_output = if invoke && tokens() { tollgate_contract::quota::max_output(&body) } else { route.max_output };
        let waiting = Waiting { pending, model: route.model, cluster: route.cluster.to_owned(), facts: route.facts, body_len, max_output, call: 0, holds: None };
        self.admit(host, &cfg, waiting, quotas::Pass::First, Some(&body))
    }

    /// Takes the request's quotas (or refuses it, or makes it wait for a grant) and sends it on.
    /// `body`: the request's, when at hand (not after a wait for a grant).
    fn admit<H: Host>(&mut self, host: &H, cfg: &GatewayConfig, mut w: Waiting, pass: quotas::Pass, body: Option<&[u8]>) -> Result<Action, GatewayError> {
        if !cfg.quotas.is_empty() {
            let since = host.now()?.duration_since(UNIX_EPOCH).unwrap_or_default();
            let (now, now_ns) = (since.as_secs(), since.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(since.subsec_nanos())));
            let price = cfg.model_prices.get(w.model.as_str());
            let providers = match cfg.provider_quotas {
                true => cfg.model(&w.model).map_or(&[][..], |m| m.providers.as_slice()),
                false => &[],
            };
            let asking = quotas::Asking { key_id: &w.pending.key.id, model: &w.model, body_len: w.body_len, max_output: w.max_output, now, now_ns, api: self.api, price, hold_seconds: cfg.quota_hold_seconds, providers, fit: request::least_output_limit(&w.pending.op).unwrap_or(0) };
            match quotas::admit(host, &cfg.quotas, &self.quota_keys, &asking, pass)? {
                // Nothing held, no headers to write, and no quota of a provider for the
                // provider filter to take.
                quotas::Admission::Admitted(holds, _, _, None) if holds.holds.is_empty() && holds.body_len == 0 && holds.limits == Default::default() => {}
                quotas::Admission::Admitted(holds, spent, roomy, lowered) => {
                    if let Some(limit) = lowered {
                        if let Err(e) = self.lower_output(host, &w, limit, body) {
                            quotas::release(host, &holds.holds, true);
                            return Err(e);
                        }
                    }
                    w.facts.quotas = true;
                    self.roomy = roomy;
                    w.holds = Some(holds);
                    // Providers whose quotas are spent are gone around when the model has
                    // another (the cluster without exactly those).
                    if !spent.is_empty() {
                        if let Some(c) = cfg.model(&w.model).and_then(|m| m.cluster_without(&spent)) {
                            w.cluster = c.to_owned();
                        }
                    }
                }
                quotas::Admission::Refused(refusal) => return refuse(host, self.api, &refusal),
                quotas::Admission::Wait(asks) => {
                    w.call = self.ask_authority(host, asks)?;
                    self.waiting = Some(w);
                    return Ok(Action::Pause);
                }
            }
        }
        host.set_header(Map::RequestHeaders, contract::HEADER_CLUSTER, Some(w.cluster.as_bytes()))?;
        // What the request holds of its quotas travels in the request state (one value).
        let state = RequestState::encode_from(&w.pending.op, w.facts, &w.pending.key.id, &w.model, w.holds.as_ref())
            .map_err(|e| GatewayError::new(ErrorKind::InvalidRequest, format!("The request cannot be routed: {e}.")))?;
        host.set_property(&[contract::STATE_REQUEST], &state)?;
        if let Some(h) = w.holds {
            self.holds = h.holds;
        }
        Ok(Action::Continue)
    }

    /// Rewrites the body with the output limit a quota lowered the request to (`fit_output`),
    /// and its `content-length`. Only on that path: `body` is the request's when at hand, else
    /// it is read again (after a wait for a grant).
    fn lower_output<H: Host>(&self, host: &H, w: &Waiting, limit: u64, body: Option<&[u8]>) -> Result<(), GatewayError> {
        let read;
        let body = match body {
            Some(b) => b,
            None => {
                read = self.body.read(host, Buffer::RequestBody)?;
                &read
            }
        };
        let out = request::with_output_limit(&w.pending.op, body, limit)
            .ok_or_else(|| GatewayError::new(ErrorKind::Internal, "The request's output limit could not be lowered to fit its quota."))?;
        self.body.replace(host, Buffer::RequestBody, &out)?;
        let mut buf = [0; 20];
        host.set_header(Map::RequestHeaders, "content-length", Some(tollgate_contract::bytes::decimal(out.len() as u64, &mut buf)))?;
        log::debug!("gateway filter: output limit lowered to {limit} tokens to fit a quota");
        Ok(())
    }

    /// Asks the quota authority for leases, with the ticket the service VM published.
    fn ask_authority<H: Host>(&self, host: &H, asks: Vec<tollgate_contract::quota_lease::Ask>) -> Result<u32, GatewayError> {
        use tollgate_contract::quota_lease::{GrantRequest, GRANTS_PATH, HEADER_TICKET, SHARED_TICKET_KEY};
        if let Some(id) = self.waits_counter {
            let _ = host.increment_counter(id, 1);
        }
        let ticket = host.shared_data(SHARED_TICKET_KEY)?.0.map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
        let envoy = host.property(&["node", "id"]).ok().flatten().map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
        let body = serde_json::to_vec(&GrantRequest { envoy, asks }).map_err(|_| GatewayError::new(ErrorKind::Internal, "quota grant"))?;
        let headers = [(":method", "POST"), (":path", GRANTS_PATH), (":authority", "tollgate-control-plane"), ("content-type", "application/json"), (HEADER_TICKET, ticket.as_str())];
        Ok(host.http_call(contract::CONTROL_PLANE_INTERNAL_CLUSTER, &headers, &body, GRANT_TIMEOUT)?)
    }
}

impl HttpFilter for GatewayHttp {
    fn client_api(&self) -> ClientApi {
        self.api
    }

    fn on_request_headers<H: Host>(&mut self, host: &H, end_of_stream: bool) -> Result<Action, GatewayError> {
        let Some(cfg) = self.config.clone() else {
            return Err(GatewayError::new(ErrorKind::Unavailable, "The gateway is starting; retry in a moment.")
                .code("not_ready"));
        };
        let h = read_headers(host, cfg.fault_injection)?;
        let op = request::classify(h.method.as_deref().unwrap_or_default(), h.path.as_deref().unwrap_or_default())?;
        self.api = op.client_api();
        let now = || host.now().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(u64::MAX, |d| d.as_secs());
        let key = {
            let mut keys = self
                .keys
                .try_borrow_mut()
                .map_err(|_| GatewayError::new(ErrorKind::Internal, "The key table is busy; retry in a moment."))?;
            keys.authenticate(host, h.authorization.as_deref(), h.x_api_key.as_deref(), now)?
        };
        match &op {
            Operation::ListModels => return reply_json(host, &request::list_models(&cfg, &key)),
            Operation::RetrieveModel(name) => return reply_json(host, &request::retrieve_model(&cfg, &key, name)?),
            // The key is good: the control plane answers with its spend (it checks the key again).
            Operation::KeyUsage => {
                host.set_header(Map::RequestHeaders, contract::HEADER_CLUSTER, Some(contract::CONTROL_PLANE_INTERNAL_CLUSTER.as_bytes()))?;
                return Ok(Action::Continue);
            }
            Operation::ChatCompletions
            | Operation::Embeddings
            | Operation::AnthropicMessages
            | Operation::BedrockConverse { .. }
            | Operation::OpenAiResponses
            | Operation::BedrockInvoke { .. } => {}
        }
        request::check_content_type(h.content_type.as_deref())?;
        if end_of_stream {
            return Err(GatewayError::new(ErrorKind::InvalidRequest, "The request has no body; send a JSON object.")
                .code("invalid_json"));
        }
        self.pending = Some(Pending { op, key });
        Ok(Action::Pause)
    }

    fn on_request_body<H: Host>(&mut self, host: &H, body_size: usize, end_of_stream: bool) -> Result<Action, GatewayError> {
        let Some(cfg) = self.config.as_deref() else { return Ok(Action::Continue) };
        if self.pending.is_none() {
            return Ok(Action::Continue);
        }
        if !self.body.arrived(body_size, end_of_stream, Some(cfg.max_body_bytes))? {
            return Ok(Action::Pause);
        }
        self.finish(host)
    }

    fn on_request_trailers<H: Host>(&mut self, host: &H) -> Result<Action, GatewayError> {
        self.finish(host)
    }

    fn waits_for(&self, token: u32) -> bool {
        self.waiting.as_ref().is_some_and(|w| w.call == token)
    }

    fn on_http_call_response<H: Host>(&mut self, host: &H, token: u32, _num_headers: usize, body_size: usize) -> Result<Action, GatewayError> {
        let (Some(cfg), Some(w)) = (self.config.clone(), self.waiting.take_if(|w| w.call == token)) else {
            return Ok(Action::Pause);
        };
        let status = host.header(Map::CallResponseHeaders, ":status").ok().flatten();
        let grants = match status.as_deref() {
            Some(b"200") => serde_json::from_slice::<tollgate_contract::quota_lease::GrantResponse>(&host.buffer(Buffer::CallResponseBody, 0, body_size)?).ok(),
            _ => None,
        };
        let pass = match grants {
            Some(g) => {
                quotas::apply(host, &cfg.quotas, &g);
                quotas::Pass::Granted
            }
            None => {
                log::warn!("gateway filter: the quota authority did not answer a grant (status {}); quotas fall back", status.as_deref().map_or("none".into(), String::from_utf8_lossy));
                quotas::Pass::AuthorityDown
            }
        };
        self.admit(host, &cfg, w, pass, None)
    }

    fn on_done<H: Host>(&mut self, host: &H) {
        if !self.holds.is_empty() {
            quotas::end(host, std::mem::take(&mut self.holds), self.roomy);
        }
    }
}
