"""The control plane's shape, end to end: the credential document on the internal listener
(apart from the admin API), and a broken deployment row that does not stop a key revocation."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

import harness
from e2e_util import PROVIDER_KEY_ENV

CREDENTIALS_PATH = "/internal/v1/credentials"


def test_credentials_are_served_on_the_internal_listener(gw):
    url = f"{gw.internal_url}{CREDENTIALS_PATH}"
    token = {"Authorization": f"Bearer {gw.data_plane_token}"}
    resp = harness.http("GET", url, headers=token)
    assert resp.status_code == 200, resp.text[:300]
    doc = resp.json()
    assert resp.headers["etag"] == f'"{doc["version"]}"'
    assert doc["credentials"]["mock"]["api_key"] == gw.provider_env[PROVIDER_KEY_ENV]
    again = harness.http("GET", url, headers={**token, "If-None-Match": resp.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")
    for bad in ({}, {"Authorization": "Bearer tg-dp-not-the-token-0123456789"},
                {"Authorization": f"Bearer {gw.admin_key}"}):
        refused = harness.http("GET", url, headers=bad)
        assert refused.status_code == 401
        assert gw.provider_env[PROVIDER_KEY_ENV] not in refused.text
    # Only the credential document: no admin API, no demo model, no health on this port.
    for method, path in (("GET", "/admin/v1/keys"), ("GET", "/admin/v1/models"),
                         ("GET", "/healthz"), ("POST", "/demo/v1/chat/completions")):
        resp = harness.http(method, f"{gw.internal_url}{path}",
                            headers={"Authorization": f"Bearer {gw.admin_key}"})
        assert resp.status_code == 404, (path, resp.status_code)
    # The admin API still answers on its own port.
    assert gw.admin("GET", "/admin/v1/keys").status_code == 200


@pytest.fixture()
def demo_stack(tmp_path):
    missing = harness.missing_artifacts()
    if missing:
        if os.environ.get("TOLLGATE_REQUIRE_E2E", "") not in ("", "0", "false", "no"):
            pytest.fail("e2e stack not built: " + "; ".join(missing), pytrace=False)
        pytest.skip("e2e stack not built")
    stack = harness.GatewayStack(tmp_path, {"models": [
        {"name": "demo", "deployments": [{"provider": "demo"}]}]}, {})
    try:
        stack.start()
    except (harness.StartupError, TimeoutError) as err:
        stack.stop()
        pytest.fail(f"could not start the stack:\n{err}", pytrace=False)
    yield stack
    stack.stop()


def test_a_broken_deployment_row_does_not_stop_a_key_revocation(demo_stack):
    gw = demo_stack
    key_id, secret = gw.create_key()
    gw.wait_key_usable(secret)
    # A row the config file and the admin API would refuse, written straight into the store.
    spec = {"name": "broken", "deployments": [{"provider": "openai", "base_url": "ftp://x/v1"}]}
    with sqlite3.connect(gw.cp.data_dir / "tollgate.db", timeout=10) as db:
        db.execute("INSERT INTO models (name, position, spec, created_at) VALUES (?, 99, ?, 1)",
                   ("broken", json.dumps(spec)))
    db.close()
    models = {m["name"]: m for m in gw.admin("GET", "/admin/v1/models").json()["data"]}
    assert models["broken"]["served"] is False
    assert models["broken"]["problems"][0] == {
        "deployment": 0, "reason": "base_url must start with http:// or https://"}
    assert models["demo"]["served"] is True and models["demo"]["problems"] == []

    gw.revoke_key(key_id)  # raises unless the revocation (and its publication) succeeded
    harness.wait_until(lambda: not gw.key_works(secret), 10,
                       "the gateway to refuse the revoked key", on_timeout=gw.log_tails)
    # Later changes go through too, and the good model is still served.
    _, fresh = gw.create_key()
    gw.wait_key_usable(fresh)
    listed = harness.http("GET", f"{gw.base_url}/models",
                          headers={"Authorization": f"Bearer {fresh}"}).json()
    assert [m["id"] for m in listed["data"]] == ["demo"]
    # Logged once (the deployment, and the model it leaves without any), as warnings with
    # structured fields, although every refresh since has seen the row.
    records = [json.loads(line) for line in gw.cp.stderr_path.read_text().splitlines()
               if line.startswith("{") and '"not served"' in line]
    broken = [r["fields"] for r in records if r["fields"].get("model") == "broken"]
    assert sorted((f.get("deployment", -1), f["reason"]) for f in broken) == [
        (-1, "none of its deployments can be served"),
        (0, "base_url must start with http:// or https://")], broken
    assert all(r["level"] == "WARN" for r in records)


def test_the_control_plane_stops_promptly_with_envoy_connected(gw):
    """SIGTERM ends the control plane within its 2 s grace even though Envoy's ADS stream stays
    open (it used to hold the graceful shutdown until the harness killed it); Envoy keeps
    serving and reconnects when the control plane is back."""
    assert gw.cp is not None and gw.cp.proc is not None
    started = time.monotonic()
    gw.cp.proc.terminate()
    code = gw.cp.proc.wait(timeout=15)
    took = time.monotonic() - started
    gw.cp.restart()
    assert code == 0 and took < 5, (code, took)
