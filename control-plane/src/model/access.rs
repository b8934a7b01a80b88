//! What a key may call: one evaluator for the data plane (the key table every Envoy gets) and the
//! admin API (what a key may be given), so the two never disagree. `GET /v1/models` in the
//! gateway lists exactly the models of the key's published allowance.
//!
//! Each level (key, user, team) allows its `models` (names or `*` patterns) and the models of
//! its access groups; a level with neither sets no bound of its own. A key's allowance is the
//! intersection of the three levels, as concrete model names (patterns are matched against the
//! models that exist when it is published, so a model added later that a pattern matches is
//! allowed from the next publication on). Deny by default: an empty group, a group name that
//! does not exist, or an owner the store does not know grants nothing.

use std::collections::BTreeMap;

use super::{KeyRecord, TeamRecord, UserRecord};

/// The model names that exist and the access groups, for evaluating allowances.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub models: Vec<String>,
    pub groups: BTreeMap<String, Vec<String>>,
}

/// `*` matches any run of characters; everything else matches itself.
pub fn matches(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else { return pattern == name };
    let Some(mut tail) = name.strip_prefix(head) else { return false };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or_default();
    for part in parts {
        match tail.find(part) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

impl Catalog {
    /// What one level allows, as concrete names; `None` when it sets no bound.
    pub fn level(&self, models: Option<&[String]>, groups: &[String]) -> Option<Vec<String>> {
        if models.is_none() && groups.is_empty() {
            return None;
        }
        let patterns: Vec<&str> = models
            .unwrap_or_default()
            .iter()
            .map(String::as_str)
            .chain(groups.iter().filter_map(|g| self.groups.get(g)).flatten().map(String::as_str))
            .collect();
        Some(self.models.iter().filter(|m| patterns.iter().any(|p| matches(p, m))).cloned().collect())
    }

    /// The bound an owner puts on keys: the team's level, narrowed by the user's.
    pub fn owner_bound(
        &self,
        user_id: Option<&str>,
        team_id: Option<&str>,
        users: &BTreeMap<String, UserRecord>,
        teams: &BTreeMap<String, TeamRecord>,
    ) -> Option<Vec<String>> {
        let nothing = Some(Vec::new());
        let user = match user_id {
            None => None,
            Some(id) => match users.get(id) {
                Some(u) => self.level(u.models.as_deref(), &u.access_groups),
                None => return nothing,
            },
        };
        let team = match team_id {
            None => None,
            Some(id) => match teams.get(id) {
                Some(t) => self.level(t.models.as_deref(), &t.access_groups),
                None => return nothing,
            },
        };
        intersect(user.as_deref(), team.as_deref())
    }

    /// A key's allowance: its own level within its owners' bound.
    pub fn key_allowance(&self, k: &KeyRecord, users: &BTreeMap<String, UserRecord>, teams: &BTreeMap<String, TeamRecord>) -> Option<Vec<String>> {
        let bound = self.owner_bound(k.user_id.as_deref(), k.team_id.as_deref(), users, teams);
        intersect(self.level(k.models.as_deref(), &k.access_groups).as_deref(), bound.as_deref())
    }
}

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

/// The keys the data plane gets: not blocked, each with its effective allowance, and for a key
/// rotated within its grace period a second entry (same id) for the previous secret that
/// expires when the grace ends (the filter refuses it from that second on, on every Envoy,
/// without another push).
pub fn published_keys(
    keys: &[KeyRecord],
    users: &BTreeMap<String, UserRecord>,
    teams: &BTreeMap<String, TeamRecord>,
    catalog: &Catalog,
    now: i64,
) -> Vec<KeyRecord> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys.iter().filter(|k| !k.blocked && k.revoked_at.is_none()) {
        let models = catalog.key_allowance(k, users, teams);
        let mut key = KeyRecord {
            models,
            previous_digest: None,
            previous_valid_until: None,
            metadata: None,
            rotation_idempotency: None,
            rotation_answer: None,
            ..k.clone()
        };
        if let (Some(previous), Some(until)) = (&k.previous_digest, k.previous_valid_until) {
            if until > now {
                let expires_at = Some(k.expires_at.map_or(until, |e| e.min(until)));
                out.push(KeyRecord { digest: previous.clone(), expires_at, ..key.clone() });
            }
        }
        key.access_groups = Vec::new();
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

    fn catalog() -> Catalog {
        let mut groups = BTreeMap::new();
        groups.insert("claude".to_owned(), names(&["claude-*"]));
        groups.insert("empty".to_owned(), vec![]);
        Catalog { models: names(&["a", "b", "c", "claude-haiku", "claude-sonnet"]), groups }
    }

    #[test]
    fn patterns() {
        assert!(matches("claude-*", "claude-haiku") && !matches("claude-*", "gpt-4o"));
        assert!(matches("*", "x") && matches("a*b*c", "a-b-c") && matches("*-mini", "gpt-4o-mini"));
        assert!(!matches("a*b*c", "a-c-b") && !matches("ab*ab", "ab") && matches("a", "a") && !matches("a", "ab"));
    }

    #[test]
    fn allowance_is_the_intersection_and_unknown_names_grant_nothing() {
        let cat = catalog();
        let mut teams = BTreeMap::new();
        teams.insert("t".to_owned(), TeamRecord { id: "t".into(), models: Some(names(&["a", "b"])), ..Default::default() });
        teams.insert("tc".to_owned(), TeamRecord { id: "tc".into(), access_groups: names(&["claude"]), ..Default::default() });
        let mut users = BTreeMap::new();
        users.insert("u".to_owned(), UserRecord { id: "u".into(), models: Some(names(&["b", "c"])), ..Default::default() });
        let key = |user: Option<&str>, team: Option<&str>, models: Option<&[&str]>, groups: &[&str]| KeyRecord {
            id: "k".into(),
            digest: "d".into(),
            user_id: user.map(str::to_owned),
            team_id: team.map(str::to_owned),
            models: models.map(names),
            access_groups: names(groups),
            ..Default::default()
        };
        let eff = |k: KeyRecord| published_keys(&[k], &users, &teams, &cat, 0).pop().and_then(|k| k.models);
        assert_eq!(eff(key(None, None, None, &[])), None);
        assert_eq!(eff(key(None, Some("t"), None, &[])), Some(names(&["a", "b"])));
        assert_eq!(eff(key(Some("u"), Some("t"), None, &[])), Some(names(&["b"])));
        assert_eq!(eff(key(Some("u"), Some("t"), Some(&["a", "b", "z"]), &[])), Some(names(&["b"])));
        assert_eq!(eff(key(Some("ghost"), None, None, &[])), Some(vec![]));
        assert_eq!(eff(key(None, Some("ghost"), None, &[])), Some(vec![]));
        // groups: patterns expand against the models that exist; unknown or empty grant nothing
        assert_eq!(eff(key(None, Some("tc"), None, &[])), Some(names(&["claude-haiku", "claude-sonnet"])));
        assert_eq!(eff(key(None, None, None, &["claude"])), Some(names(&["claude-haiku", "claude-sonnet"])));
        assert_eq!(eff(key(None, None, Some(&["a"]), &["claude"])), Some(names(&["a", "claude-haiku", "claude-sonnet"])));
        assert_eq!(eff(key(None, None, None, &["nope"])), Some(vec![]));
        assert_eq!(eff(key(None, None, None, &["empty"])), Some(vec![]));
        assert_eq!(eff(key(None, Some("tc"), Some(&["a", "claude-haiku"]), &[])), Some(names(&["claude-haiku"])));
        assert!(within(Some(&names(&["a"])), Some(&names(&["a", "b"]))));
        assert!(!within(None, Some(&names(&["a"]))));
        assert!(!within(Some(&names(&["z"])), Some(&names(&["a"]))));
    }

    #[test]
    fn blocked_keys_are_left_out_and_a_rotated_key_has_a_grace_entry() {
        let base = KeyRecord { id: "k".into(), digest: "new".into(), ..Default::default() };
        let (none, cat) = (BTreeMap::new(), Catalog::default());
        assert!(published_keys(&[KeyRecord { blocked: true, ..base.clone() }], &none, &BTreeMap::new(), &cat, 0).is_empty());
        let rotated = KeyRecord {
            previous_digest: Some("old".into()),
            previous_valid_until: Some(100),
            expires_at: Some(500),
            ..base.clone()
        };
        let out = published_keys(std::slice::from_ref(&rotated), &none, &BTreeMap::new(), &cat, 50);
        assert_eq!(out.iter().map(|k| (k.digest.as_str(), k.expires_at)).collect::<Vec<_>>(), vec![("old", Some(100)), ("new", Some(500))]);
        assert!(out.iter().all(|k| k.id == "k" && k.previous_digest.is_none()));
        // after the grace, only the new secret
        assert_eq!(published_keys(&[rotated], &none, &BTreeMap::new(), &cat, 100).len(), 1);
    }
}
