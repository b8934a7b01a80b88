"""Tests of the mock Anthropic provider itself: it is test support, but it must be right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from mocks.anthropic_mock import MockAnthropic

KEY = "sk-ant-unit-test-key-0123456789"
MOCK_SCRIPT = Path(__file__).resolve().parents[1] / "mocks" / "anthropic_mock.py"
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a place",
                "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                                 "required": ["location"]}}


@pytest.fixture()
def mock():
    with MockAnthropic(api_key=KEY) as m:
        yield m


def post(mock, body, key=KEY, version="2023-06-01", bearer=False, **kwargs):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers.update({"Authorization": f"Bearer {key}"} if bearer else {"x-api-key": key})
    if version is not None:
        headers["anthropic-version"] = version
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(mock.url + "/v1/messages", data=data, headers=headers, timeout=10,
                         **kwargs)


def chat(text="hello there world", **extra):
    return {"model": "claude-mock-1", "max_tokens": 100,
            "messages": [{"role": "user", "content": text}], **extra}


def sse_events(resp):
    """(event name, parsed data) pairs, checking the framing strictly."""
    text = resp.content.decode()
    assert text.endswith("\n\n")
    out = []
    for raw in text[:-2].split("\n\n"):
        name_line, data_line = raw.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), raw
        name, data = name_line[len("event: "):], json.loads(data_line[len("data: "):])
        assert data["type"] == name
        out.append((name, data))
    return out


def assert_error(resp, status, type_):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == type_
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


def test_message_shape_and_usage(mock):
    resp = post(mock, chat(system="be brief"))
    assert resp.status_code == 200
    assert resp.headers["request-id"].startswith("req_")
    body = resp.json()
    assert body["id"].startswith("msg_")
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == "claude-mock-1"
    assert body["content"] == [{"type": "text", "text": "echo: hello there world"}]
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["usage"]["input_tokens"] == 5
    assert body["usage"]["output_tokens"] == 4
    assert body["usage"]["cache_creation_input_tokens"] == 0
    assert body["usage"]["cache_read_input_tokens"] == 0
    [recorded] = mock.requests_to("/v1/messages")
    assert recorded["headers"]["x-api-key"] == KEY
    assert recorded["json"]["system"] == "be brief"


def test_bearer_key_accepted(mock):
    assert post(mock, chat(), bearer=True).status_code == 200


@pytest.mark.parametrize("key", [None, "wrong"])
def test_auth_required(mock, key):
    assert_error(post(mock, chat(), key=key), 401, "authentication_error")


def test_version_header_required(mock):
    assert_error(post(mock, chat(), version=None), 400, "invalid_request_error")


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": [{"role": "user", "content": "hi"}]},  # no max_tokens
    {"model": "m", "max_tokens": 10, "messages": []},
    {"model": "m", "max_tokens": 10, "messages": [{"role": "assistant", "content": "hi"}]},
    {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "a"},
                                                  {"role": "user", "content": "b"}]},
    {"model": "m", "max_tokens": 10, "messages": [{"role": "system", "content": "a"}]},
    {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": ""}]}]},
    {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_x", "content": "5"}]}]},
    "not json",
    [1, 2],
])
def test_invalid_requests_get_400(mock, body):
    assert_error(post(mock, body), 400, "invalid_request_error")


def test_max_tokens_truncates(mock):
    body = post(mock, chat("one two three four five", max_tokens=2)).json()
    assert body["stop_reason"] == "max_tokens"
    assert body["usage"]["output_tokens"] == 2


def test_tool_use_and_round_trip(mock):
    body = post(mock, chat("what is the weather in Paris", tools=[WEATHER_TOOL])).json()
    assert body["stop_reason"] == "tool_use"
    [block] = body["content"]
    assert block["type"] == "tool_use" and block["name"] == "get_weather"
    assert block["id"].startswith("toolu_") and block["input"] == {"location": "Paris"}
    follow_up = {"model": "m", "max_tokens": 50, "tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": "what is the weather in Paris"},
        {"role": "assistant", "content": [block]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block["id"],
                                      "content": "sunny"}]}]}
    resp = post(mock, follow_up)
    assert resp.status_code == 200, resp.text
    assert resp.json()["content"][0]["text"] == "echo: sunny"
    none_choice = post(mock, chat("weather in Paris", tools=[WEATHER_TOOL],
                                  tool_choice={"type": "none"})).json()
    assert none_choice["content"][0]["type"] == "text"


def test_prompt_cache_write_then_read(mock):
    body = chat(system=[{"type": "text", "text": "a long shared context of six words",
                         "cache_control": {"type": "ephemeral"}}])
    first = post(mock, body).json()["usage"]
    second = post(mock, body).json()["usage"]
    assert first["cache_creation_input_tokens"] == 7 and first["cache_read_input_tokens"] == 0
    assert second["cache_creation_input_tokens"] == 0 and second["cache_read_input_tokens"] == 7
    assert first["input_tokens"] == second["input_tokens"] == 3


def test_stream_event_sequence_and_usage_split(mock):
    resp = post(mock, chat("hello there world", stream=True))
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(resp)
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == 3 and start["usage"]["output_tokens"] == 1
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "echo: hello there world"
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {"output_tokens": 4}


def test_stream_tool_use(mock):
    events = sse_events(post(mock, chat("weather in Rome", tools=[WEATHER_TOOL], stream=True)))
    start = next(d for n, d in events if n == "content_block_start")
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["input"] == {}
    args = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta")
    assert json.loads(args) == {"location": "Rome"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_is_flushed_per_event(mock):
    mock.set_faults(chunk_delay_ms=150)
    started = time.monotonic()
    resp = post(mock, chat("a b c", stream=True), stream=True)
    pieces = resp.iter_content(chunk_size=None)
    first = next(pieces)
    first_at = time.monotonic() - started
    rest = b"".join(pieces)
    total = time.monotonic() - started
    assert first.startswith(b"event: message_start")
    assert first_at < 0.5 and total > 1.0, (first_at, total)
    assert rest.endswith(b"event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n")


def test_mid_stream_error_event(mock):
    mock.set_faults(stream_error="overloaded_error", stream_error_count=1)
    events = sse_events(post(mock, chat("a b c", stream=True)))
    names = [n for n, _ in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta", "error"]
    assert events[-1][1]["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    # The count is used up: the next stream is whole.
    assert sse_events(post(mock, chat("a", stream=True)))[-1][0] == "message_stop"


def test_truncated_stream(mock):
    mock.set_faults(truncate_stream=True)
    resp = post(mock, chat("a b c", stream=True), stream=True)
    data = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for piece in resp.iter_content(chunk_size=None):
            data += piece
    assert b"message_stop" not in data and b"content_block_delta" in data


def test_status_fault_with_count_and_default_body(mock):
    mock.set_faults(status=529, count=1)
    assert_error(post(mock, chat()), 529, "overloaded_error")
    assert post(mock, chat()).status_code == 200
    mock.set_faults(status=429, body="plain text")
    resp = post(mock, chat())
    assert resp.status_code == 429 and resp.text == "plain text"


def test_faults_over_http(mock):
    resp = requests.post(mock.url + "/__mock/faults", json={"status": 500, "count": 2},
                         timeout=5)
    assert resp.json()["status"] == 500
    assert_error(post(mock, chat()), 500, "api_error")
    assert requests.delete(mock.url + "/__mock/faults", timeout=5).json()["status"] is None
    assert post(mock, chat()).status_code == 200
    bad = requests.post(mock.url + "/__mock/faults", json={"nope": 1}, timeout=5)
    assert_error(bad, 400, "invalid_request_error")


def test_request_log_over_http(mock):
    post(mock, chat())
    log = requests.get(mock.url + "/__mock/requests", timeout=5).json()
    assert [r["path"] for r in log] == ["/v1/messages"]
    assert requests.delete(mock.url + "/__mock/requests", timeout=5).json() == {"cleared": 1}
    assert mock.requests == []


def test_unknown_path(mock):
    resp = requests.get(mock.url + "/v1/nothing", headers={"x-api-key": KEY,
                                                           "anthropic-version": "2023-06-01"},
                        timeout=5)
    assert_error(resp, 404, "not_found_error")


def test_runs_as_subprocess():
    proc = subprocess.Popen([sys.executable, str(MOCK_SCRIPT), "--port", "0", "--api-key", KEY],
                            stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY port=")
        port = int(line.strip().split("=", 1)[1])
        resp = requests.post(f"http://127.0.0.1:{port}/v1/messages", json=chat(),
                             headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
                             timeout=5)
        assert resp.status_code == 200 and resp.json()["type"] == "message"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
