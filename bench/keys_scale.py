#!/usr/bin/env python3
"""How the data plane copes with many virtual keys (issue 11, "data plane at scale").

Starts the real stack (tests/harness.py: control plane on SQLite, Envoy with 2 workers, the
OpenAI mock), creates keys through `POST /admin/v1/keys/bulk` up to each size in SIZES, and at
each size measures: the time from a key's creation to its first use through Envoy, the time from
a revocation to its refusal, the Envoy CPU (user+system, /proc) spent while a revocation is
applied, and Envoy's RSS. Prints one JSON line per size.

    .venv/bin/python bench/keys_scale.py [--sizes 10,10000,100000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import harness  # noqa: E402
from mocks.openai_mock import MockOpenAI  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def until(pred, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.01)
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
        pid = stack.envoy.pid
        have = len(stack.list_keys())
        for size in sizes:
            t0 = time.monotonic()
            while have < size:
                n = min(10_000, size - have)
                resp = stack.admin("POST", "/admin/v1/keys/bulk", timeout=600,
                                   json={"keys": [{"name": f"k{have + i}"} for i in range(n)]})
                assert resp.status_code == 201, resp.text[:300]
                have += n
            bulk_s = time.monotonic() - t0
            time.sleep(3)  # let Envoy settle after the last bulk push
            cpu0 = cpu_seconds(pid)
            t1 = time.monotonic()
            created = stack.admin("POST", "/admin/v1/keys", json={"name": "probe"}, timeout=300).json()
            api_create_s = time.monotonic() - t1
            key_id, secret = created["id"], created["key"]
            created_to_use = until(lambda: stack.key_works(secret), 120)
            t2 = time.monotonic()
            assert stack.admin("DELETE", f"/admin/v1/keys/{key_id}", timeout=300).status_code == 200
            api_revoke_s = time.monotonic() - t2
            revoke_to_refusal = until(lambda: not stack.key_works(secret), 120)
            time.sleep(1)
            cpu_two_changes = cpu_seconds(pid) - cpu0
            print(json.dumps({"keys": have, "bulk_create_s": round(bulk_s, 2),
                              "api_create_s": round(api_create_s, 3), "api_revoke_s": round(api_revoke_s, 3),
                              "created_to_first_use_s": round(created_to_use, 3),
                              "revoked_to_refused_s": round(revoke_to_refusal, 3),
                              "envoy_cpu_s_two_changes": round(cpu_two_changes, 3),
                              "envoy_rss_mb": round(rss_mb(pid), 1)}), flush=True)
    finally:
        stack.stop()
        mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
