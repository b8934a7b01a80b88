"""Tests of the harness itself, independent of the Tollgate filters: the map wire format against
the proxy-wasm SDK's own test vector, shared-data CAS, and trap / stub handling with a tiny
hand-written module."""

from __future__ import annotations

import pytest
import wasmtime

from proxy_wasm_host import Action, Host, HostError, SharedData, Status, VmTrap, deserialize_map, serialize_map

# proxy-wasm-0.2.5 src/hostcalls.rs, utils::tests::SERIALIZED_MAP
SDK_MAP = [(":method", "GET"), (":path", "/bytes/1"), (":authority", "httpbin.org"), ("Powered-By", "proxy-wasm")]
SDK_SERIALIZED_MAP = bytes(
    [4, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0, 10, 0, 0, 0, 11, 0, 0, 0, 10, 0, 0, 0, 10, 0, 0, 0]
    + list(b":method\0GET\0:path\0/bytes/1\0:authority\0httpbin.org\0Powered-By\0proxy-wasm\0")
)


def test_map_format_matches_the_sdk():
    assert serialize_map(SDK_MAP) == SDK_SERIALIZED_MAP
    assert deserialize_map(SDK_SERIALIZED_MAP) == [(k.encode(), v.encode()) for k, v in SDK_MAP]
    assert serialize_map([]) == b"\0\0\0\0"
    assert deserialize_map(b"") == [] and deserialize_map(b"\0\0\0\0") == []
    with pytest.raises(ValueError):
        deserialize_map(SDK_SERIALIZED_MAP[:-3])


def test_shared_data_cas():
    sd = SharedData()
    assert sd.set("k", b"1") == Status.OK
    _, cas = sd.get("k")
    assert sd.set("k", b"2", cas) == Status.OK
    assert sd.set("k", b"3", cas) == Status.CAS_MISMATCH  # stale
    assert sd.value("k") == b"2"
    assert sd.set("absent", b"x", 99) == Status.OK  # like cpp-host: cas guards existing keys only
    assert sd.set("k", b"4", 0) == Status.OK  # cas 0: unconditional


TINY = r"""
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_call"
    (func $grpc (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 16) "boom")
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $log (i32.const 5) (i32.const 16) (i32.const 4)))
    unreachable)
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (if (i32.eq (call $grpc (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                            (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
                (i32.const 12))
      (then (return (i32.const 0))))
    (i32.const 1))
)
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.wasm"
    path.write_bytes(wasmtime.wat2wasm(TINY))
    return path


def test_trap_raises_vm_trap_with_the_panic_and_kills_the_vm(tiny):
    host = Host(tiny, b"")
    assert host.configured
    ctx = host.new_http_context()
    with pytest.raises(VmTrap) as info:
        ctx.request_headers([(":path", "/")])
    assert info.value.callback == "proxy_on_request_headers"
    assert info.value.panic == "boom"
    assert host.crashed is info.value
    with pytest.raises(HostError):
        host.new_http_context()


def test_unimplemented_import_returns_an_error_status_and_is_recorded(tiny):
    host = Host(tiny, b"")
    ctx = host.new_http_context()
    assert ctx.request_body(b"x", end_of_stream=True) == Action.CONTINUE  # the stub returned 12
    assert host.unsupported_calls == ["proxy_grpc_call"]


def test_tick_without_a_period_is_a_harness_error(tiny):
    host = Host(tiny, b"")
    with pytest.raises(HostError):
        host.tick()
