"""Data-plane hardening, end to end with real Envoy and every provider kind: which client headers
reach a provider (an allow-list), provider error text redacted before the client reads it, a
provider's Retry-After bounded (not retried when it asks for long, capped for the client), and
what a client sees when a provider aborts mid-stream."""

from __future__ import annotations

import json
import time

import openai
import pytest
import requests

from dataplane_util import MODELS, DataPlaneStack, dp, dpx  # noqa: F401 (fixtures)
from e2e_util import unique
from harness import http

# Client headers that must never reach a provider (issue 9, finding 2).
HOSTILE_HEADERS = {
    "OpenAI-Organization": "org-hostile", "OpenAI-Project": "proj_hostile",
    "anthropic-beta": "computer-use-2024-10-22",
    "x-amzn-bedrock-guardrailidentifier": "gr-hostile", "x-amzn-bedrock-trace": "ENABLED",
    "cookie": "session=hostile", "proxy-authorization": "Basic aG9zdGlsZTpob3N0aWxl",
    "x-forwarded-for": "169.254.169.254",
    "accept-encoding": "gzip",
}
# The underscore form of an internal header (`x_tollgate_cluster`) never gets this far: Envoy
# refuses any header name with `_` (B-11, tests/e2e/test_edge.py).
# Forwarded as the client sent them (README: "What reaches a provider").
ALLOWED = {"user-agent": "hardening-test/1.0", "x-stainless-lang": "python"}


def chat(dp: DataPlaneStack, model: str, token: str, headers: dict[str, str],
         **body: object) -> requests.Response:
    return http("POST", f"{dp.stack.base_url}/chat/completions",
                headers={"Authorization": f"Bearer {dp.key}", "Content-Type": "application/json",
                         "Accept": "application/json", **headers},
                data=json.dumps({"model": model, "messages": [{"role": "user", "content": token}],
                                 **body}))


def assert_no_secret(dp: DataPlaneStack, text: str) -> None:
    for name, secret in {**dp.secrets, "virtual key": dp.key}.items():
        for i in range(0, len(secret) - 8):
            assert secret[i:i + 8] not in text, f"part of the {name} reached the client"


@pytest.mark.parametrize("model", sorted(MODELS))
def test_only_allowed_client_headers_reach_the_provider(dpx, model):
    token = unique()
    resp = chat(dpx, model, token, {**HOSTILE_HEADERS, **ALLOWED})
    assert resp.status_code == 200, resp.text
    assert token in resp.json()["choices"][0]["message"]["content"]
    [sent] = dpx.requests_with(model, token)
    got = sent["headers"]
    leaked = {h for h in HOSTILE_HEADERS if h.lower() in got}
    assert not leaked, f"{MODELS[model]} received {leaked}"
    for name, value in ALLOWED.items():
        assert got.get(name) == value, (name, got)
    assert got.get("content-type") == "application/json"
    # The streamed request too (another plan: the stream's response translator).
    token = unique()
    resp = chat(dpx, model, token, HOSTILE_HEADERS, stream=True)
    assert resp.status_code == 200 and token in resp.text, resp.text[:300]
    [sent] = dpx.requests_with(model, token)
    assert not {h for h in HOSTILE_HEADERS if h.lower() in sent["headers"]}


def _ejections(dp: DataPlaneStack) -> int:
    assert dp.stack.envoy is not None
    stats = http("GET", f"{dp.stack.envoy.admin_url}/stats?filter=outlier_detection.ejections_enforced_total").text
    return sum(int(line.rsplit(":", 1)[1]) for line in stats.splitlines() if line.strip())


@pytest.mark.parametrize("model", ["dp-anthropic", "dp-bedrock", "dp-sagemaker"])
@pytest.mark.parametrize("extra,code,param", [
    ('"x":2E2222', "invalid_json", None),
    ('"x":[1,-1' + "0" * 400 + "]", "invalid_json", None),
    ('"api_base":"http://169.254.169.254/v1"', "forbidden_parameter", "api_base"),
    ('"aws_region_name":"eu-evil-1"', "forbidden_parameter", "aws_region_name"),
])
def test_what_fails_after_routing_is_refused_before_it(dpx, model, extra, code, param):
    """Issue 9: a number no parser holds (`2E2222`) in a field the gateway skips passed the
    gateway and failed the provider filter's parse on translated routes, after routing: an
    upstream failure, retried and counted against the deployment's health. Routing and credential
    parameters (catalogue B-26) are refused too, naming the parameter. Both are one 400, no
    provider call, no ejection; the next request is served."""
    token = unique()
    body = '{"model":"%s","messages":[{"role":"user","content":"%s"}],%s}' % (model, token, extra)
    before = _ejections(dpx)
    for _ in range(3):
        resp = http("POST", f"{dpx.stack.base_url}/chat/completions", data=body,
                    headers={"Authorization": f"Bearer {dpx.key}", "Content-Type": "application/json"})
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert not dpx.requests_with(model, token)
    assert _ejections(dpx) == before
    ok = unique()
    resp = chat(dpx, model, ok, {})
    assert resp.status_code == 200 and ok in resp.json()["choices"][0]["message"]["content"]


def test_provider_error_text_is_redacted(dpx):
    openai_key = dpx.secrets["openai"]
    body = {"error": {"message": f"Invalid value; you sent key {openai_key} and header "
                                 f"'Authorization: Bearer {dpx.key}' (see request "
                                 f"{'x' * 2000})", "type": "invalid_request_error",
                      "param": None, "code": None}}
    dpx.mocks["openai"].set_faults(status=400, body=body, count=1)
    resp = chat(dpx, "dp-openai", unique(), {})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == "provider_invalid_request"
    assert error["message"].startswith("Invalid value; you sent key [redacted] and header")
    assert len(error["message"]) <= 512
    assert_no_secret(dpx, resp.text + json.dumps(dict(resp.headers)))
    assert "tg-" not in resp.text and "sk-" not in resp.text


def test_sagemaker_model_error_keeps_its_message(dpx):
    sm = dpx.mocks["sagemaker"]
    sm.container_error = (400, "bad input from the container")
    resp = chat(dpx, "dp-sagemaker", unique(), {})
    sm.container_error = None
    assert resp.status_code == 400, resp.text
    assert "bad input from the container" in resp.json()["error"]["message"]
    assert_no_secret(dpx, resp.text)


def attempts(dp: DataPlaneStack, since: int) -> int:
    return len(dp.mocks["openai"].requests) - since


@pytest.mark.parametrize("headers,retried,told", [
    ({"Retry-After": "999999"}, False, "60"),
    ({"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}, False, "60"),
    ({"retry-after-ms": "600000"}, False, "60"),
    ({"Retry-After": "1"}, True, "1"),
])
def test_upstream_429_retry_after_is_bounded(dpx, headers, retried, told):
    mock = dpx.mocks["openai"]
    mock.set_faults(status=429, headers=headers)  # every attempt
    before = len(mock.requests)
    resp = chat(dpx, "dp-openai", unique(), {})
    assert resp.status_code == 429
    assert resp.json()["error"]["type"] == "rate_limit_error"
    assert resp.headers.get("retry-after") == told
    assert "retry-after-ms" not in resp.headers
    # Not retried when the provider asks for more than 10 s; retried (2 retries) otherwise.
    assert attempts(dpx, before) == (3 if retried else 1)
    mock.reset_faults()
    assert chat(dpx, "dp-openai", unique(), {}).status_code == 200


def test_upstream_abort_mid_stream(dpx):
    """A provider that drops the connection after some events: Envoy has sent the response
    headers, so the router resets the client's stream (no filter callback follows; README
    "Upstream faults"). The client sees the events so far, then a truncated chunked body, never
    a fabricated end; the attempt is not retried; the gateway keeps serving."""
    mock = dpx.mocks["openai"]
    mock.set_faults(abort_after_chunks=3)
    before = len(mock.requests)
    client = openai.OpenAI(base_url=dpx.stack.base_url, api_key=dpx.key, max_retries=0,
                           timeout=10.0)
    token = unique()
    got: list[str] = []
    start = time.monotonic()
    with pytest.raises(openai.APIConnectionError) as err:
        for chunk in client.chat.completions.create(
                model="dp-openai", stream=True,
                messages=[{"role": "user", "content": f"one two three four {token}"}]):
            got.extend(c.delta.content or "" for c in chunk.choices)
            assert all(c.finish_reason is None for c in chunk.choices)
    assert time.monotonic() - start < 5.0
    # httpx: "peer closed connection without sending complete message body (incomplete chunked
    # read)": the body was cut, which the SDK reports as a connection error.
    assert "incomplete chunked read" in str(err.value.__cause__), repr(err.value.__cause__)
    assert "".join(got) == "echo: one", got  # the role delta, "echo:", " one"
    assert attempts(dpx, before) == 1  # no retry once the response started
    mock.reset_faults()
    resp = client.chat.completions.create(model="dp-openai", messages=[{"role": "user",
                                                                          "content": token}])
    assert resp.choices[0].message.content == f"echo: {token}"
