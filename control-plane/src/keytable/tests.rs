use tollgate_contract::keys::{digest, digest_hex, AllowedModels, KeyRejection};
use tollgate_contract::keytable::{Shard, Table};

use super::*;

fn key(secret: &str, id: &str) -> KeyRecord {
    KeyRecord { id: id.into(), name: id.into(), digest: digest_hex(secret), ..Default::default() }
}

fn allowances(models: &[&str]) -> Allowances {
    Allowances {
        catalog: Catalog { models: models.iter().map(|m| (*m).to_owned()).collect(), groups: BTreeMap::new() },
        ..Default::default()
    }
}

/// What a data plane holding `have` gets, applied to its table (as the service VM and a worker
/// do), following the size-bounded answers until nothing differs.
fn sync(p: &Published, table: &mut Table, have: &mut Manifest) -> usize {
    let mut shards = 0;
    while let Some(update) = p.update_for(have) {
        for bytes in Update::decode(&update).unwrap().shards {
            let (i, e, v) = Shard::peek(bytes).unwrap();
            table.replace(Shard::decode(bytes, i).unwrap());
            have.set(i, e, v);
            shards += 1;
        }
    }
    shards
}

#[test]
fn first_publication_has_every_shard_then_a_change_only_its_shard() {
    let mut state = KeyTableState::new(77);
    let a = allowances(&["m1", "m2"]);
    let keys: Vec<KeyRecord> = (0..2000).map(|i| key(&format!("tg-{i}"), &format!("k{i}"))).collect();
    let p = state.apply(keys, 10, &a, 0).unwrap();
    assert_eq!((p.epoch, p.generation, p.entries, p.shards.len()), (77, 1, 2000, SHARDS));
    let (mut table, mut have) = (Table::default(), Manifest::default());
    assert_eq!(sync(&p, &mut table, &mut have), SHARDS, "a new data plane gets every shard, empty ones too");
    assert!(have.complete());
    assert_eq!(table.authenticate("tg-5", 0).unwrap().id, "k5");
    assert!(p.update_for(&have).is_none());

    // nothing changed: nothing published
    assert!(state.apply(vec![], 10, &a, 0).is_none());
    // revoke one key: one shard, at the next generation
    let revoked = KeyRecord { revoked_at: Some(5), ..key("tg-5", "k5") };
    let p = state.apply(vec![revoked], 11, &a, 0).unwrap();
    assert_eq!((p.generation, p.entries), (2, 1999));
    assert_eq!(sync(&p, &mut table, &mut have), 1);
    assert_eq!(table.authenticate("tg-5", 0), Err(KeyRejection::Unknown));
    assert_eq!(table.authenticate("tg-6", 0).unwrap().id, "k6");
    let i = digest("tg-5")[0];
    assert_eq!(have.get(i), (77, 2));
    // block and unblock: out and back
    let blocked = KeyRecord { blocked: true, ..key("tg-6", "k6") };
    sync(&state.apply(vec![blocked], 12, &a, 0).unwrap(), &mut table, &mut have);
    assert_eq!(table.authenticate("tg-6", 0), Err(KeyRejection::Unknown));
    sync(&state.apply(vec![key("tg-6", "k6")], 13, &a, 0).unwrap(), &mut table, &mut have);
    assert_eq!(table.authenticate("tg-6", 0).unwrap().id, "k6");
    assert_eq!(state.stamp(), Some(13));
}

#[test]
fn a_full_answer_is_split_by_size_and_a_restarted_control_plane_resends_everything() {
    let mut state = KeyTableState::new(1);
    let keys: Vec<KeyRecord> = (0..40_000).map(|i| key(&format!("tg-{i}"), &format!("key_{i:08}"))).collect();
    let p = state.apply(keys.clone(), 1, &allowances(&[]), 0).unwrap();
    let first = p.update_for(&Manifest::default()).unwrap();
    assert!(first.len() <= MAX_UPDATE_BYTES + 64 * 1024, "{}", first.len());
    assert!(Update::decode(&first).unwrap().shards.len() < SHARDS, "40,000 keys do not fit one answer");
    let (mut table, mut have) = (Table::default(), Manifest::default());
    sync(&p, &mut table, &mut have);
    assert_eq!(table.len(), 40_000);
    // another epoch (a restart, another replica): every shard again, same keys
    let mut other = KeyTableState::new(2);
    let p2 = other.apply(keys, 1, &allowances(&[]), 0).unwrap();
    assert_eq!(sync(&p2, &mut table, &mut have), SHARDS);
    assert_eq!(table.authenticate("tg-39999", 0).unwrap().id, "key_00039999");
}

#[test]
fn rotation_grace_entry_expires_with_the_grace() {
    let mut state = KeyTableState::new(3);
    let a = allowances(&[]);
    let mut table = Table::default();
    let mut have = Manifest::default();
    sync(&state.apply(vec![key("tg-old", "k")], 1, &a, 100).unwrap(), &mut table, &mut have);
    let rotated = KeyRecord { previous_digest: Some(digest_hex("tg-old")), previous_valid_until: Some(200), ..key("tg-new", "k") };
    sync(&state.apply(vec![rotated], 2, &a, 150).unwrap(), &mut table, &mut have);
    assert_eq!(table.authenticate("tg-new", 150).unwrap().id, "k");
    assert_eq!(table.authenticate("tg-old", 199).unwrap().id, "k");
    // refused from the second the grace ends, without another publication
    assert_eq!(table.authenticate("tg-old", 200), Err(KeyRejection::Expired));
    // a later change to the key drops the grace entry altogether (its shard is rebuilt)
    let revoked = KeyRecord { revoked_at: Some(300), ..key("tg-new", "k") };
    sync(&state.apply(vec![revoked], 3, &a, 300).unwrap(), &mut table, &mut have);
    assert_eq!(table.authenticate("tg-old", 0), Err(KeyRejection::Unknown));
    assert_eq!(table.authenticate("tg-new", 0), Err(KeyRejection::Unknown));
}

#[test]
fn an_allowance_change_recomputes_entries_without_rereading_keys() {
    let mut state = KeyTableState::new(4);
    let team = TeamRecord { id: "t".into(), models: Some(vec!["a".into()]), ..Default::default() };
    let mut a = allowances(&["a", "b"]);
    a.teams.insert("t".into(), team.clone());
    let keys = vec![KeyRecord { team_id: Some("t".into()), ..key("tg-t", "kt") }, key("tg-free", "kf")];
    let (mut table, mut have) = (Table::default(), Manifest::default());
    sync(&state.apply(keys, 1, &a, 0).unwrap(), &mut table, &mut have);
    assert_eq!(table.authenticate("tg-t", 0).unwrap().models, AllowedModels::Only(vec!["a".into()]));
    assert_eq!(table.authenticate("tg-free", 0).unwrap().models, AllowedModels::All);
    // the team now allows b too: the key's shard changes, with no key row read
    a.teams.insert("t".into(), TeamRecord { models: Some(vec!["a".into(), "b".into()]), ..team });
    let p = state.apply(vec![], 1, &a, 0).unwrap();
    let changed = sync(&p, &mut table, &mut have);
    let same_shard = digest("tg-t")[0] == digest("tg-free")[0];
    assert_eq!(changed, 1, "only the team key's shard (the other key's shard is unchanged{})", if same_shard { ", same shard" } else { "" });
    assert_eq!(table.authenticate("tg-t", 0).unwrap().models, AllowedModels::Only(vec!["a".into(), "b".into()]));
    // a renamed team changes no allowance: nothing published
    let renamed = TeamRecord { name: "new name".into(), ..a.teams["t"].clone() };
    a.teams.insert("t".into(), renamed);
    assert!(state.apply(vec![], 1, &a, 0).is_none());
}

#[test]
fn a_key_that_cannot_be_published_is_left_out_alone() {
    let mut state = KeyTableState::new(5);
    let bad = KeyRecord { digest: "not hex".into(), ..key("x", "bad") };
    let long = key("tg-long", &"x".repeat(300));
    let p = state.apply(vec![bad, long, key("tg-ok", "ok")], 1, &allowances(&[]), 0).unwrap();
    let (mut table, mut have) = (Table::default(), Manifest::default());
    sync(&p, &mut table, &mut have);
    assert_eq!(table.len(), 1);
    assert_eq!(table.authenticate("tg-ok", 0).unwrap().id, "ok");
}
