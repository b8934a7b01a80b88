"""Crossings between Envoy and the filters' VMs per request — VM entries (callbacks), host calls
and buffers handed back — counted by the harness for the request shapes the benchmark measures.
They are the currency of the data plane's cost (about 1 µs each on the benchmark machine, see
bench/README.md); `python wasm-tests/test_crossings.py` prints the table, and the test keeps each
count within its budget so that a change adding a crossing has to say so here.

The harness follows Envoy's order of callbacks; Envoy may split a body into more chunks than the
harness does (one chunk per body here, 11 for the stream), so these are the counts for that
chunking."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_wasm_host import Host, SharedData  # noqa: E402
from wasm_fixtures import (  # noqa: E402
    GATEWAY_WASM, NOW, PROVIDER_WASM, SHARED_CREDENTIALS_KEY, DEPLOYMENT_PATH, chat_body, config_bytes,
    credentials_doc, deployment, encode_slots, gateway_config, publish_keys, request_headers,
)

AWS = {"aws": {"access_key_id": "AKIDCROSSING", "secret_access_key": "crossing-secret"}}
CHAT_ANSWER = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()
BEDROCK_ANSWER = json.dumps({
    "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
    "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}, "metrics": {"latencyMs": 1}}).encode()


def sse_chunks(n: int) -> list[bytes]:
    def chunk(delta, finish=None, usage=None):
        c = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage:
            c["usage"] = usage
        return b"data: " + json.dumps(c).encode() + b"\n\n"
    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": f"w{i} "}) for i in range(n - 3)]
    out.append(chunk({}, "stop"))
    out.append(chunk({}, usage={"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}) + b"data: [DONE]\n\n")
    return out


SCENARIOS = {
    # name: (client body, deployment, response status/headers, response chunks)
    "chat, body as sent": (chat_body("real-model"), deployment(), "application/json", [CHAT_ANSWER]),
    "chat, model id rewritten": (chat_body("gpt-a"), deployment(), "application/json", [CHAT_ANSWER]),
    "stream (11 chunks), usage asked": (
        chat_body("real-model", stream=True, stream_options={"include_usage": True}), deployment(),
        "text/event-stream", sse_chunks(11)),
    "chat, OpenAI -> Bedrock (translate, SigV4)": (
        chat_body("gpt-a"),
        deployment(provider="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0",
                   authority="bedrock-runtime.us-east-1.amazonaws.com", base_path="", credential="aws", region="us-east-1"),
        "application/json", [BEDROCK_ANSWER]),
    "chat, key with a budget, an RPM and a TPM quota (leases in hand)": (
        chat_body("real-model", max_tokens=50), deployment(), "application/json", [CHAT_ANSWER]),
}

# The three quotas of the quota scenario (issue 13's bench case), leased, each with a lease in
# hand for the current window (so no grant is waited for).
QUOTAS = [
    {"id": "quota_budget", "metric": "cost_usd", "limit": 10**12, "lease": True, "key_id": "k1", "group": "k1"},
    {"id": "quota_rpm", "metric": "requests", "window_seconds": 60, "limit": 10**6, "lease": True, "share": 10**5, "key_id": "k1",
     "group": "k1"},
    {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 10**9, "lease": True, "share": 10**8,
     "key_id": "k1", "group": "k1"},
]
PRICES = {"real-model": {"input": 1000, "output": 2000, "cache_read": 0, "cache_write": 0}}


def lease_in_hand(shared: SharedData) -> None:
    # The authority has most of each quota left (as in the bench, whose quotas are never
    # reached): the request is roomy, its usage goes through the worker's tally.
    slots = {q["id"]: {"window": NOW // q["window_seconds"] if q.get("window_seconds") else 0, "used": 0, "leased": 10**10,
                       "free": q["limit"]} for q in QUOTAS}
    shared.set("tollgate.quota.g.k1", encode_slots(slots))

# Budgets: the counts measured when this file was written. Raise one only with a reason.
# Metering (issue 12) added to the provider's: two clock reads (start, end; the end in
# on_delete, which every stream enters anyway; a SigV4 attempt reuses its signing time), a third
# for a stream's time to first byte, and one body read for a passed-through JSON answer's usage.
# The record itself costs no host call per request: it waits in the worker's outbox, handed to
# the service VM on the timer in batches (`test_usage_records.py`).
# The gateway's (3, 5, 2): one shared-data read per request (the key table's version key, whose
# CAS says whether any shard changed), written empty so that no buffer comes back for it (a
# buffer handed back is a second VM entry: about 8,000 of Envoy's instructions, see
# bench/crossing_costs.py). In Envoy the provider's chat costs two host calls fewer than here:
# the router puts the deployment's authority in `:authority` and drops `accept-encoding` before
# any attempt (the harness's client headers are as the client sent them).
BUDGETS = {
    "chat, body as sent": {"gateway": (3, 5, 2), "provider": (4, 12, 5)},
    "chat, model id rewritten": {"gateway": (3, 5, 2), "provider": (5, 14, 6)},
    "stream (11 chunks), usage asked": {"gateway": (3, 5, 2), "provider": (14, 25, 15)},
    "chat, OpenAI -> Bedrock (translate, SigV4)": {"gateway": (3, 5, 2), "provider": (5, 20, 6)},
    # Quotas (issue 13): the group's slots read and written with compare-and-swap at admission
    # (the three quotas of the key are one group: one shared-data value for all of them), one
    # clock read, and the rate-limit headers. The holds travel in the request state (binary, no
    # second filter-state value). While the quotas are roomy, as here and in the bench, nothing
    # is written when the request ends: the attempt's usage goes to the worker's tally (in the
    # provider VM's memory, written on its tick: no host call), and the worker's tick counts it
    # and gives the reservations back, with its next admission's compare-and-swap (was (3, 10, 4)
    # and (4, 20, 6) before the tally, with a settling read and compare-and-swap in the provider).
    # The gateway's clock read is handed on in the holds: the provider's meter starts the first
    # attempt from it (was (4, 19, 5) with a clock read of its own, then (4, 18, 5) with the
    # tally written per attempt).
    "chat, key with a budget, an RPM and a TPM quota (leases in hand)": {"gateway": (3, 8, 3), "provider": (4, 17, 5)},
}


def one_request(name: str) -> dict[str, Counter]:
    body, dep, content_type, chunks = SCENARIOS[name]
    quotas = "quota" in name
    cfg = gateway_config(quotas=QUOTAS, model_prices=PRICES) if quotas else gateway_config()
    cfg["models"][0]["name"] = "real-model" if b'"real-model"' in body else cfg["models"][0]["name"]
    keys = SharedData()
    publish_keys(keys)
    if quotas:
        lease_in_hand(keys)
    gateway = Host(GATEWAY_WASM, config_bytes(cfg), now=NOW, shared_data=keys)
    # The worker copies the key table on its first request; count a request after that.
    warm = gateway.new_http_context()
    warm.request_headers(request_headers("GET", "/v1/models"), end_of_stream=True)
    warm.finish()
    shared = keys if quotas else SharedData()
    shared.set(SHARED_CREDENTIALS_KEY, credentials_doc(aws=AWS))
    provider = Host(PROVIDER_WASM, b"", now=NOW, shared_data=shared)
    for h in (gateway, provider):
        h.crossings.clear()  # count the request only, not configuration

    down = gateway.new_http_context()
    down.request_headers(request_headers("POST", "/v1/chat/completions"))
    down.request_body(body, end_of_stream=True)
    assert down.local_response is None, down.local_response
    props = dict(down.properties_set)
    props[DEPLOYMENT_PATH] = dep
    up = provider.new_http_context(props)
    up.request_headers(list(down.request_headers_map.pairs))
    if up.actions[-1][1].name == "PAUSE":
        up.request_body(bytes(down.request_body_forwarded), end_of_stream=True)
    assert up.local_response is None, up.local_response
    up.response_headers([(":status", "200"), ("content-type", content_type)])
    for i, chunk in enumerate(chunks):
        up.response_body(chunk, end_of_stream=i == len(chunks) - 1)
    for ctx in (up, down):
        ctx.finish()
    return {"gateway": gateway.crossings, "provider": provider.crossings}


def summary(c: Counter) -> tuple[int, int, int]:
    """(VM entries, host calls, buffers handed back)."""
    vm = sum(n for k, n in c.items() if k.startswith("vm:"))
    host = sum(n for k, n in c.items() if k.startswith("host:") and k != "host:proxy_log")
    return vm, host, c["alloc"]


def test_crossings_stay_within_budget(gateway_wasm, provider_wasm):
    for name in SCENARIOS:
        counts = one_request(name)
        for module, budget in BUDGETS[name].items():
            got = summary(counts[module])
            assert all(g <= b for g, b in zip(got, budget)), f"{name} / {module}: {got} > budget {budget}: {dict(counts[module])}"


def table() -> str:
    rows = ["| request | module | VM entries | host calls | buffers back | wasm instructions | by kind |", "|---|---|---|---|---|---|---|"]
    for name in SCENARIOS:
        for module, c in one_request(name).items():
            vm, host, alloc = summary(c)
            kinds = ", ".join(f"{k.split(':', 1)[1].removeprefix('proxy_')} {n}" for k, n in sorted(c.items()) if ":" in k and k != "host:proxy_log")
            rows.append(f"| {name} | {module} | {vm} | {host} | {alloc} | {c['fuel']:,} | {kinds} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
