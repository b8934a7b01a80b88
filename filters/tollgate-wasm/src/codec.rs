//! The ABI's serialisations, checked: header maps (a count, the name and value lengths, then
//! each name and value followed by a NUL) and property paths (segments joined by NUL). A map
//! the host sends that does not add up is refused (`None`), never indexed out of bounds.

/// Serialises header pairs for `send_local_response` and `http_call`.
pub fn serialize_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    serialize_pairs(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

/// Serialises header pairs given as bytes (a whole map for `set_header_map_pairs`).
pub fn serialize_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let (count, size) = pairs.clone().fold((0usize, 4usize), |(c, s), (n, v)| (c + 1, s + n.len() + v.len() + 10));
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len32(count).to_le_bytes());
    for (name, value) in pairs.clone() {
        out.extend_from_slice(&len32(name.len()).to_le_bytes());
        out.extend_from_slice(&len32(value.len()).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A header map as the host sent it, read in place: one buffer and one index, where owned pairs
/// cost two allocations (and two frees) a header on every request of both filters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderMap {
    bytes: Vec<u8>,
    /// Each pair's name and value as (start, end) in `bytes`.
    at: Vec<(usize, usize, usize, usize)>,
}

impl HeaderMap {
    /// Indexes a serialised map; `None` when it does not add up.
    pub fn parse(bytes: Vec<u8>) -> Option<Self> {
        if bytes.is_empty() {
            return Some(Self::default());
        }
        let count = usize::try_from(read_u32(&bytes, 0)?).ok()?;
        let mut sizes_at = 4usize;
        let mut data_at = count.checked_mul(8)?.checked_add(4)?;
        if data_at > bytes.len() {
            return None;
        }
        let mut at = Vec::with_capacity(count);
        for _ in 0..count {
            let name_len = usize::try_from(read_u32(&bytes, sizes_at)?).ok()?;
            let value_len = usize::try_from(read_u32(&bytes, sizes_at + 4)?).ok()?;
            sizes_at += 8;
            let name = (data_at, data_at.checked_add(name_len)?);
            data_at = name.1.checked_add(1)?;
            let value = (data_at, data_at.checked_add(value_len)?);
            data_at = value.1.checked_add(1)?;
            if value.1 > bytes.len() {
                return None;
            }
            at.push((name.0, name.1, value.0, value.1));
        }
        Some(Self { bytes, at })
    }

    /// Each header in order. A name that is not UTF-8 reads as empty (it never matches a name
    /// the filter looks for).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.at.iter().map(|&(n0, n1, v0, v1)| {
            let name = self.bytes.get(n0..n1).and_then(|n| std::str::from_utf8(n).ok()).unwrap_or_default();
            (name, self.bytes.get(v0..v1).unwrap_or_default())
        })
    }

    /// Each header in order, its name as bytes.
    pub fn iter_bytes(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.at.iter().map(|&(n0, n1, v0, v1)| (self.bytes.get(n0..n1).unwrap_or_default(), self.bytes.get(v0..v1).unwrap_or_default()))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        // By bytes: no UTF-8 check of every name on the way.
        self.iter_bytes().find(|(n, _)| *n == name.as_bytes()).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

/// A property path as the ABI takes it: segments joined by NUL.
pub fn serialize_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.iter().map(|p| p.len() + 1).sum());
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(part.as_bytes());
    }
    out
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// The pairs as owned text (names and values here are UTF-8).
    fn owned(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        map.iter().map(|(n, v)| (n.to_owned(), v.to_vec())).collect()
    }

    fn bytes_map(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn maps_round_trip() {
        for pairs in [vec![], vec![(":path", "/v1/x")], vec![("a", ""), ("", "b"), ("x-long", "value with spaces")]] {
            let bytes = serialize_map(&pairs);
            assert_eq!(HeaderMap::parse(bytes).as_ref().map(owned), Some(bytes_map(&pairs)));
        }
        assert_eq!(HeaderMap::parse(Vec::new()).as_ref().map(owned), Some(vec![]));
        for pairs in [vec![], vec![("a", "1")], vec![(":path", "/v1/x"), ("x", ""), ("", "v"), ("a", "2")]] {
            let map = HeaderMap::parse(serialize_map(&pairs)).unwrap();
            assert_eq!(map.len(), pairs.len());
            assert_eq!(map.iter_bytes().map(|(n, _)| n.to_vec()).collect::<Vec<_>>(), pairs.iter().map(|(n, _)| n.as_bytes().to_vec()).collect::<Vec<_>>());
            if let Some((n, v)) = pairs.first() {
                assert_eq!(map.get(n), Some(v.as_bytes()));
            }
            assert_eq!(map.get("absent"), None);
        }
    }

    #[test]
    fn malformed_maps_are_refused_without_panicking() {
        let good = serialize_map(&[("name", "value"), ("n2", "v2")]);
        for cut in 1..good.len() - 1 {
            // every truncation either fails or (cutting only the final NUL) still reads
            let _ = HeaderMap::parse(good.get(..cut).unwrap().to_vec());
        }
        assert_eq!(HeaderMap::parse(vec![1, 0, 0]), None);
        assert_eq!(HeaderMap::parse(u32::MAX.to_le_bytes().to_vec()), None);
        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(HeaderMap::parse(huge), None);
    }

    #[test]
    fn paths_are_nul_joined() {
        assert_eq!(serialize_path(&["xds", "upstream_host_metadata"]), b"xds\0upstream_host_metadata".to_vec());
        assert_eq!(serialize_path(&["a"]), b"a".to_vec());
        assert!(serialize_path(&[]).is_empty());
    }
}
