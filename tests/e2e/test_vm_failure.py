"""A filter's wasm VM fails (a trap) under load, in real Envoy: the worker recovers
(`failure_policy: FAIL_RELOAD`), and no request is let through unauthenticated or sent to the
provider without its credential meanwhile.

The stack runs with `TOLLGATE_TEST_FAULT_INJECTION` (a test-only switch of the control plane):
a request carrying `x-tollgate-fault: trap-gateway` or `trap-provider` makes that filter's VM
trap (catalogue F-12)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import harness
from e2e_util import PROVIDER_KEY_ENV, unique, user_message
from harness import http
from mocks.openai_mock import MockOpenAI


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    key = harness.random_secret("sk-mock-")
    mock = MockOpenAI(api_key=key)
    config = {
        "credentials": {"mock": {"api_key_env": PROVIDER_KEY_ENV}},
        "models": [{"name": "gpt-mock", "deployments": [
            {"provider": "openai", "base_url": "{{MOCK_BASE_URL}}", "model": "mock-model-1", "credential": "mock"}]}],
    }
    stack = harness.GatewayStack(tmp_path_factory.mktemp("tollgate-faults"), config,
                                 {PROVIDER_KEY_ENV: key, "TOLLGATE_TEST_FAULT_INJECTION": "true"}, mock=mock)
    stack.start()
    try:
        stack.wait_chat_ready("gpt-mock")
        yield stack, mock, key
    finally:
        stack.stop()


def chat(gw, secret, text, fault=None, timeout=10.0):
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers["authorization"] = f"Bearer {secret}"
    if fault:
        headers["x-tollgate-fault"] = fault
    body = json.dumps({"model": "gpt-mock", "messages": user_message(text)})
    return http("POST", f"{gw.base_url}/chat/completions", data=body, headers=headers, timeout=timeout)


def vm_failures(gw) -> int:
    """Envoy's count of failed wasm VMs (runtime errors), from its admin stats."""
    stats = http("GET", f"{gw.envoy.admin_url}/stats?filter=wasm").text
    return sum(int(line.rsplit(":", 1)[1]) for line in stats.splitlines()
               if "runtime_error" in line or "vm_failed" in line or "failed_vm" in line)


@pytest.mark.parametrize("fault", ["trap-gateway", "trap-provider"])
def test_a_trapped_vm_recovers_and_lets_nothing_through(faulty, fault):
    gw, mock, provider_key = faulty
    secret = gw.admin_key
    # Two workers: trap both VMs of the filter (a connection lands on either worker).
    trapped = []
    for _ in range(4):
        token = unique()
        resp = chat(gw, secret, token, fault=fault)
        trapped.append((token, resp.status_code))
        assert resp.status_code >= 500, f"the trap request was answered {resp.status_code}: {resp.text[:300]}"
        # A request whose VM died was never sent to the provider.
        assert not [r for r in mock.requests if token in r["body"]]

    # While the VMs are reloaded, and after: unauthenticated requests never pass, and every
    # request that reaches the provider carries the gateway's credential.
    def unauthenticated(i):
        return chat(gw, None, f"no-key-{i}").status_code

    def authenticated(i):
        return chat(gw, secret, f"with-key-{i}").status_code

    deadline = time.monotonic() + 30.0
    recovered = False
    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline:
            bad = list(pool.map(unauthenticated, range(8)))
            assert all(400 <= s < 600 and s != 429 for s in bad), bad
            assert 200 not in bad
            good = list(pool.map(authenticated, range(8)))
            if all(s == 200 for s in good):
                recovered = True
                break
            time.sleep(0.2)
    assert recovered, "the gateway did not serve again within 30 s of the trap"
    assert not [r for r in mock.requests if "no-key-" in r["body"]]
    assert all(r["headers"].get("authorization") == f"Bearer {provider_key}" for r in mock.requests)
    envoy_log = "".join(p.read_text(errors="replace") for p in gw.envoy.log_paths if p.exists())
    print(f"statuses of the trap requests: {[s for _, s in trapped]}; wasm failure stats: {vm_failures(gw)}")
    assert "Function: proxy_on_request_headers failed" in envoy_log or vm_failures(gw) > 0, envoy_log[-2000:]
