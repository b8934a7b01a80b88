"""SageMaker endpoints through the gateway, for both container kinds: an OpenAI-style container
and a Hugging Face TGI container (`payload: tgi`, Llama 3 prompt template). SigV4 for service
`sagemaker` is checked by the mocks with botocore's signer; InvokeEndpoint, and the response
stream as AWS frames it (botocore's `sagemaker-runtime` service model: each PayloadPart frame's
payload is the container's raw bytes, parts cut inside events and UTF-8 characters; the mock's
framing is proven with boto3 in `tests/unit/test_sagemaker_mock.py`), and the stream's
`ModelStreamError` / `InternalStreamFailure` exception frames reaching each client as its own
API's error."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

import harness
from mocks.sagemaker_mock import ANSWER_PREFIX, ANSWER_PREFIX_TGI, STREAM_FAILURES, MockSageMaker, prompt_tokens

AWS_ID_ENV = "TG_E2E_SM_AWS_ID"
AWS_SECRET_ENV = "TG_E2E_SM_AWS_SECRET"
TGI_ENDPOINT = "tgi-llama3-endpoint"


@pytest.fixture(scope="module")
def sm_gw(tmp_path_factory):
    harness.require_built()
    secret = harness.random_secret("sm-secret-")
    mock = MockSageMaker(endpoint="chat-endpoint-1", access_key="AKIDTESTSAGEMAKER", secret_key=secret).start()
    tgi = MockSageMaker(endpoint=TGI_ENDPOINT, access_key="AKIDTESTSAGEMAKER", secret_key=secret,
                        payload="tgi", prompt_template="llama3").start()
    config = {
        "credentials": {"aws": {"aws_access_key_id_env": AWS_ID_ENV, "aws_secret_access_key_env": AWS_SECRET_ENV}},
        "models": [
            {"name": "sm-chat", "deployments": [{
                "provider": "sagemaker", "region": "us-east-1", "model": "chat-endpoint-1",
                "base_url": f"http://127.0.0.1:{mock.port}", "credential": "aws"}]},
            {"name": "sm-tgi", "deployments": [{
                "provider": "sagemaker", "region": "us-east-1", "model": TGI_ENDPOINT,
                "base_url": f"http://127.0.0.1:{tgi.port}", "credential": "aws",
                "payload": "tgi", "prompt_template": "llama3"}]},
        ],
    }
    stack = harness.GatewayStack(tmp_path_factory.mktemp("tollgate-sm"), config,
                                 {AWS_ID_ENV: "AKIDTESTSAGEMAKER", AWS_SECRET_ENV: secret})
    stack.start()
    try:
        stack.wait_chat_ready("sm-chat")
        stack.wait_chat_ready("sm-tgi")
        yield stack, mock, tgi
    finally:
        stack.stop()
        mock.stop()
        tgi.stop()


@pytest.fixture()
def tgi_mock(sm_gw):
    _, _, tgi = sm_gw
    tgi.truncate_stream = False
    tgi.stream_input_length = True
    tgi.stream_failure = None
    yield tgi
    tgi.truncate_stream = False
    tgi.stream_input_length = True
    tgi.stream_failure = None


@pytest.fixture()
def chat_mock(sm_gw):
    _, mock, _ = sm_gw
    mock.stream_failure = None
    yield mock
    mock.stream_failure = None


# ---- OpenAI-style container ---------------------------------------------------------------------

def test_invoke_endpoint(sm_gw):
    gw, mock, _ = sm_gw
    client = gw.client(gw.admin_key)
    resp = client.chat.completions.create(model="sm-chat", messages=[{"role": "user", "content": "ping one"}])
    assert resp.choices[0].message.content == ANSWER_PREFIX + "naïve ping one"
    last = mock.requests[-1]
    assert last["path"] == "/endpoints/chat-endpoint-1/invocations"
    assert "/us-east-1/sagemaker/aws4_request" in last["headers"]["authorization"]
    assert gw.admin_key not in str(last)


@pytest.mark.parametrize("include_usage", [False, True])
def test_response_stream_is_reassembled(sm_gw, include_usage):
    gw, mock, _ = sm_gw
    client = gw.client(gw.admin_key)
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(client.chat.completions.create(
        model="sm-chat", stream=True, messages=[{"role": "user", "content": "ünïcode words here"}], **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER_PREFIX + "naïve ünïcode words here"
    usage_chunks = [c for c in chunks if c.usage is not None]
    # the gateway always asks the container for usage; the client sees it only if it asked
    assert len(usage_chunks) == (1 if include_usage else 0)
    assert mock.requests[-1]["path"] == "/endpoints/chat-endpoint-1/invocations-response-stream"
    assert b'"include_usage": true' in mock.requests[-1]["body"].replace(b'":true', b'": true')


@pytest.mark.parametrize("kind", ["ModelStreamError", "InternalStreamFailure"])
def test_stream_exception_frame_is_an_openai_stream_error(sm_gw, chat_mock, kind):
    """An exception frame half-way through ends the stream with OpenAI's terminal error event:
    the text before it arrives, no finish_reason is made up, the SDK raises the error."""
    gw, _, _ = sm_gw
    chat_mock.stream_failure = kind
    stream = gw.client(gw.admin_key).chat.completions.create(
        model="sm-chat", stream=True, messages=[{"role": "user", "content": "a long ünïcode answer please"}])
    seen = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            seen.append(chunk)
    assert kind in str(err.value) and STREAM_FAILURES[kind]["Message"] in str(err.value)
    text = "".join(c.choices[0].delta.content or "" for c in seen if c.choices)
    assert text and (ANSWER_PREFIX + "naïve a long ünïcode answer please").startswith(text)
    assert not any(c.choices and c.choices[0].finish_reason for c in seen)


# ---- TGI container ------------------------------------------------------------------------------

def llama3(*turns: tuple[str, str]) -> str:
    """The Llama 3 prompt the gateway must send (the tokenizer adds <|begin_of_text|>)."""
    body = "".join(f"<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>" for role, text in turns)
    return body + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def tgi_request(tgi: MockSageMaker, token: str) -> tuple[dict, dict]:
    [record] = [r for r in tgi.requests if token.encode() in r["body"]]
    assert "/us-east-1/sagemaker/aws4_request" in record["headers"]["authorization"]
    return record, json.loads(record["body"])


def test_tgi_openai_sdk_chat(sm_gw, tgi_mock):
    gw, _, tgi = sm_gw
    token = harness.random_secret("t")
    messages = [{"role": "system", "content": "Be terse."},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": f"naïve question {token}"}]
    resp = gw.client(gw.admin_key).chat.completions.create(
        model="sm-tgi", messages=messages, max_tokens=40, temperature=0.5, top_p=0.9, seed=7, stop=["###"])
    answer = f"{ANSWER_PREFIX_TGI}naïve naïve question {token}"
    assert resp.choices[0].message.content == answer
    assert resp.choices[0].finish_reason == "stop"
    inputs = llama3(("system", "Be terse."), ("user", "first question"), ("assistant", "first answer"),
                    ("user", f"naïve question {token}"))
    completion = len(answer.split(" ")) + 1  # one token per word and the end-of-turn token
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (prompt_tokens(inputs), completion)
    assert resp.usage.total_tokens == prompt_tokens(inputs) + completion

    record, body = tgi_request(tgi, token)
    assert record["path"] == f"/endpoints/{TGI_ENDPOINT}/invocations"
    assert body == {"inputs": inputs, "parameters": {
        "do_sample": True, "max_new_tokens": 40, "temperature": 0.5, "top_p": 0.9, "stop": ["###"],
        "seed": 7, "return_full_text": False, "details": True, "decoder_input_details": True}}
    assert gw.admin_key not in str(record)


def test_tgi_openai_sdk_length_and_greedy(sm_gw, tgi_mock):
    gw, _, tgi = sm_gw
    token = harness.random_secret("t")
    resp = gw.client(gw.admin_key).chat.completions.create(
        model="sm-tgi", messages=[{"role": "user", "content": f"long answer please {token}"}],
        max_tokens=3, temperature=0)
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.content == ANSWER_PREFIX_TGI.strip() + " naïve"
    assert resp.usage.completion_tokens == 3
    _, body = tgi_request(tgi, token)
    assert body["parameters"]["do_sample"] is False and "temperature" not in body["parameters"]


@pytest.mark.parametrize("include_usage", [False, True])
def test_tgi_openai_sdk_stream(sm_gw, tgi_mock, include_usage):
    gw, _, tgi = sm_gw
    token = harness.random_secret("t")
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(gw.client(gw.admin_key).chat.completions.create(
        model="sm-tgi", stream=True, messages=[{"role": "user", "content": f"ünïcode stream {token}"}], **kwargs))
    answer = f"{ANSWER_PREFIX_TGI}naïve ünïcode stream {token}"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content) == answer
    assert len(content) == len(answer.split(" ")), content  # token by token; the special token skipped
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        [u] = usage_chunks
        inputs = llama3(("user", f"ünïcode stream {token}"))
        assert (u.usage.prompt_tokens, u.usage.completion_tokens) == (prompt_tokens(inputs), len(content) + 1)
    else:
        assert usage_chunks == []
    record, body = tgi_request(tgi, token)
    assert record["path"] == f"/endpoints/{TGI_ENDPOINT}/invocations-response-stream"
    assert record["headers"]["accept"] == "application/vnd.amazon.eventstream"
    assert body["stream"] is True and "decoder_input_details" not in body["parameters"]


def test_tgi_truncated_stream_is_an_error(sm_gw, tgi_mock):
    gw, _, _ = sm_gw
    tgi_mock.truncate_stream = True
    stream = gw.client(gw.admin_key).chat.completions.create(
        model="sm-tgi", stream=True, messages=[{"role": "user", "content": "cut me short"}])
    seen = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            seen.append(chunk)
    assert "incomplete" in str(err.value)
    assert not any(c.choices and c.choices[0].finish_reason for c in seen)


def anthropic_client(gw: harness.GatewayStack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.gateway_url, api_key=gw.admin_key, max_retries=0, timeout=20.0)


def test_tgi_anthropic_sdk_messages(sm_gw, tgi_mock):
    gw, _, tgi = sm_gw
    token = harness.random_secret("t")
    msg = anthropic_client(gw).messages.create(
        model="sm-tgi", max_tokens=100, system="Be terse.",
        messages=[{"role": "user", "content": f"hello {token}"}])
    answer = f"{ANSWER_PREFIX_TGI}naïve hello {token}"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == answer
    assert msg.stop_reason == "end_turn"
    inputs = llama3(("system", "Be terse."), ("user", f"hello {token}"))
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (prompt_tokens(inputs), len(answer.split(" ")) + 1)
    _, body = tgi_request(tgi, token)
    assert body["inputs"] == inputs and body["parameters"]["max_new_tokens"] == 100


@pytest.mark.parametrize("input_length", [True, False])
def test_tgi_anthropic_sdk_stream(sm_gw, tgi_mock, input_length):
    gw, _, _ = sm_gw
    tgi_mock.stream_input_length = input_length  # older TGI versions do not report it
    token = harness.random_secret("t")
    with anthropic_client(gw).messages.stream(
            model="sm-tgi", max_tokens=100, messages=[{"role": "user", "content": f"stream a b {token}"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    answer = f"{ANSWER_PREFIX_TGI}naïve stream a b {token}"
    assert "".join(pieces) == answer and len(pieces) >= 4, pieces
    assert final.stop_reason == "end_turn"
    expected_input = prompt_tokens(llama3(("user", f"stream a b {token}"))) if input_length else 0
    assert (final.usage.input_tokens, final.usage.output_tokens) == (expected_input, len(answer.split(" ")) + 1)


def test_tgi_refuses_tools_and_images(sm_gw, tgi_mock):
    gw, _, tgi = sm_gw
    client = gw.client(gw.admin_key)
    before = len(tgi.requests)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="sm-tgi", messages=[{"role": "user", "content": "weather?"}],
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
    assert err.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="sm-tgi", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert err.value.body["param"] == "messages[0].content[1]"
    assert len(tgi.requests) == before  # refused by the gateway, never sent


@pytest.mark.parametrize("stream", [False, True])
def test_tgi_stop_sequence_is_not_part_of_the_answer(sm_gw, tgi_mock, stream):
    """TGI ends its text with the stop sequence it stopped on; OpenAI leaves it out."""
    gw, _, tgi = sm_gw
    token = harness.random_secret("t")
    client = gw.client(gw.admin_key)
    kwargs = {"model": "sm-tgi", "messages": [{"role": "user", "content": f"stop here {token}"}],
              "stop": ["naïve", "never"]}
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        resp = client.chat.completions.create(**kwargs)
        text, finish = resp.choices[0].message.content, [resp.choices[0].finish_reason]
    assert text == ANSWER_PREFIX_TGI
    assert finish == ["stop"]
    _, body = tgi_request(tgi, token)
    assert body["parameters"]["stop"] == ["naïve", "never"]


def test_tgi_stream_exception_frame_is_an_anthropic_error_event(sm_gw, tgi_mock):
    """A ModelStreamError mid-stream reaches an Anthropic client as its stream's `error` event."""
    gw, _, _ = sm_gw
    tgi_mock.stream_failure = "ModelStreamError"
    pieces = []
    with pytest.raises(anthropic.APIError) as err:
        with anthropic_client(gw).messages.stream(
                model="sm-tgi", max_tokens=100, messages=[{"role": "user", "content": "stream then fail"}]) as stream:
            for text in stream.text_stream:
                pieces.append(text)
    assert "ModelInvocationTimeExceeded" in str(err.value)
    assert STREAM_FAILURES["ModelStreamError"]["Message"] in str(err.value)
    assert pieces and (ANSWER_PREFIX_TGI + "naïve stream then fail").startswith("".join(pieces))
