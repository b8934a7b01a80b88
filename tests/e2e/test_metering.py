"""Metering through real Envoy (issue 12): every attempt that reached a provider becomes exactly
one ledger record carrying the usage the provider reported (the mock's `usage_log`, keyed by
Envoy's request id and attempt), retries included; an answer whose usage never came is estimated
and flagged; records made while the control plane is down arrive once it is back, none lost and
none doubled. (Every client API × provider pair is checked in test_matrix.py.)"""

from __future__ import annotations

import socket
import time
from typing import Any

import harness
from e2e_util import assert_openai_error, bearer, unique, user_message


def records(gw: Any, key_id: str) -> list[dict[str, Any]]:
    resp = gw.admin("GET", f"/admin/v1/usage?key_id={key_id}&limit=10000")
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def wait_records(gw: Any, key_id: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    harness.wait_until(lambda: len(records(gw, key_id)) >= count, timeout,
                       f"{count} usage records for key {key_id}", on_timeout=gw.log_tails)
    time.sleep(1.5)  # one more flush: a record too many would show now
    return records(gw, key_id)


def calls_of(mock: Any, word: str) -> list[dict[str, Any]]:
    """The mock's recorded calls whose body holds `word`, with request id and attempt."""
    out = []
    for r in mock.requests:
        if word in r["body"]:
            h = r["headers"]
            out.append({"request_id": h.get("x-request-id"), "attempt": int(h.get("x-envoy-attempt-count", "1")) - 1})
    return out


def expected_tokens(usage: dict[str, Any]) -> tuple[int, int, int]:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return usage["prompt_tokens"] - cached, usage["completion_tokens"], cached


def test_each_attempt_is_one_record_with_the_providers_usage(gw, mock):
    key_id, secret = gw.create_key(name="metering")
    gw.wait_key_usable(secret)
    client = gw.client(secret)
    word = unique()
    client.chat.completions.create(model="gpt-mock", messages=user_message(f"{word} whole"))
    list(client.chat.completions.create(model="gpt-mock", messages=user_message(f"{word} stream with usage"),
                                        stream=True, stream_options={"include_usage": True}))
    # the gateway asks for the usage chunk itself when the client does not
    list(client.chat.completions.create(model="gpt-mock", messages=user_message(f"{word} stream"), stream=True))
    # a retried attempt: the first answers 503, Envoy retries, both are records
    mock.set_faults(status=503, count=1)
    client.chat.completions.create(model="gpt-mock", messages=user_message(f"{word} retried"))
    calls = calls_of(mock, word)
    assert len(calls) == 5 and sorted(c["attempt"] for c in calls) == [0, 0, 0, 0, 1]
    rows = wait_records(gw, key_id, len(calls))
    assert len(rows) == len(calls), rows
    by_attempt = {(r["request_id"], r["attempt"]): r for r in rows}
    assert set(by_attempt) == {(c["request_id"], c["attempt"]) for c in calls}
    answered = [u for u in mock.usage_log if (u["request_id"], u["attempt"]) in by_attempt]
    assert len(answered) == 4, "four attempts answered with usage, one with a 503"
    for u in answered:
        r = by_attempt[(u["request_id"], u["attempt"])]
        assert (r["input_tokens"], r["output_tokens"], r["cache_read_tokens"]) == expected_tokens(u["usage"]), (r, u)
        assert r["status"] == 200 and not r["estimated"]
        assert (r["model"], r["provider"], r["provider_model"], r["key_id"]) == ("gpt-mock", "openai", "mock-model-1", key_id)
        assert r["latency_ms"] >= 0 and r["price_version"]
    failed = [r for r in rows if r["status"] == 503]
    assert len(failed) == 1 and failed[0]["attempt"] == 0 and failed[0]["input_tokens"] == 0
    streams = [r for r in rows if r["stream"]]
    assert len(streams) == 2 and all(r["ttft_ms"] is not None for r in streams)


def test_a_stream_the_client_abandons_is_estimated_and_flagged(gw, mock):
    key_id, secret = gw.create_key(name="metering-abort")
    gw.wait_key_usable(secret)
    mock.set_faults(chunk_delay_ms=300)
    body = (b'{"model":"gpt-mock","stream":true,"messages":[{"role":"user","content":"%s one two three four five six"}]}'
            % unique().encode())
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Authorization: {bearer(secret)['Authorization']}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gw.gateway_port), timeout=10) as s:
        s.sendall(head + body)
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
    [row] = wait_records(gw, key_id, 1)
    assert row["estimated"] and row["status"] == 200 and row["stream"], row
    assert row["input_tokens"] > 0, "estimated from the request body"


def test_records_made_while_the_control_plane_is_down_arrive_once(gw, mock):
    key_id, secret = gw.create_key(name="metering-restart")
    gw.wait_key_usable(secret)
    client = gw.client(secret)
    word = unique()
    gw.cp.stop()
    try:
        for i in range(20):
            client.chat.completions.create(model="gpt-mock", messages=user_message(f"{word} {i}"))
        time.sleep(2)  # several failed posts: the records wait in Envoy
    finally:
        gw.cp.restart()
    calls = calls_of(mock, word)
    assert len(calls) == 20
    rows = wait_records(gw, key_id, 20, timeout=30)
    assert sorted((r["request_id"], r["attempt"]) for r in rows) == sorted((c["request_id"], c["attempt"]) for c in calls)


def test_a_key_holder_reads_its_own_usage_and_spend(gw, mock):
    # a negotiated price for the mock's model, so that the cost is known exactly
    price = {"provider": "openai", "model": "mock-model-1", "input": "1.25", "output": "10.00",
             "as_of": "2026-12-04", "source": "test"}
    assert gw.admin("POST", "/admin/v1/prices", json=price).status_code == 201
    key_id, secret = gw.create_key(name="metering-self")
    other_id, other = gw.create_key(name="metering-other")
    gw.wait_key_usable(other)
    client = gw.client(secret)
    word = unique()
    for i in range(3):
        client.chat.completions.create(model="gpt-mock", messages=user_message(f"{word} {i} spend"))
    rows = wait_records(gw, key_id, 3)
    nanos = sum(r["input_tokens"] * 1250 + r["output_tokens"] * 10_000 for r in rows)
    resp = harness.http("GET", f"{gw.base_url}/usage", headers=bearer(secret))
    assert resp.status_code == 200, resp.text
    usage = resp.json()
    assert (usage["object"], usage["key_id"]) == ("usage", key_id)
    total = usage["total"]
    assert total["requests"] == 3 and total["unpriced"] == 0
    assert total["input_tokens"] == sum(r["input_tokens"] for r in rows)
    assert total["cost_usd"] == f"{nanos // 10**9}.{nanos % 10**9:09d}"
    assert [d["day"] for d in usage["data"]] == [time.strftime("%Y-%m-%d", time.gmtime())]
    # another key sees only itself; a bad key is refused at the edge, in the OpenAI format
    assert harness.http("GET", f"{gw.base_url}/usage", headers=bearer(other)).json()["total"]["requests"] == 0
    assert_openai_error(harness.http("GET", f"{gw.base_url}/usage", headers=bearer("tg-" + "x" * 43)), 401)
    assert harness.http("GET", f"{gw.base_url}/usage?from=yesterday", headers=bearer(secret)).status_code == 400
    # the cost of a non-streamed answer comes back in a header, as the ledger prices it (once
    # the price has reached Envoy in the deployment's metadata: a cluster update, which under
    # load can come after the requests above)
    costed: list[Any] = []

    def answer_with_cost() -> bool:
        body = {"model": "gpt-mock", "messages": user_message(f"{word} costed answer {len(costed)}")}
        costed.append((body, harness.http("POST", f"{gw.base_url}/chat/completions", json=body, headers=bearer(secret))))
        return "x-tollgate-cost-usd" in costed[-1][1].headers
    harness.wait_until(answer_with_cost, 15, "the price to reach Envoy", interval=0.2)
    body, resp = costed[-1]
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"]
    text = body["messages"][0]["content"]
    rid = next(r["headers"]["x-request-id"] for r in mock.requests if text in r["body"])
    harness.wait_until(lambda: any(r["request_id"] == rid for r in records(gw, key_id)), 15, "the costed record")
    [row] = [r for r in records(gw, key_id) if r["request_id"] == rid]
    assert resp.headers["x-tollgate-cost-usd"] == row["cost_usd"], (resp.headers, row)
    streamed = harness.http("POST", f"{gw.base_url}/chat/completions", json={**body, "stream": True}, headers=bearer(secret))
    assert streamed.status_code == 200 and "x-tollgate-cost-usd" not in streamed.headers
    assert harness.http("POST", f"{gw.base_url}/usage", headers=bearer(secret)).status_code == 405
