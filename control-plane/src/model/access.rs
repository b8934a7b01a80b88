//! What a key may call: one evaluator for the data plane (the key table every Envoy gets) and the
//! admin API (what a key may be given), so the two never disagree. `GET /v1/models` in the
//! gateway lists exactly the models of the key's published allowance.
//!
//! A key's allowance is the intersection of its own model list, its user's and its team's (each
//! `None` meaning no bound of its own). An owner the store does not know (a dangling id) grants
//! nothing: deny by default.

use std::collections::BTreeMap;

use super::{KeyRecord, TeamRecord, UserRecord};

/// The intersection of two allowances (`None`: unbounded), in the order of the first.
pub fn intersect(a: Option<&[String]>, b: Option<&[String]>) -> Option<Vec<String>> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.to_vec()),
        (Some(x), Some(y)) => Some(x.iter().filter(|m| y.contains(m)).cloned().collect()),
    }
}

/// Whether `wanted` (`None`: every model) stays within `bound` (`None`: unbounded).
pub fn within(wanted: Option<&[String]>, bound: Option<&[String]>) -> bool {
    match (wanted, bound) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(w), Some(b)) => w.iter().all(|m| b.contains(m)),
    }
}

/// The bound an owner puts on keys: the team's list, narrowed by the user's.
pub fn owner_bound(
    user_id: Option<&str>,
    team_id: Option<&str>,
    users: &BTreeMap<String, UserRecord>,
    teams: &BTreeMap<String, TeamRecord>,
) -> Option<Vec<String>> {
    let nothing = Some(Vec::new());
    let user_models = match user_id {
        None => None,
        Some(id) => match users.get(id) {
            Some(u) => u.models.clone(),
            None => return nothing,
        },
    };
    let team_models = match team_id {
        None => None,
        Some(id) => match teams.get(id) {
            Some(t) => t.models.clone(),
            None => return nothing,
        },
    };
    intersect(user_models.as_deref(), team_models.as_deref())
}

/// The keys the data plane gets: not blocked, each with its effective allowance, and for a key
/// rotated within its grace period a second entry (same id) for the previous secret that
/// expires when the grace ends (the filter refuses it from that second on, on every Envoy,
/// without another push).
pub fn published_keys(
    keys: &[KeyRecord],
    users: &BTreeMap<String, UserRecord>,
    teams: &BTreeMap<String, TeamRecord>,
    now: i64,
) -> Vec<KeyRecord> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys.iter().filter(|k| !k.blocked && k.revoked_at.is_none()) {
        let bound = owner_bound(k.user_id.as_deref(), k.team_id.as_deref(), users, teams);
        let models = intersect(k.models.as_deref(), bound.as_deref());
        let mut key = KeyRecord { models, previous_digest: None, previous_valid_until: None, ..k.clone() };
        if let (Some(previous), Some(until)) = (&k.previous_digest, k.previous_valid_until) {
            if until > now {
                let expires_at = Some(k.expires_at.map_or(until, |e| e.min(until)));
                out.push(KeyRecord { digest: previous.clone(), expires_at, ..key.clone() });
            }
        }
        key.metadata = None;
        out.push(key);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn allowance_is_the_intersection_and_unknown_owners_grant_nothing() {
        let mut teams = BTreeMap::new();
        teams.insert("t".to_owned(), TeamRecord { id: "t".into(), models: Some(names(&["a", "b"])), ..Default::default() });
        let mut users = BTreeMap::new();
        users.insert("u".to_owned(), UserRecord { id: "u".into(), models: Some(names(&["b", "c"])), ..Default::default() });
        let key = |user: Option<&str>, team: Option<&str>, models: Option<&[&str]>| KeyRecord {
            id: "k".into(),
            digest: "d".into(),
            user_id: user.map(str::to_owned),
            team_id: team.map(str::to_owned),
            models: models.map(names),
            ..Default::default()
        };
        let eff = |k: KeyRecord| published_keys(&[k], &users, &teams, 0).pop().and_then(|k| k.models);
        assert_eq!(eff(key(None, None, None)), None);
        assert_eq!(eff(key(None, Some("t"), None)), Some(names(&["a", "b"])));
        assert_eq!(eff(key(Some("u"), Some("t"), None)), Some(names(&["b"])));
        assert_eq!(eff(key(Some("u"), Some("t"), Some(&["a", "b", "z"]))), Some(names(&["b"])));
        assert_eq!(eff(key(Some("ghost"), None, None)), Some(vec![]));
        assert_eq!(eff(key(None, Some("ghost"), None)), Some(vec![]));
        assert!(within(Some(&names(&["a"])), Some(&names(&["a", "b"]))));
        assert!(!within(None, Some(&names(&["a"]))));
        assert!(!within(Some(&names(&["z"])), Some(&names(&["a"]))));
    }

    #[test]
    fn blocked_keys_are_left_out_and_a_rotated_key_has_a_grace_entry() {
        let base = KeyRecord { id: "k".into(), digest: "new".into(), ..Default::default() };
        let none = BTreeMap::new();
        assert!(published_keys(&[KeyRecord { blocked: true, ..base.clone() }], &none, &BTreeMap::new(), 0).is_empty());
        let rotated = KeyRecord {
            previous_digest: Some("old".into()),
            previous_valid_until: Some(100),
            expires_at: Some(500),
            ..base.clone()
        };
        let out = published_keys(std::slice::from_ref(&rotated), &none, &BTreeMap::new(), 50);
        assert_eq!(out.iter().map(|k| (k.digest.as_str(), k.expires_at)).collect::<Vec<_>>(), vec![("old", Some(100)), ("new", Some(500))]);
        assert!(out.iter().all(|k| k.id == "k" && k.previous_digest.is_none()));
        // after the grace, only the new secret
        assert_eq!(published_keys(&[rotated], &none, &BTreeMap::new(), 100).len(), 1);
    }
}
