"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import json
import select
import socket
import time
import uuid
from typing import Any

import requests

from harness import http

PROVIDER_KEY_ENV = "MOCK_OPENAI_KEY"
WRONG_KEY_ENV = "MOCK_WRONG_KEY"
MODEL_NAMES = {"gpt-mock", "other-model", "demo", "wrong-key", "unreachable", "as-sent"}
CHAT_PATH = "/v1/chat/completions"


def unique() -> str:
    """A single word unique to one test, to find that test's requests at the mock."""
    return "tok" + uuid.uuid4().hex[:16]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def user_message(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def post_chat(gw: Any, secret: str | None, body: Any,
              headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
    """A raw POST /v1/chat/completions; `body` is JSON-encoded unless it is bytes or str."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if secret is not None:
        all_headers.update(bearer(secret))
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return http("POST", f"{gw.base_url}/chat/completions", data=data, headers=all_headers,
                **kwargs)


def assert_openai_error(resp: requests.Response, status: int | None = None) -> dict[str, Any]:
    """The response is an OpenAI-format JSON error (with `status` if given); returns `error`."""
    return assert_openai_error_parts(resp.status_code, resp.headers, resp.content, status)


def assert_openai_error_parts(actual: int, headers: Any, body: bytes,
                              status: int | None = None) -> dict[str, Any]:
    detail = f"{actual} {headers.get('content-type')} {body[:500]!r}"
    if status is not None:
        assert actual == status, detail
    assert actual >= 400, detail
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    assert content_type == "application/json", detail
    parsed = json.loads(body)
    assert isinstance(parsed, dict) and isinstance(parsed.get("error"), dict), detail
    error = parsed["error"]
    assert {"message", "type", "param", "code"} <= set(error), detail
    assert isinstance(error["message"], str) and error["message"], detail
    assert isinstance(error["type"], str) and error["type"], detail
    return error


def mock_requests_with(mock: Any, needle: str) -> list[dict[str, Any]]:
    """Requests the mock received whose body contains `needle`."""
    return [r for r in mock.requests if needle in r["body"]]


def raw_post_large(host: str, port: int, path: str, headers: dict[str, str], body_size: int,
                   timeout: float = 20.0) -> tuple[int, dict[str, str], bytes]:
    """POST a JSON body of `body_size` bytes over a raw socket and read the response.

    The server may answer (413) before the body is sent and then close the connection; this
    keeps reading while it writes, stops writing once a response arrives, and tolerates the
    connection being reset under a write. Returns (status, headers lower-cased, body).
    """
    prefix = b'{"model": "gpt-mock", "messages": [{"role": "user", "content": "'
    suffix = b'"}]}'
    filler = body_size - len(prefix) - len(suffix)
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}",
            "Content-Type: application/json", f"Content-Length: {body_size}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    request_head = ("\r\n".join(head) + "\r\n\r\n").encode()
    pieces = [request_head, prefix, *_repeat(b"x", filler, 256 * 1024), suffix]

    deadline = time.monotonic() + timeout
    received = bytearray()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setblocking(False)
        writing = True
        pending = memoryview(b"")
        while time.monotonic() < deadline:
            if writing and not pending:
                if pieces:
                    pending = memoryview(pieces.pop(0))
                else:
                    writing = False
            readable, writable, _ = select.select([sock], [sock] if writing else [], [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                received += data
                writing = False  # the server has answered: stop sending
                if _response_complete(received):
                    break
            if writable and writing:
                try:
                    sent = sock.send(pending)
                    pending = pending[sent:]
                except (BrokenPipeError, ConnectionResetError):
                    writing = False
    return _parse_response(bytes(received))


def _repeat(byte: bytes, count: int, step: int) -> list[bytes]:
    return [byte * min(step, count - i) for i in range(0, count, step)]


def _split_head(data: bytes) -> tuple[int, dict[str, str], bytes] | None:
    if b"\r\n\r\n" not in data:
        return None
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _response_complete(data: bytes) -> bool:
    parts = _split_head(data)
    if parts is None:
        return False
    _, headers, body = parts
    if "content-length" in headers:
        return len(body) >= int(headers["content-length"])
    if "chunked" in headers.get("transfer-encoding", ""):
        return body.endswith(b"0\r\n\r\n")
    return False


def _parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    parts = _split_head(data)
    if parts is None:
        raise AssertionError(f"no complete HTTP response received; got {data[:300]!r}")
    status, headers, body = parts
    if "chunked" in headers.get("transfer-encoding", ""):
        out = bytearray()
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            body = rest[size + 2:]
        body = bytes(out)
    elif "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return status, headers, body
