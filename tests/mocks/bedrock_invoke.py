"""The mock Bedrock's InvokeModel / InvokeModelWithResponseStream for Anthropic Claude bodies.

Follows botocore's ``bedrock-runtime`` service model (``InvokeModel``: the body is the model's
own JSON, ``Content-Type`` header; ``InvokeModelWithResponseStream``: a ``ResponseStream`` whose
``chunk`` member is a ``PayloadPart`` — *not* an event payload, so each frame's payload is JSON
``{"bytes": "<base64>"}`` — with the ``X-Amzn-Bedrock-Content-Type`` header) and Bedrock's
Anthropic Claude Messages parameters (``anthropic_version: bedrock-2023-05-31``, the model in
the path, not the body; the answer is an Anthropic Messages response; streamed chunks are the
Anthropic stream events, the last one carrying ``amazon-bedrock-invocationMetrics``).

The answer is the Converse answer (``bedrock_mock._Answer``) of the same conversation, so the
two APIs agree on content and usage. Proven with boto3 in ``tests/unit/test_bedrock_mock_sdk.py``.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable

ANTHROPIC_BEDROCK_VERSION = "bedrock-2023-05-31"


def is_anthropic_body(req: Any) -> bool:
    return isinstance(req, dict) and "messages" in req and "anthropic_version" in req


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    out: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            out.append({"text": block.get("text")})
        elif kind == "tool_use":
            out.append({"toolUse": {"toolUseId": block.get("id"), "name": block.get("name"),
                                    "input": block.get("input")}})
        elif kind == "tool_result":
            inner = block.get("content")
            out.append({"toolResult": {"toolUseId": block.get("tool_use_id"),
                                       "content": _blocks(inner)}})
    return out


def converse_request(req: dict[str, Any]) -> dict[str, Any]:
    """The Converse request that says what this Anthropic-on-Bedrock body says."""
    converse: dict[str, Any] = {
        "messages": [{"role": m.get("role"), "content": _blocks(m.get("content"))}
                     for m in req.get("messages") or [] if isinstance(m, dict)],
        "inferenceConfig": {"maxTokens": req.get("max_tokens"),
                            "stopSequences": req.get("stop_sequences") or []}}
    if isinstance(req.get("system"), str):
        converse["system"] = [{"text": req["system"]}]
    tools = req.get("tools")
    if isinstance(tools, list) and tools:
        converse["toolConfig"] = {"tools": [
            {"toolSpec": {"name": t.get("name"), "inputSchema": {"json": t.get("input_schema")}}}
            for t in tools if isinstance(t, dict)]}
    return converse


def message(answer: Any, model_id: str) -> dict[str, Any]:
    """The Anthropic Messages response for a ``bedrock_mock._Answer``."""
    content: list[dict[str, Any]] = []
    if answer.text:
        content.append({"type": "text", "text": answer.text})
    if answer.tool_use is not None:
        tool = answer.tool_use
        content.append({"type": "tool_use", "id": "toolu_" + tool["toolUseId"][8:],
                        "name": tool["name"], "input": tool["input"]})
    return {"id": "msg_bdrk_" + model_id.encode().hex()[:16], "type": "message",
            "role": "assistant", "model": model_id, "content": content,
            "stop_reason": answer.stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens}}


def stream_events(msg: dict[str, Any], words: list[str],
                  latency_ms: int) -> list[dict[str, Any]]:
    """The Anthropic stream events of a message, as Bedrock sends them in ``chunk`` frames."""
    usage = msg["usage"]
    start = {**msg, "content": [], "stop_reason": None,
             "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(msg["content"]):
        if block["type"] == "text":
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "text", "text": ""}})
            events.extend({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": w}} for w in words)
        else:
            events.append({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
            args = json.dumps(block["input"])
            events.extend({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": args[i:i + 8]}}
                          for i in range(0, len(args), 8))
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta",
                   "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                   "usage": {"output_tokens": usage["output_tokens"]}})
    events.append({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": usage["input_tokens"], "outputTokenCount": usage["output_tokens"],
        "invocationLatency": latency_ms, "firstByteLatency": max(1, latency_ms // 2)}})
    return events


def chunk_frame(encode_frame: Callable[[dict[str, str], bytes], bytes],
                event: dict[str, Any]) -> bytes:
    """One ``chunk`` frame: ``PayloadPart.bytes`` is a member, base64 in a JSON payload."""
    payload = {"bytes": base64.b64encode(json.dumps(event).encode()).decode()}
    return encode_frame({":event-type": "chunk", ":content-type": "application/json",
                         ":message-type": "event"}, json.dumps(payload).encode())
