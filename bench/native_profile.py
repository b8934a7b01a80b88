#!/usr/bin/env python3
"""Where the quota path's code goes, by function: the gateway and provider filters compiled for
this machine (`bench/native-profile`), driven through `bench/quota_fuel.py`'s scenario (the
quota chat against the priced one, leases in hand, ticks at the given rate) by an in-memory
host, under callgrind. Prints, per request, what the quotas add to each callback and the
functions whose own instructions they add to most.

V8's code for the wasm has no symbols under callgrind (`bench/instructions.py` sees it as
anonymous JIT code), and the harness's fuel counts callbacks only; this names functions. The
host's own work is left out (callgrind counts only inside the callbacks, which the tool calls
through functions of their own, and not inside the host's methods: `--toggle-collect` on both),
so the counts are the filters' code alone, in x86 instructions: about half the wasm instructions
`quota_fuel.py` counts for the same requests, and not Envoy's for V8's code; read them as
where the cost is, with quota_fuel.py and instructions.py for what it is. About two minutes
(the first build, with its own target directory, about three more):

    .venv/bin/python bench/native_profile.py [--requests 3000] [--per-tick 400] [--top 25] [--keep DIR]
                                             [--scenario "stream (11 chunks), usage asked"]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "wasm-tests"))

import wasm_fixtures as F  # noqa: E402
import test_crossings as T  # noqa: E402
from proxy_wasm_host import SharedData  # noqa: E402

SCENARIO = "chat, key with a budget, an RPM and a TPM quota (leases in hand)"
TARGET_DIR = ROOT / "target" / "native-profile"
BINARY = TARGET_DIR / "release" / "native-profile"
# A callgrind_annotate line: count, then "file:function [object]".
LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?)(?: \[[^\]]*\])?$")
FUNCTION = re.compile(r"^(?:.*?\.(?:rs|c|S|h|cc)|\?\?\?):(.*)$")


def fixture(path: Path, scenario: str = SCENARIO) -> None:
    """The scenario as `native-profile` reads it (bytes as hex): its request and answer, with the
    quota chat's configurations (the key with or without its three quotas)."""
    body, dep, content_type, chunks = T.SCENARIOS[scenario]
    targets = {}
    for name, quotas in (("priced", False), ("quotas", True)):
        cfg = F.gateway_config(quotas=T.QUOTAS, model_prices=T.PRICES) if quotas else F.gateway_config(model_prices=T.PRICES)
        cfg["models"][0]["name"] = "real-model"
        shared = SharedData()
        F.publish_keys(shared)
        if quotas:
            T.lease_in_hand(shared)
        shared.set(F.SHARED_CREDENTIALS_KEY, F.credentials_doc(aws=T.AWS))
        values = {k: shared.value(k).hex() for k in shared.keys()}
        targets[name] = {"config": F.config_bytes(cfg).hex(), "shared": values}
    as_bytes = lambda v: v if isinstance(v, (bytes, bytearray)) else str(v).encode()  # noqa: E731
    doc = {
        "targets": targets,
        "request_headers": [[n, as_bytes(v).decode()] for n, v in F.request_headers("POST", "/v1/chat/completions")],
        "body": as_bytes(body).hex(),
        "deployment": as_bytes(dep).hex(),
        "deployment_path": list(F.DEPLOYMENT_PATH),
        "content_type": content_type,
        "chunks": [as_bytes(c).hex() for c in chunks],
        # The minute's start: the leases in hand are for the fixture's minute, and the gateway's
        # ticks move the clock on.
        "now": F.NOW - F.NOW % 60,
    }
    path.write_text(json.dumps(doc))


def build() -> None:
    print("==> building bench/native-profile (release, with line tables, in target/native-profile)", file=sys.stderr)
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET_DIR), CARGO_PROFILE_RELEASE_DEBUG="line-tables-only",
               CARGO_PROFILE_RELEASE_STRIP="none")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "tollgate-native-profile"], cwd=ROOT, env=env, check=True)


def profile(fx: Path, target: str, requests: int, per_tick: int, work: Path) -> tuple[dict[str, int], dict[str, int], dict]:
    """(inclusive, exclusive) instructions by function and the run's own report. With line
    tables callgrind splits a function by the source file of its (inlined) code: the exclusive
    parts add up, the inclusive ones nest (the outermost, the largest, is the whole)."""
    out = work / f"callgrind.{target}"
    # Collection is off at the start; each toggle flips it on entry and back on return: on in a
    # callback, off again in a host method it calls.
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--collect-atstart=no",
                          "--toggle-collect=native_profile::gateway_on_*", "--toggle-collect=native_profile::provider_on_*",
                          "--toggle-collect=<native_profile::MemoryHost as tollgate_wasm::host::Host>::*",
                          str(BINARY), str(fx), target, str(requests), str(per_tick)],
                         capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise SystemExit(f"native-profile {target} failed:\n{run.stderr[-2000:]}")
    report = json.loads(run.stdout.strip().splitlines()[-1])
    tables = []
    for inclusive in ("yes", "no"):
        text = subprocess.run(["callgrind_annotate", "--auto=no", f"--inclusive={inclusive}", "--threshold=100", str(out)],
                              capture_output=True, text=True, check=True).stdout
        by: dict[str, int] = defaultdict(int)
        for line in text.splitlines():
            m = LINE.match(line)
            if not m or m.group(2).startswith(("=>", "PROGRAM", "events")):
                continue
            f = FUNCTION.match(m.group(2))
            name, count = f.group(1) if f else m.group(2), int(m.group(1).replace(",", ""))
            by[name] = max(by[name], count) if inclusive == "yes" else by[name] + count
        tables.append(dict(by))
    return tables[0], tables[1], report


CALLBACK = re.compile(r"^native_profile::(gateway|provider)_(on_\w+)$")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--per-tick", type=int, default=400, help="requests between two gateway ticks (100 ms)")
    ap.add_argument("--top", type=int, default=25, help="functions listed")
    ap.add_argument("--keep", help="a directory to keep callgrind's two files in (for callgrind_annotate --auto=yes by line)")
    ap.add_argument("--scenario", default=SCENARIO, choices=sorted(T.SCENARIOS),
                    help="the request and answer (wasm-tests/test_crossings.py), with or without the quotas")
    args = ap.parse_args()
    if (args.requests / args.per_tick) * 0.1 >= 60:
        raise SystemExit("the run would span a minute's window (the leases in hand are for one): fewer --requests or more --per-tick")
    for tool in ("valgrind", "callgrind_annotate", "cargo"):
        if not shutil.which(tool):
            raise SystemExit(f"native_profile.py needs {tool}")
    build()
    n = args.requests
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        fx = work / "fixture.json"
        fixture(fx, args.scenario)
        runs = {t: profile(fx, t, n, args.per_tick, work) for t in ("priced", "quotas")}
    (p_inc, p_exc, p_rep), (q_inc, q_exc, q_rep) = runs["priced"], runs["quotas"]
    callbacks: dict[str, dict[str, int]] = {}
    for name in sorted(set(p_inc) | set(q_inc)):
        m = CALLBACK.match(name)
        if m:
            key = f"{m.group(1)} {m.group(2)}"
            callbacks[key] = {"priced": round(p_inc.get(name, 0) / n), "quotas": round(q_inc.get(name, 0) / n)}
    print(f"x86 instructions a request of the filters' own code ({n} requests, a gateway tick every {args.per_tick}; host left out)")
    print(f"{'callback':<36} {'priced':>8} {'quotas':>8} {'added':>8}")
    for k, v in callbacks.items():
        print(f"{k:<36} {v['priced']:>8,} {v['quotas']:>8,} {v['quotas'] - v['priced']:>+8,}")
    total = {t: sum(v[t] for v in callbacks.values()) for t in ("priced", "quotas")}
    print(f"{'all callbacks':<36} {total['priced']:>8,} {total['quotas']:>8,} {total['quotas'] - total['priced']:>+8,}")
    print(f"\nfunctions whose own instructions the quotas change most (a request; inlined code counts where it was inlined)")
    rows = sorted(((q_exc.get(k, 0) - p_exc.get(k, 0)) / n, k) for k in set(p_exc) | set(q_exc)
                  if "native_profile" not in k)
    rows = sorted(rows, key=lambda r: -abs(r[0]))[: args.top]
    for d, k in rows:
        print(f"{d:>+8,.0f}  {k[:150]}")
    print(json.dumps({"requests": n, "per_tick": args.per_tick, "callbacks": callbacks, "total": total,
                      "host_calls": {"priced": p_rep["host_calls"], "quotas": q_rep["host_calls"]}}))


if __name__ == "__main__":
    main()
