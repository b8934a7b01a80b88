//! Small codecs: the gateway config schema, the request-state record, the proxy-wasm header
//! map and the control plane's upstream URL parser.

use tollgate_contract::config::GatewayConfig;
use tollgate_contract::state::RequestState;

/// The control plane's parser, compiled in from its source file (the control plane is a binary
/// crate with no library to depend on; the file needs only serde and thiserror).
#[path = "../../control-plane/src/upstream.rs"]
#[allow(dead_code)]
mod upstream;

/// The control plane's destination classifier (standard library only), compiled in the same way.
#[path = "../../control-plane/src/destination.rs"]
#[allow(dead_code)]
mod destination;

/// The config the control plane sends each filter: refused cleanly or compiled; every model a
/// compiled config lists resolves by name.
pub fn gateway_config(data: &[u8]) {
    if let Ok(cfg) = GatewayConfig::parse(data) {
        for m in &cfg.models {
            assert!(cfg.model(&m.name).is_some(), "model {} does not resolve", m.name);
        }
    }
}

/// The key table's wire forms: a shard (for the shard its first byte names), the manifest and
/// the update message. Each is refused cleanly or decodes; every record a decoded shard holds is
/// found again by its digest, and a decoded manifest encodes back to the same bytes.
pub fn key_shard(data: &[u8]) {
    use tollgate_contract::keytable::{Manifest, Shard, Update};
    let (index, bytes) = crate::selector(data);
    if let Ok(shard) = Shard::decode(bytes, index) {
        let records = bytes.get(tollgate_contract::keytable::shard::HEADER_LEN..).unwrap_or_default();
        for rec in records.chunks_exact(tollgate_contract::keytable::shard::RECORD_LEN).take(shard.len()) {
            let digest: [u8; 32] = rec[..32].try_into().expect("32 bytes");
            assert!(shard.lookup(&digest).is_some(), "a record of a decoded shard is not found");
        }
    }
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode(), data, "a decoded manifest does not encode back");
    }
    if let Ok(u) = Update::decode(data) {
        assert!(u.shards.len() <= tollgate_contract::keytable::SHARDS);
    }
}

/// The gateway→provider request-state record: decoded records encode back to the same record.
pub fn request_state(data: &[u8]) {
    if let Ok(state) = RequestState::decode(data) {
        let bytes = state.encode().expect("a decoded state encodes");
        assert_eq!(RequestState::decode(&bytes).expect("re-encoded state decodes"), state);
    }
}

/// The proxy-wasm header-map serialisation as the filters read it (`tollgate_wasm::Headers`, in
/// place): a map that parses has at most a pair per 8 bytes, and re-serialised (when its names
/// and values are text, as `serialize_map` takes) parses to the same pairs.
pub fn wasm_header_map(data: &[u8]) {
    let Some(map) = tollgate_wasm::Headers::parse(data.to_vec()) else { return };
    assert!(map.len() <= data.len() / 8, "{} pairs from {} bytes", map.len(), data.len());
    let text: Option<Vec<(&str, &str)>> =
        map.iter_bytes().map(|(n, v)| Some((std::str::from_utf8(n).ok()?, std::str::from_utf8(v).ok()?))).collect();
    if let Some(text) = text {
        let again = tollgate_wasm::Headers::parse(tollgate_wasm::serialize_map(&text)).expect("re-serialised map");
        assert!(again.iter_bytes().eq(map.iter_bytes()), "header map round trip");
    }
}

/// Provider base URLs: a parsed URL has a host of DNS-name characters or an IPv6 address (never
/// NULs, spaces, brackets or `#`: the fuzzer's first finds, fuzz/corpus/upstream_url/crash-*),
/// and written back from its parts it parses to the same parts.
pub fn upstream_url(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let host_chars = |h: &str| {
        h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            || h.split('%').next().is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    };
    if let Ok(u) = upstream::UpstreamUrl::parse(text) {
        assert!(!u.host.is_empty());
        assert!(host_chars(&u.host), "host {:?} from {text:?}", u.host);
        assert!(!u.base_path.contains(['?', '#']), "path {:?} from {text:?}", u.base_path);
        let scheme = if u.tls { "https" } else { "http" };
        let again = format!("{scheme}://{}{}", u.authority(), u.base_path);
        let back = upstream::UpstreamUrl::parse(&again).unwrap_or_else(|e| panic!("{again:?} does not parse back: {e}"));
        assert_eq!(back, u, "{again:?}");
    }
}

/// The egress classifier (issue 9, finding 6). Two properties, chosen by the first byte:
/// - even: the rest is a URL; when it parses, its host is classified, and a host that is an IP
///   address in any standard form is never `Public` when the standard library calls it
///   loopback, unspecified, link-local, private or multicast (IPv4 inside IPv6 included);
/// - odd: the next four bytes are an IPv4 address; every way a URL can spell it (dotted,
///   one 32-bit number in decimal, hex or octal, `a.b.c16`, `a.b24`, octal and hex parts,
///   IPv4-mapped and NAT64 IPv6, a wildcard-DNS name) is classified as the dotted form.
pub fn egress_classifier(data: &[u8]) {
    use destination::{classify, Destination};
    use std::net::{IpAddr, Ipv4Addr};
    let (sel, rest) = crate::selector(data);
    if sel % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else { return };
        let Ok(u) = upstream::UpstreamUrl::parse(text) else { return };
        let class = classify(&u.host);
        let internal_v4 = |v4: Ipv4Addr| {
            v4.is_loopback() || v4.is_unspecified() || v4.is_link_local() || v4.is_private() || v4.is_multicast()
        };
        let internal = match u.host.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => internal_v4(v4),
            Ok(IpAddr::V6(v6)) => {
                v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || v6.to_ipv4_mapped().is_some_and(internal_v4)
                    || (v6.segments()[0] & 0xffc0) == 0xfe80 || (v6.segments()[0] & 0xfe00) == 0xfc00
            }
            Err(_) => false,
        };
        assert!(!(internal && class == Destination::Public), "{:?} classified public", u.host);
        return;
    }
    let Some(&[a, b, c, d]) = rest.get(..4) else { return };
    let ip = Ipv4Addr::new(a, b, c, d);
    let n = u32::from(ip);
    let want = classify(&ip.to_string());
    let v6 = ip.to_ipv6_mapped();
    let forms = [
        n.to_string(),
        format!("0x{n:x}"),
        format!("0{n:o}"),
        format!("{a}.{b}.{}", u32::from(c) << 8 | u32::from(d)),
        format!("{a}.{}", u32::from(b) << 16 | u32::from(c) << 8 | u32::from(d)),
        format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
        format!("0x{a:x}.0x{b:x}.{c}.0{d:o}"),
        format!("[{v6}]"),
        format!("::ffff:{ip}"),
        format!("64:ff9b::{ip}"),
        format!("{ip}.nip.io"),
        format!("{a}-{b}-{c}-{d}.sslip.io"),
        format!("{ip}."),
    ];
    for form in forms {
        let got = classify(&form);
        assert_eq!(got, want, "{form:?} for {ip}");
    }
}
