//! Byte-string equality for the filters' hot paths. `==` on slices calls `memcmp`, which in
//! wasm is a loop a byte at a time (about 26 wasm instructions a byte: 4,100 to check that a
//! 160-byte stream chunk passed unchanged); this compares 16 bytes a step. For short strings
//! (header names) `==` stays cheaper: measured, this cost more there.

/// Whether `a` and `b` hold the same bytes.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    let word = |x: &[u8]| u128::from_ne_bytes(x.try_into().unwrap_or_default());
    ac.zip(bc).all(|(x, y)| word(x) == word(y)) && ar.iter().zip(br).all(|(x, y)| x == y)
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
    use super::{same, text};

    #[test]
    fn text_replaces_only_what_is_not_utf8() {
        assert!(matches!(text(b"plain"), std::borrow::Cow::Borrowed("plain")));
        assert_eq!(text(b"a\xffb"), "a\u{FFFD}b");
    }

    #[test]
    fn same_is_equality() {
        let a: Vec<u8> = (0..100u8).collect();
        for len in [0, 1, 15, 16, 17, 32, 33, 100] {
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
