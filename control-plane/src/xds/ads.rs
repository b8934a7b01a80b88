//! The ADS (state-of-the-world) protocol as a synchronous state machine: requests and snapshot
//! changes in, responses and ACK/NACK events out. No I/O, so every rule is unit-tested.
//!
//! Rules: a request whose `response_nonce` is not the last nonce sent for its type is stale and
//! ignored; a request with `error_detail` is a NACK (logged; the same version is not re-sent, so
//! Envoy keeps its last good config); a response is sent when a type has never been sent, when
//! its subscription changes, or when the snapshot's version for it differs from what was sent.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::snapshot::{Snapshot, CLUSTER_TYPE, ECDS_TYPE, LISTENER_TYPE, ROUTE_TYPE};

/// Order in which changed types are pushed: clusters before the listener and routes that use
/// them, and before the filter config that routes to them.
const PUSH_ORDER: [&str; 4] = [CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE, ECDS_TYPE];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ack { type_url: String, version: String },
    Nack { type_url: String, version: String, message: String },
    Stale { type_url: String },
    UnknownType { type_url: String },
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub responses: Vec<DiscoveryResponse>,
    pub events: Vec<Event>,
}

#[derive(Debug, Default)]
struct TypeState {
    /// `None`: wildcard (every resource of the type).
    names: Option<BTreeSet<String>>,
    sent_version: Option<String>,
    sent_nonce: Option<String>,
}

#[derive(Debug, Default)]
pub struct AdsState {
    types: BTreeMap<String, TypeState>,
    nonce: u64,
}

fn is_wildcard(type_url: &str, names: &[String]) -> bool {
    (type_url == LISTENER_TYPE || type_url == CLUSTER_TYPE) && names.is_empty() || names.iter().any(|n| n == "*")
}

impl AdsState {
    pub fn on_request(&mut self, req: &DiscoveryRequest, snap: &Snapshot) -> Outcome {
        let mut out = Outcome::default();
        let type_url = req.type_url.clone();
        if snap.get(&type_url).is_none() {
            out.events.push(Event::UnknownType { type_url });
            return out;
        }
        let state = self.types.entry(type_url.clone()).or_default();
        if !req.response_nonce.is_empty() && state.sent_nonce.as_deref() != Some(req.response_nonce.as_str()) {
            out.events.push(Event::Stale { type_url });
            return out;
        }
        let names = if is_wildcard(&type_url, &req.resource_names) {
            None
        } else {
            Some(req.resource_names.iter().cloned().collect::<BTreeSet<_>>())
        };
        let subscription_changed = state.names != names;
        state.names = names;
        if !req.response_nonce.is_empty() {
            match &req.error_detail {
                Some(status) => out.events.push(Event::Nack {
                    type_url: type_url.clone(),
                    version: state.sent_version.clone().unwrap_or_default(),
                    message: status.message.clone(),
                }),
                None => out.events.push(Event::Ack { type_url: type_url.clone(), version: req.version_info.clone() }),
            }
        }
        let current = snap.get(&type_url).map(|r| r.version.as_str());
        let must_send = state.sent_version.is_none() || subscription_changed || state.sent_version.as_deref() != current;
        // After a NACK of the current version, wait for a new snapshot (unless the subscription changed).
        let nacked_current = req.error_detail.is_some() && state.sent_version.as_deref() == current;
        if must_send && (subscription_changed || !nacked_current) {
            if let Some(resp) = self.respond(&type_url, snap) {
                out.responses.push(resp);
            }
        }
        out
    }

    /// A new snapshot: push every subscribed type whose version changed.
    pub fn on_snapshot(&mut self, snap: &Snapshot) -> Outcome {
        let mut out = Outcome::default();
        for type_url in PUSH_ORDER {
            let Some(state) = self.types.get(type_url) else { continue };
            let Some(sent) = &state.sent_version else { continue };
            if snap.get(type_url).map(|r| &r.version) != Some(sent) {
                if let Some(resp) = self.respond(type_url, snap) {
                    out.responses.push(resp);
                }
            }
        }
        out
    }

    fn respond(&mut self, type_url: &str, snap: &Snapshot) -> Option<DiscoveryResponse> {
        let res = snap.get(type_url)?;
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let state = self.types.get_mut(type_url)?;
        let resources = res
            .items
            .iter()
            .filter(|(name, _)| state.names.as_ref().is_none_or(|n| n.contains(*name)))
            .map(|(_, any)| any.clone())
            .collect();
        state.sent_version = Some(res.version.clone());
        state.sent_nonce = Some(nonce.clone());
        Some(DiscoveryResponse {
            version_info: res.version.clone(),
            resources,
            type_url: type_url.to_owned(),
            nonce,
            ..Default::default()
        })
    }
}

#[cfg(test)]
#[path = "ads_tests.rs"]
mod tests;
