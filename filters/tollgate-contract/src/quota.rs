//! Quotas as the data plane enforces them (issue 13), pure: which quotas apply to a request, the
//! shared-data slot each one counts in, and what a request holds of each until it ends.
//!
//! A quota is scope × metric × window × limit. The control plane pushes each Envoy its quotas
//! with the share of the limit that Envoy may admit (`limit`; the shares of all Envoys never add
//! up to more than the quota's limit). Each quota counts in one shared-data slot of 16 bytes,
//! `(window index, used)`, changed only with compare-and-swap, so the workers of one Envoy are
//! exact together; a slot whose window has passed starts again from zero (one slot a quota, so
//! shared data does not grow with time).
//!
//! Requests count 1 when admitted. Tokens reserve a worst case when admitted (the input estimated
//! from the body, about 4 bytes a token, plus [`OUTPUT_RESERVATION`]) and settle when the request
//! ends: the reservation is given back and each attempt's real usage added. Concurrency counts 1
//! while the request runs.

use serde::{Deserialize, Serialize};

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
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl QuotaDoc {
    pub fn applies(&self, key_id: &str, model: &str) -> bool {
        self.key_id.as_deref().is_none_or(|k| k == key_id)
            && self.model.as_deref().is_none_or(|m| m == model)
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

/// The shared-data value a quota counts in: its group's, or its own.
pub fn slot_key(id: &str, group: Option<&str>) -> String {
    match group {
        Some(g) => [SLOT_PREFIX, "g.", g].concat(),
        None => [SLOT_PREFIX, id].concat(),
    }
}

/// The slots of one shared-data value, by quota id: `[id length (1 byte), id, slot (32 bytes)]`
/// for each quota of the group (one for a quota alone).
pub fn decode_slots(bytes: &[u8]) -> Option<Vec<(String, Slot)>> {
    let mut b = bytes;
    let mut out = Vec::new();
    while let Some((&n, rest)) = b.split_first() {
        let n = usize::from(n);
        let id = std::str::from_utf8(rest.get(..n)?).ok()?.to_owned();
        let slot = Slot::decode(rest.get(n..n + SLOT_BYTES)?)?;
        out.push((id, slot));
        b = rest.get(n + SLOT_BYTES..)?;
    }
    Some(out)
}

/// The inverse of [`decode_slots`]; an id longer than 255 bytes is left out.
pub fn encode_slots(slots: &[(String, Slot)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(slots.iter().map(|(id, _)| 1 + id.len() + SLOT_BYTES).sum());
    for (id, slot) in slots {
        let Ok(n) = u8::try_from(id.len()) else { continue };
        out.push(n);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&slot.encode());
    }
    out
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

/// A quota's count in shared data: the window it is for, what was used in it (reservations
/// included) and, for a leased quota, what this Envoy holds of it and what the authority had
/// left to grant when it last answered.
///
/// Reservations (a request's worst-case tokens or cost, its concurrency slot) also count in
/// `held`, by the reservation epoch they were made in ([`Slot::roll`]): a reservation that is
/// never given back (its worker's VM crashed mid-request) expires with its epoch, so it cannot
/// leak, while one given back in time is taken off exactly once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    pub window: u64,
    pub used: u64,
    pub leased: u64,
    pub free: u64,
    /// The latest reservation epoch this slot has seen.
    pub epoch: u64,
    /// Reservations still held, by epoch parity: `held[epoch % 2]` for `epoch` and
    /// `epoch - 1`.
    pub held: [u64; 2],
}

/// The encoded size of a [`Slot`].
pub const SLOT_BYTES: usize = 56;

/// The reservation epoch of `now` (Unix seconds) for reservations that expire after
/// `hold_seconds` (the gateway's longest request): a reservation of epoch `e` is dropped when the
/// slot reaches epoch `e + 2`, at least `hold_seconds` later.
pub fn hold_epoch(now: u64, hold_seconds: u64) -> u64 {
    now / hold_seconds.max(1)
}

impl Slot {
    pub fn new(window: u64) -> Self {
        Self { window, ..Self::default() }
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != SLOT_BYTES {
            return None;
        }
        let at = |i: usize| bytes.get(i * 8..i * 8 + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        Some(Self { window: at(0)?, used: at(1)?, leased: at(2)?, free: at(3)?, epoch: at(4)?, held: [at(5)?, at(6)?] })
    }

    pub fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut out = [0u8; SLOT_BYTES];
        let fields = [self.window, self.used, self.leased, self.free, self.epoch, self.held[0], self.held[1]];
        for (chunk, v) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The slot as seen in `window`: a slot of an earlier window counts nothing any more.
    pub fn in_window(self, window: u64) -> Self {
        if self.window == window {
            self
        } else {
            Self::new(window)
        }
    }

    /// What is left of this Envoy's lease.
    pub fn spare(&self) -> u64 {
        self.leased.saturating_sub(self.used)
    }

    /// Moves the slot on to reservation epoch `epoch`: the reservations of epochs before
    /// `epoch - 1` still held expire (they stop counting in `used`). Returns what expired.
    pub fn roll(&mut self, epoch: u64) -> u64 {
        if epoch <= self.epoch {
            return 0;
        }
        let parity = |e: u64| usize::from(e % 2 == 1);
        let expired = if epoch - self.epoch == 1 {
            // The bucket `epoch` takes over held `epoch - 2`.
            std::mem::take(&mut self.held[parity(epoch)])
        } else {
            std::mem::take(&mut self.held[0]).saturating_add(std::mem::take(&mut self.held[1]))
        };
        self.used = self.used.saturating_sub(expired);
        self.epoch = epoch;
        expired
    }

    /// Records a reservation of `amount` (already added to `used`) made in epoch `epoch` (the
    /// slot's, after [`Slot::roll`]).
    pub fn hold(&mut self, epoch: u64, amount: u64) {
        if let Some(h) = self.held.get_mut(usize::from(epoch % 2 == 1)) {
            *h = h.saturating_add(amount);
        }
    }

    /// Gives back a reservation of `amount` made in epoch `epoch`: taken off `used` unless it
    /// has expired (then it already was). Returns what was given back.
    pub fn unhold(&mut self, epoch: u64, amount: u64) -> u64 {
        if epoch > self.epoch || self.epoch - epoch > 1 {
            return 0;
        }
        let Some(h) = self.held.get_mut(usize::from(epoch % 2 == 1)) else { return 0 };
        let back = amount.min(*h);
        *h -= back;
        self.used = self.used.saturating_sub(back);
        back
    }
}

/// What a request holds of one quota until it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The quota's id.
    pub id: String,
    pub metric: Metric,
    pub window: u64,
    /// Reserved tokens, given back when the request ends (0 for requests and concurrency).
    #[serde(default)]
    pub reserved: u64,
    /// The quota's group (see [`QuotaDoc::group`]).
    #[serde(default)]
    pub group: Option<String>,
    /// The reservation epoch it was taken in (see [`Slot::roll`]).
    #[serde(default)]
    pub epoch: u64,
}

impl Metric {
    /// Held while the request runs and given back when it ends (see [`Slot::hold`]):
    /// concurrency, and the worst case of tokens and cost.
    pub fn is_held(self) -> bool {
        self == Self::Concurrency || self.is_tokens()
    }
}

/// What the gateway filter hands on (in the request state, `crate::state`): the holds, and the
/// standing of the tightest quotas, which the provider filter writes as rate-limit headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holds {
    pub holds: Vec<Hold>,
    #[serde(default)]
    pub limits: RateLimits,
    /// What the provider filter's quotas (see [`QuotaDoc::provider`]) reserve an attempt by:
    /// the client body's length (0 when no quota of a provider applies) and its output limit
    /// (0: none set).
    #[serde(default)]
    pub body_len: u64,
    #[serde(default)]
    pub max_output: u64,
}

impl Metric {
    fn code(self) -> u8 {
        match self {
            Self::Requests => 0,
            Self::InputTokens => 1,
            Self::OutputTokens => 2,
            Self::TotalTokens => 3,
            Self::Concurrency => 4,
            Self::CostUsd => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [Self::Requests, Self::InputTokens, Self::OutputTokens, Self::TotalTokens, Self::Concurrency, Self::CostUsd].get(usize::from(code)).copied()
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) -> Option<()> {
    out.extend_from_slice(&u16::try_from(text.len()).ok()?.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Some(())
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = (b.get(..n)?, b.get(n..)?);
    *b = rest;
    Some(head)
}

fn take_text<'a>(b: &mut &'a [u8]) -> Option<&'a str> {
    let len = take(b, 2)?;
    let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
    std::str::from_utf8(take(b, len)?).ok()
}

fn take_u64(b: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(b, 8)?.try_into().ok()?))
}

impl Hold {
    /// What a request holds of quota `q` after taking `amount` in `window`, reservation epoch
    /// `epoch` (tokens and cost keep their reservation, to give back).
    pub fn taken(q: &QuotaDoc, window: u64, amount: u64, epoch: u64) -> Self {
        let reserved = if q.metric.is_tokens() { amount } else { 0 };
        Self { id: q.id.clone(), metric: q.metric, window, reserved, group: q.group.clone(), epoch }
    }
}

impl Holds {
    /// Appends the holds in a compact binary form (no JSON on the request path): a count and
    /// per hold its id, group, metric, window, reservation and epoch; a count and per header its
    /// name and value; the body's length and the output limit. `None` when a count or a length
    /// does not fit.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Option<()> {
        out.push(u8::try_from(self.holds.len()).ok()?);
        for h in &self.holds {
            put_text(out, &h.id)?;
            put_text(out, h.group.as_deref().unwrap_or(""))?;
            out.push(h.metric.code());
            out.extend_from_slice(&h.window.to_le_bytes());
            out.extend_from_slice(&h.reserved.to_le_bytes());
            out.extend_from_slice(&h.epoch.to_le_bytes());
        }
        self.limits.encode_into(out);
        out.extend_from_slice(&self.body_len.to_le_bytes());
        out.extend_from_slice(&self.max_output.to_le_bytes());
        Some(())
    }

    /// The inverse of [`Holds::encode_into`], all of `bytes` or nothing.
    pub fn decode(mut bytes: &[u8]) -> Option<Self> {
        let b = &mut bytes;
        let n = take(b, 1)?[0];
        let mut holds = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let id = take_text(b)?.to_owned();
            let group = Some(take_text(b)?.to_owned()).filter(|g| !g.is_empty());
            let metric = Metric::from_code(take(b, 1)?[0])?;
            holds.push(Hold { id, metric, window: take_u64(b)?, reserved: take_u64(b)?, group, epoch: take_u64(b)? });
        }
        let limits = RateLimits::decode(b)?;
        let (body_len, max_output) = (take_u64(b)?, take_u64(b)?);
        b.is_empty().then_some(Self { holds, limits, body_len, max_output })
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
    fn encode_into(&self, out: &mut Vec<u8>) {
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        let reset = |s: &Option<Standing>| s.is_some_and(|s| s.2.is_some());
        out.push(
            bit(self.requests.is_some(), 1) | bit(self.tokens.is_some(), 2) | bit(self.anthropic_at.is_some(), 4) | bit(reset(&self.requests), 8) | bit(reset(&self.tokens), 16),
        );
        for (l, r, s) in [self.requests, self.tokens].into_iter().flatten() {
            out.extend_from_slice(&l.to_le_bytes());
            out.extend_from_slice(&r.to_le_bytes());
            if let Some(s) = s {
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        if let Some(at) = self.anthropic_at {
            out.extend_from_slice(&at.to_le_bytes());
        }
    }

    fn decode(b: &mut &[u8]) -> Option<Self> {
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
            f(names[0], decimal_into(limit, &mut buf))?;
            f(names[1], decimal_into(remaining, &mut buf))?;
            if let Some(s) = reset {
                match self.anthropic_at {
                    Some(now) => f(names[2], rfc3339(now.saturating_add(s)).as_bytes())?,
                    None => {
                        // The digits end just before the `s` at the buffer's end.
                        let (digits, unit) = buf.split_at_mut(23);
                        let n = decimal_into(s, digits).len();
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
    fn headers(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let _ = self.each_header(|n, v| {
            out.push((n.to_owned(), String::from_utf8_lossy(v).into_owned()));
            Ok::<(), ()>(())
        });
        out
    }
}

/// `n` in decimal at the end of `buf` (at most 20 digits), returned as that slice.
fn decimal_into(mut n: u64, buf: &mut [u8]) -> &[u8] {
    let mut i = buf.len();
    while let Some(slot) = i.checked_sub(1).and_then(|j| buf.get_mut(j)) {
        i -= 1;
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(metric: Metric, window_seconds: u64) -> QuotaDoc {
        QuotaDoc { id: "quota_1".into(), metric, window_seconds, limit: 60, lease: false, share: 0, key_id: Some("key_a".into()), model: None, keys: None, periods: Vec::new(), limits: Vec::new(), group: None, provider: None }
    }

    #[test]
    fn scope_window_and_reset() {
        let q = quota(Metric::Requests, 60);
        assert!(q.applies("key_a", "any") && !q.applies("key_b", "any"));
        assert_eq!((q.window(120), q.window(179), q.window(180)), (2, 2, 3));
        assert_eq!(q.resets_in(170), Some(10));
        assert_eq!(quota(Metric::Concurrency, 0).resets_in(170), None);
        let both = QuotaDoc { model: Some("m".into()), ..q.clone() };
        assert!(both.applies("key_a", "m") && !both.applies("key_a", "n"));
        let team = QuotaDoc { key_id: None, keys: Some(vec!["key_a".into(), "key_c".into()]), ..q.clone() };
        assert!(team.applies("key_a", "m") && team.applies("key_c", "m") && !team.applies("key_b", "m"));
        let nobody = QuotaDoc { key_id: None, keys: Some(Vec::new()), ..q };
        assert!(!nobody.applies("key_a", "m"), "a team without keys is not every key");
    }

    #[test]
    fn a_groups_slots_round_trip() {
        let slots = vec![("quota_a".to_owned(), Slot { window: 1, used: 2, leased: 3, free: 4, epoch: 5, held: [6, 7] }), ("quota_b".to_owned(), Slot::new(9))];
        let bytes = encode_slots(&slots);
        assert_eq!(decode_slots(&bytes), Some(slots));
        assert_eq!(decode_slots(&[]), Some(Vec::new()));
        assert_eq!(decode_slots(&bytes[..bytes.len() - 1]), None);
        assert_eq!(slot_key("quota_a", None), "tollgate.quota.quota_a");
        assert_eq!(slot_key("quota_a", Some("k:key_1")), "tollgate.quota.g.k:key_1");
    }

    #[test]
    fn calendar_windows_and_schedules() {
        let q = QuotaDoc { periods: vec![1000, 4000, 7000], limits: vec![(500, 10), (3000, 99)], ..quota(Metric::CostUsd, 0) };
        assert_eq!(q.period(400), Period { window: 0, limit: 60, ends: Some(1000) }, "before everything pushed");
        assert_eq!(q.period(1000), Period { window: 1000, limit: 10, ends: Some(4000) });
        assert_eq!(q.period(3999), Period { window: 1000, limit: 99, ends: Some(4000) }, "the schedule switches the limit");
        assert_eq!(q.period(7500), Period { window: 7000, limit: 99, ends: None }, "the last window goes on");
        let conc = QuotaDoc { limits: vec![(0, 5)], ..quota(Metric::Concurrency, 0) };
        assert_eq!(conc.period(10), Period { window: 0, limit: 5, ends: None });
    }

    #[test]
    fn slots_round_trip_and_a_new_window_starts_from_zero() {
        let s = Slot { window: 7, used: 59, leased: 70, free: 3, ..Slot::default() };
        assert_eq!(Slot::decode(&s.encode()), Some(s));
        assert_eq!(Slot::decode(&[0; 16]), None);
        assert_eq!(Slot::decode(&[0; 57]), None);
        assert_eq!(s.in_window(7), s);
        assert_eq!(s.in_window(8), Slot::new(8));
        assert_eq!(s.spare(), 11);
    }

    /// A reservation never given back expires two epochs on; one given back in time comes off
    /// once, one given back after it expired not at all.
    #[test]
    fn held_reservations_expire_with_their_epoch() {
        let mut s = Slot::new(0);
        assert_eq!(s.roll(100), 0);
        s.used += 30; // a crashed worker's reservation
        s.hold(100, 30);
        s.used += 5; // settled usage: never expires
        assert_eq!(s.roll(101), 0, "one epoch on: still held");
        s.used += 7;
        s.hold(101, 7);
        assert_eq!((s.used, s.held), (42, [30, 7]));
        assert_eq!(s.unhold(101, 7), 7, "given back in time");
        assert_eq!(s.unhold(101, 7), 0, "and only once");
        assert_eq!(s.roll(102), 30, "epoch 100's expires at 102");
        assert_eq!((s.used, s.held), (5, [0, 0]));
        assert_eq!(s.unhold(100, 30), 0, "given back after it expired: already off");
        assert_eq!(s.used, 5);
        s.used += 9;
        s.hold(102, 9);
        assert_eq!(s.roll(110), 9, "a long idle gap expires everything");
        assert_eq!((s.used, s.held, s.epoch), (5, [0, 0], 110));
        assert_eq!(s.roll(109), 0, "never backwards");
        assert_eq!(hold_epoch(7200, 660), 10);
    }

    #[test]
    fn reservations_and_usage_by_metric() {
        assert_eq!(reservation(Metric::TotalTokens, 2048, None, None), 512 + OUTPUT_RESERVATION);
        assert_eq!(reservation(Metric::TotalTokens, 2048, Some(100), None), 612);
        assert_eq!(reservation(Metric::OutputTokens, 2048, Some(7), None), 7);
        assert_eq!(reservation(Metric::InputTokens, 5, None, None), 2);
        assert_eq!(reservation(Metric::Requests, 5, None, None), 0);
        assert_eq!(Metric::TotalTokens.of_usage(10, 5), 15);
        assert_eq!(Metric::OutputTokens.of_usage(10, 5), 5);
    }

    #[test]
    fn holds_round_trip_and_refuse_anything_else() {
        let h = Holds {
            holds: vec![
                Hold { id: "quota_a".into(), metric: Metric::CostUsd, window: 0, reserved: 123_456, group: Some("k:key_1".into()), epoch: 490_000 },
                Hold { id: "quota_b".into(), metric: Metric::Requests, window: 29_000_000, reserved: 0, group: None, epoch: 0 },
            ],
            limits: RateLimits { requests: Some((60, 59, Some(12))), tokens: Some((1000, 10, None)), anthropic_at: Some(7) },
            body_len: 2048,
            max_output: 16,
        };
        let mut bytes = Vec::new();
        h.encode_into(&mut bytes).unwrap();
        assert_eq!(Holds::decode(&bytes), Some(h));
        for cut in 0..bytes.len() {
            assert_eq!(Holds::decode(&bytes[..cut]), None);
        }
        bytes.push(0);
        assert_eq!(Holds::decode(&bytes), None, "trailing bytes");
        assert_eq!(Holds::decode(&[1, 1, 0, b'q', 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None, "unknown metric");
    }

    #[test]
    fn the_output_limit_in_every_client_apis_words() {
        assert_eq!(max_output(br#"{"model":"m","max_tokens":50,"messages":[]}"#), Some(50));
        assert_eq!(max_output(br#"{"max_completion_tokens":60,"max_tokens":50}"#), Some(60));
        assert_eq!(max_output(br#"{"max_output_tokens":70,"input":"x"}"#), Some(70));
        assert_eq!(max_output(br#"{"messages":[],"inferenceConfig":{"maxTokens":80,"temperature":0.1}}"#), Some(80));
        assert_eq!(max_output(br#"{"messages":[{"role":"user","content":"max_tokens"}]}"#), None);
        assert_eq!(max_output(br#"{"max_tokens":-1}"#), None);
        assert_eq!(max_output(b"[1]"), None);
    }

    #[test]
    fn anthropic_headers_reset_at_a_time() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_427_600), "2026-12-04T23:40:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        let h = RateLimits { requests: None, tokens: Some((1000, 10, Some(30))), anthropic_at: Some(1_796_427_570) }.headers();
        assert_eq!(h[0], ("anthropic-ratelimit-tokens-limit".to_owned(), "1000".to_owned()));
        assert_eq!(h[2], ("anthropic-ratelimit-tokens-reset".to_owned(), "2026-12-04T23:40:00Z".to_owned()));
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 59, 1_000_000, u64::MAX] {
            assert_eq!(decimal_into(n, &mut [0u8; 24]), n.to_string().as_bytes());
        }
        let h = RateLimits { requests: Some((u64::MAX, 0, Some(u64::MAX))), ..Default::default() }.headers();
        assert_eq!(h[2].1, format!("{}s", u64::MAX));
    }

    #[test]
    fn headers_are_openais() {
        let h = RateLimits { requests: Some((60, 59, Some(12))), ..Default::default() }.headers();
        assert_eq!(h, vec![
            ("x-ratelimit-limit-requests".to_owned(), "60".to_owned()),
            ("x-ratelimit-remaining-requests".to_owned(), "59".to_owned()),
            ("x-ratelimit-reset-requests".to_owned(), "12s".to_owned()),
        ]);
    }
}
