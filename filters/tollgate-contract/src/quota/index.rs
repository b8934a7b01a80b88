//! Which quotas may apply to a key, without looking at every quota: a configuration with a
//! budget for each of 10,000 keys made every request look at 10,000 quotas (about 60 wasm
//! instructions each).

use std::collections::HashMap;

use super::QuotaDoc;

/// From how many quotas a list is indexed by key: below, a request looks at each quota (a few
/// comparisons); above, at those of its key and those of no key.
pub const INDEXED_FROM: usize = 32;

/// The quotas of a list that may apply to a key: by key, those that name it (their `key_id`, or
/// their `keys` when they have no `key_id`), and those that name none (global, a model's, a
/// provider's), each in the list's order. A candidate still has to apply
/// ([`QuotaDoc::applies`]: its model, its key list).
#[derive(Debug, Default)]
pub struct KeyIndex {
    by_key: HashMap<Box<str>, Vec<usize>>,
    unkeyed: Vec<usize>,
}

impl KeyIndex {
    /// The index of `quotas`, or `None` for a list of at most [`INDEXED_FROM`] (looked at whole).
    pub fn of(quotas: &[QuotaDoc]) -> Option<Self> {
        (quotas.len() > INDEXED_FROM).then(|| Self::new(quotas))
    }

    pub fn new(quotas: &[QuotaDoc]) -> Self {
        let mut index = Self::default();
        for (i, q) in quotas.iter().enumerate() {
            match (&q.key_id, &q.keys) {
                (Some(k), _) => index.by_key.entry(k.as_str().into()).or_default().push(i),
                (None, Some(ks)) => {
                    for k in ks {
                        let of_key = index.by_key.entry(k.as_str().into()).or_default();
                        // (A key listed twice is indexed once.)
                        if of_key.last() != Some(&i) {
                            of_key.push(i);
                        }
                    }
                }
                (None, None) => index.unkeyed.push(i),
            }
        }
        index
    }

    /// The quotas that may apply to `key_id`, in the list's order.
    pub fn candidates(&self, key_id: &str) -> Vec<usize> {
        let (mut a, mut b) = (self.by_key.get(key_id).map_or(&[][..], Vec::as_slice), &self.unkeyed[..]);
        let mut out = Vec::with_capacity(a.len() + b.len());
        loop {
            match (a.split_first(), b.split_first()) {
                (Some((&x, rest)), Some((&y, _))) if x < y => (out.push(x), a = rest),
                (_, Some((&y, rest))) => (out.push(y), b = rest),
                (Some((&x, rest)), None) => (out.push(x), a = rest),
                (None, None) => return out,
            };
        }
    }
}

/// The quotas of `quotas` (indexed by `index`, when it is) that satisfy `which` and apply to
/// `key_id` and `model`, in the list's order.
pub fn applicable(quotas: &[QuotaDoc], index: Option<&KeyIndex>, key_id: &str, model: &str, which: impl Fn(&QuotaDoc) -> bool) -> Vec<usize> {
    let applies = |&i: &usize| quotas.get(i).is_some_and(|q| which(q) && q.applies(key_id, model));
    match index {
        None => (0..quotas.len()).filter(applies).collect(),
        Some(index) => index.candidates(key_id).into_iter().filter(applies).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(id: &str, key_id: Option<&str>, keys: Option<&[&str]>, model: Option<&str>) -> QuotaDoc {
        let mut q: QuotaDoc = serde_json::from_value(serde_json::json!({"id": id, "metric": "requests", "limit": 10})).unwrap();
        q.key_id = key_id.map(str::to_owned);
        q.keys = keys.map(|ks| ks.iter().map(|k| (*k).to_owned()).collect());
        q.model = model.map(str::to_owned);
        q
    }

    #[test]
    fn the_index_gives_what_looking_at_every_quota_gives() {
        let mut quotas: Vec<QuotaDoc> = (0..40).map(|i| quota(&format!("q{i}"), Some(&format!("key{i}")), None, None)).collect();
        quotas.insert(3, quota("global", None, None, None));
        quotas.insert(10, quota("team", None, Some(&["key1", "key7", "key7"]), None));
        quotas.insert(20, quota("model", None, None, Some("m2")));
        quotas.push(quota("key7 on m1", Some("key7"), None, Some("m1")));
        let index = KeyIndex::of(&quotas);
        assert!(index.is_some(), "more than {INDEXED_FROM}: indexed");
        for key in ["key7", "key1", "key39", "nobody"] {
            for model in ["m1", "m2"] {
                assert_eq!(applicable(&quotas, index.as_ref(), key, model, |_| true), applicable(&quotas, None, key, model, |_| true), "{key} {model}");
            }
        }
        let ids = |v: Vec<usize>| v.into_iter().map(|i| quotas[i].id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(applicable(&quotas, index.as_ref(), "key7", "m1", |_| true)), ["global", "q7", "team", "key7 on m1"].map(String::from));
        assert!(KeyIndex::of(&quotas[..INDEXED_FROM]).is_none());
    }
}
