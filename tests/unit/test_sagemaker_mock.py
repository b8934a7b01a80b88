"""Tests of the mock SageMaker endpoint: it is test support, but it must be right.

The mock follows botocore's service model for SageMaker Runtime,
``botocore/data/sagemaker-runtime/2017-05-13/service-2.json`` (``InvokeEndpoint``,
``InvokeEndpointWithResponseStream``: ``ResponseStream`` with ``PayloadPart.Bytes`` as the event
payload, the ``ModelStreamError`` / ``InternalStreamFailure`` exception members, and the
``ModelError`` (424) and ``ValidationError`` error shapes). Every answer here is parsed by boto3's
own ``sagemaker-runtime`` client — the same parser real AWS answers go through — so the mock
cannot drift into a framing of our own: requests are signed by botocore, ``resp["Body"]`` is
iterated by botocore's event-stream parser, and errors are raised as botocore's modelled
exceptions.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from mocks.sagemaker_mock import (ANSWER_PREFIX, ANSWER_PREFIX_TGI, STREAM_FAILURES, MockSageMaker,
                                  prompt_tokens)

AK, SK, REGION = "AKIDUNITSAGEMAKER", "unit-sagemaker-secret", "us-east-1"
LLAMA3 = ("<|start_header_id|>user<|end_header_id|>\n\nhello ünïcode<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.fixture()
def tgi():
    mock = MockSageMaker(endpoint="ep", access_key=AK, secret_key=SK, region=REGION,
                         payload="tgi", prompt_template="llama3").start()
    yield mock
    mock.stop()


@pytest.fixture()
def chat():
    mock = MockSageMaker(endpoint="ep", access_key=AK, secret_key=SK, region=REGION).start()
    yield mock
    mock.stop()


def client(mock: MockSageMaker, secret: str = SK):
    return boto3.client("sagemaker-runtime", endpoint_url=f"http://127.0.0.1:{mock.port}",
                        region_name=REGION, aws_access_key_id=AK, aws_secret_access_key=secret,
                        config=Config(retries={"total_max_attempts": 1}))


def invoke(mock: MockSageMaker, body: dict, endpoint: str = "ep", secret: str = SK) -> dict:
    return client(mock, secret).invoke_endpoint(
        EndpointName=endpoint, Body=json.dumps(body).encode(), ContentType="application/json")


def invoke_stream(mock: MockSageMaker, body: dict) -> dict:
    return client(mock).invoke_endpoint_with_response_stream(
        EndpointName="ep", Body=json.dumps(body).encode(), ContentType="application/json")


def payload_parts(resp: dict) -> list[bytes]:
    """Every ``PayloadPart["Bytes"]`` of the stream, as botocore parses them."""
    parts = []
    for event in resp["Body"]:
        assert set(event) == {"PayloadPart"}, event
        assert isinstance(event["PayloadPart"]["Bytes"], bytes)
        parts.append(event["PayloadPart"]["Bytes"])
    return parts


def sse_data(container_output: bytes) -> list[str]:
    events = container_output.decode().split("\n\n")
    assert events[-1] == "", "the container's output ends with a complete event"
    return [e.removeprefix("data:").strip() for e in events[:-1]]


def cut_awkwardly(parts: list[bytes]) -> None:
    """The parts end inside an event and inside a UTF-8 character, as SageMaker's may."""
    assert len(parts) > 3
    assert any(not p.endswith(b"\n\n") for p in parts[:-1])
    undecodable = 0
    for p in parts:
        try:
            p.decode()
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable > 0, "no part ends inside a multi-byte character"


def params(**extra) -> dict:
    return {"do_sample": True, "return_full_text": False, "details": True, **extra}


# ---- OpenAI-style container ---------------------------------------------------------------------

def test_invoke_endpoint_answers_the_containers_json(chat):
    resp = invoke(chat, {"messages": [{"role": "user", "content": "ping ünï"}]})
    assert resp["ContentType"] == "application/json"
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    out = json.loads(resp["Body"].read())
    assert out["choices"][0]["message"]["content"] == ANSWER_PREFIX + "naïve ping ünï"
    assert out["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


def test_response_stream_payload_parts_are_the_containers_raw_sse(chat):
    resp = invoke_stream(chat, {"messages": [{"role": "user", "content": "ünïcode 🎉 words"}],
                                "stream": True, "stream_options": {"include_usage": True}})
    assert resp["ContentType"] == "text/event-stream"
    parts = payload_parts(resp)
    cut_awkwardly(parts)
    data = sse_data(b"".join(parts))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == ANSWER_PREFIX + "naïve ünïcode 🎉 words"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}


@pytest.mark.parametrize("kind", ["ModelStreamError", "InternalStreamFailure"])
def test_stream_failures_are_botocores_modelled_stream_exceptions(chat, kind):
    chat.stream_failure = kind
    resp = invoke_stream(chat, {"messages": [{"role": "user", "content": "fail half way please"}],
                                "stream": True})
    received = []
    with pytest.raises(EventStreamError) as err:
        for event in resp["Body"]:
            received.append(event["PayloadPart"]["Bytes"])
    # botocore raises a modelled event-stream exception as EventStreamError, coded by the
    # ResponseStream member the frame's :exception-type names
    c = client(chat)
    assert err.value.response["Error"] == {"Code": kind, "Message": STREAM_FAILURES[kind]["Message"]}
    assert issubclass(getattr(c.exceptions, kind), ClientError)
    assert received and b"".join(received).startswith(b"data: {")
    assert b"[DONE]" not in b"".join(received)


def test_container_failure_is_a_model_error(chat):
    chat.container_error = (500, '{"error": "CUDA out of memory"}')
    c = client(chat)
    for call in (invoke, invoke_stream):
        with pytest.raises(c.exceptions.ModelError) as err:
            call(chat, {"messages": [{"role": "user", "content": "hi"}]})
        r = err.value.response
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 424
        assert r["Error"]["Code"] == "ModelError"
        assert r["Error"]["Message"].startswith("Received server error (500) from primary")
        assert (r["OriginalStatusCode"], r["OriginalMessage"]) == (500, '{"error": "CUDA out of memory"}')
        assert r["LogStreamArn"].startswith("arn:aws:logs:us-east-1:")


def test_unknown_endpoint_is_a_validation_error(chat):
    c = client(chat)
    with pytest.raises(c.exceptions.ValidationError) as err:
        invoke(chat, {"messages": []}, endpoint="other")
    assert err.value.response["Error"]["Message"] == "Endpoint other of account 123456789012 not found."


# ---- TGI container ------------------------------------------------------------------------------

def test_generate_answers_with_details_and_prefill(tgi):
    resp = invoke(tgi, {"inputs": LLAMA3, "parameters": params(decoder_input_details=True)})
    [out] = json.loads(resp["Body"].read())
    answer = ANSWER_PREFIX_TGI + "naïve hello ünïcode"
    assert out["generated_text"] == answer
    d = out["details"]
    assert (d["finish_reason"], d["generated_tokens"]) == ("eos_token", len(answer.split(" ")) + 1)
    assert len(d["prefill"]) == prompt_tokens(LLAMA3)


def test_limits_stops_and_full_text(tgi):
    def generate(p: dict) -> dict:
        return json.loads(invoke(tgi, {"inputs": LLAMA3, "parameters": p})["Body"].read())[0]

    out = generate(params(max_new_tokens=2))
    assert (out["generated_text"], out["details"]["finish_reason"]) == ("tgi says:", "length")
    out = generate(params(stop=["naïve"]))
    assert out["details"]["finish_reason"] == "stop_sequence" and out["generated_text"].endswith("naïve")
    out = generate({"details": True})
    assert out["generated_text"].startswith(LLAMA3)  # TGI's text-generation default echoes the prompt


def test_stream_is_tgi_sse_in_payload_parts(tgi):
    body = {"inputs": LLAMA3, "parameters": params(), "stream": True}
    parts = payload_parts(invoke_stream(tgi, body))
    cut_awkwardly(parts)
    events = [json.loads(d) for d in sse_data(b"".join(parts))]
    assert "".join(e["token"]["text"] for e in events if not e["token"]["special"]) == \
        ANSWER_PREFIX_TGI + "naïve hello ünïcode"
    assert events[-1]["token"]["special"] is True
    assert events[-1]["details"]["input_length"] == prompt_tokens(LLAMA3)
    assert events[-1]["details"]["generated_tokens"] == len(events)
    assert all(e["details"] is None for e in events[:-1])
    tgi.truncate_stream = True
    events = [json.loads(d) for d in sse_data(b"".join(payload_parts(invoke_stream(tgi, body))))]
    assert events and all(e["details"] is None for e in events)


@pytest.mark.parametrize("body", [
    {"inputs": LLAMA3, "parameters": params(temperature=0)},
    {"inputs": LLAMA3, "parameters": params(top_p=1.0)},
    {"inputs": LLAMA3, "parameters": params(max_new_tokens=0)},
    {"inputs": LLAMA3, "parameters": params(stop=["a", "b", "c", "d", "e"])},
    {"inputs": LLAMA3, "parameters": params(seed=-1)},
    {"inputs": LLAMA3, "parameters": params(bogus=1)},
    {"inputs": LLAMA3, "parameters": params(), "stream": True},
    {"inputs": "", "parameters": params()},
    {"inputs": "<|begin_of_text|>" + LLAMA3, "parameters": params()},
    {"inputs": "hello", "parameters": params()},
    {"messages": [{"role": "user", "content": "hi"}]},
])
def test_invalid_requests_are_a_model_error(tgi, body):
    c = client(tgi)
    with pytest.raises(c.exceptions.ModelError) as err:
        invoke(tgi, body)
    r = err.value.response
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert r["OriginalStatusCode"] == 422
    assert json.loads(r["OriginalMessage"])["error_type"] == "validation"


def test_signature_is_checked(tgi):
    with pytest.raises(ClientError) as err:
        invoke(tgi, {"inputs": LLAMA3, "parameters": params()}, secret="wrong")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert err.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_openai_container_tool_call_parsed_by_boto3(chat):
    """An OpenAI-style container with `tools` answers a weather question with a function call:
    the body and the stream (PayloadPart bytes joined) are OpenAI chat objects."""
    body = {"messages": [{"role": "user", "content": "weather in Bergen"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]}
    out = json.loads(invoke(chat, body)["Body"].read())
    call = out["choices"][0]["message"]["tool_calls"][0]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert call["function"] == {"name": "get_weather", "arguments": '{"location": "Bergen"}'}
    assert chat.last_usage == out["usage"]
    stream = invoke_stream(chat, {**body, "stream": True,
                                  "stream_options": {"include_usage": True}})
    events = [json.loads(d) for d in sse_data(b"".join(payload_parts(stream)))[:-1]]
    args = "".join(tc["function"].get("arguments", "") for e in events if e["choices"]
                   for tc in e["choices"][0]["delta"].get("tool_calls", []))
    assert args == '{"location": "Bergen"}'
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[-1]["usage"] == chat.last_usage
