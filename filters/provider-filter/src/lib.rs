//! The upstream (per-cluster) filter: the provider adapter. It runs once per attempt, reads the
//! attempt's deployment from the endpoint metadata, and rewrites path, authority, credential and
//! body for that provider (translating and signing when the provider speaks another API), then
//! translates the response back, chunk by chunk when streaming. Provider credentials are fetched
//! from the control plane over the filter's own channel (never in Envoy config) and kept in
//! shared data.

mod credentials;
mod plan;
mod sigv4;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use log::warn;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, LogLevel};
use tollgate_llm::Usage;
use tollgate_types::config::{Credential, CredentialsDoc, DeploymentMeta};
use tollgate_types::contract;
use tollgate_types::provider;
use tollgate_types::request::{Operation, RequestState};
use tollgate_types::{ClientApi, ErrorKind, GatewayError};

use credentials::CredentialStore;
use plan::{Attempt, HeaderAttempt, Plan, ResponsePlan};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(CredentialStore::new()) });
}}

/// Plans one attempt outside Envoy (for the micro-benchmarks); returns the body size sent.
#[doc(hidden)]
pub fn bench_plan(
    meta: &DeploymentMeta,
    op: &Operation,
    credential: &tollgate_types::config::Credential,
    body: &[u8],
    now: std::time::SystemTime,
) -> Result<usize, GatewayError> {
    let p = plan::plan(&Attempt { meta, op, credential: Some(credential), body, request_id: "bench", now })?;
    Ok(p.body.len())
}

pub(crate) type SharedCredentials = Rc<RefCell<Option<Rc<CredentialsDoc>>>>;

pub(crate) struct ProviderHttp {
    credentials: SharedCredentials,
    attempt: Option<PendingAttempt>,
    /// Bytes of request body buffered so far.
    body_size: usize,
    response: ResponsePlan,
    /// Status of a provider error response being buffered for rewriting.
    error_status: Option<u16>,
    usage: Option<Usage>,
    /// The client's API: errors are answered in its format.
    api: ClientApi,
}

impl ProviderHttp {
    pub(crate) fn new(credentials: SharedCredentials) -> Self {
        Self {
            credentials,
            attempt: None,
            body_size: 0,
            response: ResponsePlan::Passthrough,
            error_status: None,
            usage: None,
            api: ClientApi::OpenAi,
        }
    }
}

/// What one attempt needs once the body is complete.
struct PendingAttempt {
    meta: DeploymentMeta,
    op: Operation,
    /// The credential document as it was when the headers came (its credential was found).
    credentials: Option<Rc<CredentialsDoc>>,
}

impl Context for ProviderHttp {}

/// The deployment's credential from the fetched document (`None` when it names none).
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
        warn!("provider filter: deployment {} names unknown credential {name}", meta.id);
        GatewayError::new(ErrorKind::Internal, "The deployment's provider credential is not configured.")
    })?;
    Ok(Some(cred))
}

impl ProviderHttp {
    fn reply_error(&self, err: &GatewayError) -> Action {
        let mut headers = vec![("content-type", "application/json")];
        if self.api == ClientApi::Bedrock {
            headers.push(("x-amzn-errortype", err.aws_error_type()));
        }
        self.send_http_response(u32::from(err.status()), headers, Some(&err.to_json(self.api)));
        Action::Pause
    }

    fn deployment(&self) -> Result<DeploymentMeta, GatewayError> {
        let raw = self
            .get_property(vec![
                "xds",
                "upstream_host_metadata",
                "filter_metadata",
                contract::METADATA_NAMESPACE,
                contract::METADATA_DEPLOYMENT_KEY,
            ])
            .ok_or_else(|| GatewayError::new(ErrorKind::Internal, "The upstream endpoint has no deployment metadata."))?;
        serde_json::from_slice(&raw)
            .map_err(|_| GatewayError::new(ErrorKind::Internal, "The upstream endpoint's deployment metadata is invalid."))
    }

    /// What the gateway filter handed on (the downstream stream's filter state).
    fn request_state(&self) -> Result<RequestState, GatewayError> {
        let state = self.get_property(vec![contract::STATE_REQUEST]).unwrap_or_default();
        RequestState::parse(&String::from_utf8_lossy(&state))
            .ok_or_else(|| GatewayError::new(ErrorKind::Internal, "The request reached a provider without an operation."))
    }

    fn on_headers(&mut self, end_of_stream: bool) -> Result<Action, GatewayError> {
        let meta = self.deployment()?;
        let RequestState { op, facts, model: client_model, .. } = self.request_state()?;
        self.api = op.client_api();
        if end_of_stream {
            return Err(GatewayError::new(ErrorKind::InvalidRequest, "The request has no body."));
        }
        let creds = self.credentials.borrow().clone();
        let credential = credential(creds.as_deref(), &meta)?;
        let header_attempt = HeaderAttempt { meta: &meta, op: &op, facts, client_model: &client_model, credential };
        if let Some(plan) = plan::plan_without_body(&header_attempt) {
            // The body goes out as the client sent it: nothing to wait for.
            let headers = self.get_http_request_headers_bytes();
            self.apply(plan?, &headers);
            return Ok(Action::Continue);
        }
        self.attempt = Some(PendingAttempt { meta, op, credentials: creds });
        Ok(Action::Pause)
    }

    fn on_body(&mut self, body_size: usize, end_of_stream: bool) -> Result<Action, GatewayError> {
        if self.attempt.is_none() {
            return Ok(Action::Continue);
        }
        self.body_size = body_size;
        if !end_of_stream {
            return Ok(Action::Pause);
        }
        self.finish()
    }

    /// Sets or removes every provider header (the header map is shared by every attempt),
    /// and the body unless it goes as sent.
    fn apply(&mut self, plan: Plan, headers: &[(String, Vec<u8>)]) {
        self.set_http_request_header(":path", Some(&plan.path));
        self.set_http_request_header(":authority", Some(&plan.authority));
        for (name, value) in &plan.headers {
            let current = headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice());
            // A header already as wanted (or already absent) costs no host call.
            if current != value.as_deref().map(str::as_bytes) {
                self.set_http_request_header(name, value.as_deref());
            }
        }
        if headers.iter().any(|(n, _)| n == contract::HEADER_CLUSTER) {
            self.set_http_request_header(contract::HEADER_CLUSTER, None);
        }
        match plan.body_as_sent {
            // An earlier attempt may have sent a rewritten body of another length.
            Some(len) => {
                let len = len.to_string();
                if !headers.iter().any(|(n, v)| n == "content-length" && v == len.as_bytes()) {
                    self.set_http_request_header("content-length", Some(&len));
                }
            }
            None => {
                self.set_http_request_header("content-length", Some(&plan.body.len().to_string()));
                self.set_http_request_body(0, self.body_size, &plan.body);
            }
        }
        self.response = plan.response;
    }

    /// The whole body is here (end of stream, or trailers): plan, sign and apply this attempt.
    fn finish(&mut self) -> Result<Action, GatewayError> {
        let Some(attempt) = self.attempt.take() else {
            return Ok(Action::Continue);
        };
        let credential = credential(attempt.credentials.as_deref(), &attempt.meta)?;
        let body = self.get_http_request_body(0, self.body_size).unwrap_or_default();
        // One host call for every header: find the request id and which provider headers are
        // present (only those need removing).
        let headers = self.get_http_request_headers_bytes();
        let request_id = headers
            .iter()
            .find(|(n, _)| n == "x-request-id")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let plan = plan::plan(&Attempt {
            meta: &attempt.meta,
            op: &attempt.op,
            credential,
            body: &body,
            request_id: &request_id,
            now: if plan::needs_clock(&attempt.meta, &attempt.op) { self.get_current_time() } else { UNIX_EPOCH },
        })?;
        self.apply(plan, &headers);
        Ok(Action::Continue)
    }

    /// Sets the error status and headers for a provider error; returns the new body.
    fn rewrite_error(&self, status: u16, body: &[u8]) -> Vec<u8> {
        let err = provider::provider_error(status, body);
        if err.kind == ErrorKind::BadGateway {
            warn!("provider filter: provider answered {status}; reported to the client as {}", err.status());
        }
        let out = err.to_json(self.api);
        self.set_http_response_header(":status", Some(&err.status().to_string()));
        self.set_http_response_header("content-type", Some("application/json"));
        self.set_http_response_header("content-length", Some(&out.len().to_string()));
        if self.api == ClientApi::Bedrock {
            self.set_http_response_header("x-amzn-errortype", Some(err.aws_error_type()));
        }
        out
    }

    /// Translates a successful provider response into the client's API.
    fn translate_response(&mut self, response: &mut ResponsePlan, body_size: usize, end_of_stream: bool) -> Action {
        match response {
            ResponsePlan::Passthrough => Action::Continue,
            ResponsePlan::Json(json) => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = self.get_http_response_body(0, body_size).unwrap_or_default();
                let out = match json.translate(&body) {
                    Ok((out, usage)) => {
                        self.usage = Some(usage);
                        out
                    }
                    Err(e) => {
                        warn!("provider filter: {e}");
                        self.set_http_response_header(":status", Some("502"));
                        plan::translate_error(e).to_json(self.api)
                    }
                };
                self.set_http_response_body(0, body_size, &out);
                Action::Continue
            }
            ResponsePlan::Stream(translator) => {
                let chunk = self.get_http_response_body(0, body_size).unwrap_or_default();
                let mut out = Vec::new();
                let mut usage = None;
                let mut step = |r: Result<tollgate_llm::StreamOutput, tollgate_llm::TranslateError>| match r {
                    Ok(o) => {
                        out.extend(o.bytes);
                        usage = o.usage.or(usage);
                    }
                    Err(e) => warn!("provider filter: stream translation: {e}"),
                };
                step(translator.feed(&chunk));
                if end_of_stream {
                    step(translator.finish());
                }
                self.record_usage(usage);
                self.set_http_response_body(0, body_size, &out);
                Action::Continue
            }
        }
    }

    fn record_usage(&mut self, usage: Option<Usage>) {
        if let Some(u) = usage {
            self.usage = Some(u);
        }
    }

    fn settle(&mut self, result: Result<Action, GatewayError>) -> Action {
        match result {
            Ok(a) => a,
            Err(e) => {
                if e.kind != ErrorKind::InvalidRequest {
                    warn!("provider filter: {e}");
                }
                self.reply_error(&e)
            }
        }
    }
}

impl HttpContext for ProviderHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let result = self.on_headers(end_of_stream);
        self.settle(result)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let result = self.on_body(body_size, end_of_stream);
        self.settle(result)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let result = self.finish();
        self.settle(result)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let status = self
            .get_http_response_header_bytes(":status")
            .and_then(|s| std::str::from_utf8(&s).ok().and_then(|s| s.parse::<u16>().ok()))
            .unwrap_or(0);
        if status >= 400 {
            if end_of_stream {
                self.rewrite_error(status, &[]);
                return Action::Continue;
            }
            // Errors are small: buffer the body and rewrite it into the client's format.
            self.error_status = Some(status);
            return Action::Pause;
        }
        match &self.response {
            ResponsePlan::Passthrough => Action::Continue,
            ResponsePlan::Json(_) => {
                self.set_http_response_header("content-length", None);
                self.set_http_response_header("content-type", Some("application/json"));
                Action::Pause
            }
            ResponsePlan::Stream(_) => {
                self.set_http_response_header("content-length", None);
                let content_type = match self.api {
                    ClientApi::Bedrock => "application/vnd.amazon.eventstream",
                    ClientApi::OpenAi | ClientApi::Anthropic => "text/event-stream",
                };
                self.set_http_response_header("content-type", Some(content_type));
                Action::Continue
            }
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(status) = self.error_status {
            if !end_of_stream {
                return Action::Pause;
            }
            let body = self.get_http_response_body(0, body_size).unwrap_or_default();
            let err = self.rewrite_error(status, &body);
            self.set_http_response_body(0, body_size, &err);
            return Action::Continue;
        }
        let mut response = std::mem::replace(&mut self.response, ResponsePlan::Passthrough);
        let action = self.translate_response(&mut response, body_size, end_of_stream);
        self.response = response;
        action
    }
}
