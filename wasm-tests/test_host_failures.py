"""No host call can trap a filter: the host answers an error status (INTERNAL_FAILURE) for one
import, or for every import, at every callback, and the module must neither trap nor let a request
through. The proxy-wasm Rust SDK panics on host statuses it does not expect (which kills the
worker's VM); the filters use tollgate-wasm, which turns every status into a Result.

For each module, each import it declares is failed alone through a whole request (request
headers, body, response headers, body; ticks and callouts for the roots), then all of them at
once. A request path that failed must be held (Pause) or answered by the filter, never passed on
with Continue before its checks ran."""

from __future__ import annotations

import pytest

from proxy_wasm_host import Action, SharedData
from wasm_fixtures import (
    SHARED_CREDENTIALS_KEY,
    chat_body,
    credentials_doc,
    deployment,
    provider_properties,
    request_headers,
)

CHAT = "/v1/chat/completions"


def env_imports(host) -> list[str]:
    return sorted(i.name for i in host.module.imports if i.module == "env")


def drive_gateway(host) -> tuple[object, list]:
    ctx = host.new_http_context()
    actions = [ctx.request_headers(request_headers("POST", CHAT), end_of_stream=False)]
    if not ctx.local_responses and actions[0] == Action.PAUSE:
        actions.append(ctx.request_body(chat_body("gpt-a"), end_of_stream=True))
    return ctx, actions


def drive_provider(host) -> tuple[object, list]:
    ctx = host.new_http_context(provider_properties(deployment()))
    actions = [ctx.request_headers(request_headers("POST", CHAT), end_of_stream=False)]
    if not ctx.local_responses and actions[0] == Action.PAUSE:
        actions.append(ctx.request_body(chat_body("gpt-a"), end_of_stream=True))
    if not ctx.local_responses:
        ctx.response_headers([(":status", "200"), ("content-type", "application/json")])
        ctx.response_body(b'{"id":"x","choices":[]}', end_of_stream=True)
    host.tick()
    return ctx, actions


def gateway_passed(ctx, actions) -> bool:
    """Did the gateway let the request go upstream (Continue on the last request callback)?"""
    return actions[-1] == Action.CONTINUE and not ctx.local_responses


@pytest.mark.parametrize("fail", ["*", "each"])
def test_gateway_filter_survives_failing_host_calls(make_gateway, fail):
    probe = make_gateway()
    names = ["*"] if fail == "*" else env_imports(probe)
    for name in names:
        host = make_gateway()
        host.failing_calls = {name}
        ctx, actions = drive_gateway(host)
        assert host.crashed is None, f"{name}: trapped"
        if name in ("*", "proxy_get_header_map_pairs", "proxy_set_property", "proxy_get_buffer_bytes",
                    "proxy_replace_header_map_value", "proxy_get_shared_data"):
            # The request could not be authenticated or routed: it must not pass.
            assert not gateway_passed(ctx, actions), f"{name}: a request passed"
        # The VM still serves once the host works again.
        host.failing_calls = set()
        ok, actions = drive_gateway(host)
        assert gateway_passed(ok, actions), f"{name}: the next request failed"


@pytest.mark.parametrize("fail", ["*", "each"])
def test_provider_filter_survives_failing_host_calls(make_provider, fail):
    probe = make_provider()
    names = ["*"] if fail == "*" else env_imports(probe)
    for name in names:
        shared = SharedData()
        shared.set(SHARED_CREDENTIALS_KEY, credentials_doc())
        host = make_provider(shared_data=shared)
        host.failing_calls = {name}
        ctx, actions = drive_provider(host)
        assert host.crashed is None, f"{name}: trapped"
        if name in ("*", "proxy_get_property", "proxy_replace_header_map_value", "proxy_set_buffer_bytes"):
            # No plan applied: the attempt must not go out with the client's headers.
            assert actions[-1] == Action.PAUSE or ctx.local_responses, f"{name}: an attempt went out unplanned"
        host.failing_calls = set()
        ok, _ = drive_provider(host)
        assert ok.local_response is None and ok.request_header(":path") == "/v1/chat/completions", name


def test_service_vm_survives_failing_host_calls(make_service):
    probe = make_service()
    for name in ["*"] + env_imports(probe):
        host = make_service()
        host.failing_calls = {name}
        host.tick()
        for token in list(host.pending_http_calls):
            host.respond_http_call(token, 200, [("content-type", "application/json")], credentials_doc())
        assert host.crashed is None, f"{name}: trapped"
        host.failing_calls = set()
        host.tick()
        for token in list(host.pending_http_calls):
            host.respond_http_call(token, 200, [("content-type", "application/json")], credentials_doc())
        assert host.shared_data.value(SHARED_CREDENTIALS_KEY) == credentials_doc(), name


@pytest.mark.parametrize("which", ["gateway", "provider", "service"])
def test_a_configuration_that_cannot_be_read_is_rejected_without_a_trap(which, make_gateway, make_provider, make_service):
    host = {"gateway": make_gateway, "provider": make_provider, "service": make_service}[which]()
    host.failing_calls = {"*"}
    assert host.reconfigure(b"{}") is False
    assert host.crashed is None
