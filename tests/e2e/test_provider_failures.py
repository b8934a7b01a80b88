"""When a provider fails or is refused, end to end (the stack of `test_providers.py`): failover
from one provider to another, each attempt translated and signed afresh; a provider's refusal
of its credential, a stream cut by an exception; quotas of a provider, taken per attempt and gone
around when spent; and no secret in anything these leave behind.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import openai
import pytest

import harness
from e2e_util import unique
from harness import http
from mocks.bedrock_mock import BedrockError, verify_sigv4
from providers_util import (BEDROCK, BEDROCK_WRONG_SECRET, FAILOVER_ANTHROPIC_BEDROCK, FAILOVER_OPENAI_BEDROCK, OPENAI,
                            OPENAI_MODEL_ID, REGION, ant, assert_no_client_key, assert_no_secrets_left,
                            assert_sigv4_valid, oai, pgw, providers, sse_events, stream_text, with_token)

__all__ = ["pgw", "providers"]  # the fixtures, imported for pytest


# ---- cross-provider failover -------------------------------------------------------------------

def test_failover_openai_503_to_bedrock(providers):
    p = providers
    p.openai_mock.set_faults(status=503)
    client = oai(p)
    token = unique()
    resp = client.chat.completions.create(model=FAILOVER_OPENAI_BEDROCK,
                                          messages=[{"role": "user", "content": f"over {token}"}])
    assert resp.choices[0].message.content == f"echo: over {token}"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (2, 3)
    token2 = unique()
    chunks = list(client.chat.completions.create(
        model=FAILOVER_OPENAI_BEDROCK, messages=[{"role": "user", "content": f"over {token2}"}],
        stream=True))
    assert stream_text(chunks) == f"echo: over {token2}"
    assert all(c.choices for c in chunks)

    for t in (token, token2):
        # First attempt: the OpenAI mock (which answered 503), in OpenAI format with its key.
        [first] = with_token(p.openai_mock, t)
        assert first["json"]["model"] == OPENAI_MODEL_ID
        assert first["headers"]["authorization"] == f"Bearer {p.secrets.openai_key}"
        # Second attempt: translated to Converse and signed afresh.
        [second] = with_token(p.bedrock_mock, t)
        assert second["json"]["messages"] == [{"role": "user", "content": [{"text": f"over {t}"}]}]
        assert "model" not in second["json"]
        assert_sigv4_valid(p, second)
        assert p.secrets.openai_key not in json.dumps(second["headers"])
        assert_no_client_key(p, second)


def test_failover_anthropic_503_to_bedrock_for_anthropic_client(providers):
    p = providers
    p.anthropic_mock.set_faults(status=503)
    client = ant(p)
    token = unique()
    msg = client.messages.create(model=FAILOVER_ANTHROPIC_BEDROCK, max_tokens=50,
                                 messages=[{"role": "user", "content": f"over {token}"}])
    assert msg.content[0].text == f"echo: over {token}"
    assert msg.stop_reason == "end_turn"
    token2 = unique()
    with client.messages.stream(model=FAILOVER_ANTHROPIC_BEDROCK, max_tokens=50,
                                messages=[{"role": "user", "content": f"over {token2}"}]) as s:
        assert "".join(s.text_stream) == f"echo: over {token2}"

    for t in (token, token2):
        [first] = with_token(p.anthropic_mock, t)
        assert first["headers"]["x-api-key"] == p.secrets.anthropic_key
        [second] = with_token(p.bedrock_mock, t)
        assert "x-api-key" not in second["headers"]
        assert "anthropic-version" not in second["headers"]
        assert second["json"]["inferenceConfig"]["maxTokens"] == 50
        assert_sigv4_valid(p, second)
        assert p.secrets.anthropic_key not in json.dumps(second["headers"])
        assert_no_client_key(p, second)


# ---- provider failures -------------------------------------------------------------------------

def test_wrong_aws_secret_is_a_502_without_secrets(providers):
    p = providers
    token = unique()
    body = {"model": BEDROCK_WRONG_SECRET, "messages": [{"role": "user", "content": token}]}
    resp = http("POST", f"{p.stack.base_url}/chat/completions", json=body,
                headers={"Authorization": f"Bearer {p.key}"})
    p.seen(f"{resp.status_code} {dict(resp.headers)} {resp.text}")
    assert resp.status_code == 502, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert error["message"]
    for secret in (*p.secrets.provider_secrets().values(), p.secrets.aws_key_id, p.key):
        assert secret not in resp.text
        assert secret not in json.dumps(dict(resp.headers))
    assert "signature" not in error["message"].lower()  # not the provider's own message

    # The gateway did sign, with the wrong secret: the mock's 403 was the signature check.
    records = with_token(p.bedrock_mock, token)
    assert records
    s = p.secrets
    args = dict(access_key=s.aws_key_id, session_token=s.aws_token, region=REGION,
                max_skew_s=None)
    for record in records:
        verify_sigv4(record["method"], record["path"], list(record["headers"].items()),
                     record["body"].encode(), secret_key=s.aws_wrong_secret, **args)
        with pytest.raises(BedrockError) as info:
            verify_sigv4(record["method"], record["path"], list(record["headers"].items()),
                         record["body"].encode(), secret_key=s.aws_secret, **args)
        assert info.value.status == 403

    with pytest.raises(openai.InternalServerError) as sdk_err:
        oai(p).chat.completions.create(**body)
    assert sdk_err.value.status_code == 502


def test_provider_auth_failure_is_not_retried(providers):
    p = providers
    token = unique()
    resp = http("POST", f"{p.stack.base_url}/chat/completions",
                json={"model": BEDROCK_WRONG_SECRET,
                      "messages": [{"role": "user", "content": token}]},
                headers={"Authorization": f"Bearer {p.key}"})
    assert resp.status_code == 502
    # 403 is neither 5xx nor 429: one attempt, as the retry policy says.
    assert len(with_token(p.bedrock_mock, token)) == 1


def test_bedrock_mid_stream_exception(providers):
    p = providers
    p.bedrock_mock.set_faults(stream_exception="throttlingException", stream_exception_after=2)
    token = unique()
    body = {"model": BEDROCK, "stream": True,
            "messages": [{"role": "user", "content": f"one two three {token}"}]}
    resp = http("POST", f"{p.stack.base_url}/chat/completions", json=body,
                headers={"Authorization": f"Bearer {p.key}"})
    p.seen(resp.text)
    assert resp.status_code == 200  # the stream had started
    events = sse_events(resp.text)
    assert all(e.startswith("data: ") for e in events), events
    payloads = [e[len("data: "):] for e in events]
    assert "[DONE]" not in payloads  # no normal end after an error
    chunks = [json.loads(x) for x in payloads[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "echo: one"
    assert all(c["choices"][0].get("finish_reason") is None for c in chunks)
    final = json.loads(payloads[-1])
    assert set(final) == {"error"}
    assert final["error"]["message"]
    assert final["error"]["type"] == "rate_limit_error"
    assert final["error"]["code"] == "throttlingException"

    # The openai SDK raises openai.APIError at the error event, after the chunks before it.
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in oai(p).chat.completions.create(
                model=BEDROCK, stream=True,
                messages=[{"role": "user", "content": f"one two three {unique()}"}]):
            received.append(chunk)
    assert not isinstance(info.value, openai.APIStatusError)
    assert info.value.message == final["error"]["message"]
    assert info.value.body["code"] == "throttlingException"
    assert stream_text(received) == "echo: one"

    # The anthropic SDK gets an `event: error` and raises too.
    p.bedrock_mock.set_faults(stream_exception="modelStreamErrorException",
                              stream_exception_after=1)
    with pytest.raises(anthropic.APIStatusError) as ant_info:
        with ant(p).messages.stream(model=BEDROCK, max_tokens=50,
                                    messages=[{"role": "user", "content": "x y z"}]) as stream:
            for _ in stream.text_stream:
                pass
    assert ant_info.value.body["type"] == "error"
    assert ant_info.value.body["error"]["message"]


# ---- quotas of a provider ------------------------------------------------------------------------

def test_a_quota_of_a_provider_counts_the_attempts_sent_to_it_and_is_gone_around(providers):
    """A quota scoped to a provider is taken per attempt by the provider filter: OpenAI gets its
    two requests a minute for the key; then a model that also has Bedrock fails over to it (the
    gateway filter sees the spent lease before routing and sends the request to the model's
    cluster without OpenAI: Envoy does not retry an upstream filter's own answer), and a model
    on OpenAI alone is refused with a 429 in the client's format naming the quota, before it
    goes out. Attempts to another provider are not counted."""
    p = providers
    key_id, secret = p.stack.create_key(name="provider-quota")
    p.stack.wait_key_usable(secret)
    left = 60 - time.time() % 60
    if left < 20:
        time.sleep(left + 0.5)
    resp = p.stack.admin("POST", "/admin/v1/quotas", json={
        "metric": "requests", "window_seconds": 60, "limit": 2, "key_id": key_id, "provider": "openai"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["provider"] == "openai"
    quota_id = resp.json()["id"]
    client = openai.OpenAI(base_url=p.stack.base_url, api_key=secret, max_retries=0)

    def ask(token: str, model: str = FAILOVER_OPENAI_BEDROCK):
        return client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"pq {token}"}])

    def state() -> dict[str, Any]:
        r = p.stack.admin("GET", f"/admin/v1/quotas/{quota_id}/state")
        assert r.status_code == 200, r.text
        return r.json()
    # Published to the provider filter, and a lease taken ahead by the service VM (a provider's
    # attempts never wait for a grant).
    harness.wait_until(lambda: state()["free"] < 2, 10, "the service VM to lease the provider quota")
    time.sleep(1.0)  # the provider filter's workers read the quotas of providers on their 250 ms timer
    tokens = [unique() for _ in range(2)]
    for t in tokens:
        assert ask(t).choices[0].message.content == f"echo: pq {t}"
        assert len(with_token(p.openai_mock, t)) == 1
        assert not with_token(p.bedrock_mock, t)
    # Spent at OpenAI: the model's other provider answers.
    around = unique()
    resp = ask(around)
    assert resp.choices[0].message.content == f"echo: pq {around}"
    assert not with_token(p.openai_mock, around), "not sent to the provider whose quota is spent"
    assert len(with_token(p.bedrock_mock, around)) == 1
    # A model on OpenAI alone has nowhere else to go.
    third = unique()
    with pytest.raises(openai.RateLimitError) as refused:
        ask(third, OPENAI)
    err = refused.value.body
    assert quota_id in err["message"] and "provider openai" in err["message"], err
    assert err["code"] == "rate_limit_exceeded"
    assert 0 < int(refused.value.response.headers["retry-after"]) <= 60
    assert not with_token(p.openai_mock, third) and not with_token(p.bedrock_mock, third), "refused before it went out"
    # Bedrock is another provider: not counted.
    other = unique()
    assert ask(other, BEDROCK).choices[0].message.content == f"echo: pq {other}"
    assert state()["limit"] == 2
    assert p.stack.admin("DELETE", f"/admin/v1/quotas/{quota_id}").status_code == 204


# ---- secrets (last: checks everything the module left behind) -----------------------------------

def test_provider_secrets_never_leak(providers):
    assert_no_secrets_left(providers, min_visible=20, min_records=20)
