//! Admission against the quotas (issue 13): before a request is routed, every quota that applies
//! takes its share in this Envoy's shared-data slot with compare-and-swap (exact across the
//! workers); if one would go over, the ones already taken are given back and the request is
//! refused with a 429. A leased quota is spent from the lease the authority granted this Envoy
//! (`tollgate_contract::quota_lease`); when that is used up the request waits once for a grant
//! (the caller makes the call) and is tried again. When the request ends its concurrency and its
//! token reservations are given back here; the provider filter adds each attempt's real usage.
//! No host call is made for a request no quota applies to.
//!
//! While a request's token and cost quotas are roomy (half their limit left), its reservations
//! are given back late and its usage counted late, not when it ends: proxy-wasm has no atomic
//! add, so each is a shared-data read (a VM entry to hand the value back) and a
//! compare-and-swap, about 13,000 of Envoy's instructions (bench/crossing_costs.py). The
//! provider filter adds each attempt's usage to this worker's tally
//! (`tollgate_contract::quota::tally`, in its memory, written with one blind write on its own
//! tick); the worker reads the tally on its tick ([`flush`], every [`FLUSH_PERIOD`]), and gives
//! a request's reservations back only when it reads a write of the tally newer than the one its
//! first tick after the request's end read, which surely holds the request's usage (every
//! attempt of a request has ended, and added its usage, by the end of the event-loop pass its
//! request ends in); or, with no such write, after [`WAIT_TICKS`] ticks. Both are applied in the compare-and-swap of the worker's next admission to the same
//! group, or on the next tick if none comes first. A reservation held a little longer only ever
//! counts too much, never too little: no quota can be overspent by it. Concurrency is given
//! back at once (a slot held late would refuse a request that fits); so is everything of a
//! request whose quotas are not roomy, its usage settled by the provider filter in the slots.
//!
//! A worker's credit (a third level of leasing, after the authority's lease to the Envoy): an
//! admission that takes a group with compare-and-swap also takes, for each of its quotas, a
//! credit of [`CREDIT_REQUESTS`] requests' amounts, when that fits and leaves at least half the
//! limit (at most a 64th of the limit and, of a lease, a quarter of what is left of it; for a
//! whole group or not at all; never for concurrency, nor for a limit under 256 of the request's
//! amounts: those stay exact request by request).
//! The worker's next requests to that group spend their credits in its memory, with no host call
//! (the same window, limit and reservation epoch; every quota of the group must have room); what
//! is left of every credit is given back on the worker's next tick ([`flush`]). A credit counts as
//! used in the slot until then, so nothing is ever counted short; the most a credit can refuse
//! elsewhere is its own size, for at most a tick, and only while its quota has half its limit
//! left.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use tollgate_contract::quota::index::KeyIndex;
use tollgate_contract::quota::{self, Hold, Holds, Metric, QuotaDoc};
use tollgate_contract::quota_lease::{self, Ask};
use tollgate_contract::quota::tally::{self, Tally};
use tollgate_wasm::quota_slot::{apply_changes, authority_down, give_back, take_group, Change, Over, Want};
use tollgate_wasm::{Host, HostError};

mod credits;
mod ending;
mod keyed;
mod tags;

use credits::*;
use ending::*;
use keyed::*;
use tags::*;

pub use ending::{end, flush, Roomy, FLUSH_PERIOD};

/// Why a request was refused.
pub struct Refusal<'q> {
    pub quota: &'q QuotaDoc,
    /// The limit in the refused request's window (a schedule may change it).
    pub limit: u64,
    pub retry_after: u64,
}

/// The request as the quotas see it.
pub struct Asking<'a> {
    pub key_id: &'a str,
    pub model: &'a str,
    pub body_len: u64,
    /// The client's output limit (see `quota::max_output`).
    pub max_output: Option<u64>,
    /// Unix seconds.
    pub now: u64,
    /// Unix nanoseconds (the same instant): handed on as the first attempt's start.
    pub now_ns: u64,
    /// Whose rate-limit headers to write.
    pub api: tollgate_contract::ClientApi,
    /// The model's dearest deployment rates (for budgets).
    pub price: Option<&'a tollgate_contract::config::Price>,
    /// How long a reservation never given back is held before it expires (see
    /// `quota::Slot::roll`): longer than any request can run.
    pub hold_seconds: u64,
    /// The providers the model's deployments are at (empty unless some quota is a provider's).
    pub providers: &'a [tollgate_contract::config::ProviderKind],
    /// The least output limit the request may be lowered to (its body rewritten) to fit a
    /// quota with `fit_output` (its client API's least); 0: it cannot be (an API whose output
    /// limit the gateway does not write).
    pub fit: u64,
}

impl Asking<'_> {
    /// Whether leased quota `q` is one this request may spend: the gateway's own, or one of a
    /// provider the model may send it to (spent by the provider filter).
    fn may_spend(&self, q: &QuotaDoc) -> bool {
        q.lease && q.applies(self.key_id, self.model) && q.provider.is_none_or(|p| self.providers.contains(&p))
    }
}

/// Which try this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// A spent lease makes the request wait for a grant.
    First,
    /// After the grant: a spent lease refuses.
    Granted,
    /// The grant call failed: rate limits fall back to this Envoy's share, budgets refuse.
    AuthorityDown,
}

pub enum Admission<'q> {
    /// Admitted; the providers the model may send it to whose quotas cannot take it (the
    /// request goes around them when the model has another provider); whether its token and
    /// cost reservations may be given back late (see [`end`]); the output limit it was
    /// admitted with when a quota's `fit_output` lowered it (the body must say so).
    Admitted(Holds, Vec<tollgate_contract::config::ProviderKind>, Roomy, Option<u64>),
    Refused(Refusal<'q>),
    /// Leases to ask the authority for before trying again.
    Wait(Vec<Ask>),
}

fn amount(q: &QuotaDoc, r: &Asking<'_>, out: Option<u64>) -> u64 {
    quota::amount(q.metric, r.body_len, out, r.price)
}

/// How many times one admission may lower a request's output limit (each a compare-and-swap
/// again; more than one only when the quotas of a group each need it, or another worker took
/// the room first).
const FIT_TRIES: usize = 4;

/// The output limit at which the request fits `room` of quota `q`, when `q` lets a request be
/// lowered (`fit_output`) and the request can be; `out`: its limit now.
fn fit(q: &QuotaDoc, r: &Asking<'_>, out: Option<u64>, room: u64) -> Option<u64> {
    let floor = floor(q, r)?;
    quota::fit_output(q.metric, r.body_len, out.unwrap_or(quota::OUTPUT_RESERVATION), floor, room, r.price)
}

/// The lowest output limit quota `q` may lower the request to: its `fit_output`, or the
/// client API's least if that is more; `None` when it may not lower it.
fn floor(q: &QuotaDoc, r: &Asking<'_>) -> Option<u64> {
    (r.fit > 0 && q.fit_output > 0 && q.metric.counts_output()).then(|| q.fit_output.max(r.fit))
}

/// The least quota `q` takes of the request: at the lowest output limit it may be lowered to
/// (`fit_output`), or all of it.
fn least(q: &QuotaDoc, r: &Asking<'_>, out: Option<u64>) -> u64 {
    let full = amount(q, r, out);
    floor(q, r).map_or(full, |f| full.min(amount(q, r, Some(f))))
}

/// The quotas' shared-data keys (`quota::slot_keys`), for each quota the first quota of its
/// group (the same slot key), and each quota's id and group as a request's holds share them,
/// with the worker's tag for its slot: made once per configuration, so that an admission finds
/// its groups without comparing keys and allocates no text for its holds.
#[derive(Default)]
pub struct QuotaKeys {
    pub keys: Vec<(String, String)>,
    group: Vec<usize>,
    names: Vec<(Rc<str>, Option<Rc<str>>, u32)>,
    /// Which quotas may apply to a key, for a configuration of more than
    /// `quota::index::INDEXED_FROM`.
    index: Option<KeyIndex>,
    /// Some quota is a provider's.
    of_providers: bool,
}

impl QuotaKeys {
    pub fn new(quotas: &[QuotaDoc]) -> Self {
        let keys = quota::slot_keys(quotas);
        // Each quota's group's first quota, found by its key (not by comparing every pair).
        let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(keys.len());
        let group = keys.iter().enumerate().map(|(i, (k, _))| *first.entry(k.as_str()).or_insert(i)).collect();
        let names = quotas
            .iter()
            .map(|q| {
                let (tag, id, group) = tag(&q.id, q.group.as_deref());
                (id, group, tag)
            })
            .collect();
        let index = KeyIndex::of(quotas);
        let of_providers = quotas.iter().any(|q| q.provider.is_some());
        Self { keys, group, names, index, of_providers }
    }

    /// The quotas of this configuration (`quotas`) that apply to `key_id` and `model`: the
    /// gateway's own, or (`providers`) those of providers.
    pub fn applicable(&self, quotas: &[QuotaDoc], key_id: &str, model: &str, providers: bool) -> Vec<usize> {
        let n = quotas.len().min(self.keys.len());
        quota::index::applicable(quotas.get(..n).unwrap_or_default(), self.index.as_ref(), key_id, model, |q| q.provider.is_some() == providers)
    }

    /// Whether some quota of this configuration (the gateway's own or a provider's) that
    /// satisfies `which` applies to `key_id` and `model`.
    pub fn any_applies(&self, quotas: &[QuotaDoc], key_id: &str, model: &str, which: impl Fn(&QuotaDoc) -> bool) -> bool {
        let applies = |q: &QuotaDoc| which(q) && q.applies(key_id, model);
        match &self.index {
            None => quotas.iter().any(applies),
            Some(index) => index.candidates(key_id).into_iter().any(|i| quotas.get(i).is_some_and(applies)),
        }
    }

    /// What a request holds of quota `i` (`q`), its id and group shared.
    fn hold(&self, i: usize, q: &QuotaDoc, window: u64, amount: u64, epoch: u64) -> Hold {
        match self.names.get(i) {
            Some((id, group, tag)) => Hold::of(q, id.clone(), group.clone(), window, amount, epoch, *tag),
            None => Hold::taken(q, window, amount, epoch),
        }
    }
}

/// Takes every applicable quota's share for a request, or none of them: the quotas of one
/// group (a scope) with one read and one compare-and-swap, which also applies the worker's kept
/// changes to that group (ended requests' reservations given back, their usage counted).
pub fn admit<'q, H: Host>(host: &H, quotas: &'q [QuotaDoc], qk: &QuotaKeys, r: &Asking<'_>, pass: Pass) -> Result<Admission<'q>, HostError> {
    let keys = &qk.keys[..];
    let now = r.now;
    let epoch = quota::hold_epoch(now, r.hold_seconds);
    let mut holds = Holds { holds: Vec::with_capacity(4), ..Holds::default() };
    let (mut requests, mut tokens): (Option<quota::Standing>, Option<quota::Standing>) = (None, None);
    let mut down = pass == Pass::AuthorityDown;
    let mut roomy = true;
    let applicable = qk.applicable(quotas, r.key_id, r.model, false);
    // The output limit the request reserves by: the client's, unless a quota lowers it to fit.
    let mut out = r.max_output;
    let mut fits = 0;
    let group_of = |i: usize| qk.group.get(i).copied().unwrap_or(i);
    // The applicable quotas of the groups taken before position `n` (a request quota's count is
    // for good once admitted, so no hold of it travels: they are found again only to give them
    // back when a later group refuses).
    let applied = &applicable[..];
    let admitted = |n: usize| applied.iter().copied().filter(move |&j| applied[..n.min(applied.len())].iter().any(|&k| group_of(k) == group_of(j)));
    for (n, &first) in applicable.iter().enumerate() {
        // Each group once, at its first applicable quota, with its applicable members.
        if applicable[..n].iter().any(|&j| group_of(j) == group_of(first)) {
            continue;
        }
        let members = || applicable[n..].iter().copied().filter(|&j| group_of(j) == group_of(first));
        let Some((group, _)) = keys.get(first) else { continue };
        // The worker's credits, when they cover the request on every quota of the group: no
        // host call.
        if let Some(ok) = spend_credits(qk, quotas, members(), r, out, epoch, &mut holds.holds, &mut requests, &mut tokens) {
            roomy &= ok;
            continue;
        }
        let back = take_deferred(group);
        let (over, taken) = loop {
            let mut wants: Vec<Want<'_>> = members()
                .map(|i| {
                    let (q, a) = (&quotas[i], amount(&quotas[i], r, out));
                    Want { quota: q, next: &keys[i].1, amount: a, extra: credit_size(q, a, q.period(now).limit) }
                })
                .collect();
            // Credits are spent for a whole group or not at all: none unless every quota of it
            // gets one.
            if wants.iter().any(|w| w.extra == 0) {
                wants.iter_mut().for_each(|w| w.extra = 0);
            }
            match take_group(host, group, &wants, now, epoch, down, &back) {
                Err(e) => {
                    defer(back);
                    undo(host, quotas, &holds.holds, admitted(n), now, epoch);
                    return Err(e);
                }
                Ok(Ok(taken)) => break (None, taken),
                Ok(Err(Over { at, room })) => {
                    let q = &quotas[members().nth(at).unwrap_or(first)];
                    if q.lease && pass == Pass::First && !down {
                        if authority_down(host) {
                            down = true;
                            continue;
                        }
                        // What was kept to give back goes back before the authority is asked
                        // (the lease it frees may be enough for the next try).
                        write_back(host, &back);
                        let asks = asks(host, quotas, qk, r, out);
                        // Nothing to ask for: the authority has said it has nothing left.
                        if !asks.is_empty() {
                            undo(host, quotas, &holds.holds, admitted(n), now, epoch);
                            return Ok(Admission::Wait(asks));
                        }
                        break (Some(q), Vec::new());
                    }
                    // A quota that lets a request be lowered to fit: again at the output
                    // limit that fits the room it had (the deferred give-backs were not
                    // written, so they go again too).
                    if fits < FIT_TRIES {
                        if let Some(lower) = fit(q, r, out, room) {
                            out = Some(lower);
                            fits += 1;
                            continue;
                        }
                    }
                    // Refused with what was kept given back (nothing was written).
                    write_back(host, &back);
                    break (Some(q), Vec::new());
                }
            }
        };
        if let Some(q) = over {
            undo(host, quotas, &holds.holds, admitted(n), now, epoch);
            return Ok(Admission::Refused(Refusal { quota: q, limit: q.period(now).limit, retry_after: q.retry_after(now) }));
        }
        // A credit a quota of the group could not take (it would have left less than half the
        // limit) makes the others' of no use: they go back with the next write to the group.
        let credited = taken.iter().all(|t| t.extra > 0);
        for (i, tollgate_wasm::quota_slot::Taken { slot, amount, period, extra }) in members().zip(taken) {
            let Some(q) = quotas.get(i) else { continue };
            // What is left after the request (the worker's credit, taken with it, is not spent).
            let remaining = slot.left(q.lease, period.limit).saturating_add(extra).min(period.limit);
            if extra > 0 {
                keep_credit(qk, i, q, period, now, epoch, extra, remaining, credited);
            }
            roomy &= note(qk, i, q, period, amount, epoch, remaining, now, &mut holds.holds, &mut requests, &mut tokens);
        }
    }
    // The quotas of the providers the request may go to are spent by the provider filter,
    // which cannot wait for a grant: make sure here that their leases cover the request; those
    // that cannot, after asking, name the providers the request should go around.
    let mut spent = Vec::new();
    if !down && !r.providers.is_empty() {
        let short: Vec<&QuotaDoc> = qk
            .applicable(quotas, r.key_id, r.model, true)
            .into_iter()
            .filter_map(|i| Some((quotas.get(i)?, keys.get(i)?)))
            .filter(|(q, (key, _))| {
                r.may_spend(q) && {
                    let window = q.period(now).window;
                    let slot = tollgate_wasm::quota_slot::read(host, key, &q.id).filter(|s| s.window == window);
                    slot.map_or(0, |s| s.spare()) < amount(q, r, out)
                }
            })
            .map(|(q, _)| q)
            .collect();
        if !short.is_empty() && pass == Pass::First {
            let asks = asks(host, quotas, qk, r, out);
            if !asks.is_empty() {
                undo(host, quotas, &holds.holds, admitted(applicable.len()), now, epoch);
                return Ok(Admission::Wait(asks));
            }
        }
        for p in short.iter().filter_map(|q| q.provider) {
            if !spent.contains(&p) {
                spent.push(p);
            }
        }
    }
    let anthropic_at = (r.api == tollgate_contract::ClientApi::Anthropic).then_some(now);
    holds.limits = quota::RateLimits { requests, tokens, anthropic_at };
    // What the provider filter reserves by, when a quota of a provider applies.
    if qk.of_providers && qk.any_applies(quotas, r.key_id, r.model, |q| q.provider.is_some()) {
        (holds.body_len, holds.max_output) = (r.body_len, out.unwrap_or(0));
    }
    holds.admitted_ns = r.now_ns;
    let lowered = if fits > 0 { out } else { None };
    // A roomy request's usage goes through the worker's tally (see [`end`]), its holds by their
    // tags; one holding a quota the worker has no tag for is settled as if not roomy.
    if roomy && holds.holds.iter().any(|h| h.metric.is_tokens()) {
        if holds.holds.iter().all(|h| h.tag != 0) {
            holds.tally = tally_id();
        } else {
            roomy = false;
        }
    }
    Ok(Admission::Admitted(holds, spent, Roomy(roomy), lowered))
}

/// Notes what a request took of quota `i` (`q`, in `period`): its hold (a held metric), and its
/// standing for the rate-limit headers (the tightest quota of each kind names them; `remaining`:
/// what the quota has left after the request). `false` when a token or cost quota has less than
/// half its limit left (the request is not roomy).
#[allow(clippy::too_many_arguments)]
fn note(qk: &QuotaKeys, i: usize, q: &QuotaDoc, period: quota::Period, amount: u64, epoch: u64, remaining: u64, now: u64, holds: &mut Vec<Hold>, requests: &mut Option<quota::Standing>, tokens: &mut Option<quota::Standing>) -> bool {
    if q.metric.is_held() {
        holds.push(qk.hold(i, q, period.window, amount, epoch));
    }
    let roomy = !(q.metric.is_tokens() && remaining < period.limit / 2);
    let standing = match q.metric {
        Metric::Requests => requests,
        Metric::Concurrency | Metric::CostUsd => return roomy,
        _ => tokens,
    };
    if standing.is_none_or(|(_, left, _)| remaining < left) {
        *standing = Some((period.limit, remaining, period.resets_in(now)));
    }
    roomy
}

/// What to ask the authority for: every leased quota the request may spend (its own, and those
/// of the providers its model may go to) whose lease cannot cover it (a slot that cannot be
/// read is asked for too), unless the authority said when it last answered that it had less
/// left than the request needs and the lease is spent. The lease's unspent fragment goes back
/// with the ask (`returned`) and the whole need is asked for: so that, near a quota's end, what
/// the Envoys hold in pieces too small for a request pools at the authority, where one request
/// can have it (the gap a budget ends with is then under one request's reservation, not one per
/// Envoy). What the slot counts beyond its lease is asked for too (reservations of ended
/// requests another worker has yet to give back, beside the usage already settled for them):
/// a grant of the request's amount alone would leave it short again. A quota that lets a
/// request be lowered to fit (`fit_output`) says how little would still do (`least`).
fn asks<H: Host>(host: &H, quotas: &[QuotaDoc], qk: &QuotaKeys, r: &Asking<'_>, out: Option<u64>) -> Vec<Ask> {
    let mut of = qk.applicable(quotas, r.key_id, r.model, false);
    if qk.of_providers {
        of.extend(qk.applicable(quotas, r.key_id, r.model, true));
    }
    of.into_iter()
        .filter_map(|i| Some((quotas.get(i)?, qk.keys.get(i)?)))
        .filter(|(q, _)| r.may_spend(q))
        .filter_map(|(q, (key, _))| {
            let window = q.period(r.now).window;
            let full = amount(q, r, out);
            let slot = tollgate_wasm::quota_slot::read(host, key, &q.id).filter(|s| s.window == window);
            let spare = slot.map_or(0, |s| s.spare());
            if full <= spare {
                return None;
            }
            let over = slot.map_or(0, |s| s.used.saturating_sub(s.leased));
            let (need, lowered) = (full.saturating_add(over), least(q, r, out).saturating_add(over));
            // The authority answered in this window with less left than the request needs and
            // this Envoy has no fragment to pool with it: refused without asking, unless its
            // answer is more than [`SHORT_FOR_NS`] old (what it said it had left is from its last
            // answer; the usage it has recorded since can only have given some back, as the
            // leases' reservations settle to what the requests cost).
            let asked = quota::asked_key(&q.id);
            if spare == 0 && slot.is_some_and(|s| s.leased > 0 && s.free < lowered) && answered_within(host, &asked, r.now_ns) {
                return None;
            }
            if let Err(e) = host.set_shared_data(&asked, &r.now_ns.to_le_bytes(), None) {
                log::warn!("gateway filter: could not note an ask for quota {} ({e})", q.id);
            }
            let returned = match spare {
                0 => 0,
                _ => tollgate_wasm::quota_slot::take_back(host, key, &q.id, window, spare).unwrap_or(0),
            };
            let at_least = if lowered < need { lowered } else { 0 };
            Some(Ask { quota: q.id.clone(), window, want: need.max(q.limit / 50), need, least: at_least, returned })
        })
        .collect()
}

/// How long the authority's word that a quota has less left than a request needs stands before
/// an Envoy asks again (at most about twice a second a quota, for the requests a spent budget
/// refuses).
const SHORT_FOR_NS: u64 = 500_000_000;

/// Whether this Envoy last asked the authority for the quota whose ask key is `asked` less than
/// [`SHORT_FOR_NS`] before `now_ns`; also when it cannot tell (nothing noted, or unreadable:
/// the slot's word is taken, as before an ask was noted).
fn answered_within<H: Host>(host: &H, asked: &str, now_ns: u64) -> bool {
    match host.shared_data(asked) {
        Ok((Some(b), _)) => match <[u8; 8]>::try_from(b.as_slice()) {
            Ok(at) => now_ns.saturating_sub(u64::from_le_bytes(at)) < SHORT_FOR_NS,
            Err(_) => true,
        },
        _ => true,
    }
}

/// Applies the authority's answer to the slots.
pub fn apply<H: Host>(host: &H, quotas: &[QuotaDoc], grants: &quota_lease::GrantResponse) {
    for g in &grants.grants {
        let Some(q) = quotas.iter().find(|q| q.id == g.quota) else { continue };
        if let Err(e) = tollgate_wasm::quota_slot::lease(host, &q.slot_key(), &q.id, g.window, g.granted, g.free) {
            log::warn!("gateway filter: could not record a lease of quota {} ({e})", q.id);
        }
    }
}

/// Gives back what an admission that is refused (or fails) took: its holds, and its request
/// quotas' counts (`admitted`: the quotas of the groups it took; of these only request quotas
/// have no hold in `held`).
fn undo<H: Host>(host: &H, quotas: &[QuotaDoc], held: &[Hold], admitted: impl Iterator<Item = usize>, now: u64, epoch: u64) {
    let mut all = held.to_vec();
    all.extend(admitted.filter_map(|i| quotas.get(i)).filter(|q| q.metric == Metric::Requests).map(|q| Hold::taken(q, q.period(now).window, 1, epoch)));
    release(host, &all, true);
}

/// Gives back what a request held: its concurrency slots and token reservations (and, when
/// `refused`, its requests too: a refused request does not count), one read and one
/// compare-and-swap per group.
pub fn release<H: Host>(host: &H, holds: &[Hold], refused: bool) {
    for (h, e) in give_back(host, holds, refused) {
        log::warn!("gateway filter: could not give back quota {} ({e})", h.id);
    }
}
