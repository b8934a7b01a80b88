use super::*;
use super::holds::{FORM_FULL, FORM_TAGGED};

fn quota(metric: Metric, window_seconds: u64) -> QuotaDoc {
    QuotaDoc { id: "quota_1".into(), metric, window_seconds, limit: 60, lease: false, share: 0, key_id: Some("key_a".into()), model: None, keys: None, periods: Vec::new(), limits: Vec::new(), group: None, provider: None, fit_output: 0 }
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
fn the_output_limit_is_lowered_to_what_fits() {
    // 2048 bytes: 512 input tokens.
    assert_eq!(fit_output(Metric::TotalTokens, 2048, 1000, 16, 600, None), Some(88));
    assert_eq!(fit_output(Metric::OutputTokens, 2048, 1000, 16, 600, None), Some(600));
    // Not even the floor fits; the floor is not below what the client asked; not an output metric.
    assert_eq!(fit_output(Metric::TotalTokens, 2048, 1000, 16, 527, None), None);
    assert_eq!(fit_output(Metric::TotalTokens, 2048, 16, 16, 600, None), None);
    assert_eq!(fit_output(Metric::InputTokens, 2048, 1000, 16, 600, None), None);
    assert_eq!(fit_output(Metric::Requests, 2048, 1000, 16, 600, None), None);
    assert_eq!(fit_output(Metric::TotalTokens, 2048, 1000, 0, 600, None), None);
    // A budget: 512 input tokens at 150 nano-dollars, output at 600 each.
    let price = crate::config::Price { input: 150, output: 600, cache_read: 0, cache_write: 0 };
    let room = 512 * 150 + 40 * 600 + 599;
    assert_eq!(fit_output(Metric::CostUsd, 2048, 4096, 1, room, Some(&price)), Some(40));
    assert_eq!(reservation(Metric::CostUsd, 2048, Some(40), Some(&price)), room - 599);
    assert_eq!(fit_output(Metric::CostUsd, 2048, 4096, 1, 512 * 150 + 599, Some(&price)), None);
    // What fits already (the caller never asks): the largest below `current`.
    assert_eq!(fit_output(Metric::OutputTokens, 0, 50, 1, 1000, None), Some(49));
}

#[test]
fn holds_round_trip_and_refuse_anything_else() {
    let h = Holds {
        holds: vec![
            Hold { id: "quota_a".into(), metric: Metric::CostUsd, window: 0, reserved: 123_456, group: Some("k:key_1".into()), epoch: 490_000, tag: 0 },
            Hold { id: "quota_b".into(), metric: Metric::Requests, window: 29_000_000, reserved: 0, group: None, epoch: 0, tag: 0 },
        ],
        tagged: Vec::new(),
        limits: RateLimits { requests: Some((60, 59, Some(12))), tokens: Some((1000, 10, None)), anthropic_at: Some(7) },
        body_len: 2048,
        max_output: 16,
        tally: 0x1234,
        admitted_ns: 1_780_000_000_123_456_789,
    };
    let mut bytes = Vec::new();
    h.encode_into(&mut bytes).unwrap();
    assert_eq!(Holds::decode(&bytes), Some(h));
    // Decoded again, the ids and groups are the ones decoded before (shared, not allocated).
    let (a, b) = (Holds::decode(&bytes).unwrap(), Holds::decode(&bytes).unwrap());
    assert!(std::rc::Rc::ptr_eq(&a.holds[0].id, &b.holds[0].id));
    assert!(std::rc::Rc::ptr_eq(a.holds[0].group.as_ref().unwrap(), b.holds[0].group.as_ref().unwrap()));
    for cut in 0..bytes.len() {
        assert_eq!(Holds::decode(&bytes[..cut]), None);
    }
    bytes.push(0);
    assert_eq!(Holds::decode(&bytes), None, "trailing bytes");
    assert_eq!(Holds::decode(&[0, 1, 1, 0, b'q', 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None, "unknown metric");
    assert_eq!(Holds::decode(&[2]), None, "unknown form");
}

#[test]
fn roomy_holds_travel_by_their_tags() {
    let hold = |tag: u32, metric: Metric| Hold { id: "a quota with a long id".into(), metric, window: 29_000_000, reserved: 4096, group: Some("a long group".into()), epoch: 490_000, tag };
    let mut h = Holds { holds: vec![hold(3, Metric::TotalTokens), hold(4, Metric::CostUsd)], tally: 0x1234, body_len: 2048, ..Holds::default() };
    let mut bytes = Vec::new();
    h.encode_into(&mut bytes).unwrap();
    assert_eq!(bytes[..2], [FORM_TAGGED, 2]);
    assert!(!bytes.windows(5).any(|w| w == b"quota"), "no text");
    let got = Holds::decode(&bytes).unwrap();
    assert!(got.holds.is_empty());
    assert_eq!(got.tagged, vec![Tagged { tag: 3, metric: Metric::TotalTokens, window: 29_000_000 }, Tagged { tag: 4, metric: Metric::CostUsd, window: 29_000_000 }]);
    assert_eq!((got.tally, got.body_len), (0x1234, 2048));
    let mut again = Vec::new();
    got.encode_into(&mut again).unwrap();
    assert_eq!(again, bytes, "decoded, it encodes to the same bytes");
    for cut in 0..bytes.len() {
        assert_eq!(Holds::decode(&bytes[..cut]), None);
    }
    // Without a tally, or with a hold the worker has no tag for, they travel whole.
    for untagged in [Holds { tally: 0, ..h.clone() }, Holds { holds: vec![hold(3, Metric::TotalTokens), hold(0, Metric::CostUsd)], ..h.clone() }] {
        bytes.clear();
        untagged.encode_into(&mut bytes).unwrap();
        assert_eq!(bytes[0], FORM_FULL);
        assert_eq!(Holds::decode(&bytes).map(|d| d.holds.len()), Some(2));
    }
    // A tagged form that names no tally, or no hold, is refused.
    h.holds.truncate(1);
    bytes.clear();
    h.encode_into(&mut bytes).unwrap();
    let tally_at = bytes.len() - 16;
    bytes[tally_at..tally_at + 8].fill(0);
    assert_eq!(Holds::decode(&bytes), None);
    let mut none = vec![FORM_TAGGED, 0, 0];
    none.extend([0u64, 0, 0x1234, 0].iter().flat_map(|v| v.to_le_bytes()));
    assert_eq!(Holds::decode(&none), None);
    none[0] = FORM_FULL;
    assert_eq!(Holds::decode(&none).map(|d| d.tally), Some(0x1234), "the same with no holds, in the full form");
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
    for n in [0, 7, 10, 59, 99, 100, 101, 999, 1_000_000, u64::MAX] {
        assert_eq!(crate::bytes::decimal(n, &mut [0u8; 24]), n.to_string().as_bytes());
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

#[test]
fn is_slot_key_says_what_slot_key_makes() {
    for (id, group) in [("quota_a", None), ("quota_a", Some("k1")), ("g.k1", None), ("q", Some(""))] {
        let key = slot_key(id, group);
        assert!(is_slot_key(&key, id, group), "{key}");
        for (other_id, other_group) in [("quota_b", None), ("quota_a", Some("k2")), ("quota_a", Some("k")), ("quota_aa", None)] {
            assert_eq!(is_slot_key(&key, other_id, other_group), slot_key(other_id, other_group) == key, "{key} {other_id} {other_group:?}");
        }
    }
    assert!(!is_slot_key("other.prefix.quota_a", "quota_a", None));
}

#[test]
fn rate_limit_headers_replace_only_where_a_provider_may_send_the_same_names() {
    use crate::config::ProviderKind::*;
    let openai = RateLimits { requests: Some((60, 59, Some(12))), ..RateLimits::default() };
    let anthropic = RateLimits { anthropic_at: Some(7), ..openai };
    let replaced = |limits: &RateLimits| [Openai, Azure, Unknown, Anthropic, Bedrock, Sagemaker].map(|k| limits.provider_may_send(k));
    assert_eq!(replaced(&openai), [true, true, true, false, false, false], "x-ratelimit-*: OpenAI-style servers only");
    assert_eq!(replaced(&anthropic), [true, true, true, true, false, false], "anthropic-ratelimit-*: Anthropic, and any OpenAI-compatible server");
}
