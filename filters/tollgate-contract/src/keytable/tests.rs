use proptest::prelude::*;

use super::*;
use crate::keys::{digest, AllowedModels, KeyRejection, Role};

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn spec<'a>(secret: &str, id: &'a str, models: Option<&'a [String]>, expires_at: Option<u64>) -> EntrySpec<'a> {
    EntrySpec { digest: digest(secret), id, role: Role::User, expires_at, models }
}

#[test]
fn finds_keys_checks_expiry_and_models() {
    let only = names(&["a", "b"]);
    let table = Table::from_entries(
        7,
        1,
        &[
            spec("tg-alpha", "k1", None, None),
            spec("tg-beta", "k2", Some(&only), Some(100)),
            EntrySpec { role: Role::Admin, ..spec("tg-admin", "adm", None, None) },
        ],
    )
    .unwrap();
    assert_eq!(table.len(), 3);
    let k1 = table.authenticate("tg-alpha", 0).unwrap();
    assert_eq!((k1.id.as_str(), k1.models, k1.expires_at), ("k1", AllowedModels::All, None));
    let k2 = table.authenticate("tg-beta", 99).unwrap();
    assert_eq!((k2.id.as_str(), k2.models, k2.expires_at), ("k2", AllowedModels::Only(only.clone()), Some(100)));
    assert_eq!(table.authenticate("tg-beta", 100), Err(KeyRejection::Expired));
    assert_eq!(table.authenticate("tg-admin", 0).unwrap().role, Role::Admin);
    assert_eq!(table.authenticate("tg-gamma", 0), Err(KeyRejection::Unknown));
    assert_eq!(table.authenticate("", 0), Err(KeyRejection::Unknown));
    assert_eq!(Table::default().authenticate("tg-alpha", 0), Err(KeyRejection::Unknown));
    // the clock is read only for a key that expires
    assert!(table.authenticate_at("tg-alpha", || unreachable!()).is_ok());
}

#[test]
fn many_keys_in_one_shard_and_shared_prefixes() {
    // Digests crafted to share the shard byte and the 8-byte prefix: each still found exactly.
    let ids: Vec<String> = (0..600).map(|i| format!("key-{i}")).collect();
    let mut entries = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut d = [0u8; 32];
        d[0] = 42;
        d[8] = (i / 256) as u8;
        d[9] = (i % 256) as u8;
        if i % 3 == 0 {
            d[1] = 1; // another prefix
        }
        entries.push(EntrySpec { digest: d, id, role: Role::User, expires_at: None, models: None });
    }
    let bytes = encode_shard(42, 1, 1, &entries).unwrap();
    assert_eq!(bytes.len(), shard::HEADER_LEN + 600 * shard::RECORD_LEN + 4 + 3 + ids.iter().map(|i| i.len() + 1).sum::<usize>());
    let shard = Shard::decode(&bytes, 42).unwrap();
    for e in &entries {
        assert_eq!(shard.lookup(&e.digest).unwrap().id, e.id);
    }
    let mut missing = entries[5].digest;
    missing[31] = 9;
    assert!(shard.lookup(&missing).is_none());
}

#[test]
fn allowance_sets_are_shared_within_a_shard() {
    let list = names(&["m"]);
    let ids: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    let entries: Vec<EntrySpec<'_>> = ids
        .iter()
        .map(|id| EntrySpec { digest: { let mut d = digest(id); d[0] = 3; d }, id, role: Role::User, expires_at: None, models: Some(&list) })
        .collect();
    let bytes = encode_shard(3, 1, 1, &entries).unwrap();
    // one set: count u32 + kind + n + (len + "m")
    let ids_len: usize = ids.iter().map(|i| i.len() + 1).sum();
    assert_eq!(bytes.len(), shard::HEADER_LEN + 50 * shard::RECORD_LEN + 4 + 3 + 3 + ids_len);
}

#[test]
fn encoder_refuses_what_the_decoder_would() {
    let e = spec("tg-x", "k", None, None);
    let other = e.digest[0].wrapping_add(1);
    assert!(matches!(encode_shard(other, 1, 1, std::slice::from_ref(&e)), Err(KeyTableError::Record { .. })));
    assert!(matches!(encode_shard(e.digest[0], 1, 1, &[e.clone(), e.clone()]), Err(KeyTableError::Record { .. })));
    let long = "x".repeat(256);
    let e2 = spec("tg-x", &long, None, None);
    assert!(encode_shard(e2.digest[0], 1, 1, std::slice::from_ref(&e2)).is_err());
}

#[test]
fn decoder_checks_every_field() {
    let list = names(&["a"]);
    let entries = [spec("tg-1", "one", Some(&list), Some(5)), spec("tg-2", "two", None, None)];
    let i = entries[0].digest[0];
    let mine: Vec<_> = entries.iter().filter(|e| e.digest[0] == i).cloned().collect();
    let good = encode_shard(i, 9, 4, &mine).unwrap();
    let shard = Shard::decode(&good, i).unwrap();
    assert_eq!((shard.index(), shard.epoch(), shard.version()), (i, 9, 4));
    assert_eq!(Shard::decode(&good, i.wrapping_add(1)).unwrap_err(), KeyTableError::ShardIndex { expected: i.wrapping_add(1), actual: i });
    for cut in 0..good.len() {
        assert!(Shard::decode(&good[..cut], i).is_err(), "a shard cut at {cut} decoded");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(Shard::decode(&trailing, i), Err(KeyTableError::Trailing { .. })));
    let mut magic = good.clone();
    magic[0] = b'X';
    assert!(matches!(Shard::decode(&magic, i), Err(KeyTableError::Magic { .. })));
    let mut format = good.clone();
    format[4] = 2;
    assert!(matches!(Shard::decode(&format, i), Err(KeyTableError::Format { .. })));
    let rec = shard::HEADER_LEN;
    let mut reserved = good.clone();
    reserved[6] = 1;
    assert_eq!(Shard::decode(&reserved, i).unwrap_err(), KeyTableError::Reserved { what: "key shard" });
    let mut flags = good.clone();
    flags[rec + 40] |= 0x80;
    assert!(matches!(Shard::decode(&flags, i), Err(KeyTableError::Record { .. })));
    let mut set = good.clone();
    set[rec + 41] = 7;
    assert!(matches!(Shard::decode(&set, i), Err(KeyTableError::Record { .. })));
    let mut id = good.clone();
    id[rec + 44] = 200;
    assert!(matches!(Shard::decode(&id, i), Err(KeyTableError::Record { .. })));
    let mut wrong_shard = good.clone();
    wrong_shard[rec] = i.wrapping_add(1);
    assert!(matches!(Shard::decode(&wrong_shard, i), Err(KeyTableError::Record { .. })));
}

#[test]
fn manifest_and_update_round_trip() {
    let mut m = Manifest::default();
    assert!(!m.complete());
    m.set(3, 11, 12);
    let back = Manifest::decode(&m.encode()).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.get(3), (11, 12));
    assert!(Manifest::decode(&m.encode()[..100]).is_err());
    // found by the fuzzer (fuzz/corpus/key_shard/crash-a81100b91cfd3823): reserved bytes must be zero
    let mut reserved = m.encode();
    reserved[5] = 2;
    assert_eq!(Manifest::decode(&reserved), Err(KeyTableError::Reserved { what: "key manifest" }));
    let s1 = encode_shard(1, 1, 1, &[]).unwrap();
    let s2 = encode_shard(2, 1, 1, &[]).unwrap();
    let msg = Update::encode(&[&s1, &s2]);
    assert_eq!(Update::decode(&msg).unwrap().shards, vec![s1.as_slice(), s2.as_slice()]);
    for cut in 0..msg.len() {
        assert!(Update::decode(&msg[..cut]).is_err());
    }
    let mut all = Manifest::default();
    for i in 0..=u8::MAX {
        all.set(i, 1, 1);
    }
    assert!(all.complete());
}

#[test]
fn replacing_a_shard_changes_only_that_shard() {
    let mut table = Table::from_entries(1, 1, &[spec("tg-a", "a", None, None), spec("tg-b", "b", None, None)]).unwrap();
    let i = digest("tg-a")[0];
    table.replace(Shard::decode(&encode_shard(i, 1, 2, &[]).unwrap(), i).unwrap());
    assert_eq!(table.authenticate("tg-a", 0), Err(KeyRejection::Unknown));
    assert_eq!(table.shard_version(i), (1, 2));
    if digest("tg-b")[0] != i {
        assert_eq!(table.authenticate("tg-b", 0).unwrap().id, "b");
    }
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), index in any::<u8>()) {
        let _ = Shard::decode(&bytes, index);
        let _ = Manifest::decode(&bytes);
        let _ = Update::decode(&bytes);
    }

    #[test]
    fn mutated_shards_never_panic_and_lookups_stay_in_bounds(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        secrets in proptest::collection::vec("[a-z]{1,12}", 1..40),
    ) {
        let ids: Vec<String> = (0..secrets.len()).map(|i| format!("id{i}")).collect();
        let list = names(&["m1", "m2"]);
        let mut entries: Vec<EntrySpec<'_>> = Vec::new();
        for (s, id) in secrets.iter().zip(&ids) {
            let mut d = digest(s);
            d[0] = 0;
            if entries.iter().any(|e| e.digest == d) { continue; }
            entries.push(EntrySpec { digest: d, id, role: Role::User, expires_at: Some(1), models: if id.len() % 2 == 0 { Some(&list) } else { None } });
        }
        let mut bytes = encode_shard(0, 1, 1, &entries).unwrap();
        let good = Shard::decode(&bytes, 0).unwrap();
        for e in &entries {
            prop_assert_eq!(good.lookup(&e.digest).map(|r| r.id), Some(e.id));
        }
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= v | 1;
        }
        if let Ok(shard) = Shard::decode(&bytes, 0) {
            for e in &entries {
                let _ = shard.lookup(&e.digest);
            }
        }
    }
}
