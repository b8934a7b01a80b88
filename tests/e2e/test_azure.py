"""Azure OpenAI deployments through the gateway: deployment URL, `api-version` query and the
`api-key` header (never `Authorization`), for chat, streaming and embeddings."""

from __future__ import annotations

import openai
import pytest

import harness
from mocks.openai_mock import MockOpenAI

AZURE_KEY_ENV = "TG_E2E_AZURE_KEY"


@pytest.fixture(scope="module")
def az(tmp_path_factory):
    harness.require_built()
    key = harness.random_secret("azure-")
    mock = MockOpenAI(api_key=key).start()
    config = {
        "credentials": {"azure": {"api_key_env": AZURE_KEY_ENV}},
        "models": [{"name": "gpt-azure", "deployments": [{
            "provider": "azure", "base_url": f"{mock.url}/openai/deployments/my-gpt4o",
            "api_version": "2024-10-21", "model": "gpt-4o", "credential": "azure"}]}],
    }
    stack = harness.GatewayStack(tmp_path_factory.mktemp("tollgate-azure"), config, {AZURE_KEY_ENV: key})
    stack.start()
    try:
        stack.wait_chat_ready("gpt-azure")
        yield stack, mock, key
    finally:
        stack.stop()
        mock.stop()


def test_azure_chat_stream_and_embeddings(az):
    stack, mock, key = az
    client = stack.client(stack.admin_key)
    resp = client.chat.completions.create(model="gpt-azure", messages=[{"role": "user", "content": "via azure"}])
    assert resp.choices[0].message.content == "echo: via azure"
    sent = mock.requests[-1]
    assert sent["path"] == "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
    assert sent["headers"]["api-key"] == key
    assert "authorization" not in sent["headers"]
    chunks = list(client.chat.completions.create(model="gpt-azure", stream=True,
                                                 messages=[{"role": "user", "content": "streamed azure"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: streamed azure"
    emb = client.embeddings.create(model="gpt-azure", input=["a", "b c"], encoding_format="float")
    # The vectors and usage Azure itself returns for the request the gateway sent (openai SDK,
    # direct to the deployment).
    direct = openai.AzureOpenAI(azure_endpoint=mock.url, api_key=key, api_version="2024-10-21",
                                azure_deployment="my-gpt4o", max_retries=0).embeddings.create(
        model="gpt-4o", input=["a", "b c"], encoding_format="float")
    assert [d.embedding for d in emb.data] == [d.embedding for d in direct.data]
    assert emb.usage.prompt_tokens == direct.usage.prompt_tokens == 3
    assert mock.requests[-1]["path"].startswith("/openai/deployments/my-gpt4o/embeddings?api-version=")
