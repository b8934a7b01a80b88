//! Where a host sends a request: the destination class of a host as written in a URL, without
//! DNS (the egress policy in `egress.rs` decides what each class may do). Every encoding an IPv4
//! address can take in a URL (`inet_aton` forms: `2852039166`, `0xA9FEA9FE`,
//! `0251.0376.0251.0376`, `169.254.43518`), IPv6 forms that embed an IPv4 address (mapped
//! `::ffff:a.b.c.d`, compatible, NAT64, 6to4), zone ids, well-known metadata and loopback names,
//! and names of wildcard-DNS services that spell an address (`169.254.169.254.nip.io`,
//! `10-0-0-1.sslip.io`).
//!
//! Standard library only: the fuzz crate includes this file as it is (target `egress_classifier`).

use std::net::{Ipv4Addr, Ipv6Addr};

/// What kind of destination a host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Public,
    /// 127.0.0.0/8, ::1, 0.0.0.0/8, ::, `localhost`.
    Loopback,
    /// RFC 1918, 100.64/10 (CGNAT), fc00::/7, `.internal`/`.local` names.
    Private,
    /// 169.254/16, fe80::/10, zone ids.
    LinkLocal,
    /// Cloud instance metadata (169.254.169.254, fd00:ec2::254, 100.100.100.200, metadata names).
    Metadata,
    /// Multicast, broadcast, reserved ranges: never a provider.
    Reserved,
}

/// A host as compared: brackets and a trailing dot removed, lower case.
pub fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase()
}

const METADATA_NAMES: &[&str] =
    &["metadata.google.internal", "metadata", "metadata.goog", "instance-data", "instance-data.ec2.internal"];
const LOOPBACK_SUFFIXES: &[&str] = &["localhost", "localtest.me", "lvh.me"];
const PRIVATE_SUFFIXES: &[&str] = &["internal", "local", "localdomain", "home.arpa", "lan", "intranet", "corp"];
/// Wildcard DNS services that answer a name with the address it spells, hex included.
const WILDCARD_DNS: &[&str] = &["nip.io", "sslip.io", "xip.io", "traefik.me", "nip.direct"];

/// The destination class of a host as written in a URL (brackets optional for IPv6).
pub fn classify(host: &str) -> Destination {
    let host = normalize_host(host);
    if let Some((addr, _zone)) = host.split_once('%') {
        // A zone id scopes an address to an interface: link-local by definition.
        return match addr.parse::<Ipv6Addr>() {
            Ok(v6) => worst(classify_v6(v6), Destination::LinkLocal),
            Err(_) => Destination::LinkLocal,
        };
    }
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return classify_v6(v6);
    }
    if let Some(v4) = parse_ipv4_loose(&host) {
        return classify_v4(v4);
    }
    if METADATA_NAMES.contains(&host.as_str()) {
        return Destination::Metadata;
    }
    let under = |suffix: &&str| host == *suffix || host.ends_with(&format!(".{suffix}"));
    if LOOPBACK_SUFFIXES.iter().any(under) {
        return Destination::Loopback;
    }
    let embedded = embedded_ipv4(&host).map_or(Destination::Public, classify_v4);
    if PRIVATE_SUFFIXES.iter().any(under) {
        return worst(embedded, Destination::Private);
    }
    embedded
}

/// The more restricted of two classes.
fn worst(a: Destination, b: Destination) -> Destination {
    let rank = |d| match d {
        Destination::Public => 0,
        Destination::Private => 1,
        Destination::Loopback => 2,
        Destination::LinkLocal => 3,
        Destination::Reserved => 4,
        Destination::Metadata => 5,
    };
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

pub fn classify_v4(ip: Ipv4Addr) -> Destination {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(169, 254, 170, 2) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        return Destination::Metadata;
    }
    match (a, b) {
        (0, _) | (127, _) => Destination::Loopback,
        (169, 254) => Destination::LinkLocal,
        (10, _) | (192, 168) => Destination::Private,
        (172, 16..=31) | (100, 64..=127) => Destination::Private,
        (224..=255, _) => Destination::Reserved,
        _ => Destination::Public,
    }
}

pub fn classify_v6(ip: Ipv6Addr) -> Destination {
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Destination::Metadata;
    }
    if ip.is_loopback() || ip.is_unspecified() {
        return Destination::Loopback;
    }
    let s = ip.segments();
    let low_v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible), 64:ff9b::a.b.c.d (NAT64),
    // ::ffff:0:a.b.c.d (translated)
    let embeds_low = s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0)
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || s[..6] == [0, 0, 0, 0, 0xffff, 0];
    if embeds_low {
        return classify_v4(low_v4);
    }
    if s[0] == 0x2002 {
        // 6to4: the IPv4 address is in bits 16..48.
        return classify_v4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    match s[0] {
        0xfe80..=0xfebf => Destination::LinkLocal,
        0xfc00..=0xfdff => Destination::Private,
        0xff00..=0xffff => Destination::Reserved,
        _ => Destination::Public,
    }
}

/// An IPv4 address as `inet_aton` reads it: one to four parts, each decimal, octal (leading 0)
/// or hex (0x); the last part fills the remaining bytes.
pub fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let nums = parts.iter().map(|p| parse_part(p)).collect::<Option<Vec<u64>>>()?;
    let (last, head) = nums.split_last()?;
    let mut value: u64 = 0;
    for (i, v) in head.iter().enumerate() {
        if *v > 255 {
            return None;
        }
        value |= v << (24 - 8 * i);
    }
    let last_bits = 32 - 8 * head.len();
    if *last >= 1u64 << last_bits {
        return None;
    }
    u32::try_from(value | last).ok().map(Ipv4Addr::from)
}

fn parse_part(p: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x") {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        // `0x` alone is 0 for inet_aton; an empty part is not a number.
        return (radix == 16).then_some(0);
    }
    if digits.len() > 16 || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// An IPv4 address spelled inside a name: four consecutive numeric labels (`10.0.0.1.example`),
/// a dashed label (`10-0-0-1.example`), or, under a wildcard-DNS service, a hex label.
fn embedded_ipv4(name: &str) -> Option<Ipv4Addr> {
    let labels: Vec<&str> = name.split('.').collect();
    let octet = |l: &str| -> Option<u8> { (!l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit())).then(|| l.parse().ok()).flatten() };
    let wildcard = WILDCARD_DNS.iter().any(|d| name.ends_with(&format!(".{d}")));
    let mut found: Option<Ipv4Addr> = None;
    let mut keep = |ip: Ipv4Addr| {
        if found.is_none_or(|f| worst(classify_v4(ip), classify_v4(f)) != classify_v4(f)) {
            found = Some(ip);
        }
    };
    for w in labels.windows(4) {
        if let [Some(a), Some(b), Some(c), Some(d)] = [octet(w[0]), octet(w[1]), octet(w[2]), octet(w[3])] {
            keep(Ipv4Addr::new(a, b, c, d));
        }
    }
    for label in &labels {
        // `10-0-0-1` or `app-10-0-0-1` (sslip.io also reads a dashed address after a prefix)
        let parts: Vec<&str> = label.split('-').collect();
        for w in parts.windows(4) {
            if let [Some(a), Some(b), Some(c), Some(d)] = [octet(w[0]), octet(w[1]), octet(w[2]), octet(w[3])] {
                keep(Ipv4Addr::new(a, b, c, d));
            }
        }
        if wildcard && label.len() == 8 {
            if let Ok(v) = u32::from_str_radix(label, 16) {
                keep(Ipv4Addr::from(v));
            }
        }
    }
    found
}
