"""The key table at scale through real Envoy (2 workers): 20,000 keys created in bulk, then one
revocation refused on both workers within a second of the admin call; the keys are nowhere in
Envoy's configuration (they travel as the binary key table, not in ECDS)."""

from __future__ import annotations

import hashlib
import re
import time

import pytest

import harness
from harness import http
from mocks.openai_mock import MockOpenAI

KEYS = 20_000
PROBES = 24  # fresh connections per check: the kernel spreads them over both workers


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    missing = harness.missing_artifacts()
    if missing:
        if harness.require_e2e():
            pytest.fail("e2e stack not built: missing " + "; ".join(missing), pytrace=False)
        pytest.skip("e2e stack not built")
    key_env = "TG_KEYS_SCALE_MOCK"
    mock = MockOpenAI(api_key=harness.random_secret("sk-"))
    config = {"credentials": {"mock": {"api_key_env": key_env}},
              "models": [{"name": "gpt-mock", "deployments": [{"provider": "openai", "base_url": "{{MOCK_BASE_URL}}",
                                                                "model": "mock-model-1", "credential": "mock"}]}]}
    stack = harness.GatewayStack(tmp_path_factory.mktemp("tollgate-keys-scale"), config, {key_env: mock.api_key}, mock)
    stack.start()
    try:
        created = 0
        while created < KEYS:
            n = min(10_000, KEYS - created)
            resp = stack.admin("POST", "/admin/v1/keys/bulk", timeout=300,
                               json={"keys": [{"name": f"scale-{created + i}"} for i in range(n)]})
            assert resp.status_code == 201, resp.text[:300]
            for k in resp.json()["data"][:3]:
                stack.secrets[f"virtual key {k['id']}"] = k["key"]
            created += n
        yield stack
    finally:
        stack.stop()
        mock.stop()


def worker_connections(stack) -> dict[str, int]:
    """Downstream connections each Envoy worker accepted on the gateway listener."""
    text = http("GET", f"{stack.envoy_admin_url}/stats", timeout=5).text
    out: dict[str, int] = {}
    for m in re.finditer(r"^listener\.[^:]*?\.(worker_\d+)\.downstream_cx_total: (\d+)$", text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0) + int(m.group(2))
    return out


def statuses(stack, secret: str) -> list[int]:
    """One request per fresh connection."""
    return [http("GET", f"{stack.base_url}/models", headers={"Authorization": f"Bearer {secret}"},
                 timeout=5).status_code for _ in range(PROBES)]


def test_a_revocation_among_20000_keys_is_refused_on_both_workers_within_a_second(big):
    key_id, secret = big.create_key(name="scale-probe")
    big.wait_key_usable(secret, timeout=10)
    before = worker_connections(big)
    assert statuses(big, secret) == [200] * PROBES
    after = worker_connections(big)
    served = {w for w in after if after[w] > before.get(w, 0)}
    assert served == {"worker_0", "worker_1"}, (before, after)

    start = time.monotonic()
    resp = big.admin("DELETE", f"/admin/v1/keys/{key_id}", timeout=30)
    assert resp.status_code == 200, resp.text
    api_s = time.monotonic() - start
    refused_s = None
    while time.monotonic() - start < 5:
        if statuses(big, secret) == [401] * PROBES:
            refused_s = time.monotonic() - start
            break
    assert refused_s is not None, "the revoked key was still accepted 5 s after the revocation"
    assert refused_s < 1.0, f"refused {refused_s:.3f} s after the revocation began (the admin call took {api_s:.3f} s)"
    # the other keys still work, on every worker
    other = big.create_key(name="scale-after")[1]
    big.wait_key_usable(other, timeout=5)
    assert statuses(big, other) == [200] * PROBES


def test_no_key_is_in_envoys_configuration(big):
    key_id, secret = big.create_key(name="scale-dump")
    big.wait_key_usable(secret, timeout=10)
    dump = http("GET", f"{big.envoy_admin_url}/config_dump", timeout=30).text
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in dump and digest not in dump and key_id not in dump
    # the gateway filter's configuration has no key table in it
    assert '\\"keys\\"' not in dump and '"keys"' not in dump
    assert len(dump) < 2_000_000, f"config_dump is {len(dump)} bytes with {KEYS} keys"
