"""Two client APIs end to end through real Envoy, with the official SDKs:

- the OpenAI Responses API (`openai` SDK `client.responses.create`, streamed and not, with a
  function tool round trip) against models served by OpenAI (translated to chat completions),
  by an OpenAI deployment that declares `responses_api: true` (passed through), by Anthropic
  and by Bedrock (translated through the pivot); the stateless refusals;
- Bedrock InvokeModel (boto3 `invoke_model` / `invoke_model_with_response_stream`, bearer
  token over TLS) with the Anthropic-on-Bedrock body against an OpenAI-served model (through
  the pivot, answered as Claude on Bedrock answers) and native bodies against a Bedrock
  deployment (as sent, re-signed with SigV4, checked by the mock with botocore's signer); a
  native body against an OpenAI model is a ValidationException that says why.

A small matrix of its own (`RESPONSES_MODELS`); the shared matrix (tests/e2e/test_matrix.py)
can take these APIs as table entries once both branches are merged."""

from __future__ import annotations

import json
import os
import subprocess

import boto3
import botocore.config
import openai
import pytest

import harness
from mocks.anthropic_mock import MockAnthropic
from mocks.bedrock_mock import MockBedrock
from mocks.openai_mock import MockOpenAI

OPENAI_KEY_ENV = "TG_E2E_CA_OPENAI_KEY"
ANTHROPIC_KEY_ENV = "TG_E2E_CA_ANTHROPIC_KEY"
AWS_ID_ENV = "TG_E2E_CA_AWS_ID"
AWS_SECRET_ENV = "TG_E2E_CA_AWS_SECRET"
AWS_KEY_ID = "AKIDTESTCLIENTAPI"
BEDROCK_MODEL_ID = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                         "required": ["location"]}}]

# model → how the gateway serves a Responses request for it
RESPONSES_MODELS = {
    "gpt-mock": "openai-translated",
    "gpt-resp": "openai-passthrough",
    "claude-mock": "anthropic",
    "claude-bedrock": "bedrock",
}


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    missing = harness.missing_artifacts()
    if missing:
        if harness_required():
            pytest.fail("e2e stack not built: " + "; ".join(missing), pytrace=False)
        pytest.skip("e2e stack not built (set TOLLGATE_REQUIRE_E2E=1 to fail instead)")
    work = tmp_path_factory.mktemp("tollgate-client-apis")
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    openai_key = harness.random_secret("sk-ca-")
    anthropic_key = harness.random_secret("sk-ant-ca-")
    aws_secret = harness.random_secret("aws-secret-")
    mocks = {
        "openai": MockOpenAI(api_key=openai_key).start(),
        "anthropic": MockAnthropic(api_key=anthropic_key).start(),
        "bedrock": MockBedrock(access_key=AWS_KEY_ID, secret_key=aws_secret).start(),
    }
    bedrock_url = f"http://127.0.0.1:{mocks['bedrock'].port}"

    def bedrock(model):
        return {"provider": "bedrock", "region": "us-east-1", "base_url": bedrock_url, "model": model,
                "credential": "aws"}

    config = {
        "credentials": {"openai": {"api_key_env": OPENAI_KEY_ENV},
                        "anthropic": {"api_key_env": ANTHROPIC_KEY_ENV},
                        "aws": {"aws_access_key_id_env": AWS_ID_ENV, "aws_secret_access_key_env": AWS_SECRET_ENV}},
        "models": [
            {"name": "gpt-mock", "deployments": [{"provider": "openai", "base_url": mocks["openai"].base_url,
                                                  "model": "mock-model-1", "credential": "openai"}]},
            {"name": "gpt-resp", "deployments": [{"provider": "openai", "base_url": mocks["openai"].base_url,
                                                  "model": "mock-model-2", "credential": "openai",
                                                  "responses_api": True}]},
            {"name": "claude-mock", "deployments": [{"provider": "anthropic", "base_url": mocks["anthropic"].base_url,
                                                     "model": "claude-mock-1", "credential": "anthropic"}]},
            {"name": "claude-bedrock", "deployments": [bedrock(BEDROCK_MODEL_ID)]},
            {"name": "titan-embed", "deployments": [bedrock("amazon.titan-embed-text-v2:0")]},
        ],
    }
    env = {OPENAI_KEY_ENV: openai_key, ANTHROPIC_KEY_ENV: anthropic_key, AWS_ID_ENV: AWS_KEY_ID,
           AWS_SECRET_ENV: aws_secret, "TOLLGATE_TLS_CERT_FILE": str(cert), "TOLLGATE_TLS_KEY_FILE": str(key)}
    stack = harness.GatewayStack(work, config, env)
    try:
        stack.start()
        for model in ("gpt-mock", "claude-mock", "claude-bedrock"):
            stack.wait_chat_ready(model)
        yield stack, cert, mocks
    finally:
        stack.stop()
        for m in mocks.values():
            m.stop()


def harness_required() -> bool:
    return os.environ.get("TOLLGATE_REQUIRE_E2E", "") not in ("", "0", "false", "no")


def oai(ca) -> openai.OpenAI:
    stack, _, _ = ca
    return openai.OpenAI(api_key=stack.admin_key, base_url=stack.base_url, max_retries=0, timeout=20)


def last_request(ca, provider):
    return ca[2][provider].requests[-1]


# ---- the OpenAI Responses API ------------------------------------------------------------------

@pytest.mark.parametrize("model", RESPONSES_MODELS)
def test_responses_text(ca, model):
    r = oai(ca).responses.create(model=model, input="say three words", instructions="Be brief.",
                                 max_output_tokens=50, temperature=0.2)
    assert r.object == "response" and r.status == "completed"
    assert r.output_text == "echo: say three words"
    assert r.usage.output_tokens == 4
    assert r.usage.input_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    kind = RESPONSES_MODELS[model]
    if kind == "openai-passthrough":
        sent = last_request(ca, "openai")
        assert sent["path"] == "/v1/responses"
        assert sent["json"]["model"] == "mock-model-2" and sent["json"]["instructions"] == "Be brief."
        assert r.id.startswith("resp_mock")
    elif kind == "openai-translated":
        sent = last_request(ca, "openai")
        assert sent["path"] == "/v1/chat/completions"
        assert sent["json"]["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent["json"]["max_completion_tokens"] == 50
        assert r.usage.input_tokens == 5  # the mock counts words: "Be brief." + "say three words"
        assert r.id.startswith("resp_") and r.model == "mock-model-1"
    elif kind == "anthropic":
        sent = last_request(ca, "anthropic")
        assert sent["json"]["system"] == "Be brief." and sent["json"]["max_tokens"] == 50
    else:
        sent = last_request(ca, "bedrock")
        assert "/converse" in sent["path"] and sent["json"]["inferenceConfig"]["maxTokens"] == 50


@pytest.mark.parametrize("model", RESPONSES_MODELS)
def test_responses_stream(ca, model):
    events = list(oai(ca).responses.create(model=model, input="stream these words please", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for needed in ("response.output_item.added", "response.content_part.added", "response.output_text.done",
                   "response.content_part.done", "response.output_item.done"):
        assert needed in kinds, (needed, kinds)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: stream these words please"
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == text
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens == 5 and final.usage.input_tokens > 0


@pytest.mark.parametrize("model", RESPONSES_MODELS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_responses_function_call_round_trip(ca, model, stream):
    client = oai(ca)
    question = {"role": "user", "content": "What is the weather in Lyon?"}
    if stream:
        events = list(client.responses.create(model=model, input=[question], tools=TOOLS, stream=True))
        deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        args_done = next(e for e in events if e.type == "response.function_call_arguments.done")
        assert json.loads(deltas) == json.loads(args_done.arguments)
        first = events[-1].response
        assert [e.sequence_number for e in events] == list(range(len(events)))
    else:
        first = client.responses.create(model=model, input=[question], tools=TOOLS)
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"location": "Lyon"}
    call = calls[0]
    second = client.responses.create(model=model, tools=TOOLS, input=[
        question,
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "21C and sunny"},
    ])
    assert second.status == "completed" and second.output_text
    if RESPONSES_MODELS[model] == "openai-translated":
        msgs = last_request(ca, "openai")["json"]["messages"]
        assert msgs[-2]["tool_calls"][0]["id"] == call.call_id
        assert msgs[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "21C and sunny"}
    elif RESPONSES_MODELS[model] == "anthropic":
        content = last_request(ca, "anthropic")["json"]["messages"][-1]["content"]
        assert content[0]["type"] == "tool_result" and content[0]["tool_use_id"] == call.call_id


@pytest.mark.parametrize("param, value", [("previous_response_id", "resp_123"), ("store", True),
                                          ("conversation", "conv_1"), ("background", True)])
@pytest.mark.parametrize("model", ["gpt-mock", "gpt-resp"])
def test_responses_stateful_features_are_refused(ca, model, param, value):
    before = len(ca[2]["openai"].requests)
    with pytest.raises(openai.BadRequestError) as e:
        oai(ca).responses.create(model=model, input="x", **{param: value})
    assert e.value.body["param"] == param
    assert "not supported" in e.value.body["message"]
    assert len(ca[2]["openai"].requests) == before  # refused before any provider saw it


def test_responses_hosted_tool_is_refused_by_name(ca):
    with pytest.raises(openai.BadRequestError) as e:
        oai(ca).responses.create(model="claude-mock", input="x", tools=[{"type": "web_search"}])
    assert e.value.body["param"] == "tools[0].type"


# ---- Bedrock InvokeModel ---------------------------------------------------------------------

def bedrock(ca, monkeypatch):
    stack, cert, _ = ca
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", stack.admin_key)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    session = boto3.session.Session(region_name="us-east-1")
    return session.client("bedrock-runtime", endpoint_url=f"https://localhost:{stack.gateway_port}/bedrock",
                          verify=str(cert), config=botocore.config.Config(retries={"max_attempts": 1}))


def claude_body(text, **extra):
    return json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                       "messages": [{"role": "user", "content": text}], **extra})


def test_invoke_model_claude_body_on_openai(ca, monkeypatch):
    out = bedrock(ca, monkeypatch).invoke_model(modelId="gpt-mock", body=claude_body("invoke me please", system="Be brief."))
    assert out["contentType"] == "application/json"
    msg = json.loads(out["body"].read())
    assert msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["content"] == [{"type": "text", "text": "echo: invoke me please"}]
    assert msg["stop_reason"] == "end_turn"
    sent = last_request(ca, "openai")["json"]
    assert sent["model"] == "mock-model-1" and sent["max_tokens"] == 64
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "anthropic_version" not in sent
    # the exact usage the provider reported: the mock counts words
    assert msg["usage"]["output_tokens"] == 4 and msg["usage"]["input_tokens"] == 5


def test_invoke_model_with_response_stream_claude_body_on_openai(ca, monkeypatch):
    out = bedrock(ca, monkeypatch).invoke_model_with_response_stream(modelId="gpt-mock", body=claude_body("stream me now"))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in out["body"]]
    kinds = [c["type"] for c in chunks]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    text = "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta")
    assert text == "echo: stream me now"
    assert chunks[-2]["delta"]["stop_reason"] == "end_turn"
    assert chunks[-2]["usage"]["output_tokens"] == 4
    assert chunks[-1]["amazon-bedrock-invocationMetrics"] == {"inputTokenCount": 3, "outputTokenCount": 4}


def test_invoke_model_claude_tool_use_on_openai(ca, monkeypatch):
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {
        "type": "object", "properties": {"location": {"type": "string"}}}}]
    out = bedrock(ca, monkeypatch).invoke_model(modelId="gpt-mock", body=claude_body("weather in Paris?", tools=tools))
    msg = json.loads(out["body"].read())
    assert msg["stop_reason"] == "tool_use"
    use = next(b for b in msg["content"] if b["type"] == "tool_use")
    assert use["name"] == "get_weather" and use["input"] == {"location": "Paris"}


def test_invoke_model_native_bodies_go_to_bedrock_as_sent(ca, monkeypatch):
    stack, _, mocks = ca
    body = json.dumps({"inputText": "hello there", "dimensions": 8})
    out = bedrock(ca, monkeypatch).invoke_model(modelId="titan-embed", body=body)
    answer = json.loads(out["body"].read())
    assert len(answer["embedding"]) == 8 and answer["inputTextTokenCount"] == 2
    sent = mocks["bedrock"].requests[-1]
    assert sent["path"] == "/model/amazon.titan-embed-text-v2%3A0/invoke"
    assert sent["body"] == body  # byte for byte
    assert sent["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/")
    assert stack.admin_key not in json.dumps(sent)
    # the Claude body too reaches the Bedrock deployment as sent (the mock's answer to it is its own)
    claude = claude_body("as sent")
    try:
        bedrock(ca, monkeypatch).invoke_model(modelId="claude-bedrock", body=claude)
    except Exception:  # noqa: BLE001 - the mock serves embeddings only; the request is what matters
        pass
    sent = mocks["bedrock"].requests[-1]
    assert sent["path"] == "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke"
    assert sent["body"] == claude


def test_invoke_model_native_body_elsewhere_is_a_validation_exception(ca, monkeypatch):
    before = len(ca[2]["openai"].requests)
    client = bedrock(ca, monkeypatch)
    with pytest.raises(client.exceptions.ValidationException) as e:
        client.invoke_model(modelId="gpt-mock", body=json.dumps({"inputText": "hi"}))
    message = e.value.response["Error"]["Message"]
    assert "Amazon Titan" in message and "Bedrock deployment" in message
    assert len(ca[2]["openai"].requests) == before
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke_model(modelId="no-such-model", body=claude_body("x"))
