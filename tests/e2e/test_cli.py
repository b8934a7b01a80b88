"""The operator CLI in the `tollgate` binary, against a running stack: it calls the admin REST
API with the key from TOLLGATE_ADMIN_KEY, prints the answer as JSON, and exits non-zero with the
API's message when a call is refused."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import harness


def cli(gw, *args: str, key: str | None = "admin", stdin: str | None = None, env: dict | None = None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    environ["TOLLGATE_URL"] = gw.admin_url
    if key is not None:
        environ["TOLLGATE_ADMIN_KEY"] = gw.admin_key if key == "admin" else key
    environ.update(env or {})
    return subprocess.run([str(harness.tollgate_bin()), *args], capture_output=True, text=True, timeout=30,
                          env=environ, input=stdin)


def test_keys_and_teams_through_the_cli(gw):
    team = f"cli-{uuid.uuid4().hex[:6]}"
    out = cli(gw, "teams", "create", team, "--models", "gpt-mock")
    assert out.returncode == 0, out.stderr
    team_id = json.loads(out.stdout)["id"]
    out = cli(gw, "keys", "create", "from-cli", "--team", team_id, "--tag", "ci")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    gw.secrets[f"virtual key {created['id']}"] = created["key"]
    assert created["team_id"] == team_id and created["key"].startswith("tg-")
    listed = json.loads(cli(gw, "keys", "list", "--team", team_id).stdout)["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]
    gw.wait_key_usable(created["key"])
    out = cli(gw, "keys", "revoke", created["id"])
    assert out.returncode == 0 and json.loads(out.stdout)["revoked_at"] is not None
    audit = json.loads(cli(gw, "audit", "--target", created["id"]).stdout)["data"]
    assert [a["action"] for a in audit] == ["key.revoke", "key.create"]
    # the generic form
    me = json.loads(cli(gw, "api", "GET", "/admin/v1/me").stdout)
    assert me["role"] == "admin"
    # the admin key never shows in what the CLI prints
    for out in (cli(gw, "keys", "list"), cli(gw, "teams", "list")):
        assert gw.admin_key not in out.stdout + out.stderr


def test_refusals_exit_non_zero_with_the_apis_message(gw):
    out = cli(gw, "keys", "list", key=None)
    assert out.returncode == 2 and "401" in out.stderr and "TOLLGATE_ADMIN_KEY" in out.stderr
    out = cli(gw, "keys", "get", "key_does_not_exist")
    assert out.returncode == 2 and "No key with id" in out.stderr
    out = cli(gw, "keys", "list", env={"TOLLGATE_URL": f"http://127.0.0.1:{harness.free_port()}"})
    assert out.returncode == 1 and "could not reach" in out.stderr
    out = cli(gw, "credentials", "create", "x")
    assert out.returncode == 1 and "TOLLGATE_CREDENTIAL_API_KEY" in out.stderr


def test_table_output(gw):
    team = f"cli-table-{uuid.uuid4().hex[:6]}"
    out = cli(gw, "teams", "create", team, "--table")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split()[:2] == ["id", "name"] and row.split()[1] == team
    team_id = row.split()[0]
    assert team_id.startswith("team_")
    # the creation's row holds the secret, whole; the list's rows never do
    out = cli(gw, "keys", "create", "table-key", "--team", team_id, "--table")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    columns = dict(zip(header.split(), row.split()))
    assert columns["name"] == "table-key" and columns["team_id"] == team_id
    assert columns["key"].startswith("tg-") and len(columns["key"]) == 67
    gw.secrets[f"virtual key {columns['id']}"] = columns["key"]
    out = cli(gw, "keys", "list", "--team", team_id, "--table")
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 2 and lines[1].split()[0] == columns["id"]
    assert "key" not in lines[0].split() and columns["key"] not in out.stdout
    teams = cli(gw, "teams", "list", "--table")
    assert any(line.split()[:2] == [team_id, team] for line in teams.stdout.splitlines())
    empty = cli(gw, "keys", "list", "--team", "team_none", "--table")
    assert (empty.returncode, empty.stdout) == (0, "(none)\n")
    for out in (teams, cli(gw, "audit", "--table")):
        assert out.returncode == 0 and gw.admin_key not in out.stdout + out.stderr


def test_quotas_and_usage_through_the_cli(gw):
    key_id, secret = gw.create_key(name="cli-quota")
    out = cli(gw, "quotas", "create", "requests", "100", "--window", "60", "--key", key_id)
    assert out.returncode == 0, out.stderr
    q = json.loads(out.stdout)
    assert (q["metric"], q["limit"], q["window_seconds"], q["key_id"]) == ("requests", 100, 60, key_id)
    assert q["id"] in [x["id"] for x in json.loads(cli(gw, "quotas", "list").stdout)["data"]]
    team = gw.admin("POST", "/admin/v1/teams", json={"name": f"cli-quota-team-{key_id}"}).json()["id"]
    out = cli(gw, "quotas", "create", "total_tokens", "5000", "--window", "3600", "--team", team, "--fail-mode", "closed",
              "--fit-output-tokens", "32")
    assert out.returncode == 0, out.stderr
    tq = json.loads(out.stdout)
    assert (tq["team_id"], tq["fail_mode"], tq["window_seconds"], tq["fit_output_tokens"]) == (team, "closed", 3600, 32)
    assert cli(gw, "quotas", "delete", tq["id"]).returncode == 0
    out = cli(gw, "quotas", "create", "cost_usd", "12.5", "--provider", "anthropic", "--key", key_id)
    assert out.returncode == 0, out.stderr
    pq = json.loads(out.stdout)
    assert (pq["provider"], pq["limit_usd"], pq["key_id"]) == ("anthropic", "12.5", key_id)
    assert cli(gw, "quotas", "delete", pq["id"]).returncode == 0
    bad = cli(gw, "quotas", "create", "galaxies", "1")
    assert bad.returncode != 0 and "total_tokens" in bad.stderr, bad.stderr
    assert cli(gw, "quotas", "delete", q["id"]).returncode == 0
    assert q["id"] not in [x["id"] for x in json.loads(cli(gw, "quotas", "list").stdout)["data"]]
    out = cli(gw, "usage", "--key", key_id, "--limit", "5")
    assert out.returncode == 0 and json.loads(out.stdout)["data"] == []
