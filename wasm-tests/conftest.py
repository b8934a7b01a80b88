"""Fixtures for the filter tests: hosts running the compiled filters.

Tests skip when the .wasm files are missing (build them with
`cargo build --target wasm32-wasip1 --release -p tollgate-gateway-filter -p tollgate-provider-filter`)
unless TOLLGATE_REQUIRE_E2E is set, in which case they fail.

Every host a test creates is checked at teardown: the filter called no host function the harness
does not implement, and no secret appears in anything the module wrote (logs, stdout, stderr)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_wasm_host import Host, SharedData  # noqa: E402
from wasm_fixtures import (  # noqa: E402
    DATA_PLANE_TOKEN,
    GATEWAY_WASM,
    KEYS,
    NOW,
    PROVIDER_WASM,
    SERVICE_WASM,
    SECRETS,
    config_bytes,
    gateway_config,
    publish_keys,
)


def _wasm(path: Path) -> Path:
    if not path.is_file():
        msg = f"{path} is not built (cargo build --target wasm32-wasip1 --release ...)"
        if os.environ.get("TOLLGATE_REQUIRE_E2E"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def gateway_wasm() -> Path:
    return _wasm(GATEWAY_WASM)


@pytest.fixture(scope="session")
def provider_wasm() -> Path:
    return _wasm(PROVIDER_WASM)


@pytest.fixture
def hosts():
    created: list[Host] = []
    yield created
    for host in created:
        assert host.unsupported_calls == [], f"filter called unimplemented host functions: {host.unsupported_calls}"
        if host.crashed is None:  # a trap already failed (or xfailed) the test
            output = host.all_output()
            for secret in SECRETS:
                assert secret not in output, "a secret reached the filter's logs"


def _factory(wasm, hosts, default_config: bytes, default_env: dict):
    """A maker of hosts for one module: configuration and environment as Envoy gives them."""
    def make(config=None, env=None, **kw) -> Host:
        kw.setdefault("now", NOW)
        host = Host(wasm, default_config if config is None else config,
                    env=default_env if env is None else env, **kw)
        hosts.append(host)
        return host

    return make


@pytest.fixture
def make_gateway(gateway_wasm, hosts):
    """A gateway filter host whose shared data holds the key table of `keys` (default
    `KEYS`; `keys=None`: no table published yet), unless `shared_data` is given."""
    make = _factory(gateway_wasm, hosts, config_bytes(gateway_config()), {})

    def make_gateway_host(config=None, keys=KEYS, **kw):
        if "shared_data" not in kw:
            kw["shared_data"] = SharedData()
            if keys is not None:
                publish_keys(kw["shared_data"], keys)
        return make(config if config is None or isinstance(config, (bytes, str)) else config_bytes(config), **kw)

    return make_gateway_host


@pytest.fixture
def gateway(make_gateway) -> Host:
    host = make_gateway()
    assert host.configured
    return host


@pytest.fixture
def make_provider(provider_wasm, hosts):
    # Envoy gives the filters' VMs no environment: only the service VM gets the token.
    return _factory(provider_wasm, hosts, b"", {})


@pytest.fixture
def provider(make_provider) -> Host:
    host = make_provider()
    assert host.configured
    return host


@pytest.fixture(scope="session")
def service_wasm() -> Path:
    return _wasm(SERVICE_WASM)


SERVICE_CONFIG = b'{"control_plane_cluster": "tollgate_control_plane_internal"}'


@pytest.fixture
def make_service(service_wasm, hosts):
    return _factory(service_wasm, hosts, SERVICE_CONFIG, {"TOLLGATE_DATA_PLANE_TOKEN": DATA_PLANE_TOKEN})


@pytest.fixture
def service(make_service) -> Host:
    host = make_service()
    assert host.configured
    return host
