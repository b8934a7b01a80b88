"""What the quota tests share (test_quotas.py and the test_quota_*.py files)."""

from __future__ import annotations

import json

from proxy_wasm_host import SharedData
from wasm_fixtures import (chat_body, config_bytes, credentials_doc, decode_request_state, decode_slots, deployment,
                           gateway_config, publish_keys, provider_properties, send)


REQUEST_STATE = ("tollgate_request",)


def with_quotas(*quotas) -> bytes:
    return config_bytes(gateway_config(quotas=list(quotas)))


def chat(gw):
    return send(gw, "POST", "/v1/chat/completions", chat_body())


def provider_on(make_provider, shared: SharedData):
    """A provider worker on `shared`, with the credential document read."""
    provider = make_provider(shared_data=shared)
    shared.set("tollgate.credentials.v1", credentials_doc())
    provider.tick()
    return provider


# How many ticks a gateway worker waits for a tally write made after a request ended before it
# gives the request's reservations back without one (`WAIT_TICKS` in the gateway's quotas/ending.rs).
WAIT_TICKS = 50


def ticks(gw, n: int, provider=None) -> None:
    """`n` ticks of a gateway worker, each after one of `provider`'s (the worker's provider VM,
    which writes the tallies on its tick). A roomy request's usage is counted from the tally on
    the first gateway tick after the provider wrote it, and written on the next; its reservation
    is given back once a tick reads a write newer than the one the first tick after its end saw
    (the second round here), and written on the tick after (or with an admission to its group,
    whichever comes first). Without a write (no provider: its request never reached one), after
    `WAIT_TICKS` ticks."""
    for _ in range(n):
        if provider is not None:
            provider.tick()
        gw.tick()


def tally_key(ctx) -> str:
    """The shared-data key of the usage tally a gateway context's request names."""
    return f"tollgate.quota.tally.{decode_request_state(ctx.properties_set[REQUEST_STATE])['tally']:016x}"


# A chat's worst case against a token quota: its input estimate + the 4,096 output tokens
# reserved when the client sets no limit.
WORST = (len(chat_body()) + 3) // 4 + 4096


def tpm_workers(make_gateway, limit: int, workers: int = 1):
    """Gateway workers of one Envoy sharing a TPM quota of `limit`, and its slot's `used`."""
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": limit}
    gws = [make_gateway(with_quotas(q), shared_data=shared) for _ in range(workers)]
    return gws, lambda: decode_slots(shared.value("tollgate.quota.quota_tpm"))["quota_tpm"]["used"]


def answer_attempt(provider, down, prompt: int, completion: int, extra_headers=()):
    """The provider filter's attempt for gateway request `down`, answered with this usage."""
    props = provider_properties(deployment(), op=None)
    props.update(down.properties_set)
    up = provider.new_http_context(props)
    up.request_headers(list(down.request_headers_map.pairs) + list(extra_headers), end_of_stream=False)
    up.send_request_body(bytes(down.request_body_forwarded))
    up.response_headers([(":status", "200"), ("content-type", "application/json")])
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    up.response_body(json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [],
                                 "usage": usage}).encode(), end_of_stream=True)
    return up



BEDROCK = deployment(provider="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0",
                     authority="bedrock-runtime.us-east-1.amazonaws.com", base_path="", credential="aws", region="us-east-1")
BEDROCK_ANSWER = json.dumps({"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
                             "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}, "metrics": {"latencyMs": 1}}).encode()
