//! Quota leases (issue 13): how Envoys share one quota exactly without a network call per
//! request.
//!
//! The control plane is the quota authority: for each quota and window it counts what it has
//! granted (in its database, so that control-plane replicas agree) and never grants more than
//! the limit. Each Envoy holds a lease, a slice of the window's limit, in the quota's
//! shared-data slot ([`crate::quota::Slot::leased`]); its workers spend it with
//! compare-and-swap. The service VM asks for more in the background before a lease runs out
//! and asks for the next window's lease before the window ends, so a request waits on the
//! network only when the quota is nearly spent (the authority then hands out smaller slices,
//! see [`grant_size`]).
//!
//! A worker that must wait calls the authority itself, authenticated by a short-lived ticket
//! the service VM mints from the data-plane token ([`mint_ticket`]) and publishes in shared
//! data: the token itself never enters the filters' VMs.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The authority's grant endpoint on the control plane's internal listener.
pub const GRANTS_PATH: &str = "/internal/v1/quota/grants";
/// Shared data: the leased quotas (JSON `Vec<QuotaDoc>`), published by the gateway filter for
/// the service VM.
pub const SHARED_DOCS_KEY: &str = "tollgate.quota.docs.v1";
/// Shared data: the grant ticket the service VM mints.
pub const SHARED_TICKET_KEY: &str = "tollgate.quota.ticket.v1";
/// Shared data: `b"down"` while the service VM cannot reach the authority (absent or anything
/// else: up).
pub const SHARED_AUTHORITY_KEY: &str = "tollgate.quota.authority.v1";
/// How long a ticket is good for; the service VM mints a new one at half its life.
pub const TICKET_TTL_SECONDS: u64 = 600;
/// The header a worker's grant call carries its ticket in.
pub const HEADER_TICKET: &str = "x-tollgate-quota-ticket";

/// A request for a slice of one quota's window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    pub quota: String,
    pub window: u64,
    /// What the Envoy would like (about two seconds of its use).
    pub want: u64,
    /// The least that is of any use (the request waiting for it; 0 for a background refill).
    #[serde(default)]
    pub need: u64,
    /// Less than `need` that would still do, when the authority has no longer `need` left (a
    /// request that a quota's `fit_output` may lower): then all that is left is granted. 0:
    /// only `need` will do.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub least: u64,
    /// Units of an idle lease of a quota without windows given back first (the authority counts
    /// them as never granted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub returned: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// The Envoy asking (its node id), counted for the fall-back shares.
    pub envoy: String,
    pub asks: Vec<Ask>,
}

/// What the authority granted of one ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub quota: String,
    pub window: u64,
    pub granted: u64,
    /// What is left to grant in the window after this grant.
    pub free: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantResponse {
    pub grants: Vec<Grant>,
}

/// How much of `want` the authority grants when `free` is left of the window and `envoys`
/// Envoys share it. While plenty is left an Envoy gets what it wants; near the end every grant
/// is a fraction of what is left (at least `need`, so that a waiting request is served when it
/// can be), so that the last units go to the Envoys that use them (cf. Google's Doorman). With
/// less than `need` left but at least `least` (a request that can be lowered to fit), all of
/// it.
pub fn grant_size(free: u64, want: u64, need: u64, least: u64, envoys: u64) -> u64 {
    if want == 0 && need == 0 {
        return 0;
    }
    if free < need && least > 0 && free >= least {
        return free;
    }
    if free < need.max(1) {
        return 0;
    }
    let fair = free / envoys.max(1).saturating_mul(2);
    want.min(fair).max(need).max(1).min(free)
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// A grant ticket good until `expires` (Unix seconds): `t1.<expires>.<hex HMAC-SHA256>` keyed
/// by the data-plane token. It lets its holder ask for grants and nothing else.
pub fn mint_ticket(token: &str, expires: u64) -> String {
    let mac = hmac_sha256(token.as_bytes(), format!("tollgate-quota-grant.{expires}").as_bytes());
    format!("t1.{expires}.{}", hex::encode(mac))
}

/// Whether `ticket` was minted with `token` and has not expired at `now`.
pub fn check_ticket(token: &str, ticket: &str, now: u64) -> bool {
    let mut parts = ticket.split('.');
    let (Some("t1"), Some(expires), Some(mac), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else { return false };
    if expires < now || expires > now.saturating_add(2 * TICKET_TTL_SECONDS) {
        return false;
    }
    let expected = mint_ticket(token, expires);
    use subtle::ConstantTimeEq;
    expected.len() == ticket.len() && bool::from(expected.as_bytes().ct_eq(ticket.as_bytes())) && !mac.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn tickets_check_their_token_and_time() {
        let t = mint_ticket("secret", 1000);
        assert!(check_ticket("secret", &t, 999));
        assert!(check_ticket("secret", &t, 1000));
        assert!(!check_ticket("secret", &t, 1001), "expired");
        assert!(!check_ticket("other", &t, 999), "another token");
        assert!(!check_ticket("secret", &t.replace("t1.1000", "t1.1001"), 999), "expiry changed");
        assert!(!check_ticket("secret", &mint_ticket("secret", 10_000), 999), "valid too far ahead");
        for bad in ["", "t1", "t1.1000", "t1.x.00", "t2.1000.00", &format!("{t}.x")] {
            assert!(!check_ticket("secret", bad, 999), "{bad}");
        }
    }

    #[test]
    fn grants_are_what_is_wanted_until_the_end_nears() {
        assert_eq!(grant_size(600, 10, 0, 0, 2), 10);
        assert_eq!(grant_size(20, 10, 0, 0, 2), 5);
        assert_eq!(grant_size(3, 10, 0, 0, 2), 1);
        assert_eq!(grant_size(3, 10, 2, 0, 2), 2, "a waiting request gets what it needs");
        assert_eq!(grant_size(1, 10, 2, 0, 2), 0, "never part of a need");
        assert_eq!(grant_size(0, 10, 0, 0, 2), 0);
        assert_eq!(grant_size(600, 0, 0, 0, 2), 0, "a return asks for nothing");
        assert_eq!(grant_size(5, 100, 5, 0, 1), 5, "never more than is free");
        // A request that can be lowered: its whole need while there is that much, else all
        // that is left down to its least.
        assert_eq!(grant_size(600, 100, 80, 20, 2), 100);
        assert_eq!(grant_size(60, 100, 80, 20, 2), 60, "all that is left");
        assert_eq!(grant_size(19, 100, 80, 20, 2), 0, "not even its least");
    }

    #[test]
    fn grants_never_add_up_to_more_than_the_limit() {
        // Envoys asking in turn, in every order of wants and needs: the sum never passes it.
        for envoys in 1..5 {
            for want in [1, 3, 50] {
                for (need, least) in [(0, 0), (1, 0), (7, 0), (7, 3)] {
                    let (limit, mut granted) = (600u64, 0u64);
                    for _ in 0..10_000 {
                        let g = grant_size(limit - granted, want, need, least, envoys);
                        if g == 0 {
                            break;
                        }
                        granted += g;
                        assert!(granted <= limit);
                    }
                    let floor = if least > 0 { least } else { need };
                    assert!(limit - granted < floor.max(1), "all of it is granted: {envoys} {want} {need} left {}", limit - granted);
                }
            }
        }
    }
}
