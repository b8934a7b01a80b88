//! Who may do what on the admin API: one function, by role and by tenant, for every route (REST
//! today, gRPC on the same service layer). A caller outside an object's tenant gets the same
//! answer whether the object exists or not (403), so ids cannot be probed across teams.
//!
//! | role | reads | writes |
//! |---|---|---|
//! | `admin` | everything | everything |
//! | `team_admin` | its team, its members, their keys, its audit | its members (not to `admin`, not its own role), its team's keys |
//! | `member` | its team, itself, its own keys | its own keys, within its allowance |
//! | `viewer` | its team's objects (everything when it has no team) | nothing |

use crate::model::UserRole;

/// The caller of an admin operation, from the key it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The public id of the presented key (audit, logs).
    pub key_id: String,
    pub role: UserRole,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    /// The client address, for the audit trail.
    pub source: Option<String>,
    /// What the presented key itself may call, and when it expires: a key it creates gets no more.
    pub models: Option<Vec<String>>,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Read,
    Write,
}

/// What is acted on, with the tenant facts the decision needs.
#[derive(Debug, Clone, Copy)]
pub enum Object<'a> {
    /// Creating a team, the settings, the models (platform-wide objects).
    Platform,
    /// The list of models (every role may read it).
    Models,
    Team { id: &'a str },
    User { id: &'a str, team_id: Option<&'a str> },
    Key { user_id: Option<&'a str>, team_id: Option<&'a str> },
    /// The audit trail of a team (`None`: all of it).
    Audit { team_id: Option<&'a str> },
}

/// Whether `actor` may `verb` `object`.
pub fn allows(actor: &Actor, verb: Verb, object: Object<'_>) -> bool {
    let own_team = |t: Option<&str>| actor.team_id.is_some() && t == actor.team_id.as_deref();
    let is_self = |u: Option<&str>| actor.user_id.is_some() && u == actor.user_id.as_deref();
    match actor.role {
        UserRole::Admin => true,
        UserRole::Viewer => {
            verb == Verb::Read
                && match object {
                    Object::Models => true,
                    Object::Platform => false,
                    _ if actor.team_id.is_none() => true,
                    Object::Team { id } => own_team(Some(id)),
                    Object::User { team_id, .. } | Object::Key { team_id, .. } | Object::Audit { team_id } => own_team(team_id),
                }
        }
        UserRole::TeamAdmin => match object {
            Object::Models => verb == Verb::Read,
            Object::Platform => false,
            Object::Team { id } => verb == Verb::Read && own_team(Some(id)),
            Object::User { team_id, .. } | Object::Key { team_id, .. } => own_team(team_id),
            Object::Audit { team_id } => verb == Verb::Read && own_team(team_id),
        },
        UserRole::Member => match object {
            Object::Models => verb == Verb::Read,
            Object::Platform | Object::Audit { .. } => false,
            Object::Team { id } => verb == Verb::Read && own_team(Some(id)),
            Object::User { id, .. } => verb == Verb::Read && is_self(Some(id)),
            Object::Key { user_id, team_id } => is_self(user_id) && (team_id.is_none() || own_team(team_id)),
        },
    }
}

/// Whether `actor` may give a user `role` (never more than its own; only an admin makes admins).
pub fn may_grant(actor: &Actor, role: UserRole) -> bool {
    match actor.role {
        UserRole::Admin => true,
        UserRole::TeamAdmin => role <= UserRole::TeamAdmin,
        UserRole::Member | UserRole::Viewer => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(role: UserRole, team: Option<&str>, user: &str) -> Actor {
        Actor {
            key_id: "k".into(),
            role,
            user_id: Some(user.into()),
            team_id: team.map(str::to_owned),
            source: None,
            models: None,
            expires_at: None,
        }
    }

    /// The role × object × tenant matrix, from one table: (role, verb, object in team A (the
    /// actor's) or B, expected).
    #[test]
    fn role_by_object_by_tenant() {
        use UserRole::*;
        use Verb::*;
        let objects = |team: &'static str, user: &'static str| {
            vec![
                ("team", Object::Team { id: team }),
                ("user", Object::User { id: user, team_id: Some(team) }),
                ("key", Object::Key { user_id: Some(user), team_id: Some(team) }),
                ("audit", Object::Audit { team_id: Some(team) }),
            ]
        };
        // (role, verb, object kind, own-team result, other-team result)
        let table: &[(UserRole, Verb, &str, bool, bool)] = &[
            (Admin, Read, "team", true, true),
            (Admin, Write, "key", true, true),
            (TeamAdmin, Read, "team", true, false),
            (TeamAdmin, Write, "team", false, false),
            (TeamAdmin, Read, "user", true, false),
            (TeamAdmin, Write, "user", true, false),
            (TeamAdmin, Write, "key", true, false),
            (TeamAdmin, Read, "audit", true, false),
            (Member, Read, "team", true, false),
            (Member, Write, "team", false, false),
            (Member, Read, "user", true, false), // itself only (the object is the actor)
            (Member, Write, "user", false, false),
            (Member, Write, "key", true, false),
            (Member, Read, "audit", false, false),
            (Viewer, Read, "team", true, false),
            (Viewer, Read, "key", true, false),
            (Viewer, Write, "key", false, false),
            (Viewer, Read, "audit", true, false),
        ];
        for &(role, verb, kind, own, other) in table {
            let a = actor(role, Some("A"), "u-a");
            let find = |team, user| objects(team, user).into_iter().find(|(k, _)| *k == kind).map(|(_, o)| o).unwrap();
            assert_eq!(allows(&a, verb, find("A", "u-a")), own, "{role:?} {verb:?} own {kind}");
            assert_eq!(allows(&a, verb, find("B", "u-b")), other, "{role:?} {verb:?} other {kind}");
        }
        // Platform objects: only admins write; nobody else even reads them.
        for role in [Viewer, Member, TeamAdmin] {
            assert!(!allows(&actor(role, Some("A"), "u"), Write, Object::Platform));
            assert!(allows(&actor(role, Some("A"), "u"), Read, Object::Models));
        }
        // A member's key in its own team but someone else's: no.
        assert!(!allows(&actor(Member, Some("A"), "u-a"), Read, Object::Key { user_id: Some("u-x"), team_id: Some("A") }));
        // No team on either side is not "the same team".
        assert!(!allows(&actor(TeamAdmin, None, "u"), Read, Object::Key { user_id: None, team_id: None }));
        // A viewer without a team reads everything, writes nothing.
        assert!(allows(&actor(Viewer, None, "u"), Read, Object::Audit { team_id: None }));
        assert!(!allows(&actor(Viewer, None, "u"), Write, Object::Key { user_id: Some("u"), team_id: None }));
    }

    #[test]
    fn nobody_grants_more_than_they_have() {
        use UserRole::*;
        let ta = actor(TeamAdmin, Some("A"), "u");
        assert!(may_grant(&ta, Member) && may_grant(&ta, TeamAdmin) && !may_grant(&ta, Admin));
        assert!(!may_grant(&actor(Member, Some("A"), "u"), Member));
        assert!(may_grant(&actor(Admin, None, "u"), Admin));
    }
}
