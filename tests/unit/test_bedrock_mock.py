"""Tests of the mock Bedrock Runtime itself: it is test support, but it must be right.

Signed requests are produced by botocore (its signer and, for the end-to-end checks, its own
bedrock-runtime client), so the mock is checked against the real AWS client behaviour.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import botocore.session
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

from mocks.bedrock_mock import MockBedrock, decode_frames, encode_frame

AK, SK, TOKEN, REGION = "AKIDUNITTEST0001", "unit-test-secret", "unit-session-token", "eu-west-3"
API_KEY = "bedrock-api-key-unit"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
PROFILE_ARN = "arn:aws:bedrock:eu-west-3:123456789012:application-inference-profile/abc123"
MOCK_SCRIPT = Path(__file__).resolve().parents[1] / "mocks" / "bedrock_mock.py"


@pytest.fixture()
def mock(monkeypatch):
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    with MockBedrock(access_key=AK, secret_key=SK, session_token=TOKEN, region=REGION,
                     api_key=API_KEY) as m:
        yield m


@pytest.fixture()
def client(mock):
    session = botocore.session.get_session()
    return session.create_client(
        "bedrock-runtime", region_name=REGION, endpoint_url=mock.url,
        aws_access_key_id=AK, aws_secret_access_key=SK, aws_session_token=TOKEN,
        config=Config(retries={"max_attempts": 1}))


def signed(mock, model_id, action, body, secret=SK, region=REGION, token=TOKEN):
    """A request signed by botocore's SigV4 signer: (url, headers, body bytes)."""
    url = f"{mock.url}/model/{quote(model_id, safe='')}/{action}"
    data = json.dumps(body).encode()
    request = AWSRequest(method="POST", url=url, data=data,
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(AK, secret, token), "bedrock", region).add_auth(request)
    return url, dict(request.headers.items()), data


CHAT = {"messages": [{"role": "user", "content": [{"text": "hello there world"}]}]}


def test_signed_request_passes_and_echoes(mock):
    url, headers, data = signed(mock, MODEL, "converse", CHAT)
    assert "%3A" in url
    resp = requests.post(url, data=data, headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["output"]["message"] == {"role": "assistant",
                                        "content": [{"text": "echo: hello there world"}]}
    assert out["stopReason"] == "end_turn"
    assert out["usage"] == {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}
    assert out["metrics"]["latencyMs"] >= 1
    assert mock.requests[-1]["model_id"] == MODEL


@pytest.mark.parametrize("tamper", ["body", "path", "header", "secret", "region", "token"])
def test_tampered_requests_get_403(mock, tamper):
    url, headers, data = signed(mock, MODEL, "converse", CHAT,
                                secret="wrong" if tamper == "secret" else SK,
                                region="us-east-1" if tamper == "region" else REGION)
    if tamper == "body":
        data = data.replace(b"hello", b"HELLO")
    elif tamper == "path":
        url = url.replace(quote(MODEL, safe=""), quote("anthropic.claude-v2", safe=""))
    elif tamper == "header":
        # Another second than the one signed (a date signed at :00 gets :01).
        date = headers["X-Amz-Date"]
        headers["X-Amz-Date"] = date[:-3] + ("01Z" if date.endswith("00Z") else "00Z")
    elif tamper == "token":
        headers["X-Amz-Security-Token"] = "stolen"
    resp = requests.post(url, data=data, headers=headers, timeout=10)
    assert resp.status_code == 403, resp.text
    error_type = resp.headers["x-amzn-errortype"].split(":")[0]
    if tamper in ("body", "path", "header", "secret"):
        assert error_type == "InvalidSignatureException"
        assert resp.json()["message"].startswith(
            "The request signature we calculated does not match the signature you provided")
    elif tamper == "region":
        assert error_type == "InvalidSignatureException"
    else:
        assert error_type == "UnrecognizedClientException"


def test_single_encoded_canonical_path_is_rejected(mock):
    """A signer that forgets SigV4's double encoding of the path must fail, as on AWS."""
    url, _, data = signed(mock, MODEL, "converse", CHAT)

    class SingleEncoding(SigV4Auth):
        def _normalize_url_path(self, path):
            return path

    request = AWSRequest(method="POST", url=url, data=data,
                         headers={"Content-Type": "application/json"})
    SingleEncoding(Credentials(AK, SK, TOKEN), "bedrock", REGION).add_auth(request)
    resp = requests.post(url, data=data, headers=dict(request.headers.items()), timeout=10)
    assert resp.status_code == 403
    assert resp.headers["x-amzn-errortype"].startswith("InvalidSignatureException")


def test_missing_auth_and_bearer_keys(mock):
    url = f"{mock.url}/model/{quote(MODEL, safe='')}/converse"
    resp = requests.post(url, json=CHAT, timeout=10)
    assert resp.status_code == 403
    assert resp.json() == {"message": "Missing Authentication Token"}
    resp = requests.post(url, json=CHAT, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    resp = requests.post(url, json=CHAT, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert resp.status_code == 403


def test_botocore_client_converse_with_arn_and_tools(client, mock):
    out = client.converse(modelId=PROFILE_ARN, messages=[
        {"role": "user", "content": [{"text": "What is the weather in Paris?"}]}],
        toolConfig={"tools": [{"toolSpec": {"name": "get_weather",
                                            "inputSchema": {"json": {"type": "object"}}}}]})
    assert out["stopReason"] == "tool_use"
    tool = out["output"]["message"]["content"][0]["toolUse"]
    assert tool["name"] == "get_weather" and tool["input"] == {"location": "Paris"}
    assert mock.requests[-1]["model_id"] == PROFILE_ARN
    assert "%2F" in mock.requests[-1]["path"] and "%3A" in mock.requests[-1]["path"]


def test_botocore_client_stream_decodes(client, mock):
    out = client.converse_stream(modelId=MODEL, messages=CHAT["messages"])
    events = list(out["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events
                   if "contentBlockDelta" in e)
    assert text == "echo: hello there world"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 4


def test_stream_frames_are_real_event_stream(mock):
    url, headers, data = signed(mock, MODEL, "converse-stream", CHAT)
    resp = requests.post(url, data=data, headers=headers, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/vnd.amazon.eventstream"
    frames = decode_frames(resp.content)
    # botocore's own parser agrees, frame for frame.
    buffer = EventStreamBuffer()
    buffer.add_data(resp.content)
    parsed = list(buffer)
    assert len(parsed) == len(frames) == 8
    for (headers_, payload), message in zip(frames, parsed):
        assert headers_ == message.headers and payload == message.payload
        assert headers_[":message-type"] == "event"
        assert headers_[":content-type"] == "application/json"
    assert [h[":event-type"] for h, _ in frames] == [
        "messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockDelta",
        "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"]


def test_stream_exception_and_http_faults(mock):
    mock.set_faults(stream_exception="throttlingException", stream_exception_after=2)
    url, headers, data = signed(mock, MODEL, "converse-stream", CHAT)
    resp = requests.post(url, data=data, headers=headers, timeout=10)
    assert resp.status_code == 200
    frames = decode_frames(resp.content)
    assert [h.get(":event-type") for h, _ in frames[:3]] == [
        "messageStart", "contentBlockDelta", "contentBlockDelta"]
    last_headers, last_payload = frames[-1]
    assert last_headers[":message-type"] == "exception"
    assert last_headers[":exception-type"] == "throttlingException"
    assert json.loads(last_payload)["message"]
    mock.set_faults(status=429, count=1)
    url, headers, data = signed(mock, MODEL, "converse", CHAT)
    resp = requests.post(url, data=data, headers=headers, timeout=10)
    assert resp.status_code == 429
    assert resp.headers["x-amzn-errortype"].startswith("ThrottlingException")
    url, headers, data = signed(mock, MODEL, "converse", CHAT)
    assert requests.post(url, data=data, headers=headers, timeout=10).status_code == 200


def test_validation_like_bedrock(mock):
    bad = {"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}
    url, headers, data = signed(mock, MODEL, "converse", bad)
    resp = requests.post(url, data=data, headers=headers, timeout=10)
    assert resp.status_code == 400
    assert resp.headers["x-amzn-errortype"].startswith("ValidationException")
    assert "start with a user message" in resp.json()["message"]
    no_config = {"messages": [
        {"role": "user", "content": [{"text": "hi"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "x"}]}}]}]}
    url, headers, data = signed(mock, MODEL, "converse", no_config)
    assert "toolConfig" in requests.post(url, data=data, headers=headers, timeout=10).json()["message"]


def test_cache_points_report_write_then_read(mock):
    body = {"system": [{"text": "a long shared prefix"}, {"cachePoint": {"type": "default"}}],
            "messages": [{"role": "user", "content": [{"text": "question one"}]}],
            "inferenceConfig": {"maxTokens": 2}}
    url, headers, data = signed(mock, MODEL, "converse", body)
    first = requests.post(url, data=data, headers=headers, timeout=10).json()
    assert first["usage"]["cacheWriteInputTokens"] == 4 and first["usage"]["inputTokens"] == 2
    assert first["stopReason"] == "max_tokens" and first["usage"]["outputTokens"] == 2
    url, headers, data = signed(mock, MODEL, "converse", body)
    second = requests.post(url, data=data, headers=headers, timeout=10).json()
    assert second["usage"]["cacheReadInputTokens"] == 4
    assert second["usage"]["totalTokens"] == 2 + 2 + 4


def test_invoke_embeddings(mock):
    url, headers, data = signed(mock, "amazon.titan-embed-text-v2:0", "invoke",
                                {"inputText": "hello world", "dimensions": 4})
    out = requests.post(url, data=data, headers=headers, timeout=10).json()
    assert len(out["embedding"]) == 4 and out["inputTextTokenCount"] == 2
    url, headers, data = signed(mock, "cohere.embed-english-v3", "invoke",
                                {"texts": ["a", "b c"], "input_type": "search_document"})
    out = requests.post(url, data=data, headers=headers, timeout=10).json()
    assert len(out["embeddings"]) == 2 and out["response_type"] == "embeddings_floats"


def test_frame_codec_round_trip_and_crc():
    frame = encode_frame({":event-type": "messageStart"}, b'{"role":"assistant"}')
    assert decode_frames(frame) == [({":event-type": "messageStart"}, b'{"role":"assistant"}')]
    corrupt = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(ValueError, match="CRC"):
        decode_frames(corrupt)


def test_standalone_prints_ready():
    proc = subprocess.Popen([sys.executable, str(MOCK_SCRIPT), "--port", "0", "--access-key", AK,
                             "--secret-key", SK], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY port=")
        port = int(line.strip().split("=")[1])
        assert requests.get(f"http://127.0.0.1:{port}/__mock/health", timeout=5).json() == {"status": "ok"}
    finally:
        proc.terminate()
        proc.wait(timeout=5)
