"""A gateway stack with the three mock providers (OpenAI, Bedrock, Anthropic), for the
cross-provider end-to-end tests (`test_providers.py`, `test_provider_failures.py`), and the
assertions they share.

One stack per module: the OpenAI mock is the harness's mock (`{{MOCK_BASE_URL}}`); the Bedrock
mock verifies SigV4 (access key, secret and session token below) and also accepts a Bedrock API
key as a bearer token; the Anthropic mock checks `x-api-key` and `anthropic-version`.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import quote

import anthropic
import openai
import pytest

import harness
from harness import http
from mocks.anthropic_mock import MockAnthropic
from mocks.bedrock_mock import MockBedrock, verify_sigv4
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


# ---- assertions and helpers shared by the provider test modules ---------------------------------

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}
ANTHROPIC_WEATHER_TOOL = {"name": "get_weather", "description": "The current weather in a city.",
                          "input_schema": WEATHER_TOOL["function"]["parameters"]}


def words(*texts: str) -> int:
    return sum(len(t.split()) for t in texts)


def oai(p: ProvidersStack) -> openai.OpenAI:
    return p.stack.client(p.key)


def ant(p: ProvidersStack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=p.stack.gateway_url, api_key=p.key, max_retries=0,
                               timeout=20.0)


def with_token(mock: Any, token: str) -> list[dict[str, Any]]:
    return [r for r in mock.requests if token in r["body"]]


def bedrock_path(model_id: str, action: str) -> str:
    return f"/model/{quote(model_id, safe='')}/{action}"


def assert_sigv4_valid(p: ProvidersStack, record: dict[str, Any]) -> None:
    """Check the recorded request's signature again, independently (botocore), with the right
    secret and session token; and that no secret travels in a header."""
    s = p.secrets
    auth = record["headers"]["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={s.aws_key_id}/"), auth
    assert f"/{REGION}/bedrock/aws4_request," in auth, auth
    assert record["headers"]["x-amz-security-token"] == s.aws_token
    verify_sigv4(record["method"], record["path"], list(record["headers"].items()),
                 record["body"].encode(), access_key=s.aws_key_id, secret_key=s.aws_secret,
                 session_token=s.aws_token, region=REGION, max_skew_s=None)
    for name, value in record["headers"].items():
        assert s.aws_secret not in value, f"the AWS secret travelled in {name}"


def assert_no_client_key(p: ProvidersStack, record: dict[str, Any]) -> None:
    """Nothing of the client's gateway key nor of the gateway's internals reached a provider."""
    for name, value in record["headers"].items():
        assert p.key not in value, f"the client's gateway key reached the provider in {name}"
        assert not name.startswith("x-tollgate-"), f"internal header {name} reached the provider"
    assert p.key not in record["body"]


def assert_anthropic_auth(p: ProvidersStack, record: dict[str, Any]) -> None:
    headers = record["headers"]
    assert headers["x-api-key"] == p.secrets.anthropic_key
    assert headers["anthropic-version"]
    assert "authorization" not in headers
    assert_no_client_key(p, record)


def stream_text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def stream_tool_calls(chunks: list[Any]) -> list[dict[str, str]]:
    """Tool calls reassembled from OpenAI stream deltas, by index."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            if delta.function is not None:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    return [calls[i] for i in sorted(calls)]


def sse_events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e.strip()]


def assert_no_secrets_left(p: ProvidersStack, min_visible: int, min_records: int) -> None:
    """No provider secret in anything a module of provider tests left behind: what clients saw
    (more answers added here: every pair, streamed and not, errors included), Envoy's
    config_dump, the logs; and the client's gateway key never reached a provider. Run last."""
    secrets = p.secrets.provider_secrets()
    # More client-visible answers: every pair, streamed and not, errors included.
    bearer = {"Authorization": f"Bearer {p.key}"}
    for model in (BEDROCK, ANTHROPIC, OPENAI, BEDROCK_WRONG_SECRET, BEDROCK_API_KEY):
        for stream in (False, True):
            resp = http("POST", f"{p.stack.base_url}/chat/completions", headers=bearer,
                        json={"model": model, "stream": stream,
                              "messages": [{"role": "user", "content": "secret check"}]})
            p.seen(f"{resp.status_code} {dict(resp.headers)} {resp.text}")
            resp = http("POST", f"{p.stack.gateway_url}/v1/messages",
                        headers={"x-api-key": p.key, "anthropic-version": "2023-06-01"},
                        json={"model": model, "stream": stream, "max_tokens": 20,
                              "messages": [{"role": "user", "content": "secret check"}]})
            p.seen(f"{resp.status_code} {dict(resp.headers)} {resp.text}")
    assert len(p.client_visible) >= min_visible
    for text in p.client_visible:
        leaked = [name for name, value in secrets.items() if value in text]
        assert not leaked, f"secrets in a client-visible response: {leaked}: {text[:300]}"

    dump = p.stack.config_dump()
    assert "ClustersConfigDump" in dump and BEDROCK_MODEL_ID in dump
    leaked = [name for name, value in secrets.items() if value in dump]
    assert not leaked, f"secrets in Envoy's /config_dump: {leaked}"

    assert p.stack.log_paths
    for path in p.stack.log_paths:
        text = path.read_text(errors="replace")
        leaked = [name for name, value in secrets.items() if value in text]
        assert not leaked, f"secrets in {path.name}: {leaked}"

    # And the client's gateway key never reached any provider.
    records = [r for mock in p.mocks() for r in mock.requests]
    assert len(records) >= min_records
    for record in records:
        assert_no_client_key(p, record)
