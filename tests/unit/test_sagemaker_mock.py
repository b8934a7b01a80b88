"""Tests of the mock SageMaker endpoint's TGI container: it is test support, but it must be right.

Requests are signed by botocore's SigV4 signer and sent over HTTP; the stream is decoded with
botocore's own event-stream parser, so the framing is checked against the real AWS client.
"""

from __future__ import annotations

import base64
import json

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

from mocks.sagemaker_mock import ANSWER_PREFIX_TGI, MockSageMaker, prompt_tokens

AK, SK, REGION = "AKIDUNITSAGEMAKER", "unit-sagemaker-secret", "us-east-1"
LLAMA3 = ("<|start_header_id|>user<|end_header_id|>\n\nhello ünïcode<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.fixture()
def tgi():
    mock = MockSageMaker(endpoint="ep", access_key=AK, secret_key=SK, region=REGION,
                         payload="tgi", prompt_template="llama3").start()
    yield mock
    mock.stop()


def post(mock: MockSageMaker, action: str, body: dict, secret: str = SK) -> requests.Response:
    url = f"http://127.0.0.1:{mock.port}/endpoints/ep/{action}"
    data = json.dumps(body).encode()
    req = AWSRequest(method="POST", url=url, data=data, headers={"content-type": "application/json"})
    SigV4Auth(Credentials(AK, secret), "sagemaker", REGION).add_auth(req)
    return requests.post(url, data=data, headers=dict(req.headers), timeout=10)


def params(**extra) -> dict:
    return {"do_sample": True, "return_full_text": False, "details": True, **extra}


def stream_events(resp: requests.Response) -> list[dict]:
    buf = EventStreamBuffer()
    buf.add_data(resp.content)
    container = b"".join(base64.b64decode(json.loads(m.payload)["Bytes"]) for m in buf)
    return [json.loads(e[len("data:"):]) for e in container.decode().split("\n\n") if e]


def test_generate_answers_with_details_and_prefill(tgi):
    resp = post(tgi, "invocations", {"inputs": LLAMA3, "parameters": params(decoder_input_details=True)})
    assert resp.status_code == 200, resp.text
    [out] = resp.json()
    answer = ANSWER_PREFIX_TGI + "naïve hello ünïcode"
    assert out["generated_text"] == answer
    d = out["details"]
    assert (d["finish_reason"], d["generated_tokens"]) == ("eos_token", len(answer.split(" ")) + 1)
    assert len(d["prefill"]) == prompt_tokens(LLAMA3)


def test_limits_stops_and_full_text(tgi):
    [out] = post(tgi, "invocations", {"inputs": LLAMA3, "parameters": params(max_new_tokens=2)}).json()
    assert (out["generated_text"], out["details"]["finish_reason"]) == ("tgi says:", "length")
    [out] = post(tgi, "invocations", {"inputs": LLAMA3, "parameters": params(stop=["naïve"])}).json()
    assert out["details"]["finish_reason"] == "stop_sequence" and out["generated_text"].endswith("naïve")
    [out] = post(tgi, "invocations", {"inputs": LLAMA3, "parameters": {"details": True}}).json()
    assert out["generated_text"].startswith(LLAMA3)  # TGI's text-generation default echoes the prompt


def test_stream_is_tgi_sse_in_payload_parts(tgi):
    resp = post(tgi, "invocations-response-stream", {"inputs": LLAMA3, "parameters": params(), "stream": True})
    assert resp.status_code == 200, resp.text
    events = stream_events(resp)
    assert "".join(e["token"]["text"] for e in events if not e["token"]["special"]) == \
        ANSWER_PREFIX_TGI + "naïve hello ünïcode"
    assert events[-1]["token"]["special"] is True
    assert events[-1]["details"]["input_length"] == prompt_tokens(LLAMA3)
    assert all(e["details"] is None for e in events[:-1])
    tgi.truncate_stream = True
    events = stream_events(post(tgi, "invocations-response-stream",
                                {"inputs": LLAMA3, "parameters": params(), "stream": True}))
    assert all(e["details"] is None for e in events)


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
    resp = post(tgi, "invocations", body)
    assert resp.status_code == 424, resp.text
    assert resp.headers["x-amzn-errortype"] == "ModelError"


def test_signature_is_checked(tgi):
    assert post(tgi, "invocations", {"inputs": LLAMA3, "parameters": params()}, secret="wrong").status_code == 403
