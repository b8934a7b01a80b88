//! Admission against the quotas (issue 13): before a request is routed, every quota that applies
//! takes its share in this Envoy's shared-data slot with compare-and-swap (exact across the
//! workers); if one would go over its limit the ones already taken are given back and the
//! request is refused with a 429. When the request ends its concurrency and its token
//! reservations are given back here; the provider filter adds each attempt's real token usage.
//! No host call is made for a request no quota applies to.

use tollgate_contract::quota::{self, Hold, Holds, Metric, QuotaDoc};
use tollgate_wasm::quota_slot::add;
use tollgate_wasm::{Host, HostError};

/// Why a request was refused.
pub struct Refusal<'q> {
    pub quota: &'q QuotaDoc,
    pub retry_after: u64,
}

/// The request as the quotas see it.
pub struct Asking<'a> {
    pub key_id: &'a str,
    pub model: &'a str,
    pub body_len: u64,
    /// Unix seconds.
    pub now: u64,
    /// Whose rate-limit headers to write.
    pub api: tollgate_contract::ClientApi,
    /// The model's dearest deployment rates (for budgets).
    pub price: Option<&'a tollgate_contract::config::Price>,
}

/// Takes every applicable quota's share for a request, or none of them.
pub fn admit<'q, H: Host>(host: &H, quotas: &'q [QuotaDoc], r: &Asking<'_>) -> Result<Result<Holds, Refusal<'q>>, HostError> {
    let Asking { key_id, model, body_len, now, api, price } = *r;
    let mut holds = Holds::default();
    let (mut requests, mut tokens): (Option<quota::Standing>, Option<quota::Standing>) = (None, None);
    for q in quotas.iter().filter(|q| q.applies(key_id, model)) {
        let period = q.period(now);
        let window = period.window;
        let amount = match q.metric {
            Metric::Requests | Metric::Concurrency => 1,
            m => quota::reservation(m, body_len, price),
        };
        let taken = add(host, &q.slot_key(), window, i64::try_from(amount).unwrap_or(i64::MAX), Some(period.limit), false);
        let used = match taken {
            Ok(Some(used)) => used,
            Ok(None) => {
                release(host, quotas, &holds.holds, true);
                let retry_after = if q.metric == Metric::Concurrency { 1 } else { period.resets_in(now).unwrap_or(60) };
                return Ok(Err(Refusal { quota: q, retry_after }));
            }
            Err(e) => {
                release(host, quotas, &holds.holds, true);
                return Err(e);
            }
        };
        let reserved = if q.metric.is_tokens() { amount } else { 0 };
        holds.holds.push(Hold { id: q.id.clone(), metric: q.metric, window, reserved });
        // The tightest quota of each kind names the headers.
        let seen = (period.limit, period.limit.saturating_sub(used), period.resets_in(now));
        let slot = match q.metric {
            Metric::Requests => &mut requests,
            Metric::Concurrency | Metric::CostUsd => continue,
            _ => &mut tokens,
        };
        if slot.is_none_or(|(_, remaining, _)| seen.1 < remaining) {
            *slot = Some(seen);
        }
    }
    let anthropic_at = (api == tollgate_contract::ClientApi::Anthropic).then_some(now);
    holds.headers = quota::rate_limit_headers(requests, tokens, anthropic_at);
    Ok(Ok(holds))
}

/// Gives back what a request held: its concurrency slots and token reservations (and, when
/// `refused`, its requests too: a refused request does not count).
pub fn release<H: Host>(host: &H, quotas: &[QuotaDoc], holds: &[Hold], refused: bool) {
    for h in holds {
        let delta = match h.metric {
            Metric::Concurrency => 1,
            Metric::Requests if refused => 1,
            Metric::Requests => continue,
            _ => h.reserved,
        };
        let key = quotas.iter().find(|q| q.id == h.id).map_or_else(|| format!("{}{}", quota::SLOT_PREFIX, h.id), QuotaDoc::slot_key);
        if let Err(e) = add(host, &key, h.window, -i64::try_from(delta).unwrap_or(i64::MAX), None, true) {
            log::warn!("gateway filter: could not give back quota {} ({e})", h.id);
        }
    }
}
