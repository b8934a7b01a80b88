"""The mock Bedrock Runtime, parsed by boto3's own ``bedrock-runtime`` client.

Follows botocore's service model ``botocore/data/bedrock-runtime/2023-09-30/service-2.json``:
``Converse`` (``ConverseResponse``: ``output.message``, ``stopReason``, ``usage``: ``TokenUsage``),
``ConverseStream`` (``ConverseStreamOutput`` events and its exception members),
``InvokeModel`` (``body`` blob + ``Content-Type`` header) and ``InvokeModelWithResponseStream``
(``ResponseStream``: ``chunk`` is a ``PayloadPart`` whose ``bytes`` member is *not* an event
payload, so botocore decodes it from the frame's JSON ``{"bytes": base64}``; the exception
members ``modelStreamErrorException`` / ``throttlingException``), and the modelled errors
(``ThrottlingException``: httpStatusCode 429). The token-count response headers of InvokeModel
(``X-Amzn-Bedrock-Input-Token-Count``) are not in the service model; boto3 exposes them in
``ResponseMetadata.HTTPHeaders``, which is where we read them.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from mocks.bedrock_mock import MockBedrock, cohere_input_tokens

AK, SK, REGION = "AKIDUNITBEDROCKSDK", "unit-bedrock-sdk-secret", "us-west-2"
MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object",
                                 "properties": {"location": {"type": "string"}}}}


@pytest.fixture()
def mock():
    with MockBedrock(access_key=AK, secret_key=SK, region=REGION) as m:
        yield m


@pytest.fixture()
def brt(mock, monkeypatch):
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    return boto3.client("bedrock-runtime", endpoint_url=mock.url, region_name=REGION,
                        aws_access_key_id=AK, aws_secret_access_key=SK,
                        config=Config(retries={"total_max_attempts": 1}))


def claude_body(text: str, **extra) -> bytes:
    return json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                       "messages": [{"role": "user", "content": text}], **extra}).encode()


def test_converse_text_usage(brt):
    out = brt.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "one two"}]}])
    assert out["output"]["message"] == {"role": "assistant",
                                        "content": [{"text": "echo: one two"}]}
    assert out["stopReason"] == "end_turn"
    assert out["usage"] == {"inputTokens": 2, "outputTokens": 3, "totalTokens": 5}
    assert out["metrics"]["latencyMs"] >= 1


def test_converse_stream_tool_use_every_event(brt):
    out = brt.converse_stream(
        modelId=MODEL,
        messages=[{"role": "user", "content": [{"text": "weather in Lyon"}]}],
        toolConfig={"tools": [{"toolSpec": {"name": "get_weather",
                                            "inputSchema": {"json": {"type": "object"}}}}]})
    events = list(out["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "get_weather"
    args = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events
                   if "contentBlockDelta" in e)
    assert json.loads(args) == {"location": "Lyon"}
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"
    assert set(events[-1]["metadata"]["usage"]) == {"inputTokens", "outputTokens", "totalTokens"}


def test_converse_stream_model_stream_error_mid_stream(brt, mock):
    mock.set_faults(stream_exception="modelStreamErrorException", stream_exception_after=1)
    out = brt.converse_stream(modelId=MODEL,
                              messages=[{"role": "user", "content": [{"text": "a b c"}]}])
    seen = []
    with pytest.raises(EventStreamError) as err:
        for event in out["stream"]:
            seen.append(event)
    assert err.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert [next(iter(e)) for e in seen] == ["messageStart", "contentBlockDelta"]


def test_throttling_exception_is_botocore_modelled_429(brt, mock):
    mock.set_faults(status=429, count=1)
    with pytest.raises(brt.exceptions.ThrottlingException) as err:
        brt.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert err.value.response["Error"]["Code"] == "ThrottlingException"


def test_invoke_model_anthropic_body(brt):
    out = brt.invoke_model(modelId=MODEL, body=claude_body("hello bedrock"),
                           contentType="application/json", accept="application/json")
    assert out["contentType"] == "application/json"
    msg = json.loads(out["body"].read())
    assert msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["content"] == [{"type": "text", "text": "echo: hello bedrock"}]
    assert msg["stop_reason"] == "end_turn"
    assert msg["usage"] == {"input_tokens": 2, "output_tokens": 3}
    headers = out["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == "2"
    assert headers["x-amzn-bedrock-output-token-count"] == "3"


def test_invoke_model_with_response_stream_chunks(brt):
    out = brt.invoke_model_with_response_stream(
        modelId=MODEL, body=claude_body("weather in Nice", tools=[WEATHER_TOOL]))
    assert out["contentType"] == "application/json"
    events = []
    for part in out["body"]:
        assert set(part) == {"chunk"}, part
        # botocore base64-decoded PayloadPart.bytes from the frame's JSON: raw Anthropic events
        events.append(json.loads(part["chunk"]["bytes"]))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(kinds)
    args = "".join(e["delta"]["partial_json"] for e in events
                   if e["type"] == "content_block_delta")
    assert json.loads(args) == {"location": "Nice"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["inputTokenCount"] == events[0]["message"]["usage"]["input_tokens"]
    assert metrics["outputTokenCount"] == events[-2]["usage"]["output_tokens"]


def test_invoke_model_stream_exception_frame(brt, mock):
    mock.set_faults(stream_exception="modelStreamErrorException", stream_exception_after=1)
    out = brt.invoke_model_with_response_stream(modelId=MODEL, body=claude_body("a b c d"))
    seen = []
    with pytest.raises(EventStreamError) as err:
        for part in out["body"]:
            seen.append(json.loads(part["chunk"]["bytes"])["type"])
    assert err.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert seen == ["message_start", "content_block_start", "content_block_delta"]


@pytest.mark.parametrize("model,body,count", [
    ("amazon.titan-embed-text-v2:0", {"inputText": "three small words"}, 3),
    ("cohere.embed-english-v3", {"texts": ["a b", "c"], "input_type": "search_document"},
     cohere_input_tokens(["a b", "c"])),
])
def test_invoke_model_embeddings_report_input_tokens(brt, model, body, count):
    out = brt.invoke_model(modelId=model, body=json.dumps(body).encode())
    data = json.loads(out["body"].read())
    assert ("embedding" in data) or len(data["embeddings"]) == 2
    assert out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == str(count)


def test_validation_exception_is_modelled(brt):
    with pytest.raises(ClientError) as err:
        brt.invoke_model(modelId="cohere.embed-english-v3", body=b'{"nope": 1}')
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
