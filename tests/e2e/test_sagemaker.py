"""SageMaker endpoints (OpenAI-style container) through the gateway: SigV4 for service
`sagemaker` checked by the mock with botocore's signer, InvokeEndpoint, and the response stream
whose PayloadPart frames cut events and UTF-8 characters anywhere."""

from __future__ import annotations

import pytest

import harness
from mocks.sagemaker_mock import ANSWER_PREFIX, MockSageMaker

AWS_ID_ENV = "TG_E2E_SM_AWS_ID"
AWS_SECRET_ENV = "TG_E2E_SM_AWS_SECRET"


@pytest.fixture(scope="module")
def sm_gw(tmp_path_factory):
    if harness.missing_artifacts():
        pytest.skip("e2e stack not built")
    secret = harness.random_secret("sm-secret-")
    mock = MockSageMaker(endpoint="chat-endpoint-1", access_key="AKIDTESTSAGEMAKER", secret_key=secret).start()
    config = {
        "credentials": {"aws": {"aws_access_key_id_env": AWS_ID_ENV, "aws_secret_access_key_env": AWS_SECRET_ENV}},
        "models": [{"name": "sm-chat", "deployments": [{
            "provider": "sagemaker", "region": "us-east-1", "model": "chat-endpoint-1",
            "base_url": f"http://127.0.0.1:{mock.port}", "credential": "aws"}]}],
    }
    stack = harness.GatewayStack(tmp_path_factory.mktemp("tollgate-sm"), config,
                                 {AWS_ID_ENV: "AKIDTESTSAGEMAKER", AWS_SECRET_ENV: secret})
    stack.start()
    try:
        stack.wait_chat_ready("sm-chat")
        yield stack, mock
    finally:
        stack.stop()
        mock.stop()


def test_invoke_endpoint(sm_gw):
    gw, mock = sm_gw
    client = gw.client(gw.admin_key)
    resp = client.chat.completions.create(model="sm-chat", messages=[{"role": "user", "content": "ping one"}])
    assert resp.choices[0].message.content == ANSWER_PREFIX + "naïve ping one"
    last = mock.requests[-1]
    assert last["path"] == "/endpoints/chat-endpoint-1/invocations"
    assert "/us-east-1/sagemaker/aws4_request" in last["headers"]["authorization"]
    assert gw.admin_key not in str(last)


@pytest.mark.parametrize("include_usage", [False, True])
def test_response_stream_is_reassembled(sm_gw, include_usage):
    gw, mock = sm_gw
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
