//! Provider base URLs, parsed once into what Envoy needs: scheme, host, port, path prefix.

use serde::Serialize;

/// Why a base URL cannot be used. The messages never repeat the URL: it might carry user
/// information (`user:password@`), which is refused, not echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("must start with http:// or https://")]
    Scheme,
    #[error("has no valid host (user information is not allowed)")]
    Authority,
    #[error("has a port that is not a number from 0 to 65535")]
    Port,
    #[error("has no host")]
    NoHost,
    #[error("has a host that is neither a DNS name (letters, digits, '-', '.', '_') nor an IP address")]
    Host,
    #[error("has a path with a query, a fragment, a space or a control character")]
    Path,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub base_path: String,
}

impl UpstreamUrl {
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(UrlError::Scheme);
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(UrlError::Authority);
        }
        let default_port = if tls { 443 } else { 80 };
        let port = |p: &str| p.parse::<u16>().map_err(|_| UrlError::Port);
        let (host, port) = match authority.strip_prefix('[') {
            // [v6] or [v6]:port
            Some(rest) => match rest.split_once(']') {
                Some((h, "")) => (h.to_owned(), default_port),
                Some((h, tail)) => (h.to_owned(), port(tail.strip_prefix(':').ok_or(UrlError::Authority)?)?),
                None => return Err(UrlError::Authority),
            },
            None => match authority.split_once(':') {
                Some((_, p)) if p.contains(':') => return Err(UrlError::Authority), // IPv6 needs brackets
                Some((h, p)) => (h.to_owned(), port(p)?),
                None => (authority.to_owned(), default_port),
            },
        };
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        if !valid_host(&host) {
            return Err(UrlError::Host);
        }
        if path.bytes().any(|b| b == b'?' || b == b'#' || b <= b' ' || b == 0x7f) {
            return Err(UrlError::Path);
        }
        Ok(Self { tls, host, port, base_path: path.trim_end_matches('/').to_owned() })
    }

    /// `host[:port]` as sent in `:authority` (port omitted when it is the scheme's default).
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A DNS name (letters, digits, `-`, `.`, `_`), an IPv4 address, or an IPv6 address (written
/// in brackets in the URL) with an optional zone id (`fe80::1%eth0`, `%25` as RFC 6874 writes it).
fn valid_host(host: &str) -> bool {
    let name_char = |b: u8| b.is_ascii_alphanumeric() || b"-._".contains(&b);
    if !host.contains(':') {
        return host.bytes().all(name_char);
    }
    let (addr, zone) = match host.split_once('%') {
        Some((a, z)) => (a, Some(z.strip_prefix("25").filter(|z| !z.is_empty()).unwrap_or(z))),
        None => (host, None),
    };
    addr.parse::<std::net::Ipv6Addr>().is_ok() && zone.is_none_or(|z| !z.is_empty() && z.bytes().all(name_char))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = UpstreamUrl::parse("https://api.openai.com/v1/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.base_path.as_str()), (true, "api.openai.com", 443, "/v1"));
        assert_eq!(u.authority(), "api.openai.com");
        let u = UpstreamUrl::parse("http://127.0.0.1:8081/demo/v1").unwrap();
        assert_eq!((u.tls, u.port, u.base_path.as_str()), (false, 8081, "/demo/v1"));
        assert_eq!(u.authority(), "127.0.0.1:8081");
        assert!(UpstreamUrl::parse("ftp://x").is_err());
        assert!(UpstreamUrl::parse("http://").is_err());
        assert!(UpstreamUrl::parse("http://h:notaport/").is_err());
        assert_eq!(UpstreamUrl::parse("http://user:pw@h/"), Err(UrlError::Authority));
        let u = UpstreamUrl::parse("http://[::ffff:169.254.169.254]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.authority()), ("::ffff:169.254.169.254", 80, "[::ffff:169.254.169.254]".to_owned()));
        let u = UpstreamUrl::parse("https://[fd00::1]:8443").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fd00::1", 8443));
        assert_eq!(UpstreamUrl::parse("http://fd00::1/"), Err(UrlError::Authority));
        assert_eq!(UpstreamUrl::parse("http://[fd00::1/"), Err(UrlError::Authority));
        assert_eq!(UpstreamUrl::parse("http://[fd00::1]x/"), Err(UrlError::Authority));
        // Hosts and paths a URL cannot mean (catalogue B-29; what the fuzzer found first).
        for bad in ["http://\0\0[::1]:99/x", "http://h\0st/", "http://httpbin.org#/v1", "https://a b/",
                    "http://[::1 ]/", "http://[not:v6]/", "http://[fe80::1%]/", "http://[::1]]/"] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(UpstreamUrl::parse("https://us-east-1.evil#.amazonaws.com/"), Err(UrlError::Host));
        assert_eq!(UpstreamUrl::parse("https://good.example/v1?api-version=1"), Err(UrlError::Path));
        assert_eq!(UpstreamUrl::parse("https://good.example/v1 x"), Err(UrlError::Path));
        assert_eq!(UpstreamUrl::parse("http://[fe80::1%25eth0]:8080/").unwrap().host, "fe80::1%25eth0");
        assert_eq!(UpstreamUrl::parse("http://my_host.internal:1/").unwrap().host, "my_host.internal");
        // the reason never repeats the URL (it may hold a password)
        assert!(!UrlError::Authority.to_string().contains("pw"));
    }
}
