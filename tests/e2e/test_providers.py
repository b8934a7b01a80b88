"""Every client API to every provider, end to end: real Envoy + control plane + provider filter,
the mock OpenAI, Bedrock (SigV4 checked with botocore) and Anthropic providers, and the official
`openai`, `anthropic` and `langchain-openai` clients. (Failover, provider failures and quotas of
a provider: `test_provider_failures.py`.)

The mocks answer `echo: <last user text>` and count words as tokens, so each test knows the exact
answer and usage to expect; a unique token in each prompt finds that test's provider requests.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import anthropic
import pytest

from e2e_util import unique
from providers_util import (ANTHROPIC, ANTHROPIC_MODEL_ID, ANTHROPIC_WEATHER_TOOL, BEDROCK, BEDROCK_API_KEY,
                            BEDROCK_ARN, BEDROCK_ARN_MODEL, BEDROCK_MODEL_ID, OPENAI, OPENAI_MODEL_ID,
                            WEATHER_TOOL, ProvidersStack, ant, assert_anthropic_auth, assert_no_client_key,
                            assert_no_secrets_left, assert_sigv4_valid, bedrock_path, oai, pgw, providers,
                            stream_text, stream_tool_calls, with_token, words)

__all__ = ["pgw", "providers"]  # the fixtures, imported for pytest


# ---- openai SDK → Bedrock ----------------------------------------------------------------------

def test_openai_sdk_to_bedrock_chat(providers):
    p = providers
    token = unique()
    messages = [{"role": "system", "content": "be terse"},
                {"role": "user", "content": f"hello {token}"},
                {"role": "assistant", "content": "hi there friend"},
                {"role": "user", "content": f"again {token} please"}]
    resp = oai(p).chat.completions.create(model=BEDROCK, messages=messages, max_tokens=50,
                                          temperature=0.2)

    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == f"echo: again {token} please"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model in (BEDROCK, BEDROCK_MODEL_ID)
    # The mock's usage: every word of system and messages in, the answer's words out.
    prompt = words("be terse", f"hello {token}", "hi there friend", f"again {token} please")
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == \
        (prompt, 4, prompt + 4)

    [record] = with_token(p.bedrock_mock, token)
    # The `:` of the model id is percent-encoded in the path that reached Bedrock.
    assert record["path"] == bedrock_path(BEDROCK_MODEL_ID, "converse")
    assert "%3A" in record["path"] and ":" not in record["path"]
    assert record["model_id"] == BEDROCK_MODEL_ID
    body = record["json"]
    assert body["system"] == [{"text": "be terse"}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [{"text": f"hello {token}"}]
    assert body["messages"][1]["content"] == [{"text": "hi there friend"}]
    assert body["inferenceConfig"]["maxTokens"] == 50
    assert body["inferenceConfig"]["temperature"] == pytest.approx(0.2)
    assert "model" not in body and "toolConfig" not in body
    assert record["headers"]["content-type"] == "application/json"
    assert_sigv4_valid(p, record)
    assert_no_client_key(p, record)


def test_openai_sdk_to_bedrock_stream(providers):
    p = providers
    client = oai(p)
    token = unique()
    chunks = list(client.chat.completions.create(
        model=BEDROCK, messages=[{"role": "user", "content": f"stream one two {token}"}],
        stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert stream_text(chunks) == f"echo: stream one two {token}"
    assert all(c.choices for c in chunks), "a usage chunk the client did not ask for"
    assert all(c.usage is None for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]
    assert len({c.id for c in chunks}) == 1

    token2 = unique()
    chunks = list(client.chat.completions.create(
        model=BEDROCK, messages=[{"role": "user", "content": f"stream one two {token2}"}],
        stream=True, stream_options={"include_usage": True}))
    assert stream_text(chunks) == f"echo: stream one two {token2}"
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert usage_chunks == [chunks[-1]] and chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens,
            chunks[-1].usage.total_tokens) == (4, 5, 9)

    for t in (token, token2):
        [record] = with_token(p.bedrock_mock, t)
        assert record["path"] == bedrock_path(BEDROCK_MODEL_ID, "converse-stream")
        assert record["headers"]["accept"] == "application/vnd.amazon.eventstream"
        assert "stream" not in record["json"] and "stream_options" not in record["json"]
        assert_sigv4_valid(p, record)


def test_openai_sdk_to_bedrock_tool_round_trip(providers):
    p = providers
    client = oai(p)
    token = unique()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"you report the weather {token}"},
        {"role": "user", "content": "what is the weather in Paris"}]
    first = client.chat.completions.create(model=BEDROCK, messages=messages,
                                           tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    assert call.id

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny and 21C"})
    final = client.chat.completions.create(model=BEDROCK, messages=messages,
                                           tools=[WEATHER_TOOL])
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "echo: sunny and 21C"
    assert not final.choices[0].message.tool_calls

    # Streaming: the tool call arrives in pieces that reassemble to the same call.
    chunks = list(client.chat.completions.create(model=BEDROCK, messages=messages[:2],
                                                 tools=[WEATHER_TOOL], stream=True))
    [streamed] = stream_tool_calls(chunks)
    assert streamed["name"] == "get_weather" and streamed["id"]
    assert json.loads(streamed["arguments"]) == {"location": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == \
        ["tool_calls"]

    records = with_token(p.bedrock_mock, token)
    assert [urlsplit(r["path"]).path.rsplit("/", 1)[1] for r in records] == \
        ["converse", "converse", "converse-stream"]
    spec = records[0]["json"]["toolConfig"]["tools"][0]["toolSpec"]
    assert spec["name"] == "get_weather"
    assert spec["inputSchema"]["json"] == WEATHER_TOOL["function"]["parameters"]
    second = records[1]["json"]
    assert "toolConfig" in second
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert second["messages"][1]["content"] == [{"toolUse": {
        "toolUseId": call.id, "name": "get_weather", "input": {"location": "Paris"}}}]
    assert second["messages"][2]["content"] == [{"toolResult": {
        "toolUseId": call.id, "content": [{"text": "sunny and 21C"}]}}]
    for record in records:
        assert_sigv4_valid(p, record)


def test_bedrock_model_id_arn_is_percent_encoded(providers):
    p = providers
    token = unique()
    resp = oai(p).chat.completions.create(model=BEDROCK_ARN_MODEL,
                                          messages=[{"role": "user", "content": token}])
    assert resp.choices[0].message.content == f"echo: {token}"
    [record] = with_token(p.bedrock_mock, token)
    assert record["path"] == bedrock_path(BEDROCK_ARN, "converse")
    assert "%2F" in record["path"] and "%3A" in record["path"]
    assert record["model_id"] == BEDROCK_ARN
    assert_sigv4_valid(p, record)


def test_bedrock_api_key_credential(providers):
    p = providers
    token = unique()
    resp = oai(p).chat.completions.create(model=BEDROCK_API_KEY,
                                          messages=[{"role": "user", "content": token}])
    assert resp.choices[0].message.content == f"echo: {token}"
    [record] = with_token(p.bedrock_mock, token)
    assert record["headers"]["authorization"] == f"Bearer {p.secrets.bedrock_api_key}"
    assert "x-amz-security-token" not in record["headers"]
    assert_no_client_key(p, record)


# ---- openai SDK → Anthropic --------------------------------------------------------------------

def test_openai_sdk_to_anthropic_chat(providers):
    p = providers
    token = unique()
    messages = [{"role": "system", "content": "be terse"},
                {"role": "user", "content": f"hello {token}"},
                {"role": "assistant", "content": "hi there"},
                {"role": "user", "content": f"again {token}"}]
    resp = oai(p).chat.completions.create(model=ANTHROPIC, messages=messages, max_tokens=64)
    assert resp.choices[0].message.content == f"echo: again {token}"
    assert resp.choices[0].finish_reason == "stop"
    prompt = words("be terse", f"hello {token}", "hi there", f"again {token}")
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == \
        (prompt, 3, prompt + 3)

    [record] = with_token(p.anthropic_mock, token)
    assert record["path"] == "/v1/messages"
    body = record["json"]
    assert body["model"] == ANTHROPIC_MODEL_ID
    assert body["system"] == "be terse"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["max_tokens"] == 64
    assert_anthropic_auth(p, record)


def test_openai_sdk_to_anthropic_stream(providers):
    p = providers
    client = oai(p)
    token = unique()
    chunks = list(client.chat.completions.create(
        model=ANTHROPIC, messages=[{"role": "user", "content": f"stream this {token}"}],
        stream=True))
    assert stream_text(chunks) == f"echo: stream this {token}"
    assert all(c.choices and c.usage is None for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]

    token2 = unique()
    chunks = list(client.chat.completions.create(
        model=ANTHROPIC, messages=[{"role": "user", "content": f"stream this {token2}"}],
        stream=True, stream_options={"include_usage": True}))
    assert stream_text(chunks) == f"echo: stream this {token2}"
    assert [c for c in chunks if c.usage is not None] == [chunks[-1]]
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 4)

    for t in (token, token2):
        [record] = with_token(p.anthropic_mock, t)
        assert record["json"]["stream"] is True
        assert record["json"]["max_tokens"] >= 1  # required by Anthropic, filled in
        assert_anthropic_auth(p, record)


def test_openai_sdk_to_anthropic_tool_round_trip(providers):
    p = providers
    client = oai(p)
    token = unique()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"weather bot {token}"},
        {"role": "user", "content": "what is the weather in Oslo"}]
    first = client.chat.completions.create(model=ANTHROPIC, messages=messages,
                                           tools=[WEATHER_TOOL])
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Oslo"}

    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "snowing"})
    final = client.chat.completions.create(model=ANTHROPIC, messages=messages,
                                           tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == "echo: snowing"

    chunks = list(client.chat.completions.create(model=ANTHROPIC, messages=messages[:2],
                                                 tools=[WEATHER_TOOL], stream=True))
    [streamed] = stream_tool_calls(chunks)
    assert streamed["name"] == "get_weather"
    assert json.loads(streamed["arguments"]) == {"location": "Oslo"}

    records = with_token(p.anthropic_mock, token)
    assert len(records) == 3
    tool = records[0]["json"]["tools"][0]
    assert tool["name"] == "get_weather"
    assert tool["input_schema"] == WEATHER_TOOL["function"]["parameters"]
    second = records[1]["json"]["messages"]
    assert second[1]["content"] == [{"type": "tool_use", "id": call.id, "name": "get_weather",
                                     "input": {"location": "Oslo"}}]
    assert second[2]["role"] == "user"
    [result] = second[2]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call.id
    assert result["content"] in ("snowing", [{"type": "text", "text": "snowing"}])
    for record in records:
        assert_anthropic_auth(p, record)


# ---- anthropic SDK → Bedrock, Anthropic, OpenAI ------------------------------------------------

ANTHROPIC_CLIENT_TARGETS = [BEDROCK, ANTHROPIC, OPENAI]


def target_mock(p: ProvidersStack, model: str) -> Any:
    return {BEDROCK: p.bedrock_mock, ANTHROPIC: p.anthropic_mock, OPENAI: p.openai_mock}[model]


def assert_target_request(p: ProvidersStack, model: str, record: dict[str, Any]) -> None:
    if model == BEDROCK:
        assert record["path"] == bedrock_path(BEDROCK_MODEL_ID, "converse") or \
            record["path"] == bedrock_path(BEDROCK_MODEL_ID, "converse-stream")
        assert_sigv4_valid(p, record)
    elif model == ANTHROPIC:
        assert record["json"]["model"] == ANTHROPIC_MODEL_ID
        assert_anthropic_auth(p, record)
    else:
        assert record["json"]["model"] == OPENAI_MODEL_ID
        assert record["headers"]["authorization"] == f"Bearer {p.secrets.openai_key}"
        assert "x-api-key" not in record["headers"]
    assert_no_client_key(p, record)


@pytest.mark.parametrize("model", ANTHROPIC_CLIENT_TARGETS)
def test_anthropic_sdk_create(providers, model):
    p = providers
    token = unique()
    msg = ant(p).messages.create(model=model, max_tokens=100, system="be terse",
                                 messages=[{"role": "user", "content": f"hello {token}"}])
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == f"echo: hello {token}"
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (4, 3)

    [record] = with_token(target_mock(p, model), token)
    assert_target_request(p, model, record)
    if model == BEDROCK:
        assert record["json"]["system"] == [{"text": "be terse"}]
        assert record["json"]["inferenceConfig"]["maxTokens"] == 100
    elif model == OPENAI:
        assert record["json"]["messages"][0] == {"role": "system", "content": "be terse"}


@pytest.mark.parametrize("model", ANTHROPIC_CLIENT_TARGETS)
def test_anthropic_sdk_stream(providers, model):
    p = providers
    token = unique()
    with ant(p).messages.stream(model=model, max_tokens=100,
                                messages=[{"role": "user", "content": f"stream a b {token}"}]) \
            as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 4, pieces  # chunk by chunk, not one block
    assert "".join(pieces) == f"echo: stream a b {token}"
    assert final.content[0].text == f"echo: stream a b {token}"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (4, 5)

    [record] = with_token(target_mock(p, model), token)
    assert_target_request(p, model, record)


@pytest.mark.parametrize("model", ANTHROPIC_CLIENT_TARGETS)
def test_anthropic_sdk_tool_use_round_trip(providers, model):
    p = providers
    client = ant(p)
    token = unique()
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": f"{token}: what is the weather in Rome"}]
    first = client.messages.create(model=model, max_tokens=200, tools=[ANTHROPIC_WEATHER_TOOL],
                                   messages=messages)
    assert first.stop_reason == "tool_use"
    [tool_use] = [b for b in first.content if b.type == "tool_use"]
    assert tool_use.name == "get_weather"
    assert tool_use.input == {"location": "Rome"}
    assert tool_use.id

    messages.append({"role": "assistant",
                     "content": [b.model_dump(exclude_none=True) for b in first.content]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tool_use.id, "content": "warm and dry"}]})
    final = client.messages.create(model=model, max_tokens=200, tools=[ANTHROPIC_WEATHER_TOOL],
                                   messages=messages)
    assert final.stop_reason == "end_turn"
    assert final.content[0].type == "text"
    # The OpenAI mock echoes the last *user* message (the tool result is a `tool` message).
    expected = (f"echo: {token}: what is the weather in Rome" if model == OPENAI
                else "echo: warm and dry")
    assert final.content[0].text == expected

    with client.messages.stream(model=model, max_tokens=200, tools=[ANTHROPIC_WEATHER_TOOL],
                                messages=messages[:1]) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use"
    [streamed_use] = [b for b in streamed.content if b.type == "tool_use"]
    assert streamed_use.name == "get_weather"
    assert streamed_use.input == {"location": "Rome"}

    records = with_token(target_mock(p, model), token)
    assert len(records) == 3
    for record in records:
        assert_target_request(p, model, record)
    # The tool result reached the provider in its own format.
    body = records[1]["json"]
    if model == BEDROCK:
        assert body["messages"][2]["content"] == [{"toolResult": {
            "toolUseId": tool_use.id, "content": [{"text": "warm and dry"}]}}]
    elif model == ANTHROPIC:
        assert body["messages"][2]["content"][0]["tool_use_id"] == tool_use.id
    else:
        assert body["messages"][-1] == {"role": "tool", "tool_call_id": tool_use.id,
                                        "content": "warm and dry"}


def test_anthropic_sdk_unknown_model_is_not_found(providers):
    p = providers
    with pytest.raises(anthropic.NotFoundError) as info:
        ant(p).messages.create(model="no-such-model", max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    err = info.value
    assert err.status_code == 404
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == "not_found_error"
    assert "no-such-model" in err.body["error"]["message"]
    assert err.response.headers["content-type"].startswith("application/json")
    p.seen(err.response.text)


def test_anthropic_sdk_wrong_gateway_key_is_authentication_error(providers):
    p = providers
    client = anthropic.Anthropic(base_url=p.stack.gateway_url, api_key="tg-" + "0" * 64,
                                 max_retries=0, timeout=20.0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(model=BEDROCK, max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 401
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "authentication_error"


def test_anthropic_sdk_to_bedrock_stop_sequence_reason(providers):
    """Bedrock's stopReason `stop_sequence` survives the OpenAI pivot (as its
    `native_finish_reason`), streaming or not."""
    p = providers
    token = unique()
    msg = ant(p).messages.create(model=BEDROCK, max_tokens=100, stop_sequences=["STOPHERE"],
                                 messages=[{"role": "user",
                                            "content": f"one {token} STOPHERE two"}])
    [record] = with_token(p.bedrock_mock, token)
    assert record["json"]["inferenceConfig"]["stopSequences"] == ["STOPHERE"]
    assert msg.content[0].text.strip() == f"echo: one {token}"
    assert msg.stop_reason == "stop_sequence"  # what Anthropic (and Bedrock) report

    token = unique()
    with ant(p).messages.stream(model=BEDROCK, max_tokens=100, stop_sequences=["STOPHERE"],
                                messages=[{"role": "user",
                                           "content": f"one {token} STOPHERE two"}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].text.strip() == f"echo: one {token}"
    assert final.stop_reason == "stop_sequence"


# ---- langchain-openai → Bedrock ----------------------------------------------------------------

def test_langchain_openai_to_bedrock(providers):
    from langchain_openai import ChatOpenAI

    p = providers
    llm = ChatOpenAI(base_url=p.stack.base_url, api_key=p.key, model=BEDROCK, max_retries=0,
                     timeout=20)
    token = unique()
    answer = llm.invoke(f"hello {token}")
    assert answer.content == f"echo: hello {token}"
    assert answer.usage_metadata["input_tokens"] == 2
    assert answer.usage_metadata["output_tokens"] == 3

    token2 = unique()
    parts = list(llm.stream(f"stream {token2} now"))
    assert len(parts) >= 4
    assert "".join(part.content for part in parts) == f"echo: stream {token2} now"

    token3 = unique()

    def get_weather(location: str) -> str:
        """The current weather in a city."""
        return "sunny"

    tool_msg = llm.bind_tools([get_weather]).invoke(f"{token3}: what is the weather in Lima")
    [call] = tool_msg.tool_calls
    assert call["name"] == "get_weather"
    assert call["args"] == {"location": "Lima"}

    for t in (token, token2, token3):
        [record] = with_token(p.bedrock_mock, t)
        assert_sigv4_valid(p, record)
    [tool_record] = with_token(p.bedrock_mock, token3)
    assert tool_record["json"]["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"


# ---- secrets (last: checks everything the module left behind) -----------------------------------

def test_provider_secrets_never_leak(providers):
    assert_no_secrets_left(providers, min_visible=20, min_records=30)
