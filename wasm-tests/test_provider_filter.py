"""The upstream provider filter, driven through the proxy-wasm ABI: per-attempt rewrite of path,
authority, credential and body from the endpoint metadata, with the credential document the
service VM publishes in shared data (tests/test_service_vm.py fetches it)."""

from __future__ import annotations

import json
import os
import random

import pytest

from proxy_wasm_host import Action, LogLevel, SharedData
from wasm_fixtures import (
    API_KEY,
    API_KEY_2,
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
    request_state,
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
    """Publishes a credential document as the service VM does; the root reads it on its tick."""
    host.shared_data.set(SHARED_CREDENTIALS_KEY, doc or credentials_doc())
    host.tick()


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


def test_a_path_and_authority_already_as_planned_are_not_written_again(provider):
    """The router's `auto_host_rewrite` puts the endpoint's authority in `:authority`, and an
    OpenAI client's path goes as sent: a host call saved for each; another attempt's (failover)
    are still written (see the test above)."""
    load_credentials(provider)
    body = chat_body()

    def writes(authority, base_path):
        headers = [(n, authority if n == ":authority" else v) for n, v in request_headers("POST", CHAT, K1_SECRET, extra=CLIENT_EXTRA)]
        before = provider.crossings["host:proxy_replace_header_map_value"]
        ctx = attempt(provider, deployment(base_path=base_path), body=body, headers=headers)
        h = ctx.request_headers_map
        assert (h.get(":path"), h.get(":authority")) == (f"{base_path}/chat/completions", "api.example.com")
        assert h.get("authorization") == f"Bearer {API_KEY}"
        return provider.crossings["host:proxy_replace_header_map_value"] - before

    as_planned = writes("api.example.com", "/v1")
    assert writes("gateway.local", "/v1") == as_planned + 1
    assert writes("api.example.com", "/api") == as_planned + 1


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "props",
    [
        provider_properties(None),
        provider_properties(b"not json"),
        provider_properties(json.dumps({"id": "d1"})),
        provider_properties(deployment(), op=None),
        {**provider_properties(deployment(), op=None), ("tollgate_request",): b"\x02\x09\x00\x00\x00\x00\x00"},
        {**provider_properties(deployment(), op=None), ("tollgate_request",): b"\x01\x01\x00\x00\x00\x00\x00"},
        {**provider_properties(deployment(), op=None), ("tollgate_request",): b"chat_completions;key=k1;model=m"},
        {**provider_properties(deployment(), op=None), ("tollgate_request",): request_state()[:-1]},
    ],
    ids=["no_metadata", "metadata_not_json", "metadata_incomplete", "no_operation", "unknown_op", "other_version",
         "old_text_format", "truncated"],
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


def test_credentials_come_from_shared_data_without_a_callout(provider):
    assert provider.tick_period_ms == 250
    load_credentials(provider)
    assert provider.http_calls == []
    assert attempt(provider, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY}"
    # The worker's VM has no token and never calls the control plane.
    for _ in range(3):
        provider.tick()
    assert provider.http_calls == []


def test_rotation_installs_the_new_key_on_the_next_tick(provider):
    load_credentials(provider)
    provider.shared_data.set(SHARED_CREDENTIALS_KEY, credentials_doc("v2", API_KEY_2))
    assert attempt(provider, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY}"
    provider.tick()
    assert attempt(provider, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY_2}"


def test_a_stream_reads_shared_data_when_the_root_has_none_yet(provider):
    provider.shared_data.set(SHARED_CREDENTIALS_KEY, credentials_doc())  # no tick since
    assert attempt(provider, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY}"


def test_a_document_published_before_the_vm_started_is_used(make_provider):
    shared = SharedData()
    shared.set(SHARED_CREDENTIALS_KEY, credentials_doc())
    host = make_provider(shared_data=shared)
    assert attempt(host, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY}"


def test_corrupt_shared_data_keeps_the_previous_document(provider):
    load_credentials(provider)
    warnings = len(provider.logs_at(LogLevel.WARN))
    provider.shared_data.set(SHARED_CREDENTIALS_KEY, b"{garbage")
    provider.tick()
    assert len(provider.logs_at(LogLevel.WARN)) == warnings + 1
    assert attempt(provider, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY}"


def test_corrupt_shared_data_alone_is_503(make_provider):
    shared = SharedData()
    shared.set(SHARED_CREDENTIALS_KEY, b"{garbage")
    host = make_provider(shared_data=shared)
    ctx = attempt(host, body=chat_body())
    assert_openai_error(ctx.local_response, 503, "credentials_not_loaded", "api_error")


def test_credential_without_api_key_is_refused_not_sent_unauthenticated(provider):
    load_credentials(provider, json.dumps({"version": "v1", "credentials": {"cred1": {}}}).encode())
    ctx = attempt(provider, body=chat_body())
    assert_openai_error(ctx.local_response, 500, "credential_missing", "api_error")


def test_new_root_context_after_a_config_update_keeps_credentials(provider):
    load_credentials(provider)
    old_root = provider.root_id
    assert provider.reconfigure(b"") is True
    assert provider.root_id != old_root
    assert attempt(provider, body=chat_body()).request_header("authorization") == f"Bearer {API_KEY}"


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
    load_credentials(provider, credentials_doc("v2", API_KEY_2))
    provider.shared_data.set(SHARED_CREDENTIALS_KEY, json.dumps({"leak": API_KEY}))
    provider.tick()
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
