"""A gateway stack with the three mock providers (OpenAI, Bedrock, Anthropic), for the
cross-provider end-to-end tests (`test_providers.py`).

One stack per module: the OpenAI mock is the harness's mock (`{{MOCK_BASE_URL}}`); the Bedrock
mock verifies SigV4 (access key, secret and session token below) and also accepts a Bedrock API
key as a bearer token; the Anthropic mock checks `x-api-key` and `anthropic-version`.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

import harness
from mocks.anthropic_mock import MockAnthropic
from mocks.bedrock_mock import MockBedrock
from mocks.openai_mock import MockOpenAI

REGION = "us-east-1"
# A real-looking Bedrock model id: its `:` must reach Bedrock percent-encoded (`%3A`).
BEDROCK_MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
# An application inference profile ARN: `:` and `/` both percent-encoded in one path segment.
BEDROCK_ARN = ("arn:aws:bedrock:us-east-1:123456789012:"
               "application-inference-profile/a1b2c3d4e5f6")
ANTHROPIC_MODEL_ID = "claude-mock-1"
OPENAI_MODEL_ID = "mock-model-1"

# Gateway model names.
BEDROCK = "br-claude"                  # Bedrock, SigV4 with a session token
BEDROCK_ARN_MODEL = "br-arn"            # Bedrock, addressed by an inference profile ARN
BEDROCK_API_KEY = "br-apikey"          # Bedrock, Bedrock API key as a bearer token
BEDROCK_WRONG_SECRET = "br-wrong-secret"  # Bedrock, right key id, wrong secret: 403
ANTHROPIC = "claude-mock"              # Anthropic Messages
OPENAI = "gpt-mock"                    # OpenAI-compatible
FAILOVER_OPENAI_BEDROCK = "fo-openai-bedrock"        # [openai p0, bedrock p1]
FAILOVER_ANTHROPIC_BEDROCK = "fo-anthropic-bedrock"  # [anthropic p0, bedrock p1]

ENV_OPENAI_KEY = "TG_E2E_OPENAI_KEY"
ENV_ANTHROPIC_KEY = "TG_E2E_ANTHROPIC_KEY"
ENV_AWS_KEY_ID = "TG_E2E_AWS_ACCESS_KEY_ID"
ENV_AWS_SECRET = "TG_E2E_AWS_SECRET_ACCESS_KEY"
ENV_AWS_TOKEN = "TG_E2E_AWS_SESSION_TOKEN"
ENV_AWS_WRONG_SECRET = "TG_E2E_AWS_WRONG_SECRET"
ENV_BEDROCK_API_KEY = "TG_E2E_BEDROCK_API_KEY"


@dataclass
class ProviderSecrets:
    openai_key: str = field(default_factory=lambda: harness.random_secret("sk-oai-"))
    anthropic_key: str = field(default_factory=lambda: harness.random_secret("sk-ant-api03-"))
    aws_key_id: str = field(default_factory=lambda: "AKIA" + secrets.token_hex(8).upper())
    aws_secret: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    aws_token: str = field(default_factory=lambda: "IQoJb3JpZ2luX2Vj" + secrets.token_urlsafe(60))
    aws_wrong_secret: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    bedrock_api_key: str = field(default_factory=lambda: "ABSK" + secrets.token_urlsafe(40))

    def env(self) -> dict[str, str]:
        return {ENV_OPENAI_KEY: self.openai_key, ENV_ANTHROPIC_KEY: self.anthropic_key,
                ENV_AWS_KEY_ID: self.aws_key_id, ENV_AWS_SECRET: self.aws_secret,
                ENV_AWS_TOKEN: self.aws_token, ENV_AWS_WRONG_SECRET: self.aws_wrong_secret,
                ENV_BEDROCK_API_KEY: self.bedrock_api_key}

    def provider_secrets(self) -> dict[str, str]:
        """Every value that must never leave the control plane / provider filter."""
        return {"openai key": self.openai_key, "anthropic key": self.anthropic_key,
                "aws secret": self.aws_secret, "aws session token": self.aws_token,
                "aws wrong secret": self.aws_wrong_secret,
                "bedrock api key": self.bedrock_api_key}


def providers_config(bedrock_url: str, anthropic_url: str) -> dict[str, Any]:
    def bedrock(credential: str, priority: int = 0,
                model: str = BEDROCK_MODEL_ID) -> dict[str, Any]:
        return {"provider": "bedrock", "region": REGION, "base_url": bedrock_url,
                "model": model, "credential": credential, "priority": priority}

    def anthropic(priority: int = 0) -> dict[str, Any]:
        return {"provider": "anthropic", "base_url": anthropic_url, "model": ANTHROPIC_MODEL_ID,
                "credential": "anthropic", "priority": priority}

    def openai(priority: int = 0) -> dict[str, Any]:
        return {"provider": "openai", "base_url": "{{MOCK_BASE_URL}}", "model": OPENAI_MODEL_ID,
                "credential": "openai", "priority": priority}

    return {
        "credentials": {
            "openai": {"api_key_env": ENV_OPENAI_KEY},
            "anthropic": {"api_key_env": ENV_ANTHROPIC_KEY},
            "aws": {"aws_access_key_id_env": ENV_AWS_KEY_ID,
                    "aws_secret_access_key_env": ENV_AWS_SECRET,
                    "aws_session_token_env": ENV_AWS_TOKEN},
            "aws-wrong": {"aws_access_key_id_env": ENV_AWS_KEY_ID,
                          "aws_secret_access_key_env": ENV_AWS_WRONG_SECRET,
                          "aws_session_token_env": ENV_AWS_TOKEN},
            "bedrock-api-key": {"api_key_env": ENV_BEDROCK_API_KEY},
        },
        "models": [
            {"name": BEDROCK, "deployments": [bedrock("aws")]},
            {"name": BEDROCK_ARN_MODEL, "deployments": [bedrock("aws", model=BEDROCK_ARN)]},
            {"name": BEDROCK_API_KEY, "deployments": [bedrock("bedrock-api-key")]},
            {"name": BEDROCK_WRONG_SECRET, "deployments": [bedrock("aws-wrong")]},
            {"name": ANTHROPIC, "deployments": [anthropic()]},
            {"name": OPENAI, "deployments": [openai()]},
            {"name": FAILOVER_OPENAI_BEDROCK, "deployments": [openai(0), bedrock("aws", 1)]},
            {"name": FAILOVER_ANTHROPIC_BEDROCK,
             "deployments": [anthropic(0), bedrock("aws", 1)]},
        ],
    }


class ProvidersStack:
    """The gateway stack plus handles on the three mocks and the provider secrets."""

    def __init__(self, stack: harness.GatewayStack, openai_mock: MockOpenAI,
                 bedrock_mock: MockBedrock, anthropic_mock: MockAnthropic,
                 provider_secrets: ProviderSecrets, key: tuple[str, str]) -> None:
        self.stack = stack
        self.openai_mock = openai_mock
        self.bedrock_mock = bedrock_mock
        self.anthropic_mock = anthropic_mock
        self.secrets = provider_secrets
        self.key_id, self.key = key
        # Raw responses the tests received (status, headers, body): checked for secrets last.
        self.client_visible: list[str] = []

    def mocks(self) -> tuple[Any, ...]:
        return (self.openai_mock, self.bedrock_mock, self.anthropic_mock)

    def reset_faults(self) -> None:
        for mock in self.mocks():
            mock.reset_faults()

    def seen(self, text: str) -> str:
        """Remember a client-visible text (for the final secrets check); returns it."""
        self.client_visible.append(text)
        return text

    def stop(self) -> None:
        self.stack.stop()  # stops the OpenAI mock too
        self.bedrock_mock.stop()
        self.anthropic_mock.stop()


def _require_e2e() -> bool:
    return os.environ.get("TOLLGATE_REQUIRE_E2E", "") not in ("", "0", "false", "no")


def start_providers_stack(work_dir: Any) -> ProvidersStack:
    provider_secrets = ProviderSecrets()
    openai_mock = MockOpenAI(api_key=provider_secrets.openai_key)
    bedrock_mock = MockBedrock(access_key=provider_secrets.aws_key_id,
                               secret_key=provider_secrets.aws_secret,
                               session_token=provider_secrets.aws_token, region=REGION,
                               api_key=provider_secrets.bedrock_api_key).start()
    anthropic_mock = MockAnthropic(api_key=provider_secrets.anthropic_key).start()
    config = providers_config(bedrock_mock.url, anthropic_mock.base_url)
    stack = harness.GatewayStack(work_dir, config, provider_secrets.env(), mock=openai_mock)
    try:
        stack.start()
        for model in (OPENAI, BEDROCK, ANTHROPIC):
            stack.wait_chat_ready(model)
        key = stack.create_key(name="e2e-providers")
        stack.wait_key_usable(key[1])
    except BaseException:
        stack.stop()
        bedrock_mock.stop()
        anthropic_mock.stop()
        raise
    for mock in (openai_mock, bedrock_mock, anthropic_mock):
        mock.clear_requests()  # the warm-up requests
    return ProvidersStack(stack, openai_mock, bedrock_mock, anthropic_mock, provider_secrets,
                          key)


@pytest.fixture(scope="module")
def pgw(tmp_path_factory) -> Iterator[ProvidersStack]:
    missing = harness.missing_artifacts()
    if missing:
        message = "e2e stack not built: missing " + "; ".join(missing)
        if _require_e2e():
            pytest.fail(message + " (TOLLGATE_REQUIRE_E2E is set)", pytrace=False)
        pytest.skip(message + " (set TOLLGATE_REQUIRE_E2E=1 to fail instead)")
    try:
        providers = start_providers_stack(tmp_path_factory.mktemp("tollgate-providers"))
    except (harness.StartupError, TimeoutError) as err:
        pytest.fail(f"could not start the providers stack:\n{err}", pytrace=False)
    yield providers
    providers.stop()


@pytest.fixture()
def providers(pgw: ProvidersStack) -> Iterator[ProvidersStack]:
    """The module's providers stack, with every mock's faults reset before and after the test."""
    pgw.reset_faults()
    yield pgw
    pgw.reset_faults()
