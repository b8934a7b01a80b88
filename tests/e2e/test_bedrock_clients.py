"""boto3's `bedrock-runtime` client pointed at the gateway, exactly as a user would: over TLS
(botocore sends a bearer token only over HTTPS), the gateway key in AWS_BEARER_TOKEN_BEDROCK,
to an OpenAI-compatible provider (translated through the pivot) and to a Bedrock provider
(passed through and re-signed with SigV4, checked by the mock with botocore's signer)."""

from __future__ import annotations

import json
import subprocess

import boto3
import botocore.config
import pytest

import harness
from mocks.bedrock_mock import MockBedrock
from mocks.openai_mock import MockOpenAI

OPENAI_KEY_ENV = "TG_E2E_BR_OPENAI_KEY"
AWS_ID_ENV = "TG_E2E_BR_AWS_ID"
AWS_SECRET_ENV = "TG_E2E_BR_AWS_SECRET"
BEDROCK_MODEL_ID = "us.anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture(scope="module")
def br(tmp_path_factory):
    harness.require_built()
    work = tmp_path_factory.mktemp("tollgate-bedrock-clients")
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    openai_key = harness.random_secret("sk-br-")
    aws_secret = harness.random_secret("aws-secret-")
    openai_mock = MockOpenAI(api_key=openai_key).start()
    bedrock_mock = MockBedrock(access_key="AKIDTESTINGRESS", secret_key=aws_secret).start()
    config = {
        "credentials": {"openai": {"api_key_env": OPENAI_KEY_ENV},
                        "aws": {"aws_access_key_id_env": AWS_ID_ENV, "aws_secret_access_key_env": AWS_SECRET_ENV}},
        "models": [
            {"name": "gpt-mock", "deployments": [{"provider": "openai", "base_url": openai_mock.base_url,
                                                  "model": "mock-model-1", "credential": "openai"}]},
            {"name": "claude-bedrock", "deployments": [{"provider": "bedrock", "region": "us-east-1",
                                                        "base_url": f"http://127.0.0.1:{bedrock_mock.port}",
                                                        "model": BEDROCK_MODEL_ID, "credential": "aws"}]},
            {"name": "titan-embed", "deployments": [{"provider": "bedrock", "region": "us-east-1",
                                                     "base_url": f"http://127.0.0.1:{bedrock_mock.port}",
                                                     "model": "amazon.titan-embed-text-v2:0", "credential": "aws"}]},
            {"name": "cohere-embed", "deployments": [{"provider": "bedrock", "region": "us-east-1",
                                                      "base_url": f"http://127.0.0.1:{bedrock_mock.port}",
                                                      "model": "cohere.embed-english-v3", "credential": "aws"}]},
        ],
    }
    env = {OPENAI_KEY_ENV: openai_key, AWS_ID_ENV: "AKIDTESTINGRESS", AWS_SECRET_ENV: aws_secret,
           "TOLLGATE_TLS_CERT_FILE": str(cert), "TOLLGATE_TLS_KEY_FILE": str(key)}
    stack = harness.GatewayStack(work, config, env)
    stack.start()
    try:
        stack.wait_chat_ready("gpt-mock")
        stack.wait_chat_ready("claude-bedrock")
        yield stack, cert, openai_mock, bedrock_mock
    finally:
        stack.stop()
        openai_mock.stop()
        bedrock_mock.stop()


def client(br, monkeypatch, key=None):
    stack, cert, _, _ = br
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", key or stack.admin_key)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    session = boto3.session.Session(region_name="us-east-1")
    return session.client("bedrock-runtime", endpoint_url=f"https://localhost:{stack.gateway_port}/bedrock",
                          verify=str(cert), config=botocore.config.Config(retries={"max_attempts": 1}))


def user(text):
    return [{"role": "user", "content": [{"text": text}]}]


def test_converse_to_an_openai_provider(br, monkeypatch):
    _, _, openai_mock, _ = br
    resp = client(br, monkeypatch).converse(modelId="gpt-mock", messages=user("boto three"),
                                            system=[{"text": "be brief"}],
                                            inferenceConfig={"maxTokens": 50, "temperature": 0.2})
    assert resp["output"]["message"]["content"][0]["text"] == "echo: boto three"
    assert resp["stopReason"] == "end_turn"
    assert resp["usage"]["outputTokens"] > 0
    sent = openai_mock.requests[-1]
    assert sent["json"]["model"] == "mock-model-1"
    assert sent["json"]["messages"][0] == {"role": "system", "content": "be brief"}


def test_converse_stream_to_an_openai_provider(br, monkeypatch):
    resp = client(br, monkeypatch).converse_stream(modelId="gpt-mock", messages=user("streamed words here"))
    events = list(resp["stream"])
    text = "".join(e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e)
    assert text == "echo: streamed words here"
    assert any("messageStop" in e for e in events)
    usage = next(e["metadata"]["usage"] for e in events if "metadata" in e)
    assert usage["outputTokens"] > 0 and usage["totalTokens"] >= usage["outputTokens"]


def test_tool_use_round_trip(br, monkeypatch):
    c = client(br, monkeypatch)
    tools = {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather in a city",
                                     "inputSchema": {"json": {"type": "object",
                                                              "properties": {"location": {"type": "string"}}}}}}]}
    first = c.converse(modelId="gpt-mock", messages=user("what is the weather in Paris"), toolConfig=tools)
    assert first["stopReason"] == "tool_use"
    tool_use = next(b["toolUse"] for b in first["output"]["message"]["content"] if "toolUse" in b)
    assert tool_use["name"] == "get_weather" and isinstance(tool_use["input"], dict)
    history = user("what is the weather in Paris") + [first["output"]["message"], {
        "role": "user", "content": [{"toolResult": {"toolUseId": tool_use["toolUseId"], "content": [{"text": "sunny"}]}}]}]
    second = c.converse(modelId="gpt-mock", messages=history, toolConfig=tools)
    assert second["stopReason"] == "end_turn"
    assert second["output"]["message"]["content"][0]["text"]


def test_converse_to_a_bedrock_provider_is_resigned(br, monkeypatch):
    stack, _, _, bedrock_mock = br
    for stream in (False, True):
        c = client(br, monkeypatch)
        if stream:
            events = list(c.converse_stream(modelId="claude-bedrock", messages=user("through bedrock"))["stream"])
            text = "".join(e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e)
        else:
            resp = c.converse(modelId="claude-bedrock", messages=user("through bedrock"))
            text = resp["output"]["message"]["content"][0]["text"]
        assert "through bedrock" in text
        sent = bedrock_mock.requests[-1]
        # the provider got the provider's model id, percent-encoded, and the gateway's SigV4 (the
        # mock answers 403 to a bad signature), never the client's gateway key
        assert "us.anthropic.claude-3-5-haiku-20241022-v1%3A0" in sent["path"]
        assert sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTESTINGRESS/")
        assert stack.admin_key not in str(sent)


def test_errors_map_to_aws_exceptions(br, monkeypatch):
    c = client(br, monkeypatch)
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.converse(modelId="no-such-model", messages=user("x"))
    bad = client(br, monkeypatch, key="tg-" + "0" * 64)
    with pytest.raises(bad.exceptions.AccessDeniedException):
        bad.converse(modelId="gpt-mock", messages=user("x"))
    with pytest.raises(c.exceptions.ValidationException):
        c.converse(modelId="gpt-mock", messages=[])


def test_openai_embeddings_on_bedrock_titan(br):
    import openai

    stack, _, _, bedrock_mock = br
    client = stack.client(stack.admin_key)
    # the SDK asks for base64 by default; the gateway encodes Titan's floats accordingly
    resp = client.embeddings.create(model="titan-embed", input="hello embeddings")
    floats = client.embeddings.create(model="titan-embed", input="hello embeddings", encoding_format="float")
    sent = bedrock_mock.requests[-1]
    assert sent["path"] == "/model/amazon.titan-embed-text-v2%3A0/invoke"
    assert sent["json"] == {"inputText": "hello embeddings"}
    # Compared with what Bedrock itself answers to the request the gateway sent (boto3, direct).
    direct = direct_invoke(bedrock_mock, "amazon.titan-embed-text-v2:0", sent["json"])
    assert floats.data[0].embedding == direct["body"]["embedding"]
    assert [round(x, 5) for x in resp.data[0].embedding] == [round(x, 5) for x in direct["body"]["embedding"]]
    assert floats.usage.prompt_tokens == direct["body"]["inputTextTokenCount"] == 2
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="titan-embed", input=["a", "b"])
    assert err.value.body["param"] == "input"


def direct_invoke(bedrock_mock, model_id: str, body: dict) -> dict:
    """The Bedrock mock's own answer to `body`, through boto3 (SigV4, no gateway)."""
    brt = boto3.client("bedrock-runtime", endpoint_url=bedrock_mock.url, region_name="us-east-1",
                       aws_access_key_id=bedrock_mock.access_key,
                       aws_secret_access_key=bedrock_mock.secret_key)
    out = brt.invoke_model(modelId=model_id, body=json.dumps(body).encode())
    return {"body": json.loads(out["body"].read()), "headers": out["ResponseMetadata"]["HTTPHeaders"]}


def test_openai_embeddings_on_bedrock_cohere_report_usage(br, monkeypatch):
    """Cohere Embed on Bedrock reports its token count only in the
    `X-Amzn-Bedrock-Input-Token-Count` response header: the OpenAI client gets it as usage, and
    the vectors Bedrock returned."""
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    stack, _, _, bedrock_mock = br
    client = stack.client(stack.admin_key)
    texts = ["cohere one two", "three"]
    floats = client.embeddings.create(model="cohere-embed", input=texts, encoding_format="float")
    b64 = client.embeddings.create(model="cohere-embed", input=texts)
    sent = bedrock_mock.requests[-1]
    assert sent["path"] == "/model/cohere.embed-english-v3/invoke"
    assert sent["json"]["texts"] == texts
    direct = direct_invoke(bedrock_mock, "cohere.embed-english-v3", sent["json"])
    count = int(direct["headers"]["x-amzn-bedrock-input-token-count"])
    assert count == 4
    for resp in (floats, b64):
        assert (resp.usage.prompt_tokens, resp.usage.total_tokens) == (count, count)
        assert [d.index for d in resp.data] == [0, 1]
    assert [d.embedding for d in floats.data] == direct["body"]["embeddings"]
    assert [[round(x, 5) for x in d.embedding] for d in b64.data] == \
        [[round(x, 5) for x in v] for v in direct["body"]["embeddings"]]
