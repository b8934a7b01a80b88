"""The host's side of the proxy-wasm ABI for the test harness (`proxy_wasm_host.Host`): the
`env` imports a filter module calls (logging, the clock, buffers, header maps, properties,
shared data and queues, local replies, callouts, metrics), with the memory helpers they share.
`HostImports` is a mixin: the state it reads and writes (memory, contexts, shared data, the
crossing counters) is `Host`'s; the lifecycle and the callbacks Envoy drives are in
`proxy_wasm_host.py`. Behaviour follows Envoy 1.40 where the ABI leaves room (see that module's
docstring)."""

from __future__ import annotations

import struct
from typing import Callable, Optional

import wasmtime

from proxy_wasm_abi import (MASK32, BufferType, HeaderMap, HostError, HttpCall, LocalResponse, LogLevel, LogRecord, MapType,
                            Status, _RootContext, deserialize_map, serialize_map)
from proxy_wasm_http import HttpContext


class HostImports:
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
