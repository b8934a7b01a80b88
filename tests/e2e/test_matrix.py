"""Every client API × every provider, from one table (issue 10 §3).

Client APIs (`matrix_clients.CLIENT_APIS`, each with its official SDK) × providers (`PROVIDERS`,
each a mock that speaks the provider's wire protocol, proven by the provider's own SDK in
`tests/unit`) × {non-stream, stream} × {text, tool round trip}. Every cell asserts the content,
the finish reason in the client API's words, and the exact usage the provider reported
(`mock.last_usage`, in the provider's own fields) as the client API reports it. Cells that cannot
work assert the 400 that names the parameter. Failover: a failing primary (an OpenAI deployment
answering 503) in front of each provider kind. One gateway stack serves every cell.

`matrix_markdown()` renders the table; the README holds it (`test_readme_shows_the_matrix`).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import boto3
import botocore.config
import pytest

import harness
from matrix_clients import CLIENT_APIS, QUESTION, TOOL_RESULT, Outcome, Refusal
from mocks.anthropic_mock import MockAnthropic
from mocks.bedrock_mock import MockBedrock
from mocks.openai_mock import MockOpenAI
from mocks.sagemaker_mock import ANSWER_PREFIX, ANSWER_PREFIX_TGI, MockSageMaker

REGION = "us-east-1"
AWS_ID = "AKIDMATRIXTEST01"
ENV = {"openai": "TG_MX_OPENAI_KEY", "azure": "TG_MX_AZURE_KEY", "failing": "TG_MX_FAILING_KEY",
       "anthropic": "TG_MX_ANTHROPIC_KEY", "aws_id": "TG_MX_AWS_ID", "aws_secret": "TG_MX_AWS_SECRET"}


def _pair(input_field: str, output_field: str) -> Callable[[dict[str, Any]], tuple[int, int]]:
    return lambda usage: (usage[input_field], usage[output_field])


@dataclass(frozen=True)
class Provider:
    kind: str
    tools: bool                                   # the provider can call tools
    answer: Callable[[str], str]                  # its answer to a user text
    after_tool: Callable[[str, str], str]         # its answer after (question, tool result)
    usage: Callable[[dict[str, Any]], tuple[int, int]]  # (input, output) from its own usage
    note: str = ""

    @property
    def model(self) -> str:
        return f"mx-{self.kind}"


def echo(text: str) -> str:
    return "echo: " + text


# The OpenAI-format mocks answer the last `user` message (the question, after a tool turn); the
# Anthropic and Bedrock mocks answer the last user turn, which holds the tool result.
PROVIDERS: dict[str, Provider] = {p.kind: p for p in (
    Provider("openai", True, echo, lambda q, r: echo(q), _pair("prompt_tokens", "completion_tokens")),
    Provider("azure", True, echo, lambda q, r: echo(q), _pair("prompt_tokens", "completion_tokens")),
    Provider("anthropic", True, echo, lambda q, r: echo(r), _pair("input_tokens", "output_tokens")),
    # Converse usage, or InvokeModel's Anthropic usage (a Claude body sent to Bedrock as is).
    Provider("bedrock", True, echo, lambda q, r: echo(r),
             lambda u: _pair("inputTokens", "outputTokens")(u) if "inputTokens" in u
             else _pair("input_tokens", "output_tokens")(u)),
    Provider("sagemaker-openai", True, lambda t: ANSWER_PREFIX + "naïve " + t,
             lambda q, r: ANSWER_PREFIX + "naïve " + q, _pair("prompt_tokens", "completion_tokens")),
    Provider("sagemaker-tgi", False, lambda t: ANSWER_PREFIX_TGI + "naïve " + t,
             lambda q, r: "", _pair("prompt_tokens", "completion_tokens"),
             "TGI's generate API has no tools: refused with a 400 naming the parameter"),
)}


class MatrixStack:
    def __init__(self, work) -> None:
        self.secrets = {"openai": harness.random_secret("sk-mx-"),
                        "azure": harness.random_secret("az-mx-"),
                        "failing": harness.random_secret("sk-fail-"),
                        "anthropic": harness.random_secret("sk-ant-mx-"),
                        "aws_secret": harness.random_secret("aws-mx-")}
        self.mocks: dict[str, Any] = {
            "openai": MockOpenAI(api_key=self.secrets["openai"]).start(),
            "azure": MockOpenAI(api_key=self.secrets["azure"]).start(),
            "anthropic": MockAnthropic(api_key=self.secrets["anthropic"]).start(),
            "bedrock": MockBedrock(access_key=AWS_ID, secret_key=self.secrets["aws_secret"],
                                   region=REGION).start(),
            "sagemaker-openai": MockSageMaker(endpoint="mx-chat", access_key=AWS_ID,
                                              secret_key=self.secrets["aws_secret"]).start(),
            "sagemaker-tgi": MockSageMaker(endpoint="mx-tgi", access_key=AWS_ID,
                                           secret_key=self.secrets["aws_secret"], payload="tgi",
                                           prompt_template="llama3").start(),
        }
        self.failing = MockOpenAI(api_key=self.secrets["failing"]).start()
        self.failing.set_faults(status=503)  # every request, for the whole module
        self.cert, tls_key = work / "cert.pem", work / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", str(tls_key), "-out", str(self.cert)],
                       check=True, capture_output=True)
        env = {ENV[k]: v for k, v in self.secrets.items()}
        env.update({ENV["aws_id"]: AWS_ID, "TOLLGATE_TLS_CERT_FILE": str(self.cert),
                    "TOLLGATE_TLS_KEY_FILE": str(tls_key)})
        self.stack = harness.GatewayStack(work, self.config(), env)
        self.key = ""

    def deployment(self, kind: str, priority: int = 0) -> dict[str, Any]:
        mock = self.mocks[kind]
        aws = {"region": REGION, "credential": "aws", "priority": priority,
               "base_url": f"http://127.0.0.1:{mock.port}"} if kind in (
            "bedrock", "sagemaker-openai", "sagemaker-tgi") else {}
        return {
            "openai": lambda: {"provider": "openai", "base_url": mock.base_url,
                               "model": "mock-model-1", "credential": "openai"},
            "azure": lambda: {"provider": "azure", "base_url": f"{mock.url}/openai/deployments/mx",
                              "api_version": "2024-10-21", "model": "gpt-4o",
                              "credential": "azure"},
            "anthropic": lambda: {"provider": "anthropic", "base_url": mock.base_url,
                                  "model": "claude-mock-1", "credential": "anthropic"},
            "bedrock": lambda: {"provider": "bedrock", "model":
                                "anthropic.claude-3-5-sonnet-20240620-v1:0", **aws},
            "sagemaker-openai": lambda: {"provider": "sagemaker", "model": "mx-chat", **aws},
            "sagemaker-tgi": lambda: {"provider": "sagemaker", "model": "mx-tgi", "payload": "tgi",
                                      "prompt_template": "llama3", **aws},
        }[kind]() | {"priority": priority}

    def config(self) -> dict[str, Any]:
        failing = {"provider": "openai", "base_url": self.failing.base_url,
                   "model": "mock-model-1", "credential": "failing", "priority": 0}
        models = [{"name": p.model, "deployments": [self.deployment(p.kind)]}
                  for p in PROVIDERS.values()]
        models += [{"name": f"fo-{p.kind}", "deployments": [failing, self.deployment(p.kind, 1)]}
                   for p in PROVIDERS.values()]
        return {"credentials": {
            "openai": {"api_key_env": ENV["openai"]}, "azure": {"api_key_env": ENV["azure"]},
            "failing": {"api_key_env": ENV["failing"]},
            "anthropic": {"api_key_env": ENV["anthropic"]},
            "aws": {"aws_access_key_id_env": ENV["aws_id"],
                    "aws_secret_access_key_env": ENV["aws_secret"]}},
            "models": models}

    def bedrock_client(self) -> Any:
        """boto3 with the gateway key as a Bedrock API key (`AWS_BEARER_TOKEN_BEDROCK`, read when
        a request is signed: the `mx` fixture sets it for the module)."""
        return boto3.session.Session(region_name=REGION).client(
            "bedrock-runtime", endpoint_url=f"https://localhost:{self.stack.gateway_port}/bedrock",
            verify=str(self.cert), config=botocore.config.Config(retries={"max_attempts": 1}))

    def stop(self) -> None:
        self.stack.stop()
        for mock in (*self.mocks.values(), self.failing):
            mock.stop()


@pytest.fixture(scope="module")
def mx(tmp_path_factory) -> Iterator[MatrixStack]:
    harness.require_built()
    stack = MatrixStack(tmp_path_factory.mktemp("tollgate-matrix"))
    try:
        stack.stack.start()
        for provider in PROVIDERS.values():
            stack.stack.wait_chat_ready(provider.model)
        stack.key = stack.stack.create_key(name="matrix")[1]
        stack.stack.wait_key_usable(stack.key)
    except BaseException as err:
        stack.stop()
        if isinstance(err, (harness.StartupError, TimeoutError)):
            pytest.fail(f"could not start the matrix stack:\n{err}", pytrace=False)
        raise
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_PROFILE"):
            env.delenv(name, raising=False)
        env.setenv("AWS_BEARER_TOKEN_BEDROCK", stack.key)
        yield stack
    stack.stop()


def cells() -> list[Any]:
    return [pytest.param(api, kind, stream, id=f"{api}-{kind}-{'stream' if stream else 'whole'}")
            for api in CLIENT_APIS for kind in PROVIDERS for stream in (False, True)]


def assert_usage(api: Any, provider: Provider, mock: Any, outcome: Outcome) -> None:
    assert mock.last_usage is not None, "the provider answered"
    assert api.usage_pair(outcome.usage) == provider.usage(mock.last_usage), (
        outcome.usage, mock.last_usage)


@pytest.mark.parametrize("api_name,kind,stream", cells())
def test_text(mx, api_name, kind, stream):
    api, provider, mock = CLIENT_APIS[api_name](mx), PROVIDERS[kind], mx.mocks[kind]
    mock.last_usage = None
    text = f"matrix {api_name} {kind} {'stream' if stream else 'whole'} ünïcode"
    outcome = api.call(provider.model, [("user", text)], tools=False, stream=stream)
    assert isinstance(outcome, Outcome), outcome
    assert outcome.text == provider.answer(text)
    assert outcome.finish == api.finish_text
    assert outcome.tool_calls == []
    assert_usage(api, provider, mock, outcome)


# A refused parameter, in each client API's own error shape (as its SDK raises it).
TOOLS_REFUSAL = {"openai-chat": '"type": "invalid_request_error", "param": "tools"',
                 "openai-responses": '"type": "invalid_request_error", "param": "tools"',
                 "anthropic-messages": '"type": "invalid_request_error"}, "type": "error"}',
                 "bedrock-converse": "ValidationException: 'tools' ",
                 "bedrock-invoke": "ValidationException: 'tools' "}


@pytest.mark.parametrize("api_name,kind,stream", cells())
def test_tool_round_trip(mx, api_name, kind, stream):
    api, provider, mock = CLIENT_APIS[api_name](mx), PROVIDERS[kind], mx.mocks[kind]
    mock.last_usage = None
    first = api.call(provider.model, [("user", QUESTION)], tools=True, stream=stream)
    if not provider.tools:
        assert isinstance(first, Refusal), first
        assert first.status == 400 and "tools" in first.message, first
        assert TOOLS_REFUSAL[api_name] in first.message and not first.mid_stream, first
        assert mock.last_usage is None, "a refused request never reaches the provider"
        return
    assert isinstance(first, Outcome), first
    assert first.finish == api.finish_tool and first.text == ""
    [call] = first.tool_calls
    assert call.name == "get_weather" and call.arguments == {"location": "Paris"} and call.id
    assert_usage(api, provider, mock, first)
    mock.last_usage = None
    turns = [("user", QUESTION), ("tool_call", call), ("tool_result", call.id, TOOL_RESULT)]
    second = api.call(provider.model, turns, tools=True, stream=stream)
    assert isinstance(second, Outcome), second
    assert second.text == provider.after_tool(QUESTION, TOOL_RESULT)
    assert second.finish == api.finish_text and second.tool_calls == []
    assert_usage(api, provider, mock, second)
    assert TOOL_RESULT in str(mock.requests[-1]["body"]), "the tool result reached the provider"


@pytest.mark.parametrize("kind", list(PROVIDERS))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_failover_to_each_provider_kind(mx, kind, stream):
    """A primary answering 503 fails over to a deployment of each provider kind: the client
    sees the target's answer and usage, and the primary really was tried first."""
    api, provider, mock = CLIENT_APIS["openai-chat"](mx), PROVIDERS[kind], mx.mocks[kind]
    text = f"failover to {kind} {'stream' if stream else 'whole'}"
    tried = len([r for r in mx.failing.requests if text in str(r["body"])])
    mock.last_usage = None
    outcome = api.call(f"fo-{kind}", [("user", text)], tools=False, stream=stream)
    assert isinstance(outcome, Outcome), outcome
    assert outcome.text == provider.answer(text) and outcome.finish == api.finish_text
    assert_usage(api, provider, mock, outcome)
    assert len([r for r in mx.failing.requests if text in str(r["body"])]) == tried + 1


# ---- the table, as the README shows it --------------------------------------------------------

def matrix_markdown() -> str:
    apis = list(CLIENT_APIS)
    lines = ["| provider | " + " | ".join(f"`{a}`" for a in apis) + " | failover target |",
             "|---|" + "---|" * (len(apis) + 1)]
    for p in PROVIDERS.values():
        cell = "text, tools (whole, stream)" if p.tools else "text (whole, stream); tools → 400"
        lines.append(f"| {p.kind} | " + " | ".join(cell for _ in apis) + " | yes |")
    return "\n".join(lines)


def test_readme_shows_the_matrix():
    readme = (harness.REPO_ROOT / "README.md").read_text()
    assert matrix_markdown() in readme, "README's matrix table is stale:\n" + matrix_markdown()


# ---- the providers' error shapes, each reaching every client API as its own API's error -------

@dataclass(frozen=True)
class ProviderError:
    name: str
    kind: str                       # the provider that fails
    faults: dict[str, Any]          # the mock's fault settings
    stream: bool
    expect: dict[str, tuple[int, bool, str]]  # client API → (status, mid-stream?, error text)


PROVIDER_ERRORS = [
    ProviderError("bedrock-throttling-429", "bedrock", {"status": 429}, False, {
        "openai-chat": (429, False, '"type": "rate_limit_error"'),
        "anthropic-messages": (429, False, '"type": "rate_limit_error"'),
        "bedrock-converse": (429, False, "ThrottlingException: "),
        "openai-responses": (429, False, '"type": "rate_limit_error"'),
        "bedrock-invoke": (429, False, "ThrottlingException: ")}),
    ProviderError("bedrock-model-stream-error", "bedrock",
                  {"stream_exception": "modelStreamErrorException"}, True, {
        "openai-chat": (200, True, '"code": "modelStreamErrorException"'),
        "anthropic-messages": (200, True, '"type": "api_error"'),
        "bedrock-converse": (200, True, "modelStreamErrorException: The model stream failed"),
        # The Responses API's `error` event, numbered in the stream's sequence.
        "openai-responses": (200, True, '"message": "The model stream failed (mock fault).", "param": null, "sequence_number"'),
        "bedrock-invoke": (200, True, "modelStreamErrorException: The model stream failed")}),
    ProviderError("anthropic-overloaded-mid-stream", "anthropic",
                  {"stream_error": "overloaded_error"}, True, {
        "openai-chat": (200, True, '"code": "overloaded_error"'),
        "anthropic-messages": (200, True, '"type": "overloaded_error", "message": "Overloaded"'),
        "bedrock-converse": (200, True, "modelStreamErrorException: Overloaded"),
        "openai-responses": (200, True, '"message": "Overloaded"'),
        "bedrock-invoke": (200, True, "modelStreamErrorException: Overloaded")}),
]


@pytest.mark.parametrize("api_name", list(CLIENT_APIS))
@pytest.mark.parametrize("case", PROVIDER_ERRORS, ids=lambda c: c.name)
def test_provider_error_reaches_each_client_api(mx, case, api_name):
    api, mock = CLIENT_APIS[api_name](mx), mx.mocks[case.kind]
    mock.set_faults(**case.faults)
    try:
        outcome = api.call(PROVIDERS[case.kind].model, [("user", f"fail {case.name} a b c")],
                           tools=False, stream=case.stream)
    finally:
        mock.reset_faults()
    status, mid_stream, text = case.expect[api_name]
    assert isinstance(outcome, Refusal), outcome
    assert (outcome.status, outcome.mid_stream) == (status, mid_stream), outcome
    assert text in outcome.message, outcome


# An Azure content filter is not an error: the text before it, and the filter as each API's stop.
CONTENT_FILTER_FINISH = {"openai-chat": "content_filter", "anthropic-messages": "refusal",
                         "bedrock-converse": "content_filtered",
                         # Responses: `status: incomplete`, `incomplete_details.reason`
                         "openai-responses": "content_filter", "bedrock-invoke": "refusal"}


@pytest.mark.parametrize("api_name", list(CLIENT_APIS))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_azure_content_filter_reaches_each_client_api(mx, api_name, stream):
    """Azure's `finish_reason: content_filter` (and, streamed, its first chunk with
    `prompt_filter_results` and no choices, which is neither content nor usage)."""
    from mocks.openai_mock import AZURE_FILTER_TRIGGER

    api, provider, mock = CLIENT_APIS[api_name](mx), PROVIDERS["azure"], mx.mocks["azure"]
    outcome = api.call(provider.model, [("user", f"say {AZURE_FILTER_TRIGGER} now")],
                       tools=False, stream=stream)
    assert isinstance(outcome, Outcome), outcome
    assert outcome.text == "echo: say"
    assert outcome.finish == CONTENT_FILTER_FINISH[api_name]
    assert_usage(api, provider, mock, outcome)


def ledger_tokens(kind: str, usage: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input, output, cache read, cache write) as the ledger keeps them, from a provider's own
    usage fields (input never counting cached tokens)."""
    if "prompt_tokens" in usage:
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return usage["prompt_tokens"] - cached, usage["completion_tokens"], cached, 0
    if "inputTokens" in usage:
        return (usage["inputTokens"], usage["outputTokens"], usage.get("cacheReadInputTokens") or 0,
                usage.get("cacheWriteInputTokens") or 0)
    return (usage["input_tokens"], usage["output_tokens"], usage.get("cache_read_input_tokens") or 0,
            usage.get("cache_creation_input_tokens") or 0)


def test_every_upstream_call_of_the_matrix_is_one_ledger_record_with_its_usage(mx):
    """Metering across every client API × provider × stream pair above (issue 12): each call a
    mock received is one record (same request id and attempt), and each answer that reported
    usage is recorded with exactly the provider's counts. Runs last in this module."""
    mocks = {**mx.mocks, "failing": mx.failing}
    calls = {(r["headers"]["x-request-id"], int(r["headers"].get("x-envoy-attempt-count", "1")) - 1): kind
             for kind, mock in mocks.items() for r in mock.requests if "x-request-id" in r["headers"]}
    assert len(calls) > 150, len(calls)

    def ledger() -> dict[tuple[str, int], dict[str, Any]]:
        resp = mx.stack.admin("GET", "/admin/v1/usage?limit=10000")
        assert resp.status_code == 200, resp.text
        return {(r["request_id"], r["attempt"]): r for r in resp.json()["data"]}

    harness.wait_until(lambda: set(calls) <= set(ledger()), 20, "a ledger record for every upstream call",
                       on_timeout=lambda: sorted(set(calls) - set(ledger()))[:10])
    time.sleep(1.5)
    rows = ledger()
    assert set(rows) == set(calls), "no record without an upstream call"
    checked, wrong = 0, []
    for kind, mock in mocks.items():
        for u in mock.usage_log:
            if u["request_id"] is None:
                continue
            r = rows[(u["request_id"], u["attempt"])]
            got = (r["input_tokens"], r["output_tokens"], r["cache_read_tokens"], r["cache_write_tokens"])
            if u.get("cut"):
                # A stream the provider ended with an error before its final usage: what it
                # reported before the error (Anthropic's message_start), or an estimate, flagged.
                if not (r["estimated"] or got[1] < ledger_tokens(kind, u["usage"])[1]):
                    wrong.append((kind, "cut", got, r["estimated"]))
            elif got != ledger_tokens(kind, u["usage"]) or r["estimated"]:
                wrong.append((kind, "stream" if r["stream"] else "whole", got, ledger_tokens(kind, u["usage"]), r["estimated"]))
            checked += 1
    assert wrong == [] and checked > 120, (checked, wrong)
