#!/usr/bin/env python3
"""A mock OpenAI-compatible provider for Tollgate's tests. Standard library only.

It speaks the parts of the OpenAI HTTP API the gateway forwards, with the real wire shapes:

- ``POST /v1/chat/completions``: non-streaming ``chat.completion`` objects and streaming
  ``chat.completion.chunk`` SSE events (role delta, one delta per word, a finish chunk, the
  usage chunk with ``choices: []`` only when ``stream_options.include_usage`` is true, then
  ``data: [DONE]``). A request with ``tools`` whose last user message mentions "weather" is
  answered with a tool call.
- ``POST /v1/embeddings``: deterministic vectors (8 dimensions by default, from a hash of the
  input), as floats or, with ``encoding_format: "base64"`` (what the openai SDK sends by
  default), as base64 of little-endian float32.
- ``GET /v1/models`` and ``GET /v1/models/{id}``.

Every request under ``/v1`` needs ``Authorization: Bearer <api key>``, else a 401 with an
OpenAI error body. Malformed input gets a 400 OpenAI error, never a crash.

Test support:

- Every request (except the ``/__mock`` ones) is recorded as a dict ``{"method", "path",
  "headers" (names lower-cased), "body" (text), "json" (parsed body or None), "time"}``:
  in process through ``MockOpenAI.requests``; over HTTP with ``GET /__mock/requests`` (JSON
  list) and ``DELETE /__mock/requests`` (clear).
- Faults: ``POST /__mock/faults`` with a JSON object replaces the fault settings:
  ``status`` (make requests to /v1/* fail with it, OpenAI error body), ``count`` (how many of
  the next /v1/* requests the status/delay applies to; absent or null means until reset),
  ``delay_ms`` (delay before answering), ``body`` (optional error body: an object or list is
  sent as JSON, a string as-is), ``chunk_delay_ms`` (delay between SSE events, for every stream
  until reset). ``DELETE /__mock/faults`` resets; ``GET /__mock/faults`` shows them.

Run standalone::

    python tests/mocks/openai_mock.py --port 0 --api-key KEY

prints ``READY port=<n>`` once listening, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_EMBEDDING_DIMS = 8
DEFAULT_MODELS = ("mock-model-1", "mock-model-2")
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_WORD_RE = re.compile(r"\s*\S+")


class MockError(Exception):
    """An error answered to the client as an OpenAI-format error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, type_, param, code)


def error_body(message: str, type_: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def mask_key(key: str) -> str:
    """Mask a key the way OpenAI does in its 401 message (first 3 and last 4 characters)."""
    if len(key) <= 10:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


_FAULT_ERRORS = {  # status: (message, type, code), as OpenAI words them
    403: ("You are not allowed to sample from this model (mock fault).", "permission_error", None),
    404: ("The model does not exist (mock fault).", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for requests (mock fault).", "requests", "rate_limit_exceeded"),
}


def default_fault_body(status: int, presented_key: str | None) -> dict[str, Any]:
    if status == 401:
        return error_body(f"Incorrect API key provided: {mask_key(presented_key or '')}. You can "
                          "find your API key at https://platform.openai.com/account/api-keys.",
                          "invalid_request_error", None, "invalid_api_key")
    if status in _FAULT_ERRORS:
        message, type_, code = _FAULT_ERRORS[status]
        return error_body(message, type_, None, code)
    if status >= 500:
        return error_body("The server had an error while processing your request. "
                          "Sorry about that! (mock fault)", "server_error")
    return error_body(f"Mock fault {status}.", "invalid_request_error")


def count_words(text: str) -> int:
    return len(text.split())


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content
                 if isinstance(p, dict) and p.get("type") == "text"]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def embedding_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector of `dims` float32 values derived from a hash of `text`."""
    raw = b""
    counter = 0
    while len(raw) < dims * 2:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [int.from_bytes(raw[2 * i:2 * i + 2], "big") / 65535.0 * 2.0 - 1.0
              for i in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Round through float32 so the float and base64 encodings give the same numbers.
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]


class FaultState:
    """Fault settings, shared by all handler threads (callers hold MockOpenAI's lock)."""

    KEYS = ("status", "count", "delay_ms", "body", "chunk_delay_ms")

    def __init__(self) -> None:
        self.status: int | None = None
        self.remaining: int | None = None
        self.delay_ms = 0
        self.body: Any = None
        self.chunk_delay_ms = 0

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
                raise MockError(400, "'status' must be an HTTP status code.", param="status")
            state.status = status
        count = spec.get("count")
        if count is not None:
            if not _is_int(count) or count < 0:
                raise MockError(400, "'count' must be a non-negative integer.", param="count")
            state.remaining = count
        for name in ("delay_ms", "chunk_delay_ms"):
            value = spec.get(name, 0) or 0
            if not _is_int(value) or value < 0:
                raise MockError(400, f"'{name}' must be a non-negative integer.", param=name)
            setattr(state, name, value)
        state.body = spec.get("body")
        return state

    def describe(self) -> dict[str, Any]:
        return {"status": self.status, "count": self.remaining, "delay_ms": self.delay_ms,
                "body": self.body, "chunk_delay_ms": self.chunk_delay_ms}

    def take(self) -> tuple[int | None, int, Any]:
        """Consume one request's fault: (status or None, delay_ms, body)."""
        if self.status is None and self.delay_ms == 0:
            return None, 0, None
        if self.remaining is not None:
            if self.remaining <= 0:
                return None, 0, None
            self.remaining -= 1
        return self.status, self.delay_ms, self.body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    mock: "MockOpenAI"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Drop every open (keep-alive) connection, as a provider going away would."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "openai-mock/1"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this many seconds
    server: _Server

    # ---- plumbing ---------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        if self.server.mock.verbose:
            sys.stderr.write("openai-mock: %s - %s\n" % (self.address_string(), format % args))

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._dispatch()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by the stdlib's request parsing, in OpenAI format instead of HTML."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # unparsable request line: still send headers
        try:
            self._send_json(code, error_body(message or "Bad request.", "invalid_request_error"))
        except OSError:
            pass

    def _dispatch(self) -> None:
        mock = self.server.mock
        path = urlsplit(self.path).path
        try:
            body = self._read_body()
        except MockError as err:
            self.close_connection = True
            self._send_json(err.status, err.body)
            return
        try:
            if path.startswith("/__mock/"):
                self._control(path, body)
                return
            mock._record(self.command, self.path, self.headers.items(), body)
            self._serve_api(path, body)
        except MockError as err:
            self._send_json(err.status, err.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # never crash a handler thread: answer 500 and keep serving
            sys.stderr.write(f"openai-mock: internal error: {err!r}\n")
            self.close_connection = True
            try:
                self._send_json(500, error_body("The mock server had an internal error.",
                                                "server_error"))
            except OSError:
                pass

    def _read_body(self) -> bytes:
        encoding = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in encoding:
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise MockError(400, "Invalid Content-Length header.") from None
        if length < 0:
            raise MockError(400, "Invalid Content-Length header.")
        if length > MAX_BODY_BYTES:
            raise MockError(413, "Request body too large for the mock.")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise MockError(400, "Malformed chunked request body.") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(data)
            if len(data) + size > MAX_BODY_BYTES:
                raise MockError(413, "Request body too large for the mock.")
            data += self.rfile.read(size)
            self.rfile.readline(1024)  # CRLF after the chunk

    def _send_json(self, status: int, obj: Any,
                   extra_headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(obj).encode()
        self._send_raw(status, payload, "application/json", extra_headers)

    def _send_raw(self, status: int, payload: bytes, content_type: str,
                  extra_headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex)
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    # ---- control endpoints ------------------------------------------------------------------

    def _control(self, path: str, body: bytes) -> None:
        mock = self.server.mock
        if path == "/__mock/requests" and self.command == "GET":
            self._send_json(200, mock.requests)
        elif path == "/__mock/requests" and self.command == "DELETE":
            self._send_json(200, {"cleared": mock.clear_requests()})
        elif path == "/__mock/faults" and self.command == "GET":
            self._send_json(200, mock.faults)
        elif path == "/__mock/faults" and self.command == "POST":
            self._send_json(200, mock.set_faults(_parse_json(body)))
        elif path == "/__mock/faults" and self.command == "DELETE":
            mock.reset_faults()
            self._send_json(200, mock.faults)
        elif path == "/__mock/health" and self.command == "GET":
            self._send_json(200, {"status": "ok"})
        else:
            raise MockError(404, f"Invalid URL ({self.command} {path})")

    # ---- API --------------------------------------------------------------------------------

    def _serve_api(self, path: str, body: bytes) -> None:
        mock = self.server.mock
        if path.startswith("/v1/"):
            status, delay_ms, fault_body = mock._take_fault()
            if delay_ms:
                time.sleep(delay_ms / 1000.0)
            if status is not None:
                self._send_fault(status, fault_body)
                return
            self._check_auth()
        if path == "/v1/chat/completions" and self.command == "POST":
            self._chat(_parse_json(body))
        elif path == "/v1/embeddings" and self.command == "POST":
            self._embeddings(_parse_json(body))
        elif path == "/v1/models" and self.command == "GET":
            self._send_json(200, {"object": "list", "data": [_model_obj(m) for m in mock.models]})
        elif path.startswith("/v1/models/") and self.command == "GET":
            model = path[len("/v1/models/"):]
            if model not in mock.models:
                raise MockError(404, f"The model '{model}' does not exist",
                                "invalid_request_error", "model", "model_not_found")
            self._send_json(200, _model_obj(model))
        else:
            raise MockError(404, f"Invalid URL ({self.command} {path})")

    def _send_fault(self, status: int, fault_body: Any) -> None:
        if isinstance(fault_body, str):
            self._send_raw(status, fault_body.encode(), "text/plain; charset=utf-8")
        elif fault_body is not None:
            self._send_json(status, fault_body)
        else:
            self._send_json(status, default_fault_body(status, self._presented_key()))

    def _presented_key(self) -> str | None:
        auth = self.headers.get("Authorization")
        if auth is None:
            return None
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else auth

    def _check_auth(self) -> None:
        key = self._presented_key()
        if not key:
            raise MockError(401, "You didn't provide an API key. You need to provide your API "
                                 "key in an Authorization header using Bearer auth (i.e. "
                                 "Authorization: Bearer YOUR_KEY).", "invalid_request_error")
        if key != self.server.mock.api_key:
            raise MockError(401, f"Incorrect API key provided: {mask_key(key)}. You can find "
                                 "your API key at https://platform.openai.com/account/api-keys.",
                            "invalid_request_error", None, "invalid_api_key")

    def _chat(self, req: dict[str, Any]) -> None:
        model = req.get("model")
        if not isinstance(model, str) or not model:
            raise MockError(400, "you must provide a model parameter")
        if "messages" not in req:
            raise MockError(400, "Missing required parameter: 'messages'.", param="messages",
                            code="missing_required_parameter")
        messages = req["messages"]
        if not isinstance(messages, list):
            raise MockError(400, f"Invalid type for 'messages': expected an array of objects, "
                                 f"but got {type_name(messages)} instead.",
                            param="messages", code="invalid_type")
        if not messages:
            raise MockError(400, "Invalid 'messages': empty array. Expected an array with "
                                 "minimum length 1, but got an empty array instead.",
                            param="messages", code="empty_array")
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise MockError(400, f"Invalid type for 'messages[{i}]': expected an object, but "
                                     f"got {type_name(msg)} instead.",
                                param=f"messages[{i}]", code="invalid_type")
            if msg.get("role") not in MESSAGE_ROLES:
                raise MockError(400, f"Invalid value: '{msg.get('role')}'. Supported values are: "
                                     + ", ".join(f"'{r}'" for r in MESSAGE_ROLES) + ".",
                                param=f"messages[{i}].role", code="invalid_value")
        stream = req.get("stream", False)
        if stream is not None and not isinstance(stream, bool):
            raise MockError(400, f"Invalid type for 'stream': expected a boolean, but got "
                                 f"{type_name(stream)} instead.", param="stream",
                            code="invalid_type")
        stream_options = req.get("stream_options")
        if stream_options is not None and not stream:
            raise MockError(400, "The 'stream_options' parameter is only allowed when 'stream' "
                                 "is enabled.", param="stream_options")
        if stream_options is not None and not isinstance(stream_options, dict):
            raise MockError(400, f"Invalid type for 'stream_options': expected an object, but "
                                 f"got {type_name(stream_options)} instead.",
                            param="stream_options", code="invalid_type")

        prompt_tokens = sum(count_words(message_text(m.get("content"))) for m in messages)
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        user_text = message_text(last_user.get("content")) if last_user else ""
        tool_call = _maybe_tool_call(req, messages, user_text)
        if tool_call is not None:
            completion_tokens = count_words(tool_call["function"]["arguments"].replace('"', " "))
            content = None
        else:
            content = ("echo: " + user_text).strip()
            completion_tokens = count_words(content)
        usage = _usage(prompt_tokens, completion_tokens)
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if stream:
            include_usage = bool((stream_options or {}).get("include_usage"))
            self._stream_chat(completion_id, created, model, content, tool_call, usage,
                              include_usage)
            return
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None,
                                   "annotations": []}
        if tool_call is not None:
            message["tool_calls"] = [tool_call]
        self._send_json(200, {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if tool_call else "stop"}],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        })

    def _stream_chat(self, completion_id: str, created: int, model: str, content: str | None,
                     tool_call: dict[str, Any] | None, usage: dict[str, Any],
                     include_usage: bool) -> None:
        def chunk(choices: list[dict[str, Any]], usage_value: Any = None) -> dict[str, Any]:
            obj: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk",
                                   "created": created, "model": model,
                                   "service_tier": "default", "system_fingerprint": "fp_mock",
                                   "choices": choices}
            if include_usage:
                obj["usage"] = usage_value
            return obj

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        events: list[dict[str, Any]] = []
        if tool_call is not None:
            args = tool_call["function"]["arguments"]
            first = {"index": 0, "id": tool_call["id"], "type": "function",
                     "function": {"name": tool_call["function"]["name"], "arguments": ""}}
            events.append(chunk(choice({"role": "assistant", "content": None,
                                        "tool_calls": [first], "refusal": None})))
            for start in range(0, len(args), 8):
                piece = {"index": 0, "function": {"arguments": args[start:start + 8]}}
                events.append(chunk(choice({"tool_calls": [piece]})))
            events.append(chunk(choice({}, "tool_calls")))
        else:
            events.append(chunk(choice({"role": "assistant", "content": "", "refusal": None})))
            for word in _WORD_RE.findall(content or ""):
                events.append(chunk(choice({"content": word})))
            events.append(chunk(choice({}, "stop")))
        if include_usage:
            events.append(chunk([], usage))

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex)
        self.end_headers()
        self.wfile.flush()
        delay = self.server.mock.faults["chunk_delay_ms"] / 1000.0
        payloads = [json.dumps(e) for e in events] + ["[DONE]"]
        for i, data in enumerate(payloads):
            if i and delay:
                time.sleep(delay)
            self._write_chunk(f"data: {data}\n\n".encode())
        self._write_chunk(b"")

    def _write_chunk(self, data: bytes) -> None:
        """One HTTP/1.1 chunk, flushed at once; an empty one ends the body."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _embeddings(self, req: dict[str, Any]) -> None:
        model = req.get("model")
        if not isinstance(model, str) or not model:
            raise MockError(400, "you must provide a model parameter")
        if "input" not in req:
            raise MockError(400, "Missing required parameter: 'input'.", param="input",
                            code="missing_required_parameter")
        texts = _embedding_inputs(req["input"])
        encoding = req.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise MockError(400, f"Invalid value: '{encoding}'. Supported values are: 'float' "
                                 "and 'base64'.", param="encoding_format", code="invalid_value")
        dims = req.get("dimensions", DEFAULT_EMBEDDING_DIMS)
        if not _is_int(dims) or not 1 <= dims <= 4096:
            raise MockError(400, "Invalid 'dimensions': must be an integer from 1 to 4096.",
                            param="dimensions", code="invalid_value")
        data = []
        tokens = 0
        for i, (text, n_tokens) in enumerate(texts):
            vector = embedding_vector(text, dims)
            tokens += n_tokens
            value: Any = vector
            if encoding == "base64":
                value = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        self._send_json(200, {"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MockError(400, "We could not parse the JSON body of your request. (HINT: This "
                             "likely means you aren't using your HTTP library correctly. The "
                             "OpenAI API expects a JSON payload, but what was sent was not "
                             "valid JSON.") from None
    if not isinstance(value, dict):
        raise MockError(400, f"Invalid type for the request body: expected an object, but got "
                             f"{type_name(value)} instead.", code="invalid_type")
    return value


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def _model_obj(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 1700000000, "owned_by": "openai-mock"}


def _maybe_tool_call(req: dict[str, Any], messages: list[dict[str, Any]],
                     user_text: str) -> dict[str, Any] | None:
    tools = req.get("tools")
    if not isinstance(tools, list) or req.get("tool_choice") == "none":
        return None
    if messages[-1].get("role") != "user" or "weather" not in user_text.lower():
        return None
    names = [t["function"].get("name") for t in tools
             if isinstance(t, dict) and t.get("type") == "function"
             and isinstance(t.get("function"), dict)]
    names = [n for n in names if isinstance(n, str) and n]
    if not names:
        return None
    match = re.search(r"\bin ([A-Za-z][A-Za-z ]*)", user_text)
    location = match.group(1).strip() if match else "unknown"
    return {"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
            "function": {"name": names[0], "arguments": json.dumps({"location": location})}}


def _embedding_inputs(value: Any) -> list[tuple[str, int]]:
    """(text to hash, token count) for each input: a string, strings, tokens or token lists."""
    invalid = MockError(400, "'$.input' is invalid. Please check the API reference: "
                             "https://platform.openai.com/docs/api-reference.", param="input")
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(_is_int(v) for v in value):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise invalid
    out = []
    for item in items:
        if isinstance(item, str) and item:
            out.append((item, max(1, count_words(item))))
        elif isinstance(item, list) and item and all(_is_int(v) for v in item):
            out.append((json.dumps(item), len(item)))
        else:
            raise invalid
    return out


class MockOpenAI:
    """The mock provider, for use in process (or through `main()` as a subprocess)."""

    def __init__(self, api_key: str = "sk-mock-key", host: str = "127.0.0.1", port: int = 0,
                 models: tuple[str, ...] = DEFAULT_MODELS, verbose: bool = False) -> None:
        self.api_key = api_key
        self.host = host
        self.models = tuple(models)
        self.verbose = verbose
        self._requested_port = port
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._faults = FaultState()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def bind(self) -> "MockOpenAI":
        """Bind the listening socket (it accepts connections from here on)."""
        if self._server is None:
            server = _Server((self.host, self._requested_port), _Handler)
            server.mock = self
            self._server = server
        return self

    def start(self) -> "MockOpenAI":
        self.bind()
        if self._thread is None:
            assert self._server is not None
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name="openai-mock", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections (clients see the provider go away)."""
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
                self._thread.join(timeout=5)
            self._server.server_close()
            self._server.close_connections()
        self._server = None
        self._thread = None

    def __enter__(self) -> "MockOpenAI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the mock is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # ---- recorded requests ------------------------------------------------------------------

    def _record(self, method: str, path: str, headers: Any, body: bytes) -> None:
        header_map: dict[str, str] = {}
        for name, value in headers:
            name = name.lower()
            header_map[name] = f"{header_map[name]}, {value}" if name in header_map else value
        try:
            parsed = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        entry = {"method": method, "path": path, "headers": header_map,
                 "body": body.decode("utf-8", errors="replace"), "json": parsed,
                 "time": time.time()}
        with self._lock:
            self._requests.append(entry)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of the recorded requests, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[dict[str, Any]]:
        """Recorded requests whose path (without query) is `path`."""
        return [r for r in self.requests if urlsplit(r["path"]).path == path]

    def clear_requests(self) -> int:
        with self._lock:
            n = len(self._requests)
            self._requests.clear()
            return n

    # ---- faults -----------------------------------------------------------------------------

    def set_faults(self, spec: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Replace the fault settings (see the module docstring); returns them."""
        state = FaultState.parse({**(spec or {}), **kwargs})
        with self._lock:
            self._faults = state
            return state.describe()

    def reset_faults(self) -> None:
        with self._lock:
            self._faults = FaultState()

    @property
    def faults(self) -> dict[str, Any]:
        with self._lock:
            return self._faults.describe()

    def _take_fault(self) -> tuple[int | None, int, Any]:
        with self._lock:
            return self._faults.take()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mock OpenAI-compatible provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)

    mock = MockOpenAI(api_key=args.api_key, host=args.host, port=args.port,
                      verbose=args.verbose).bind()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"READY port={mock.port}", flush=True)
    assert mock._server is not None
    try:
        mock._server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        mock._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
