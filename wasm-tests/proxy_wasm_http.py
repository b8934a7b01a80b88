"""One HTTP stream through a filter, driven like Envoy drives it (see `proxy_wasm_host`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional

from proxy_wasm_abi import (Action, Bytesish, HeaderInput, HeaderMap, LocalResponse, PropertyPath,
                            StreamClosed, _b, _path_key)

if TYPE_CHECKING:
    from proxy_wasm_host import Host


# --------------------------------------------------------------------------------------------
# One HTTP stream


class HttpContext:
    """One HTTP stream through the filter. Request data flows through `request_headers`,
    `request_body` and `request_trailers`; the filter's edits show in `request_headers_map`,
    `request_body_forwarded` (what went upstream) and `request_body_buffer` (still held)."""

    def __init__(self, host: Host, context_id: int, root_id: int, properties):
        self.host = host
        self.id = context_id
        self.root_id = root_id
        self.properties: dict[tuple[str, ...], bytes] = {
            _path_key(k): _b(v) for k, v in (properties or {}).items()
        }
        self.properties_set: dict[tuple[str, ...], bytes] = {}
        self.request_headers_map: Optional[HeaderMap] = None
        self.request_trailers_map: Optional[HeaderMap] = None
        self.response_headers_map: Optional[HeaderMap] = None
        self.response_trailers_map: Optional[HeaderMap] = None
        self.request_body_buffer = bytearray()
        self.request_body_forwarded = bytearray()
        self.response_body_buffer = bytearray()
        self.response_body_forwarded = bytearray()
        self.local_responses: list[LocalResponse] = []
        self.continued: list = []
        self.closed: list = []
        self.actions: list[tuple[str, Action]] = []
        self.finished = False

    # ------------------------------------------------------------------ results

    @property
    def local_response(self) -> Optional[LocalResponse]:
        return self.local_responses[0] if self.local_responses else None

    def request_header(self, name: str) -> Optional[str]:
        return None if self.request_headers_map is None else self.request_headers_map.get(name)

    def property(self, path: PropertyPath) -> Optional[bytes]:
        return self.properties.get(_path_key(path))

    # ------------------------------------------------------------------ driving

    def _check_open(self, what: str) -> None:
        if self.finished:
            raise StreamClosed(f"{what} after the stream was finished")
        if self.local_responses:
            raise StreamClosed(f"{what} after the filter sent a local response")

    def _invoke(self, name: str, *args: int) -> Action:
        raw = self.host._call(name, self.id, self.id, *args)
        action = Action(raw)
        self.actions.append((name, action))
        return action

    def request_headers(self, headers: HeaderInput, end_of_stream: bool = False) -> Action:
        self._check_open("request_headers")
        self.request_headers_map = HeaderMap(headers)
        return self._invoke("proxy_on_request_headers", len(self.request_headers_map), int(end_of_stream))

    def request_body(self, chunk: Bytesish, end_of_stream: bool = False) -> Action:
        """Delivers one chunk. Like Envoy, data held by an earlier Pause is still in the buffer,
        so `body_size` is the total buffered; Continue sends the buffer upstream."""
        self._check_open("request_body")
        self.request_body_buffer += _b(chunk)
        action = self._invoke("proxy_on_request_body", len(self.request_body_buffer), int(end_of_stream))
        if action == Action.CONTINUE and not self.local_responses:
            self.request_body_forwarded += self.request_body_buffer
            self.request_body_buffer.clear()
        return action

    def request_trailers(self, trailers: HeaderInput) -> Action:
        self._check_open("request_trailers")
        self.request_trailers_map = HeaderMap(trailers)
        action = self._invoke("proxy_on_request_trailers", len(self.request_trailers_map))
        if action == Action.CONTINUE and not self.local_responses:
            self.request_body_forwarded += self.request_body_buffer
            self.request_body_buffer.clear()
        return action

    def send_request_body(self, body: Bytesish, chunk_sizes: Optional[Iterable[int]] = None) -> Optional[Action]:
        """Sends `body` split into `chunk_sizes` (the rest in a last chunk; default: one chunk),
        the last with end_of_stream. Stops early, like Envoy, when the filter answers locally.
        Returns the last action delivered."""
        data = _b(body)
        chunks = []
        pos = 0
        for n in chunk_sizes or ():
            if pos >= len(data):
                break
            chunks.append(data[pos : pos + n])
            pos += n
        if pos < len(data) or not chunks:
            chunks.append(data[pos:])
        action = None
        for i, chunk in enumerate(chunks):
            action = self.request_body(chunk, end_of_stream=(i == len(chunks) - 1))
            if self.local_responses:
                break
        return action

    def response_headers(self, headers: HeaderInput, end_of_stream: bool = False) -> Action:
        if self.finished:
            raise StreamClosed("response_headers after the stream was finished")
        self.response_headers_map = HeaderMap(headers)
        return self._invoke("proxy_on_response_headers", len(self.response_headers_map), int(end_of_stream))

    def response_body(self, chunk: Bytesish, end_of_stream: bool = False) -> Action:
        if self.finished:
            raise StreamClosed("response_body after the stream was finished")
        self.response_body_buffer += _b(chunk)
        action = self._invoke("proxy_on_response_body", len(self.response_body_buffer), int(end_of_stream))
        if action == Action.CONTINUE:
            self.response_body_forwarded += self.response_body_buffer
            self.response_body_buffer.clear()
        return action

    def response_trailers(self, trailers: HeaderInput) -> Action:
        self.response_trailers_map = HeaderMap(trailers)
        return self._invoke("proxy_on_response_trailers", len(self.response_trailers_map))

    def finish(self) -> bool:
        """End of stream: proxy_on_done, proxy_on_log, proxy_on_delete. Returns on_done's result."""
        if self.finished:
            raise StreamClosed("finish() twice")
        done = bool(self.host._call("proxy_on_done", self.id, self.id))
        self.host._call("proxy_on_log", self.id, self.id)
        self.host._call("proxy_on_delete", self.id, self.id)
        self.finished = True
        self.host._contexts.pop(self.id, None)
        return done
