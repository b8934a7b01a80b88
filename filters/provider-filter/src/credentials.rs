//! The provider filter's root context: fetches the credential document from the control plane
//! on a timer (conditional GET, so an unchanged document costs a 304), keeps it for the HTTP
//! contexts, and mirrors it in shared data so a re-created root context starts with it.

use std::rc::Rc;
use std::time::Duration;

use log::{info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use tollgate_types::config::CredentialsDoc;
use tollgate_types::contract;

use crate::{ProviderHttp, SharedCredentials};

const FAST_TICK: Duration = Duration::from_millis(200);
const SLOW_TICK: Duration = Duration::from_secs(1);
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct CredentialStore {
    credentials: SharedCredentials,
    token: Option<String>,
    in_flight: bool,
    slow: bool,
}

impl CredentialStore {
    pub(crate) fn new() -> Self {
        Self { credentials: SharedCredentials::default(), token: None, in_flight: false, slow: false }
    }

    fn version(&self) -> Option<String> {
        self.credentials.borrow().as_ref().map(|d| d.version.clone())
    }

    fn install(&mut self, doc: CredentialsDoc) {
        *self.credentials.borrow_mut() = Some(Rc::new(doc));
        if !self.slow {
            self.slow = true;
            self.set_tick_period(SLOW_TICK);
        }
    }

    fn load_shared(&mut self) {
        if let (Some(bytes), _) = self.get_shared_data(contract::SHARED_CREDENTIALS_KEY) {
            if let Ok(doc) = serde_json::from_slice::<CredentialsDoc>(&bytes) {
                self.install(doc);
            }
        }
    }
}

impl Context for CredentialStore {
    fn on_http_call_response(&mut self, _token_id: u32, _num_headers: usize, body_size: usize, _trailers: usize) {
        self.in_flight = false;
        let status = self.get_http_call_response_header(":status").unwrap_or_default();
        match status.as_str() {
            "200" => {
                let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
                match serde_json::from_slice::<CredentialsDoc>(&body) {
                    Ok(doc) => {
                        if self.version().as_deref() != Some(doc.version.as_str()) {
                            info!("provider filter: credentials version {} loaded ({} credentials)", doc.version, doc.credentials.len());
                        }
                        if let Err(e) = self.set_shared_data(contract::SHARED_CREDENTIALS_KEY, Some(&body), None) {
                            warn!("provider filter: could not share credentials: {e:?}");
                        }
                        self.install(doc);
                    }
                    Err(_) => warn!("provider filter: the control plane sent an invalid credential document"),
                }
            }
            "304" => {}
            other => warn!("provider filter: credential fetch answered status {other}; keeping the previous credentials"),
        }
    }
}

impl RootContext for CredentialStore {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.token = std::env::var(contract::DATA_PLANE_TOKEN_ENV).ok().filter(|t| !t.is_empty());
        if self.token.is_none() {
            warn!("provider filter: {} is not set; provider credentials cannot be fetched", contract::DATA_PLANE_TOKEN_ENV);
        }
        self.load_shared();
        self.set_tick_period(if self.slow { SLOW_TICK } else { FAST_TICK });
        true
    }

    fn on_tick(&mut self) {
        if self.in_flight {
            return;
        }
        let Some(token) = self.token.clone() else { return };
        let auth = format!("Bearer {token}");
        let version = self.version().map(|v| format!("\"{v}\""));
        let mut headers = vec![
            (":method", "GET"),
            (":path", contract::CREDENTIALS_PATH),
            (":authority", "tollgate-control-plane"),
            ("authorization", auth.as_str()),
        ];
        if let Some(v) = version.as_deref() {
            headers.push(("if-none-match", v));
        }
        match self.dispatch_http_call(contract::CONTROL_PLANE_HTTP_CLUSTER, headers, None, vec![], CALL_TIMEOUT) {
            Ok(_) => self.in_flight = true,
            Err(e) => warn!("provider filter: cannot reach the control plane for credentials: {e:?}"),
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProviderHttp::new(self.credentials.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
