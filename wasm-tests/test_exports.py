"""Each module exports exactly the proxy-wasm callbacks its `tollgate_wasm::plugin!` line lists
(Envoy enters the VM for every exported callback on every request, and skips one that is not
exported). A callback a filter needs must be there, or Envoy would silently skip it; one it does
not need would cost a VM entry per request for nothing."""

from __future__ import annotations

import wasmtime

# No proxy_on_context_create: Envoy skips that entry for each stream when it is not exported, and
# the modules make their contexts when first needed.
ALWAYS = {"proxy_on_memory_allocate", "proxy_on_configure", "proxy_on_delete",
          "proxy_abi_version_0_2_1", "_initialize", "memory"}
REQUEST = {"proxy_on_request_headers", "proxy_on_request_body", "proxy_on_request_trailers"}
RESPONSE = {"proxy_on_response_headers", "proxy_on_response_body"}


def exports(path) -> set[str]:
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(path))
    return {e.name for e in module.exports}


def test_gateway_filter_exports_request_callbacks_and_callout_answers_only(gateway_wasm):
    # A request whose quota lease is spent waits for the authority's grant (a callout; Envoy
    # enters the VM for its answer only when one was made). The tick gives back token and cost
    # reservations no admission has given back yet (only set when such quotas exist).
    assert exports(gateway_wasm) == ALWAYS | REQUEST | {"proxy_on_http_call_response", "proxy_on_tick"}


def test_provider_filter_exports_request_response_and_tick(provider_wasm):
    # The tick reads the credential document from shared data; no callout, so no
    # proxy_on_http_call_response.
    assert exports(provider_wasm) == ALWAYS | REQUEST | RESPONSE | {"proxy_on_tick"}


def test_service_vm_exports_its_timer_and_callout_callbacks_only(service_wasm):
    assert exports(service_wasm) == ALWAYS | {"proxy_on_tick", "proxy_on_http_call_response", "proxy_on_queue_ready"}
