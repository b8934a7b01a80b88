#!/usr/bin/env python3
"""Envoy's instructions per request, counted by callgrind: repeatable where wall-clock CPU is
not (a 2-vCPU machine's `make bench` moves by ±25 µs between runs; callgrind's count moves by
well under 1%).

Each target's Envoy runs under `valgrind --tool=callgrind` with collection off; collection is
switched on (`callgrind_control -i on`) for `--requests` sequential requests, then for an idle
period as long as that took (timers, stats flushes, the service VM's ticks), and the idle
instructions are taken off. Instructions per request = (loaded − idle) / requests. The counts
are of Envoy's whole process (its C++ and the filters' V8 code), not of the load generator,
the mock or the control plane.

    .venv/bin/python bench/instructions.py [--targets envoy tollgate ...] [--requests 300] [--stream]

Slow (Envoy runs some 50 times slower under valgrind): about a minute a target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(tempfile.mkdtemp(prefix="tollgate-callgrind-"))
os.environ["BENCH_ENVOY_WRAP"] = (f"valgrind --tool=callgrind --instr-atstart=no --smc-check=all-non-file "
                                  f"--callgrind-out-file={OUT}/callgrind.out.%p")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ALL_TARGETS, BENCH, CHAT_BODY, MORE_TARGETS, log, post  # noqa: E402
from targets import Mock, TargetError, make_targets  # noqa: E402

STREAM_BODY = BENCH / "requests" / "chat-2k-stream.json"


def control(pid: int, *args: str) -> str:
    return subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=300).stdout


def instructions(pid: int) -> int:
    """Dumps the counters and returns the instructions since the last dump (zeroed by it)."""
    before = set(OUT.glob(f"callgrind.out.{pid}*"))
    control(pid, "--dump")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = set(OUT.glob(f"callgrind.out.{pid}*")) - before
        for f in new:
            text = f.read_text(errors="replace")
            m = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
            if m:
                return int(m[1])
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def measure(target, requests: int, body: bytes) -> dict:
    pid = target.measured_pids()[0]
    url = target.url("/v1/chat/completions")
    headers = {**target.headers, "content-type": "application/json"}
    for _ in range(20):  # warm up (JIT tiers, connection pools, the key table copy)
        status, _ = post(url, body, headers, timeout=60)
        if status != 200:
            raise TargetError(f"warm-up request answered {status}")
    control(pid, "--instr=on")
    instructions(pid)  # zero
    t0 = time.monotonic()
    for _ in range(requests):
        status, _ = post(url, body, headers, timeout=60)
        if status != 200:
            raise TargetError(f"request answered {status}")
    took = time.monotonic() - t0
    loaded = instructions(pid)
    time.sleep(took)
    idle = instructions(pid)
    control(pid, "--instr=off")
    per = (loaded - idle) / requests
    return {"requests": requests, "seconds": round(took, 1), "instructions_loaded": loaded,
            "instructions_idle": idle, "instructions_per_request": round(per)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", nargs="+", default=["envoy", "tollgate"], choices=ALL_TARGETS + MORE_TARGETS)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--stream", action="store_true", help="the streamed chat instead of the plain one")
    args = ap.parse_args()
    body = (STREAM_BODY if args.stream else CHAT_BODY).read_bytes()
    work = Path(tempfile.mkdtemp(prefix="tollgate-instructions-"))
    mock = Mock(work, 11, 0).start()
    targets = make_targets()
    results = {}
    try:
        for name in args.targets:
            t = targets[name]
            t.install(work)
            log(f"==> {name}: starting under callgrind")
            t.start(work, mock)
            try:
                results[name] = measure(t, args.requests, body)
                log(f"    {name}: {results[name]['instructions_per_request']:,} instructions a request")
            finally:
                t.stop()
    finally:
        mock.stop()
    base = results.get("envoy", {}).get("instructions_per_request")
    for r in results.values():
        if base:
            r["over_bare_envoy"] = r["instructions_per_request"] - base
    print(json.dumps({"stream": args.stream, "targets": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
