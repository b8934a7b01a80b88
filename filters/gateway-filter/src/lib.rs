//! The downstream (per-listener) filter: key auth, request validation, model resolution and
//! routing. It collects inputs from the host, calls the pure functions of
//! `tollgate_types::request`, and applies what they decide.

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use log::{error, info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use tollgate_types::config::GatewayConfig;
use tollgate_types::contract;
use tollgate_types::keys::KeyEntry;
use tollgate_types::request::{self, Operation, RequestState};
use tollgate_types::{ClientApi, ErrorKind, GatewayError};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(GatewayRoot { config: None }) });
}}

struct GatewayRoot {
    config: Option<Rc<GatewayConfig>>,
}

impl Context for GatewayRoot {}

impl RootContext for GatewayRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            error!("gateway filter: no configuration; rejecting");
            return false;
        };
        match GatewayConfig::parse(&bytes) {
            Ok(cfg) => {
                info!("gateway filter: configuration loaded: {} keys, {} models", cfg.keys.len(), cfg.models.len());
                self.config = Some(Rc::new(cfg));
                true
            }
            Err(e) => {
                error!("gateway filter: configuration rejected, keeping the previous one: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(GatewayHttp { config: self.config.clone(), pending: None, body_size: 0, api: ClientApi::OpenAi }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The request headers the gateway reads.
#[derive(Default)]
struct RequestHeaders {
    method: Option<String>,
    path: Option<String>,
    authorization: Option<String>,
    x_api_key: Option<String>,
}

/// A request waiting for its body.
struct Pending {
    op: Operation,
    key: KeyEntry,
}

struct GatewayHttp {
    config: Option<Rc<GatewayConfig>>,
    pending: Option<Pending>,
    /// Bytes of body buffered so far.
    body_size: usize,
    /// The client's API, once known: errors are answered in its format.
    api: ClientApi,
}

impl Context for GatewayHttp {}

impl GatewayHttp {
    fn reply_error(&self, err: &GatewayError) -> Action {
        let mut headers = vec![("content-type", "application/json")];
        if self.api == ClientApi::Bedrock {
            headers.push(("x-amzn-errortype", err.aws_error_type()));
        }
        self.send_http_response(u32::from(err.status()), headers, Some(&err.to_json(self.api)));
        Action::Pause
    }

    fn reply_json(&self, body: &[u8]) -> Action {
        self.send_http_response(200, vec![("content-type", "application/json")], Some(body));
        Action::Pause
    }

    fn now_secs(&self) -> u64 {
        self.get_current_time().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }

    /// Reads the headers the gateway needs in one host call, and removes every internal and
    /// Envoy control header the client sent. Invalid UTF-8 is replaced (so a malformed key
    /// never matches) rather than trapping the VM.
    fn read_headers(&self) -> RequestHeaders {
        let mut out = RequestHeaders::default();
        for (name, value) in self.get_http_request_headers_bytes() {
            let slot = match name.as_str() {
                ":method" => &mut out.method,
                ":path" => &mut out.path,
                "authorization" => &mut out.authorization,
                "x-api-key" => &mut out.x_api_key,
                n => {
                    let lower = n.to_ascii_lowercase();
                    if lower.starts_with(contract::INTERNAL_HEADER_PREFIX) || lower.starts_with(contract::ENVOY_HEADER_PREFIX) {
                        self.remove_http_request_header(&name);
                    }
                    continue;
                }
            };
            if slot.is_none() {
                *slot = Some(String::from_utf8_lossy(&value).into_owned());
            }
        }
        out
    }

    fn on_headers(&mut self, end_of_stream: bool) -> Result<Action, GatewayError> {
        let Some(cfg) = self.config.clone() else {
            return Err(GatewayError::new(ErrorKind::Unavailable, "The gateway is starting; retry in a moment.")
                .code("not_ready"));
        };
        let h = self.read_headers();
        let op = request::classify(h.method.as_deref().unwrap_or_default(), h.path.as_deref().unwrap_or_default())?;
        self.api = op.client_api();
        let key = request::authenticate_at(&cfg, h.authorization.as_deref(), h.x_api_key.as_deref(), || self.now_secs())?;
        match &op {
            Operation::ListModels => return Ok(self.reply_json(&request::list_models(&cfg, key))),
            Operation::RetrieveModel(name) => return Ok(self.reply_json(&request::retrieve_model(&cfg, key, name)?)),
            Operation::ChatCompletions
            | Operation::Embeddings
            | Operation::AnthropicMessages
            | Operation::BedrockConverse { .. } => {}
        }
        if end_of_stream {
            return Err(GatewayError::new(ErrorKind::InvalidRequest, "The request has no body; send a JSON object.")
                .code("invalid_json"));
        }
        self.pending = Some(Pending { op, key: key.clone() });
        Ok(Action::Pause)
    }

    fn on_body(&mut self, body_size: usize, end_of_stream: bool) -> Result<Action, GatewayError> {
        self.body_size = body_size;
        let Some(cfg) = self.config.clone() else { return Ok(Action::Continue) };
        if self.pending.is_none() {
            return Ok(Action::Continue);
        }
        if body_size as u64 > cfg.max_body_bytes {
            return Err(GatewayError::new(
                ErrorKind::TooLarge,
                format!("The request body is larger than the gateway's limit of {} bytes.", cfg.max_body_bytes),
            )
            .code("request_too_large"));
        }
        if !end_of_stream {
            return Ok(Action::Pause);
        }
        self.finish(&cfg)
    }

    /// The whole body is here (end of stream, or trailers): validate, route, continue.
    fn finish(&mut self, cfg: &GatewayConfig) -> Result<Action, GatewayError> {
        let Some(pending) = self.pending.as_ref() else { return Ok(Action::Continue) };
        let body = self.get_http_request_body(0, self.body_size).unwrap_or_default();
        let route = request::route(cfg, &pending.key, &pending.op, &body)?;
        self.set_http_request_header(contract::HEADER_CLUSTER, Some(route.cluster));
        let state = RequestState::encode_from(&pending.op, route.facts, &pending.key.id, &route.model);
        self.set_property(vec![contract::STATE_REQUEST], Some(state.as_bytes()));
        self.pending = None;
        Ok(Action::Continue)
    }
}

impl HttpContext for GatewayHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match self.on_headers(end_of_stream) {
            Ok(action) => action,
            Err(e) => {
                if e.kind == ErrorKind::Internal {
                    warn!("gateway filter: {e}");
                }
                self.reply_error(&e)
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let result = self.on_body(body_size, end_of_stream);
        self.settle(result)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let result = match self.config.clone() {
            Some(cfg) => self.finish(&cfg),
            None => Ok(Action::Continue),
        };
        self.settle(result)
    }
}

impl GatewayHttp {
    fn settle(&mut self, result: Result<Action, GatewayError>) -> Action {
        match result {
            Ok(action) => action,
            Err(e) => {
                self.pending = None;
                if e.kind == ErrorKind::Internal {
                    warn!("gateway filter: {e}");
                }
                self.reply_error(&e)
            }
        }
    }
}
