"""Session fixtures for the end-to-end tests: mock provider + control plane + Envoy.

The stack is started once per session on ephemeral ports. If the build artifacts are missing
the e2e tests are skipped, unless TOLLGATE_REQUIRE_E2E is set (CI), where they fail instead.
"""

from __future__ import annotations

import os

import pytest

import harness
from e2e_util import MODEL_NAMES, PROVIDER_KEY_ENV, WRONG_KEY_ENV
from mocks.openai_mock import MockOpenAI


def _require_e2e() -> bool:
    return os.environ.get("TOLLGATE_REQUIRE_E2E", "") not in ("", "0", "false", "no")


def stack_config(dead_port: int = 9) -> dict:
    """The e2e config; `dead_port` is a loopback port where nothing listens."""
    def openai_deployment(model: str, credential: str, base_url: str = "{{MOCK_BASE_URL}}"):
        return {"provider": "openai", "base_url": base_url, "model": model,
                "credential": credential}

    return {
        "credentials": {"mock": {"api_key_env": PROVIDER_KEY_ENV},
                        "wrong": {"api_key_env": WRONG_KEY_ENV}},
        "models": [
            {"name": "gpt-mock", "deployments": [openai_deployment("mock-model-1", "mock")]},
            {"name": "other-model", "deployments": [openai_deployment("mock-model-2", "mock")]},
            {"name": "demo", "deployments": [{"provider": "demo"}]},
            # The provider's model id is the name clients use (no `model`): the body is sent as
            # is. It fails over from a deployment with another id (the body rewritten).
            {"name": "as-sent", "deployments": [
                {**openai_deployment("mock-model-1", "mock"), "priority": 0},
                {"provider": "openai", "base_url": "{{MOCK_BASE_URL}}", "credential": "mock",
                 "priority": 1}]},
            # A deployment whose provider key is wrong: the mock answers it with a 401.
            {"name": "wrong-key", "deployments": [openai_deployment("mock-model-1", "wrong")]},
            # A provider that cannot be reached (connection refused).
            {"name": "unreachable", "deployments": [openai_deployment(
                "mock-model-1", "mock", f"http://127.0.0.1:{dead_port}/v1")]},
        ],
    }


@pytest.fixture(scope="session")
def gw(tmp_path_factory):
    missing = harness.missing_artifacts()
    if missing:
        message = "e2e stack not built: missing " + "; ".join(missing)
        if _require_e2e():
            pytest.fail(message + " (TOLLGATE_REQUIRE_E2E is set)", pytrace=False)
        pytest.skip(message + " (set TOLLGATE_REQUIRE_E2E=1 to fail instead)")
    assert {m["name"] for m in stack_config()["models"]} == MODEL_NAMES
    provider_key = harness.random_secret("sk-mock-")
    wrong_key = harness.random_secret("sk-wrong-")
    mock = MockOpenAI(api_key=provider_key)
    stack = harness.GatewayStack(tmp_path_factory.mktemp("tollgate-e2e"),
                                 stack_config(dead_port=harness.free_port()),
                                 {PROVIDER_KEY_ENV: provider_key, WRONG_KEY_ENV: wrong_key},
                                 mock=mock)
    try:
        stack.start()
        stack.wait_chat_ready("gpt-mock")
    except (harness.StartupError, TimeoutError) as err:
        stack.stop()
        pytest.fail(f"could not start the e2e stack:\n{err}", pytrace=False)
    yield stack
    stack.stop()


@pytest.fixture()
def mock(gw):
    """The session's mock provider, with faults reset before and after the test."""
    gw.mock.reset_faults()
    yield gw.mock
    gw.mock.reset_faults()


@pytest.fixture(scope="session")
def user_key(gw):
    """(id, secret) of an unrestricted virtual key."""
    key = gw.create_key(name="e2e-user")
    gw.wait_key_usable(key[1])
    return key


@pytest.fixture(scope="session")
def restricted_key(gw):
    """(id, secret) of a virtual key allowed only the model gpt-mock."""
    key = gw.create_key(models=["gpt-mock"], name="e2e-restricted")
    gw.wait_key_usable(key[1])
    return key


@pytest.fixture()
def client(gw, user_key):
    return gw.client(user_key[1])


def pytest_collection_modifyitems(config, items):
    def order(item):
        marker = item.get_closest_marker("e2e_order")
        return marker.args[0] if marker else 0
    items.sort(key=order)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    funcargs = getattr(item, "funcargs", {})
    stack = funcargs.get("gw")
    if not isinstance(stack, harness.GatewayStack):  # e.g. test_providers.py's `providers`
        stack = getattr(funcargs.get("providers"), "stack", None)
    if report.failed and isinstance(stack, harness.GatewayStack):
        report.sections.append(("tollgate logs (tails)",
                                f"work dir: {stack.work_dir}\n{stack.log_tails(30)}"))
