//! When to ask the AWS credential chain again. Pure: the times are passed in.
//!
//! Credentials with an expiry are renewed ahead of it: `REFRESH_MARGIN` (5 minutes) before, or
//! at half their lifetime when they live less than twice that, so short-lived ones (15 minute
//! STS sessions, ECS test doubles) are still renewed while valid. Credentials without an expiry
//! (environment, static profile keys) are read again every `STATIC_RECHECK`, so an edited
//! profile file or a rotated `credential_process` result is picked up. A failed attempt is
//! retried with exponential back-off (`RETRY_BASE` doubling up to `RETRY_MAX`), and the
//! credentials obtained before stay in use for as long as they are valid.

use std::time::{Duration, SystemTime};

/// How long before expiry credentials are renewed.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// How often credentials without an expiry are obtained again.
pub const STATIC_RECHECK: Duration = Duration::from_secs(5 * 60);
/// The shortest wait between two attempts (a chain that keeps answering with credentials that
/// are about to expire is not asked in a loop).
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// First retry delay after a failure; doubles with each further failure.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// When to renew credentials obtained at `obtained_at` that expire at `expires_at` (`None`:
/// they do not expire). Never earlier than `now + MIN_INTERVAL`.
pub fn next_refresh(obtained_at: SystemTime, expires_at: Option<SystemTime>, now: SystemTime) -> SystemTime {
    let earliest = now + MIN_INTERVAL;
    let Some(expires_at) = expires_at else {
        return (obtained_at + STATIC_RECHECK).max(earliest);
    };
    let lifetime = expires_at.duration_since(obtained_at).unwrap_or(Duration::ZERO);
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    expires_at.checked_sub(margin).unwrap_or(expires_at).max(earliest)
}

/// How long to wait after the `failures`-th failure in a row (1 for the first).
pub fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    RETRY_BASE.saturating_mul(1u32 << exponent).min(RETRY_MAX)
}

/// When to try again after the `failures`-th failure in a row at `now`, given that the
/// credentials still in use (if any) expire at `valid_until`: the back-off delay, but never
/// so late that credentials that could still be renewed in time expire first (one
/// `MIN_INTERVAL` before their expiry at the latest, and never before `now + MIN_INTERVAL`).
pub fn next_retry(failures: u32, valid_until: Option<SystemTime>, now: SystemTime) -> SystemTime {
    let backoff = now + retry_delay(failures);
    let earliest = now + MIN_INTERVAL;
    match valid_until.and_then(|t| t.checked_sub(MIN_INTERVAL)) {
        Some(deadline) if deadline < backoff => deadline.max(earliest),
        _ => backoff,
    }
}

/// Whether credentials expiring at `expires_at` can still be used at `now`.
pub fn still_valid(expires_at: Option<SystemTime>, now: SystemTime) -> bool {
    expires_at.is_none_or(|t| now < t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn long_lived_credentials_are_renewed_five_minutes_before_expiry() {
        // a one-hour STS session obtained at t=0
        assert_eq!(next_refresh(t(0), Some(t(3600)), t(0)), t(3600 - 300));
        // six hours (ECS task role): same margin
        assert_eq!(next_refresh(t(0), Some(t(6 * 3600)), t(10)), t(6 * 3600 - 300));
    }

    #[test]
    fn short_lived_credentials_are_renewed_at_half_their_lifetime() {
        assert_eq!(next_refresh(t(0), Some(t(600)), t(0)), t(300)); // exactly twice the margin
        assert_eq!(next_refresh(t(0), Some(t(240)), t(0)), t(120));
        assert_eq!(next_refresh(t(100), Some(t(120)), t(100)), t(110));
    }

    #[test]
    fn expired_or_nearly_expired_credentials_are_renewed_soon_but_not_in_a_loop() {
        // already expired when obtained: as soon as allowed
        assert_eq!(next_refresh(t(50), Some(t(40)), t(50)), t(51));
        // expires within the minimum interval
        assert_eq!(next_refresh(t(0), Some(t(1)), t(0)), t(1));
        // computed late (the refresher was busy): never in the past
        assert_eq!(next_refresh(t(0), Some(t(3600)), t(4000)), t(4001));
    }

    #[test]
    fn credentials_without_expiry_are_checked_again_periodically() {
        assert_eq!(next_refresh(t(0), None, t(0)), t(300));
        assert_eq!(next_refresh(t(0), None, t(1000)), t(1001));
    }

    #[test]
    fn back_off_doubles_up_to_the_maximum() {
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(0), RETRY_BASE);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn retries_come_before_the_credentials_in_use_expire() {
        // nothing in use: plain back-off
        assert_eq!(next_retry(5, None, t(0)), t(16));
        // in use until far later: plain back-off
        assert_eq!(next_retry(7, Some(t(3600)), t(0)), t(60));
        // in use until t=30: the 60 s back-off is cut to one try before they expire
        assert_eq!(next_retry(8, Some(t(30)), t(0)), t(29));
        // about to expire or expired: the minimum interval
        assert_eq!(next_retry(8, Some(t(1)), t(0)), t(1));
        assert_eq!(next_retry(8, Some(t(0)), t(5)), t(6));
    }

    #[test]
    fn validity_is_judged_against_now() {
        assert!(still_valid(None, t(0)));
        assert!(still_valid(Some(t(10)), t(9)));
        assert!(!still_valid(Some(t(10)), t(10)));
    }
}
