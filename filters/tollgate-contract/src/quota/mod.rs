//! Quotas as the data plane enforces them (issue 13), pure: which quotas apply to a request, the
//! shared-data slot each one counts in, and what a request holds of each until it ends.
//!
//! A quota is scope × metric × window × limit. The control plane pushes each Envoy its quotas
//! with the share of the limit that Envoy may admit (`limit`; the shares of all Envoys never add
//! up to more than the quota's limit). Each quota counts in one shared-data slot ([`Slot`]: its
//! window, what was used, leased and held), changed only with compare-and-swap, so the workers of one Envoy are
//! exact together; a slot whose window has passed starts again from zero (one slot a quota, so
//! shared data does not grow with time).
//!
//! This module: the definitions and what a request takes; `slot` the counts in shared data,
//! `holds` what a request holds until it ends, `rate_limits` the rate-limit headers.
//!
//! Requests count 1 when admitted. Tokens reserve a worst case when admitted (the input estimated
//! from the body, about 4 bytes a token, plus [`OUTPUT_RESERVATION`]) and settle when the request
//! ends: the reservation is given back and each attempt's real usage added. Concurrency counts 1
//! while the request runs.

use serde::{Deserialize, Serialize};

mod holds;
mod rate_limits;
mod slot;
pub mod index;
pub mod tally;
#[cfg(test)]
mod tests;

pub use holds::{Hold, Holds, Tagged};
pub use rate_limits::{civil_date, rfc3339, RateLimits, Standing};
pub use slot::{decode_slots, encode_slots, hold_epoch, Slot, SLOT_BYTES};

/// Shared-data key prefix of the quota slots.
pub const SLOT_PREFIX: &str = "tollgate.quota.";
/// Shared data: the quotas of providers ([`ProviderQuotasDoc`], JSON), published by the gateway
/// filter from its configuration for the provider filter (whose configuration lives in the
/// clusters: changing it would replace them and drain their connections).
pub const SHARED_PROVIDER_QUOTAS_KEY: &str = "tollgate.quota.providers.v1";

/// What the provider filter takes per attempt (see [`QuotaDoc::provider`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderQuotasDoc {
    pub quotas: Vec<QuotaDoc>,
    /// As `GatewayConfigDoc::quota_hold_seconds`.
    pub hold_seconds: u64,
}
/// Output tokens reserved for a request whose quota counts tokens (settled to the real count).
pub const OUTPUT_RESERVATION: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Requests,
    InputTokens,
    OutputTokens,
    TotalTokens,
    Concurrency,
    /// Cost in nano-dollars, from the price catalogue (a budget).
    CostUsd,
}

impl Metric {
    /// Reserved when admitted and settled to the real usage when the request ends.
    pub fn is_tokens(self) -> bool {
        matches!(self, Self::InputTokens | Self::OutputTokens | Self::TotalTokens | Self::CostUsd)
    }

    /// Grows with a request's output limit (a request can be lowered to fit it).
    pub fn counts_output(self) -> bool {
        matches!(self, Self::OutputTokens | Self::TotalTokens | Self::CostUsd)
    }

    /// What an attempt's usage adds to this metric.
    pub fn of_usage(self, input: u64, output: u64) -> u64 {
        match self {
            Self::InputTokens => input,
            Self::OutputTokens => output,
            Self::TotalTokens => input.saturating_add(output),
            Self::Requests | Self::Concurrency | Self::CostUsd => 0,
        }
    }

}

/// One quota as an Envoy receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaDoc {
    /// Public id (`quota_...`), named in refusals.
    pub id: String,
    pub metric: Metric,
    /// Window length in seconds; 0: no window (a lifetime total, or concurrency).
    #[serde(default)]
    pub window_seconds: u64,
    /// What may be admitted per window: the quota's limit when leased, else this Envoy's share.
    pub limit: u64,
    /// Spent from leases granted by the authority ([`crate::quota_lease`]); otherwise this
    /// Envoy admits `limit` alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease: bool,
    /// What this Envoy admits per window while the authority cannot be reached (its share of
    /// the limit); 0: nothing beyond its lease (the quota fails closed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub share: u64,
    /// Applies to this key only (`None`: every key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Applies to this model only (`None`: every model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Applies to these keys only, sorted (a user's or a team's keys, listed by the control
    /// plane; empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// Calendar windows (a day, week or month in a time zone): the starts of the current window
    /// and the next ones, Unix seconds, ascending (the control plane keeps them ahead). Each
    /// window's id is its start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub periods: Vec<u64>,
    /// A time-of-day schedule: from each Unix time on, this limit (ascending); before the first,
    /// and without any, `limit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<(u64, u64)>,
    /// The quotas of one scope share one shared-data value (its group's), so that a request
    /// takes all of them with one read and one compare-and-swap; without a group, its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Applies to the attempts sent to this provider only: taken per attempt by the provider
    /// filter (the gateway filter does not know which provider an attempt goes to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<crate::config::ProviderKind>,
    /// A request whose worst case no longer fits is admitted with its output limit lowered to
    /// what fits, down to this many tokens ([`fit_output`]), instead of being refused; 0: it
    /// is refused. Only a quota that counts output (output or total tokens, cost) has it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fit_output: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl QuotaDoc {
    pub fn applies(&self, key_id: &str, model: &str) -> bool {
        self.key_id.as_deref().is_none_or(|k| crate::bytes::same_str(k, key_id))
            && self.model.as_deref().is_none_or(|m| crate::bytes::same_str(m, model))
            && self.keys.as_ref().is_none_or(|ks| ks.binary_search_by(|k| k.as_str().cmp(key_id)).is_ok())
    }

    /// The window `now` (Unix seconds) falls in (0 without windows).
    pub fn window(&self, now: u64) -> u64 {
        match self.window_seconds {
            0 => 0,
            w => now / w,
        }
    }

    /// Seconds from `now` until the window ends (`None` without windows).
    pub fn resets_in(&self, now: u64) -> Option<u64> {
        match self.window_seconds {
            0 => None,
            w => Some(w - now % w),
        }
    }

    /// The period `now` falls in: the window's id (the same in every Envoy and in the control
    /// plane), the limit that holds in it, and when it ends. Concurrency has no window. Past the
    /// last calendar window pushed (the control plane gone for days), the last one goes on.
    pub fn period(&self, now: u64) -> Period {
        let limit = match self.limits.partition_point(|(from, _)| *from <= now) {
            0 => self.limit,
            i => self.limits.get(i - 1).map_or(self.limit, |l| l.1),
        };
        if self.metric == Metric::Concurrency {
            return Period { window: 0, limit, ends: None };
        }
        if !self.periods.is_empty() {
            let i = self.periods.partition_point(|start| *start <= now);
            let window = match i {
                0 => 0,
                i => self.periods.get(i - 1).copied().unwrap_or(0),
            };
            return Period { window, limit, ends: self.periods.get(i).copied() };
        }
        Period { window: self.window(now), limit, ends: self.resets_in(now).map(|s| now.saturating_add(s)) }
    }

    /// Until when (Unix seconds, exclusive) the period `now` falls in holds: its window and its
    /// limit (`u64::MAX`: for good).
    pub fn period_until(&self, now: u64) -> u64 {
        let next_limit = self.limits.get(self.limits.partition_point(|(from, _)| *from <= now)).map_or(u64::MAX, |l| l.0);
        self.period(now).ends.unwrap_or(u64::MAX).min(next_limit)
    }

    /// The `retry-after` of a refusal at `now`: the rest of the window (1 s for concurrency,
    /// 60 s without windows).
    pub fn retry_after(&self, now: u64) -> u64 {
        if self.metric == Metric::Concurrency {
            1
        } else {
            self.period(now).resets_in(now).unwrap_or(60)
        }
    }

    /// The shared-data value the quota counts in (an entry of its group's, or its own).
    pub fn slot_key(&self) -> String {
        slot_key(&self.id, self.group.as_deref())
    }

    /// The shared-data value of the next window's lease (the quota's own).
    pub fn next_key(&self) -> String {
        format!("{SLOT_PREFIX}{}.next", self.id)
    }
}

/// The shared-data value in which an Envoy notes when it last asked the authority for quota `id`
/// (Unix nanoseconds, 8 bytes little-endian).
pub fn asked_key(id: &str) -> String {
    [SLOT_PREFIX, id, ".asked"].concat()
}

/// The shared-data value a quota counts in: its group's, or its own.
pub fn slot_key(id: &str, group: Option<&str>) -> String {
    match group {
        Some(g) => [SLOT_PREFIX, "g.", g].concat(),
        None => [SLOT_PREFIX, id].concat(),
    }
}

/// Whether `key` is [`slot_key`]`(id, group)`, without making it.
pub fn is_slot_key(key: &str, id: &str, group: Option<&str>) -> bool {
    let Some(rest) = key.strip_prefix(SLOT_PREFIX) else { return false };
    match group {
        Some(g) => rest.strip_prefix("g.").is_some_and(|r| crate::bytes::same_str(r, g)),
        None => crate::bytes::same_str(rest, id),
    }
}

/// The period a request falls in (see [`QuotaDoc::period`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// The window's id: the same for every Envoy and the control plane at the same time.
    pub window: u64,
    /// What may be admitted in the window (this Envoy's share, or the whole limit under leases).
    pub limit: u64,
    /// Unix seconds at which the window ends (`None`: it never does).
    pub ends: Option<u64>,
}

impl Period {
    /// Seconds from `now` until the window ends.
    pub fn resets_in(&self, now: u64) -> Option<u64> {
        self.ends.map(|e| e.saturating_sub(now).max(1))
    }
}

/// What a request takes of a quota of `metric` when admitted: 1 request or concurrent slot, or
/// its [`reservation`] of tokens or nano-dollars.
pub fn amount(metric: Metric, body_len: u64, max_output: Option<u64>, price: Option<&crate::config::Price>) -> u64 {
    match metric {
        Metric::Requests | Metric::Concurrency => 1,
        m => reservation(m, body_len, max_output, price),
    }
}

/// Each quota's shared-data keys (its group's value, its next window's lease), made once per
/// configuration: formatting them per request costs more than the rest of admission.
pub fn slot_keys(quotas: &[QuotaDoc]) -> Vec<(String, String)> {
    quotas.iter().map(|q| (q.slot_key(), q.next_key())).collect()
}

/// Tokens (or, for a budget, nano-dollars at the model's highest deployment price) reserved
/// for a request of `body_len` bytes that may produce `max_output` tokens (the client's own
/// limit; [`OUTPUT_RESERVATION`] when it set none).
pub fn reservation(metric: Metric, body_len: u64, max_output: Option<u64>, price: Option<&crate::config::Price>) -> u64 {
    let input = body_len.div_ceil(4);
    let output = max_output.unwrap_or(OUTPUT_RESERVATION);
    match metric {
        Metric::InputTokens => input,
        Metric::OutputTokens => output,
        Metric::TotalTokens => input.saturating_add(output),
        Metric::CostUsd => price.map_or(0, |p| p.cost_nanos(input, output, 0, 0)),
        Metric::Requests | Metric::Concurrency => 0,
    }
}

/// The largest output limit from `floor` up to (not including) `current` at which a request of
/// `body_len` bytes reserves at most `room` of a quota of `metric` (see [`reservation`]), or
/// `None` when not even `floor` fits (or the metric does not count output).
pub fn fit_output(metric: Metric, body_len: u64, current: u64, floor: u64, room: u64, price: Option<&crate::config::Price>) -> Option<u64> {
    if !metric.counts_output() || floor == 0 || floor >= current {
        return None;
    }
    let fits = |out: u64| reservation(metric, body_len, Some(out), price) <= room;
    if !fits(floor) {
        return None;
    }
    // The reservation grows with the output: the largest that fits, between floor and current.
    let (mut lo, mut hi) = (floor, current);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// The output limit a request body sets, in whichever client API's words: `max_tokens`
/// (OpenAI chat, Anthropic Messages, Anthropic-on-Bedrock), `max_completion_tokens` (OpenAI
/// chat), `max_output_tokens` (OpenAI Responses) or `inferenceConfig.maxTokens` (Bedrock
/// Converse). `None` when it sets none (or the body is not an object).
pub fn max_output(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Inference {
        #[serde(default, rename = "maxTokens")]
        max_tokens: Option<u64>,
    }
    #[derive(Deserialize)]
    struct Limits {
        #[serde(default)]
        max_tokens: Option<u64>,
        #[serde(default)]
        max_completion_tokens: Option<u64>,
        #[serde(default)]
        max_output_tokens: Option<u64>,
        #[serde(default, rename = "inferenceConfig")]
        inference: Option<Inference>,
    }
    // (serde would fill the struct from a JSON array too)
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let l: Limits = serde_json::from_slice(body).ok()?;
    l.max_completion_tokens.or(l.max_tokens).or(l.max_output_tokens).or(l.inference.and_then(|i| i.max_tokens))
}
