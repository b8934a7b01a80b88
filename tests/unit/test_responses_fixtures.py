"""The `openai` SDK reads what the Responses translator writes.

The Rust tests of `tollgate_llm::responses_to_openai` write Response objects
(`filters/tollgate-llm/tests/fixtures/responses/response/<case>.out.json`) and Responses event
streams (`stream/<case>.events.sse`). Here they are validated strictly against
`openai.types.responses` and served to a real `openai.OpenAI` client (`responses.create`, with
and without `stream=True`) by a local server that answers with those exact bytes."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

FIXTURES = (Path(__file__).resolve().parents[2]
            / "filters" / "tollgate-llm" / "tests" / "fixtures" / "responses")
RESPONSES = sorted(p.name[:-len(".out.json")] for p in (FIXTURES / "response").glob("*.out.json"))
STREAMS = sorted(p.name[:-len(".events.sse")] for p in (FIXTURES / "stream").glob("*.events.sse"))


class _Handler(BaseHTTPRequestHandler):
    """`model` names the fixture: a stream case when `stream` is set, else a response case."""

    def do_POST(self):  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        if req.get("stream"):
            body = (FIXTURES / "stream" / f"{req['model']}.events.sse").read_bytes()
            kind = "text/event-stream"
        else:
            body = (FIXTURES / "response" / f"{req['model']}.out.json").read_bytes()
            kind = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def client():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield openai.OpenAI(api_key="x", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
                            max_retries=0)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_fixtures_exist():
    assert {"text", "tool_use", "cache_usage", "length"} <= set(RESPONSES)
    assert {"text", "text_then_tool", "error", "truncated"} <= set(STREAMS)


@pytest.mark.parametrize("case", RESPONSES)
def test_every_response_validates(client, case):
    raw = json.loads((FIXTURES / "response" / f"{case}.out.json").read_text())
    Response.model_validate(raw)
    r = client.responses.create(model=case, input="x")
    assert r.id == raw["id"] and r.usage.total_tokens == raw["usage"]["total_tokens"]


def test_cache_usage(client):
    r = client.responses.create(model="cache_usage", input="x")
    assert r.output_text == "Clause 4 limits liability."
    assert (r.usage.input_tokens, r.usage.input_tokens_details.cached_tokens, r.usage.output_tokens) == (1820, 1800, 7)


def test_length_is_incomplete(client):
    r = client.responses.create(model="length", input="x")
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize("case", STREAMS)
def test_every_stream_validates(client, case):
    events = list(client.responses.create(model=case, input="x", stream=True))
    adapter = TypeAdapter(ResponseStreamEvent)
    for e in events:
        adapter.validate_python(e.model_dump(exclude_unset=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete", "response.failed")


def test_text_then_tool_stream(client):
    events = list(client.responses.create(model="text_then_tool", input="x", stream=True))
    final = events[-1].response
    assert final.output_text == "Let me check."
    call = final.output[1]
    assert (call.type, call.name, call.call_id, call.arguments) == (
        "function_call", "get_weather", "call_w", '{"location": "Lyon"}')
    assert final.usage.input_tokens_details.cached_tokens == 32


def test_truncated_stream_fails(client):
    events = list(client.responses.create(model="truncated", input="x", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.code == "server_error"
