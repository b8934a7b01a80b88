#!/usr/bin/env python3
"""What one host call of each kind costs Envoy, in instructions, measured with callgrind
(bench/instructions.py's method): the `envoy-wasm-noop` target (two no-op filters) is counted
once as it is and once per kind with its downstream filter making `--calls` host calls of that
kind on every request; (with − without) / calls is one call's cost: the crossing from V8 into
Envoy and back, Envoy's work, and for a call that returns data the buffer handed back (a second
VM entry, `proxy_on_memory_allocate`). Issue 14's "measure first": which crossings a design can
afford.

    .venv/bin/python bench/crossing_costs.py [--kinds get_header set_header ...] [--calls 20]

About a minute a kind (Envoy runs under valgrind). Prints a JSON line and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import instructions  # noqa: E402  (sets the valgrind wrapper before targets are made)
from common import CHAT_BODY, log  # noqa: E402
from targets import Mock, make_targets  # noqa: E402

KINDS = ["get_header", "get_headers", "set_header", "remove_header", "get_property", "set_property",
         "get_shared_data", "set_shared_data", "now"]
# Kinds measured only when asked for (`--kinds`), and whole call lists (`--specs`).
MORE_KINDS = ["add_header", "get_status", "get_shared_absent", "get_body", "set_body", "six_by_pairs"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS + MORE_KINDS)
    ap.add_argument("--specs", nargs="+", default=[], metavar="NAME=CALLS",
                    help="whole call lists compared instead of kinds, e.g. "
                         "'replace=response_headers.get_status=1,response_headers.set_header=6': each is "
                         "reported as its instructions a request over the no-op target's")
    ap.add_argument("--calls", type=int, default=20, help="calls of the kind per request")
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    body = CHAT_BODY.read_bytes()
    work = Path(tempfile.mkdtemp(prefix="tollgate-crossings-"))
    mock = Mock(work, 11, 0).start()
    counts: dict[str, int] = {}
    try:
        specs = dict(s.split("=", 1) for s in args.specs)
        for kind in [None, *(specs or args.kinds)]:
            t = make_targets()["envoy-wasm-noop"]
            t.calls = (specs[kind] if specs else f"{kind}={args.calls}") if kind else ""
            t.install(work)
            name = kind or "none"
            log(f"==> {name}: starting under callgrind")
            t.start(work, mock)
            try:
                counts[name] = instructions.measure(t, args.requests, body)["instructions_per_request"]
            finally:
                t.stop()
            if kind:
                log(f"    {kind}: {(counts[name] - counts['none']) / (1 if specs else args.calls):,.0f} instructions"
                    f" {'a request' if specs else 'a call'}")
        if specs:
            print(json.dumps({"noop_instructions_per_request": counts["none"],
                              "instructions_per_request_over_noop": {k: v - counts["none"] for k, v in counts.items() if k != "none"}}))
            return 0
    finally:
        mock.stop()
    per_call = {k: round((v - counts["none"]) / args.calls) for k, v in counts.items() if k != "none"}
    print(json.dumps({"calls_per_request": args.calls, "noop_instructions_per_request": counts["none"],
                      "instructions_per_call": per_call}))
    print("| host call | Envoy instructions a call |\n|---|---|")
    for k, v in per_call.items():
        print(f"| {k} | {v:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
