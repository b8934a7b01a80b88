"""The OpenAI mock's Responses API (`POST /v1/responses`), as `openai.types.responses` (openai
3.x) and OpenAI's API reference describe it: stateless (a `previous_response_id` or `store:
true` is a 400 here too, so a gateway that forwarded one would be caught), text answers
``"echo: <last user text>"``, a function call when function tools are given and the last input
item is a user message asking about the weather, streaming with the full event sequence and
`sequence_number`s. Usage counts words, as the chat endpoint does; the response and item ids
start with ``resp_mock`` / ``msg_mock`` / ``fc_mock`` so a test can tell a passthrough answer
from a translated one.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Callable

_WORD_RE = re.compile(r"\S+\s*")


class ResponsesError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type") in ("input_text", "output_text"))
    return ""


def _words(text: str) -> int:
    return len(text.split())


def answer(req: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The Response object and the stream events (type, body without type/sequence) for a request."""
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise ResponsesError("Missing required parameter: 'model'.", "model")
    if req.get("previous_response_id") is not None:
        raise ResponsesError("Previous response not found (this mock stores nothing).",
                             "previous_response_id")
    if req.get("store") is True:
        raise ResponsesError("This mock does not store responses.", "store")
    items = req.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise ResponsesError("Missing required parameter: 'input'.", "input")
    prompt = _words(req.get("instructions") or "")
    for item in items:
        if not isinstance(item, dict):
            raise ResponsesError("Invalid input item.", "input")
        prompt += _words(_text(item.get("content"))) + _words(str(item.get("output", "")))
    last = items[-1]
    user_text = _text(last.get("content")) if last.get("type", "message") == "message" else ""
    tools = [t for t in req.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    rid = "resp_mock" + uuid.uuid4().hex[:20]
    output: list[dict[str, Any]] = []
    if tools and last.get("role") == "user" and "weather" in user_text.lower():
        match = re.search(r"\bin ([A-Za-z][A-Za-z ]*)", user_text)
        args = json.dumps({"location": match.group(1).strip() if match else "unknown"})
        output.append({"type": "function_call", "id": "fc_mock" + uuid.uuid4().hex[:12],
                       "call_id": "call_" + uuid.uuid4().hex[:20], "name": tools[0]["name"],
                       "arguments": args, "status": "completed"})
        completion = _words(args.replace('"', " "))
    else:
        if last.get("type") == "function_call_output":
            text = "echo: tool said " + str(last.get("output"))
        else:
            text = ("echo: " + user_text).strip()
        output.append({"type": "message", "id": "msg_mock" + uuid.uuid4().hex[:12],
                       "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": [],
                                    "logprobs": []}]})
        completion = _words(text)
    usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
             "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": prompt + completion}
    response = {"id": rid, "object": "response", "created_at": int(time.time()),
                "status": "completed", "error": None, "incomplete_details": None,
                "instructions": req.get("instructions"), "max_output_tokens": req.get("max_output_tokens"),
                "model": model, "output": output, "parallel_tool_calls": True,
                "previous_response_id": None, "store": False, "temperature": req.get("temperature", 1.0),
                "text": {"format": {"type": "text"}}, "tool_choice": req.get("tool_choice", "auto"),
                "tools": req.get("tools") or [], "top_p": req.get("top_p", 1.0),
                "truncation": "disabled", "usage": usage, "metadata": {}}
    return response, _events(response)


def _events(response: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    start = dict(response, status="in_progress", output=[], usage=None)
    events: list[tuple[str, dict[str, Any]]] = [("response.created", {"response": start}),
                                                 ("response.in_progress", {"response": start})]
    for index, item in enumerate(response["output"]):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            events.append(("response.output_item.added", {"output_index": index, "item": dict(
                item, status="in_progress", content=[])}))
            base = {"item_id": item["id"], "output_index": index, "content_index": 0}
            events.append(("response.content_part.added", dict(base, part={
                "type": "output_text", "text": "", "annotations": []})))
            for word in _WORD_RE.findall(text):
                events.append(("response.output_text.delta", dict(base, delta=word, logprobs=[])))
            events.append(("response.output_text.done", dict(base, text=text, logprobs=[])))
            events.append(("response.content_part.done", dict(base, part=item["content"][0])))
        else:
            events.append(("response.output_item.added", {"output_index": index, "item": dict(
                item, status="in_progress", arguments="")}))
            args = item["arguments"]
            for i in range(0, len(args), 8):
                events.append(("response.function_call_arguments.delta", {
                    "item_id": item["id"], "output_index": index, "delta": args[i:i + 8]}))
            events.append(("response.function_call_arguments.done", {
                "item_id": item["id"], "output_index": index, "arguments": args}))
        events.append(("response.output_item.done", {"output_index": index, "item": item}))
    events.append(("response.completed", {"response": response}))
    return events


def serve(req: dict[str, Any], send_json: Callable[[int, Any], None],
          stream_events: Callable[[list[bytes]], None]) -> None:
    """Answers one request: JSON, or the SSE events for `stream: true`."""
    response, events = answer(req)
    if not req.get("stream"):
        send_json(200, response)
        return
    frames = []
    for seq, (kind, body) in enumerate(events):
        data = dict(body, type=kind, sequence_number=seq)
        frames.append(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
    stream_events(frames)
