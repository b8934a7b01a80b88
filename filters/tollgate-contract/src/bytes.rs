//! Byte-string equality for the filters' hot paths. `==` on slices calls `memcmp`, which in
//! wasm is a loop a byte at a time (about 26 wasm instructions a byte: 4,100 to check that a
//! 160-byte stream chunk passed unchanged, 500 to find that two 20-byte quota ids are the
//! same); this compares 16, 8 or 4 bytes a step, the last step overlapping the one before
//! instead of a byte-at-a-time tail.

/// Whether `a` and `b` hold the same bytes.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // The words at `i` compared as integers (not arrays, whose `==` is a `memcmp` call);
    // out of bounds (which cannot happen) reads as unequal.
    let w16 = |x: &[u8], i: usize| x.get(i..i + 16).and_then(|s| s.try_into().ok()).map(u128::from_ne_bytes);
    let w8 = |x: &[u8], i: usize| x.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_ne_bytes);
    let w4 = |x: &[u8], i: usize| x.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_ne_bytes);
    let eq16 = |i: usize| matches!((w16(a, i), w16(b, i)), (Some(x), Some(y)) if x == y);
    let eq8 = |i: usize| matches!((w8(a, i), w8(b, i)), (Some(x), Some(y)) if x == y);
    let eq4 = |i: usize| matches!((w4(a, i), w4(b, i)), (Some(x), Some(y)) if x == y);
    match n {
        0 => true,
        1..4 => a.iter().zip(b).all(|(x, y)| x == y),
        4..8 => eq4(0) && eq4(n - 4),
        8..16 => eq8(0) && eq8(n - 8),
        _ => {
            let mut i = 0;
            while i + 16 <= n {
                if !eq16(i) {
                    return false;
                }
                i += 16;
            }
            // The last 16 bytes, overlapping what was compared.
            i == n || eq16(n - 16)
        }
    }
}

/// Whether two texts are the same (see [`same`]).
pub fn same_str(a: &str, b: &str) -> bool {
    same(a.as_bytes(), b.as_bytes())
}

/// `n` in decimal at the end of `buf` (at most 20 digits), returned as that slice.
pub fn decimal(mut n: u64, buf: &mut [u8]) -> &[u8] {
    let mut i = buf.len();
    while let Some(slot) = i.checked_sub(1).and_then(|j| buf.get_mut(j)) {
        i -= 1;
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or_default()
}

/// Bytes as text, invalid UTF-8 replaced: `from_utf8` first, as `from_utf8_lossy` walks even
/// valid text in chunks (about 25 wasm instructions a byte against 3).
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    std::str::from_utf8(bytes).map_or_else(|_| String::from_utf8_lossy(bytes), std::borrow::Cow::Borrowed)
}

#[cfg(test)]
mod tests {
    use super::{decimal, same, text};
    use proptest::prelude::*;

    proptest! {
        /// Any number, in a buffer long enough or too short (its lowest digits), as `to_string`.
        #[test]
        fn decimal_is_to_string(n in any::<u64>(), len in 0usize..24) {
            let s = n.to_string();
            let mut long = [0u8; 24];
            prop_assert_eq!(decimal(n, &mut long), s.as_bytes());
            let mut short = vec![0u8; len];
            prop_assert_eq!(decimal(n, &mut short), &s.as_bytes()[s.len().saturating_sub(len)..]);
        }
    }

    /// Every length of number and its edges (the property test's random numbers are nearly all
    /// 19 or 20 digits long), in buffers of every length up to the number's and one more.
    #[test]
    fn decimal_at_the_edges() {
        let mut ns = vec![0, 1, 9, u64::MAX, u64::MAX - 1];
        let mut p = 10u64;
        while let Some(next) = p.checked_mul(10) {
            ns.extend([p - 1, p, p + 1, p + p / 2]);
            p = next;
        }
        ns.extend([p - 1, p, p + 1]);
        for n in ns {
            let s = n.to_string();
            for len in 0..=s.len() + 1 {
                let mut buf = vec![b'x'; len];
                assert_eq!(decimal(n, &mut buf), &s.as_bytes()[s.len().saturating_sub(len)..], "{n} in {len}");
            }
        }
    }

    #[test]
    fn text_replaces_only_what_is_not_utf8() {
        assert!(matches!(text(b"plain"), std::borrow::Cow::Borrowed("plain")));
        assert_eq!(text(b"a\xffb"), "a\u{FFFD}b");
    }

    #[test]
    fn same_is_equality() {
        let a: Vec<u8> = (0..100u8).collect();
        for len in [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 22, 31, 32, 33, 47, 100] {
            assert!(same(&a[..len], &a[..len]));
            for at in 0..len {
                let mut b = a[..len].to_vec();
                b[at] ^= 1;
                assert!(!same(&a[..len], &b), "{len} {at}");
            }
        }
        assert!(!same(&a[..16], &a[..17]));
    }
}
