"""Chat, streaming, models and embeddings through the gateway, with the official openai SDK."""

from __future__ import annotations

import json
import time

from e2e_util import (CHAT_PATH, MODEL_NAMES, PROVIDER_KEY_ENV, mock_requests_with, post_chat,
                      unique, user_message)
from mocks.openai_mock import embedding_vector


def assert_clean_provider_request(gw, record, client_secret):
    """What reached the provider carries the provider key and nothing of the gateway's."""
    headers = record["headers"]
    assert headers.get("authorization") == f"Bearer {gw.provider_env[PROVIDER_KEY_ENV]}"
    leaked = [name for name in headers if name.startswith("x-tollgate-")]
    assert not leaked, f"internal headers reached the provider: {leaked}"
    for name, value in headers.items():
        assert client_secret not in value, f"the client's gateway key reached the mock in {name}"
    assert client_secret not in record["body"], "the client's gateway key reached the provider body"


def test_chat_non_streaming(gw, mock, client, user_key):
    token = unique()
    messages = [{"role": "system", "content": "be terse"},
                {"role": "user", "content": f"hello {token}"}]
    resp = client.chat.completions.create(model="gpt-mock", messages=messages)

    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model in ("gpt-mock", "mock-model-1")
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == f"echo: hello {token}"
    assert resp.choices[0].finish_reason == "stop"
    # The mock counts words: 4 in the prompt, 3 in the answer; the gateway passes them on.
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens,
            resp.usage.total_tokens) == (4, 3, 7)

    [record] = mock_requests_with(mock, token)
    assert record["method"] == "POST"
    assert record["path"] == CHAT_PATH
    assert record["json"]["model"] == "mock-model-1"  # the gateway's name rewritten
    assert record["json"]["messages"] == messages
    assert_clean_provider_request(gw, record, user_key[1])


def test_chat_streaming_with_usage(gw, mock, client, user_key):
    token = unique()
    stream = client.chat.completions.create(
        model="gpt-mock", messages=user_message(f"stream this {token}"), stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)

    assert len(chunks) >= 4
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == f"echo: stream this {token}"
    finishes = [c.choices[0].finish_reason for c in chunks
                if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens,
            last.usage.total_tokens) == (3, 4, 7)

    [record] = mock_requests_with(mock, token)
    assert record["json"]["stream"] is True
    assert record["json"]["model"] == "mock-model-1"
    assert_clean_provider_request(gw, record, user_key[1])


def test_chat_streaming_without_usage_has_no_usage_chunk(client):
    # A gateway may ask the provider for usage to meter the stream, but a client that did not
    # ask must not receive the extra `choices: []` chunk (clients index choices[0]).
    chunks = list(client.chat.completions.create(
        model="gpt-mock", messages=user_message(f"no usage {unique()}"), stream=True))
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_streaming_raw_sse_framing(gw, user_key):
    token = unique()
    resp = post_chat(gw, user_key[1], {"model": "gpt-mock", "stream": True,
                                       "messages": user_message(f"raw {token}")})
    assert resp.status_code == 200, resp.text[:300]
    assert resp.headers["content-type"].startswith("text/event-stream")
    text = resp.content.decode()
    assert text.endswith("data: [DONE]\n\n")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events), events
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == \
        f"echo: raw {token}"


def test_chat_streaming_is_not_buffered(mock, client):
    mock.set_faults(chunk_delay_ms=200)
    start = time.monotonic()
    stream = client.chat.completions.create(
        model="gpt-mock", messages=user_message("a b c d"), stream=True)
    arrivals = []
    text = ""
    for chunk in stream:
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            arrivals.append(time.monotonic())
            text += delta
    end = time.monotonic()

    assert text == "echo: a b c d"
    assert len(arrivals) == 5
    # The mock sends 8 events 200 ms apart (about 1.4 s in all). Had the gateway buffered the
    # stream, every chunk would arrive at the end together.
    assert arrivals[0] - start < 0.8, f"first chunk after {arrivals[0] - start:.2f}s"
    assert end - arrivals[0] > 0.6, f"first chunk only {end - arrivals[0]:.2f}s before the end"
    assert arrivals[-1] - arrivals[0] > 0.5


def test_models_list_unrestricted(client):
    models = list(client.models.list())
    assert {m.id for m in models} == MODEL_NAMES
    assert all(m.object == "model" for m in models)


def test_models_list_restricted(gw, restricted_key):
    models = list(gw.client(restricted_key[1]).models.list())
    assert [m.id for m in models] == ["gpt-mock"]


def test_restricted_key_can_use_its_model(gw, mock, restricted_key):
    token = unique()
    resp = gw.client(restricted_key[1]).chat.completions.create(
        model="gpt-mock", messages=user_message(token))
    assert resp.choices[0].message.content == f"echo: {token}"
    assert len(mock_requests_with(mock, token)) == 1


def test_demo_model_non_streaming(mock, client):
    token = unique()
    resp = client.chat.completions.create(model="demo", messages=user_message(f"hi {token}"))
    assert resp.object == "chat.completion"
    assert isinstance(resp.choices[0].message.content, str) and resp.choices[0].message.content
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert mock_requests_with(mock, token) == []  # no provider involved


def test_demo_model_streaming(mock, client):
    token = unique()
    chunks = list(client.chat.completions.create(
        model="demo", messages=user_message(f"hi {token}"), stream=True,
        stream_options={"include_usage": True}))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content
    finishes = [c.choices[0].finish_reason for c in chunks
                if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1 and finishes[0] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert mock_requests_with(mock, token) == []


def test_embeddings_passthrough(gw, mock, client, user_key):
    token = unique()
    # The SDK asks for base64 and decodes it: the bytes must pass through untouched.
    resp = client.embeddings.create(model="gpt-mock", input=["a", token])
    assert resp.object == "list"
    assert [d.index for d in resp.data] == [0, 1]
    assert resp.data[0].embedding == embedding_vector("a", 8)
    assert resp.data[1].embedding == embedding_vector(token, 8)
    assert resp.usage.prompt_tokens == 2

    [record] = mock_requests_with(mock, token)
    assert record["path"] == "/v1/embeddings"
    assert record["json"]["model"] == "mock-model-1"
    assert record["json"]["input"] == ["a", token]
    assert_clean_provider_request(gw, record, user_key[1])


def test_client_internal_headers_are_not_forwarded(gw, mock, user_key):
    token = unique()
    spoofed = {
        "x-tollgate-key-id": "spoofed",
        "x-tollgate-model": "other-model",
        "x-tollgate-e2e-probe": token,
        "x-envoy-e2e-probe": token,
        # Honoured by Envoy for "internal" (e.g. loopback) clients unless the gateway strips it.
        "x-envoy-upstream-rq-timeout-ms": "1",
    }
    resp = post_chat(gw, user_key[1], {"model": "gpt-mock", "messages": user_message(token)},
                     headers=spoofed)
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["choices"][0]["message"]["content"] == f"echo: {token}"
    [record] = mock_requests_with(mock, token)
    assert record["json"]["model"] == "mock-model-1"  # not redirected by x-tollgate-model
    headers = record["headers"]
    assert not [n for n in headers if n.startswith("x-tollgate-")], headers
    forwarded = [n for n in spoofed if n in headers]
    assert not forwarded, f"client-sent headers reached the provider: {forwarded}"
    assert all(token not in v for v in headers.values())


def test_large_body_under_limit_is_accepted(gw, mock, user_key):
    # 7 MiB, under the default 8 MiB limit (Envoy's own default buffer limit is 1 MiB).
    token = unique()
    body = {"model": "gpt-mock",
            "messages": [{"role": "system", "content": "y" * (7 * 1024 * 1024)},
                         {"role": "user", "content": token}]}
    resp = post_chat(gw, user_key[1], body, timeout=30)
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["choices"][0]["message"]["content"] == f"echo: {token}"
    [record] = mock_requests_with(mock, token)
    assert len(record["body"]) > 7 * 1024 * 1024



def test_tool_calls_pass_through(mock, client):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                       "required": ["location"]}}}]
    token = unique()
    resp = client.chat.completions.create(
        model="gpt-mock", tools=tools, messages=user_message(f"weather in Oslo {token}"))
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["location"].startswith("Oslo")
    [record] = mock_requests_with(mock, token)
    assert record["json"]["tools"] == tools

    chunks = list(client.chat.completions.create(
        model="gpt-mock", tools=tools, stream=True,
        messages=user_message(f"weather in Oslo {token}")))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id.startswith("call_") and calls[0].function.name == "get_weather"
    args = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(args)["location"].startswith("Oslo")
    assert [c.choices[0].finish_reason for c in chunks
            if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_a_body_sent_as_is_after_a_rewritten_attempt(gw, mock, client, user_key):
    """`as-sent` first tries a deployment whose model id differs (the body is rewritten, and its
    content-length with it), which fails; the retry goes to one whose id is the client's model,
    where the body goes byte for byte as the client sent it, with the client's length (the
    header map is shared by the attempts)."""
    token = unique()
    body = json.dumps({"messages": [{"role": "user", "content": f"hi {token}"}],
                       "model": "as-sent", "temperature": 0.5}, indent=1)
    mock.set_faults(status=503, count=1)
    resp = post_chat(gw, user_key[1], body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == f"echo: hi {token}"
    first, second = mock_requests_with(mock, token)
    assert first["json"]["model"] == "mock-model-1"
    assert second["body"] == body  # not re-encoded: the client's bytes, pretty-printed
    assert second["headers"]["content-length"] == str(len(body.encode()))
    assert_clean_provider_request(gw, second, user_key[1])

    # Streams where the client asked for usage go as sent too, and keep their usage chunk.
    mock.reset_faults()
    token = unique()
    chunks = list(client.chat.completions.create(
        model="as-sent", messages=user_message(f"stream {token}"), stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        f"echo: stream {token}"
    assert chunks[-1].usage.completion_tokens == 3
