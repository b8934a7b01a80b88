#!/usr/bin/env python3
"""Tollgate benchmark: the same load against the mock alone, bare Envoy, Tollgate, LiteLLM and
Portkey, each started, measured and stopped here, all in front of the same `bench-mock`.

    .venv/bin/python bench/run.py [--quick] [--targets floor envoy tollgate tollgate-bedrock litellm portkey]
                                  [--duration S] [--warmup S] [--rate RPS]

Targets run pinned to CPU 0 (Envoy with one worker); the load generator and the mock to CPU 1.
The target's CPU time per request comes from /proc/<pid>/stat (utime + stime of every process
in its tree) sampled at the edges of the measurement window, which `bench-load` announces on
stderr. See bench/README.md for the columns and the caveats.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from common import (ALL_TARGETS, MORE_TARGETS, BENCH, CHAT_BODY, LOAD_CPU, TARGET_CPU, bench_bin, harness,
                    log)
from load import probe, run_load, scenarios
from procstat import machine_info
from report import table
from targets import Mock, TargetError, make_targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="short warm-up and duration, for a smoke run (< 2 minutes)")
    parser.add_argument("--targets", nargs="+", choices=ALL_TARGETS + MORE_TARGETS, default=list(ALL_TARGETS))
    parser.add_argument("--duration", type=float, help="seconds measured per scenario "
                        "(default 10, quick 1.5)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per scenario "
                        "(default 3, quick 0.5)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="request rate of the fixed-rate scenario (default 500/s)")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--chunk-delay-us", type=int, default=1000,
                        help="mock's delay between streamed chunks (default 1000 µs)")
    parser.add_argument("--keys", type=int, default=0,
                        help="virtual keys created besides the bench key in the Tollgate targets "
                             "(the request path with a large key table; e.g. 100000)")
    args = parser.parse_args()
    duration = args.duration or (1.5 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 3.0)

    for name in ("bench-mock", "bench-load"):
        if not bench_bin(name).exists():
            log(f"{bench_bin(name)} is missing: cargo build --release -p tollgate-bench")
            return 2
    if os.cpu_count() and os.cpu_count() < 2:
        log("warning: fewer than 2 CPUs: the load generator and the targets share one core")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_dir = BENCH / "results"
    work = results_dir / f"{stamp}-logs"
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    scs = scenarios(args.rate)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "options": {"quick": args.quick, "duration_s": duration, "warmup_s": warmup,
                    "rate": args.rate, "stream_chunks": args.chunks,
                    "chunk_delay_us": args.chunk_delay_us,
                    "request_bytes": CHAT_BODY.stat().st_size,
                    "envoy_concurrency": 1, "extra_keys": args.keys},
        "scenarios": [vars(s) for s in scs],
        "targets": {},
    }
    mock = Mock(work, args.chunks, args.chunk_delay_us).start()
    all_targets = make_targets()
    for t in all_targets.values():
        if hasattr(t, "extra_keys"):
            t.extra_keys = args.keys
    try:
        for tname in args.targets:
            target = all_targets[tname]
            entry: dict[str, Any] = {"label": target.label, "features": target.features,
                                     "status": "ok", "scenarios": {}}
            report["targets"][tname] = entry
            t0 = time.monotonic()
            try:
                target.install(work)
            except (TargetError, OSError, subprocess.SubprocessError) as err:
                entry.update(status="not installed", error=str(err))
                log(f"==> {tname}: NOT INSTALLED: {err}")
                continue
            entry["version"] = target.version
            log(f"==> {tname} ({target.label} {target.version}): starting")
            try:
                target.start(work, mock)
                stream_error = probe(target)
                entry["startup_s"] = round(time.monotonic() - t0, 1)
                for sc in scs:
                    if sc.stream and stream_error:
                        entry.setdefault("scenario_errors", {})[sc.name] = stream_error
                        log(f"    {sc.name:<11} FAILED: {stream_error}")
                        continue
                    res = run_load(target, mock, sc, warmup, duration)
                    entry["scenarios"][sc.name] = res
                    lat = res.get("latency_us") or {}
                    log(f"    {sc.name:<11} {res['rps']:>10,.0f} req/s  p50 {lat.get('p50')} µs"
                        f"  p99 {lat.get('p99')} µs  errors {res['errors']}"
                        f"  cpu {res.get('cpu_us_per_req')} µs/req"
                        f"  other load {res.get('other_cpu_load')}")
            except (TargetError, harness.StartupError, TimeoutError, OSError) as err:
                entry.update(status="failed", error=f"{err}\n{target.logs()}"[-3000:])
                log(f"==> {tname}: FAILED: {str(err)[:2000]}")
            finally:
                target.stop()
                entry["total_s"] = round(time.monotonic() - t0, 1)
    finally:
        mock.stop()
    report["elapsed_s"] = round(time.monotonic() - began, 1)
    out = results_dir / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    print(f"\nmachine: {report['machine']['cpus']} CPUs ({report['machine']['cpu_model']}); "
          f"targets on CPU {TARGET_CPU}, load generator + mock on CPU {LOAD_CPU}; "
          f"warm-up {warmup}s, measured {duration}s per scenario; run took "
          f"{report['elapsed_s']:.0f}s\nresults: {out}\nlogs: {work}")
    return 0 if all(t["status"] == "ok" for t in report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
