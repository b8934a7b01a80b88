"""botocore reads what the InvokeModel translator writes.

`filters/tollgate-llm/tests/fixtures/bedrock_invoke/stream/<case>.bin` are the
InvokeModelWithResponseStream bytes the gateway sends a boto3 client for a Claude body served by
another provider. A real botocore `bedrock-runtime` client calls
`invoke_model_with_response_stream` against a local server answering with those bytes: each
event must come out as `{"chunk": {"bytes": <the Anthropic event JSON>}}` (the service model's
`PayloadPart.bytes`, base64 in a JSON payload, decoded by botocore), exceptions as
`EventStreamError` with Bedrock's code."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import EventStreamError

FIXTURES = (Path(__file__).resolve().parents[2]
            / "filters" / "tollgate-llm" / "tests" / "fixtures" / "bedrock_invoke")
STREAMS = sorted(p.stem for p in (FIXTURES / "stream").glob("*.bin"))


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        case = unquote(self.path.split("/")[2])
        body = (FIXTURES / "stream" / f"{case}.bin").read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("X-Amzn-Bedrock-Content-Type", "application/json")
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
        yield botocore.session.get_session().create_client(
            "bedrock-runtime", region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
            aws_access_key_id="AKIDUNITTEST0001", aws_secret_access_key="unit-test-secret",
            config=Config(retries={"max_attempts": 1}))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _stream(client, case):
    out = client.invoke_model_with_response_stream(modelId=case, body=b"{}")
    chunks = []
    try:
        for event in out["body"]:
            assert list(event) == ["chunk"]
            chunks.append(json.loads(event["chunk"]["bytes"]))
    except EventStreamError as error:
        return chunks, error
    return chunks, None


@pytest.mark.parametrize("case", STREAMS)
def test_botocore_parses_every_stream_as_the_golden_says(client, case):
    chunks, error = _stream(client, case)
    golden = json.loads((FIXTURES / "stream" / f"{case}.events.json").read_text())
    assert chunks == [g["chunk"] for g in golden if "chunk" in g]
    exceptions = [g for g in golden if "exception" in g]
    if exceptions:
        assert error is not None
        assert error.response["Error"]["Code"] == exceptions[0]["exception"]
    else:
        assert error is None and chunks[-1]["type"] == "message_stop"


def test_text_then_tool(client):
    chunks, error = _stream(client, "text_then_tool")
    assert error is None
    kinds = [c["type"] for c in chunks]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    text = "".join(c["delta"]["text"] for c in chunks
                   if c["type"] == "content_block_delta" and c["delta"]["type"] == "text_delta")
    assert text == "Let me check."
    assert chunks[-2]["delta"]["stop_reason"] == "tool_use"
    assert chunks[-1]["amazon-bedrock-invocationMetrics"] == {"inputTokenCount": 50, "outputTokenCount": 12}
