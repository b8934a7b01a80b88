"""One gateway in front of every provider kind (OpenAI, Azure, Anthropic, Bedrock, SageMaker),
for the data-plane hardening tests: what reaches each provider, and what each client sees."""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

import harness
from mocks.anthropic_mock import MockAnthropic
from mocks.bedrock_mock import MockBedrock
from mocks.openai_mock import MockOpenAI
from mocks.sagemaker_mock import MockSageMaker

REGION = "us-east-1"
ENV = {"openai": "TG_DP_OPENAI", "azure": "TG_DP_AZURE", "anthropic": "TG_DP_ANTHROPIC",
       "aws_id": "TG_DP_AWS_ID", "aws_secret": "TG_DP_AWS_SECRET"}
BEDROCK_MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"
SM_ENDPOINT = "dp-chat-endpoint"
# model name the client uses -> provider kind
MODELS = {"dp-openai": "openai", "dp-azure": "azure", "dp-anthropic": "anthropic",
          "dp-bedrock": "bedrock", "dp-sagemaker": "sagemaker"}


class DataPlaneStack:
    def __init__(self, stack: harness.GatewayStack, mocks: dict[str, Any],
                 secrets: dict[str, str], key: str) -> None:
        self.stack = stack
        self.mocks = mocks  # provider kind -> mock
        self.secrets = secrets  # name -> provider secret (never to be seen by a client)
        self.key = key

    def mock_for(self, model: str) -> Any:
        return self.mocks[MODELS[model]]

    def requests_with(self, model: str, token: str) -> list[dict[str, Any]]:
        def text(body: Any) -> str:
            return body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        return [r for r in self.mock_for(model).requests if token in text(r["body"])]

    def reset(self) -> None:
        for kind, mock in self.mocks.items():
            if kind == "sagemaker":
                mock.container_error = None
                mock.stream_failure = None
            else:
                mock.reset_faults()

    def stop(self) -> None:
        self.stack.stop()
        for mock in self.mocks.values():
            mock.stop()


def _require_e2e() -> bool:
    return os.environ.get("TOLLGATE_REQUIRE_E2E", "") not in ("", "0", "false", "no")


def start(work_dir: Any) -> DataPlaneStack:
    secrets = {"openai": harness.random_secret("sk-proj-"), "azure": harness.random_secret("az"),
               "anthropic": harness.random_secret("sk-ant-api03-"),
               "aws_id": "AKIA" + harness.random_secret()[:16].upper(),
               "aws_secret": harness.random_secret("aws/")}
    mocks: dict[str, Any] = {
        "openai": MockOpenAI(api_key=secrets["openai"]).start(),
        "azure": MockOpenAI(api_key=secrets["azure"]).start(),
        "anthropic": MockAnthropic(api_key=secrets["anthropic"]).start(),
        "bedrock": MockBedrock(access_key=secrets["aws_id"], secret_key=secrets["aws_secret"],
                               region=REGION).start(),
        "sagemaker": MockSageMaker(endpoint=SM_ENDPOINT, access_key=secrets["aws_id"],
                                   secret_key=secrets["aws_secret"], region=REGION).start(),
    }
    aws = {"aws_access_key_id_env": ENV["aws_id"], "aws_secret_access_key_env": ENV["aws_secret"]}
    config = {
        "credentials": {"openai": {"api_key_env": ENV["openai"]},
                        "azure": {"api_key_env": ENV["azure"]},
                        "anthropic": {"api_key_env": ENV["anthropic"]}, "aws": aws},
        "models": [
            {"name": "dp-openai", "deployments": [{
                "provider": "openai", "base_url": f"{mocks['openai'].url}/v1",
                "model": "mock-model-1", "credential": "openai"}]},
            {"name": "dp-azure", "deployments": [{
                "provider": "azure", "base_url": f"{mocks['azure'].url}/openai/deployments/gpt4o",
                "api_version": "2024-10-21", "model": "gpt-4o", "credential": "azure"}]},
            {"name": "dp-anthropic", "deployments": [{
                "provider": "anthropic", "base_url": mocks["anthropic"].base_url,
                "model": "claude-3-5-haiku-20241022", "credential": "anthropic"}]},
            {"name": "dp-bedrock", "deployments": [{
                "provider": "bedrock", "region": REGION, "base_url": mocks["bedrock"].url,
                "model": BEDROCK_MODEL_ID, "credential": "aws"}]},
            {"name": "dp-sagemaker", "deployments": [{
                "provider": "sagemaker", "region": REGION, "model": SM_ENDPOINT,
                "base_url": f"http://127.0.0.1:{mocks['sagemaker'].port}", "credential": "aws"}]},
        ],
    }
    env = {ENV[k]: v for k, v in secrets.items()}
    stack = harness.GatewayStack(work_dir, config, env)
    try:
        stack.start()
        for model in MODELS:
            stack.wait_chat_ready(model)
        _, key = stack.create_key(name="dp-hardening")
        stack.wait_key_usable(key)
    except BaseException:
        stack.stop()
        for mock in mocks.values():
            mock.stop()
        raise
    return DataPlaneStack(stack, mocks, secrets, key)


@pytest.fixture(scope="module")
def dp(tmp_path_factory) -> Iterator[DataPlaneStack]:
    missing = harness.missing_artifacts()
    if missing:
        message = "e2e stack not built: missing " + "; ".join(missing)
        if _require_e2e():
            pytest.fail(message + " (TOLLGATE_REQUIRE_E2E is set)", pytrace=False)
        pytest.skip(message)
    try:
        stack = start(tmp_path_factory.mktemp("tollgate-dp"))
    except (harness.StartupError, TimeoutError) as err:
        pytest.fail(f"could not start the data-plane stack:\n{err}", pytrace=False)
    yield stack
    stack.stop()


@pytest.fixture()
def dpx(dp: DataPlaneStack) -> Iterator[DataPlaneStack]:
    """The module's stack with every mock's faults reset before and after the test."""
    dp.reset()
    yield dp
    dp.reset()
