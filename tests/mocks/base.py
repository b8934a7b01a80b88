"""Server scaffolding shared by the mock providers in this directory. Standard library only.

- ``_Server``: a threading HTTP server that tracks its open connections so ``stop()`` can drop
  them, as a provider going away would.
- ``MockServer``: the in-process mock (bind/start/stop, context manager, ``port``/``url``,
  the recorded requests and the fault settings). A provider mock subclasses it and sets
  ``thread_name``, ``handler_class`` and ``fault_class``.
- ``MockHandler``: the HTTP handler plumbing (dispatch, body reading, JSON answers, chunked
  streaming, the common ``/__mock/`` control endpoints). A provider handler subclasses it and
  supplies ``_serve_api`` and the hooks that shape its errors.
- ``run_standalone``: the body of each mock's ``main()`` (prints ``READY port=<n>``, serves until
  SIGTERM or SIGINT).
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def write_chunk(wfile: Any, data: bytes) -> None:
    """One HTTP/1.1 chunk, flushed at once; an empty one ends the body."""
    wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    mock: Any

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


class MockHandler(BaseHTTPRequestHandler):
    """HTTP plumbing shared by the provider handlers.

    Subclasses set ``server_version``, ``mock_name`` (the stderr log prefix), ``mock_errors``
    (the exception types answered through ``_answer_error``), ``max_body_bytes`` and implement
    ``_serve_api``, ``_answer_error``, ``_answer_internal_error``, ``_error_response`` (for
    errors found by the stdlib's request parsing), ``_body_error`` and ``_request_id_header``.
    """

    protocol_version = "HTTP/1.1"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this many seconds
    server: _Server

    mock_name = "mock"
    mock_errors: tuple[type[BaseException], ...] = ()
    max_body_bytes = 64 * 1024 * 1024
    body_errors_close = True  # a malformed body closes the connection after the error answer
    announce_close = True  # send "Connection: close" on answers that close the connection

    # ---- hooks ------------------------------------------------------------------------------

    def _serve_api(self, path: str, body: bytes) -> None:
        raise NotImplementedError

    def _answer_error(self, err: BaseException) -> None:
        raise NotImplementedError

    def _answer_internal_error(self) -> None:
        raise NotImplementedError

    def _error_response(self, code: int, message: str | None) -> None:
        raise NotImplementedError

    def _body_error(self, reason: str) -> Exception:
        """The error for a bad body: reason is "chunked", "length" or "too_large"."""
        raise NotImplementedError

    def _request_id_header(self) -> tuple[str, str]:
        raise NotImplementedError

    # ---- plumbing ---------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        if self.server.mock.verbose:
            sys.stderr.write("%s: %s - %s\n" % (self.mock_name, self.address_string(),
                                                 format % args))

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by the stdlib's request parsing, in the provider's format, not HTML."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # unparsable request line: still send headers
        try:
            self._error_response(code, message)
        except OSError:
            pass

    def _dispatch(self) -> None:
        note_request(self.headers)
        path = urlsplit(self.path).path
        if not self.body_errors_close:
            self._guarded(lambda: self._route(path, self._read_body()))
            return
        try:
            body = self._read_body()
        except self.mock_errors as err:
            self.close_connection = True
            self._answer_error(err)
            return
        self._guarded(lambda: self._route(path, body))

    def _route(self, path: str, body: bytes) -> None:
        if path.startswith("/__mock/"):
            self._control(path, body)
            return
        self.server.mock._record(self.command, self.path, self.headers.items(), body)
        self._serve_api(path, body)

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except self.mock_errors as err:
            self._answer_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # never crash a handler thread: answer 500 and keep serving
            sys.stderr.write(f"{self.mock_name}: internal error: {err!r}\n")
            self.close_connection = True
            try:
                self._answer_internal_error()
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
            raise self._body_error("length") from None
        if length < 0:
            raise self._body_error("length")
        if length > self.max_body_bytes:
            raise self._body_error("too_large")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise self._body_error("chunked") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(data)
            if len(data) + size > self.max_body_bytes:
                raise self._body_error("too_large")
            data += self.rfile.read(size)
            self.rfile.readline(1024)  # CRLF after the chunk

    def _send_json(self, status: int, obj: Any,
                   extra_headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(obj).encode(), "application/json", extra_headers)

    def _send_raw(self, status: int, payload: bytes, content_type: str,
                  extra_headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header(*self._request_id_header())
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        if self.close_connection and self.announce_close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _start_chunked(self, content_type: str, cache_control: bool = False,
                       close: bool = False, extra_headers: dict[str, str] | None = None) -> None:
        """Headers of a 200 answer streamed in chunks (``_write_chunk``; ``b""`` ends it)."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        if cache_control:
            self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header(*self._request_id_header())
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        write_chunk(self.wfile, data)

    # ---- control endpoints ------------------------------------------------------------------

    def _parse_fault_spec(self, body: bytes) -> Any:
        raise NotImplementedError

    def _control_not_found(self, path: str) -> Exception:
        raise NotImplementedError

    def _control(self, path: str, body: bytes) -> None:
        """GET|DELETE /__mock/requests, GET|POST|DELETE /__mock/faults, GET /__mock/health."""
        mock = self.server.mock
        if path == "/__mock/requests" and self.command == "GET":
            self._send_json(200, mock.requests)
        elif path == "/__mock/requests" and self.command == "DELETE":
            self._send_json(200, {"cleared": mock.clear_requests()})
        elif path == "/__mock/faults" and self.command == "GET":
            self._send_json(200, mock.faults)
        elif path == "/__mock/faults" and self.command == "POST":
            self._send_json(200, mock.set_faults(self._parse_fault_spec(body)))
        elif path == "/__mock/faults" and self.command == "DELETE":
            mock.reset_faults()
            self._send_json(200, mock.faults)
        elif path == "/__mock/health" and self.command == "GET":
            self._send_json(200, {"status": "ok"})
        else:
            raise self._control_not_found(path)


_current_request = threading.local()


def note_request(headers: Any) -> None:
    """Remembers, for this handler thread, which gateway request and attempt is being answered
    (Envoy's `x-request-id` and `x-envoy-attempt-count`), for the usage log."""
    _current_request.request_id = headers.get("x-request-id")
    attempt = headers.get("x-envoy-attempt-count")
    _current_request.attempt = int(attempt) - 1 if attempt and attempt.isdigit() else None


def note_stream_cut(mock: Any) -> None:
    """The answer to the current request ends with an error before its final usage: its usage
    log entry is marked `cut` (the usage logged is what the mock meant to report, not what the
    client saw)."""
    rid = getattr(_current_request, "request_id", None)
    for entry in reversed(mock.__dict__.get("usage_log", [])):
        if entry["request_id"] == rid:
            entry["cut"] = True
            return


class LastUsage:
    """`mock.last_usage`: the usage the provider reported in its last answer, in its own API's
    field names. Every value set is also appended to `mock.usage_log` with the request id and
    attempt it answered: what the metering tests compare with the gateway's ledger."""

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return None if obj is None else obj.__dict__.get("_last_usage")

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["_last_usage"] = value
        if value is not None:
            obj.__dict__.setdefault("usage_log", []).append(
                {"request_id": getattr(_current_request, "request_id", None),
                 "attempt": getattr(_current_request, "attempt", None), "usage": dict(value)})


class MockServer:
    """An in-process mock provider (or, through `run_standalone`, a subprocess).

    Subclasses set ``thread_name``, ``handler_class`` and ``fault_class`` (with ``parse(spec)``,
    ``describe()`` and ``take()``), and call ``super().__init__(host, port, verbose)``.
    """

    thread_name = "mock"
    handler_class: type[BaseHTTPRequestHandler]
    fault_class: Any
    last_usage = LastUsage()

    def __init__(self, host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> None:
        # The usage the provider reported in its last chat answer, in its own API's field names
        # (what a test compares with what the client was told).
        self.last_usage = None
        self.usage_log: list[dict[str, Any]] = []
        self.host = host
        self.verbose = verbose
        self._requested_port = port
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._faults = self.fault_class()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def bind(self) -> Any:
        """Bind the listening socket (it accepts connections from here on)."""
        if self._server is None:
            server = _Server((self.host, self._requested_port), self.handler_class)
            server.mock = self
            self._server = server
        return self

    def start(self) -> Any:
        self.bind()
        if self._thread is None:
            assert self._server is not None
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name=self.thread_name, daemon=True)
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

    def __enter__(self) -> Any:
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

    # ---- recorded requests ------------------------------------------------------------------

    def _record_fields(self, path: str) -> dict[str, Any]:
        """Extra fields of a recorded request, placed after "path"."""
        return {}

    def _record(self, method: str, path: str, headers: Any, body: bytes) -> None:
        header_map: dict[str, str] = {}
        for name, value in headers:
            name = name.lower()
            header_map[name] = f"{header_map[name]}, {value}" if name in header_map else value
        try:
            parsed = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        entry = {"method": method, "path": path, **self._record_fields(path),
                 "headers": header_map, "body": body.decode("utf-8", errors="replace"),
                 "json": parsed, "time": time.time()}
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
        """Replace the fault settings (see the provider module's docstring); returns them."""
        state = self.fault_class.parse({**(spec or {}), **kwargs})
        with self._lock:
            self._faults = state
            return state.describe()

    def reset_faults(self) -> None:
        with self._lock:
            self._faults = self.fault_class()

    @property
    def faults(self) -> dict[str, Any]:
        with self._lock:
            return self._faults.describe()

    def _take_fault(self) -> tuple[int | None, int, Any]:
        with self._lock:
            return self._faults.take()


def run_standalone(mock: MockServer) -> int:
    """Serve `mock` in this process: print ``READY port=<n>``, then serve until SIGTERM/SIGINT."""
    mock.bind()
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
