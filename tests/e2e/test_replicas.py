"""Control-plane replicas on one PostgreSQL (issue 11): two control planes, each with its own
Envoy, share a database. A change made through replica A reaches the Envoy of replica B within
2 seconds and the other way round (every write NOTIFYs in its transaction; each replica LISTENs
and republishes), and the audit trail holds both replicas' writes."""

from __future__ import annotations

import base64
import os
import subprocess
import time
import uuid

import pytest

import harness
from conftest import stack_config
from e2e_util import PROVIDER_KEY_ENV, WRONG_KEY_ENV
from mocks.openai_mock import MockOpenAI

PG = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-v", "ON_ERROR_STOP=1", "-q", "-c"]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    db = f"tollgate_replicas_{uuid.uuid4().hex[:10]}"
    try:
        subprocess.run([*PG, f"CREATE DATABASE {db}"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is needed for the replica test: {err}", pytrace=False)
    url = f"postgres://postgres@127.0.0.1:5432/{db}"
    provider_env = {PROVIDER_KEY_ENV: harness.random_secret("sk-mock-"), WRONG_KEY_ENV: harness.random_secret("sk-wrong-"),
                    "TOLLGATE_KEK": base64.b64encode(os.urandom(32)).decode()}
    mock = MockOpenAI(api_key=provider_env[PROVIDER_KEY_ENV])
    config = stack_config(dead_port=harness.free_port())
    stacks = []
    try:
        a = harness.GatewayStack(tmp_path_factory.mktemp("replica-a"), config, provider_env, mock, database_url=url)
        stacks.append(a.start())
        b = harness.GatewayStack(tmp_path_factory.mktemp("replica-b"), config, provider_env, mock, database_url=url,
                                 admin_key=a.admin_key, data_plane_token=a.data_plane_token)
        stacks.append(b.start())
        yield a, b
    finally:
        for s in stacks:
            s.stop()
        mock.stop()
        subprocess.run([*PG, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True, timeout=30)


def until(predicate, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s")


def test_a_change_on_one_replica_reaches_the_other_replicas_envoy(replicas):
    a, b = replicas
    # Both listen (the periodic 2 s reload alone would not make the 1 s bound below).
    for s in (a, b):
        assert s.cp is not None
        logs = "".join(p.read_text(errors="replace") for p in s.cp.log_paths)
        assert "listening for other control planes' changes" in logs
    key_id, secret = a.create_key(name="made-on-a")
    took = until(lambda: b.key_works(secret), 1.0)
    print(f"key created on A usable on B's Envoy after {took:.2f} s")
    b.revoke_key(key_id)
    took = until(lambda: not a.key_works(secret), 1.0)
    print(f"key revoked on B refused on A's Envoy after {took:.2f} s")
    # Teams made on one are visible and usable on the other at once (one database).
    team = a.admin("POST", "/admin/v1/teams", json={"name": f"t-{uuid.uuid4().hex[:6]}"}).json()
    assert b.admin("GET", f"/admin/v1/teams/{team['id']}").json()["name"] == team["name"]
    rows = a.admin("GET", f"/admin/v1/audit?target={key_id}").json()["data"]
    assert [r["action"] for r in rows] == ["key.revoke", "key.create"]


def test_blocking_on_one_replica_is_enforced_by_both(replicas):
    a, b = replicas
    key_id, secret = b.create_key(name="blocked-later")
    until(lambda: a.key_works(secret) and b.key_works(secret), 3.0)
    assert a.admin("PATCH", f"/admin/v1/keys/{key_id}", json={"blocked": True}).status_code == 200
    until(lambda: not a.key_works(secret) and not b.key_works(secret), 1.0)


def test_a_rotation_retried_on_the_other_replica_gets_the_same_answer(replicas):
    a, b = replicas
    key_id, secret = a.create_key(name="rotated-twice")
    idem = uuid.uuid4().hex
    first = a.admin("POST", f"/admin/v1/keys/{key_id}/rotate", json={"grace_seconds": 30}, headers={"Idempotency-Key": idem})
    assert first.status_code == 200, first.text
    a.secrets["rotated key"] = first.json()["key"]
    again = b.admin("POST", f"/admin/v1/keys/{key_id}/rotate", json={"grace_seconds": 30}, headers={"Idempotency-Key": idem})
    assert again.status_code == 200, again.text
    assert again.json() == first.json(), "a retry on another replica is answered as the first"
    rows = b.admin("GET", f"/admin/v1/audit?target={key_id}&action=key.rotate").json()["data"]
    assert len(rows) == 1, "the retry rotated nothing"
    until(lambda: b.key_works(first.json()["key"]) and b.key_works(secret), 2.0)
    # Another idempotency key is another rotation.
    other = a.admin("POST", f"/admin/v1/keys/{key_id}/rotate", json={"grace_seconds": 0, "idempotency_key": uuid.uuid4().hex})
    assert other.status_code == 200 and other.json()["key"] != first.json()["key"]
    a.secrets["rotated key 2"] = other.json()["key"]


# --------------------------------------------------------------------------- quota leases (issue 13)

def _chat(stack, secret: str, text: str):
    return harness.http("POST", f"{stack.base_url}/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                        json={"model": "gpt-mock", "messages": [{"role": "user", "content": text}]}, timeout=30)


def _envoy_counter(stack, name: str) -> int:
    text = harness.http("GET", f"{stack.envoy_admin_url}/stats?filter={name}", timeout=5).text
    return sum(int(line.rsplit(":", 1)[1]) for line in text.splitlines() if line.strip().endswith(tuple("0123456789")) and name in line)


def _away_from_a_minute_boundary(need: float = 25) -> None:
    left = 60 - time.time() % 60
    if left < need:
        time.sleep(left + 0.5)


def test_a_leased_rate_limit_is_exact_across_two_envoys_and_two_control_planes(replicas):
    """One quota of 30 requests a minute, 60 requests spread over both Envoys (each with its own
    control plane, one database): exactly 30 admitted in all, the provider sees exactly those,
    and the rest are refused with a 429 naming the quota."""
    import concurrent.futures
    a, b = replicas
    key_id, secret = a.create_key(name="leased-rpm")
    until(lambda: a.key_works(secret) and b.key_works(secret), 5.0)
    _away_from_a_minute_boundary()
    q = a.admin("POST", "/admin/v1/quotas", json={"metric": "requests", "window_seconds": 60, "limit": 30, "key_id": key_id})
    assert q.status_code == 201, q.text
    quota_id = q.json()["id"]
    # The quota reaches both Envoys (B's control plane republishes on A's notification).
    until(lambda: all(quota_id in harness.http("GET", f"{s.envoy_admin_url}/config_dump", timeout=5).text for s in (a, b)), 5.0)
    word = uuid.uuid4().hex[:8]
    stacks = [a, b]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: _chat(stacks[i % 2], secret, f"{word} {i}"), range(60)))
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(ok) == 30 and len(refused) == 30, [r.status_code for r in answers]
    assert quota_id in refused[0].json()["error"]["message"]
    assert {r.headers["x-ratelimit-limit-requests"] for r in ok} == {"30"}, "the quota's limit, not a share"
    assert len([r for r in a.mock.requests if word in r["body"]]) == 30, "refused requests never reach the provider"
    assert a.admin("DELETE", f"/admin/v1/quotas/{quota_id}").status_code == 204


def test_below_80_percent_a_leased_quota_seldom_waits_on_the_network(replicas):
    """A quota used well below its limit: the service VM keeps the lease topped up, so at most 1
    request in 50 waits for a grant (counted by `tollgate_quota_network_waits`)."""
    a, _ = replicas
    key_id, secret = a.create_key(name="leased-quiet")
    until(lambda: a.key_works(secret), 5.0)
    _away_from_a_minute_boundary(need=20)
    q = a.admin("POST", "/admin/v1/quotas", json={"metric": "requests", "window_seconds": 60, "limit": 1000, "key_id": key_id})
    assert q.status_code == 201, q.text
    time.sleep(1.0)
    before = _envoy_counter(a, "tollgate_quota_network_waits")
    for i in range(100):
        assert _chat(a, secret, f"quiet {i}").status_code == 200
        time.sleep(0.05)
    waits = _envoy_counter(a, "tollgate_quota_network_waits") - before
    print(f"network waits: {waits} of 100 requests")
    assert waits <= 2, f"{waits} of 100 requests waited for a grant"
    assert a.admin("DELETE", f"/admin/v1/quotas/{q.json()['id']}").status_code == 204
