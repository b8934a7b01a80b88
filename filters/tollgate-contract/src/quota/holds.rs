//! What a request holds of its quotas until it ends, and their binary form in the request state.

use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::{Metric, QuotaDoc, RateLimits};
#[cfg(doc)]
use super::Slot;

/// What a request holds of one quota until it ends. The id and group are shared (`Rc`): the
/// gateway filter makes them once per configuration, so that a request's holds allocate no text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The quota's id.
    pub id: Rc<str>,
    pub metric: Metric,
    pub window: u64,
    /// Reserved tokens, given back when the request ends (0 for requests and concurrency).
    #[serde(default)]
    pub reserved: u64,
    /// The quota's group (see [`QuotaDoc::group`]).
    #[serde(default)]
    pub group: Option<Rc<str>>,
    /// The reservation epoch it was taken in (see [`Slot::roll`]).
    #[serde(default)]
    pub epoch: u64,
    /// The gateway worker's number for the quota's slot (its id and group), by which a roomy
    /// request's usage is counted in the worker's tally (see [`Tagged`]); 0: none.
    #[serde(default)]
    pub tag: u32,
}

/// A hold as the provider filter gets it when its usage goes to the gateway worker's tally
/// ([`Holds::tally`]): only what counting the usage needs, the quota's slot by the worker's
/// number for it (no text to copy, check or compare on the request path), the metric and
/// the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tagged {
    pub tag: u32,
    pub metric: Metric,
    pub window: u64,
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
    /// The holds as the provider filter decodes them when their usage goes to the tally: the
    /// gateway encodes `holds` so when `tally` is set and every hold has a tag (and `holds`
    /// then decode empty).
    #[serde(default)]
    pub tagged: Vec<Tagged>,
    #[serde(default)]
    pub limits: RateLimits,
    /// What the provider filter's quotas (see [`QuotaDoc::provider`]) reserve an attempt by:
    /// the client body's length (0 when no quota of a provider applies) and its output limit
    /// (0: none set).
    #[serde(default)]
    pub body_len: u64,
    #[serde(default)]
    pub max_output: u64,
    /// The gateway worker's usage tally the provider filter adds each attempt's usage to
    /// (`super::tally`), instead of settling it in the slots; 0: settled in the slots.
    #[serde(default)]
    pub tally: u64,
    /// When the gateway filter admitted the request (Unix nanoseconds; 0: not known): the
    /// start of its first attempt, so that the provider filter's meter need not read the clock
    /// again (the gateway read it for the quotas' windows, in the same event-loop pass).
    #[serde(default)]
    pub admitted_ns: u64,
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

pub(super) fn put_text(out: &mut Vec<u8>, text: &str) -> Option<()> {
    out.extend_from_slice(&u16::try_from(text.len()).ok()?.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Some(())
}

pub(super) fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = (b.get(..n)?, b.get(n..)?);
    *b = rest;
    Some(head)
}

/// The holds' form in the request state: each with its quota's id and group as text.
pub const FORM_FULL: u8 = 0;
/// The holds' form in the request state: each by its tag (see [`Tagged`]).
pub const FORM_TAGGED: u8 = 1;

/// How many decoded ids and groups a thread keeps to share.
const INTERNED: usize = 32;

thread_local! {
    static RECENT: std::cell::RefCell<(Vec<Rc<str>>, usize)> = const { std::cell::RefCell::new((Vec::new(), 0)) };
}

/// A text's bytes as an `Rc<str>`: one of the recent ones when they are the same bytes (no UTF-8
/// check: that text was checked when it was made, about 300 wasm instructions a hold saved),
/// else a new one, checked, kept in their place (the oldest goes); `None`: not UTF-8.
fn interned(bytes: &[u8]) -> Option<Rc<str>> {
    RECENT.with(|r| {
        let Ok(mut r) = r.try_borrow_mut() else { return std::str::from_utf8(bytes).ok().map(Rc::from) };
        let (recent, next) = &mut *r;
        if let Some(hit) = recent.iter().find(|t| crate::bytes::same(t.as_bytes(), bytes)) {
            return Some(hit.clone());
        }
        let made: Rc<str> = Rc::from(std::str::from_utf8(bytes).ok()?);
        if recent.len() < INTERNED {
            recent.push(made.clone());
        } else if let Some(slot) = recent.get_mut(*next % INTERNED) {
            *slot = made.clone();
            *next = next.wrapping_add(1);
        }
        Some(made)
    })
}

/// A length-prefixed text's bytes (not checked as UTF-8).
fn take_bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take(b, 2)?;
    take(b, usize::from(u16::from_le_bytes([len[0], len[1]])))
}

pub(super) fn take_u64(b: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(b, 8)?.try_into().ok()?))
}

impl Hold {
    /// What a request holds of quota `q` after taking `amount` in `window`, reservation epoch
    /// `epoch` (tokens and cost keep their reservation, to give back).
    pub fn taken(q: &QuotaDoc, window: u64, amount: u64, epoch: u64) -> Self {
        Self::of(q, Rc::from(q.id.as_str()), q.group.as_deref().map(Rc::from), window, amount, epoch, 0)
    }

    /// [`Hold::taken`] with the quota's id and group already made (`Rc` clones, no text copied)
    /// and its slot's `tag` (0: none).
    #[allow(clippy::too_many_arguments)]
    pub fn of(q: &QuotaDoc, id: Rc<str>, group: Option<Rc<str>>, window: u64, amount: u64, epoch: u64, tag: u32) -> Self {
        let reserved = if q.metric.is_tokens() { amount } else { 0 };
        Self { id, metric: q.metric, window, reserved, group, epoch, tag }
    }
}

impl Holds {
    /// Whether the holds travel tagged (see [`Holds::tagged`]): with a tally, some hold, and
    /// every hold tagged (no holds travel in the full form).
    fn goes_tagged(&self) -> bool {
        self.tally != 0 && !(self.holds.is_empty() && self.tagged.is_empty()) && self.holds.iter().all(|h| h.tag != 0)
    }

    /// Appends the holds in a compact binary form (no JSON on the request path): their form
    /// ([`FORM_FULL`] or [`FORM_TAGGED`]), a count and per hold its id, group, metric, window,
    /// reservation and epoch (tagged: its tag, metric and window); the rate limits; the body's
    /// length, the output limit, the tally and the admission's time. `None` when a count or a
    /// length does not fit.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Option<()> {
        if self.goes_tagged() {
            out.extend_from_slice(&[FORM_TAGGED, u8::try_from(self.holds.len() + self.tagged.len()).ok()?]);
            let tagged = self.holds.iter().map(|h| (h.tag, h.metric, h.window)).chain(self.tagged.iter().map(|t| (t.tag, t.metric, t.window)));
            for (tag, metric, window) in tagged {
                // Each hold in one write (a few of Vec's checks, not three).
                let mut e = [0u8; 13];
                e[..4].copy_from_slice(&tag.to_le_bytes());
                e[4] = metric.code();
                e[5..].copy_from_slice(&window.to_le_bytes());
                out.extend_from_slice(&e);
            }
        } else {
            // Tagged holds travel only tagged.
            if !self.tagged.is_empty() {
                return None;
            }
            out.extend_from_slice(&[FORM_FULL, u8::try_from(self.holds.len()).ok()?]);
            for h in &self.holds {
                put_text(out, &h.id)?;
                put_text(out, h.group.as_deref().unwrap_or(""))?;
                out.push(h.metric.code());
                out.extend_from_slice(&h.window.to_le_bytes());
                out.extend_from_slice(&h.reserved.to_le_bytes());
                out.extend_from_slice(&h.epoch.to_le_bytes());
            }
        }
        self.limits.encode_into(out);
        let mut tail = [0u8; 32];
        for (at, v) in [self.body_len, self.max_output, self.tally, self.admitted_ns].into_iter().enumerate() {
            tail[at * 8..at * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&tail);
        Some(())
    }

    /// The inverse of [`Holds::encode_into`], all of `bytes` or nothing; tagged holds decode
    /// into [`Holds::tagged`] (`holds` empty). Quota ids and groups are shared with the last ones
    /// decoded on this thread (a worker decodes the same few on every request: one comparison
    /// instead of an allocation each).
    pub fn decode(mut bytes: &[u8]) -> Option<Self> {
        let b = &mut bytes;
        let (form, n) = match take(b, 2)? {
            &[form, n] => (form, n),
            _ => return None,
        };
        let (mut holds, mut tagged) = (Vec::new(), Vec::new());
        match form {
            FORM_FULL => {
                holds.reserve_exact(usize::from(n));
                for _ in 0..n {
                    let id = interned(take_bytes(b)?)?;
                    let group = match take_bytes(b)? {
                        [] => None,
                        g => Some(interned(g)?),
                    };
                    let metric = Metric::from_code(take(b, 1)?[0])?;
                    holds.push(Hold { id, metric, window: take_u64(b)?, reserved: take_u64(b)?, group, epoch: take_u64(b)?, tag: 0 });
                }
            }
            FORM_TAGGED => {
                tagged.reserve_exact(usize::from(n));
                for _ in 0..n {
                    let tag = u32::from_le_bytes(take(b, 4)?.try_into().ok()?);
                    let metric = Metric::from_code(take(b, 1)?[0])?;
                    tagged.push(Tagged { tag, metric, window: take_u64(b)? });
                }
            }
            _ => return None,
        }
        let limits = RateLimits::decode(b)?;
        let (body_len, max_output, tally, admitted_ns) = (take_u64(b)?, take_u64(b)?, take_u64(b)?, take_u64(b)?);
        // Tagged holds are counted in a tally, which a request without one cannot name; no holds
        // travel in the full form.
        if form == FORM_TAGGED && (tally == 0 || n == 0) {
            return None;
        }
        b.is_empty().then_some(Self { holds, tagged, limits, body_len, max_output, tally, admitted_ns })
    }
}
