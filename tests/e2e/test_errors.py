"""Errors the gateway answers itself, and provider errors, in OpenAI format."""

from __future__ import annotations

import time

import openai
import pytest

from e2e_util import (PROVIDER_KEY_ENV, WRONG_KEY_ENV, assert_openai_error,
                      assert_openai_error_parts, bearer, mock_requests_with, post_chat,
                      raw_post_large, unique, user_message)
from harness import http, random_secret, wait_until


@pytest.mark.parametrize("authorization", [
    None, "Bearer ", "Bearer tg-not-a-real-key-0123456789", "Basic dXNlcjpwYXNz"])
def test_401_bad_or_missing_key(gw, mock, authorization):
    token = unique()
    headers = {"Authorization": authorization} if authorization is not None else {}
    resp = post_chat(gw, None, {"model": "gpt-mock", "messages": user_message(token)},
                     headers=headers)
    assert_openai_error(resp, 401)
    assert mock_requests_with(mock, token) == []


def test_401_wrong_key_with_sdk(gw):
    client = gw.client(random_secret("tg-"))
    with pytest.raises(openai.AuthenticationError) as exc:
        client.chat.completions.create(model="gpt-mock", messages=user_message("x"))
    assert exc.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_403_model_not_allowed(gw, mock, restricted_key):
    token = unique()
    with pytest.raises(openai.PermissionDeniedError) as exc:
        gw.client(restricted_key[1]).chat.completions.create(
            model="other-model", messages=user_message(token))
    assert exc.value.status_code == 403
    resp = post_chat(gw, restricted_key[1], {"model": "other-model",
                                             "messages": user_message(token)})
    assert_openai_error(resp, 403)
    assert mock_requests_with(mock, token) == []


def test_404_unknown_model(gw, mock, client, user_key):
    token = unique()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=user_message(token))
    resp = post_chat(gw, user_key[1], {"model": "no-such-model", "messages": user_message(token)})
    assert_openai_error(resp, 404)
    assert mock_requests_with(mock, token) == []


@pytest.mark.parametrize("case", ["malformed-json", "missing-messages", "missing-model",
                                  "not-an-object"])
def test_400_bad_request_body(gw, mock, user_key, case):
    token = unique()
    body = {
        "malformed-json": '{"model": "gpt-mock", "messages": [{"role": "user", "content": "'
                          + token,
        "missing-messages": {"model": "gpt-mock", "user": token},
        "missing-model": {"messages": user_message(token)},
        "not-an-object": f'["{token}"]',
    }[case]
    resp = post_chat(gw, user_key[1], body)
    assert_openai_error(resp, 400)
    assert mock_requests_with(mock, token) == []


def test_400_with_sdk(client):
    with pytest.raises(openai.BadRequestError):
        client.post("/chat/completions", body={"model": "gpt-mock"}, cast_to=object)


def test_413_body_too_large(gw, mock, user_key):
    before = len(mock.requests)
    status, headers, body = raw_post_large(
        "127.0.0.1", gw.gateway_port, "/v1/chat/completions", bearer(user_key[1]),
        12 * 1024 * 1024)
    assert_openai_error_parts(status, headers, body, 413)
    assert not [r for r in mock.requests[before:] if len(r["body"]) > 8 * 1024 * 1024]


@pytest.mark.parametrize("method,path", [("GET", "/v1/nope"), ("POST", "/v1/chat/nope"),
                                         ("GET", "/v1/chat/completions/extra")])
def test_404_unknown_path(gw, user_key, method, path):
    resp = http(method, f"{gw.gateway_url}{path}", headers=bearer(user_key[1]), json={})
    assert_openai_error(resp, 404)


def test_provider_503_becomes_openai_5xx(gw, mock, client, user_key):
    mock.set_faults(status=503)  # every request until reset
    token = unique()
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="gpt-mock", messages=user_message(token))
    # The provider's 503 and message reach the client, as OpenAI's api_error, after the
    # gateway's retries (1 attempt + num_retries, default 2) all failed.
    assert exc.value.status_code == 503
    assert exc.value.body["type"] == "api_error" and exc.value.body["code"] == "provider_error"
    assert "(mock fault)" in exc.value.body["message"]
    assert len(mock_requests_with(mock, token)) == 3

    resp = post_chat(gw, user_key[1], {"model": "gpt-mock", "messages": user_message(token)})
    error = assert_openai_error(resp, 503)
    assert (error["type"], error["code"]) == ("api_error", "provider_error")

    # A stream that fails before its first byte is an HTTP error, not a 200 stream.
    with pytest.raises(openai.APIStatusError) as exc:
        list(client.chat.completions.create(model="gpt-mock", messages=user_message(token),
                                            stream=True))
    assert exc.value.status_code == 503 and exc.value.body["type"] == "api_error"

    mock.reset_faults()
    wait_until(lambda: post_chat(gw, user_key[1], {"model": "gpt-mock",
                                                   "messages": user_message(token)}
                                 ).status_code == 200,
               10.0, "the gateway to recover after the provider does")


def test_provider_single_503_is_retried_by_the_gateway(mock, client):
    """One 503 from the provider is retried by Envoy (retry_on 503): the client (an SDK that
    does not retry itself, max_retries=0) gets the second attempt's answer, and the provider saw
    exactly two attempts of the same request."""
    assert client.max_retries == 0
    mock.set_faults(status=503, count=1)
    token = unique()
    resp = client.chat.completions.create(model="gpt-mock", messages=user_message(token))
    assert resp.choices[0].message.content == f"echo: {token}"
    attempts = mock_requests_with(mock, token)
    assert len(attempts) == 2
    assert attempts[0]["json"] == attempts[1]["json"]


def test_provider_401_does_not_leak_provider_key(gw, mock, client, user_key):
    token = unique()
    wrong_key = gw.provider_env[WRONG_KEY_ENV]
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="wrong-key", messages=user_message(token))
    resp = post_chat(gw, user_key[1], {"model": "wrong-key", "messages": user_message(token)})
    assert_openai_error(resp)
    assert wrong_key not in resp.text
    assert gw.provider_env[PROVIDER_KEY_ENV] not in resp.text
    assert all(wrong_key not in v for v in resp.headers.values())
    # The mock really refused the (wrong) provider key the gateway injected.
    records = mock_requests_with(mock, token)
    assert records and all(r["headers"].get("authorization") == f"Bearer {wrong_key}"
                           for r in records)


def test_unreachable_provider_is_openai_5xx(gw, client, user_key):
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="unreachable", messages=user_message("x"))
    assert exc.value.status_code in (502, 503)
    resp = post_chat(gw, user_key[1], {"model": "unreachable", "messages": user_message("x")})
    error = assert_openai_error(resp, 503)
    assert (error["type"], error["code"]) == ("api_error", "upstream_unavailable")
    assert "could be reached" in error["message"]
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("status", [500, 502])
def test_provider_non_json_error_becomes_openai_error(gw, mock, user_key, status):
    mock.set_faults(status=status, body="<html><body>Bad Gateway</body></html>")
    token = unique()
    resp = post_chat(gw, user_key[1], {"model": "gpt-mock", "messages": user_message(token)})
    # The provider's status, its HTML replaced by an OpenAI error (not echoed).
    error = assert_openai_error(resp, status)
    assert (error["type"], error["code"]) == ("api_error", "provider_error")
    assert "<html>" not in resp.text
    # 500 is retried (1 + num_retries attempts), 502 is not in the retriable codes.
    assert len(mock_requests_with(mock, token)) == (3 if status == 500 else 1)


def _ejections(gw) -> int:
    stats = http("GET", f"{gw.envoy.admin_url}/stats?filter=outlier_detection.ejections_enforced_total").text
    return sum(int(line.rsplit(":", 1)[1]) for line in stats.splitlines() if line.strip())


def test_a_body_nested_too_deep_is_400_before_routing_and_ejects_nothing(gw, mock, user_key):
    """Issue 9, finding 1: a body nested deeper than the provider filter's parser accepts used to
    pass the gateway, fail after routing, be retried and count against the deployment's health
    (two such requests ejected it). It is refused once, before routing."""
    token = unique()
    body = ('{"model":"gpt-mock","messages":[{"role":"user","content":"%s"}],"extra":%s%s}'
            % (token, "[" * 200, "]" * 200))
    before = _ejections(gw)
    for _ in range(4):
        err = assert_openai_error(post_chat(gw, user_key[1], body), 400)
        assert err["code"] == "invalid_json" and "deeper" in err["message"]
    assert not mock_requests_with(mock, token)
    assert _ejections(gw) == before
    ok = unique()
    resp = post_chat(gw, user_key[1], {"model": "gpt-mock", "messages": user_message(ok)})
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == f"echo: {ok}"
