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
- Azure OpenAI (``/openai/deployments/{name}/...?api-version=``, ``api-key``): the same answers
  with Azure's content filtering: ``prompt_filter_results`` (on a non-streamed completion, and in
  a first stream chunk with ``choices: []`` and an empty ``model``), ``content_filter_results``
  per choice, and an answer whose user text contains ``AZURE_FILTER_TRIGGER`` cut before it with
  ``finish_reason: "content_filter"``.

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
  until reset), ``headers`` (extra response headers of a fault answer, e.g. ``Retry-After``),
  ``abort_after_chunks`` (a stream sends that many SSE events, then the connection is dropped
  without the terminating chunk, as a provider crashing mid-stream; until reset).
  ``DELETE /__mock/faults`` resets; ``GET /__mock/faults`` shows them.

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
import socket
from urllib.parse import urlsplit
import struct
import sys
import time
import uuid
from typing import Any

try:  # imported as `mocks.openai_mock`, or run as `python tests/mocks/openai_mock.py`
    from mocks.base import MockHandler, MockServer, _is_int, _Server, run_standalone  # noqa: F401
    from mocks import openai_responses
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from mocks.base import MockHandler, MockServer, _is_int, _Server, run_standalone  # noqa: F401
    from mocks import openai_responses

MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_EMBEDDING_DIMS = 8
DEFAULT_MODELS = ("mock-model-1", "mock-model-2")
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_WORD_RE = re.compile(r"\s*\S+")
# Azure: user text containing this is answered up to it, then `finish_reason: content_filter`.
AZURE_FILTER_TRIGGER = "forbidden-topic"
_SAFE = {"filtered": False, "severity": "safe"}
AZURE_FILTER_RESULTS = {k: _SAFE for k in ("hate", "self_harm", "sexual", "violence")}
AZURE_PROMPT_FILTER = [{"prompt_index": 0, "content_filter_results": AZURE_FILTER_RESULTS}]


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

    KEYS = ("status", "count", "delay_ms", "body", "chunk_delay_ms", "headers",
            "abort_after_chunks")

    def __init__(self) -> None:
        self.status: int | None = None
        self.remaining: int | None = None
        self.delay_ms = 0
        self.body: Any = None
        self.chunk_delay_ms = 0
        self.headers: dict[str, str] = {}
        self.abort_after_chunks: int | None = None

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
        headers = spec.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise MockError(400, "'headers' must be an object of strings.", param="headers")
        state.headers = headers
        abort = spec.get("abort_after_chunks")
        if abort is not None and (not _is_int(abort) or abort < 0):
            raise MockError(400, "'abort_after_chunks' must be a non-negative integer.",
                            param="abort_after_chunks")
        state.abort_after_chunks = abort
        return state

    def describe(self) -> dict[str, Any]:
        return {"status": self.status, "count": self.remaining, "delay_ms": self.delay_ms,
                "body": self.body, "chunk_delay_ms": self.chunk_delay_ms,
                "headers": self.headers, "abort_after_chunks": self.abort_after_chunks}

    def take(self) -> tuple[int | None, int, Any]:
        """Consume one request's fault: (status or None, delay_ms, body)."""
        if self.status is None and self.delay_ms == 0:
            return None, 0, None
        if self.remaining is not None:
            if self.remaining <= 0:
                return None, 0, None
            self.remaining -= 1
        return self.status, self.delay_ms, self.body


class _Handler(MockHandler):
    server_version = "openai-mock/1"
    mock_name = "openai-mock"
    mock_errors = (MockError,)
    max_body_bytes = MAX_BODY_BYTES

    # ---- plumbing (the rest is in base.MockHandler) -----------------------------------------

    def do_PATCH(self) -> None:  # noqa: N802 (stdlib naming)
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._dispatch()

    def _error_response(self, code: int, message: str | None) -> None:
        """Errors found by the stdlib's request parsing, in OpenAI format instead of HTML."""
        self._send_json(code, error_body(message or "Bad request.", "invalid_request_error"))

    def _answer_error(self, err: BaseException) -> None:
        assert isinstance(err, MockError)
        self._send_json(err.status, err.body)

    def _answer_internal_error(self) -> None:
        self._send_json(500, error_body("The mock server had an internal error.", "server_error"))

    def _body_error(self, reason: str) -> Exception:
        if reason == "chunked":
            return MockError(400, "Malformed chunked request body.")
        if reason == "length":
            return MockError(400, "Invalid Content-Length header.")
        return MockError(413, "Request body too large for the mock.")

    def _request_id_header(self) -> tuple[str, str]:
        return "x-request-id", "req_" + uuid.uuid4().hex

    # ---- control endpoints (routes in base.MockHandler._control) ----------------------------

    def _parse_fault_spec(self, body: bytes) -> Any:
        return _parse_json(body)

    def _control_not_found(self, path: str) -> Exception:
        return MockError(404, f"Invalid URL ({self.command} {path})")

    # ---- API --------------------------------------------------------------------------------

    def _serve_api(self, path: str, body: bytes) -> None:
        mock = self.server.mock
        azure = re.fullmatch(r"/openai/deployments/([^/]+)/(chat/completions|embeddings)", path)
        self._azure = azure is not None  # one handler serves every request of a connection
        if azure:
            # Azure OpenAI: `api-key` header and an `api-version` query parameter.
            if "api-version=" not in urlsplit(self.path).query:
                raise MockError(404, "Resource not found", "invalid_request_error")
            if self.headers.get("api-key") != mock.api_key:
                raise MockError(401, "Access denied due to invalid subscription key.",
                                "invalid_request_error", None, "401")
            path = "/v1/" + azure.group(2)
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
        elif path == "/v1/responses" and self.command == "POST":
            self._responses(_parse_json(body))
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
        headers = self.server.mock.faults.get("headers") or {}
        if isinstance(fault_body, str):
            self._send_raw(status, fault_body.encode(), "text/plain; charset=utf-8", headers)
        elif fault_body is not None:
            self._send_json(status, fault_body, headers)
        else:
            self._send_json(status, default_fault_body(status, self._presented_key()), headers)

    def _presented_key(self) -> str | None:
        auth = self.headers.get("Authorization")
        if auth is None:
            return None
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else auth

    def _check_auth(self) -> None:
        if getattr(self, "_azure", False):
            return
        key = self._presented_key()
        if not key:
            raise MockError(401, "You didn't provide an API key. You need to provide your API "
                                 "key in an Authorization header using Bearer auth (i.e. "
                                 "Authorization: Bearer YOUR_KEY).", "invalid_request_error")
        if key != self.server.mock.api_key and key not in self.server.mock.also_accept:
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
        finish = "tool_calls" if tool_call else "stop"
        # The output limit (the spec: "an upper bound for the number of tokens that can be
        # generated"; `finish_reason` "length" when reached): the echo cut to it, a word a token.
        limit = req.get("max_completion_tokens", req.get("max_tokens"))
        if content is not None and isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < completion_tokens:
            content, completion_tokens, finish = " ".join(content.split()[:limit]), limit, "length"
        azure = getattr(self, "_azure", False)
        if azure and content is not None and AZURE_FILTER_TRIGGER in content:
            content = content[:content.index(AZURE_FILTER_TRIGGER)].rstrip()
            completion_tokens, finish = count_words(content), "content_filter"
        usage = _usage(prompt_tokens, completion_tokens)
        self.server.mock.last_usage = usage
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if stream:
            include_usage = bool((stream_options or {}).get("include_usage"))
            self._stream_chat(completion_id, created, model, content, tool_call, usage,
                              include_usage, finish)
            return
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None,
                                   "annotations": []}
        if tool_call is not None:
            message["tool_calls"] = [tool_call]
        completion = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish}],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }
        if azure:
            completion["prompt_filter_results"] = AZURE_PROMPT_FILTER
            completion["choices"][0]["content_filter_results"] = AZURE_FILTER_RESULTS
        self._send_json(200, completion)

    def _stream_chat(self, completion_id: str, created: int, model: str, content: str | None,
                     tool_call: dict[str, Any] | None, usage: dict[str, Any],
                     include_usage: bool, finish: str = "stop") -> None:
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
        if getattr(self, "_azure", False):
            events.append({"id": "", "object": "", "created": 0, "model": "",
                           "prompt_filter_results": AZURE_PROMPT_FILTER, "choices": []})
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
            events.append(chunk(choice({}, finish)))
        if include_usage:
            events.append(chunk([], usage))

        self._start_chunked("text/event-stream; charset=utf-8", cache_control=True)
        delay = self.server.mock.faults["chunk_delay_ms"] / 1000.0
        payloads = [json.dumps(e) for e in events] + ["[DONE]"]
        abort = self.server.mock.faults.get("abort_after_chunks")
        for i, data in enumerate(payloads):
            if abort is not None and i == abort:
                # A provider crashing mid-stream: no terminating chunk, the connection drops.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if i and delay:
                time.sleep(delay)
            self._write_chunk(f"data: {data}\n\n".encode())
        self._write_chunk(b"")

    def _responses(self, req: dict[str, Any]) -> None:
        """`POST /v1/responses` (see `openai_responses`)."""
        def stream(frames: list[bytes]) -> None:
            self._start_chunked("text/event-stream; charset=utf-8", cache_control=True)
            for frame in frames:
                self._write_chunk(frame)
            self._write_chunk(b"")
        try:
            openai_responses.serve(req, self._send_json, stream)
        except openai_responses.ResponsesError as e:
            raise MockError(400, str(e), param=e.param) from None

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


class MockOpenAI(MockServer):
    """The mock provider, for use in process (or through `main()` as a subprocess)."""

    thread_name = "openai-mock"
    handler_class = _Handler
    fault_class = FaultState

    def __init__(self, api_key: str = "sk-mock-key", host: str = "127.0.0.1", port: int = 0,
                 models: tuple[str, ...] = DEFAULT_MODELS, verbose: bool = False) -> None:
        self.api_key = api_key
        # More keys valid at once, as an account with several active keys (key rotation).
        self.also_accept: set[str] = set()
        self.models = tuple(models)
        super().__init__(host, port, verbose)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mock OpenAI-compatible provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)

    mock = MockOpenAI(api_key=args.api_key, host=args.host, port=args.port,
                      verbose=args.verbose).bind()
    return run_standalone(mock)


if __name__ == "__main__":
    sys.exit(main())
