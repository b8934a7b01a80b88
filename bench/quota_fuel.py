#!/usr/bin/env python3
"""The quota path's wasm cost at a given request rate, in the wasm harness (no Envoy): the
`tollgate-quotas` chat (a budget, an RPM and a TPM quota on the key, leases in hand) against the
`tollgate-priced` one, through warm gateway and provider VMs, with the gateway's tick every
`--per-tick` requests (its 100 ms at the rate: 400 is 4,000 requests a second) and the
provider's every 2.5 times that (its 250 ms). It prints, per request, each VM's wasm
instructions (wasmtime's fuel) by callback, ticks included, and the host calls the quotas add.

Deterministic, so it compares two builds where `make bench`'s CPU per request moves by more than
the difference, and it runs at the rate `bench/instructions.py` cannot (callgrind runs about 110
chats a second, where a worker's credit and its tick's work are spread over few requests):

    .venv/bin/python bench/quota_fuel.py [--requests 2400] [--per-tick 400] [--wasm-dir DIR]

`--wasm-dir`: another build's `tollgate_gateway_filter.wasm` and `tollgate_provider_filter.wasm`
(e.g. an older commit built with `CARGO_TARGET_DIR=/tmp/old cargo build --target wasm32-wasip1
--release -p tollgate-gateway-filter -p tollgate-provider-filter` in a `git worktree`).
Envoy's cost of a host call is in bench/README ("What a crossing costs"); a wasm instruction is
about 1.4 to 1.7 of Envoy's (two estimates: callgrind's count of the filters' JIT code against the
harness's fuel, and the quota path's callgrind figure less its host calls' per-call costs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "wasm-tests"))

import wasm_fixtures as F  # noqa: E402
import test_crossings as T  # noqa: E402
from proxy_wasm_host import Host, SharedData  # noqa: E402

SCENARIO = "chat, key with a budget, an RPM and a TPM quota (leases in hand)"
WARMUP = 400


def per_request(quotas: bool, requests: int, per_tick: int, gateway_wasm: str, provider_wasm: str) -> dict:
    body, dep, content_type, chunks = T.SCENARIOS[SCENARIO]
    cfg = F.gateway_config(quotas=T.QUOTAS, model_prices=T.PRICES) if quotas else F.gateway_config(model_prices=T.PRICES)
    cfg["models"][0]["name"] = "real-model"
    # The run starts at its minute's start and must end within it: the quotas' leases are for that
    # window (`T.lease_in_hand`), and each gateway tick moves the clock on by 100 ms.
    start = F.NOW - F.NOW % 60
    if (WARMUP + requests) / per_tick * 0.1 >= 60:
        raise SystemExit(f"{WARMUP + requests} requests at {per_tick} a tick span a minute's window "
                         "(the leases in hand are for one): fewer --requests, or more --per-tick")
    shared = SharedData()
    F.publish_keys(shared)
    if quotas:
        T.lease_in_hand(shared)
    gw = Host(gateway_wasm, F.config_bytes(cfg), now=start, shared_data=shared)
    shared.set(F.SHARED_CREDENTIALS_KEY, F.credentials_doc(aws=T.AWS))
    pv = Host(provider_wasm, b"", now=start, shared_data=shared)
    provider_every = per_tick * 5 // 2
    for i in range(WARMUP + requests):
        if i == WARMUP:
            gw.crossings.clear()
            pv.crossings.clear()
        down = gw.new_http_context()
        down.request_headers(F.request_headers("POST", "/v1/chat/completions"))
        down.request_body(body, end_of_stream=True)
        if down.local_response is not None:
            raise SystemExit(f"request {i} refused: {down.local_response}")
        props = dict(down.properties_set)
        props[F.DEPLOYMENT_PATH] = dep
        up = pv.new_http_context(props)
        up.request_headers(list(down.request_headers_map.pairs))
        if up.actions[-1][1].name == "PAUSE":
            up.request_body(bytes(down.request_body_forwarded), end_of_stream=True)
        up.response_headers([(":status", "200"), ("content-type", content_type)])
        for j, chunk in enumerate(chunks):
            up.response_body(chunk, end_of_stream=j == len(chunks) - 1)
        up.finish()
        down.finish()
        if i % per_tick == per_tick - 1 and gw.root.tick_period_ms > 0:
            gw.tick()
        if i % provider_every == provider_every - 1:
            pv.tick()
    out = {}
    for name, host in (("gateway", gw), ("provider", pv)):
        c = host.crossings
        out[name] = {
            "wasm_instructions": round(c["fuel"] / requests),
            "by_callback": {k.split("@", 1)[1]: round(v / requests) for k, v in sorted(c.items()) if k.startswith("fuel@")},
            "host_calls": {k.split(":", 1)[1]: round(v / requests, 3) for k, v in sorted(c.items())
                           if k.startswith("host:") and k != "host:proxy_log"},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2400)
    ap.add_argument("--per-tick", type=int, default=400, help="requests between two gateway ticks (100 ms)")
    ap.add_argument("--wasm-dir", help="a directory with another build's two filter modules")
    args = ap.parse_args()
    gateway_wasm, provider_wasm = str(F.GATEWAY_WASM), str(F.PROVIDER_WASM)
    if args.wasm_dir:
        gateway_wasm = str(Path(args.wasm_dir) / "tollgate_gateway_filter.wasm")
        provider_wasm = str(Path(args.wasm_dir) / "tollgate_provider_filter.wasm")
    priced = per_request(False, args.requests, args.per_tick, gateway_wasm, provider_wasm)
    quotas = per_request(True, args.requests, args.per_tick, gateway_wasm, provider_wasm)
    report = {"requests": args.requests, "per_tick": args.per_tick}
    for name in ("gateway", "provider"):
        p, q = priced[name], quotas[name]
        extra_calls = {k: round(v - p["host_calls"].get(k, 0), 3) for k, v in q["host_calls"].items()}
        extra_calls.update({k: -v for k, v in p["host_calls"].items() if k not in q["host_calls"]})
        report[name] = {"priced": p["wasm_instructions"], "quotas": q["wasm_instructions"],
                        "over_priced": q["wasm_instructions"] - p["wasm_instructions"],
                        "quotas_by_callback": q["by_callback"], "priced_by_callback": p["by_callback"],
                        "host_calls_over_priced": {k: v for k, v in extra_calls.items() if v}}
        print(f"{name}: {q['wasm_instructions']:,} wasm instructions a request against {p['wasm_instructions']:,} "
              f"(+{q['wasm_instructions'] - p['wasm_instructions']:,}); host calls over priced: "
              f"{report[name]['host_calls_over_priced']}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
