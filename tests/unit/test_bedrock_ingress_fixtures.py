"""botocore reads what the Bedrock-ingress translator writes.

The Rust tests of `tollgate_llm::bedrock_to_openai` write the ConverseStream bytes the gateway
sends to a Bedrock-format client (`filters/tollgate-llm/tests/fixtures/bedrock_ingress/stream/
<case>.bin`) and the Converse response bodies (`response/<case>.out.json`). Here a real botocore
`bedrock-runtime` client calls `converse_stream` / `converse` against a local server that
answers with those exact bytes, so they go through botocore's own event-stream decoder and its
bedrock-runtime service-model parser, exactly as in a boto3 application.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

FIXTURES = (Path(__file__).resolve().parents[2]
            / "filters" / "tollgate-llm" / "tests" / "fixtures" / "bedrock_ingress")
STREAM_CASES = sorted(p.stem for p in (FIXTURES / "stream").glob("*.bin"))
RESPONSE_CASES = sorted(p.name[:-len(".out.json")]
                        for p in (FIXTURES / "response").glob("*.out.json"))


class _Handler(BaseHTTPRequestHandler):
    """`/model/{case}/converse-stream` → `stream/{case}.bin`;
    `/model/{case}/converse` → the body of `response/{case}.out.json`."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _, _, model, action = self.path.split("/", 3)
        case = unquote(model)
        if action == "converse-stream":
            body = (FIXTURES / "stream" / f"{case}.bin").read_bytes()
            content_type = "application/vnd.amazon.eventstream"
        else:
            out = json.loads((FIXTURES / "response" / f"{case}.out.json").read_text())
            body = json.dumps(out["body"]).encode()
            content_type = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
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
        session = botocore.session.get_session()
        yield session.create_client(
            "bedrock-runtime", region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
            aws_access_key_id="AKIDUNITTEST0001", aws_secret_access_key="unit-test-secret",
            config=Config(retries={"max_attempts": 1}))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _stream(client, case):
    """The parsed events, and the EventStreamError that ended the stream (or None)."""
    out = client.converse_stream(modelId=case,
                                 messages=[{"role": "user", "content": [{"text": "hi"}]}])
    events = []
    try:
        for event in out["stream"]:
            events.append(event)
    except EventStreamError as error:
        return events, error
    return events, None


def _golden_events(case):
    return json.loads((FIXTURES / "stream" / f"{case}.events.json").read_text())


def test_fixtures_exist():
    assert {"text", "tool_use", "throttled"} <= set(STREAM_CASES)
    assert {"text", "tool_use", "cache_usage"} <= set(RESPONSE_CASES)


@pytest.mark.parametrize("case", STREAM_CASES)
def test_botocore_parses_every_stream_as_the_golden_says(client, case):
    events, error = _stream(client, case)
    golden = _golden_events(case)
    expected_events = [{g["event"]: g["payload"]} for g in golden if "event" in g]
    assert events == expected_events
    exceptions = [g for g in golden if "exception" in g]
    if exceptions:
        assert error is not None
        assert error.response["Error"]["Code"] == exceptions[0]["exception"]
        assert error.response["Error"]["Message"] == exceptions[0]["payload"]["message"]
    else:
        assert error is None
        assert list(events[-1]) == ["metadata"]


def test_text_stream(client):
    events, error = _stream(client, "text")
    assert error is None
    assert events[0] == {"messageStart": {"role": "assistant"}}
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events
                   if "contentBlockDelta" in e)
    assert text == "Hello wörld 🎉"
    assert events[-2] == {"messageStop": {"stopReason": "end_turn"}}
    usage = events[-1]["metadata"]["usage"]
    assert usage == {"inputTokens": 176, "outputTokens": 3, "totalTokens": 1203,
                     "cacheReadInputTokens": 1024}
    assert events[-1]["metadata"]["metrics"] == {"latencyMs": 0}


def test_tool_use_stream(client):
    """Accumulated as a boto3 application does: by contentBlockIndex."""
    events, error = _stream(client, "tool_use")
    assert error is None
    tools, inputs = {}, {}
    for event in events:
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            tools[start["contentBlockIndex"]] = start["start"]["toolUse"]
        elif "contentBlockDelta" in event:
            delta = event["contentBlockDelta"]
            inputs.setdefault(delta["contentBlockIndex"], "")
            inputs[delta["contentBlockIndex"]] += delta["delta"]["toolUse"]["input"]
    assert tools == {0: {"toolUseId": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather"},
                     1: {"toolUseId": "call_2", "name": "get_time"}}
    assert {i: json.loads(s) for i, s in inputs.items()} == {0: {"location": "Paris"}, 1: {}}
    assert events[-2] == {"messageStop": {"stopReason": "tool_use"}}
    assert events[-1]["metadata"]["usage"]["inputTokens"] == 82


def test_throttling_raises_like_bedrock(client):
    events, error = _stream(client, "throttled")
    assert events == []
    assert error.response["Error"]["Code"] == "throttlingException"
    assert "Rate limit reached" in str(error)


def test_error_mid_stream_after_partial_text(client):
    events, error = _stream(client, "error")
    assert [next(iter(e)) for e in events] == ["messageStart", "contentBlockDelta"]
    assert error.response["Error"]["Code"] == "modelStreamErrorException"


@pytest.mark.parametrize("case", RESPONSE_CASES)
def test_botocore_parses_every_converse_response(client, case):
    out = client.converse(modelId=case, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    body = json.loads((FIXTURES / "response" / f"{case}.out.json").read_text())["body"]
    out.pop("ResponseMetadata")
    assert out == body


def test_converse_tool_use_and_cache_usage(client):
    out = client.converse(modelId="tool_use",
                          messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert out["stopReason"] == "tool_use"
    tools = [b["toolUse"] for b in out["output"]["message"]["content"] if "toolUse" in b]
    assert tools[0] == {"toolUseId": "call_weather", "name": "get_weather",
                        "input": {"location": "Paris", "unit": "celsius"}}
    out = client.converse(modelId="cache_usage",
                          messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert out["usage"] == {"inputTokens": 20, "outputTokens": 7, "totalTokens": 1827,
                            "cacheReadInputTokens": 1800}


def test_error_shape_is_what_botocore_reads(client, monkeypatch):
    """`error_body` / `error_type` produce `{"message"}` + `x-amzn-errortype`; botocore turns
    that pair into the modelled exception."""

    def fail(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"message": "slow down"}).encode()
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-errortype", "ThrottlingException")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    monkeypatch.setattr(_Handler, "do_POST", fail)
    with pytest.raises(client.exceptions.ThrottlingException) as raised:
        client.converse(modelId="text", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert raised.value.response["Error"]["Message"] == "slow down"
    with pytest.raises(ClientError):
        client.converse_stream(modelId="text",
                               messages=[{"role": "user", "content": [{"text": "hi"}]}])
