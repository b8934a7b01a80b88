#!/usr/bin/env python3
"""How the data plane copes with many virtual keys (issue 11, "data plane at scale").

Starts the real stack (tests/harness.py: control plane on SQLite, Envoy with 2 workers, the
OpenAI mock), creates keys through `POST /admin/v1/keys/bulk` up to each size in SIZES, and at
each size measures:

- the admin calls' own time (the control plane updates the key table before it answers), for
  one key created and then revoked;
- the time from the creation call's answer to the key's first use through Envoy, and from the
  revocation call's start to its refusal on every one of 16 fresh connections (spread over both
  workers);
- Envoy's CPU per thread (from /proc/<pid>/task/*/schedstat, nanoseconds) over the revocation
  (from the call to 0.5 s after the refusal): each worker (`wrk:worker_N`, which copies the
  changed shard on its next request) and the main thread (the service VM, which receives and
  publishes it), next to the same window with the same probe requests and no change;
- the time of an admin call that changes what allowances are made of (a new access group), for
  which the control plane recomputes every key's entries in memory;
- Envoy's CPU per thread around a control-plane restart (a new epoch: every shard is sent
  again, and each worker copies the whole table on its next request);
- Envoy's and the control plane's RSS.

Prints one JSON line per size.

    TOLLGATE_BIN=target/release/tollgate .venv/bin/python bench/keys_scale.py [--sizes 10,10000,100000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import harness  # noqa: E402
from mocks.openai_mock import MockOpenAI  # noqa: E402

PROBES = 16


def thread_cpu_ns(pid: int) -> dict[str, int]:
    """CPU time per thread name (threads of one name summed)."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            ns = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            continue
        out[name] = out.get(name, 0) + ns
    return out


def delta_ms(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    return {k: round((after.get(k, 0) - before.get(k, 0)) / 1e6, 2) for k in sorted(after)
            if after.get(k, 0) - before.get(k, 0) > 0}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def statuses(stack, secret: str) -> list[int]:
    """One request per fresh connection (the kernel spreads them over the workers)."""
    return [harness.http("GET", f"{stack.base_url}/models", headers={"Authorization": f"Bearer {secret}"},
                         timeout=5).status_code for _ in range(PROBES)]


def until(pred, timeout: float) -> tuple[float, int]:
    """Seconds until `pred()` held, and how many times it was asked."""
    start = time.monotonic()
    asked = 0
    while time.monotonic() - start < timeout:
        asked += 1
        if pred():
            return time.monotonic() - start, asked
        time.sleep(0.005)
    raise TimeoutError(f"not within {timeout} s")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,10000,100000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="tollgate-keys-"))
    key_env = "TG_KEYS_MOCK"
    mock = MockOpenAI(api_key=harness.random_secret("sk-"))
    config = {"credentials": {"mock": {"api_key_env": key_env}},
              "models": [{"name": "gpt-mock", "deployments": [{"provider": "openai", "base_url": "{{MOCK_BASE_URL}}",
                                                                "model": "mock-model-1", "credential": "mock"}]}]}
    stack = harness.GatewayStack(work, config, {key_env: mock.api_key}, mock)
    stack.start()
    try:
        assert stack.envoy is not None and stack.envoy.pid is not None
        assert stack.cp is not None and stack.cp.pid is not None
        pid = stack.envoy.pid
        have = len(stack.list_keys())
        for size in sizes:
            t0 = time.monotonic()
            cpu_bulk0 = thread_cpu_ns(pid)
            while have < size:
                n = min(10_000, size - have)
                resp = stack.admin("POST", "/admin/v1/keys/bulk", timeout=600,
                                   json={"keys": [{"name": f"k{have + i}"} for i in range(n)]})
                assert resp.status_code == 201, resp.text[:300]
                have += n
            bulk_s = time.monotonic() - t0
            time.sleep(2)  # let the data plane take the last bulk change
            cpu_bulk = delta_ms(cpu_bulk0, thread_cpu_ns(pid))

            t1 = time.monotonic()
            created = stack.admin("POST", "/admin/v1/keys", json={"name": "probe"}, timeout=300).json()
            api_create_s = time.monotonic() - t1
            key_id, secret = created["id"], created["key"]
            created_to_use, _ = until(lambda: stack.key_works(secret), 60)
            assert statuses(stack, secret) == [200] * PROBES
            time.sleep(1)

            # The same probing with no change, for comparison.
            base0 = thread_cpu_ns(pid)
            _, asked = until(lambda: statuses(stack, secret) == [200] * PROBES, 5)
            time.sleep(0.5)
            baseline = delta_ms(base0, thread_cpu_ns(pid))

            cpu0 = thread_cpu_ns(pid)
            t2 = time.monotonic()
            assert stack.admin("DELETE", f"/admin/v1/keys/{key_id}", timeout=300).status_code == 200
            api_revoke_s = time.monotonic() - t2
            revoke_to_refusal, asked = until(lambda: statuses(stack, secret) == [401] * PROBES, 60)
            revoke_to_refusal += api_revoke_s
            time.sleep(0.5)
            change = delta_ms(cpu0, thread_cpu_ns(pid))

            # A change to what allowances are made of (a new access group): the control plane
            # recomputes every key's entries in memory (no key row read); no shard changes.
            t3 = time.monotonic()
            resp = stack.admin("POST", "/admin/v1/access-groups", timeout=300,
                               json={"name": f"group-{size}", "models": ["gpt-*"]})
            assert resp.status_code == 201, resp.text[:300]
            api_group_s = time.monotonic() - t3

            # A restarted control plane has a new epoch: the service VM gets every shard again and
            # each worker copies the whole table on its next request (the largest key change).
            time.sleep(0.5)
            cpu_r0 = thread_cpu_ns(pid)
            t4 = time.monotonic()
            stack.cp.restart(60)
            restart_s = time.monotonic() - t4
            time.sleep(3)  # the control plane loads the keys; the service VM polls and publishes
            other = stack.admin("POST", "/admin/v1/keys", json={"name": "probe-after"}, timeout=300).json()["key"]
            until(lambda: statuses(stack, other) == [200] * PROBES, 60)
            time.sleep(0.5)
            restart_cpu = delta_ms(cpu_r0, thread_cpu_ns(pid))
            print(json.dumps({"keys": have, "bulk_create_s": round(bulk_s, 2),
                              "api_create_s": round(api_create_s, 3), "created_to_first_use_s": round(created_to_use, 3),
                              "api_revoke_s": round(api_revoke_s, 3), "api_access_group_s": round(api_group_s, 3),
                              "revoke_call_to_refused_everywhere_s": round(revoke_to_refusal, 3),
                              "probe_rounds": asked,
                              "envoy_cpu_ms_revocation": change, "envoy_cpu_ms_same_probes_no_change": baseline,
                              "envoy_cpu_ms_bulk": cpu_bulk,
                              "control_plane_restart_s": round(restart_s, 2),
                              "envoy_cpu_ms_control_plane_restart": restart_cpu,
                              "envoy_rss_mb": round(rss_mb(pid), 1),
                              "control_plane_rss_mb": round(rss_mb(stack.cp.pid), 1)}), flush=True)
    finally:
        stack.stop()
        mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
