#!/usr/bin/env python3
"""A mock Amazon Bedrock Runtime for Tollgate's tests. Standard library plus botocore.

It speaks the parts of the Bedrock Runtime REST API the gateway calls, with the real wire shapes:

- ``POST /model/{modelId}/converse``: a Converse response (``output.message`` echoing the last
  user text as ``echo: ...``, ``stopReason``, ``usage`` with ``inputTokens`` / ``outputTokens`` /
  ``totalTokens`` and, when the request holds a ``cachePoint``, ``cacheReadInputTokens`` or
  ``cacheWriteInputTokens``; ``metrics.latencyMs``). A request with ``toolConfig`` whose last user
  text mentions "weather" is answered with a ``toolUse`` block (``stopReason: tool_use``).
  ``inferenceConfig.maxTokens`` (words) and ``stopSequences`` cut the answer as Bedrock would.
- ``POST /model/{modelId}/converse-stream``: the same answer as AWS event-stream frames
  (``application/vnd.amazon.eventstream``; ``:event-type`` messageStart, contentBlockDelta per
  word, contentBlockStart/Delta/Stop for a tool use, messageStop, metadata; ``:content-type:
  application/json``, ``:message-type: event``), one HTTP chunk per frame, flushed.
- ``POST /model/{modelId}/invoke``: embeddings. Titan (``{"inputText"}`` →
  ``{"embedding": [...], "inputTextTokenCount": n}``) and Cohere (``{"texts": [...]}`` →
  ``{"embeddings": [[...]], "id", "response_type": "embeddings_floats", "texts"}``), with the
  token counts in ``X-Amzn-Bedrock-Input-Token-Count`` / ``-Output-Token-Count`` headers; and
  Anthropic Claude bodies (``anthropic_version``), answered and streamed
  (``/invoke-with-response-stream``, ``chunk`` frames) by ``bedrock_invoke.py``.

The model id arrives percent-encoded as one path segment (``%3A`` for ``:``, ``%2F`` for ``/``);
it is decoded and recorded as ``model_id``. Requests are validated the way Bedrock does (messages
present, starting with ``user``, alternating, content a list of one-member blocks, tool blocks
only with a ``toolConfig``...): a violation is a 400 ``ValidationException``.

Authentication, verified independently of the gateway with botocore's own SigV4 code: every
``/model/`` request needs either ``Authorization: AWS4-HMAC-SHA256 ...`` signed for service
``bedrock`` in the configured region with the configured access key / secret (and session
token, sent as ``X-Amz-Security-Token``, when one is configured), over the exact method, path as
sent (double-encoded in the canonical request, as SigV4 for non-S3 services requires), query,
signed headers and body hash; or ``Authorization: Bearer <api key>`` when an API key is
configured (Bedrock API keys). Failures get a 403 with ``x-amzn-errortype`` and a JSON
``{"message": ...}`` as AWS sends them (``InvalidSignatureException`` with "The request signature
we calculated does not match the signature you provided...", ``UnrecognizedClientException``,
``MissingAuthenticationTokenException``).

Test support (as in ``openai_mock.py``): ``MockBedrock.requests`` / ``GET|DELETE /__mock/requests``
record every request (``method``, ``path``, ``model_id``, ``headers`` lower-cased, ``body``,
``json``, ``time``); ``POST|GET|DELETE /__mock/faults`` set ``status`` (with a Bedrock error body
and ``x-amzn-errortype``), ``count``, ``delay_ms``, ``body``, ``chunk_delay_ms`` (between stream
frames), ``stream_exception`` (an exception type such as ``throttlingException`` or
``modelStreamErrorException`` sent as an exception frame inside the 200 stream) and
``stream_exception_after`` (how many text deltas come first, default 1).

Run standalone::

    python tests/mocks/bedrock_mock.py --port 0 --region us-east-1 \\
        --access-key AKIDEXAMPLE --secret-key SECRET [--session-token T] [--api-key KEY]

prints ``READY port=<n>`` once listening, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import struct
import sys
import time
import uuid
import zlib
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

try:  # run as `python tests/mocks/bedrock_mock.py` or imported as `mocks.bedrock_mock`
    from mocks.base import MockHandler, MockServer, note_stream_cut, run_standalone
    from mocks import bedrock_invoke
    from mocks.openai_mock import FaultState, MockError as _OpenAiMockError, embedding_vector
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from mocks import bedrock_invoke
    from mocks.base import MockHandler, MockServer, note_stream_cut, run_standalone
    from mocks.openai_mock import FaultState, MockError as _OpenAiMockError, embedding_vector

MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_EMBEDDING_DIMS = 8
MAX_CLOCK_SKEW_S = 300
SIGNATURE_MISMATCH = ("The request signature we calculated does not match the signature you "
                      "provided. Check your AWS Secret Access Key and signing method. Consult "
                      "the service documentation for details.")
_WORD_RE = re.compile(r"\s*\S+")
_AUTH_RE = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),"
                      r"\s*Signature=([0-9a-f]+)\s*$")
# Exception types inside a stream: (HTTP status it stands for, default message).
STREAM_EXCEPTIONS = {
    "throttlingException": "Too many requests, please wait before trying again.",
    "modelStreamErrorException": "The model stream failed (mock fault).",
    "validationException": "Input validation failed (mock fault).",
    "internalServerException": "The server encountered an internal error (mock fault).",
    "serviceUnavailableException": "The service is unavailable (mock fault).",
}
_FAULT_TYPES = {400: "ValidationException", 403: "AccessDeniedException",
                404: "ResourceNotFoundException", 408: "ModelTimeoutException",
                424: "ModelErrorException", 429: "ThrottlingException",
                500: "InternalServerException", 503: "ServiceUnavailableException"}


class BedrockError(Exception):
    """An error answered as AWS does: JSON ``{"message"}`` and ``x-amzn-errortype``."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


# ---- AWS event-stream framing -------------------------------------------------------------

def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string (type 7) headers."""
    raw = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 16 + len(raw) + len(payload)
    prelude = struct.pack(">II", total, len(raw))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + raw + payload
    return body + struct.pack(">I", zlib.crc32(body))


def decode_frames(data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """Decodes a whole event-stream body, checking both CRCs; raises ValueError if malformed."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 16:
            raise ValueError("truncated prelude")
        total, headers_len, prelude_crc = struct.unpack_from(">III", data, pos)
        if zlib.crc32(data[pos:pos + 8]) != prelude_crc:
            raise ValueError("prelude CRC mismatch")
        if total < 16 or headers_len > total - 16 or pos + total > len(data):
            raise ValueError("bad or truncated message")
        message = data[pos:pos + total]
        if zlib.crc32(message[:-4]) != struct.unpack(">I", message[-4:])[0]:
            raise ValueError("message CRC mismatch")
        headers: dict[str, Any] = {}
        h = message[12:12 + headers_len]
        i = 0
        while i < len(h):
            n = h[i]
            name = h[i + 1:i + 1 + n].decode()
            kind = h[i + 1 + n]
            i += 2 + n
            if kind in (0, 1):
                headers[name] = kind == 0
            elif kind in (6, 7):
                (length,) = struct.unpack_from(">H", h, i)
                value = h[i + 2:i + 2 + length]
                headers[name] = value.decode() if kind == 7 else value
                i += 2 + length
            else:
                size = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}.get(kind)
                if size is None:
                    raise ValueError(f"unknown header type {kind}")
                headers[name] = h[i:i + size]
                i += size
        out.append((headers, message[12 + headers_len:-4]))
        pos += total
    return out


def event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    # Bedrock pads event payloads with a "p" field of varying length (hides token lengths).
    padded = {**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"[:len(event_type) * 2]}
    return encode_frame({":event-type": event_type, ":content-type": "application/json",
                         ":message-type": "event"}, json.dumps(padded).encode())


def exception_frame(exception_type: str, message: str) -> bytes:
    return encode_frame({":exception-type": exception_type, ":content-type": "application/json",
                         ":message-type": "exception"}, json.dumps({"message": message}).encode())


# ---- SigV4 verification (botocore's signer, independent of the gateway's) ---------------------

class _Verifier(SigV4Auth):
    """botocore's SigV4 with the header set fixed to what the client says it signed."""

    def __init__(self, credentials: Credentials, region: str, signed: HTTPHeaders,
                 service: str = "bedrock") -> None:
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return self._signed


def verify_sigv4(method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes, *,
                 access_key: str, secret_key: str, session_token: str | None, region: str,
                 now: float | None = None, max_skew_s: float | None = MAX_CLOCK_SKEW_S,
                 service_name: str = "bedrock") -> None:
    """Raises BedrockError(403, ...) unless the request carries a valid SigV4 signature."""
    header_map: dict[str, list[str]] = {}
    for name, value in headers:
        header_map.setdefault(name.lower(), []).append(value)
    auth = (header_map.get("authorization") or [""])[0]
    match = _AUTH_RE.match(auth.strip())
    if not match:
        raise BedrockError(403, "IncompleteSignatureException",
                           "Authorization header requires 'Credential', 'SignedHeaders' and "
                           "'Signature' parameters.")
    credential, signed_names, signature = match.groups()
    parts = credential.split("/")
    if len(parts) != 5:
        raise BedrockError(403, "IncompleteSignatureException", "Malformed credential scope.")
    key_id, date, scope_region, service, terminator = parts
    if key_id != access_key:
        raise BedrockError(403, "UnrecognizedClientException",
                           "The security token included in the request is invalid.")
    amz_date = (header_map.get("x-amz-date") or [""])[0]
    if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date):
        raise BedrockError(403, "IncompleteSignatureException",
                           "Authorization header requires existence of either a 'X-Amz-Date' or "
                           "a 'Date' header.")
    if date != amz_date[:8] or terminator != "aws4_request" or service != service_name:
        raise BedrockError(403, "InvalidSignatureException",
                           f"Credential should be scoped to correct service: '{service_name}'. "
                           f"(scope {date}/{scope_region}/{service}/{terminator})")
    if scope_region != region:
        raise BedrockError(403, "InvalidSignatureException",
                           f"Credential should be scoped to a valid region, not '{scope_region}'.")
    if max_skew_s is not None:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        skew = abs((now if now is not None else time.time()) - signed_at.timestamp())
        if skew > max_skew_s:
            raise BedrockError(403, "InvalidSignatureException",
                               f"Signature expired: {amz_date} is now earlier or later than the "
                               f"allowed {int(max_skew_s)} seconds of clock skew.")
    names = signed_names.split(";")
    if "host" not in names:
        raise BedrockError(403, "InvalidSignatureException",
                           "'Host' must be a 'SignedHeader' in the AWS Authorization.")
    if session_token is not None:
        if header_map.get("x-amz-security-token") != [session_token] or \
                "x-amz-security-token" not in names:
            raise BedrockError(403, "UnrecognizedClientException",
                               "The security token included in the request is invalid.")
    body_hash = hashlib.sha256(body).hexdigest()
    declared = header_map.get("x-amz-content-sha256")
    if declared is not None and declared != [body_hash]:
        raise BedrockError(403, "InvalidSignatureException", SIGNATURE_MISMATCH)
    signed = HTTPHeaders()
    for name in names:
        if name not in header_map:
            raise BedrockError(403, "InvalidSignatureException", SIGNATURE_MISMATCH)
        for value in header_map[name]:
            signed[name] = value
    host = header_map["host"][0]
    request = AWSRequest(method=method, url=f"http://{host}{raw_path}", data=body)
    request.headers = HTTPHeaders()  # the payload line is hashed from `body` itself
    request.context["timestamp"] = amz_date
    verifier = _Verifier(Credentials(access_key, secret_key, session_token), region, signed,
                         service_name)
    canonical = verifier.canonical_request(request)
    expected = verifier.signature(verifier.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, signature):
        raise BedrockError(403, "InvalidSignatureException", SIGNATURE_MISMATCH)


# ---- answers ------------------------------------------------------------------------------

def _count_words(text: str) -> int:
    return len(text.split())


def _block_text(blocks: Any) -> str:
    if not isinstance(blocks, list):
        return ""
    return " ".join(b["text"] for b in blocks
                    if isinstance(b, dict) and isinstance(b.get("text"), str))


def _validate_converse(req: Any) -> None:
    def bad(message: str) -> BedrockError:
        return BedrockError(400, "ValidationException", message)

    if not isinstance(req, dict):
        raise bad("Malformed input request, please reformat your input and try again.")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("A conversation must start with a user message. Try again with a "
                  "conversation that starts with a user message.")
    has_tool_blocks = False
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise bad(f"1 validation error detected: Value at 'messages.{i + 1}.member.role' "
                      "failed to satisfy constraint: Member must satisfy enum value set: "
                      "[user, assistant]")
        if i == 0 and msg["role"] != "user":
            raise bad("A conversation must start with a user message. Try again with a "
                      "conversation that starts with a user message.")
        if i and messages[i - 1].get("role") == msg["role"]:
            raise bad("A conversation must alternate between user and assistant roles. Make "
                      "sure the conversation alternates between user and assistant roles and "
                      "try again.")
        content = msg.get("content")
        if not isinstance(content, list) or not content:
            raise bad(f"The content field in the Message object at messages.{i}.content is empty."
                      if isinstance(content, list) else
                      f"Value at 'messages.{i + 1}.member.content' must be a list of blocks.")
        for j, block in enumerate(content):
            if not isinstance(block, dict) or len(block) != 1:
                raise bad(f"messages.{i}.content.{j}: a content block must have exactly one member.")
            (kind, value), = block.items()
            if kind == "text" and (not isinstance(value, str) or not value.strip()):
                raise bad(f"The text field in the ContentBlock object at messages.{i}.content.{j} "
                          "is blank. Add text to the text field, and try again.")
            if kind in ("toolUse", "toolResult"):
                has_tool_blocks = True
    if has_tool_blocks and not isinstance(req.get("toolConfig"), dict):
        raise bad("The toolConfig field must be defined when using toolUse and toolResult "
                  "content blocks.")
    system = req.get("system")
    if system is not None and not isinstance(system, list):
        raise bad("Value at 'system' must be a list of blocks.")


def _tool_use(req: dict[str, Any], last_user: dict[str, Any], text: str) -> dict[str, Any] | None:
    tool_config = req.get("toolConfig")
    if not isinstance(tool_config, dict) or "weather" not in text.lower():
        return None
    if any(isinstance(b, dict) and "toolResult" in b for b in last_user.get("content", [])):
        return None
    names = [t["toolSpec"].get("name") for t in tool_config.get("tools") or []
             if isinstance(t, dict) and isinstance(t.get("toolSpec"), dict)]
    choice = tool_config.get("toolChoice") or {}
    if isinstance(choice.get("tool"), dict):
        names = [choice["tool"].get("name")]
    names = [n for n in names if isinstance(n, str) and n]
    if not names:
        return None
    match = re.search(r"\bin ([A-Za-z][A-Za-z ]*)", text)
    location = match.group(1).strip() if match else "unknown"
    return {"toolUseId": "tooluse_" + uuid.uuid4().hex[:22], "name": names[0],
            "input": {"location": location}}


class _Answer:
    """What the mock answers to one Converse request (shared by Converse and ConverseStream)."""

    def __init__(self, mock: "MockBedrock", req: dict[str, Any]) -> None:
        _validate_converse(req)
        messages = req["messages"]
        last_user = next(m for m in reversed(messages) if m["role"] == "user")
        user_text = _block_text(last_user["content"]) or " ".join(
            _block_text(b["toolResult"].get("content")) for b in last_user["content"]
            if isinstance(b, dict) and isinstance(b.get("toolResult"), dict))
        self.tool_use = _tool_use(req, last_user, user_text)
        self.stop_reason = "tool_use" if self.tool_use else "end_turn"
        words: list[str] = []
        if self.tool_use is None:
            words = _WORD_RE.findall(("echo: " + user_text).strip())
            inference = req.get("inferenceConfig") or {}
            max_tokens = inference.get("maxTokens")
            if isinstance(max_tokens, int) and len(words) > max_tokens:
                words, self.stop_reason = words[:max_tokens], "max_tokens"
            text = "".join(words)
            for stop in inference.get("stopSequences") or []:
                if isinstance(stop, str) and stop and stop in text:
                    text, self.stop_reason = text[:text.index(stop)], "stop_sequence"
                    words = _WORD_RE.findall(text)
        self.words = words
        self.text = "".join(words)
        # Usage: words as tokens. Text before a cachePoint is a cache write the first time this
        # mock sees that prefix and a cache read after; inputTokens excludes both, as on Bedrock.
        prefix: list[str] = []
        seen: list[str] = []
        for block in req.get("system") or []:
            seen.append(_block_text([block]))
            if isinstance(block, dict) and "cachePoint" in block:
                prefix = list(seen)
        for msg in messages:
            for block in msg["content"]:
                if isinstance(block, dict) and "cachePoint" in block:
                    prefix = list(seen)
                seen.append(_block_text([block]) or json.dumps(block.get("toolUse", block.get("toolResult", ""))))
        total_in = sum(_count_words(s) for s in seen)
        cached = sum(_count_words(s) for s in prefix)
        self.cache_read = self.cache_write = None
        if prefix:
            key = hashlib.sha256(json.dumps(prefix).encode()).hexdigest()
            if mock._remember_cache(key):
                self.cache_read = cached
            else:
                self.cache_write = cached
        self.input_tokens = total_in - cached
        if self.tool_use is not None:
            self.output_tokens = _count_words(json.dumps(self.tool_use["input"]).replace('"', " "))
        else:
            self.output_tokens = len(words)

    def usage(self) -> dict[str, Any]:
        usage = {"inputTokens": self.input_tokens, "outputTokens": self.output_tokens,
                 "totalTokens": self.input_tokens + self.output_tokens
                 + (self.cache_read or 0) + (self.cache_write or 0)}
        if self.cache_read is not None:
            usage["cacheReadInputTokens"] = self.cache_read
            usage["cacheWriteInputTokens"] = 0
        if self.cache_write is not None:
            usage["cacheReadInputTokens"] = 0
            usage["cacheWriteInputTokens"] = self.cache_write
        return usage

    def content(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if self.text:
            blocks.append({"text": self.text})
        if self.tool_use is not None:
            blocks.append({"toolUse": self.tool_use})
        return blocks


# ---- HTTP ---------------------------------------------------------------------------------

class _Handler(MockHandler):
    server_version = "bedrock-mock/1"
    mock_name = "bedrock-mock"
    mock_errors = (BedrockError, _OpenAiMockError)
    max_body_bytes = MAX_BODY_BYTES
    body_errors_close = False
    announce_close = False

    def _error_response(self, code: int, message: str | None) -> None:
        self._send_error(BedrockError(code, "ValidationException", message or "Bad request."))

    def _answer_error(self, err: BaseException) -> None:
        if isinstance(err, BedrockError):
            self._send_error(err)
        else:
            assert isinstance(err, _OpenAiMockError)
            self._send_json(err.status, err.body)

    def _answer_internal_error(self) -> None:
        self._send_error(BedrockError(500, "InternalServerException",
                                      "The mock server had an internal error."))

    def _body_error(self, reason: str) -> Exception:
        if reason == "chunked":
            return BedrockError(400, "ValidationException", "Malformed chunked body.")
        return BedrockError(413, "ValidationException", "Request body too large.")

    def _request_id_header(self) -> tuple[str, str]:
        return "x-amzn-RequestId", str(uuid.uuid4())

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BedrockError(400, "ValidationException", "Invalid Content-Length.") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise self._body_error("too_large")
        return self.rfile.read(length)

    def _send_error(self, err: BedrockError) -> None:
        self._send_json(err.status, {"message": err.message},
                        {"x-amzn-ErrorType": f"{err.error_type}:http://internal.amazon.com/"
                                             "coral/com.amazon.bedrock/"})

    def _parse_fault_spec(self, body: bytes) -> Any:
        try:
            return json.loads(body or b"{}")
        except ValueError:
            raise BedrockError(400, "ValidationException", "Fault settings must be JSON.") from None

    def _control_not_found(self, path: str) -> Exception:
        return BedrockError(404, "UnknownOperationException", f"Unknown path {path}")

    def _serve_api(self, path: str, body: bytes) -> None:
        mock = self.server.mock
        match = re.fullmatch(r"/model/([^/]+)/(converse|converse-stream|invoke|invoke-with-response-stream)",
                             path)
        if match is None or self.command != "POST":
            raise BedrockError(404, "UnknownOperationException", "Unknown operation.")
        status, delay_ms, fault_body = mock._take_fault()
        if delay_ms:
            time.sleep(delay_ms / 1000.0)
        self._check_auth(body)
        if status is not None:
            if isinstance(fault_body, (dict, list)):
                self._send_json(status, fault_body, {"x-amzn-ErrorType": _FAULT_TYPES.get(status, "MockFault")})
                return
            raise BedrockError(status, _FAULT_TYPES.get(status, "MockFault"),
                               fault_body if isinstance(fault_body, str) else f"Mock fault {status}.")
        model_id = unquote(match.group(1))
        try:
            req = json.loads(body)
        except ValueError:
            raise BedrockError(400, "ValidationException",
                               "Malformed input request, please reformat your input and try again.") from None
        action = match.group(2)
        started = time.monotonic()
        if action == "invoke" and not bedrock_invoke.is_anthropic_body(req):
            self._invoke(model_id, req)
            return
        if action.startswith("invoke"):
            if not bedrock_invoke.is_anthropic_body(req):
                raise BedrockError(400, "ValidationException", "Malformed input request: this "
                                   "mock streams Anthropic Claude bodies only.")
            answer = _Answer(mock, bedrock_invoke.converse_request(req))
            message = bedrock_invoke.message(answer, model_id)
            mock.last_usage = dict(message["usage"])
            if action == "invoke":
                self._send_json(200, message, {
                    "X-Amzn-Bedrock-Input-Token-Count": str(answer.input_tokens),
                    "X-Amzn-Bedrock-Output-Token-Count": str(answer.output_tokens)})
                return
            latency = int((time.monotonic() - started) * 1000) + 1
            self._stream_frames([bedrock_invoke.chunk_frame(encode_frame, e) for e in
                                 bedrock_invoke.stream_events(message, answer.words, latency)],
                                text_frames=len(answer.words), first_text=2)
            return
        answer = _Answer(mock, req)
        mock.last_usage = answer.usage()
        if action == "converse":
            self._send_json(200, {
                "output": {"message": {"role": "assistant", "content": answer.content()}},
                "stopReason": answer.stop_reason,
                "usage": answer.usage(),
                "metrics": {"latencyMs": int((time.monotonic() - started) * 1000) + 1},
            })
        else:
            self._stream(answer, started)

    def _check_auth(self, body: bytes) -> None:
        mock = self.server.mock
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            if mock.api_key is None or not hmac.compare_digest(auth[7:].strip(), mock.api_key):
                raise BedrockError(403, "AccessDeniedException", "Invalid API Key format: Must "
                                   "start with pre-defined prefix" if mock.api_key is None else
                                   "Authentication failed: Please make sure your API Key is valid.")
            return
        if not auth:
            raise BedrockError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        match = _AUTH_RE.match(auth.strip())
        key_id = match.group(1).split("/", 1)[0] if match else ""
        access_key, secret_key, session_token = mock.credentials_for(key_id)
        verify_sigv4(self.command, self.path, self.headers.items(), body,
                     access_key=access_key, secret_key=secret_key,
                     session_token=session_token, region=mock.region,
                     max_skew_s=mock.max_skew_s)

    def _stream(self, answer: _Answer, started: float) -> None:
        mock = self.server.mock
        faults = mock._stream_faults()
        frames = [event_frame("messageStart", {"role": "assistant"})]
        exception = faults["stream_exception"]
        after = faults["stream_exception_after"]
        if exception:
            note_stream_cut(mock)
        for i, word in enumerate(answer.words):
            if exception and i == after:
                break
            frames.append(event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": word}}))
        if exception:
            frames.append(exception_frame(exception, STREAM_EXCEPTIONS.get(exception, f"{exception} (mock fault)")))
        else:
            index = 0
            if answer.words:
                frames.append(event_frame("contentBlockStop", {"contentBlockIndex": 0}))
                index = 1
            if answer.tool_use is not None:
                tool = answer.tool_use
                frames.append(event_frame("contentBlockStart", {
                    "contentBlockIndex": index,
                    "start": {"toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}}))
                args = json.dumps(tool["input"])
                for start in range(0, len(args), 8):
                    frames.append(event_frame("contentBlockDelta", {
                        "contentBlockIndex": index, "delta": {"toolUse": {"input": args[start:start + 8]}}}))
                frames.append(event_frame("contentBlockStop", {"contentBlockIndex": index}))
            frames.append(event_frame("messageStop", {"stopReason": answer.stop_reason}))
            frames.append(event_frame("metadata", {
                "usage": answer.usage(),
                "metrics": {"latencyMs": int((time.monotonic() - started) * 1000) + 1}}))
        self._start_chunked("application/vnd.amazon.eventstream")
        delay = faults["chunk_delay_ms"] / 1000.0
        for i, frame in enumerate(frames):
            if i and delay:
                time.sleep(delay)
            self._write_chunk(frame)
        self._write_chunk(b"")

    def _stream_frames(self, frames: list[bytes], text_frames: int, first_text: int) -> None:
        """Send event frames; a configured ``stream_exception`` replaces everything after the
        first ``stream_exception_after`` text frames (which start at index ``first_text``)."""
        faults = self.server.mock._stream_faults()
        exception = faults["stream_exception"]
        if exception:
            note_stream_cut(self.server.mock)
            keep = first_text + min(faults["stream_exception_after"], text_frames)
            frames = frames[:keep] + [exception_frame(
                exception, STREAM_EXCEPTIONS.get(exception, f"{exception} (mock fault)"))]
        self._start_chunked("application/vnd.amazon.eventstream",
                            extra_headers={"X-Amzn-Bedrock-Content-Type": "application/json"})
        delay = faults["chunk_delay_ms"] / 1000.0
        for i, frame in enumerate(frames):
            if i and delay:
                time.sleep(delay)
            self._write_chunk(frame)
        self._write_chunk(b"")

    def _invoke(self, model_id: str, req: Any) -> None:
        if not isinstance(req, dict):
            raise BedrockError(400, "ValidationException", "Malformed input request.")
        if isinstance(req.get("inputText"), str):  # Amazon Titan embeddings
            dims = req.get("dimensions", DEFAULT_EMBEDDING_DIMS)
            if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 4096:
                raise BedrockError(400, "ValidationException", "Malformed input request: "
                                   "#/dimensions: expected an integer.")
            text = req["inputText"]
            count = max(1, _count_words(text))
            self._send_json(200, {"embedding": embedding_vector(text, dims),
                                  "inputTextTokenCount": count}, _token_headers(count))
        elif isinstance(req.get("texts"), list) and req["texts"] and \
                all(isinstance(t, str) for t in req["texts"]):  # Cohere embeddings
            self._send_json(200, {
                "embeddings": [embedding_vector(t, DEFAULT_EMBEDDING_DIMS) for t in req["texts"]],
                "id": str(uuid.uuid4()), "response_type": "embeddings_floats",
                "texts": req["texts"]}, _token_headers(cohere_input_tokens(req["texts"])))
        else:
            raise BedrockError(400, "ValidationException",
                               f"Malformed input request for model {model_id}: expected "
                               "'inputText' (Titan) or 'texts' (Cohere).")


def cohere_input_tokens(texts: list[str]) -> int:
    """The mock's token count for a Cohere Embed request: words, at least one per text."""
    return sum(max(1, _count_words(t)) for t in texts)


def _token_headers(input_tokens: int) -> dict[str, str]:
    # Bedrock reports InvokeModel's token counts in response headers (not in botocore's service
    # model: they are read from the raw HTTP response, ResponseMetadata.HTTPHeaders).
    return {"X-Amzn-Bedrock-Input-Token-Count": str(input_tokens),
            "X-Amzn-Bedrock-Output-Token-Count": "0"}


class _BedrockFaults(FaultState):
    """The OpenAI mock's fault settings plus the in-stream exception knobs."""

    EXTRA = ("stream_exception", "stream_exception_after")

    def __init__(self) -> None:
        super().__init__()
        self.stream_exception: str | None = None
        self.stream_exception_after = 1

    @classmethod
    def parse(cls, spec: Any) -> "_BedrockFaults":
        if not isinstance(spec, dict):
            raise BedrockError(400, "ValidationException", "Fault settings must be a JSON object.")
        base = FaultState.parse({k: v for k, v in spec.items() if k not in cls.EXTRA})
        state = cls()
        state.__dict__.update(base.__dict__)
        exception = spec.get("stream_exception")
        if exception is not None and not isinstance(exception, str):
            raise BedrockError(400, "ValidationException", "'stream_exception' must be a string.")
        after = spec.get("stream_exception_after", 1)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise BedrockError(400, "ValidationException",
                               "'stream_exception_after' must be a non-negative integer.")
        state.stream_exception, state.stream_exception_after = exception, after
        return state

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "stream_exception": self.stream_exception,
                "stream_exception_after": self.stream_exception_after}


class MockBedrock(MockServer):
    """The mock Bedrock Runtime, for use in process (or through `main()` as a subprocess)."""

    thread_name = "bedrock-mock"
    handler_class = _Handler
    fault_class = _BedrockFaults

    def __init__(self, access_key: str = "AKIDMOCKBEDROCK", secret_key: str = "mock-secret-key",
                 session_token: str | None = None, region: str = "us-east-1",
                 api_key: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 max_skew_s: float | None = MAX_CLOCK_SKEW_S, verbose: bool = False) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.session_token = session_token
        self.region = region
        self.api_key = api_key
        self.max_skew_s = max_skew_s
        self._cache: set[str] = set()
        self._also_accepted: dict[str, tuple[str, str, str | None]] = {}
        super().__init__(host, port, verbose)

    # ---- accepted AWS keys -------------------------------------------------------------------

    def accept(self, *keys: tuple[str, str, str | None]) -> None:
        """Accept exactly these (access key, secret, session token) triples from now on (the
        first becomes ``access_key``/``secret_key``/``session_token``): keys being rotated can
        overlap."""
        with self._lock:
            self.access_key, self.secret_key, self.session_token = keys[0]
            self._also_accepted = {k[0]: k for k in keys[1:]}

    def credentials_for(self, key_id: str) -> tuple[str, str, str | None]:
        """The accepted keys with this access key id (the main ones when none is)."""
        with self._lock:
            if key_id in self._also_accepted and key_id != self.access_key:
                return self._also_accepted[key_id]
            return self.access_key, self.secret_key, self.session_token

    # ---- recorded requests (the rest is in base.MockServer) ---------------------------------

    def _record_fields(self, path: str) -> dict[str, Any]:
        match = re.match(r"/model/([^/?]+)/", path)
        return {"model_id": unquote(match.group(1)) if match else None}

    def _remember_cache(self, key: str) -> bool:
        """True if this cache prefix was seen before (a read); records it otherwise."""
        with self._lock:
            if key in self._cache:
                return True
            self._cache.add(key)
            return False

    # ---- faults (the rest is in base.MockServer) ------------------------------------------

    def _stream_faults(self) -> dict[str, Any]:
        with self._lock:
            return self._faults.describe()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mock Amazon Bedrock Runtime")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--access-key", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--session-token")
    parser.add_argument("--api-key", help="also accept Authorization: Bearer <api key>")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    mock = MockBedrock(access_key=args.access_key, secret_key=args.secret_key,
                       session_token=args.session_token, region=args.region,
                       api_key=args.api_key, host=args.host, port=args.port,
                       verbose=args.verbose).bind()
    return run_standalone(mock)


if __name__ == "__main__":
    sys.exit(main())
