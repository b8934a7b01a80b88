"""Quotas at the provider filter's edges (issue 13): the rate-limit headers written on the answer
(replacing a provider's own, or added where it sends none), and a first attempt's start and SigV4
signing time taken from the gateway's admission."""

from __future__ import annotations

import json
import time

import pytest

from proxy_wasm_host import SharedData
from wasm_fixtures import NOW, credentials_doc, decode_request_state, deployment, publish_keys, provider_properties

from quota_helpers import BEDROCK, BEDROCK_ANSWER, REQUEST_STATE, WORST, answer_attempt, chat, with_quotas


@pytest.mark.parametrize("provider_kind", ["openai", "bedrock"])
def test_rate_limit_headers_replace_a_providers_own_and_are_added_where_it_sends_none(make_gateway, make_provider, provider_kind):
    """The rate-limit headers replace the provider's own where its answers may carry the same
    names (an OpenAI-style server's `x-ratelimit-*`): the client sees one value of each, Tollgate's.
    Bedrock's answers carry none, so there they are added (a replace looks for the name's values
    first, which costs Envoy more), with the same headers seen."""
    shared = SharedData()
    publish_keys(shared)
    rpm = {"id": "quota_rpm", "metric": "requests", "window_seconds": 60, "limit": 100}
    tpm = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 100 * WORST}
    gw = make_gateway(with_quotas(rpm, tpm), shared_data=shared)
    provider = make_provider(shared_data=shared)
    shared.set("tollgate.credentials.v1", credentials_doc(aws={"aws": {"access_key_id": "AKIDQUOTA", "secret_access_key": "quota-secret"}}))
    provider.tick()
    down = chat(gw)
    assert down.local_response is None
    props = provider_properties(BEDROCK if provider_kind == "bedrock" else deployment(), op=None)
    props.update(down.properties_set)
    up = provider.new_http_context(props)
    up.request_headers(list(down.request_headers_map.pairs), end_of_stream=False)
    up.send_request_body(bytes(down.request_body_forwarded))
    assert up.local_response is None, up.local_response
    provider.crossings.clear()
    if provider_kind == "bedrock":
        up.response_headers([(":status", "200"), ("content-type", "application/json"), ("x-amzn-requestid", "r1")])
        up.response_body(BEDROCK_ANSWER, end_of_stream=True)
    else:
        own = [("x-ratelimit-limit-requests", "5000"), ("x-ratelimit-remaining-tokens", "1"), ("x-ratelimit-reset-requests", "12ms")]
        up.response_headers([(":status", "200"), ("content-type", "application/json")] + own)
        up.response_body(json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [],
                                     "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode(),
                         end_of_stream=True)
    seen = [(k.decode(), v.decode()) for k, v in up.response_headers_map.pairs if k.startswith(b"x-ratelimit-")]
    assert sorted(seen) == sorted([("x-ratelimit-limit-requests", "100"), ("x-ratelimit-remaining-requests", "99"),
                                   ("x-ratelimit-reset-requests", f"{60 - NOW % 60}s"), ("x-ratelimit-limit-tokens", str(100 * WORST)),
                                   ("x-ratelimit-remaining-tokens", str(99 * WORST)), ("x-ratelimit-reset-tokens", f"{60 - NOW % 60}s")]), seen
    added = provider.crossings["host:proxy_add_header_map_value"]
    assert added == (6 if provider_kind == "bedrock" else 0), dict(provider.crossings)


def test_a_first_bedrock_attempt_signs_with_the_admission_time_and_a_retry_reads_the_clock(make_gateway, make_provider):
    """SigV4 signs with the time: a first attempt of a request with quotas takes the time the
    gateway filter read to admit it (the same event-loop pass), as its meter does, and reads no
    clock of its own; a retry reads the clock."""
    shared = SharedData()
    publish_keys(shared)
    tpm = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 100 * WORST}
    gw = make_gateway(with_quotas(tpm), shared_data=shared)
    provider = make_provider(shared_data=shared)
    shared.set("tollgate.credentials.v1", credentials_doc(aws={"aws": {"access_key_id": "AKIDQUOTA", "secret_access_key": "quota-secret"}}))
    provider.tick()
    down = chat(gw)
    admitted_ns = decode_request_state(down.properties_set[REQUEST_STATE])["admitted_ns"]
    assert admitted_ns > 0
    clock = "host:proxy_get_current_time_nanoseconds"
    for attempt, reads in ((1, 0), (2, 1)):
        props = provider_properties(BEDROCK, op=None)
        props.update(down.properties_set)
        up = provider.new_http_context(props)
        provider.crossings.clear()
        up.request_headers(list(down.request_headers_map.pairs) + [("x-envoy-attempt-count", str(attempt))], end_of_stream=False)
        up.send_request_body(bytes(down.request_body_forwarded))
        assert provider.crossings[clock] == reads, (attempt, dict(provider.crossings))
        if attempt == 1:
            amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(admitted_ns // 10**9))
            assert up.local_response is None, up.local_response
            assert up.request_headers_map.get("x-amz-date") == amz_date
        up.response_headers([(":status", "200"), ("content-type", "application/json")])
        up.response_body(BEDROCK_ANSWER, end_of_stream=True)
        up.finish()

def test_a_first_attempt_starts_when_the_gateway_admitted_it_without_a_clock_read(make_gateway, make_provider, make_service):
    """The gateway reads the clock for the quotas' windows and hands the instant on in the
    holds: the first attempt's meter starts from it (no clock read of its own before the
    answer's end); a retry reads its own start."""
    from test_usage_records import load_credentials, shipped

    shared = SharedData()
    publish_keys(shared)
    service, provider = make_service(shared_data=shared), make_provider(shared_data=shared)
    load_credentials(service, provider)
    q = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 100 * WORST}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    down = chat(gw)
    assert decode_request_state(down.properties_set[REQUEST_STATE])["admitted_ns"] == NOW * 10**9
    clock = "host:proxy_get_current_time_nanoseconds"

    def attempt(count: int, starts: float, ends: float):
        """Clock reads of attempt `count` until its answer has passed (its end reads one)."""
        provider.now = starts
        provider.crossings.clear()
        up = answer_attempt(provider, down, 3, 2, extra_headers=[("x-envoy-attempt-count", str(count))])
        reads = provider.crossings[clock]
        provider.now = ends
        up.finish()
        return reads

    assert attempt(1, NOW + 2.5, NOW + 3.0) == 0, "the first attempt reads no clock to start"
    assert attempt(2, NOW + 3.0, NOW + 3.25) == 1, "a retry reads its own start"
    records = shipped(service, provider)
    # From the gateway's admission (3 s before the first attempt's end), and from the retry's own
    # start (the harness's clock is a float: within a millisecond).
    assert [r["attempt"] for r in records] == [0, 1]
    assert [abs(r["latency_ms"] - want) <= 1 for r, want in zip(records, (3000, 250))] == [True, True], records
