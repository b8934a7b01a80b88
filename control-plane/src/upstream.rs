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
        // the reason never repeats the URL (it may hold a password)
        assert!(!UrlError::Authority.to_string().contains("pw"));
    }
}
