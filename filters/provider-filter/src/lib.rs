//! The upstream (per-cluster) filter: the provider adapter. It runs once per attempt, reads the
//! attempt's deployment from the endpoint metadata, and rewrites path, authority, credential and
//! body for that provider. Provider credentials are fetched from the control plane over the
//! filter's own channel (never in Envoy config) and kept in shared data.

mod credentials;

use std::cell::RefCell;
use std::rc::Rc;

use log::warn;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, LogLevel};
use tollgate_types::config::{CredentialsDoc, DeploymentMeta};
use tollgate_types::contract;
use tollgate_types::provider;
use tollgate_types::request::Operation;
use tollgate_types::{ErrorKind, GatewayError};

use credentials::CredentialStore;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(CredentialStore::new()) });
}}

pub(crate) type SharedCredentials = Rc<RefCell<Option<Rc<CredentialsDoc>>>>;

struct ProviderHttp {
    credentials: SharedCredentials,
    attempt: Option<Attempt>,
    /// Bytes of body buffered so far.
    body_size: usize,
    /// Status of a provider error response being buffered for rewriting.
    error_status: Option<u16>,
}

/// What one attempt needs once the body is complete.
struct Attempt {
    meta: DeploymentMeta,
    op: Operation,
}

impl Context for ProviderHttp {}

impl ProviderHttp {
    /// Sets the error status and headers for a provider error; returns the new body.
    fn rewrite_error(&self, status: u16, body: &[u8]) -> Vec<u8> {
        let err = provider::provider_error(status, body);
        if err.kind == ErrorKind::BadGateway {
            warn!("provider filter: provider answered {status}; reported to the client as {}", err.status());
        }
        let out = err.to_openai_json();
        self.set_http_response_header(":status", Some(&err.status().to_string()));
        self.set_http_response_header("content-type", Some("application/json"));
        self.set_http_response_header("content-length", Some(&out.len().to_string()));
        out
    }

    fn reply_error(&self, err: &GatewayError) -> Action {
        self.send_http_response(
            u32::from(err.status()),
            vec![("content-type", "application/json")],
            Some(&err.to_openai_json()),
        );
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

    fn operation(&self) -> Result<Operation, GatewayError> {
        self.get_property(vec![contract::STATE_OPERATION])
            .and_then(|raw| Operation::from_state(&String::from_utf8_lossy(&raw)))
            .ok_or_else(|| GatewayError::new(ErrorKind::Internal, "The request reached a provider without an operation."))
    }

    fn on_headers(&mut self, end_of_stream: bool) -> Result<Action, GatewayError> {
        let meta = self.deployment()?;
        let op = self.operation()?;
        if end_of_stream {
            return Err(GatewayError::new(ErrorKind::InvalidRequest, "The request has no body."));
        }
        self.attempt = Some(Attempt { meta, op });
        Ok(Action::Pause)
    }

    fn on_body(&mut self, body_size: usize, end_of_stream: bool) -> Result<Action, GatewayError> {
        self.body_size = body_size;
        if !end_of_stream {
            return Ok(Action::Pause);
        }
        self.finish()
    }

    /// The whole body is here (end of stream, or trailers): rewrite it for this attempt.
    fn finish(&mut self) -> Result<Action, GatewayError> {
        let body_size = self.body_size;
        let Some(attempt) = self.attempt.take() else {
            return Ok(Action::Continue);
        };
        let creds = self.credentials.borrow().clone();
        let api_key = match &attempt.meta.credential {
            None => None,
            Some(name) => {
                let Some(doc) = creds.as_ref() else {
                    return Err(GatewayError::new(
                        ErrorKind::Unavailable,
                        "The gateway has not loaded provider credentials yet; retry in a moment.",
                    )
                    .code("credentials_not_loaded"));
                };
                let cred = doc.credentials.get(name).ok_or_else(|| {
                    warn!("provider filter: deployment {} names unknown credential {name}", attempt.meta.id);
                    GatewayError::new(ErrorKind::Internal, "The deployment's provider credential is not configured.")
                })?;
                cred.api_key.as_deref()
            }
        };
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let edit = provider::request(&attempt.meta, &attempt.op, api_key, &body)?;
        // The header map is shared by every attempt: set or remove every provider header.
        self.set_http_request_header(":path", Some(&edit.path));
        self.set_http_request_header(":authority", Some(&edit.authority));
        self.set_http_request_header("authorization", edit.authorization.as_deref());
        self.set_http_request_header("x-api-key", None);
        self.set_http_request_header(contract::HEADER_CLUSTER, None);
        self.set_http_request_header("content-length", Some(&edit.body.len().to_string()));
        self.set_http_request_body(0, body_size, &edit.body);
        Ok(Action::Continue)
    }
}

impl HttpContext for ProviderHttp {
    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let status = self
            .get_http_response_header_bytes(":status")
            .and_then(|s| std::str::from_utf8(&s).ok().and_then(|s| s.parse::<u16>().ok()))
            .unwrap_or(0);
        if status < 400 {
            return Action::Continue;
        }
        if end_of_stream {
            self.rewrite_error(status, &[]);
            return Action::Continue;
        }
        // Errors are small: buffer the body and rewrite it into the client's format.
        self.error_status = Some(status);
        Action::Pause
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(status) = self.error_status else { return Action::Continue };
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_response_body(0, body_size).unwrap_or_default();
        let err = self.rewrite_error(status, &body);
        self.set_http_response_body(0, body_size, &err);
        Action::Continue
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match self.on_headers(end_of_stream) {
            Ok(a) => a,
            Err(e) => {
                warn!("provider filter: {e}");
                self.reply_error(&e)
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let result = self.on_body(body_size, end_of_stream);
        self.settle(result)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let result = self.finish();
        self.settle(result)
    }
}

impl ProviderHttp {
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
