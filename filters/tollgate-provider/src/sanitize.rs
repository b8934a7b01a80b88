//! What crosses the gateway between client and provider, as pure functions: which client
//! request headers reach a provider (an allow-list), how a provider's error message is redacted
//! before a client reads it, and how a provider's `Retry-After` is bounded.

use std::time::{Duration, SystemTime};

/// Client request headers forwarded to every provider, beside the headers the attempt's plan
/// sets itself (credential, `anthropic-version`, SigV4 headers, `accept`, `content-type`,
/// `content-length`: [`crate::plan::PROVIDER_HEADERS`]). Everything else is removed, so a client
/// can choose neither the provider account (`openai-organization`, `openai-project`), nor
/// provider features billed to it (`anthropic-beta`, `x-amzn-bedrock-*`), nor send cookies,
/// proxy credentials, forwarding chains or internal headers in any spelling.
///
/// - `user-agent`: SDK name and version, which providers use for client statistics;
/// - `x-request-id`: Envoy's request id (correlation with the provider's logs);
/// - `x-forwarded-proto`, `x-envoy-expected-rq-timeout-ms`, `x-envoy-attempt-count`: set by
///   Envoy itself for this hop (client `x-envoy-*` headers are stripped by the gateway filter);
/// - `x-stainless-*` (by prefix): the OpenAI and Anthropic SDKs' telemetry (language, OS, SDK
///   version, retry count): nine headers on every SDK request that choose nothing at the
///   provider; removing them would cost nine host calls per attempt.
pub const FORWARDED_HEADERS: &[&str] = &[
    "user-agent",
    "x-request-id",
    "x-forwarded-proto",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-attempt-count",
];
/// Prefix of the SDK telemetry headers forwarded by [`FORWARDED_HEADERS`].
pub const FORWARDED_PREFIX: &str = "x-stainless-";

/// Whether a client request header (lower-case name) may reach the provider as the client sent
/// it. `planned` is the header names the attempt's plan sets or removes itself.
pub fn forwarded(name: &str, planned: &[&str]) -> bool {
    planned.contains(&name) || forwarded_unplanned(name.as_bytes())
}

/// [`forwarded`] for a header no plan names: pseudo-headers, `host`, `content-length` and the
/// allow-list.
fn forwarded_unplanned(name: &[u8]) -> bool {
    name.first() == Some(&b':')
        || name == b"host"
        || name == b"content-length"
        || FORWARDED_HEADERS.iter().any(|f| f.as_bytes() == name)
        || name.starts_with(FORWARDED_PREFIX.as_bytes())
}

/// What an attempt finds in the request's headers (see [`survey`]): the headers to remove are
/// those not [`forwarded`], each named once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Present<'h> {
    /// The first value of each of the plan's header names, in the plan's order.
    pub planned: Vec<Option<&'h [u8]>>,
    pub path: Option<&'h [u8]>,
    pub authority: Option<&'h [u8]>,
    pub content_length: Option<&'h [u8]>,
    /// The headers to remove before the request goes to the provider (each name once).
    pub remove: Vec<&'h str>,
}

/// One pass over the request's headers (names as bytes, in order): which are not
/// [`forwarded`], and the first value of each planned name, `:path`, `:authority` and
/// `content-length`, with each name looked at once (the provider filter's attempt did a lookup over
/// every header for each of its dozen planned names: about 10,000 wasm instructions a
/// request).
pub fn survey<'h>(headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>, planned: &[&str]) -> Present<'h> {
    let mut out = Present { planned: vec![None; planned.len()], ..Present::default() };
    for (name, value) in headers {
        let first = |slot: &mut Option<&'h [u8]>| {
            if slot.is_none() {
                *slot = Some(value);
            }
        };
        match name {
            b":path" => first(&mut out.path),
            b":authority" => first(&mut out.authority),
            b"content-length" => first(&mut out.content_length),
            _ => {
                let mut is_planned = false;
                for (p, slot) in planned.iter().zip(out.planned.iter_mut()) {
                    if p.as_bytes() == name {
                        first(slot);
                        is_planned = true;
                    }
                }
                if is_planned || forwarded_unplanned(name) {
                    continue;
                }
                // Header names are ASCII (Envoy's codecs refuse others); one that is not
                // cannot be named to the host and is left.
                if let Ok(name) = std::str::from_utf8(name) {
                    if !out.remove.contains(&name) {
                        out.remove.push(name);
                    }
                }
            }
        }
    }
    out
}

/// The longest provider message passed on to the client (in bytes, cut at a char boundary).
pub const MAX_PROVIDER_MESSAGE: usize = 512;
/// What replaces a credential-looking run in a provider message.
pub const REDACTED: &str = "[redacted]";

/// A provider's error message as a client may read it: credential-looking runs replaced by
/// [`REDACTED`], control characters dropped, at most [`MAX_PROVIDER_MESSAGE`] bytes.
///
/// A run is a maximal sequence of token characters (`A-Z a-z 0-9 - _ + / = . ~`); it is
/// redacted when it
/// - starts with a key prefix: `sk-` (OpenAI, and Anthropic's `sk-ant-`), `tg-` (the gateway's
///   own virtual keys), `AKIA` / `ASIA` followed by upper-case letters and digits (AWS access key
///   ids), `Bearer`'s token (the run after the word `Bearer`), `eyJ` (a JWT);
/// - or is long and high-entropy: 20 or more characters with both letters and digits (base64,
///   hex and most generated secrets), which also catches provider keys quoted partly masked
///   (`sk-abc***wxyz` is cut at `*` and its prefix run still starts with `sk-`).
///
/// Ordinary words, model ids with few digits and numbers pass; a model id like
/// `anthropic.claude-3-5-haiku-20241022-v1` is long with letters and digits and is redacted too:
/// a message loses a little detail rather than ever carrying a secret.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_PROVIDER_MESSAGE));
    let mut run = String::new();
    let mut after_bearer = false;
    let flush = |run: &mut String, out: &mut String, after_bearer: &mut bool| {
        if run.is_empty() {
            return;
        }
        let secret = *after_bearer || credential_like(run);
        *after_bearer = run.eq_ignore_ascii_case("bearer");
        out.push_str(if secret { REDACTED } else { run });
        run.clear();
    };
    for c in message.chars() {
        if is_token_char(c) {
            run.push(c);
            continue;
        }
        flush(&mut run, &mut out, &mut after_bearer);
        if c.is_control() {
            out.push(' ');
        } else {
            out.push(c);
        }
        if !c.is_whitespace() && c != ':' {
            after_bearer = false;
        }
    }
    flush(&mut run, &mut out, &mut after_bearer);
    let trimmed = out.trim();
    let mut end = trimmed.len().min(MAX_PROVIDER_MESSAGE);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    trimmed[..end].to_owned()
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '=' | '.' | '~')
}

fn credential_like(run: &str) -> bool {
    let lower = run.to_ascii_lowercase();
    if lower.starts_with("sk-") || lower.starts_with("tg-") || run.starts_with("eyJ") {
        return true;
    }
    if (run.starts_with("AKIA") || run.starts_with("ASIA"))
        && run.len() >= 16
        && run[4..].chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return true;
    }
    let letters = run.chars().filter(char::is_ascii_alphabetic).count();
    let digits = run.chars().filter(char::is_ascii_digit).count();
    run.len() >= 20 && letters > 0 && digits > 0
}

/// The longest `Retry-After` a client is told (and the longest a provider's `Retry-After` is
/// worth retrying within one request is [`MAX_RETRY_WAIT`]).
pub const MAX_CLIENT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// A provider answer that asks to wait longer than this is not retried by the gateway: the
/// client gets it at once (with a capped `Retry-After`) instead of Envoy hammering a provider
/// that asked for a pause.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// A `Retry-After` value (delta-seconds or an HTTP-date, RFC 9110 §10.2.3) as a wait from
/// `now`; `None` when it is neither.
pub fn retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(1e9)));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `retry-after-ms` (OpenAI's milliseconds form) as a wait.
pub fn retry_after_ms(value: &[u8]) -> Option<Duration> {
    let ms = std::str::from_utf8(value).ok()?.trim().parse::<f64>().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64((ms / 1000.0).min(1e9)))
}

/// What the client is told for a provider's wait: whole seconds, at most
/// [`MAX_CLIENT_RETRY_AFTER`], rounded up.
pub fn client_retry_after(wait: Duration) -> String {
    let capped = wait.min(MAX_CLIENT_RETRY_AFTER);
    let secs = capped.as_secs() + u64::from(capped.subsec_nanos() > 0);
    secs.to_string()
}

#[cfg(test)]
#[path = "sanitize_tests.rs"]
mod tests;
