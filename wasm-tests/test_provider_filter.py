"""The upstream provider filter, driven through the proxy-wasm ABI: per-attempt rewrite of path,
authority, credential and body from the endpoint metadata, and the credential fetch from the
control plane (tick → http call → response → shared data)."""

from __future__ import annotations

import json
import os
import random

import pytest

from proxy_wasm_host import Action, LogLevel, SharedData
from wasm_fixtures import (
    API_KEY,
    API_KEY_2,
    CREDENTIALS_CLUSTER,
    CREDENTIALS_PATH,
    DATA_PLANE_TOKEN,
    FIXTURES,
    K1_SECRET,
    SECRETS,
    SHARED_CREDENTIALS_KEY,
    assert_openai_error,
    chat_body,
    credentials_doc,
    deployment,
    embeddings_body,
    provider_properties,
    random_chunk_sizes,
    request_headers,
)

CHAT = "/v1/chat/completions"
# What reaches the upstream filter: the client's headers after the gateway filter.
CLIENT_EXTRA = [("x-tollgate-cluster", "tg_a"), ("content-length", "999"), ("x-request-id", "r-1")]


def attempt(host, dep=None, op="chat_completions", body=None, chunks=None, headers=None):
    """One upstream attempt: headers, then the body (the router replays the whole body)."""
    ctx = host.new_http_context(provider_properties(dep if dep is not None else deployment(), op))
    hdrs = headers if headers is not None else request_headers("POST", CHAT, K1_SECRET, extra=CLIENT_EXTRA)
    first = ctx.request_headers(hdrs, end_of_stream=body is None)
    if body is not None and not ctx.local_responses:
        assert first == Action.PAUSE
        ctx.send_request_body(body, chunks)
    return ctx


def load_credentials(host, doc=None):
    host.tick()
    (token,) = host.pending_http_calls
    host.respond_http_call(token, 200, [("content-type", "application/json")], doc or credentials_doc())
    return token


def top_level_raw_fields(body: bytes) -> dict[str, str]:
    """Each top-level member of a JSON object as its exact source text."""
    text = body.decode("utf-8")
    dec = json.JSONDecoder()
    ws = " \t\r\n"
    i = 0

    def skip(i):
        while i < len(text) and text[i] in ws:
            i += 1
        return i

    i = skip(i)
    assert text[i] == "{"
    i = skip(i + 1)
    out = {}
    while text[i] != "}":
        key, i = dec.raw_decode(text, i)
        i = skip(i)
        assert text[i] == ":"
        start = skip(i + 1)
        _, end = dec.raw_decode(text, start)
        out[key] = text[start:end]
        i = skip(end)
        if text[i] == ",":
            i = skip(i + 1)
    return out


# ------------------------------------------------------------------------------- rewrite


def test_rewrite_without_credential(provider):
    body = chat_body("gpt-a", temperature=0.5)
    ctx = attempt(provider, deployment(credential=None, base_path="/openai/v1"), body=body)
    assert ctx.local_response is None
    assert ctx.actions[-1] == ("proxy_on_request_body", Action.CONTINUE)
    h = ctx.request_headers_map
    assert h.get(":path") == "/openai/v1/chat/completions"
    assert h.get(":authority") == "api.example.com"
    assert h.get(":method") == "POST"
    # The client's virtual key and the internal routing header never reach the provider.
    assert "authorization" not in h and "x-api-key" not in h and "x-tollgate-cluster" not in h
    assert h.get("x-request-id") == "r-1"
    out = bytes(ctx.request_body_forwarded)
    assert h.get_all("content-length") == [str(len(out)).encode()]
    assert json.loads(out) == {**json.loads(body), "model": "real-model"}


def test_rewrite_with_credential(provider):
    load_credentials(provider)
    ctx = attempt(provider, body=chat_body(), headers=request_headers("POST", CHAT, K1_SECRET, via="x-api-key", extra=CLIENT_EXTRA))
    assert ctx.local_response is None
    h = ctx.request_headers_map
    assert h.get_all("authorization") == [f"Bearer {API_KEY}".encode()]
    assert "x-api-key" not in h
    assert h.get(":path") == "/v1/chat/completions"


@pytest.mark.parametrize("base_path,expected", [("/v1", "/v1/embeddings"), ("/v1/", "/v1/embeddings"), ("", "/embeddings")])
def test_embeddings_path(provider, base_path, expected):
    ctx = attempt(provider, deployment(credential=None, base_path=base_path), op="embeddings", body=embeddings_body("gpt-a"))
    assert ctx.request_header(":path") == expected
    assert json.loads(ctx.request_body_forwarded) == {"model": "real-model", "input": ["a", "b"]}


@pytest.mark.parametrize("op,body", [
    ("chat_completions", b'{"model": "real-model", "messages": [{"role": "user", "content": "hi"}]}'),
    ("chat_completions;stream;usage",
     b'{"model":"real-model","stream":true,"stream_options":{"include_usage":true},"messages":[]}'),
    ("embeddings", b'{"input": "x", "model": "real-model"}'),
])
def test_a_body_sent_as_is_is_not_waited_for(provider, op, body):
    """The deployment's model id is the client's model and nothing is added: the attempt is
    planned from the headers, and the body passes untouched (not buffered, not rewritten)."""
    load_credentials(provider)
    props = provider_properties(deployment(), f"{op};len={len(body)}", model="real-model")
    ctx = provider.new_http_context(props)
    # The header map is shared by attempts: an earlier one may have set another length.
    headers = request_headers("POST", CHAT, K1_SECRET, extra=[("content-length", "999")])
    assert ctx.request_headers(headers) == Action.CONTINUE
    assert ctx.request_header("authorization") == f"Bearer {API_KEY}"
    assert ctx.request_header(":authority") == "api.example.com"
    assert ctx.request_header(":path") == ("/v1/embeddings" if op == "embeddings" else "/v1/chat/completions")
    assert ctx.request_body(body[:10]) == Action.CONTINUE
    assert ctx.request_body(body[10:], end_of_stream=True) == Action.CONTINUE
    assert bytes(ctx.request_body_forwarded) == body
    assert ctx.request_header("content-length") == str(len(body))


def test_a_stream_without_usage_still_waits_for_the_body(provider):
    load_credentials(provider)
    props = provider_properties(deployment(), "chat_completions;stream;len=52", model="real-model")
    ctx = provider.new_http_context(props)
    assert ctx.request_headers(request_headers("POST", CHAT, K1_SECRET)) == Action.PAUSE
    ctx.send_request_body(b'{"model":"real-model","stream":true,"messages":[]}')
    assert json.loads(ctx.request_body_forwarded)["stream_options"] == {"include_usage": True}


def test_only_the_model_changes_byte_for_byte(provider):
    body = (FIXTURES / "provider" / "chat_request.json").read_bytes()
    ctx = attempt(provider, deployment(credential=None), body=body)
    out = bytes(ctx.request_body_forwarded)
    before, after = top_level_raw_fields(body), top_level_raw_fields(out)
    assert after.pop("model") == '"real-model"'
    before.pop("model")
    assert after == before  # every other member is its exact source text


def test_golden_provider_request(provider):
    src = FIXTURES / "provider" / "chat_request.json"
    snapshot = FIXTURES / "provider" / "chat_request.openai.json"
    ctx = attempt(provider, deployment(credential=None), body=src.read_bytes())
    out = bytes(ctx.request_body_forwarded)
    if os.environ.get("TOLLGATE_UPDATE_SNAPSHOTS"):
        snapshot.write_bytes(out)
    assert out == snapshot.read_bytes()


def test_model_id_is_json_escaped(provider):
    ctx = attempt(provider, deployment(credential=None, model='we"ird\\model\n'), body=chat_body())
    assert json.loads(ctx.request_body_forwarded)["model"] == 'we"ird\\model\n'


@pytest.mark.parametrize("seed", range(6))
def test_body_in_chunks_gives_the_same_request(provider, seed):
    body = (FIXTURES / "provider" / "chat_request.json").read_bytes()
    whole = attempt(provider, deployment(credential=None), body=body)
    rng = random.Random(seed)
    sizes = [1] * len(body) if seed == 0 else random_chunk_sizes(len(body), rng)
    ctx = attempt(provider, deployment(credential=None), body=body, chunks=sizes)
    assert [a for _, a in ctx.actions[:-1]] == [Action.PAUSE] * (len(ctx.actions) - 1)
    assert ctx.actions[-1] == ("proxy_on_request_body", Action.CONTINUE)
    assert bytes(ctx.request_body_forwarded) == bytes(whole.request_body_forwarded)
    assert ctx.request_headers_map.pairs == whole.request_headers_map.pairs


def test_every_attempt_sets_or_removes_every_provider_header(provider):
    """The header map is shared by all attempts: attempt 2 starts from what attempt 1 wrote."""
    load_credentials(provider)
    body = chat_body()
    first = attempt(provider, deployment(base_path="/v1"), body=body)
    assert first.request_header("authorization") == f"Bearer {API_KEY}"
    carried = list(first.request_headers_map.pairs)
    second_dep = deployment(id="d2", credential=None, authority="fallback.example.net:8443", base_path="/api", model="other")
    second = attempt(provider, second_dep, body=body, headers=carried)
    h = second.request_headers_map
    assert "authorization" not in h
    assert h.get(":path") == "/api/chat/completions"
    assert h.get(":authority") == "fallback.example.net:8443"
    assert h.get_all("content-length") == [str(len(second.request_body_forwarded)).encode()]
    assert json.loads(second.request_body_forwarded)["model"] == "other"


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "props",
    [
        provider_properties(None),
        provider_properties(b"not json"),
        provider_properties(json.dumps({"id": "d1"})),
        provider_properties(deployment(), op=None),
        provider_properties(deployment(), op="list_models"),
        provider_properties(deployment(), op="bogus"),
    ],
    ids=["no_metadata", "metadata_not_json", "metadata_incomplete", "no_operation", "list_models", "unknown_op"],
)
def test_missing_or_bad_attempt_inputs_are_500(provider, props):
    ctx = provider.new_http_context(props)
    ctx.request_headers(request_headers("POST", CHAT, extra=CLIENT_EXTRA))
    assert_openai_error(ctx.local_response, 500, None, "api_error")
    # Nothing was rewritten.
    assert ctx.request_header(":path") == CHAT
    assert provider.logs_at(LogLevel.WARN)


def test_unknown_provider_kind_is_500(provider):
    ctx = attempt(provider, deployment(provider="martian", credential=None), body=chat_body())
    assert_openai_error(ctx.local_response, 500, None, "api_error")


def test_unknown_credential_is_500_and_logged_by_name(provider):
    load_credentials(provider)
    ctx = attempt(provider, deployment(credential="no-such-cred"), body=chat_body())
    assert_openai_error(ctx.local_response, 500, None, "api_error")
    assert any("no-such-cred" in m for m in provider.logs_at(LogLevel.WARN))


@pytest.mark.parametrize(
    "body",
    [b"[1]", b"{", b"", b'{"model":"a","x":"\xff"}', b'"str"', b'{"model":"a"} trailing'],
    ids=["array", "truncated", "empty", "non_utf8", "string", "trailing"],
)
def test_non_object_body_is_400(provider, body):
    ctx = attempt(provider, deployment(credential=None), body=body)
    assert_openai_error(ctx.local_response, 400, "invalid_json", "invalid_request_error")
    assert ctx.request_body_forwarded == b""


def test_no_body_is_400(provider):
    ctx = provider.new_http_context(provider_properties(deployment()))
    ctx.request_headers(request_headers("POST", CHAT), end_of_stream=True)
    assert_openai_error(ctx.local_response, 400, None, "invalid_request_error")


def test_credentials_not_loaded_is_503(provider):
    ctx = attempt(provider, deployment(credential="cred1"), body=chat_body())
    err = assert_openai_error(ctx.local_response, 503, "credentials_not_loaded", "api_error")
    assert "credential" in err["message"]
    assert ctx.request_header(":path") == CHAT  # not rewritten


# ------------------------------------------------------------------------------- credentials


def test_credential_fetch_flow(provider):
    assert provider.tick_period_ms == 200
    assert provider.pending_http_calls == {}
    provider.tick()
    (call,) = provider.pending_http_calls.values()
    assert call.upstream == CREDENTIALS_CLUSTER
    assert call.context_id == provider.root_id
    assert call.header(":method") == "GET"
    assert call.header(":path") == CREDENTIALS_PATH
    assert call.header("authorization") == f"Bearer {DATA_PLANE_TOKEN}"
    assert call.header("if-none-match") is None
    assert call.body == b"" and call.timeout_ms > 0

    # One call in flight at a time.
    provider.tick()
    assert len(provider.pending_http_calls) == 1

    doc = credentials_doc("v1", API_KEY)
    provider.respond_http_call(call.token, 200, [("content-type", "application/json"), ("etag", '"v1"')], doc)
    assert provider.pending_http_calls == {}
    assert provider.shared_data.value(SHARED_CREDENTIALS_KEY) == doc
    assert provider.tick_period_ms == 1000  # loaded: poll slowly
    assert attempt(provider, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY}"

    # Next poll is conditional.
    provider.tick()
    (call2,) = provider.pending_http_calls.values()
    assert call2.token != call.token
    assert call2.header("if-none-match") is not None and "v1" in call2.header("if-none-match")
    provider.respond_http_call(call2.token, 304)
    assert attempt(provider, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY}"
    assert provider.shared_data.value(SHARED_CREDENTIALS_KEY) == doc


@pytest.mark.parametrize(
    "status,body",
    [(500, b"oops"), (401, b'{"error":"unauthorized"}'), (404, b""), (200, b"{not json"), (200, b'{"version":"v2"}')],
    ids=["500", "401", "404", "200_invalid_json", "200_missing_credentials"],
)
def test_a_bad_answer_keeps_the_previous_credentials(provider, status, body):
    load_credentials(provider)
    warnings = len(provider.logs_at(LogLevel.WARN))
    provider.tick()
    (token,) = provider.pending_http_calls
    provider.respond_http_call(token, status, [("content-type", "application/json")], body)
    assert len(provider.logs_at(LogLevel.WARN)) == warnings + 1
    assert attempt(provider, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY}"
    assert provider.shared_data.value(SHARED_CREDENTIALS_KEY) == credentials_doc()
    # Not stuck "in flight": the next tick asks again.
    provider.tick()
    assert len(provider.pending_http_calls) == 1


def test_a_failed_call_keeps_the_previous_credentials_and_retries(provider):
    load_credentials(provider)
    provider.tick()
    (token,) = provider.pending_http_calls
    provider.fail_http_call(token)  # reset / timeout: no headers, no body
    assert attempt(provider, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY}"
    provider.tick()
    assert len(provider.pending_http_calls) == 1


def test_a_failed_first_fetch_leaves_requests_at_503_then_recovers(provider):
    provider.tick()
    (token,) = provider.pending_http_calls
    provider.respond_http_call(token, 503, body=b"starting")
    assert provider.tick_period_ms == 200  # still polling fast
    ctx = attempt(provider, body=chat_body())
    assert_openai_error(ctx.local_response, 503, "credentials_not_loaded", "api_error")
    load_credentials(provider)
    assert attempt(provider, body=chat_body()).local_response is None


def test_rotation_installs_the_new_key(provider):
    load_credentials(provider)
    provider.tick()
    (token,) = provider.pending_http_calls
    provider.respond_http_call(token, 200, body=credentials_doc("v2", API_KEY_2))
    assert attempt(provider, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY_2}"
    provider.tick()
    (call,) = provider.pending_http_calls.values()
    assert "v2" in call.header("if-none-match")


def test_credential_without_api_key_is_refused_not_sent_unauthenticated(provider):
    load_credentials(provider, json.dumps({"version": "v1", "credentials": {"cred1": {}}}).encode())
    ctx = attempt(provider, body=chat_body())
    assert_openai_error(ctx.local_response, 500, "credential_missing", "api_error")


@pytest.mark.parametrize("env", [{}, {"TOLLGATE_DATA_PLANE_TOKEN": ""}], ids=["unset", "empty"])
def test_without_a_token_nothing_is_fetched(make_provider, env):
    host = make_provider(env=env)
    assert host.configured
    assert any("TOLLGATE_DATA_PLANE_TOKEN" in m for m in host.logs_at(LogLevel.WARN))
    for _ in range(3):
        host.tick()
    assert host.http_calls == []
    ctx = attempt(host, body=chat_body())
    assert_openai_error(ctx.local_response, 503, "credentials_not_loaded", "api_error")
    # A deployment without a credential still works.
    assert attempt(host, deployment(credential=None), body=chat_body()).local_response is None


def test_dispatch_failure_is_logged_and_retried(make_provider):
    host = make_provider(clusters={"some_other_cluster"})  # the control-plane cluster is unknown
    host.tick()
    host.tick()
    assert host.pending_http_calls == {}
    assert len([m for m in host.logs_at(LogLevel.WARN) if "control plane" in m]) == 2


def test_another_worker_starts_from_shared_data(make_provider):
    shared = SharedData()
    first = make_provider(shared_data=shared)
    load_credentials(first)
    second = make_provider(shared_data=shared)
    assert second.tick_period_ms == 1000
    assert second.http_calls == []
    assert attempt(second, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY}"
    second.tick()
    (call,) = second.pending_http_calls.values()
    assert "v1" in call.header("if-none-match")


def test_new_root_context_after_a_config_update_keeps_credentials(provider):
    load_credentials(provider)
    old_root = provider.root_id
    assert provider.reconfigure(b"") is True
    assert provider.root_id != old_root
    assert provider.tick_period_ms == 1000
    assert attempt(provider, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY}"


def test_corrupt_shared_data_is_ignored(make_provider):
    shared = SharedData()
    shared.set(SHARED_CREDENTIALS_KEY, b"{garbage")
    host = make_provider(shared_data=shared)
    assert host.tick_period_ms == 200
    ctx = attempt(host, body=chat_body())
    assert_openai_error(ctx.local_response, 503, "credentials_not_loaded", "api_error")


def test_no_secret_is_logged_or_echoed(provider):
    load_credentials(provider)
    contexts = [
        attempt(provider, body=chat_body()),
        attempt(provider, deployment(credential="missing"), body=chat_body()),
        attempt(provider, body=b"{"),
        attempt(provider, deployment(provider="martian"), body=chat_body()),
        provider.new_http_context({}),
    ]
    contexts[-1].request_headers(request_headers("POST", CHAT))
    provider.tick()
    (token,) = provider.pending_http_calls
    provider.respond_http_call(token, 500, body=json.dumps({"leak": API_KEY}))
    provider.tick()
    (token,) = provider.pending_http_calls
    provider.respond_http_call(token, 200, body=credentials_doc("v2", API_KEY_2))
    output = provider.all_output()
    answered = b"".join(c.local_response.body for c in contexts if c.local_response)
    assert len([c for c in contexts if c.local_response]) == 4
    for secret in SECRETS:
        assert secret not in output
        assert secret.encode() not in answered


# ------------------------------------------------------------------------------- trailers


def test_attempt_with_trailers_is_still_rewritten(provider):
    ctx = provider.new_http_context(provider_properties(deployment(credential=None, base_path="/openai/v1")))
    ctx.request_headers(request_headers("POST", CHAT, extra=CLIENT_EXTRA))
    ctx.request_body(chat_body(), end_of_stream=False)
    ctx.request_trailers([("x-checksum", "1")])
    assert ctx.request_header(":path") == "/openai/v1/chat/completions"
    assert "authorization" not in ctx.request_headers_map
    assert json.loads(ctx.request_body_forwarded)["model"] == "real-model"


def test_sagemaker_tgi_attempt_is_rendered_signed_and_translated_back(provider):
    aws = {"aws": {"access_key_id": "AKIDWASMTEST", "secret_access_key": "wasm-secret"}}
    load_credentials(provider, credentials_doc(aws_cred=aws))
    dep = deployment(provider="sagemaker", model="tgi-endpoint", authority="runtime.sagemaker.us-east-1.amazonaws.com",
                     base_path="", credential="aws_cred", region="us-east-1",
                     payload={"kind": "tgi", "prompt_template": "llama3"})
    body = json.dumps({"model": "gpt-a", "max_tokens": 5,
                       "messages": [{"role": "user", "content": "héllo"}]}).encode()
    ctx = attempt(provider, dep, body=body)
    assert ctx.local_response is None
    h = ctx.request_headers_map
    assert h.get(":path") == "/endpoints/tgi-endpoint/invocations"
    assert h.get(":authority") == "runtime.sagemaker.us-east-1.amazonaws.com"
    assert h.get("authorization").startswith("AWS4-HMAC-SHA256 Credential=AKIDWASMTEST/")
    assert "/us-east-1/sagemaker/aws4_request" in h.get("authorization")
    sent = json.loads(bytes(ctx.request_body_forwarded))
    assert sent["inputs"] == ("<|start_header_id|>user<|end_header_id|>\n\nhéllo<|eot_id|>"
                              "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert sent["parameters"]["max_new_tokens"] == 5 and sent["parameters"]["details"] is True
    assert b"wasm-secret" not in bytes(ctx.request_body_forwarded)

    ctx.response_headers([(":status", "200"), ("content-type", "application/json")])
    answer = json.dumps([{"generated_text": "bonjour", "details": {
        "finish_reason": "length", "generated_tokens": 5, "prefill": [{"id": 1, "text": "a"}] * 9}}]).encode()
    ctx.response_body(answer, end_of_stream=True)
    out = json.loads(bytes(ctx.response_body_forwarded))
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"]["content"] == "bonjour"
    assert out["choices"][0]["finish_reason"] == "length"
    assert (out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"]) == (9, 5)
