"""The three modules as Envoy runs them on one request: the service VM publishes the credential
document in the shared data of the VM id they share, the gateway filter's output (header map,
filter state, forwarded body) is the provider filter's input, as on the real stream."""

from __future__ import annotations

import json
import random

import pytest

from proxy_wasm_host import Action, SharedData
from wasm_fixtures import (
    API_KEY,
    DEPLOYMENT_PATH,
    K2_SECRET,
    chat_body,
    credentials_doc,
    deployment,
    embeddings_body,
    random_chunk_sizes,
    send,
)


def upstream_attempt(provider, downstream, dep, seed):
    """The router forwards the gateway's headers and body to the chosen cluster; the upstream filter
    reads the downstream stream's filter state and the endpoint's metadata."""
    props = dict(downstream.properties_set)
    props[DEPLOYMENT_PATH] = dep
    ctx = provider.new_http_context(props)
    ctx.request_headers(list(downstream.request_headers_map.pairs))
    body = bytes(downstream.request_body_forwarded)
    ctx.send_request_body(body, random_chunk_sizes(len(body), random.Random(seed)))
    return ctx


@pytest.mark.parametrize(
    "path,body,op_suffix", [("/v1/chat/completions", chat_body("gpt-a", n=2), "/chat/completions"), ("/v1/embeddings", embeddings_body("gpt-a"), "/embeddings")]
)
@pytest.mark.parametrize("via", ["bearer", "x-api-key"])
def test_client_request_reaches_the_provider_rewritten(gateway, make_provider, make_service, path, body, op_suffix, via):
    shared = SharedData()
    service, provider = make_service(shared_data=shared), make_provider(shared_data=shared)
    service.tick()
    (token,) = [t for t, c in service.pending_http_calls.items() if c.header(":path") == "/internal/v1/credentials"]
    service.respond_http_call(token, 200, body=credentials_doc())
    provider.tick()

    extra = [("x-tollgate-cluster", "tg_b"), ("x-envoy-retry-on", "5xx"), ("x-request-id", "r-7")]
    down = send(gateway, "POST", path, body, key=K2_SECRET, via=via, extra=extra, chunks=[5] * 200)
    assert down.local_response is None
    assert down.request_header("x-tollgate-cluster") == "tg_a"

    up = upstream_attempt(provider, down, deployment(base_path="/v1beta/openai"), seed=via)
    assert up.local_response is None
    h = up.request_headers_map
    assert h.get(":path") == "/v1beta/openai" + op_suffix
    assert h.get(":authority") == "api.example.com"
    assert h.get_all("authorization") == [f"Bearer {API_KEY}".encode()]
    assert not [n for n in h.names() if n.startswith(("x-tollgate-", "x-envoy-")) or n == "x-api-key"]
    assert K2_SECRET not in json.dumps(h.as_dict())
    assert h.get("x-request-id") == "r-7"
    sent = bytes(up.request_body_forwarded)
    assert h.get("content-length") == str(len(sent))
    assert json.loads(sent) == {**json.loads(body), "model": "real-model"}

    # Neither filter touches the response.
    answer = b'{"id":"chatcmpl-1","object":"chat.completion"}'
    for ctx in (up, down):
        assert ctx.response_headers([(":status", "200"), ("content-type", "application/json")]) == Action.CONTINUE
        assert ctx.response_body(answer, end_of_stream=True) == Action.CONTINUE
        assert bytes(ctx.response_body_forwarded) == answer
        assert ctx.response_headers_map.get(":status") == "200"
        assert ctx.finish() is True
