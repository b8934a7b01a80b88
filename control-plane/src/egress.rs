//! The egress policy: which provider base URLs the gateway may call. One classifier for every
//! way a URL enters (the config file, stored rows, the admin API), so that a provider URL
//! cannot make Envoy call the cloud metadata service, the loopback interface or the gateway's
//! own ports (SSRF; SECURITY-CATALOGUE B-27).
//!
//! The host is classified as written, without DNS: every encoding an IPv4 address can take in a
//! URL (`inet_aton` forms: `2852039166`, `0xA9FEA9FE`, `0251.0376.0251.0376`, `169.254.43518`),
//! IPv6 forms that embed an IPv4 address (mapped `::ffff:a.b.c.d`, compatible, NAT64, 6to4),
//! zone ids, well-known metadata and loopback names, and names of wildcard-DNS services that
//! spell an address (`169.254.169.254.nip.io`, `10-0-0-1.sslip.io`). A name that resolves to an
//! internal address through DNS of its own (or DNS rebinding) is not caught here.

pub use crate::destination::{classify, normalize_host, Destination};
use crate::model::EgressSettings;
use crate::upstream::UpstreamUrl;

/// Why a base URL is refused. The messages name the class of the destination, never the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("points at a cloud metadata address; refused (list the host under settings.egress.allow_hosts to allow it)")]
    Metadata,
    #[error("points at a link-local address; refused (list the host under settings.egress.allow_hosts to allow it)")]
    LinkLocal,
    #[error("points at a reserved or multicast address; refused")]
    Reserved,
    #[error("points at a loopback address; refused unless settings.egress.allow_loopback is true")]
    Loopback,
    #[error("points at a private address; refused unless settings.egress.allow_private is true")]
    Private,
    #[error("points at one of the gateway's own ports; refused (list host:port under settings.egress.allow_hosts to allow it)")]
    OwnPort,
}

/// The policy for one configuration: the operator's settings and the ports of this gateway
/// (the control plane's listeners, Envoy's listener and admin).
#[derive(Debug, Clone, Copy)]
pub struct Egress<'a> {
    pub settings: &'a EgressSettings,
    pub own_ports: &'a [u16],
}

#[cfg(test)]
static DEFAULT_SETTINGS: EgressSettings = EgressSettings { allow_loopback: false, allow_private: false, allow_hosts: Vec::new() };

#[cfg(test)]
impl Egress<'static> {
    /// The default settings, with no own ports.
    pub const DEFAULT: Self = Egress { settings: &DEFAULT_SETTINGS, own_ports: &[] };
}

impl Egress<'_> {
    pub fn check(&self, url: &UpstreamUrl) -> Result<(), EgressError> {
        let host = normalize_host(&url.host);
        let allowed = self.settings.allow_hosts.iter().filter_map(|e| allow_entry(e)).any(|(h, port)| {
            h == host && port.is_none_or(|p| p == url.port)
        });
        if allowed {
            return Ok(());
        }
        let class = classify(&url.host);
        if class == Destination::Loopback && self.own_ports.contains(&url.port) {
            return Err(EgressError::OwnPort);
        }
        match class {
            Destination::Public => Ok(()),
            Destination::Loopback if self.settings.allow_loopback => Ok(()),
            Destination::Private if self.settings.allow_private => Ok(()),
            Destination::Loopback => Err(EgressError::Loopback),
            Destination::Private => Err(EgressError::Private),
            Destination::LinkLocal => Err(EgressError::LinkLocal),
            Destination::Metadata => Err(EgressError::Metadata),
            Destination::Reserved => Err(EgressError::Reserved),
        }
    }
}

/// An `allow_hosts` entry: `host`, `host:port`, `[v6]` or `[v6]:port`; `None` when it is not
/// one (an empty host or a bad port).
pub fn allow_entry(entry: &str) -> Option<(String, Option<u16>)> {
    let e = entry.trim().to_ascii_lowercase();
    let (host, port) = match e.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((h, "")) => (h, None),
        Some((h, tail)) => (h, Some(tail.strip_prefix(':')?)),
        None => match e.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            _ => (e.as_str(), None),
        },
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let host = normalize_host(host);
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
