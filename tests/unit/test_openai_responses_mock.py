"""The OpenAI mock's `/v1/responses` (the passthrough target of a `responses_api: true`
deployment) read by the official `openai` SDK: `client.responses.create`, with and without
streaming, with a function tool round trip. The SDK parses every object into
`openai.types.responses` models; `model_validate` checks them strictly against those types."""

from __future__ import annotations

import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from mocks.openai_mock import MockOpenAI

KEY = "sk-mock-responses"
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather",
          "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]


@pytest.fixture()
def mock():
    with MockOpenAI(api_key=KEY) as m:
        yield m


@pytest.fixture()
def client(mock):
    return openai.OpenAI(api_key=KEY, base_url=mock.base_url, max_retries=0)


def test_text(client):
    r = client.responses.create(model="gpt-4o-mini", input="Say hello", instructions="Be brief")
    Response.model_validate(r.model_dump())
    assert r.output_text == "echo: Say hello"
    assert r.status == "completed" and r.id.startswith("resp_mock")
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (4, 3, 7)
    assert r.usage.input_tokens_details.cached_tokens == 0


def test_function_call_round_trip(client):
    r = client.responses.create(model="gpt-4o-mini", input="What is the weather in Lyon?", tools=TOOLS)
    call = r.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"location": "Lyon"}'
    r2 = client.responses.create(model="gpt-4o-mini", tools=TOOLS, input=[
        {"role": "user", "content": "What is the weather in Lyon?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "21C"},
    ])
    assert r2.output_text == "echo: tool said 21C"


def test_stream(client):
    events = list(client.responses.create(model="gpt-4o-mini", input="one two three", stream=True))
    adapter = TypeAdapter(ResponseStreamEvent)
    for e in events:
        adapter.validate_python(e.model_dump())
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: one two three"
    assert events[-1].response.usage.output_tokens == 4


def test_stream_function_call(client):
    events = list(client.responses.create(model="m", input="weather in Paris?", tools=TOOLS, stream=True))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert args == '{"location": "Paris"}'
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == args


def test_stateful_requests_are_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x", previous_response_id="resp_1")
    assert e.value.body["param"] == "previous_response_id"
