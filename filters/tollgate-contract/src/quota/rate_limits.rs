//! The rate-limit headers: the standing of a request's tightest quotas, carried as numbers and
//! written in the client's style (OpenAI's or Anthropic's).

use serde::{Deserialize, Serialize};

use super::holds::{take, take_u64};

/// What the headers say of one quota: limit, remaining, seconds until its window resets.
pub type Standing = (u64, u64, Option<u64>);

/// The standing of the tightest request and token quotas of a request, for its rate-limit
/// headers: carried as numbers in the request state (the gateway filter formats nothing) and
/// written by the provider filter in the client's style ([`RateLimits::each_header`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub requests: Option<Standing>,
    pub tokens: Option<Standing>,
    /// `Some(now)`: Anthropic's headers (`/v1/messages`), resets as times from `now`.
    pub anthropic_at: Option<u64>,
}

impl RateLimits {
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        let reset = |s: &Option<Standing>| s.is_some_and(|s| s.2.is_some());
        // At most a flags byte and seven numbers, written in one go.
        let mut buf = [0u8; 57];
        buf[0] = bit(self.requests.is_some(), 1) | bit(self.tokens.is_some(), 2) | bit(self.anthropic_at.is_some(), 4) | bit(reset(&self.requests), 8) | bit(reset(&self.tokens), 16);
        let mut n = 1;
        let mut put = |v: u64| {
            if let Some(slot) = buf.get_mut(n..n + 8) {
                slot.copy_from_slice(&v.to_le_bytes());
                n += 8;
            }
        };
        for (l, r, s) in [self.requests, self.tokens].into_iter().flatten() {
            put(l);
            put(r);
            if let Some(s) = s {
                put(s);
            }
        }
        if let Some(at) = self.anthropic_at {
            put(at);
        }
        out.extend_from_slice(buf.get(..n).unwrap_or_default());
    }

    pub(super) fn decode(b: &mut &[u8]) -> Option<Self> {
        let flags = take(b, 1)?[0];
        if flags & !31 != 0 {
            return None;
        }
        let mut standing = |present: u8, reset: u8| -> Option<Option<Standing>> {
            if flags & present == 0 {
                return Some(None);
            }
            let (l, r) = (take_u64(b)?, take_u64(b)?);
            let s = if flags & reset != 0 { Some(take_u64(b)?) } else { None };
            Some(Some((l, r, s)))
        };
        let requests = standing(1, 8)?;
        let tokens = standing(2, 16)?;
        let anthropic_at = if flags & 4 != 0 { Some(take_u64(b)?) } else { None };
        Some(Self { requests, tokens, anthropic_at })
    }

    /// Whether the answers of a provider of `kind` may carry headers of the names these are
    /// written under (OpenAI's `x-ratelimit-*`: OpenAI, Azure OpenAI and any OpenAI-compatible
    /// server; Anthropic's `anthropic-ratelimit-*`: Anthropic): only then must Tollgate's
    /// replace the provider's. Replacing looks for the name's other values first (about 750 of
    /// Envoy's instructions a header more than adding it by `bench/crossing_costs.py`, on a
    /// larger header map; 1,000 to 2,000 for the six on the Bedrock bench target); Bedrock's
    /// and SageMaker's answers carry neither family (theirs are `x-amzn-*`), Anthropic's not
    /// OpenAI's, so for them the headers are added, with the same result.
    pub fn provider_may_send(&self, kind: crate::config::ProviderKind) -> bool {
        use crate::config::ProviderKind;
        match kind {
            ProviderKind::Bedrock | ProviderKind::Sagemaker => false,
            ProviderKind::Anthropic => self.anthropic_at.is_some(),
            ProviderKind::Openai | ProviderKind::Azure | ProviderKind::Unknown => true,
        }
    }

    /// Calls `f` with each rate-limit header, in the client's style: OpenAI's
    /// (`x-ratelimit-limit-requests`, `-remaining-requests`, `-reset-requests` as `"12s"`, and
    /// the `-tokens` ones), or Anthropic's (`anthropic-ratelimit-requests-limit`, `-remaining`,
    /// `-reset` as an RFC 3339 time...). Values are written in a stack buffer: no allocation.
    pub fn each_header<E>(&self, mut f: impl FnMut(&'static str, &[u8]) -> Result<(), E>) -> Result<(), E> {
        const OPENAI: [[&str; 3]; 2] = [
            ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"],
            ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"],
        ];
        const ANTHROPIC: [[&str; 3]; 2] = [
            ["anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"],
            ["anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"],
        ];
        let names = if self.anthropic_at.is_some() { &ANTHROPIC } else { &OPENAI };
        let mut buf = [0u8; 24];
        for (names, v) in names.iter().zip([self.requests, self.tokens]) {
            let Some((limit, remaining, reset)) = v else { continue };
            f(names[0], crate::bytes::decimal(limit, &mut buf))?;
            f(names[1], crate::bytes::decimal(remaining, &mut buf))?;
            if let Some(s) = reset {
                match self.anthropic_at {
                    Some(now) => f(names[2], rfc3339(now.saturating_add(s)).as_bytes())?,
                    None => {
                        // The digits end just before the `s` at the buffer's end.
                        let (digits, unit) = buf.split_at_mut(23);
                        let n = crate::bytes::decimal(s, digits).len();
                        if let Some(u) = unit.first_mut() {
                            *u = b's';
                        }
                        f(names[2], buf.get(23 - n..).unwrap_or_default())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The headers as pairs (the provider filter writes them with [`RateLimits::each_header`]).
    #[cfg(test)]
    pub(super) fn headers(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let _ = self.each_header(|n, v| {
            out.push((n.to_owned(), String::from_utf8_lossy(v).into_owned()));
            Ok::<(), ()>(())
        });
        out
    }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC; no time-zone data needed).
pub fn rfc3339(unix: u64) -> String {
    let (y, m, d) = civil_date(unix / 86_400);
    let secs = unix % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's civil-from-days).
pub fn civil_date(days: u64) -> (i64, i64, i64) {
    let days = i64::try_from(days).unwrap_or(0);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
