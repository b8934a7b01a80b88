"""The service VM (one per Envoy, an `envoy.bootstrap.wasm` singleton): fetches the credential
document from the control plane (tick → http call → response) and publishes it in shared data,
where the provider filter on every worker reads it (same VM id). The provider side is in
test_provider_filter.py; here one SharedData joins the two as Envoy's process-wide store does.
The service VM's other callout, the key table's long poll, is in test_key_table.py; here only the
credential calls are looked at."""

from __future__ import annotations

import pytest

from proxy_wasm_host import LogLevel, SharedData
from wasm_fixtures import (
    API_KEY,
    API_KEY_2,
    CREDENTIALS_CLUSTER,
    CREDENTIALS_PATH,
    DATA_PLANE_TOKEN,
    SHARED_CREDENTIALS_KEY,
    chat_body,
    credentials_doc,
    deployment,
    provider_properties,
    request_headers,
)

JSON = [("content-type", "application/json")]


def credential_calls(service) -> dict:
    """The pending credential fetches (the key poll runs beside them)."""
    return {t: c for t, c in service.pending_http_calls.items() if c.header(":path") == CREDENTIALS_PATH}


def answer(service, status=200, body=None, headers=JSON):
    service.tick()
    (token,) = credential_calls(service)
    service.respond_http_call(token, status, headers, credentials_doc() if body is None else body)


def provider_authorization(provider) -> str | None:
    ctx = provider.new_http_context(provider_properties(deployment()))
    ctx.request_headers(request_headers("POST", "/v1/chat/completions"), end_of_stream=False)
    ctx.send_request_body(chat_body())
    return ctx.request_header("authorization")


def test_fetch_flow_and_conditional_polls(service):
    assert service.tick_period_ms == 200
    assert service.pending_http_calls == {}
    service.tick()
    (call,) = credential_calls(service).values()
    assert call.upstream == CREDENTIALS_CLUSTER
    assert call.context_id == service.root_id
    assert (call.header(":method"), call.header(":path")) == ("GET", CREDENTIALS_PATH)
    assert call.header("authorization") == f"Bearer {DATA_PLANE_TOKEN}"
    assert call.header("if-none-match") is None
    assert call.body == b"" and call.timeout_ms > 0
    service.tick()  # one call in flight at a time
    assert len(credential_calls(service)) == 1

    doc = credentials_doc("v1", API_KEY)
    service.respond_http_call(call.token, 200, JSON + [("etag", '"v1"')], doc)
    assert service.shared_data.value(SHARED_CREDENTIALS_KEY) == doc
    assert service.tick_period_ms == 1000  # loaded: poll slowly

    service.tick()
    (call2,) = credential_calls(service).values()
    assert call2.token != call.token and "v1" in call2.header("if-none-match")
    service.respond_http_call(call2.token, 304)
    assert service.shared_data.value(SHARED_CREDENTIALS_KEY) == doc


def test_the_provider_filter_on_a_worker_reads_what_the_service_published(make_service, make_provider):
    shared = SharedData()
    service = make_service(shared_data=shared)
    provider = make_provider(shared_data=shared)
    answer(service)
    provider.tick()
    assert provider_authorization(provider) == f"Bearer {API_KEY}"
    answer(service, body=credentials_doc("v2", API_KEY_2))
    provider.tick()
    assert provider_authorization(provider) == f"Bearer {API_KEY_2}"
    assert provider.http_calls == []


@pytest.mark.parametrize(
    "status,body",
    [(500, b"oops"), (401, b'{"error":"unauthorized"}'), (404, b""), (200, b"{not json"), (200, b'{"version":"v2"}')],
    ids=["500", "401", "404", "200_invalid_json", "200_missing_credentials"],
)
def test_a_bad_answer_keeps_the_published_document(service, status, body):
    answer(service)
    warnings = len(service.logs_at(LogLevel.WARN))
    answer(service, status, body)
    assert len(service.logs_at(LogLevel.WARN)) == warnings + 1
    assert service.shared_data.value(SHARED_CREDENTIALS_KEY) == credentials_doc()
    service.tick()  # not stuck "in flight"
    assert len(credential_calls(service)) == 1


def test_a_failed_call_keeps_the_document_and_retries(service):
    answer(service)
    service.tick()
    (token,) = credential_calls(service)
    service.fail_http_call(token)  # reset / timeout: no headers, no body
    assert service.shared_data.value(SHARED_CREDENTIALS_KEY) == credentials_doc()
    service.tick()
    assert len(credential_calls(service)) == 1


def test_a_failed_first_fetch_keeps_polling_fast(service):
    answer(service, 503, b"starting")
    assert service.tick_period_ms == 200
    assert SHARED_CREDENTIALS_KEY not in service.shared_data
    answer(service)
    assert service.tick_period_ms == 1000


@pytest.mark.parametrize("env", [{}, {"TOLLGATE_DATA_PLANE_TOKEN": ""}], ids=["unset", "empty"])
def test_without_a_token_nothing_is_fetched(make_service, env):
    host = make_service(env=env)
    assert host.configured
    assert any("TOLLGATE_DATA_PLANE_TOKEN" in m for m in host.logs_at(LogLevel.WARN))
    for _ in range(3):
        host.tick()
    assert host.http_calls == []


def test_dispatch_failure_is_logged_and_retried(make_service):
    host = make_service(clusters={"some_other_cluster"})  # the control-plane cluster is unknown
    host.tick()
    host.tick()
    assert host.pending_http_calls == {}
    assert len([m for m in host.logs_at(LogLevel.WARN) if "control plane for credentials" in m]) == 2


def test_a_restarted_service_continues_from_shared_data(make_service):
    shared = SharedData()
    first = make_service(shared_data=shared)
    answer(first)
    second = make_service(shared_data=shared)
    assert second.tick_period_ms == 1000
    second.tick()
    (call,) = credential_calls(second).values()
    assert "v1" in call.header("if-none-match")


@pytest.mark.parametrize("config", [b"", b"{}", b'{"control_plane_cluster": 3}', b'{"x": 1}'])
def test_a_bad_configuration_is_rejected(make_service, config):
    host = make_service(config=config)
    assert not host.configured
