//! A worker's credits (see the parent module's documentation): taken with an admission's
//! compare-and-swap, spent in memory by the worker's next requests, given back on its tick.

#[allow(clippy::wildcard_imports)]
use super::*;

thread_local! {
    /// The worker's credits (see the module's documentation).
    static CREDITS: RefCell<Keyed<usize, Credit>> = RefCell::default();
}

/// How many requests' amounts a worker's credit on a quota is (see the module's documentation).
pub const CREDIT_REQUESTS: u64 = 64;

/// What a worker's credit on quota `q` is for a request taking `amount` of limit `limit`: at
/// most a 64th of the limit, and none when that is less than four requests' amounts (a quota
/// under 256 of them stays exact request by request) or for concurrency.
pub(super) fn credit_size(q: &QuotaDoc, amount: u64, limit: u64) -> u64 {
    let size = amount.saturating_mul(CREDIT_REQUESTS).min(limit / 64);
    if q.metric == Metric::Concurrency || amount == 0 || size < amount.saturating_mul(4) {
        0
    } else {
        size
    }
}

/// A worker's credit on one quota: the quota's id, group, metric, window and reservation epoch
/// as a hold has them, with what is left of the credit as its `reserved`, and what the quota had
/// left as the worker last saw it, less what the credit has been spent on since (for the
/// rate-limit headers), under the limit it was taken under; the quota's position in the
/// configuration (credits end with it), and until when its period holds (the window's end, or
/// a schedule's change of the limit: the credit ends there).
pub(super) struct Credit {
    pub(super) hold: Hold,
    pub(super) left: u64,
    pub(super) limit: u64,
    pub(super) ends: Option<u64>,
    pub(super) quota: usize,
    pub(super) until: u64,
}

/// Keeps the credit an admission took of quota `i` (`q`) beside the request (`extra`, in
/// `period` and reservation epoch `epoch`; `left`: what the quota has left after the request).
/// The quota's older credit, if any, is given back on the tick; so is this one unless `keep`.
#[allow(clippy::too_many_arguments)]
pub(super) fn keep_credit(qk: &QuotaKeys, i: usize, q: &QuotaDoc, period: quota::Period, now: u64, epoch: u64, extra: u64, left: u64, keep: bool) {
    let (id, group, tag) = match qk.names.get(i) {
        Some((id, group, tag)) => (id.clone(), group.clone(), *tag),
        None => (Rc::from(q.id.as_str()), q.group.as_deref().map(Rc::from), 0),
    };
    let until = q.period_until(now);
    let credit = Credit { hold: Hold { id, metric: q.metric, window: period.window, reserved: extra, group, epoch, tag }, left, limit: period.limit, ends: period.ends, quota: i, until };
    if !keep {
        defer(vec![Change { back: extra, hold: credit.hold, add: 0 }]);
        return;
    }
    let old = CREDITS.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else { return Some(credit) };
        c.insert(i, credit)
    });
    if let Some(old) = old.filter(|o| o.hold.reserved > 0) {
        defer(vec![Change { back: old.hold.reserved, hold: old.hold, add: 0 }]);
    }
}

/// The most quotas of a group a request spends credits of.
pub(super) const CREDIT_GROUP_MAX: usize = 8;

/// Spends the worker's credits on every quota of a group (`members`) for a request, when each
/// has one for this window, limit and reservation epoch with room for the request's amount (else
/// nothing is spent: `None`), and notes what it took (see [`note`]): whether the request is
/// roomy.
#[allow(clippy::too_many_arguments)]
pub(super) fn spend_credits(qk: &QuotaKeys, quotas: &[QuotaDoc], members: impl Iterator<Item = usize>, r: &Asking<'_>, out: Option<u64>, epoch: u64, holds: &mut Vec<Hold>, requests: &mut Option<quota::Standing>, tokens: &mut Option<quota::Standing>) -> Option<bool> {
    CREDITS.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        if c.is_empty() {
            return None;
        }
        // Each member's credit (one of this configuration's, its period still on) and amount.
        let mut found: [(usize, u64); CREDIT_GROUP_MAX] = [(0, 0); CREDIT_GROUP_MAX];
        let mut n = 0;
        for i in members {
            let a = amount(quotas.get(i)?, r, out);
                let at = c.position(i)?;
            c.at(at).filter(|k| r.now < k.until && k.hold.epoch == epoch && k.hold.reserved >= a)?;
            *found.get_mut(n)? = (at, a);
            n += 1;
        }
        let mut roomy = true;
        for &(at, a) in found.get(..n).unwrap_or_default() {
            let Some(k) = c.at_mut(at) else { continue };
            let Some(q) = quotas.get(k.quota) else { continue };
            k.hold.reserved -= a;
            k.left = k.left.saturating_sub(a);
            let period = quota::Period { window: k.hold.window, limit: k.limit, ends: k.ends };
            roomy &= note(qk, k.quota, q, period, a, epoch, k.left, r.now, holds, requests, tokens);
        }
        Some(roomy)
    })
}

/// What is left of the worker's credits, kept to be given back (with the tick's writes).
pub(super) fn give_back_credits() {
    let credits = CREDITS.with(|c| c.try_borrow_mut().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default());
    defer(credits.into_values().filter(|c| c.hold.reserved > 0).map(|c| Change { back: c.hold.reserved, hold: c.hold, add: 0 }).collect());
}
