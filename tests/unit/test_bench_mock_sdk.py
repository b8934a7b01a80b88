"""The benchmark's mock provider (`bench/tollgate-bench`'s `bench-mock`), parsed by the official
SDKs: boto3's `bedrock-runtime` client reads its Converse answer and its ConverseStream events
(AWS event-stream frames, checksums included, against botocore's service model), and the OpenAI
SDK its chat completion and its stream. A benchmark whose mock no client could read would
measure a gateway failing. `make build-debug` builds the binary."""

from __future__ import annotations

import re
import subprocess

import boto3
import openai
import pytest
from botocore.config import Config

import harness

KEY = "sk-bench-mock-unit"


@pytest.fixture(scope="module")
def mock_url():
    binary = harness.target_dir() / "debug" / "bench-mock"
    assert binary.exists(), f"missing {binary} (run `make build-debug`)"
    proc = subprocess.Popen([str(binary), "--port", "0", "--chunks", "3", "--api-key", KEY],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.search(r"READY port=(\d+)", line)
        assert match, line
        yield f"http://127.0.0.1:{match[1]}"
    finally:
        proc.terminate()
        proc.wait(10)


def bedrock(url: str, monkeypatch):
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    return boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="AKIDBENCHMOCK", aws_secret_access_key="bench-mock-secret",
                        config=Config(retries={"total_max_attempts": 1}))


MESSAGES = [{"role": "user", "content": [{"text": "hello"}]}]


def test_boto3_reads_converse_and_converse_stream(mock_url, monkeypatch):
    brt = bedrock(mock_url, monkeypatch)
    out = brt.converse(modelId="m", messages=MESSAGES)
    answer = out["output"]["message"]["content"][0]["text"]
    assert answer.startswith("Envoy is a") and out["stopReason"] == "end_turn"
    assert out["usage"] == {"inputTokens": 412, "outputTokens": 24, "totalTokens": 436}

    events = list(brt.converse_stream(modelId="m", messages=MESSAGES)["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds == ["messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockDelta",
                     "contentBlockStop", "messageStop", "metadata"], kinds
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "Envoy is a"
    assert events[-1]["metadata"]["usage"] == {"inputTokens": 412, "outputTokens": 24, "totalTokens": 436}


def test_openai_reads_the_chat_and_its_stream(mock_url):
    client = openai.OpenAI(base_url=f"{mock_url}/v1", api_key=KEY, max_retries=0)
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
    assert chat.choices[0].message.content.startswith("Envoy is a")
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (412, 20)
    chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Envoy is a"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 432
