#!/usr/bin/env python3
"""Paired A/B: Envoy CPU per request of two or more targets on one scenario, in interleaved
rounds, for differences smaller than `bench/run.py`'s run-to-run noise (issue 13's 8 µs for a
key's quotas, say).

    .venv/bin/python bench/ab.py --targets tollgate-priced tollgate-quotas [--scenario chat_c16]
                                 [--rounds 6] [--duration 5] [--warmup 2]

Every target is started first and stays up (each pinned to CPU 0 as in `run.py`, the idle ones
costing next to nothing); then each round measures each target in turn, the order reversed
every other round, so that a drift of the machine's speed (other work, thermal, the page cache)
falls on all of them alike. It prints each round's figures and, last, one JSON line: every
target's CPU per request by round, their medians, and for each target after the first the
median, mean, least and most of its per-round difference from the first (the paired figure to
quote), with 90% intervals of the median and the mean (5,000 bootstrap resamples of the rounds,
a fixed seed); with bare Envoy (`envoy`) among the targets, each difference is also given as a
share of bare Envoy's median (machines differ in speed; the share carries between them).

`make bench-quotas` runs issue 13's measurement: `tollgate-priced` (the baseline), then
`tollgate-quotas` (the same key with a budget, an RPM and a TPM quota) and bare Envoy, 16
connections, 20 rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from typing import Any

from common import ALL_TARGETS, BENCH, MORE_TARGETS, log
from load import probe, run_load, scenarios
from targets import Mock, make_targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", choices=ALL_TARGETS + MORE_TARGETS, required=True,
                        help="two or more; the first is the baseline")
    parser.add_argument("--scenario", default="chat_c16", help="a scenario of bench/run.py (default chat_c16)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per target and round")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target and round")
    parser.add_argument("--rate", type=float, default=500.0, help="the fixed-rate scenario's rate")
    args = parser.parse_args()
    if len(args.targets) < 2:
        log("ab.py: name at least two targets (the first is the baseline)")
        return 2
    by_name = {s.name: s for s in scenarios(args.rate)}
    if args.scenario not in by_name:
        log(f"ab.py: no scenario {args.scenario!r} (one of {', '.join(by_name)})")
        return 2
    sc = by_name[args.scenario]

    work = BENCH / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-ab-logs"
    work.mkdir(parents=True, exist_ok=True)
    mock = Mock(work, 20, 1000).start()
    all_targets = make_targets()
    started: list[tuple[str, Any]] = []
    try:
        for name in args.targets:
            target = all_targets[name]
            target.install(work)
            log(f"==> {name}: starting")
            target.start(work, mock)
            started.append((name, target))
            if probe(target) and sc.stream:
                log(f"ab.py: {name} cannot stream; choose a chat scenario")
                return 1
        cpu: dict[str, list[float]] = {name: [] for name, _ in started}
        for r in range(args.rounds):
            order = started if r % 2 == 0 else started[::-1]
            for name, target in order:
                res = run_load(target, mock, sc, args.warmup, args.duration)
                if res.get("errors") or res.get("cpu_us_per_req") is None:
                    log(f"ab.py: {name} round {r + 1}: {res.get('errors')} errors; its figures are not used")
                    return 1
                cpu[name].append(res["cpu_us_per_req"])
                log(f"    round {r + 1} {name:<24} cpu {res['cpu_us_per_req']} µs/req  "
                    f"{res['rps']:,.0f} req/s  other load {res.get('other_cpu_load')}")
    finally:
        for _, target in started:
            target.stop()
        mock.stop()
    base = args.targets[0]
    out: dict[str, Any] = {
        "scenario": sc.name, "rounds": args.rounds, "duration_s": args.duration,
        "cpu_us_per_req": cpu,
        "median_us": {n: round(statistics.median(v), 1) for n, v in cpu.items()},
        "over_first_us": {},
    }
    bare = statistics.median(cpu["envoy"]) if "envoy" in cpu else None
    for name in args.targets[1:]:
        diffs = [b - a for a, b in zip(cpu[base], cpu[name])]
        fig = {"median": round(statistics.median(diffs), 1), "median_90": interval(diffs, statistics.median),
               "mean": round(statistics.mean(diffs), 1), "mean_90": interval(diffs, statistics.mean),
               "least": round(min(diffs), 1), "most": round(max(diffs), 1)}
        if bare and name != "envoy":
            fig["median_of_bare_envoy"] = round(fig["median"] / bare, 3)
        out["over_first_us"][name] = fig
        log(f"    {name} over {base}: median {fig['median']:+} µs (90%: {fig['median_90'][0]:+} to "
            f"{fig['median_90'][1]:+}), mean {fig['mean']:+} µs (90%: {fig['mean_90'][0]:+} to {fig['mean_90'][1]:+})"
            + (f", {fig['median_of_bare_envoy']:.1%} of bare Envoy's {bare:.1f} µs" if "median_of_bare_envoy" in fig else ""))
    print(json.dumps(out))
    return 0


def interval(diffs: list[float], stat) -> list[float]:
    """The 5th and 95th percentiles of `stat` over 5,000 bootstrap resamples of `diffs`."""
    if len(diffs) < 2:
        return [round(diffs[0], 1)] * 2 if diffs else [0.0, 0.0]
    rng = random.Random(13)
    est = sorted(stat(rng.choices(diffs, k=len(diffs))) for _ in range(5000))
    return [round(est[250], 1), round(est[4749], 1)]


if __name__ == "__main__":
    sys.exit(main())
