"""Tests of the mock OpenAI provider itself: it is test support, but it must be right."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import requests

from mocks.openai_mock import MockOpenAI

KEY = "sk-unit-test-key-0123456789"
MOCK_SCRIPT = Path(__file__).resolve().parents[1] / "mocks" / "openai_mock.py"


@pytest.fixture()
def mock():
    with MockOpenAI(api_key=KEY) as m:
        yield m


@pytest.fixture()
def client(mock):
    return openai.OpenAI(base_url=mock.base_url, api_key=KEY, max_retries=0, timeout=10)


def post(mock, path, body, key=KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(mock.url + path, data=data,
                         headers={**headers, "Content-Type": "application/json"},
                         timeout=10, **kwargs)


def sse_events(resp):
    """Split a raw SSE body into its `data:` payloads, checking the framing strictly."""
    text = resp.content.decode()
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    for event in events:
        assert event.startswith("data: ") and "\n" not in event, event
    return [e[len("data: "):] for e in events]


def test_non_streaming_chat_shape(client, mock):
    resp = client.chat.completions.create(
        model="mock-model-1",
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": "hello there world"}])
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == "mock-model-1"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "echo: hello there world"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == 5
    assert resp.usage.completion_tokens == 4
    assert resp.usage.total_tokens == 9
    [recorded] = mock.requests_to("/v1/chat/completions")
    assert recorded["method"] == "POST"
    assert recorded["headers"]["authorization"] == f"Bearer {KEY}"
    assert recorded["json"]["model"] == "mock-model-1"


def test_content_parts_are_echoed(mock):
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]}]}
    resp = post(mock, "/v1/chat/completions", body)
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "echo: part one part two"


@pytest.mark.parametrize("include_usage", [False, True])
def test_sse_framing(mock, include_usage):
    body = {"model": "mock-model-2", "stream": True,
            "messages": [{"role": "user", "content": "one  two three"}]}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    resp = post(mock, "/v1/chat/completions", body)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["transfer-encoding"] == "chunked"
    payloads = sse_events(resp)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    if include_usage:
        usage_chunk = chunks.pop()
        assert usage_chunk["choices"] == []
        assert usage_chunk["usage"] == {**usage_chunk["usage"], "prompt_tokens": 3,
                                        "completion_tokens": 4, "total_tokens": 7}
        assert all(c["usage"] is None for c in chunks)
    else:
        assert all("usage" not in c for c in chunks)
    finish = chunks.pop()
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                    "finish_reason": "stop"}
    words = [c["choices"][0]["delta"]["content"] for c in chunks[1:]]
    assert words == ["echo:", " one", "  two", " three"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


def test_sdk_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model="mock-model-1", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "a b"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: a b"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 5


def test_chunk_delay_spreads_events(mock):
    mock.set_faults(chunk_delay_ms=100)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
    arrivals = []
    with post(mock, "/v1/chat/completions", body, stream=True) as resp:
        for line in resp.iter_lines():
            if line.startswith(b"data: "):
                arrivals.append(time.monotonic())
    # role, 4 words, finish, [DONE]: 7 events, 100 ms apart
    assert len(arrivals) == 7
    assert arrivals[-1] - arrivals[0] >= 0.5


def test_tool_call(client):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {
            "location": {"type": "string"}}}}}]
    resp = client.chat.completions.create(
        model="m", tools=tools, messages=[{"role": "user", "content": "weather in Paris?"}])
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}

    stream = client.chat.completions.create(
        model="m", tools=tools, stream=True,
        messages=[{"role": "user", "content": "weather in Paris?"}])
    chunks = list(stream)
    first = chunks[0].choices[0].delta.tool_calls[0]
    assert first.id.startswith("call_") and first.function.name == "get_weather"
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments
                   for c in chunks if c.choices[0].delta.tool_calls)
    assert json.loads(args) == {"location": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_embeddings_float_and_base64(client, mock):
    # The SDK asks for base64 by default and decodes it.
    resp = client.embeddings.create(model="mock-embed", input=["a", "b c"])
    assert resp.object == "list" and resp.model == "mock-embed"
    assert [d.index for d in resp.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in resp.data)
    assert resp.data[0].embedding != resp.data[1].embedding
    assert resp.usage.prompt_tokens == 3 and resp.usage.total_tokens == 3
    assert mock.requests[-1]["json"]["encoding_format"] == "base64"

    raw = post(mock, "/v1/embeddings", {"model": "e", "input": "a", "encoding_format": "float"})
    assert raw.status_code == 200
    floats = raw.json()["data"][0]["embedding"]
    assert floats == resp.data[0].embedding  # deterministic, same in both encodings
    raw64 = post(mock, "/v1/embeddings", {"model": "e", "input": "a",
                                          "encoding_format": "base64"})
    decoded = struct.unpack("<8f", base64.b64decode(raw64.json()["data"][0]["embedding"]))
    assert list(decoded) == floats


def test_models(client):
    assert [m.id for m in client.models.list()] == ["mock-model-1", "mock-model-2"]
    assert client.models.retrieve("mock-model-2").id == "mock-model-2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


@pytest.mark.parametrize("key", [None, "sk-wrong-key-abcdefgh"])
def test_auth_required(mock, key):
    resp = post(mock, "/v1/chat/completions",
                {"model": "m", "messages": [{"role": "user", "content": "x"}]}, key=key)
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    if key is not None:
        assert err["code"] == "invalid_api_key"
        assert err["message"].startswith("Incorrect API key provided")
        assert key not in err["message"]  # masked, as OpenAI does


def test_sdk_raises_authentication_error(mock):
    bad = openai.OpenAI(base_url=mock.base_url, api_key="sk-bad", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


@pytest.mark.parametrize("body,status,param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (b"", 400, None),
    ({"model": "m"}, 400, "messages"),
    ({"model": "m", "messages": "hi"}, 400, "messages"),
    ({"model": "m", "messages": []}, 400, "messages"),
    ({"model": "m", "messages": [5]}, 400, "messages[0]"),
    ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x"}]}, 400, None),
    ({"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}, 400,
     "stream"),
    ({"model": "m", "stream_options": {"include_usage": True},
      "messages": [{"role": "user", "content": "x"}]}, 400, "stream_options"),
])
def test_malformed_chat_gets_400(mock, body, status, param):
    resp = post(mock, "/v1/chat/completions", body)
    assert resp.status_code == status
    assert resp.json()["error"]["param"] == param
    # The server is still alive after malformed input.
    assert post(mock, "/v1/chat/completions",
                {"model": "m", "messages": [{"role": "user", "content": "x"}]}).status_code == 200


@pytest.mark.parametrize("body", [{"model": "e"}, {"model": "e", "input": []},
                                  {"model": "e", "input": [None]}, {"model": "e", "input": 5},
                                  {"model": "e", "input": "a", "encoding_format": "hex"}])
def test_malformed_embeddings_gets_400(mock, body):
    resp = post(mock, "/v1/embeddings", body)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_unknown_path_and_garbage_request_line(mock):
    resp = requests.get(mock.url + "/v1/nope", headers={"Authorization": f"Bearer {KEY}"},
                        timeout=5)
    assert resp.status_code == 404
    assert resp.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"
    with socket.create_connection(("127.0.0.1", mock.port), timeout=5) as sock:
        sock.sendall(b"BLAH\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")
    assert requests.get(mock.url + "/__mock/health", timeout=5).status_code == 200


def test_chunked_request_body(mock):
    def gen():
        yield b'{"model": "m", "messages": [{"role": "user",'
        yield b' "content": "chunked body"}]}'
    resp = requests.post(mock.url + "/v1/chat/completions", data=gen(), timeout=5,
                         headers={"Authorization": f"Bearer {KEY}",
                                  "Content-Type": "application/json"})
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "echo: chunked body"


def test_status_fault_with_count(mock, client):
    resp = requests.post(mock.url + "/__mock/faults", json={"status": 503, "count": 2},
                         timeout=5)
    assert resp.status_code == 200
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as exc:
            client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                 "content": "x"}])
        assert exc.value.status_code == 503
        assert exc.value.body["type"] == "server_error"
    ok = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert ok.choices[0].message.content == "echo: x"
    assert len(mock.requests_to("/v1/chat/completions")) == 3


def test_fault_custom_body_delay_and_reset(mock):
    requests.post(mock.url + "/__mock/faults", timeout=5,
                  json={"status": 429, "delay_ms": 300, "body": {"error": {"message": "slow"}}})
    start = time.monotonic()
    resp = post(mock, "/v1/models", b"")
    assert time.monotonic() - start >= 0.3
    assert resp.status_code == 429 and resp.json() == {"error": {"message": "slow"}}
    assert requests.delete(mock.url + "/__mock/faults", timeout=5).status_code == 200
    resp = requests.get(mock.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"},
                        timeout=5)
    assert resp.status_code == 200


def test_default_401_fault_masks_presented_key(mock):
    mock.set_faults(status=401, count=1)
    resp = post(mock, "/v1/chat/completions", {"model": "m", "messages": []})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_api_key"
    assert KEY not in resp.text and KEY[-4:] in resp.text


def test_bad_fault_spec_rejected(mock):
    for spec in ({"status": 42}, {"count": -1}, {"bogus": 1}, [1]):
        resp = requests.post(mock.url + "/__mock/faults", json=spec, timeout=5)
        assert resp.status_code == 400, spec
    assert mock.faults["status"] is None


def test_request_log_over_http(mock, client):
    client.models.list()
    log = requests.get(mock.url + "/__mock/requests", timeout=5).json()
    assert [(r["method"], r["path"]) for r in log] == [("GET", "/v1/models")]
    assert log[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert requests.delete(mock.url + "/__mock/requests", timeout=5).json() == {"cleared": 1}
    assert requests.get(mock.url + "/__mock/requests", timeout=5).json() == []


def test_runs_as_subprocess():
    proc = subprocess.Popen([sys.executable, str(MOCK_SCRIPT), "--port", "0", "--api-key", KEY],
                            stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY port=")
        port = int(line.strip().split("=", 1)[1])
        resp = requests.get(f"http://127.0.0.1:{port}/v1/models",
                            headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
        assert resp.status_code == 200 and resp.json()["object"] == "list"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_stop_drops_keep_alive_connections():
    mock = MockOpenAI(api_key=KEY).start()
    session = requests.Session()
    session.trust_env = False
    url = mock.url + "/v1/models"
    assert session.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5).ok
    mock.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
