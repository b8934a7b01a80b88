"""The built filters export only the proxy-wasm callbacks they implement (`make wasm` strips the
rest: Envoy enters the VM for every exported callback on every request, and skips one that is
not exported). A callback a filter needs must still be there, or Envoy would silently skip it."""

from __future__ import annotations

import wasmtime

ALWAYS = {"proxy_on_memory_allocate", "proxy_on_context_create", "proxy_on_vm_start",
          "proxy_on_configure", "proxy_on_delete"}
REQUEST = {"proxy_on_request_headers", "proxy_on_request_body", "proxy_on_request_trailers"}
RESPONSE = {"proxy_on_response_headers", "proxy_on_response_body"}
# Never needed by either filter: each would cost a VM entry per request for nothing.
UNUSED = {"proxy_on_log", "proxy_on_done", "proxy_on_response_trailers", "proxy_on_queue_ready"}


def exports(path) -> set[str]:
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(path))
    return {e.name for e in module.exports}


def test_gateway_filter_exports_request_callbacks_only(gateway_wasm):
    names = exports(gateway_wasm)
    assert ALWAYS | REQUEST <= names
    assert not (names & (RESPONSE | UNUSED | {"proxy_on_tick", "proxy_on_http_call_response"}))


def test_provider_filter_keeps_response_and_credential_callbacks(provider_wasm):
    names = exports(provider_wasm)
    assert ALWAYS | REQUEST | RESPONSE | {"proxy_on_tick", "proxy_on_http_call_response"} <= names
    assert not (names & UNUSED)
