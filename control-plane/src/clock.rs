//! The one place the control plane reads the wall clock.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The wall clock as a `SystemTime` (credential expiry times are in it).
pub fn system_now() -> SystemTime {
    SystemTime::now()
}
