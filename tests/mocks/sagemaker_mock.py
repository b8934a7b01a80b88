"""Mock Amazon SageMaker Runtime endpoint serving an OpenAI-style chat container (test support).

- ``POST /endpoints/{name}/invocations``: the container's OpenAI ``chat.completion`` JSON.
- ``POST /endpoints/{name}/invocations-response-stream``: the container's OpenAI SSE stream
  wrapped in AWS event-stream ``PayloadPart`` frames (``{"Bytes": <base64>}``), cut at awkward
  places on purpose: inside an SSE event and inside a UTF-8 character, several events per part.
- Every request must carry a valid SigV4 signature for service ``sagemaker`` (checked with
  botocore's signer via ``bedrock_mock.verify_sigv4``); otherwise 403 as AWS answers.
- ``requests`` records what arrived (method, path, headers, body).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

try:
    from .base import _Server, write_chunk
    from .bedrock_mock import BedrockError, encode_frame, verify_sigv4
except ImportError:  # run as a script / imported without the package
    from base import _Server, write_chunk  # type: ignore[no-redef]
    from bedrock_mock import BedrockError, encode_frame, verify_sigv4  # type: ignore[no-redef]

ANSWER_PREFIX = "sagemaker says: "


def _answer(req: dict[str, Any]) -> tuple[str, dict[str, int]]:
    messages = req.get("messages") or []
    last = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {})
    content = last.get("content")
    text = content if isinstance(content, str) else " ".join(
        p.get("text", "") for p in content or [] if isinstance(p, dict))
    answer = ANSWER_PREFIX + "naïve " + text
    prompt = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
    completion = len(answer.split())
    return answer, {"prompt_tokens": prompt, "completion_tokens": completion,
                    "total_tokens": prompt + completion}


def sse_body(req: dict[str, Any]) -> bytes:
    answer, usage = _answer(req)
    cid = "chatcmpl-sm" + uuid.uuid4().hex[:12]
    base = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": req.get("model", "")}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}]
    for i, word in enumerate(answer.split(" ")):
        events.append({**base, "choices": [{"index": 0, "delta": {"content": (" " if i else "") + word},
                                            "finish_reason": None}]})
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (req.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": usage})
    out = b"".join(b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\n\n" for e in events)
    return out + b"data: [DONE]\n\n"


def payload_parts(stream: bytes, sizes: tuple[int, ...] = (7, 53, 3, 120, 1)) -> list[bytes]:
    """Cuts the container stream into parts of cycling sizes (mid-event, mid-character)."""
    parts, pos, i = [], 0, 0
    while pos < len(stream):
        size = sizes[i % len(sizes)]
        parts.append(stream[pos:pos + size])
        pos += size
        i += 1
    return [encode_frame({":event-type": "PayloadPart", ":content-type": "application/json",
                          ":message-type": "event"},
                         json.dumps({"Bytes": base64.b64encode(p).decode()}).encode())
            for p in parts]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        mock: MockSageMaker = self.server.mock  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        path = urlsplit(self.path).path
        with mock.lock:
            mock.requests.append({"method": "POST", "path": self.path,
                                  "headers": {k.lower(): v for k, v in self.headers.items()},
                                  "body": body})
        try:
            verify_sigv4("POST", self.path, list(self.headers.items()), body,
                         access_key=mock.access_key, secret_key=mock.secret_key,
                         session_token=None, region=mock.region, service_name="sagemaker")
            parts = path.split("/")
            if len(parts) != 4 or parts[1] != "endpoints" or parts[3] not in (
                    "invocations", "invocations-response-stream"):
                raise BedrockError(404, "ValidationException", f"unknown path {path}")
            if unquote(parts[2]) != mock.endpoint:
                raise BedrockError(400, "ValidationException",
                                   f"Endpoint {unquote(parts[2])} not found.")
            req = json.loads(body)
            if parts[3] == "invocations":
                answer, usage = _answer(req)
                self._send(200, "application/json", json.dumps({
                    "id": "chatcmpl-sm", "object": "chat.completion", "created": int(time.time()),
                    "model": req.get("model", ""),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                 "finish_reason": "stop"}],
                    "usage": usage}).encode())
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.amazon.eventstream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for frame in payload_parts(sse_body(req)):
                write_chunk(self.wfile, frame)
            write_chunk(self.wfile, b"")
        except BedrockError as err:
            self.send_response(err.status)
            payload = json.dumps({"message": err.message}).encode()
            self.send_header("x-amzn-errortype", err.error_type)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except ValueError:
            self._send(400, "application/json", b'{"message":"invalid JSON"}')

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class MockSageMaker:
    def __init__(self, endpoint: str = "llm-endpoint", access_key: str = "AKIDMOCKSAGEMAKER",
                 secret_key: str = "mock-sagemaker-secret", region: str = "us-east-1") -> None:
        self.endpoint = endpoint
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.mock = self  # type: ignore[assignment]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> "MockSageMaker":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
