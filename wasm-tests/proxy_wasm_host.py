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

This module drives the module (lifecycle, callbacks, inspection); the imports it answers are in
`proxy_wasm_imports.py` (`HostImports`, which `Host` extends).
"""

from __future__ import annotations

import collections
import os
import struct
from typing import Iterable, Mapping, Optional, Union

import wasmtime

from proxy_wasm_abi import (  # noqa: F401 (re-exported: the tests import them from here)
    DEFAULT_FUEL_PER_CALL, MASK32, SKIPPED_WHEN_UNEXPORTED, Action, BufferType, Bytesish, HeaderInput,
    HeaderMap, HostError, HttpCall, LocalResponse, LogLevel, LogRecord, MapType, PropertyPath,
    SharedData, Status, StreamClosed, StreamType, VmTrap, _b, _CallResponse, _header_pairs,
    _engine, _path_key, _RootContext, deserialize_map, load_module, serialize_map)
from proxy_wasm_http import HttpContext
from proxy_wasm_imports import HostImports

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


class Host(HostImports):
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

    def queue_ready(self) -> None:
        """Delivers `proxy_on_queue_ready` for every queue this VM registered that holds items
        (Envoy posts it to the registering thread after each enqueue)."""
        for qid in sorted(self.registered_queues):
            if self.shared_data.queue_items.get(qid):
                self._call("proxy_on_queue_ready", self.root_id, self.root_id, qid)
