//! A quota's slot in shared data (`tollgate_contract::quota::Slot`), changed only with
//! compare-and-swap so that the workers of one Envoy count exactly together. Used by the gateway
//! filter (admission, giving back), the provider filter (each attempt's real token usage) and
//! the service VM (the leases the quota authority grants).

use tollgate_contract::quota::Slot;

use crate::abi::CAS_MISMATCH;
use crate::{Host, HostError};

/// Compare-and-swap attempts before a slot is given up as too busy (the request is then
/// refused: quotas fail closed).
const CAS_TRIES: usize = 32;

/// What an addition may not go past.
#[derive(Debug, Clone, Copy)]
pub enum Cap<'a> {
    /// Never refused (settling, giving back).
    None,
    /// A fixed limit (this Envoy's share of an unleased quota).
    Limit(u64),
    /// The lease this Envoy holds, or `floor` if that is more (the fall-back share while the
    /// authority is down). A slot still on an earlier window starts from the lease the service
    /// VM took ahead for this one, under `next`.
    Lease { next: &'a str, floor: u64 },
}

/// Reads a slot, writing a zero one when there is none (or not a slot): two workers doing so at
/// once write the same value, and the caller's compare-and-swap decides between them.
fn read<H: Host>(host: &H, key: &str, window: u64) -> Result<Option<(Slot, u32)>, HostError> {
    let (bytes, cas) = host.shared_data(key)?;
    match bytes.as_deref().and_then(Slot::decode) {
        Some(slot) => Ok(Some((slot, cas))),
        None => {
            host.set_shared_data(key, &Slot::new(window).encode(), None)?;
            Ok(None)
        }
    }
}

fn write<H: Host>(host: &H, key: &str, slot: &Slot, cas: u32) -> Result<bool, HostError> {
    match host.set_shared_data(key, &slot.encode(), Some(cas)) {
        Ok(()) => Ok(true),
        Err(e) if e.status == CAS_MISMATCH => Ok(false),
        Err(e) => Err(e),
    }
}

/// Adds `delta` to a quota slot's use in `window`, refusing (`Ok(None)`) an addition that would
/// go past `cap`. A slot that has moved on to another window is left alone when `settle` (what
/// is given back belongs to a window that is over). Returns the slot as written.
pub fn add<H: Host>(host: &H, key: &str, window: u64, delta: i64, cap: Cap<'_>, settle: bool) -> Result<Option<Slot>, HostError> {
    for _ in 0..CAS_TRIES {
        let Some((stored, cas)) = read(host, key, window)? else { continue };
        if settle && stored.window != window {
            return Ok(Some(stored));
        }
        let mut slot = stored.in_window(window);
        if stored.window != window {
            if let Cap::Lease { next, .. } = cap {
                if let (Some(ahead), _) = host.shared_data(next)? {
                    if let Some(ahead) = Slot::decode(&ahead).filter(|a| a.window == window) {
                        slot = Slot { used: 0, ..ahead };
                    }
                }
            }
        }
        slot.used = if delta >= 0 { slot.used.saturating_add(delta.unsigned_abs()) } else { slot.used.saturating_sub(delta.unsigned_abs()) };
        let limit = match cap {
            Cap::None => None,
            Cap::Limit(l) => Some(l),
            Cap::Lease { floor, .. } => Some(slot.leased.max(floor)),
        };
        if delta > 0 && limit.is_some_and(|l| slot.used > l) {
            return Ok(None);
        }
        if write(host, key, &slot, cas)? {
            return Ok(Some(slot));
        }
    }
    Err(HostError { call: "set_shared_data (quota slot busy)", status: CAS_MISMATCH })
}

/// Adds a lease of `granted` for `window` to the slot under `key`, and records what the
/// authority has `free`. A slot on a later window keeps its own (the grant came too late).
pub fn lease<H: Host>(host: &H, key: &str, window: u64, granted: u64, free: u64) -> Result<Slot, HostError> {
    for _ in 0..CAS_TRIES {
        let Some((stored, cas)) = read(host, key, window)? else { continue };
        if stored.window > window {
            return Ok(stored);
        }
        let mut slot = stored.in_window(window);
        slot.leased = slot.leased.saturating_add(granted);
        slot.free = free;
        if write(host, key, &slot, cas)? {
            return Ok(slot);
        }
    }
    Err(HostError { call: "set_shared_data (quota slot busy)", status: CAS_MISMATCH })
}

/// Takes up to `amount` of the unspent lease out of the slot under `key` for `window` (to give
/// it back to the authority); returns what was taken.
pub fn take_back<H: Host>(host: &H, key: &str, window: u64, amount: u64) -> Result<u64, HostError> {
    for _ in 0..CAS_TRIES {
        let Some((stored, cas)) = read(host, key, window)? else { continue };
        if stored.window != window {
            return Ok(0);
        }
        let taken = amount.min(stored.spare());
        if taken == 0 {
            return Ok(0);
        }
        if write(host, key, &Slot { leased: stored.leased - taken, ..stored }, cas)? {
            return Ok(taken);
        }
    }
    Err(HostError { call: "set_shared_data (quota slot busy)", status: CAS_MISMATCH })
}
