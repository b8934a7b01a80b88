#!/usr/bin/env python3
"""A mock Anthropic Messages provider for Tollgate's tests. Standard library only.

It speaks the parts of the Anthropic HTTP API the gateway uses, with the real wire shapes:

- ``POST /v1/messages``: a ``message`` object echoing the last user text (``echo: ...``), or a
  ``tool_use`` block when the request has ``tools`` and the last user text mentions "weather"
  (and ``tool_choice`` is not ``none``). With ``stream: true``, the real event sequence:
  ``message_start`` (input and cache usage, ``output_tokens: 1``), ``content_block_start``,
  ``ping``, ``content_block_delta``\\ s (``text_delta`` per word, or ``input_json_delta`` in
  pieces), ``content_block_stop``, ``message_delta`` (``stop_reason`` and the cumulative
  ``output_tokens``), ``message_stop``; each event written and flushed on its own.
- The request is validated as the API does: ``x-api-key`` (or ``Authorization: Bearer``) and
  ``anthropic-version`` headers; ``model``, ``max_tokens`` and ``messages`` present; roles
  ``user``/``assistant`` alternating, the first from the user; ``tool_result`` blocks answering
  a ``tool_use`` id of the previous assistant turn. Failures get a 400 ``invalid_request_error``
  (401 ``authentication_error`` for the key) in Anthropic's error shape:
  ``{"type": "error", "error": {"type", "message"}, "request_id"}``.
- Usage: input tokens = words of the system prompt and messages; text blocks marked with
  ``cache_control`` count as cache writes the first time the mock sees that prefix and as cache
  reads after (``cache_creation_input_tokens`` / ``cache_read_input_tokens``).

Test support (the same as ``openai_mock.py``):

- Every request (except ``/__mock``) is recorded: ``MockAnthropic.requests`` in process,
  ``GET /__mock/requests`` / ``DELETE /__mock/requests`` over HTTP.
- Faults: ``POST /__mock/faults`` with ``status``, ``count``, ``delay_ms``, ``body`` (as in the
  OpenAI mock; the default body is Anthropic's error for that status, e.g. 529
  ``overloaded_error``), ``chunk_delay_ms`` (between SSE events), ``stream_error`` (an error
  type such as ``"overloaded_error"``: streams send ``event: error`` with it after the first
  content delta instead of finishing, for the next ``stream_error_count`` streams or until
  reset) and ``truncate_stream`` (true: streams stop after the first content delta and the
  connection closes, without ``message_stop``). ``DELETE /__mock/faults`` resets; ``GET``
  shows them.

Run standalone::

    python tests/mocks/anthropic_mock.py --port 0 --api-key KEY

prints ``READY port=<n>`` once listening, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
import uuid
from typing import Any

try:  # imported as `mocks.anthropic_mock`, or run as `python tests/mocks/anthropic_mock.py`
    from mocks.base import MockHandler, MockServer, _is_int, note_stream_cut, run_standalone
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from mocks.base import MockHandler, MockServer, _is_int, note_stream_cut, run_standalone

MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_MODEL = "claude-mock-1"
_WORD_RE = re.compile(r"\s*\S+")

_STATUS_ERRORS = {  # status: (type, message), as the API words them
    400: ("invalid_request_error", "Invalid request (mock fault)."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified "
                              "resource (mock fault)."),
    404: ("not_found_error", "The requested resource could not be found (mock fault)."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes (mock fault)."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your rate limit "
                              "(mock fault)."),
    500: ("api_error", "Internal server error (mock fault)."),
    529: ("overloaded_error", "Overloaded"),
}


def request_id() -> str:
    return "req_" + uuid.uuid4().hex[:24]


def error_body(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message},
            "request_id": request_id()}


def default_fault_body(status: int) -> dict[str, Any]:
    if status in _STATUS_ERRORS:
        return error_body(*_STATUS_ERRORS[status])
    if status >= 500:
        return error_body("api_error", f"Mock fault {status}.")
    return error_body("invalid_request_error", f"Mock fault {status}.")


class MockError(Exception):
    """An error answered to the client as an Anthropic-format error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(type_, message)


def count_words(text: str) -> int:
    return len(text.split())


def block_text(content: Any) -> str:
    """The text of a message content: a string, or its text blocks (and tool results) joined."""
    if isinstance(content, str):
        return content
    out = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                out.append(block["text"])
            elif block.get("type") == "tool_result":
                out.append(block_text(block.get("content", "")))
    return " ".join(t for t in out if t)


class FaultState:
    KEYS = ("status", "count", "delay_ms", "body", "chunk_delay_ms", "stream_error",
            "stream_error_count", "truncate_stream")

    def __init__(self) -> None:
        self.status: int | None = None
        self.remaining: int | None = None
        self.delay_ms = 0
        self.body: Any = None
        self.chunk_delay_ms = 0
        self.stream_error: str | None = None
        self.stream_error_remaining: int | None = None
        self.truncate_stream = False

    @classmethod
    def parse(cls, spec: Any) -> "FaultState":
        if not isinstance(spec, dict):
            raise MockError(400, "Fault settings must be a JSON object.")
        unknown = sorted(set(spec) - set(cls.KEYS))
        if unknown:
            raise MockError(400, f"Unknown fault settings: {', '.join(unknown)}.")
        state = cls()
        status = spec.get("status")
        if status is not None:
            if not _is_int(status) or not 100 <= status <= 599:
                raise MockError(400, "'status' must be an HTTP status code.")
            state.status = status
        for name, attr in (("count", "remaining"), ("stream_error_count", "stream_error_remaining")):
            value = spec.get(name)
            if value is not None:
                if not _is_int(value) or value < 0:
                    raise MockError(400, f"'{name}' must be a non-negative integer.")
                setattr(state, attr, value)
        for name in ("delay_ms", "chunk_delay_ms"):
            value = spec.get(name, 0) or 0
            if not _is_int(value) or value < 0:
                raise MockError(400, f"'{name}' must be a non-negative integer.")
            setattr(state, name, value)
        stream_error = spec.get("stream_error")
        if stream_error is not None and not isinstance(stream_error, str):
            raise MockError(400, "'stream_error' must be an error type string.")
        state.stream_error = stream_error
        state.truncate_stream = bool(spec.get("truncate_stream", False))
        state.body = spec.get("body")
        return state

    def describe(self) -> dict[str, Any]:
        return {"status": self.status, "count": self.remaining, "delay_ms": self.delay_ms,
                "body": self.body, "chunk_delay_ms": self.chunk_delay_ms,
                "stream_error": self.stream_error,
                "stream_error_count": self.stream_error_remaining,
                "truncate_stream": self.truncate_stream}

    def take(self) -> tuple[int | None, int, Any]:
        if self.status is None and self.delay_ms == 0:
            return None, 0, None
        if self.remaining is not None:
            if self.remaining <= 0:
                return None, 0, None
            self.remaining -= 1
        return self.status, self.delay_ms, self.body

    def take_stream_fault(self) -> tuple[str | None, bool, int]:
        """(error type to send mid-stream or None, truncate?, delay between events in ms)."""
        error = self.stream_error
        if error is not None and self.stream_error_remaining is not None:
            if self.stream_error_remaining <= 0:
                error = None
            else:
                self.stream_error_remaining -= 1
        return error, self.truncate_stream, self.chunk_delay_ms


class _Handler(MockHandler):
    server_version = "anthropic-mock/1"
    mock_name = "anthropic-mock"
    mock_errors = (MockError,)
    max_body_bytes = MAX_BODY_BYTES

    def _error_response(self, code: int, message: str | None) -> None:
        self._send_json(code, error_body("invalid_request_error", message or "Bad request."))

    def _answer_error(self, err: BaseException) -> None:
        assert isinstance(err, MockError)
        self._send_json(err.status, err.body)

    def _answer_internal_error(self) -> None:
        self._send_json(500, error_body("api_error", "The mock had an internal error."))

    def _body_error(self, reason: str) -> Exception:
        if reason == "chunked":
            return MockError(400, "Malformed chunked request body.")
        if reason == "length":
            return MockError(400, "Invalid Content-Length header.")
        return MockError(413, "Request exceeds the maximum allowed number of bytes.",
                         "request_too_large")

    def _request_id_header(self) -> tuple[str, str]:
        return "request-id", request_id()

    # ---- control endpoints ------------------------------------------------------------------

    def _control(self, path: str, body: bytes) -> None:
        mock = self.server.mock
        if path == "/__mock/requests":
            if self.command == "GET":
                self._send_json(200, mock.requests)
            elif self.command == "DELETE":
                self._send_json(200, {"cleared": mock.clear_requests()})
            else:
                raise MockError(405, "Use GET or DELETE.")
        elif path == "/__mock/faults":
            if self.command == "GET":
                self._send_json(200, mock.faults)
            elif self.command == "POST":
                try:
                    spec = json.loads(body or b"{}")
                except ValueError:
                    raise MockError(400, "Fault settings must be JSON.") from None
                self._send_json(200, mock.set_faults(spec))
            elif self.command == "DELETE":
                mock.reset_faults()
                self._send_json(200, mock.faults)
            else:
                raise MockError(405, "Use GET, POST or DELETE.")
        else:
            raise MockError(404, f"Unknown mock control path {path}.", "not_found_error")

    # ---- the API ----------------------------------------------------------------------------

    def _serve_api(self, path: str, body: bytes) -> None:
        mock = self.server.mock
        if path.startswith("/v1/"):
            status, delay_ms, fault_body = mock._take_fault()
            if delay_ms:
                time.sleep(delay_ms / 1000.0)
            if status is not None:
                if isinstance(fault_body, str):
                    self._send_raw(status, fault_body.encode(), "text/plain; charset=utf-8")
                else:
                    self._send_json(status, fault_body if fault_body is not None
                                    else default_fault_body(status))
                return
            self._check_auth()
        if path == "/v1/messages" and self.command == "POST":
            self._messages(_parse_json(body))
        else:
            raise MockError(404, f"Not found: {self.command} {path}", "not_found_error")

    def _check_auth(self) -> None:
        key = self.headers.get("x-api-key")
        if key is None:
            auth = self.headers.get("Authorization") or ""
            scheme, _, token = auth.partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        if not key:
            raise MockError(401, "x-api-key header is required", "authentication_error")
        if key != self.server.mock.api_key:
            raise MockError(401, "invalid x-api-key", "authentication_error")
        if not self.headers.get("anthropic-version"):
            raise MockError(400, "anthropic-version: header is required")

    def _messages(self, req: dict[str, Any]) -> None:
        model = req.get("model")
        if not isinstance(model, str) or not model:
            raise MockError(400, "model: Field required")
        max_tokens = req.get("max_tokens")
        if max_tokens is None:
            raise MockError(400, "max_tokens: Field required")
        if not _is_int(max_tokens) or max_tokens < 1:
            raise MockError(400, "max_tokens: Input should be a valid integer greater than 0")
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            raise MockError(400, "messages: at least one message is required")
        _validate_messages(messages)
        system = req.get("system")
        if system is not None and not isinstance(system, (str, list)):
            raise MockError(400, "system: Input should be a valid string or list of text blocks")
        stream = req.get("stream", False)
        if not isinstance(stream, bool):
            raise MockError(400, "stream: Input should be a valid boolean")

        usage = self.server.mock._usage_for(system, messages)
        last_user = messages[-1] if messages[-1].get("role") == "user" else None
        user_text = block_text(last_user.get("content")) if last_user else ""
        tool_use = _maybe_tool_use(req, user_text) if last_user else None
        if tool_use is not None:
            content = [tool_use]
            output_tokens = count_words(json.dumps(tool_use["input"]).replace('"', " "))
            stop_reason = "tool_use"
        else:
            text = ("echo: " + user_text).strip()
            words = _WORD_RE.findall(text)
            stop_reason = "end_turn"
            if len(words) > max_tokens:
                words = words[:max_tokens]
                stop_reason = "max_tokens"
            text = "".join(words)
            content = [{"type": "text", "text": text}]
            output_tokens = len(words)
        usage["output_tokens"] = output_tokens
        self.server.mock.last_usage = dict(usage)
        message = {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
                   "model": model, "content": content, "stop_reason": stop_reason,
                   "stop_sequence": None, "usage": usage}
        if stream:
            self._stream(message)
        else:
            self._send_json(200, message)

    def _stream(self, message: dict[str, Any]) -> None:
        error_type, truncate, delay_ms = self.server.mock._take_stream_fault()
        usage = message["usage"]
        start_usage = {k: v for k, v in usage.items() if k != "output_tokens"}
        start_usage["output_tokens"] = 1
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": start_usage}
        events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start",
                                                                       "message": start})]
        deltas: list[tuple[str, dict[str, Any]]] = []
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                       "content_block": {"type": "text", "text": ""}}))
                for word in _WORD_RE.findall(block["text"]):
                    deltas.append(("content_block_delta", {
                        "type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": word}}))
            else:
                events.append(("content_block_start", {
                    "type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"],
                                      "input": {}}}))
                args = json.dumps(block["input"])
                deltas.append(("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": ""}}))
                for i in range(0, len(args), 8):
                    deltas.append(("content_block_delta", {
                        "type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": args[i:i + 8]}}))
            if index == 0:
                events.append(("ping", {"type": "ping"}))
            if error_type is not None or truncate:
                note_stream_cut(self.server.mock)
                events.extend(deltas[:1])
                if error_type is not None:
                    events.append(("error", {"type": "error", "error": {
                        "type": error_type,
                        "message": "Overloaded" if error_type == "overloaded_error"
                        else f"Mock stream error ({error_type})."}}))
                break
            events.extend(deltas)
            deltas = []
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        else:
            events.append(("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]}}))
            events.append(("message_stop", {"type": "message_stop"}))

        self._start_chunked("text/event-stream; charset=utf-8", cache_control=True,
                            close=truncate)
        for i, (name, data) in enumerate(events):
            if i and delay_ms:
                time.sleep(delay_ms / 1000.0)
            self._write_chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        if truncate:
            return  # connection closed without the terminating chunk: a cut stream
        self._write_chunk(b"")


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MockError(400, "There was an issue with the format of your request: "
                             "invalid JSON body") from None
    if not isinstance(value, dict):
        raise MockError(400, "The request body must be a JSON object")
    return value


def _validate_messages(messages: list[Any]) -> None:
    previous_role = None
    previous_tool_ids: set[str] = set()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise MockError(400, f"messages.{i}: Input should be a valid dictionary")
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise MockError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise MockError(400, "messages: first message must use the \"user\" role")
        if role == previous_role:
            raise MockError(400, "messages: roles must alternate between \"user\" and "
                                 "\"assistant\", but found multiple \"" + role + "\" roles in a row")
        content = msg.get("content")
        if isinstance(content, str):
            blocks: list[Any] = []
        elif isinstance(content, list):
            blocks = content
        else:
            raise MockError(400, f"messages.{i}.content: Input should be a valid string or list")
        if isinstance(content, list) and not content:
            raise MockError(400, f"messages.{i}: all messages must have non-empty content")
        tool_ids: set[str] = set()
        for j, block in enumerate(blocks):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise MockError(400, f"messages.{i}.content.{j}: invalid content block")
            kind = block["type"]
            if kind == "text":
                if not isinstance(block.get("text"), str) or not block["text"]:
                    raise MockError(400, f"messages.{i}.content.{j}: text content blocks must be "
                                         "non-empty")
            elif kind == "tool_use":
                if role != "assistant":
                    raise MockError(400, f"messages.{i}.content.{j}: tool_use blocks are only "
                                         "allowed in assistant messages")
                if not isinstance(block.get("input"), dict):
                    raise MockError(400, f"messages.{i}.content.{j}.input: Input should be a "
                                         "valid dictionary")
                tool_ids.add(str(block.get("id")))
            elif kind == "tool_result":
                if role != "user":
                    raise MockError(400, f"messages.{i}.content.{j}: tool_result blocks are only "
                                         "allowed in user messages")
                if block.get("tool_use_id") not in previous_tool_ids:
                    raise MockError(400, f"messages.{i}.content.{j}: unexpected `tool_use_id` "
                                         "found in `tool_result` blocks: "
                                         f"{block.get('tool_use_id')}. Each `tool_result` block "
                                         "must have a corresponding `tool_use` block in the "
                                         "previous message.")
            elif kind == "image":
                source = block.get("source")
                if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
                    raise MockError(400, f"messages.{i}.content.{j}.source: invalid image source")
        previous_role = role
        previous_tool_ids = tool_ids


def _maybe_tool_use(req: dict[str, Any], user_text: str) -> dict[str, Any] | None:
    tools = req.get("tools")
    choice = req.get("tool_choice") or {}
    if not isinstance(tools, list) or (isinstance(choice, dict) and choice.get("type") == "none"):
        return None
    if "weather" not in user_text.lower():
        return None
    names = [t.get("name") for t in tools if isinstance(t, dict)]
    names = [n for n in names if isinstance(n, str) and n]
    if not names:
        return None
    match = re.search(r"\bin ([A-Za-z][A-Za-z ]*)", user_text)
    location = match.group(1).strip() if match else "unknown"
    return {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24], "name": names[0],
            "input": {"location": location}}


class MockAnthropic(MockServer):
    """The mock provider, for use in process (or through `main()` as a subprocess)."""

    thread_name = "anthropic-mock"
    handler_class = _Handler
    fault_class = FaultState

    def __init__(self, api_key: str = "sk-ant-mock-key", host: str = "127.0.0.1", port: int = 0,
                 verbose: bool = False) -> None:
        self.api_key = api_key
        self._cached_prefixes: set[str] = set()
        super().__init__(host, port, verbose)

    @property
    def base_url(self) -> str:
        """The base URL a deployment points at (the gateway appends `/messages`)."""
        return f"{self.url}/v1"

    # ---- usage ------------------------------------------------------------------------------

    def _usage_for(self, system: Any, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Input usage, with prompt caching: the words up to the last `cache_control` mark are
        written to the cache the first time and read from it afterwards."""
        segments: list[tuple[str, bool]] = []  # (text, marked)
        if isinstance(system, str):
            segments.append((system, False))
        elif isinstance(system, list):
            for block in system:
                if isinstance(block, dict):
                    segments.append((str(block.get("text", "")), "cache_control" in block))
        for msg in messages:
            content = msg.get("content")
            if isinstance(content, list):
                for block in content:
                    if isinstance(block, dict):
                        segments.append((block_text([block]), "cache_control" in block))
            else:
                segments.append((block_text(content), False))
        last_mark = max((i for i, (_, marked) in enumerate(segments) if marked), default=-1)
        cached_words = sum(count_words(t) for t, _ in segments[:last_mark + 1])
        total_words = sum(count_words(t) for t, _ in segments)
        usage: dict[str, Any] = {"input_tokens": total_words - cached_words,
                                 "cache_creation_input_tokens": 0,
                                 "cache_read_input_tokens": 0}
        if last_mark >= 0:
            key = hashlib.sha256(json.dumps(segments[:last_mark + 1]).encode()).hexdigest()
            with self._lock:
                seen = key in self._cached_prefixes
                self._cached_prefixes.add(key)
            usage["cache_read_input_tokens" if seen else "cache_creation_input_tokens"] = \
                cached_words
        usage["service_tier"] = "standard"
        return usage

    # ---- faults (the rest is in base.MockServer) ------------------------------------------

    def _take_stream_fault(self) -> tuple[str | None, bool, int]:
        with self._lock:
            return self._faults.take_stream_fault()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mock Anthropic Messages provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)

    mock = MockAnthropic(api_key=args.api_key, host=args.host, port=args.port,
                         verbose=args.verbose).bind()
    return run_standalone(mock)


if __name__ == "__main__":
    sys.exit(main())
