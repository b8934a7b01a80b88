"""The official AWS Rust SDK (`aws-sdk-bedrockruntime`) pointed at the gateway.

The client is `tollgate-sdk-probe` (`tests/rust-client`, built by `make build-debug`; path in
TOLLGATE_SDK_PROBE, default `<target>/debug/tollgate-sdk-probe`). It is configured as a user
would configure the SDK: `endpoint_url` is the gateway's `/bedrock` prefix and the gateway key is
the Bedrock API key in AWS_BEARER_TOKEN_BEDROCK, which `aws-config` turns into bearer auth. The
Rust SDK sends a bearer token over plain HTTP too (unlike botocore), so most tests use HTTP; one
uses the gateway's TLS (same port) with a certificate from a private CA given to the SDK.

The model is served (a) by the mock OpenAI provider, translated through the OpenAI pivot, and
(b) by the mock Bedrock provider, passed through and re-signed with SigV4 (which the mock
verifies). Both mocks count words as tokens, so the usage numbers below are exact.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import harness
from mocks.bedrock_mock import MockBedrock
from mocks.openai_mock import MockOpenAI

OPENAI_KEY_ENV = "TG_E2E_RS_OPENAI_KEY"
AWS_ID_ENV = "TG_E2E_RS_AWS_ID"
AWS_SECRET_ENV = "TG_E2E_RS_AWS_SECRET"
AWS_KEY_ID = "AKIDRUSTSDKPROBE"
BEDROCK_MODEL_ID = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
OPENAI_MODEL = "gpt-mock"
BEDROCK_MODEL = "claude-bedrock"

PROMPT = "rust sdk says hello"
SYSTEM = "be brief"
ANSWER = "echo: " + PROMPT
# Words are tokens: input is the system prompt and the user text, output is the answer.
USAGE = {"input_tokens": 2 + 4, "output_tokens": 5, "total_tokens": 11}
# What the probe's tool scenario asks and answers (tests/rust-client/src/main.rs).
TOOL_QUESTION = "what is the weather in Paris"
TOOL_RESULT = "sunny"


def probe_bin() -> Path:
    choice = os.environ.get("TOLLGATE_SDK_PROBE")
    if not choice:
        return harness.target_dir() / "debug" / "tollgate-sdk-probe"
    path = Path(choice)
    return path if path.is_absolute() else harness.REPO_ROOT / path


def _require_e2e() -> bool:
    return os.environ.get("TOLLGATE_REQUIRE_E2E", "") not in ("", "0", "false", "no")


def make_certificate(work: Path) -> tuple[Path, Path]:
    """A private CA (`ca.pem`) and the gateway's certificate for localhost signed by it.

    (webpki, the Rust SDK's verifier, refuses a self-signed CA certificate as a server's.)"""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=work)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=tollgate-e2e-ca",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "key.pem",
            "-out", "server.csr")
    (work / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                     "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "server.ext", "-out", "cert.pem")
    return work / "cert.pem", work / "key.pem"


@pytest.fixture(scope="module")
def rs(tmp_path_factory):
    missing = harness.missing_artifacts()
    if not probe_bin().is_file():
        missing.append(f"Rust SDK probe {probe_bin()} (cargo build -p tollgate-sdk-probe)")
    if missing:
        message = "e2e stack not built: missing " + "; ".join(missing)
        if _require_e2e():
            pytest.fail(message + " (TOLLGATE_REQUIRE_E2E is set)", pytrace=False)
        pytest.skip(message + " (set TOLLGATE_REQUIRE_E2E=1 to fail instead)")
    work = tmp_path_factory.mktemp("tollgate-rust-sdk")
    cert, tls_key = make_certificate(work)
    openai_key = harness.random_secret("sk-rs-")
    aws_secret = harness.random_secret("aws-secret-")
    openai_mock = MockOpenAI(api_key=openai_key).start()
    bedrock_mock = MockBedrock(access_key=AWS_KEY_ID, secret_key=aws_secret).start()
    config = {
        "credentials": {"openai": {"api_key_env": OPENAI_KEY_ENV},
                        "aws": {"aws_access_key_id_env": AWS_ID_ENV,
                                "aws_secret_access_key_env": AWS_SECRET_ENV}},
        "models": [
            {"name": OPENAI_MODEL, "deployments": [{"provider": "openai", "base_url": openai_mock.base_url,
                                                    "model": "mock-model-1", "credential": "openai"}]},
            {"name": BEDROCK_MODEL, "deployments": [{"provider": "bedrock", "region": "us-east-1",
                                                     "base_url": bedrock_mock.url, "model": BEDROCK_MODEL_ID,
                                                     "credential": "aws"}]},
        ],
    }
    env = {OPENAI_KEY_ENV: openai_key, AWS_ID_ENV: AWS_KEY_ID, AWS_SECRET_ENV: aws_secret,
           "TOLLGATE_TLS_CERT_FILE": str(cert), "TOLLGATE_TLS_KEY_FILE": str(tls_key)}
    stack = harness.GatewayStack(work, config, env)
    try:
        stack.start()
        stack.wait_chat_ready(OPENAI_MODEL)
        stack.wait_chat_ready(BEDROCK_MODEL)
        key = stack.create_key(name="e2e-rust-sdk")
        stack.wait_key_usable(key[1])
    except (harness.StartupError, TimeoutError) as err:
        stack.stop()
        openai_mock.stop()
        bedrock_mock.stop()
        pytest.fail(f"could not start the stack:\n{err}", pytrace=False)
    yield stack, key[1], openai_mock, bedrock_mock, work
    stack.stop()
    openai_mock.stop()
    bedrock_mock.stop()


def run_probe(rs, *args: str, key: str | None = None, extra_env: dict[str, str] | None = None,
              expect_ok: bool = True, endpoint: str | None = None) -> dict[str, Any]:
    """Run the probe against the gateway; returns its JSON summary (or its error object)."""
    stack, user_key, _, _, work = rs
    # Only what a user would set, and nothing from this machine's AWS set-up: no profile files,
    # no instance metadata, no proxy.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update({"AWS_BEARER_TOKEN_BEDROCK": key or user_key, "AWS_REGION": "us-east-1",
                "AWS_CONFIG_FILE": str(work / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-aws-credentials"),
                "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost"})
    env.update(extra_env or {})
    argv = [str(probe_bin()), "--endpoint-url", endpoint or f"{stack.gateway_url}/bedrock", *args]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    detail = f"exit {proc.returncode}\nstdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
    assert (key or user_key) not in proc.stdout + proc.stderr, "the probe's output shows the key"
    if expect_ok:
        assert proc.returncode == 0, detail
    else:
        assert proc.returncode == 1, detail
    out = json.loads(proc.stdout)
    if not expect_ok:
        assert set(out) == {"error"}, detail
        return out["error"]
    return out


def words(text: str) -> list[str]:
    """How both mocks stream a text: one delta per word, with its leading space."""
    out: list[str] = []
    for i, word in enumerate(text.split(" ")):
        out.append(word if i == 0 else " " + word)
    return out


def assert_converse_and_stream(out: dict[str, Any]) -> None:
    converse = out["converse"]
    assert converse["text"] == ANSWER, out
    assert converse["role"] == "assistant"
    assert converse["stop_reason"] == "end_turn"
    assert {k: converse["usage"][k] for k in USAGE} == USAGE, out
    stream = out["stream"]
    assert stream["text"] == ANSWER, out
    assert stream["deltas"] == words(ANSWER), out
    assert stream["stop_reason"] == "end_turn"
    assert {k: stream["usage"][k] for k in USAGE} == USAGE, out
    assert stream["events"]["messageStart"] == 1 and stream["events"]["messageStop"] == 1, out
    assert stream["events"]["metadata"] == 1 and "unknown" not in stream["events"], out


def assert_tool_call(tools: dict[str, Any]) -> None:
    assert tools["first_stop_reason"] == "tool_use", tools
    assert tools["tool_use"]["name"] == "get_weather"
    assert tools["tool_use"]["input"] == {"location": "Paris"}
    assert tools["tool_use"]["id"]
    # input: the question's 6 words; output: the arguments `{ location : Paris }` as 5 words
    assert {k: tools["first_usage"][k] for k in USAGE} == {"input_tokens": 6, "output_tokens": 5,
                                                          "total_tokens": 11}, tools
    assert tools["final_stop_reason"] == "end_turn", tools


def test_openai_provider_converse_tools_and_stream(rs):
    _, _, openai_mock, _, _ = rs
    openai_mock.clear_requests()
    out = run_probe(rs, "--model", OPENAI_MODEL, "--prompt", PROMPT, "--system", SYSTEM)
    assert out["model"] == OPENAI_MODEL
    assert_converse_and_stream(out)
    sent = [r["json"] for r in openai_mock.requests if r["path"] == "/v1/chat/completions"]
    assert len(sent) == 4, sent  # converse, two tool turns, stream: no SDK retries
    assert sent[0]["model"] == "mock-model-1"
    assert sent[0]["messages"] == [{"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": PROMPT}]
    assert sent[3]["stream"] is True

    tools = out["tools"]
    assert_tool_call(tools)
    assert sent[1]["tools"][0]["function"]["name"] == "get_weather"
    # The follow-up turn reached the provider as the tool call and its result, same id.
    follow_up = sent[2]["messages"]
    assert [m["role"] for m in follow_up] == ["user", "assistant", "tool"], follow_up
    call = follow_up[1]["tool_calls"][0]
    assert call["id"] == tools["tool_use"]["id"] == follow_up[2]["tool_call_id"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"location": "Paris"}
    assert "sunny" in json.dumps(follow_up[2]["content"])
    # The mock echoes the last user message (the question); the tool result is its 7th word.
    assert tools["final_text"] == "echo: " + TOOL_QUESTION
    assert {k: tools["final_usage"][k] for k in USAGE} == {"input_tokens": 7, "output_tokens": 7,
                                                          "total_tokens": 14}, tools


def test_bedrock_provider_is_resigned(rs):
    stack, user_key, _, bedrock_mock, _ = rs
    bedrock_mock.clear_requests()
    out = run_probe(rs, "--model", BEDROCK_MODEL, "--prompt", PROMPT, "--system", SYSTEM)
    assert_converse_and_stream(out)
    sent = bedrock_mock.requests
    assert [r["path"].rsplit("/", 1)[1] for r in sent] == ["converse"] * 3 + ["converse-stream"], sent
    for r in sent:
        # the provider's model id, percent-encoded; the gateway's SigV4 (the mock answers 403 to
        # a bad signature), never the client's gateway key
        assert r["model_id"] == BEDROCK_MODEL_ID
        assert "us.anthropic.claude-3-5-haiku-20241022-v1%3A0" in r["path"]
        assert r["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/")
        assert user_key not in json.dumps(r)
    assert sent[0]["json"]["system"] == [{"text": SYSTEM}]

    tools = out["tools"]
    assert_tool_call(tools)
    follow_up = sent[2]["json"]["messages"]
    tool_use = follow_up[1]["content"][0]["toolUse"]
    tool_result = follow_up[2]["content"][0]["toolResult"]
    assert tool_use["toolUseId"] == tools["tool_use"]["id"] == tool_result["toolUseId"]
    assert tool_use["input"] == {"location": "Paris"}
    assert tool_result["content"] == [{"text": TOOL_RESULT}]
    # The Bedrock mock answers a tool result with its text. Input: the question, then the
    # toolUse and toolResult blocks as sent, each counted as the words of its JSON.
    assert tools["final_text"] == "echo: " + TOOL_RESULT
    expected_input = sum(len(s.split()) for s in (TOOL_QUESTION, json.dumps(tool_use), json.dumps(tool_result)))
    assert {k: tools["final_usage"][k] for k in USAGE} == {
        "input_tokens": expected_input, "output_tokens": 2, "total_tokens": expected_input + 2}, tools


def test_over_tls_with_a_private_ca(rs):
    stack, _, _, _, work = rs
    https = f"https://localhost:{stack.gateway_port}/bedrock"
    out = run_probe(rs, "--model", OPENAI_MODEL, "--prompt", PROMPT, "--system", SYSTEM,
                    "--scenario", "converse,stream", "--ca-file", str(work / "ca.pem"), endpoint=https)
    assert out["converse"]["text"] == ANSWER and out["stream"]["text"] == ANSWER
    assert out["stream"]["usage"]["total_tokens"] == USAGE["total_tokens"]
    # and the SDK does check the certificate: without the CA it is not trusted
    err = run_probe(rs, "--model", OPENAI_MODEL, "--scenario", "converse", endpoint=https, expect_ok=False)
    assert err["kind"] == "dispatch" and err["http_status"] is None, err
    assert "certificate" in err["message"], err


def test_token_given_in_code_instead_of_the_environment(rs):
    """`Config::builder().bearer_token(..)` without aws-config works too."""
    out = run_probe(rs, "--model", OPENAI_MODEL, "--prompt", PROMPT, "--scenario", "converse,stream",
                    "--auth", "explicit")
    assert out["converse"]["text"] == ANSWER and out["stream"]["text"] == ANSWER


def test_bearer_token_wins_over_aws_credentials_in_the_environment(rs):
    """With AWS_BEARER_TOKEN_BEDROCK set, aws-config prefers bearer auth even when SigV4
    credentials are there too (the gateway would refuse a SigV4 request)."""
    out = run_probe(rs, "--model", BEDROCK_MODEL, "--prompt", PROMPT, "--scenario", "converse",
                    extra_env={"AWS_ACCESS_KEY_ID": "AKIDNOTAGATEWAYKEY",
                               "AWS_SECRET_ACCESS_KEY": harness.random_secret()})
    assert out["converse"]["text"] == ANSWER


@pytest.mark.parametrize("scenario", ["converse", "stream"])
def test_wrong_key_is_access_denied(rs, scenario):
    err = run_probe(rs, "--model", OPENAI_MODEL, "--scenario", scenario, key="tg-" + "0" * 64,
                    expect_ok=False)
    assert err["kind"] == "AccessDeniedException", err
    assert err["code"] == "AccessDeniedException", err
    assert err["x_amzn_errortype"].split(":")[0] == "AccessDeniedException", err
    assert err["http_status"] == 401, err
    assert err["message"], err
    assert "AccessDeniedException" in err["display"], err


def test_unknown_model_is_resource_not_found(rs):
    err = run_probe(rs, "--model", "no-such-model", "--scenario", "converse", expect_ok=False)
    assert err["kind"] == "ResourceNotFoundException", err
    assert err["http_status"] == 404, err
