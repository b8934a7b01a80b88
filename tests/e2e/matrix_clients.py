"""The client APIs of the conformance matrix (`test_matrix.py`), each driven by its official SDK.

A client API turns one neutral conversation into its SDK's call and the answer back into an
`Outcome` (text, finish reason in that API's words, usage in that API's fields, tool calls), or
a `Refusal` (status, the error as the SDK raised it). Adding a client API is one `ClientApi`
subclass and one entry in `CLIENT_APIS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
from botocore.exceptions import ClientError, EventStreamError

QUESTION = "What is the weather in Paris?"
TOOL_RESULT = "sunny and 21 degrees"
TOOL = {"name": "get_weather", "description": "The weather for a city",
        "schema": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Outcome:
    text: str
    finish: str
    usage: dict[str, int]           # the client API's own usage fields
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class Refusal:
    status: int
    message: str                    # the error as the client's SDK reports it
    mid_stream: bool = False        # raised while reading a 200 stream


# A neutral conversation: ("user", text) | ("tool_call", ToolCall) | ("tool_result", id, text)
Turn = tuple


class ClientApi:
    name = ""
    finish_text = ""
    finish_tool = ""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx  # the matrix stack (gateway URLs, key, TLS cert)

    def call(self, model: str, turns: list[Turn], tools: bool, stream: bool) -> Outcome | Refusal:
        raise NotImplementedError

    def usage_pair(self, usage: dict[str, int]) -> tuple[int, int]:
        """(input, output) tokens from this API's usage fields."""
        raise NotImplementedError


class OpenAIChat(ClientApi):
    name, finish_text, finish_tool = "openai-chat", "stop", "tool_calls"

    def call(self, model, turns, tools, stream):
        client = openai.OpenAI(base_url=self.ctx.stack.base_url, api_key=self.ctx.key,
                               max_retries=0, timeout=30)
        messages: list[dict[str, Any]] = []
        for turn in turns:
            if turn[0] == "user":
                messages.append({"role": "user", "content": turn[1]})
            elif turn[0] == "tool_call":
                call = turn[1]
                messages.append({"role": "assistant", "content": None, "tool_calls": [{
                    "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}]})
            else:
                messages.append({"role": "tool", "tool_call_id": turn[1], "content": turn[2]})
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = [{"type": "function", "function": {
                "name": TOOL["name"], "description": TOOL["description"],
                "parameters": TOOL["schema"]}}]
        try:
            if not stream:
                resp = client.chat.completions.create(model=model, messages=messages, **kwargs)
                choice = resp.choices[0]
                calls = [ToolCall(c.id, c.function.name, json.loads(c.function.arguments))
                         for c in choice.message.tool_calls or []]
                return Outcome(choice.message.content or "", choice.finish_reason,
                               resp.usage.model_dump(), calls)
            stream_resp = client.chat.completions.create(
                model=model, messages=messages, stream=True,
                stream_options={"include_usage": True}, **kwargs)
        except openai.APIStatusError as err:
            return Refusal(err.status_code, json.dumps(err.body))
        chunks = []
        try:
            for chunk in stream_resp:
                chunks.append(chunk)
        except openai.APIError as err:  # the terminal `data: {"error": ...}` event
            return Refusal(200, json.dumps(err.body), mid_stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finishes = [c.choices[0].finish_reason for c in chunks
                    if c.choices and c.choices[0].finish_reason]
        assert len(finishes) == 1, finishes
        usages = [c.usage for c in chunks if c.usage is not None]
        assert len(usages) == 1, "exactly one usage chunk when include_usage is set"
        deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        calls = []
        if deltas:
            args = "".join(d.function.arguments or "" for d in deltas)
            calls = [ToolCall(deltas[0].id, deltas[0].function.name, json.loads(args))]
        return Outcome(text, finishes[0], usages[0].model_dump(), calls)

    def usage_pair(self, usage):
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        return usage["prompt_tokens"], usage["completion_tokens"]


class AnthropicMessages(ClientApi):
    name, finish_text, finish_tool = "anthropic-messages", "end_turn", "tool_use"

    def call(self, model, turns, tools, stream):
        client = anthropic.Anthropic(base_url=self.ctx.stack.gateway_url, api_key=self.ctx.key,
                                     max_retries=0, timeout=30)
        messages: list[dict[str, Any]] = []
        for turn in turns:
            if turn[0] == "user":
                messages.append({"role": "user", "content": turn[1]})
            elif turn[0] == "tool_call":
                call = turn[1]
                messages.append({"role": "assistant", "content": [{
                    "type": "tool_use", "id": call.id, "name": call.name,
                    "input": call.arguments}]})
            else:
                messages.append({"role": "user", "content": [{
                    "type": "tool_result", "tool_use_id": turn[1], "content": turn[2]}]})
        kwargs: dict[str, Any] = {"model": model, "max_tokens": 256, "messages": messages}
        if tools:
            kwargs["tools"] = [{"name": TOOL["name"], "description": TOOL["description"],
                                "input_schema": TOOL["schema"]}]
        kinds: list[str] = []
        try:
            if stream:
                with client.messages.stream(**kwargs) as events:
                    for event in events:
                        kinds.append(event.type)
                    msg = events.get_final_message()
                assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
            else:
                msg = client.messages.create(**kwargs)
        except anthropic.APIStatusError as err:  # an `event: error` too, once kinds started
            return Refusal(err.status_code, json.dumps(err.body), mid_stream=bool(kinds))
        text = "".join(b.text for b in msg.content if b.type == "text")
        calls = [ToolCall(b.id, b.name, b.input) for b in msg.content if b.type == "tool_use"]
        return Outcome(text, msg.stop_reason, msg.usage.model_dump(exclude_none=True), calls)

    def usage_pair(self, usage):
        return usage["input_tokens"], usage["output_tokens"]


class BedrockConverse(ClientApi):
    """Converse and ConverseStream through boto3's `bedrock-runtime` (bearer token, HTTPS)."""
    name, finish_text, finish_tool = "bedrock-converse", "end_turn", "tool_use"

    def call(self, model, turns, tools, stream):
        client = self.ctx.bedrock_client()
        messages: list[dict[str, Any]] = []
        for turn in turns:
            if turn[0] == "user":
                messages.append({"role": "user", "content": [{"text": turn[1]}]})
            elif turn[0] == "tool_call":
                call = turn[1]
                messages.append({"role": "assistant", "content": [{"toolUse": {
                    "toolUseId": call.id, "name": call.name, "input": call.arguments}}]})
            else:
                messages.append({"role": "user", "content": [{"toolResult": {
                    "toolUseId": turn[1], "content": [{"text": turn[2]}]}}]})
        kwargs: dict[str, Any] = {"modelId": model, "messages": messages}
        if tools:
            kwargs["toolConfig"] = {"tools": [{"toolSpec": {
                "name": TOOL["name"], "description": TOOL["description"],
                "inputSchema": {"json": TOOL["schema"]}}}]}
        try:
            if not stream:
                out = client.converse(**kwargs)
                content = out["output"]["message"]["content"]
                text = "".join(b.get("text", "") for b in content)
                calls = [ToolCall(b["toolUse"]["toolUseId"], b["toolUse"]["name"],
                                  b["toolUse"]["input"]) for b in content if "toolUse" in b]
                return Outcome(text, out["stopReason"], out["usage"], calls)
            stream_resp = client.converse_stream(**kwargs)["stream"]
        except ClientError as err:
            return Refusal(err.response["ResponseMetadata"]["HTTPStatusCode"],
                           f'{err.response["Error"]["Code"]}: {err.response["Error"]["Message"]}')
        events = []
        try:
            for event in stream_resp:
                events.append(event)
        except EventStreamError as err:  # an exception frame inside the 200 stream
            return Refusal(200, f'{err.response["Error"]["Code"]}: '
                                f'{err.response["Error"]["Message"]}', mid_stream=True)
        text = "".join(e["contentBlockDelta"]["delta"].get("text", "") for e in events
                       if "contentBlockDelta" in e)
        starts = [e["contentBlockStart"]["start"]["toolUse"] for e in events
                  if "contentBlockStart" in e and "toolUse" in e["contentBlockStart"]["start"]]
        calls = []
        if starts:
            args = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events
                           if "contentBlockDelta" in e and "toolUse" in e["contentBlockDelta"]["delta"])
            calls = [ToolCall(starts[0]["toolUseId"], starts[0]["name"], json.loads(args))]
        [stop] = [e["messageStop"]["stopReason"] for e in events if "messageStop" in e]
        [usage] = [e["metadata"]["usage"] for e in events if "metadata" in e]
        return Outcome(text, stop, usage, calls)

    def usage_pair(self, usage):
        assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
        return usage["inputTokens"], usage["outputTokens"]


class OpenAIResponses(ClientApi):
    """The Responses API (`client.responses.create`). It has no finish reason: an answer is
    `completed`, a function call shows as a `function_call` output item, a stop short of the end
    as `incomplete` with its reason (`content_filter`)."""
    name, finish_text, finish_tool = "openai-responses", "completed", "function_call"

    def call(self, model, turns, tools, stream):
        client = openai.OpenAI(base_url=self.ctx.stack.base_url, api_key=self.ctx.key,
                               max_retries=0, timeout=30)
        items: list[dict[str, Any]] = []
        for turn in turns:
            if turn[0] == "user":
                items.append({"role": "user", "content": turn[1]})
            elif turn[0] == "tool_call":
                call = turn[1]
                items.append({"type": "function_call", "call_id": call.id, "name": call.name,
                              "arguments": json.dumps(call.arguments)})
            else:
                items.append({"type": "function_call_output", "call_id": turn[1], "output": turn[2]})
        kwargs: dict[str, Any] = {"model": model, "input": items}
        if tools:
            kwargs["tools"] = [{"type": "function", "name": TOOL["name"],
                                "description": TOOL["description"], "parameters": TOOL["schema"]}]
        events: list[Any] = []
        try:
            if not stream:
                resp = client.responses.create(**kwargs)
            else:
                for event in client.responses.create(stream=True, **kwargs):
                    events.append(event)
                    if event.type in ("error", "response.failed"):
                        return Refusal(200, json.dumps(event.model_dump()), mid_stream=True)
                [done] = [e for e in events if e.type in ("response.completed", "response.incomplete")]
                resp = done.response
                # The event sequence as OpenAI sends it: numbered, created first, done last.
                assert events[0].type == "response.created", events[0].type
                numbers = [e.sequence_number for e in events]
                assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
                deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
                assert deltas == resp.output_text, (deltas, resp.output_text)
        except openai.APIStatusError as err:
            return Refusal(err.status_code, json.dumps(err.body))
        except openai.APIError as err:
            return Refusal(200, json.dumps(err.body), mid_stream=bool(events))
        calls = [ToolCall(o.call_id, o.name, json.loads(o.arguments))
                 for o in resp.output if o.type == "function_call"]
        if resp.status == "incomplete":
            finish = resp.incomplete_details.reason
        else:
            finish = "function_call" if calls else resp.status
        return Outcome(resp.output_text, finish, resp.usage.model_dump(), calls)

    def usage_pair(self, usage):
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        return usage["input_tokens"], usage["output_tokens"]


class BedrockInvoke(ClientApi):
    """InvokeModel and InvokeModelWithResponseStream (boto3) with the Anthropic-on-Bedrock body,
    answered as Claude on Bedrock answers: the Messages JSON, or `chunk` events whose `bytes`
    are Anthropic stream events, the last with `amazon-bedrock-invocationMetrics`."""
    name, finish_text, finish_tool = "bedrock-invoke", "end_turn", "tool_use"

    def call(self, model, turns, tools, stream):
        client = self.ctx.bedrock_client()
        messages: list[dict[str, Any]] = []
        for turn in turns:
            if turn[0] == "user":
                messages.append({"role": "user", "content": [{"type": "text", "text": turn[1]}]})
            elif turn[0] == "tool_call":
                call = turn[1]
                messages.append({"role": "assistant", "content": [{
                    "type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}]})
            else:
                messages.append({"role": "user", "content": [{
                    "type": "tool_result", "tool_use_id": turn[1], "content": turn[2]}]})
        body: dict[str, Any] = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 256,
                                "messages": messages}
        if tools:
            body["tools"] = [{"name": TOOL["name"], "description": TOOL["description"],
                              "input_schema": TOOL["schema"]}]
        try:
            if not stream:
                out = client.invoke_model(modelId=model, body=json.dumps(body),
                                          contentType="application/json", accept="application/json")
                msg = json.loads(out["body"].read())
                text = "".join(b["text"] for b in msg["content"] if b["type"] == "text")
                calls = [ToolCall(b["id"], b["name"], b["input"]) for b in msg["content"]
                         if b["type"] == "tool_use"]
                return Outcome(text, msg["stop_reason"], msg["usage"], calls)
            out = client.invoke_model_with_response_stream(modelId=model, body=json.dumps(body))
        except ClientError as err:
            return Refusal(err.response["ResponseMetadata"]["HTTPStatusCode"],
                           f'{err.response["Error"]["Code"]}: {err.response["Error"]["Message"]}')
        events = []
        try:
            for event in out["body"]:
                events.append(json.loads(event["chunk"]["bytes"]))
        except EventStreamError as err:
            return Refusal(200, f'{err.response["Error"]["Code"]}: '
                                f'{err.response["Error"]["Message"]}', mid_stream=True)
        kinds = [e["type"] for e in events]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
        text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
        starts = [e["content_block"] for e in events
                  if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use"]
        calls = []
        if starts:
            args = "".join(e["delta"].get("partial_json", "") for e in events
                           if e["type"] == "content_block_delta")
            calls = [ToolCall(starts[0]["id"], starts[0]["name"], json.loads(args))]
        [delta] = [e for e in events if e["type"] == "message_delta"]
        metrics = events[-1]["amazon-bedrock-invocationMetrics"]
        # The output count is in message_delta as Anthropic sends it; Bedrock's metrics repeat
        # both counts on the last event. Claude on Bedrock puts the input count in message_start;
        # a translated stream puts 0 there (an OpenAI-format provider reports it only at the end)
        # and the real count in message_delta, as Anthropic's API now also does: see README.
        start_input = events[0]["message"]["usage"]["input_tokens"]
        assert start_input in (0, metrics["inputTokenCount"]), (events[0], metrics)
        assert delta["usage"]["output_tokens"] == metrics["outputTokenCount"], (delta, metrics)
        assert delta["usage"].get("input_tokens", start_input) == metrics["inputTokenCount"], (
            events[0], delta, metrics)
        usage = {"input_tokens": metrics["inputTokenCount"], "output_tokens": metrics["outputTokenCount"]}
        return Outcome(text, delta["delta"]["stop_reason"], usage, calls)

    def usage_pair(self, usage):
        return usage["input_tokens"], usage["output_tokens"]


# The client APIs of the matrix: one ClientApi subclass each, listed here.
CLIENT_APIS: dict[str, type[ClientApi]] = {
    c.name: c for c in (OpenAIChat, OpenAIResponses, AnthropicMessages, BedrockConverse, BedrockInvoke)}
