"""Envoy's edge settings against hostile clients, over raw sockets (SECURITY-CATALOGUE B-04,
B-11, B-14, B-16): slow headers and slow bodies are cut by the timeouts of `settings.edge`,
header names with `_` and oversized headers are refused by Envoy before any filter, path tricks
are normalised or refused and never reach a provider unauthenticated, and a long stream with
pauses shorter than the idle timeout still completes. Every refusal is OpenAI-format JSON.

The stack uses short timeouts (set in its config file) so that the slow-client cases take
seconds: headers 2 s, whole request 3 s, stream idle 3 s.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import socket
import time

import pytest

import harness
from e2e_util import (PROVIDER_KEY_ENV, assert_openai_error, assert_openai_error_parts, bearer,
                      mock_requests_with, unique, user_message)
from mocks.openai_mock import MockOpenAI

HEADERS_TIMEOUT = 2
RECEIVE_TIMEOUT = 3
IDLE_TIMEOUT = 3
# How late a cut may come: Envoy's timers plus scheduling on a loaded 2-core machine.
SLACK = 2.5


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    missing = harness.missing_artifacts()
    if missing:
        if os.environ.get("TOLLGATE_REQUIRE_E2E", "") not in ("", "0", "false", "no"):
            pytest.fail("e2e stack not built: " + "; ".join(missing), pytrace=False)
        pytest.skip("e2e stack not built")
    key = harness.random_secret("sk-mock-")
    config = {
        "settings": {"edge": {"request_headers_timeout_seconds": HEADERS_TIMEOUT,
                              "request_receive_timeout_seconds": RECEIVE_TIMEOUT,
                              "stream_idle_timeout_seconds": IDLE_TIMEOUT}},
        "credentials": {"mock": {"api_key_env": PROVIDER_KEY_ENV}},
        "models": [{"name": "gpt-mock", "deployments": [
            {"provider": "openai", "base_url": "{{MOCK_BASE_URL}}", "model": "mock-model-1",
             "credential": "mock"}]}],
    }
    stack = harness.GatewayStack(tmp_path_factory.mktemp("tollgate-edge"), config,
                                 {PROVIDER_KEY_ENV: key}, mock=MockOpenAI(api_key=key))
    try:
        stack.start()
        stack.wait_chat_ready("gpt-mock")
    except (harness.StartupError, TimeoutError) as err:
        stack.stop()
        pytest.fail(f"could not start the stack:\n{err}", pytrace=False)
    yield stack
    stack.stop()


@pytest.fixture()
def mock(edge):
    edge.mock.reset_faults()
    yield edge.mock
    edge.mock.reset_faults()


def chat_body(token: str, **extra) -> bytes:
    return json.dumps({"model": "gpt-mock", "messages": user_message(token), **extra}).encode()


def drip(gw, head: bytes, drip_bytes: bytes, interval: float = 0.5,
         limit: float = 20.0) -> tuple[float, bytes]:
    """Send `head` at once, then `drip_bytes` one byte every `interval` seconds, until the server
    answers and closes (or `limit` passes). Returns (seconds until closed, what was received)."""
    start = time.monotonic()
    received = bytearray()
    with socket.create_connection(("127.0.0.1", gw.gateway_port), timeout=limit) as sock:
        sock.sendall(head)
        pending = list(drip_bytes)
        next_send = time.monotonic()
        while time.monotonic() - start < limit:
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                received += data
            if pending and time.monotonic() >= next_send:
                try:
                    sock.send(bytes([pending.pop(0)]))
                except (BrokenPipeError, ConnectionResetError):
                    pass
                next_send += interval
    return time.monotonic() - start, bytes(received)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body[:int(headers.get("content-length", len(body)))]


def assert_next_request_succeeds(gw, secret: str) -> None:
    token = unique()
    resp = harness.http("POST", f"{gw.base_url}/chat/completions", data=chat_body(token),
                        headers={**bearer(secret), "Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert token in resp.json()["choices"][0]["message"]["content"]


def test_slow_headers_are_cut(edge, mock):
    """B-04: headers at 1 byte / 0.5 s. Without the headers timeout the connection stays open
    for as long as the client drips (20 s here)."""
    token = unique()
    body = chat_body(token)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    rest = (f"Authorization: Bearer {edge.bootstrap_key[1]}\r\nContent-Type: application/json\r\n"
            f"X-Padding: {'a' * 40}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    elapsed, raw = drip(edge, head, rest)
    assert elapsed < HEADERS_TIMEOUT + SLACK, f"held {elapsed:.1f}s; got {raw[:300]!r}"
    if raw:  # Envoy answers 408 when it can, else it closes the connection
        status, headers, body_out = parse(raw)
        error = assert_openai_error_parts(status, headers, body_out, 408)
        assert error["code"] == "request_timeout"
    assert mock_requests_with(mock, token) == []
    assert_next_request_succeeds(edge, edge.bootstrap_key[1])


def test_slow_body_is_cut_with_a_408(edge, mock):
    """B-04: complete headers, then the body at 1 byte / 0.5 s: cut by the request (receive)
    timeout with a 408 in OpenAI format; the provider never sees the request."""
    token = unique()
    body = chat_body(token)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {edge.bootstrap_key[1]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    elapsed, raw = drip(edge, head, body)
    assert elapsed < RECEIVE_TIMEOUT + SLACK, f"held {elapsed:.1f}s; got {raw[:300]!r}"
    status, headers, body_out = parse(raw)
    error = assert_openai_error_parts(status, headers, body_out, 408)
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_timeout")
    assert mock_requests_with(mock, token) == []
    assert_next_request_succeeds(edge, edge.bootstrap_key[1])


@pytest.mark.parametrize("name", ["x_tollgate_cluster", "x_api_key", "authorization_"])
def test_header_names_with_underscores_are_refused(edge, mock, name):
    """B-11: a header name with `_` (`x_tollgate_cluster` is the underscore form of an internal
    header) gets a 400 from Envoy before any filter runs."""
    token = unique()
    resp = harness.http("POST", f"{edge.base_url}/chat/completions", data=chat_body(token),
                        headers={**bearer(edge.bootstrap_key[1]), "Content-Type": "application/json",
                                 name: "tg_model_0000000000000000"})
    error = assert_openai_error(resp, 400)
    assert error["type"] == "invalid_request_error"
    assert mock_requests_with(mock, token) == []
    assert_next_request_succeeds(edge, edge.bootstrap_key[1])


@pytest.mark.parametrize("shape", ["one-100k-header", "200-headers"])
def test_oversized_headers_get_431(edge, mock, shape):
    """B-14: one 100 KB header, or 200 headers: 431 in OpenAI format, no filter invoked."""
    token = unique()
    extra = ({"X-Big": "b" * 100_000} if shape == "one-100k-header"
             else {f"X-H{i}": "v" for i in range(200)})
    resp = harness.http("POST", f"{edge.base_url}/chat/completions", data=chat_body(token),
                        headers={**bearer(edge.bootstrap_key[1]),
                                 "Content-Type": "application/json", **extra})
    error = assert_openai_error(resp, 431)
    assert error["code"] == "request_headers_too_large"
    assert mock_requests_with(mock, token) == []
    assert_next_request_succeeds(edge, edge.bootstrap_key[1])


def raw_request(gw, method: str, path: str, headers: dict[str, str], body: bytes = b""):
    """A request with the path exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.gateway_port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


TRICK_PATHS = [
    "//v1/chat/completions", "/v1//chat/completions", "/v1/chat/completions/../../admin/v1/keys",
    "/v1/chat/completions/../../admin", "/v1/./chat/completions", "/admin%2Fv1%2Fkeys",
    "/v1%2Fchat%2Fcompletions", "/v1/chat%2Fcompletions", "/v1/chat/completions%2F..%2F..%2Fadmin",
    "//admin/v1/keys", "/ADMIN/v1/keys", "/v1/chat/completions;x=1", "/v1/%2e%2e/admin/v1/keys",
]


@pytest.mark.parametrize("path", TRICK_PATHS)
def test_path_tricks_never_pass_unauthenticated(edge, mock, path):
    """B-16: without a key every variant is refused (401 in OpenAI format) and nothing reaches
    the provider; the admin API is not on the gateway's listener at all."""
    token = unique()
    status, headers, body = raw_request(edge, "POST", path, {"Content-Type": "application/json"},
                                        chat_body(token))
    error = assert_openai_error_parts(status, headers, body)
    assert status in (400, 401, 404), (status, body)
    assert error["type"] in ("authentication_error", "invalid_request_error", "not_found_error")
    assert mock_requests_with(mock, token) == []


@pytest.mark.parametrize("path", ["//v1/chat/completions", "/v1//chat/completions",
                                  "/v1/./chat/completions", "/v1/models/../chat/completions"])
def test_dot_segments_and_double_slashes_are_normalised(edge, mock, path):
    """With a key, the normalised path is served: Envoy resolved it before the filters."""
    token = unique()
    status, _, body = raw_request(edge, "POST", path,
                                  {**bearer(edge.bootstrap_key[1]),
                                   "Content-Type": "application/json"}, chat_body(token))
    assert status == 200, body
    assert token in json.loads(body)["choices"][0]["message"]["content"]
    seen = mock_requests_with(mock, token)
    assert len(seen) == 1 and seen[0]["path"] == "/v1/chat/completions", seen


@pytest.mark.parametrize("path", ["/v1/chat%2Fcompletions", "/v1%2Fchat%2Fcompletions",
                                  "/v1/chat/completions%2F..%2F..%2Fadmin"])
def test_escaped_slashes_are_not_a_route(edge, mock, path):
    """`%2F` is kept as sent (Bedrock clients encode model ARNs so): with a key, an escaped
    slash outside a model id is an unknown path, never the route it spells."""
    token = unique()
    status, headers, body = raw_request(edge, "POST", path,
                                        {**bearer(edge.bootstrap_key[1]),
                                         "Content-Type": "application/json"}, chat_body(token))
    assert_openai_error_parts(status, headers, body, 404)
    assert mock_requests_with(mock, token) == []


def test_a_long_stream_with_pauses_shorter_than_the_idle_timeout_completes(edge, mock):
    """A streamed answer that takes longer than the receive and the idle timeouts in total, with
    pauses of a third of the idle timeout between chunks, arrives whole."""
    mock.set_faults({"chunk_delay_ms": 1000})
    words = [f"w{i}" for i in range(7)]
    token = unique()
    start = time.monotonic()
    stream = edge.client(edge.bootstrap_key[1]).chat.completions.create(
        model="gpt-mock", messages=user_message(token + " " + " ".join(words)), stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    elapsed = time.monotonic() - start
    assert elapsed > RECEIVE_TIMEOUT + IDLE_TIMEOUT, f"the stream took only {elapsed:.1f}s"
    assert token in text and all(w in text for w in words), text


def test_a_stream_pausing_longer_than_the_idle_timeout_is_cut(edge, mock):
    """The other side: a pause longer than the idle timeout ends the stream."""
    mock.set_faults({"chunk_delay_ms": (IDLE_TIMEOUT + 2) * 1000})
    token = unique()
    start = time.monotonic()
    stream = edge.client(edge.bootstrap_key[1]).chat.completions.create(
        model="gpt-mock", messages=user_message(token + " a b c"), stream=True)
    with pytest.raises(Exception):
        for _ in stream:
            pass
    assert time.monotonic() - start < 2 * (IDLE_TIMEOUT + 2)


def test_the_edge_settings_are_in_effect_and_the_config_dump_holds_no_secret(edge):
    dump = edge.config_dump()
    for needle in ('"request_headers_timeout": "2s"', '"request_timeout": "3s"',
                   '"stream_idle_timeout": "3s"', '"headers_with_underscores_action": "REJECT_REQUEST"',
                   '"max_request_headers_kb": 60', '"use_remote_address": true',
                   '"merge_slashes": true', '"normalize_path": true', '"max_concurrent_streams": 100'):
        assert needle in dump, needle
    for name, secret in edge.secrets.items():
        assert secret not in dump, f"{name} in the config dump"
    stats = harness.http("GET", f"{edge.envoy_admin_url}/stats").text
    assert "overload.envoy.resource_monitors.global_downstream_max_connections" in stats or \
        "overload.envoy.overload_actions.stop_accepting_requests" in stats, "overload manager off"


def test_heap_over_budget_sheds_requests_with_an_openai_503(edge, tmp_path):
    """F-16 (part): Envoy restarted with a heap budget below its actual heap: the overload
    manager's stop_accepting_requests answers new requests with a 503 (rewritten into an
    OpenAI-format `overloaded` error), its counters move, the process survives, nothing reaches
    the provider; the stack's own Envoy (normal budget) serves again afterwards."""
    import re as _re
    token = unique()
    edge.envoy.stop()
    tiny = harness.Envoy(tmp_path, edge.cp, edge.data_plane_token, edge.node_id,
                         edge.envoy_admin_port,
                         bootstrap_edit=lambda text: _re.sub(
                             r"max_heap_size_bytes: \d+", "max_heap_size_bytes: 4194304", text))
    try:
        tiny.start()
        tiny.wait_ready()

        def shed():
            resp = harness.http("POST", f"{edge.base_url}/chat/completions", data=chat_body(token),
                                headers={**bearer(edge.bootstrap_key[1]),
                                         "Content-Type": "application/json"}, timeout=5)
            seen.append((resp.status_code, resp.headers.get("content-type"), resp.content[:200]))
            return (resp,) if resp.status_code == 503 else None
        seen: list = []
        (resp,) = harness.wait_until(shed, 20, "the overload manager to shed requests",
                                  on_timeout=lambda: f"answers: {seen[-3:]}")
        error = assert_openai_error(resp, 503)
        assert (error["type"], error["code"]) == ("api_error", "overloaded"), error
        stats = harness.http("GET", f"{tiny.admin_url}/stats").text
        active = _re.search(r"overload\.envoy\.overload_actions\.stop_accepting_requests\.active: (\d+)", stats)
        assert active and int(active[1]) == 1, stats[:2000]
        # the load-shed counter moved (the shed requests above)
        assert _re.search(r"http\.tollgate\.downstream_rq_overload_close: [1-9]", stats), stats[:2000]
        assert tiny.alive
        assert mock_requests_with(edge.mock, token) == []
    finally:
        tiny.stop()
        edge.envoy.start()
        edge.envoy.wait_ready()
        edge.wait_key_usable(edge.bootstrap_key[1])
    assert_next_request_succeeds(edge, edge.bootstrap_key[1])


def raw_exchange(gw, request: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send bytes exactly as given; read one response (Content-Length framed) or until close."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", gw.gateway_port), timeout=timeout) as sock:
        sock.sendall(request)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not data:
                break
            received += data
            head, sep, body = bytes(received).partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and length and len(body) >= int(length[1]):
                break
    return parse(bytes(received))


def header_request(gw, token: str, bad_header: bytes) -> bytes:
    body = chat_body(token)
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {gw.bootstrap_key[1]}\r\n".encode() + bad_header
            + f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body)


@pytest.mark.parametrize("bad_header", [b"X-Note: a\x00b", b"X-Note: a\nInjected: 1\r\nBad Line"])
def test_control_characters_in_headers_are_refused(edge, mock, bad_header):
    """B-11: NUL in a header value, or a header line without a colon after a bare LF
    (HTTP/1): 400 from Envoy's codec, in OpenAI format; nothing reaches the provider."""
    token = unique()
    status, headers, out = raw_exchange(edge, header_request(edge, token, bad_header))
    error = assert_openai_error_parts(status, headers, out, 400)
    assert error["type"] == "invalid_request_error"
    assert mock_requests_with(mock, token) == []


def test_a_bare_cr_in_a_header_value_injects_nothing(edge, mock):
    """B-11: `X-Note: a\rInjected: 1`. Envoy's HTTP/1 parser drops the bare CR: the value
    reaches the provider as one header without the CR, and no `Injected` header exists."""
    token = unique()
    status, _, out = raw_exchange(edge, header_request(edge, token, b"X-Note: a\rInjected: 1"))
    if status == 400:
        return  # refusing it is as good
    assert status == 200, out
    [seen] = mock_requests_with(mock, token)
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert "injected" not in headers
    assert all("\r" not in v and "\n" not in v for v in headers.values()), headers


@pytest.mark.parametrize("target,host", [
    ("/v1/chat/completions", "localhost/#@attacker.example"),
    ("/v1/chat/completions", "x/admin/v1/keys"),
    ("http://evil.example/admin/v1/keys", "evil.example"),
    ("http://evil.example/v1/chat/completions", "127.0.0.1"),
])
def test_host_and_absolute_form_tricks_do_not_bypass_auth(edge, mock, target, host):
    """B-15: odd Host headers and absolute-form request targets: the decision is made on the
    dispatched route; without a key nothing passes (and the admin API is not on this listener)."""
    token = unique()
    body = chat_body(token)
    request = (f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    status, headers, out = raw_exchange(edge, request)
    assert_openai_error_parts(status, headers, out)
    assert status in (400, 401, 404), (status, out)
    assert mock_requests_with(mock, token) == []


def test_the_filters_own_400s_are_not_rewritten(edge, mock):
    """The mapping of Envoy's 400s leaves the gateway filter's own 400 (its precise message)."""
    token = unique()
    resp = harness.http("POST", f"{edge.base_url}/chat/completions",
                        data=f'{{"model": "gpt-mock", "messages": "{token}"',
                        headers={**bearer(edge.bootstrap_key[1]), "Content-Type": "application/json"})
    error = assert_openai_error(resp, 400)
    assert "could not be read as valid HTTP" not in error["message"], error
    assert mock_requests_with(mock, token) == []
