"""Governance (issue 11, first part): teams, users with admin-API roles, key owners, the
role × route × tenant authorisation matrix, key lifecycle through real Envoy (create, use, block,
rotate with a grace period, idempotent retry, revoke), model allowances bounded by team and user,
and the audit trail (one row per write, with source and before/after, no secret inside)."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from e2e_util import assert_openai_error, post_chat, user_message
from harness import wait_until


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ok(resp, status: int = 200) -> dict[str, Any]:
    assert resp.status_code == status, f"{resp.status_code} {resp.text[:400]}"
    return resp.json()


@dataclass
class Tenant:
    team: str
    team_admin: tuple[str, str]  # (user id, key secret)
    member: tuple[str, str]
    viewer: tuple[str, str]
    member_key_id: str


def make_tenant(gw, models: list[str] | None = None) -> Tenant:
    team = ok(gw.admin("POST", "/admin/v1/teams", json={"name": uid("team"), "models": models}), 201)["id"]

    def user(role: str) -> tuple[str, str, str]:
        u = ok(gw.admin("POST", "/admin/v1/users", json={"name": uid(role), "team_id": team, "role": role}), 201)
        k = ok(gw.admin("POST", "/admin/v1/keys", json={"name": uid("key"), "user_id": u["id"]}), 201)
        assert k["team_id"] == team and k["user_id"] == u["id"]
        gw.secrets[f"virtual key {k['id']}"] = k["key"]
        return u["id"], k["key"], k["id"]

    ta, m, v = user("team_admin"), user("member"), user("viewer")
    return Tenant(team, ta[:2], m[:2], v[:2], m[2])


@pytest.fixture(scope="module")
def tenants(gw):
    return make_tenant(gw), make_tenant(gw)


def as_role(t: Tenant, role: str) -> str:
    return {"team_admin": t.team_admin[1], "member": t.member[1], "viewer": t.viewer[1]}[role]


# (method, path template, body) — `{team}`, `{user}`, `{key}` filled with the target tenant's ids.
ROUTES = {
    "read team": ("GET", "/admin/v1/teams/{team}", None),
    "update team": ("PATCH", "/admin/v1/teams/{team}", {"metadata": {"x": 1}}),
    "read user": ("GET", "/admin/v1/users/{user}", None),
    "update user role": ("PATCH", "/admin/v1/users/{user}", {"role": "viewer"}),
    "read key": ("GET", "/admin/v1/keys/{key}", None),
    "update key": ("PATCH", "/admin/v1/keys/{key}", {"tags": ["t"]}),
    "list keys of team": ("GET", "/admin/v1/keys?team_id={team}", None),
    "audit of team": ("GET", "/admin/v1/audit?team_id={team}", None),
    "create user in team": ("POST", "/admin/v1/users", {"name": "x", "team_id": "{team}", "role": "member"}),
    "create key for user": ("POST", "/admin/v1/keys", {"name": "x", "user_id": "{user}"}),
    "raw usage of key": ("GET", "/admin/v1/usage?key_id={key}", None),
}

# role -> route -> (status on its own tenant, status on the other tenant). The "user" of a route
# is the target tenant's member.
MATRIX = {
    "team_admin": {
        "read team": (200, 403), "update team": (403, 403), "read user": (200, 403),
        "update user role": (200, 403), "read key": (200, 403), "update key": (200, 403),
        "list keys of team": (200, 403), "audit of team": (200, 403),
        "create user in team": (201, 403), "create key for user": (201, 403),
        "raw usage of key": (403, 403),
    },
    "member": {
        "read team": (200, 403), "update team": (403, 403), "read user": (200, 403),
        "update user role": (403, 403), "read key": (200, 403), "update key": (200, 403),
        "list keys of team": (200, 403), "audit of team": (403, 403),
        "create user in team": (403, 403), "create key for user": (201, 403),
        "raw usage of key": (403, 403),
    },
    "viewer": {
        "read team": (200, 403), "update team": (403, 403), "read user": (200, 403),
        "update user role": (403, 403), "read key": (200, 403), "update key": (403, 403),
        "list keys of team": (200, 403), "audit of team": (200, 403),
        "create user in team": (403, 403), "create key for user": (403, 403),
        "raw usage of key": (403, 403),
    },
}


def fill(value: Any, t: Tenant) -> Any:
    if isinstance(value, str):
        return value.format(team=t.team, user=t.member[0], key=t.member_key_id)
    if isinstance(value, dict):
        return {k: fill(v, t) for k, v in value.items()}
    return value


CASES = [(role, route, tenant) for role in MATRIX for route in ROUTES for tenant in ("own", "other")]


@pytest.mark.parametrize("role,route,tenant", CASES, ids=[f"{r}-{a}-{t}".replace(" ", "_") for r, a, t in CASES])
def test_authorisation_matrix(gw, tenants, role, route, tenant):
    mine, theirs = tenants
    target = mine if tenant == "own" else theirs
    method, path, body = ROUTES[route]
    expected = MATRIX[role][route][0 if tenant == "own" else 1]
    before = {k["id"]: k for k in gw.list_keys()}
    resp = gw.admin(method, fill(path, target), key=as_role(mine, role),
                    json=fill(body, target) if body is not None else None)
    assert resp.status_code == expected, f"{role} {route} on {tenant} tenant: {resp.status_code} {resp.text[:300]}"
    if expected == 403:
        assert resp.json()["error"]["type"] == "permission_error"
        # Nothing changed: no key appeared, the target key is as it was.
        after = {k["id"]: k for k in gw.list_keys()}
        assert set(after) == set(before)
        assert after[target.member_key_id] == before[target.member_key_id]
    else:
        data = resp.json()
        # A tenant-scoped list holds only the tenant's objects.
        for item in data.get("data", []) if isinstance(data, dict) else []:
            if "team_id" in item:
                assert item["team_id"] == target.team, item
    if route == "update user role" and expected == 200:
        # put the member back (the matrix's other rows expect a member)
        ok(gw.admin("PATCH", f"/admin/v1/users/{target.member[0]}", json={"role": "member"}))


def test_lists_are_scoped_to_the_tenant(gw, tenants):
    a, b = tenants
    keys = ok(gw.admin("GET", "/admin/v1/keys", key=a.team_admin[1]))["data"]
    assert keys and {k["team_id"] for k in keys} == {a.team}
    users = ok(gw.admin("GET", "/admin/v1/users", key=a.team_admin[1]))["data"]
    assert {u["team_id"] for u in users} == {a.team}
    teams = ok(gw.admin("GET", "/admin/v1/teams", key=a.member[1]))["data"]
    assert [t["id"] for t in teams] == [a.team]
    mine = ok(gw.admin("GET", "/admin/v1/keys", key=a.member[1]))["data"]
    assert {k["user_id"] for k in mine} == {a.member[0]}
    assert b.member_key_id not in {k["id"] for k in keys + mine}


def test_nobody_grants_more_than_they_have(gw, tenants):
    a, _ = tenants
    # A team admin cannot make an admin, nor change its own role; a member cannot mint an admin key.
    resp = gw.admin("POST", "/admin/v1/users", key=a.team_admin[1], json={"name": "x", "role": "admin"})
    err = assert_openai_error(resp, 403)
    assert (err["code"], err["type"]) == ("forbidden", "permission_error")
    resp = gw.admin("PATCH", f"/admin/v1/users/{a.team_admin[0]}", key=a.team_admin[1], json={"role": "team_admin"})
    assert resp.status_code == 403
    resp = gw.admin("POST", "/admin/v1/keys", key=a.member[1], json={"name": "x", "role": "admin"})
    assert resp.status_code == 403
    # A key cannot outlive its creator's key.
    short = ok(gw.admin("POST", "/admin/v1/keys", key=a.member[1], json={"name": uid("k"), "expires_at": int(time.time()) + 600}), 201)
    resp = gw.admin("POST", "/admin/v1/keys", key=short["key"], json={"name": "x", "expires_at": int(time.time()) + 7200})
    assert resp.status_code == 403 and "expiry" in resp.json()["error"]["message"]
    child = ok(gw.admin("POST", "/admin/v1/keys", key=short["key"], json={"name": uid("k")}), 201)
    assert child["expires_at"] == short["expires_at"]


def test_model_allowance_is_bounded_by_team_and_user(gw):
    t = make_tenant(gw, models=["gpt-mock"])
    key = ok(gw.admin("POST", "/admin/v1/keys", key=t.member[1], json={"name": uid("k")}), 201)
    assert key["models"] == ["gpt-mock"]
    gw.wait_key_usable(key["key"])
    listed = ok(gw.admin("GET", "/admin/v1/models", key=t.member[1]))
    assert listed["data"]
    # The gateway's /v1/models and what it serves agree with the allowance.
    client = gw.client(key["key"])
    assert [m.id for m in client.models.list().data] == ["gpt-mock"]
    resp = post_chat(gw, key["key"], {"model": "other-model", "messages": user_message("x")})
    assert assert_openai_error(resp, 403)["code"] == "model_not_allowed"
    # The member may not ask for more than the team allows.
    resp = gw.admin("POST", "/admin/v1/keys", key=t.member[1], json={"name": "x", "models": ["other-model"]})
    assert resp.status_code == 403
    # Narrowing the team narrows existing keys (the allowance is evaluated at publication).
    ok(gw.admin("PATCH", f"/admin/v1/teams/{t.team}", json={"models": []}))
    wait_until(lambda: post_chat(gw, key["key"], {"model": "gpt-mock", "messages": user_message("x")}).status_code == 403,
               5, "the narrowed team allowance to reach the gateway")


def chat_status(gw, secret: str) -> int:
    return post_chat(gw, secret, {"model": "gpt-mock", "messages": user_message("ping")}, timeout=5).status_code


def test_key_lifecycle_through_envoy(gw, tenants):
    a, _ = tenants
    created = ok(gw.admin("POST", "/admin/v1/keys", key=a.member[1], json={"name": uid("life"), "tags": ["ci"], "metadata": {"owner": "x"}}), 201)
    key_id, secret = created["id"], created["key"]
    gw.secrets[f"virtual key {key_id}"] = secret
    gw.wait_key_usable(secret)
    assert chat_status(gw, secret) == 200
    # block / unblock
    blocked = ok(gw.admin("PATCH", f"/admin/v1/keys/{key_id}", key=a.member[1], json={"blocked": True}))
    assert blocked["blocked"] is True
    wait_until(lambda: chat_status(gw, secret) == 401, 2, "a blocked key to be refused")
    ok(gw.admin("PATCH", f"/admin/v1/keys/{key_id}", key=a.team_admin[1], json={"blocked": False}))
    wait_until(lambda: chat_status(gw, secret) == 200, 2, "an unblocked key to work")
    # rotate with a 5 s grace, idempotently
    idem = uuid.uuid4().hex
    rotated = ok(gw.admin("POST", f"/admin/v1/keys/{key_id}/rotate", key=a.member[1], json={"grace_seconds": 5, "idempotency_key": idem}))
    again = ok(gw.admin("POST", f"/admin/v1/keys/{key_id}/rotate", key=a.member[1], json={"grace_seconds": 5, "idempotency_key": idem}))
    assert rotated["id"] == key_id and rotated["key"] != secret
    assert again == rotated, "a retried rotation gets the same answer"
    new = rotated["key"]
    gw.secrets[f"virtual key {key_id} rotated"] = new
    gw.wait_key_usable(new)
    assert chat_status(gw, secret) == 200, "the old secret works during the grace period"
    grace_end = rotated["previous_valid_until"]
    while time.time() < grace_end - 0.5:
        time.sleep(0.2)
    wait_until(lambda: chat_status(gw, secret) == 401, 2.5, "the old secret to be refused after the grace period")
    refused_at = time.time()
    assert refused_at - grace_end < 1.5
    assert chat_status(gw, new) == 200
    # revoke
    ok(gw.admin("DELETE", f"/admin/v1/keys/{key_id}", key=a.member[1]))
    wait_until(lambda: chat_status(gw, new) == 401, 2, "a revoked key to be refused")
    # every write has its audit row, with the caller, the source, before/after, no secret
    rows = ok(gw.admin("GET", f"/admin/v1/audit?target={key_id}"))["data"]
    actions = [r["action"] for r in reversed(rows)]
    assert actions == ["key.create", "key.block", "key.unblock", "key.rotate", "key.revoke"], actions
    assert all(r["source"] == "127.0.0.1" and r["team_id"] == a.team for r in rows)
    rotate = next(r for r in rows if r["action"] == "key.rotate")
    assert rotate["before"]["rotated_at"] is None and rotate["after"]["rotated_at"] is not None
    text = str(rows)
    for s in (secret, new):
        assert s not in text and hashlib.sha256(s.encode()).hexdigest() not in text


def test_admin_strings_are_data(gw):
    hostile = "x'); DROP TABLE api_keys;-- <script>alert(1)</script> {{7*7}} ${7*7}"
    team = ok(gw.admin("POST", "/admin/v1/teams", json={"name": hostile + uid(""), "metadata": {"q": hostile}}), 201)
    back = ok(gw.admin("GET", f"/admin/v1/teams/{team['id']}"))
    assert back["name"] == team["name"] and back["metadata"] == {"q": hostile}
    key = ok(gw.admin("POST", "/admin/v1/keys", json={"name": hostile, "tags": [hostile], "team_id": team["id"]}), 201)
    gw.secrets[f"virtual key {key['id']}"] = key["key"]
    listed = ok(gw.admin("GET", "/admin/v1/keys", params={"tag": hostile}))["data"]
    assert [k["id"] for k in listed] == [key["id"]] and listed[0]["name"] == hostile
    assert gw.admin("GET", "/admin/v1/keys?order_by=secret").status_code == 400


def test_access_groups_with_wildcards_and_deny_by_default(gw):
    group = uid("grp")
    ok(gw.admin("POST", "/admin/v1/access-groups", json={"name": group, "models": ["gpt-*", "as-*"]}), 201)
    team = ok(gw.admin("POST", "/admin/v1/teams", json={"name": uid("team"), "access_groups": [group]}), 201)
    key = ok(gw.admin("POST", "/admin/v1/keys", json={"name": uid("k"), "team_id": team["id"]}), 201)
    gw.secrets[f"virtual key {key['id']}"] = key["key"]
    gw.wait_key_usable(key["key"])
    # The gateway's model list and what it serves agree with the group's patterns.
    assert sorted(m.id for m in gw.client(key["key"]).models.list().data) == ["as-sent", "gpt-mock"]
    assert chat_status(gw, key["key"]) == 200
    resp = post_chat(gw, key["key"], {"model": "other-model", "messages": user_message("x")})
    assert assert_openai_error(resp, 403)["code"] == "model_not_allowed"
    # An unknown group is refused when named; a group narrowed or deleted later grants less.
    resp = gw.admin("POST", "/admin/v1/keys", json={"name": "x", "access_groups": ["no-such-group"]})
    assert resp.status_code == 400 and "no-such-group" in resp.json()["error"]["message"]
    ok(gw.admin("PATCH", f"/admin/v1/access-groups/{group}", json={"models": ["as-*"]}))
    wait_until(lambda: [m.id for m in gw.client(key["key"]).models.list().data] == ["as-sent"], 3,
               "the narrowed group to reach the gateway")
    assert gw.admin("DELETE", f"/admin/v1/access-groups/{group}").status_code == 204
    wait_until(lambda: gw.client(key["key"]).models.list().data == [], 3, "the deleted group to grant nothing")
    assert post_chat(gw, key["key"], {"model": "as-sent", "messages": user_message("x")}).status_code == 403
    actions = [r["action"] for r in ok(gw.admin("GET", f"/admin/v1/audit?target={group}"))["data"]]
    assert actions == ["access_group.delete", "access_group.update", "access_group.create"]
    # Only admins manage groups.
    t = make_tenant(gw)
    assert gw.admin("POST", "/admin/v1/access-groups", key=t.team_admin[1], json={"name": uid("g"), "models": ["*"]}).status_code == 403


def test_openapi_document_is_served_and_matches_the_api(gw):
    resp = gw.admin("GET", "/admin/v1/openapi.json", key=None)
    doc = ok(resp)
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "Tollgate admin API"
    assert {"/admin/v1/keys", "/admin/v1/keys/{id}/rotate", "/admin/v1/teams", "/admin/v1/credentials/{name}",
            "/admin/v1/access-groups", "/admin/v1/audit"} <= set(doc["paths"])
    assert set(doc["paths"]["/admin/v1/keys/{id}"]) == {"get", "patch", "delete"}
    assert "bearer" in doc["components"]["securitySchemes"]
    # The documented request schema is what the server takes: a field it lists is accepted.
    fields = set(doc["components"]["schemas"]["NewKey"]["properties"])
    assert {"name", "models", "access_groups", "user_id", "team_id", "tags", "metadata", "expires_at"} <= fields


def test_bulk_key_creation_is_all_or_nothing(gw, tenants):
    a, _ = tenants
    names = [uid("bulk") for _ in range(3)]
    resp = gw.admin("POST", "/admin/v1/keys/bulk", key=a.team_admin[1], json={"keys": [{"name": n} for n in names]})
    created = ok(resp, 201)["data"]
    assert [k["name"] for k in created] == names and all(k["team_id"] == a.team for k in created)
    for k in created:
        gw.secrets[f"virtual key {k['id']}"] = k["key"]
    gw.wait_key_usable(created[-1]["key"])
    assert all(chat_status(gw, k["key"]) == 200 for k in created)
    for k in created:
        rows = ok(gw.admin("GET", f"/admin/v1/audit?target={k['id']}"))["data"]
        assert [r["action"] for r in rows] == ["key.create"]
    # one bad spec: nothing is created, and the error names it
    before = len(gw.list_keys())
    resp = gw.admin("POST", "/admin/v1/keys/bulk", key=a.team_admin[1],
                    json={"keys": [{"name": "fine"}, {"name": "x", "role": "admin"}]})
    assert resp.status_code == 403 and "keys[1]" in resp.json()["error"]["message"]
    assert len(gw.list_keys()) == before
    assert gw.admin("POST", "/admin/v1/keys/bulk", json={"keys": []}).status_code == 400
