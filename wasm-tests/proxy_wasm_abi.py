"""The proxy-wasm ABI as the harness speaks it: status and enum values, errors, the header
map wire format, and the plain data the host keeps (header maps, shared data, local responses,
HTTP callouts). `proxy_wasm_host` (the host), `proxy_wasm_imports` (the host calls it
answers) and `proxy_wasm_http` (one HTTP stream) build on it."""

from __future__ import annotations

import enum
import functools
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence, Union

import wasmtime

MASK32 = 0xFFFF_FFFF
# Generous per-callback budget: a runaway loop in a filter fails the test instead of hanging it.
DEFAULT_FUEL_PER_CALL = 20_000_000_000


class Action(enum.IntEnum):
    CONTINUE = 0
    PAUSE = 1


class Status(enum.IntEnum):
    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    INTERNAL_FAILURE = 10
    UNIMPLEMENTED = 12


class LogLevel(enum.IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5


class BufferType(enum.IntEnum):
    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_RECEIVE_BUFFER = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    CALL_DATA = 8


class MapType(enum.IntEnum):
    HTTP_REQUEST_HEADERS = 0
    HTTP_REQUEST_TRAILERS = 1
    HTTP_RESPONSE_HEADERS = 2
    HTTP_RESPONSE_TRAILERS = 3
    GRPC_RECEIVE_INITIAL_METADATA = 4
    GRPC_RECEIVE_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class StreamType(enum.IntEnum):
    HTTP_REQUEST = 0
    HTTP_RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class HostError(Exception):
    """The test drove the host in a way Envoy never would."""


class StreamClosed(HostError):
    """A callback was requested on a stream that already ended (local response sent)."""


class VmTrap(Exception):
    """The module trapped (a panic, an out-of-bounds access, fuel exhausted...)."""

    def __init__(self, callback: str, trap: BaseException, panic: Optional[str]):
        self.callback = callback
        self.trap = trap
        self.panic = panic
        detail = f"; panic: {panic}" if panic else ""
        super().__init__(f"wasm VM trapped in {callback}: {trap}{detail}")


# --------------------------------------------------------------------------------------------
# Wire formats


Bytesish = Union[bytes, bytearray, str]
HeaderInput = Union[Mapping[str, Bytesish], Iterable[tuple[Bytesish, Bytesish]]]


# Callbacks Envoy skips when the module does not export them, with what it assumes instead
# (Continue for the stream callbacks, true for on_done). `make wasm` strips the callbacks each
# filter does not implement, so the harness must behave the same way.
SKIPPED_WHEN_UNEXPORTED: dict[str, Optional[int]] = {
    "proxy_on_request_headers": 0, "proxy_on_request_body": 0, "proxy_on_request_trailers": 0,
    "proxy_on_response_headers": 0, "proxy_on_response_body": 0, "proxy_on_response_trailers": 0,
    "proxy_on_done": 1, "proxy_on_log": None, "proxy_on_tick": None, "proxy_on_queue_ready": None,
    "proxy_on_http_call_response": None, "proxy_on_vm_start": 1, "proxy_on_context_create": None,
}


def _b(value: Bytesish) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def serialize_map(pairs: Iterable[tuple[Bytesish, Bytesish]]) -> bytes:
    """proxy-wasm map: u32 count, then (u32 name len, u32 value len) per pair, then each name and
    value followed by a NUL byte. All integers little endian."""
    items = [(_b(k), _b(v)) for k, v in pairs]
    out = bytearray(struct.pack("<I", len(items)))
    for k, v in items:
        out += struct.pack("<II", len(k), len(v))
    for k, v in items:
        out += k + b"\0" + v + b"\0"
    return bytes(out)


def deserialize_map(data: bytes) -> list[tuple[bytes, bytes]]:
    """Inverse of `serialize_map`; raises ValueError on malformed input."""
    if not data:
        return []
    if len(data) < 4:
        raise ValueError("map shorter than its count")
    (count,) = struct.unpack_from("<I", data, 0)
    sizes_end = 4 + 8 * count
    if sizes_end > len(data):
        raise ValueError("map sizes run past the end")
    pos = sizes_end
    out = []
    for i in range(count):
        klen, vlen = struct.unpack_from("<II", data, 4 + 8 * i)
        if pos + klen + 1 + vlen + 1 > len(data):
            raise ValueError("map entry runs past the end")
        key = data[pos : pos + klen]
        pos += klen + 1
        value = data[pos : pos + vlen]
        pos += vlen + 1
        out.append((bytes(key), bytes(value)))
    return out


def _header_pairs(headers: Optional[HeaderInput]) -> list[tuple[bytes, bytes]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(_b(k).lower(), _b(v)) for k, v in items]


PropertyPath = Union[str, Sequence[str]]


def _path_key(path: PropertyPath) -> tuple[str, ...]:
    if isinstance(path, str):
        return (path,)
    return tuple(path)


# --------------------------------------------------------------------------------------------
# Host-side state


class HeaderMap:
    """An ordered multimap with lower-case names, like Envoy's header maps."""

    def __init__(self, pairs: Optional[HeaderInput] = None):
        self.pairs: list[tuple[bytes, bytes]] = _header_pairs(pairs)

    def get(self, name: Bytesish) -> Optional[str]:
        raw = self.get_bytes(name)
        return None if raw is None else raw.decode("utf-8", "replace")

    def get_bytes(self, name: Bytesish) -> Optional[bytes]:
        key = _b(name).lower()
        for k, v in self.pairs:
            if k == key:
                return v
        return None

    def get_all(self, name: Bytesish) -> list[bytes]:
        key = _b(name).lower()
        return [v for k, v in self.pairs if k == key]

    def names(self) -> list[str]:
        return [k.decode("utf-8", "replace") for k, _ in self.pairs]

    def add(self, name: Bytesish, value: Bytesish) -> None:
        self.pairs.append((_b(name).lower(), _b(value)))

    def replace(self, name: Bytesish, value: Bytesish) -> None:
        key, val = _b(name).lower(), _b(value)
        out, done = [], False
        for k, v in self.pairs:
            if k == key:
                if not done:
                    out.append((k, val))
                    done = True
                continue
            out.append((k, v))
        if not done:
            out.append((key, val))
        self.pairs = out

    def remove(self, name: Bytesish) -> None:
        key = _b(name).lower()
        self.pairs = [(k, v) for k, v in self.pairs if k != key]

    def set_all(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        self.pairs = [(k.lower(), v) for k, v in pairs]

    def as_dict(self) -> dict[str, str]:
        """Name → first value (decoded, replacing invalid UTF-8)."""
        out: dict[str, str] = {}
        for k, v in self.pairs:
            out.setdefault(k.decode("utf-8", "replace"), v.decode("utf-8", "replace"))
        return out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, (str, bytes)) and self.get_bytes(name) is not None

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"HeaderMap({self.pairs!r})"


class SharedData:
    """Envoy's process-wide shared data for one vm_id. Pass the same instance to several `Host`s
    to model several workers (or a re-created VM) that share it."""

    def __init__(self) -> None:
        self._data: dict[bytes, tuple[bytes, int]] = {}
        self._next_cas = 1
        # Shared queues (process wide too): (vm_id, name) -> id, and each queue's items.
        self.queues: dict[tuple[bytes, bytes], int] = {}
        self.queue_items: dict[int, list[bytes]] = {}

    def get(self, key: Bytesish) -> Optional[tuple[bytes, int]]:
        return self._data.get(_b(key))

    def value(self, key: Bytesish) -> Optional[bytes]:
        entry = self.get(key)
        return None if entry is None else entry[0]

    def set(self, key: Bytesish, value: Bytesish, cas: int = 0) -> Status:
        k = _b(key)
        current = self._data.get(k)
        # proxy-wasm-cpp-host SharedData::set: a cas only guards an existing key.
        if cas and current is not None and current[1] != cas:
            return Status.CAS_MISMATCH
        self._data[k] = (_b(value), self._next_cas)
        self._next_cas += 1
        return Status.OK

    def keys(self) -> list[str]:
        return [k.decode("utf-8", "replace") for k in self._data]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (str, bytes)) and _b(key) in self._data

    def __len__(self) -> int:
        return len(self._data)


@dataclass
class LogRecord:
    level: LogLevel
    message: str
    context_id: int


@dataclass
class LocalResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    details: str
    grpc_status: int

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)


@dataclass
class HttpCall:
    token: int
    context_id: int
    upstream: str
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]]
    timeout_ms: int

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


@dataclass
class _CallResponse:
    headers: HeaderMap
    body: bytearray
    trailers: HeaderMap


@dataclass
class _RootContext:
    id: int
    configured: Optional[bool] = None
    tick_period_ms: int = 0
    properties: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=None)
def _engine() -> wasmtime.Engine:
    cfg = wasmtime.Config()
    cfg.consume_fuel = True
    return wasmtime.Engine(cfg)


@functools.lru_cache(maxsize=16)
def _module(path: str, mtime_ns: int) -> wasmtime.Module:
    del mtime_ns  # part of the cache key only: a rebuilt filter is compiled again
    return wasmtime.Module.from_file(_engine(), path)


def load_module(path: Union[str, os.PathLike]) -> wasmtime.Module:
    p = os.fspath(path)
    return _module(os.path.abspath(p), os.stat(p).st_mtime_ns)
