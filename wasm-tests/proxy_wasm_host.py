"""A proxy-wasm host for tests: runs a compiled filter without Envoy.

The host loads a `wasm32-wasip1` module built with the proxy-wasm Rust SDK (ABI 0.2.1) into
wasmtime, provides the `env` imports the module declares and wasmtime's WASI for the
`wasi_snapshot_preview1` ones, and drives the module through the same callbacks, in the same
order, as Envoy does (proxy-wasm-cpp-host):

    _initialize / _start
    proxy_on_context_create(root, 0) -> proxy_on_vm_start(root, n) -> proxy_on_configure(root, n)
    proxy_on_context_create(http, root)   (skipped, like every callback, when not exported)
    proxy_on_request_headers / _body / _trailers, proxy_on_response_headers / _body / _trailers
    proxy_on_done -> proxy_on_log -> proxy_on_delete
    proxy_on_tick(root), proxy_on_http_call_response(root, token, ...) (also for a call a stream made)

Where the ABI leaves room, the host follows Envoy 1.40's behaviour (source/extensions/common/wasm
context.cc and proxy-wasm-cpp-host exports.cc):

- header names are lower-cased; `get_header_map_value` returns the first value;
  `replace_header_map_value` replaces the first value and removes the others (adds when absent);
  removing an absent header is Ok;
- values handed to the module are allocated with its `proxy_on_memory_allocate`; an empty value is
  returned as a null pointer with size 0 (the SDK then sees `None` for buffers and properties);
- `set_buffer_bytes(start=0, size=n, data)` drains n bytes then prepends data; `start >= len`
  appends; anything else is BadArgument;
- a body callback that returns Pause makes the host buffer the data (StopIterationAndBuffer): the
  next callback's `body_size` is the total buffered, and Continue releases the buffer upstream;
- after `proxy_send_local_response` the stream is over and no further callback is delivered;
- `set_property([name])` writes per-stream filter state that `get_property([name])` reads back
  (NotFound outside a stream); the plugin configuration is readable only during on_configure;
  header-map calls on a map the context does not have are BadArgument;
- shared data has Envoy's CAS semantics (cas 0 = unconditional; a mismatch is CasMismatch);
- `proxy_http_call` needs `:method`, `:path` and `:authority`, and a known cluster when the test
  gives a cluster list; the response is delivered to the context that made the call.

A trap (a Rust panic aborts) raises `VmTrap` with the panic message the SDK logged; the host is
then dead, like the VM in Envoy. Imports the filters declare but the host does not implement
return Status::Unimplemented and are recorded in `Host.unsupported_calls`.
"""

from __future__ import annotations

import collections
import os
import struct
from typing import Callable, Iterable, Mapping, Optional, Union

import wasmtime

from proxy_wasm_abi import (  # noqa: F401 (re-exported: the tests import them from here)
    DEFAULT_FUEL_PER_CALL, MASK32, SKIPPED_WHEN_UNEXPORTED, Action, BufferType, Bytesish, HeaderInput,
    HeaderMap, HostError, HttpCall, LocalResponse, LogLevel, LogRecord, MapType, PropertyPath,
    SharedData, Status, StreamClosed, StreamType, VmTrap, _b, _CallResponse, _header_pairs,
    _engine, _path_key, _RootContext, deserialize_map, load_module, serialize_map)
from proxy_wasm_http import HttpContext

__all__ = [
    "Action",
    "BufferType",
    "Host",
    "HostError",
    "HttpCall",
    "HttpContext",
    "LocalResponse",
    "LogLevel",
    "LogRecord",
    "MapType",
    "SharedData",
    "Status",
    "StreamClosed",
    "StreamType",
    "VmTrap",
    "deserialize_map",
    "serialize_map",
]


# --------------------------------------------------------------------------------------------
# The host


class Host:
    """One wasm VM with one plugin (root context), driven like Envoy drives it.

    `plugin_config` is the plugin configuration buffer; `properties` are host properties readable
    by every context (keys: a property path as a tuple of segments, or a single segment string;
    values: bytes or str); `env` is the WASI environment (Envoy's `vm_config.environment_variables`);
    `now` is the clock in unix seconds (mutable: `host.now = ...`); `shared_data` may be shared
    between hosts; `clusters`, if given, is the set of clusters `proxy_http_call` accepts.
    """

    def __init__(
        self,
        wasm_path: Union[str, os.PathLike],
        plugin_config: Bytesish = b"",
        *,
        vm_config: Bytesish = b"",
        properties: Optional[Mapping[PropertyPath, Bytesish]] = None,
        env: Optional[Mapping[str, str]] = None,
        now: float = 1_700_000_000.0,
        shared_data: Optional[SharedData] = None,
        clusters: Optional[Iterable[str]] = None,
        root_id: int = 1,
        fuel_per_call: int = DEFAULT_FUEL_PER_CALL,
        vm_id: str = "tollgate",
    ):
        self.wasm_path = os.fspath(wasm_path)
        self.module = load_module(wasm_path)
        self.now = float(now)
        self.vm_config = _b(vm_config)
        self.properties: dict[tuple[str, ...], bytes] = {
            _path_key(k): _b(v) for k, v in (properties or {}).items()
        }
        self.env = dict(env or {})
        self.shared_data = shared_data if shared_data is not None else SharedData()
        self.clusters = None if clusters is None else set(clusters)
        self.fuel_per_call = fuel_per_call
        self.vm_id = vm_id.encode()
        self.registered_queues: set[int] = set()

        self.logs: list[LogRecord] = []
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.unsupported_calls: list[str] = []
        self.pending_http_calls: dict[int, HttpCall] = {}
        self.http_calls: list[HttpCall] = []  # every call ever dispatched, in order
        self.metrics: dict[int, dict] = {}
        self.crashed: Optional[VmTrap] = None
        # Host functions that answer an error status instead of working ("*": every one), to
        # drive the module through its failure paths: set it at any time.
        self.failing_calls: set[str] = set()
        # Crossings between the host and the VM, by kind: "vm:<callback>" for each callback
        # entered, "host:<import>" for each host function called, "alloc" for each buffer the
        # host hands back through proxy_on_memory_allocate (a VM entry in Envoy too).
        self.crossings: collections.Counter[str] = collections.Counter()

        self._contexts: dict[int, Union[_RootContext, HttpContext]] = {}
        self._plugin_configs: dict[int, bytes] = {}
        self._next_context_id = root_id
        self._next_token = 1
        self._effective: int = 0
        self._call_response: Optional[_CallResponse] = None
        self._in_callback = 0
        self._configuring = 0

        self.store = wasmtime.Store(_engine())
        wasi = wasmtime.WasiConfig()
        wasi.env = list(self.env.items())
        wasi.stdout_custom = self._on_stdout
        wasi.stderr_custom = self._on_stderr
        self.store.set_wasi(wasi)
        linker = wasmtime.Linker(_engine())
        linker.define_wasi()
        self._define_env(linker)
        self.instance = linker.instantiate(self.store, self.module)
        self._exports = self.instance.exports(self.store)
        self.memory: wasmtime.Memory = self._exports["memory"]
        self._malloc: wasmtime.Func = self._exports["proxy_on_memory_allocate"]

        for start in ("_initialize", "_start"):
            if start in self._exports:
                self._call(start, 0)
        self.root_id = 0
        self.configured = self.reconfigure(plugin_config)

    # ---------------------------------------------------------------------------- lifecycle

    def reconfigure(self, plugin_config: Bytesish) -> bool:
        """Creates a new root context with this configuration, as Envoy does for a new plugin
        config (ECDS update). On success it becomes the root of new HTTP contexts; on rejection the
        failed root is deleted and the previous one keeps serving. Returns on_configure's verdict."""
        return self._new_root(plugin_config, retire_old=True)

    def add_root(self, plugin_config: Bytesish) -> int:
        """Another root beside the current ones, as Envoy makes for each cluster an upstream
        filter is configured on; it becomes the harness's current root. Returns its id."""
        if not self._new_root(plugin_config, retire_old=False):
            raise HostError("the added root's configuration was rejected")
        return self.root_id

    def retire_root(self, root_id: int) -> None:
        """Deletes a root (its cluster removed); the newest remaining becomes current."""
        self._retire_root(root_id)
        if self.root_id == root_id:
            roots = [c.id for c in self._contexts.values() if isinstance(c, _RootContext)]
            self.root_id = max(roots, default=0)

    def _new_root(self, plugin_config: Bytesish, retire_old: bool) -> bool:
        root = _RootContext(self._new_id())
        self._contexts[root.id] = root
        self._plugin_configs[root.id] = _b(plugin_config)
        self._call("proxy_on_context_create", root.id, root.id, 0)
        if not self._call("proxy_on_vm_start", root.id, root.id, len(self.vm_config)):
            raise HostError("proxy_on_vm_start returned false")
        self._configuring = root.id
        try:
            ok = bool(self._call("proxy_on_configure", root.id, root.id, len(self._plugin_configs[root.id])))
        finally:
            self._configuring = 0
        root.configured = ok
        if ok or not self.root_id:
            old = self.root_id
            self.root_id = root.id
            if old and ok and retire_old:
                self._retire_root(old)
        else:
            self._retire_root(root.id)
        return ok

    def _retire_root(self, root_id: int) -> None:
        self._call("proxy_on_done", root_id, root_id)
        self._call("proxy_on_delete", root_id, root_id)
        self._contexts.pop(root_id, None)

    @property
    def root(self) -> _RootContext:
        ctx = self._contexts[self.root_id]
        assert isinstance(ctx, _RootContext)
        return ctx

    @property
    def tick_period_ms(self) -> int:
        return self.root.tick_period_ms

    def new_http_context(self, properties: Optional[Mapping[PropertyPath, Bytesish]] = None) -> "HttpContext":
        """A new HTTP stream on the current root. `properties` are per-stream (filter state,
        upstream host metadata...)."""
        ctx = HttpContext(self, self._new_id(), self.root_id, properties)
        self._contexts[ctx.id] = ctx
        self._call("proxy_on_context_create", ctx.id, ctx.id, self.root_id)
        return ctx

    def tick(self, advance: bool = True, root_id: Optional[int] = None) -> None:
        """Fires the root's timer (and advances the clock by one period); `root_id`: another
        root's."""
        if root_id is not None:
            self._call("proxy_on_tick", root_id, root_id)
            return
        period = self.root.tick_period_ms
        if period <= 0:
            raise HostError("tick() but the root context set no tick period")
        if advance:
            self.now += period / 1000.0
        self._call("proxy_on_tick", self.root_id, self.root_id)

    def respond_http_call(
        self,
        token: int,
        status: Optional[int] = 200,
        headers: Optional[HeaderInput] = None,
        body: Bytesish = b"",
        trailers: Optional[HeaderInput] = None,
    ) -> None:
        """Delivers the response of a dispatched call. `status=None` with no headers models a
        failed call (reset, timeout): Envoy then calls back with no headers and no body."""
        call = self.pending_http_calls.pop(token, None)
        if call is None:
            raise HostError(f"no pending http call with token {token}")
        pairs = _header_pairs(headers)
        if status is not None:
            pairs.insert(0, (b":status", str(status).encode()))
        resp = _CallResponse(HeaderMap(pairs), bytearray(_b(body)), HeaderMap(trailers))
        self._call_response = resp
        try:
            # As Envoy does: the answer comes on the root context even when a stream made the
            # call (the module finds the stream by its token and sets it effective).
            self._call(
                "proxy_on_http_call_response",
                self.root_id,
                self.root_id,
                token,
                len(resp.headers),
                len(resp.body),
                len(resp.trailers),
            )
        finally:
            self._call_response = None

    def fail_http_call(self, token: int) -> None:
        self.respond_http_call(token, status=None)

    # ---------------------------------------------------------------------------- inspection

    @property
    def log_text(self) -> str:
        return "\n".join(r.message for r in self.logs)

    def logs_at(self, level: LogLevel) -> list[str]:
        return [r.message for r in self.logs if r.level == level]

    def all_output(self) -> str:
        """Every byte the module wrote anywhere a secret must not appear: logs, stdout, stderr."""
        return "\n".join(
            [self.log_text, self.stdout.decode("utf-8", "replace"), self.stderr.decode("utf-8", "replace")]
        )

    # ---------------------------------------------------------------------------- calling in

    def _new_id(self) -> int:
        cid = self._next_context_id
        self._next_context_id += 1
        return cid

    def _call(self, name: str, effective: int, *args: int):
        if self.crashed is not None:
            raise HostError(f"the VM is dead after an earlier trap: {self.crashed}")
        func = self._exports.get(name)
        if func is None:
            if name in SKIPPED_WHEN_UNEXPORTED:
                # Like Envoy (proxy-wasm-cpp-host): a callback the module does not export is not
                # called, and the stream goes on as if it had returned the default.
                return SKIPPED_WHEN_UNEXPORTED[name]
            raise HostError(f"the module does not export {name}")
        self.crossings["vm:" + name] += 1
        prev = self._effective
        self._effective = effective
        self._in_callback += 1
        if self._in_callback == 1:
            self.store.set_fuel(self.fuel_per_call)
        try:
            result = func(self.store, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError, wasmtime.ExitTrap) as e:
            panics = self.logs_at(LogLevel.CRITICAL)
            trap = VmTrap(name, e, panics[-1] if panics else None)
            self.crashed = trap
            raise trap from e
        finally:
            self._in_callback -= 1
            self._effective = prev
            if self._in_callback == 0:
                try:  # wasm instructions the callback ran (wasmtime's fuel: about one each)
                    used = self.fuel_per_call - self.store.get_fuel()
                    self.crossings["fuel"] += used
                    self.crossings["fuel@" + name] += used
                except (wasmtime.WasmtimeError, AttributeError):
                    pass
        return result

    # ---------------------------------------------------------------------------- memory

    def _read(self, caller, ptr: int, size: int) -> Optional[bytes]:
        ptr &= MASK32
        size &= MASK32
        if size == 0:
            return b""
        if ptr + size > self.memory.data_len(caller):
            return None
        return bytes(self.memory.read(caller, ptr, ptr + size))

    def _write_u32(self, caller, ptr: int, value: int) -> bool:
        return self._write(caller, ptr, struct.pack("<I", value & MASK32))

    def _write(self, caller, ptr: int, data: bytes) -> bool:
        ptr &= MASK32
        if ptr == 0 or ptr + len(data) > self.memory.data_len(caller):
            return False
        self.memory.write(caller, data, ptr)
        return True

    def _return_bytes(self, caller, data: bytes, ptr_ptr: int, size_ptr: int) -> Status:
        """Copies `data` into module memory (allocated by the module) and stores its pointer and
        size; empty data is returned as (null, 0), like proxy-wasm-cpp-host."""
        addr = 0
        if data:
            self.crossings["alloc"] += 1
            addr = self._malloc(caller, len(data)) & MASK32
            if addr == 0 or not self._write(caller, addr, data):
                return Status.INVALID_MEMORY_ACCESS
        if not (self._write_u32(caller, ptr_ptr, addr) and self._write_u32(caller, size_ptr, len(data))):
            return Status.INVALID_MEMORY_ACCESS
        return Status.OK

    # ---------------------------------------------------------------------------- context lookups

    def _http(self) -> Optional["HttpContext"]:
        ctx = self._contexts.get(self._effective)
        return ctx if isinstance(ctx, HttpContext) else None

    def _map(self, map_type: int) -> Optional[HeaderMap]:
        if map_type == MapType.HTTP_CALL_RESPONSE_HEADERS:
            return self._call_response.headers if self._call_response else None
        if map_type == MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return self._call_response.trailers if self._call_response else None
        http = self._http()
        if http is None:
            return None
        return {
            MapType.HTTP_REQUEST_HEADERS: http.request_headers_map,
            MapType.HTTP_REQUEST_TRAILERS: http.request_trailers_map,
            MapType.HTTP_RESPONSE_HEADERS: http.response_headers_map,
            MapType.HTTP_RESPONSE_TRAILERS: http.response_trailers_map,
        }.get(map_type)

    def _buffer(self, buffer_type: int) -> Optional[bytearray]:
        if buffer_type == BufferType.PLUGIN_CONFIGURATION:
            # Like Envoy: only readable while proxy_on_configure runs.
            if not self._configuring:
                return None
            return bytearray(self._plugin_configs[self._configuring])
        if buffer_type == BufferType.VM_CONFIGURATION:
            return bytearray(self.vm_config)
        if buffer_type == BufferType.HTTP_CALL_RESPONSE_BODY:
            return self._call_response.body if self._call_response else None
        http = self._http()
        if http is None:
            return None
        if buffer_type == BufferType.HTTP_REQUEST_BODY:
            return http.request_body_buffer
        if buffer_type == BufferType.HTTP_RESPONSE_BODY:
            return http.response_body_buffer
        return None

    # ---------------------------------------------------------------------------- imports

    def _define_env(self, linker: wasmtime.Linker) -> None:
        impls: dict[str, Callable] = {
            "proxy_log": self._proxy_log,
            "proxy_get_log_level": self._proxy_get_log_level,
            "proxy_get_current_time_nanoseconds": self._proxy_get_current_time_nanoseconds,
            "proxy_set_tick_period_milliseconds": self._proxy_set_tick_period_milliseconds,
            "proxy_get_buffer_bytes": self._proxy_get_buffer_bytes,
            "proxy_set_buffer_bytes": self._proxy_set_buffer_bytes,
            "proxy_get_header_map_pairs": self._proxy_get_header_map_pairs,
            "proxy_set_header_map_pairs": self._proxy_set_header_map_pairs,
            "proxy_get_header_map_value": self._proxy_get_header_map_value,
            "proxy_replace_header_map_value": self._proxy_replace_header_map_value,
            "proxy_remove_header_map_value": self._proxy_remove_header_map_value,
            "proxy_add_header_map_value": self._proxy_add_header_map_value,
            "proxy_get_property": self._proxy_get_property,
            "proxy_set_property": self._proxy_set_property,
            "proxy_get_shared_data": self._proxy_get_shared_data,
            "proxy_set_shared_data": self._proxy_set_shared_data,
            "proxy_send_local_response": self._proxy_send_local_response,
            "proxy_http_call": self._proxy_http_call,
            "proxy_continue_stream": self._proxy_continue_stream,
            "proxy_close_stream": self._proxy_close_stream,
            "proxy_set_effective_context": self._proxy_set_effective_context,
            "proxy_done": self._proxy_done,
            "proxy_register_shared_queue": self._proxy_register_shared_queue,
            "proxy_resolve_shared_queue": self._proxy_resolve_shared_queue,
            "proxy_enqueue_shared_queue": self._proxy_enqueue_shared_queue,
            "proxy_dequeue_shared_queue": self._proxy_dequeue_shared_queue,
            "proxy_define_metric": self._proxy_define_metric,
            "proxy_increment_metric": self._proxy_increment_metric,
            "proxy_record_metric": self._proxy_record_metric,
            "proxy_get_metric": self._proxy_get_metric,
        }
        for imp in self.module.imports:
            if imp.module != "env":
                continue  # wasi_snapshot_preview1: wasmtime's WASI
            ty = imp.type
            if not isinstance(ty, wasmtime.FuncType):
                raise HostError(f"unsupported non-function import env.{imp.name}")
            func = self._failable(imp.name, impls.get(imp.name) or self._stub(imp.name, ty))
            linker.define_func("env", imp.name, ty, func, access_caller=True)

    def _failable(self, name: str, func: Callable) -> Callable:
        def call(caller, *args):
            self.crossings["host:" + name] += 1
            if "*" in self.failing_calls or name in self.failing_calls:
                return int(Status.INTERNAL_FAILURE)
            return func(caller, *args)

        return call

    def _stub(self, name: str, ty: wasmtime.FuncType) -> Callable:
        results = list(ty.results)

        def stub(caller, *args):
            self.unsupported_calls.append(name)
            if not results:
                return None
            return int(Status.UNIMPLEMENTED)

        return stub

    def _on_stdout(self, data: bytes) -> None:
        self.stdout += data

    def _on_stderr(self, data: bytes) -> None:
        self.stderr += data

    def _proxy_log(self, caller, level, ptr, size):
        data = self._read(caller, ptr, size)
        if data is None:
            return Status.INVALID_MEMORY_ACCESS
        try:
            lvl = LogLevel(level)
        except ValueError:
            return Status.BAD_ARGUMENT
        self.logs.append(LogRecord(lvl, data.decode("utf-8", "replace"), self._effective))
        return Status.OK

    def _proxy_get_log_level(self, caller, ret_ptr):
        return Status.OK if self._write_u32(caller, ret_ptr, LogLevel.TRACE) else Status.INVALID_MEMORY_ACCESS

    def _proxy_get_current_time_nanoseconds(self, caller, ret_ptr):
        nanos = int(round(self.now * 1_000_000_000))
        return Status.OK if self._write(caller, ret_ptr, struct.pack("<Q", nanos)) else Status.INVALID_MEMORY_ACCESS

    def _proxy_set_tick_period_milliseconds(self, caller, period):
        ctx = self._contexts.get(self._effective)
        if not isinstance(ctx, _RootContext):
            return Status.BAD_ARGUMENT
        ctx.tick_period_ms = period & MASK32
        return Status.OK

    def _proxy_get_buffer_bytes(self, caller, buffer_type, start, max_size, ptr_ptr, size_ptr):
        buf = self._buffer(buffer_type)
        if buf is None:
            return Status.NOT_FOUND
        start &= MASK32
        max_size &= MASK32
        if start > len(buf):
            return Status.BAD_ARGUMENT
        data = bytes(buf[start : start + max_size])
        if not data:
            return Status.OK  # like cpp-host: nothing is written, the SDK sees None
        return self._return_bytes(caller, data, ptr_ptr, size_ptr)

    def _proxy_set_buffer_bytes(self, caller, buffer_type, start, size, data_ptr, data_size):
        if buffer_type in (BufferType.PLUGIN_CONFIGURATION, BufferType.VM_CONFIGURATION):
            return Status.BAD_ARGUMENT  # immutable in Envoy
        buf = self._buffer(buffer_type)
        if buf is None:
            return Status.NOT_FOUND
        data = self._read(caller, data_ptr, data_size)
        if data is None:
            return Status.INVALID_MEMORY_ACCESS
        start &= MASK32
        size &= MASK32
        # Envoy's Buffer::copyFrom.
        if start == 0:
            del buf[: min(size, len(buf))]
            buf[0:0] = data
            return Status.OK
        if start >= len(buf):
            buf += data
            return Status.OK
        return Status.BAD_ARGUMENT

    def _proxy_get_header_map_pairs(self, caller, map_type, ptr_ptr, size_ptr):
        hmap = self._map(map_type)
        pairs = hmap.pairs if hmap is not None else []
        return self._return_bytes(caller, serialize_map(pairs), ptr_ptr, size_ptr)

    def _proxy_set_header_map_pairs(self, caller, map_type, ptr, size):
        hmap = self._map(map_type)
        if hmap is None:
            return Status.BAD_ARGUMENT
        data = self._read(caller, ptr, size)
        if data is None:
            return Status.INVALID_MEMORY_ACCESS
        try:
            hmap.set_all(deserialize_map(data))
        except ValueError:
            return Status.BAD_ARGUMENT
        return Status.OK

    def _proxy_get_header_map_value(self, caller, map_type, key_ptr, key_size, ptr_ptr, size_ptr):
        hmap = self._map(map_type)
        key = self._read(caller, key_ptr, key_size)
        if key is None:
            return Status.INVALID_MEMORY_ACCESS
        if hmap is None:
            return Status.BAD_ARGUMENT
        value = hmap.get_bytes(key)
        if value is None:
            return Status.NOT_FOUND
        return self._return_bytes(caller, value, ptr_ptr, size_ptr)

    def _modify_map(self, caller, map_type, key_ptr, key_size, value_ptr, value_size, op):
        hmap = self._map(map_type)
        key = self._read(caller, key_ptr, key_size)
        value = self._read(caller, value_ptr, value_size) if value_ptr is not None else b""
        if key is None or value is None:
            return Status.INVALID_MEMORY_ACCESS
        if hmap is None:
            return Status.BAD_ARGUMENT
        op(hmap, key, value)
        return Status.OK

    def _proxy_replace_header_map_value(self, caller, map_type, kp, ks, vp, vs):
        return self._modify_map(caller, map_type, kp, ks, vp, vs, lambda m, k, v: m.replace(k, v))

    def _proxy_add_header_map_value(self, caller, map_type, kp, ks, vp, vs):
        return self._modify_map(caller, map_type, kp, ks, vp, vs, lambda m, k, v: m.add(k, v))

    def _proxy_remove_header_map_value(self, caller, map_type, kp, ks):
        return self._modify_map(caller, map_type, kp, ks, None, 0, lambda m, k, v: m.remove(k))

    def _proxy_get_property(self, caller, path_ptr, path_size, ptr_ptr, size_ptr):
        raw = self._read(caller, path_ptr, path_size)
        if raw is None:
            return Status.INVALID_MEMORY_ACCESS
        path = tuple(seg.decode("utf-8", "replace") for seg in raw.split(b"\0")) if raw else ()
        ctx = self._contexts.get(self._effective)
        value = None
        if ctx is not None and path in ctx.properties:
            value = ctx.properties[path]
        elif path in self.properties:
            value = self.properties[path]
        if value is None:
            return Status.NOT_FOUND
        return self._return_bytes(caller, value, ptr_ptr, size_ptr)

    def _proxy_set_property(self, caller, path_ptr, path_size, value_ptr, value_size):
        raw = self._read(caller, path_ptr, path_size)
        value = self._read(caller, value_ptr, value_size)
        if raw is None or value is None:
            return Status.INVALID_MEMORY_ACCESS
        path = tuple(seg.decode("utf-8", "replace") for seg in raw.split(b"\0"))
        ctx = self._contexts.get(self._effective)
        if not isinstance(ctx, HttpContext):
            return Status.NOT_FOUND  # Envoy writes filter state: there is none without a stream
        ctx.properties[path] = value
        ctx.properties_set[path] = value
        return Status.OK

    def _proxy_get_shared_data(self, caller, key_ptr, key_size, ptr_ptr, size_ptr, cas_ptr):
        key = self._read(caller, key_ptr, key_size)
        if key is None:
            return Status.INVALID_MEMORY_ACCESS
        entry = self.shared_data.get(key)
        if entry is None:
            return Status.NOT_FOUND
        value, cas = entry
        status = self._return_bytes(caller, value, ptr_ptr, size_ptr)
        if status != Status.OK:
            return status
        return Status.OK if self._write_u32(caller, cas_ptr, cas) else Status.INVALID_MEMORY_ACCESS

    def _proxy_set_shared_data(self, caller, key_ptr, key_size, value_ptr, value_size, cas):
        key = self._read(caller, key_ptr, key_size)
        value = self._read(caller, value_ptr, value_size)
        if key is None or value is None:
            return Status.INVALID_MEMORY_ACCESS
        return self.shared_data.set(key, value, cas & MASK32)

    def _proxy_send_local_response(
        self, caller, status, details_ptr, details_size, body_ptr, body_size, headers_ptr, headers_size, grpc
    ):
        details = self._read(caller, details_ptr, details_size)
        body = self._read(caller, body_ptr, body_size)
        headers = self._read(caller, headers_ptr, headers_size)
        if details is None or body is None or headers is None:
            return Status.INVALID_MEMORY_ACCESS
        try:
            pairs = deserialize_map(headers)
        except ValueError:
            return Status.BAD_ARGUMENT
        http = self._http()
        if http is None:
            return Status.NOT_FOUND
        http.local_responses.append(
            LocalResponse(
                status=status & MASK32,
                headers=[(k.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for k, v in pairs],
                body=body,
                details=details.decode("utf-8", "replace"),
                grpc_status=grpc,
            )
        )
        return Status.OK

    def _proxy_http_call(
        self, caller, up_ptr, up_size, h_ptr, h_size, b_ptr, b_size, t_ptr, t_size, timeout, token_ptr
    ):
        upstream = self._read(caller, up_ptr, up_size)
        headers = self._read(caller, h_ptr, h_size)
        body = self._read(caller, b_ptr, b_size)
        trailers = self._read(caller, t_ptr, t_size)
        if None in (upstream, headers, body, trailers):
            return Status.INVALID_MEMORY_ACCESS
        try:
            hpairs = deserialize_map(headers)
            tpairs = deserialize_map(trailers)
        except ValueError:
            return Status.BAD_ARGUMENT
        cluster = upstream.decode("utf-8", "replace")
        if self.clusters is not None and cluster not in self.clusters:
            return Status.BAD_ARGUMENT
        names = {k for k, _ in hpairs}
        if not {b":method", b":path", b":authority"} <= names:
            return Status.BAD_ARGUMENT
        token = self._next_token
        self._next_token += 1
        if not self._write_u32(caller, token_ptr, token):
            return Status.INVALID_MEMORY_ACCESS
        call = HttpCall(
            token=token,
            context_id=self._effective,
            upstream=cluster,
            headers=[(k.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for k, v in hpairs],
            body=body,
            trailers=[(k.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for k, v in tpairs],
            timeout_ms=timeout & MASK32,
        )
        self.pending_http_calls[token] = call
        self.http_calls.append(call)
        return Status.OK

    def _proxy_continue_stream(self, caller, stream_type):
        http = self._http()
        if http is None:
            return Status.NOT_FOUND
        http.continued.append(stream_type)
        return Status.OK

    def _proxy_close_stream(self, caller, stream_type):
        http = self._http()
        if http is None:
            return Status.NOT_FOUND
        http.closed.append(stream_type)
        return Status.OK

    def _proxy_set_effective_context(self, caller, context_id):
        if context_id not in self._contexts:
            return Status.BAD_ARGUMENT
        self._effective = context_id
        return Status.OK

    def _proxy_done(self, caller):
        return Status.OK

    def _proxy_register_shared_queue(self, caller, name_ptr, name_size, id_ptr):
        name = self._read(caller, name_ptr, name_size)
        if name is None:
            return Status.INVALID_MEMORY_ACCESS
        queues = self.shared_data.queues
        qid = queues.setdefault((self.vm_id, name), len(queues) + 1)
        self.shared_data.queue_items.setdefault(qid, [])
        self.registered_queues.add(qid)
        return Status.OK if self._write_u32(caller, id_ptr, qid) else Status.INVALID_MEMORY_ACCESS

    def _proxy_resolve_shared_queue(self, caller, vm_ptr, vm_size, name_ptr, name_size, id_ptr):
        vm_id = self._read(caller, vm_ptr, vm_size)
        name = self._read(caller, name_ptr, name_size)
        if vm_id is None or name is None:
            return Status.INVALID_MEMORY_ACCESS
        qid = self.shared_data.queues.get((vm_id, name))
        if qid is None:
            return Status.NOT_FOUND
        return Status.OK if self._write_u32(caller, id_ptr, qid) else Status.INVALID_MEMORY_ACCESS

    def _proxy_enqueue_shared_queue(self, caller, qid, value_ptr, value_size):
        value = self._read(caller, value_ptr, value_size)
        if value is None:
            return Status.INVALID_MEMORY_ACCESS
        items = self.shared_data.queue_items.get(qid & MASK32)
        if items is None:
            return Status.NOT_FOUND
        items.append(value)
        return Status.OK

    def _proxy_dequeue_shared_queue(self, caller, qid, ptr_ptr, size_ptr):
        items = self.shared_data.queue_items.get(qid & MASK32)
        if items is None:
            return Status.NOT_FOUND
        if not items:
            return Status.EMPTY
        return self._return_bytes(caller, items.pop(0), ptr_ptr, size_ptr)

    def queue_ready(self) -> None:
        """Delivers `proxy_on_queue_ready` for every queue this VM registered that holds items
        (Envoy posts it to the registering thread after each enqueue)."""
        for qid in sorted(self.registered_queues):
            if self.shared_data.queue_items.get(qid):
                self._call("proxy_on_queue_ready", self.root_id, self.root_id, qid)

    def _proxy_define_metric(self, caller, metric_type, name_ptr, name_size, id_ptr):
        name = self._read(caller, name_ptr, name_size)
        if name is None:
            return Status.INVALID_MEMORY_ACCESS
        for mid, m in self.metrics.items():
            if m["name"] == name.decode("utf-8", "replace"):
                break
        else:
            mid = len(self.metrics) + 1
            self.metrics[mid] = {"name": name.decode("utf-8", "replace"), "type": metric_type, "value": 0}
        return Status.OK if self._write_u32(caller, id_ptr, mid) else Status.INVALID_MEMORY_ACCESS

    def _proxy_increment_metric(self, caller, metric_id, offset):
        m = self.metrics.get(metric_id & MASK32)
        if m is None:
            return Status.NOT_FOUND
        m["value"] += offset
        return Status.OK

    def _proxy_record_metric(self, caller, metric_id, value):
        m = self.metrics.get(metric_id & MASK32)
        if m is None:
            return Status.NOT_FOUND
        m["value"] = value & 0xFFFF_FFFF_FFFF_FFFF
        return Status.OK

    def _proxy_get_metric(self, caller, metric_id, ret_ptr):
        m = self.metrics.get(metric_id & MASK32)
        if m is None:
            return Status.NOT_FOUND
        ok = self._write(caller, ret_ptr, struct.pack("<Q", m["value"] & 0xFFFF_FFFF_FFFF_FFFF))
        return Status.OK if ok else Status.INVALID_MEMORY_ACCESS
