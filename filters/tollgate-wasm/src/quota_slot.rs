//! A quota's slot in shared data (`tollgate_contract::quota::Slot`), changed only with
//! compare-and-swap so that the workers of one Envoy count exactly together. Used by the gateway
//! filter (admission, giving back) and the provider filter (each attempt's real token usage).

use tollgate_contract::quota::Slot;

use crate::abi::CAS_MISMATCH;
use crate::{Host, HostError};

/// Compare-and-swap attempts before a slot is given up as too busy (the request is then
/// refused: quotas fail closed).
const CAS_TRIES: usize = 32;

/// Adds `delta` to a quota slot for `window`. With `limit`, refuses (`Ok(None)`) an addition
/// that would go over it; without, never refuses. A slot that has moved on to another window
/// is left alone when `settle` (what is given back belongs to a window that is over).
pub fn add<H: Host>(host: &H, key: &str, window: u64, delta: i64, limit: Option<u64>, settle: bool) -> Result<Option<u64>, HostError> {
    for _ in 0..CAS_TRIES {
        let (bytes, cas) = host.shared_data(key)?;
        let Some(stored) = bytes.as_deref().and_then(Slot::decode) else {
            // Absent (or not a slot): start it at zero; two workers doing so at once write the
            // same value, and the compare-and-swap below decides between them.
            host.set_shared_data(key, &Slot { window, used: 0 }.encode(), None)?;
            continue;
        };
        if settle && stored.window != window {
            return Ok(Some(stored.used));
        }
        let slot = stored.in_window(window);
        let used = if delta >= 0 { slot.used.saturating_add(delta.unsigned_abs()) } else { slot.used.saturating_sub(delta.unsigned_abs()) };
        if delta > 0 && limit.is_some_and(|l| used > l) {
            return Ok(None);
        }
        match host.set_shared_data(key, &Slot { window, used }.encode(), Some(cas)) {
            Ok(()) => return Ok(Some(used)),
            Err(e) if e.status == CAS_MISMATCH => continue,
            Err(e) => return Err(e),
        }
    }
    Err(HostError { call: "set_shared_data (quota slot busy)", status: CAS_MISMATCH })
}

