"""AWS credentials from the aws-config chain, end to end: the control plane runs as a real
process with its own environment (HOME, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE and every
AWS_* variable isolated per test, EC2 instance metadata disabled), obtains keys from a mock ECS
credentials endpoint or a mock STS, and a chat through real Envoy reaches the Bedrock mock
signed with exactly those keys (the mock verifies SigV4 with botocore's signer and accepts
nothing else). Cases: ECS container credentials (rotated before the old ones expire, and an
outage survived), web identity (IRSA) with an explicit assume-role on top, a profile with
role_arn + source_profile (and a profile that appears only later), credential_process.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import harness
from mocks.aws_credentials_mock import Keys, MockEcsCredentials, MockSts, iso8601
from mocks.bedrock_mock import MockBedrock

REGION = "us-east-1"
MODEL = "br-chain"
BEDROCK_MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
WEB_ROLE = "arn:aws:iam::123456789012:role/tollgate-irsa"
GATEWAY_ROLE = "arn:aws:iam::210987654321:role/tollgate-bedrock"
PROFILE_ROLE = "arn:aws:iam::123456789012:role/tollgate-profile"


def aws_env(home: Path, **extra: str) -> dict[str, str | None]:
    """The control plane's environment: no inherited AWS_* variable, its own HOME and files."""
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("AWS_")}
    env.update({"HOME": str(home),
                "AWS_CONFIG_FILE": str(home / "aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
                "AWS_EC2_METADATA_DISABLED": "true",  # never probe 169.254.169.254
                "AWS_REGION": REGION})
    env.update(extra)
    return env


def bedrock_config(bedrock: MockBedrock, credentials: dict[str, Any],
                   models: dict[str, str] | None = None) -> dict[str, Any]:
    """One Bedrock model per entry of `models` (gateway name -> credential name)."""
    models = models or {MODEL: next(iter(credentials))}
    return {"credentials": credentials, "models": [
        {"name": name, "deployments": [{"provider": "bedrock", "region": REGION,
                                        "base_url": bedrock.url, "model": BEDROCK_MODEL_ID,
                                        "credential": credential}]}
        for name, credential in models.items()]}


def require_stack() -> None:
    missing = harness.missing_artifacts()
    if missing:
        if os.environ.get("TOLLGATE_REQUIRE_E2E", "") not in ("", "0", "false", "no"):
            pytest.fail("e2e stack not built: " + "; ".join(missing), pytrace=False)
        pytest.skip("e2e stack not built")


def started(work: Path, config: dict[str, Any], env: dict[str, str | None]) -> harness.GatewayStack:
    stack = harness.GatewayStack(work, config, env)
    try:
        stack.start()
        stack.wait_chat_ready(MODEL, timeout=30)
    except BaseException:
        stack.stop()
        raise
    return stack


def chat(gw: harness.GatewayStack, text: str, model: str = MODEL) -> str:
    resp = gw.client(gw.admin_key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}])
    return resp.choices[0].message.content or ""


def signed_with(request: dict[str, Any]) -> str:
    """The access key id a recorded Bedrock request was signed with."""
    auth = request["headers"].get("authorization", "")
    assert auth.startswith("AWS4-HMAC-SHA256 Credential="), auth[:40]
    return auth.split("Credential=", 1)[1].split("/", 1)[0]


def last_chat(bedrock: MockBedrock) -> dict[str, Any]:
    converse = [r for r in bedrock.requests if r["path"].endswith("/converse")]
    assert converse, "no Converse request reached the Bedrock mock"
    return converse[-1]


def assert_signed_with(bedrock: MockBedrock, keys: Keys) -> None:
    last = last_chat(bedrock)
    assert signed_with(last) == keys.access_key_id
    assert last["headers"].get("x-amz-security-token") == keys.session_token


def credentials_document(gw: harness.GatewayStack) -> tuple[str, dict[str, Any]]:
    resp = harness.http("GET", f"{gw.internal_url}/internal/v1/credentials",
                        headers={"Authorization": f"Bearer {gw.data_plane_token}"})
    assert resp.status_code == 200, resp.text[:300]
    return resp.headers["etag"], resp.json()


def document_key_id(gw: harness.GatewayStack, credential: str) -> str | None:
    _, doc = credentials_document(gw)
    return (doc["credentials"].get(credential, {}).get("aws") or {}).get("access_key_id")


def assert_no_leak(gw: harness.GatewayStack, keys: list[Keys]) -> None:
    """No obtained key, secret or token in the logs, Envoy's config or the data dir."""
    values = {f"{k.access_key_id} {what}": v for k in keys
              for what, v in zip(("key id", "secret", "token"), k.values())}
    places = {p.name: p.read_bytes() for p in gw.log_paths}
    places["config_dump"] = gw.config_dump().encode()
    places.update({f"data/{p.name}": p.read_bytes() for p in gw.cp.data_dir.rglob("*") if p.is_file()})
    leaked = [(where, name) for where, data in places.items() for name, value in values.items()
              if value.encode() in data]
    assert not leaked, f"AWS credentials leaked: {leaked}"


# ---- (a) ECS container credentials, rotated ---------------------------------------------------

@pytest.fixture()
def ecs_stack(tmp_path: Path) -> Iterator[tuple[harness.GatewayStack, MockEcsCredentials, MockBedrock]]:
    require_stack()
    # 24 s: the control plane renews at half the lifetime of such short-lived keys.
    ecs = MockEcsCredentials(lifetime_s=24, auth_token=secrets.token_urlsafe(16)).start()
    first = ecs.current
    bedrock = MockBedrock(access_key=first.access_key_id, secret_key=first.secret_access_key,
                          session_token=first.session_token, region=REGION).start()
    env = aws_env(tmp_path, AWS_CONTAINER_CREDENTIALS_FULL_URI=ecs.full_uri,
                  AWS_CONTAINER_AUTHORIZATION_TOKEN=str(ecs.auth_token))
    try:
        gw = started(tmp_path / "gw", bedrock_config(bedrock, {"aws-ecs": {"aws": {"source": "default_chain"}}}), env)
    except BaseException:
        ecs.stop()
        bedrock.stop()
        raise
    yield gw, ecs, bedrock
    gw.stop()
    ecs.stop()
    bedrock.stop()


def test_ecs_container_credentials_sign_requests_and_rotate_before_expiry(ecs_stack):
    gw, ecs, bedrock = ecs_stack
    first = ecs.current
    assert chat(gw, "hello ecs") == "echo: hello ecs"
    assert_signed_with(bedrock, first)
    etag_before, doc = credentials_document(gw)
    assert doc["credentials"]["aws-ecs"]["aws"]["access_key_id"] == first.access_key_id
    first_expiry = min(exp for keys, exp in ecs.served if keys == first)

    # The container agent starts handing out new keys; the old ones stay valid until they expire.
    second = ecs.rotate()
    bedrock.accept(second.values(), first.values())
    harness.wait_until(lambda: document_key_id(gw, "aws-ecs") == second.access_key_id, 30,
                       "the credentials document to carry the rotated ECS keys",
                       interval=0.1, on_timeout=gw.log_tails)
    assert time.time() < first_expiry, "the keys were renewed only after they expired"
    etag_after, _ = credentials_document(gw)
    assert etag_after != etag_before

    # Within about a second the provider filter signs with the new keys.
    started_at = time.monotonic()
    harness.wait_until(lambda: chat(gw, "after rotation") and
                       signed_with(last_chat(bedrock)) == second.access_key_id,
                       10, "a chat signed with the rotated keys", interval=0.2,
                       on_timeout=gw.log_tails)
    assert time.monotonic() - started_at < 5
    bedrock.accept(second.values())  # the old keys are refused from now on
    assert chat(gw, "new keys only") == "echo: new keys only"
    assert_signed_with(bedrock, second)
    assert all(r["headers"].get("authorization") == ecs.auth_token
               for r in ecs.requests), "the ECS authorization token was not sent"
    assert_no_leak(gw, [first, second])


def test_ecs_failures_keep_the_valid_keys_and_are_retried(ecs_stack):
    gw, ecs, bedrock = ecs_stack
    first = ecs.current
    # The container endpoint fails from now on, and will have new keys once it is back.
    ecs.set_faults(status=500, count=1000)
    second = ecs.rotate()
    bedrock.accept(second.values(), first.values())
    renewal_failed = "AWS credentials could not be renewed; the current ones stay in use"
    harness.wait_until(lambda: renewal_failed in gw.cp.stderr_path.read_text(errors="replace"),
                       30, "a failed renewal", interval=0.1, on_timeout=gw.log_tails)
    # Meanwhile the keys in use keep working.
    assert document_key_id(gw, "aws-ecs") == first.access_key_id
    assert chat(gw, "during the outage") == "echo: during the outage"
    assert_signed_with(bedrock, first)
    # The endpoint recovers: a back-off retry obtains the new keys before the old ones expire.
    calls_failed = len(ecs.requests)
    ecs.reset_faults()
    harness.wait_until(lambda: document_key_id(gw, "aws-ecs") == second.access_key_id, 30,
                       "a retry to obtain the rotated keys", interval=0.1, on_timeout=gw.log_tails)
    first_expiry = min(exp for keys, exp in ecs.served if keys == first)
    assert time.time() < first_expiry, "the retry came only after the keys in use expired"
    assert len(ecs.requests) > calls_failed
    harness.wait_until(lambda: chat(gw, "recovered") and
                       signed_with(last_chat(bedrock)) == second.access_key_id,
                       10, "a chat signed with the keys obtained by the retry", interval=0.2,
                       on_timeout=gw.log_tails)
    assert_no_leak(gw, [first, second])


# ---- (b) web identity (IRSA), with a role assumed on top -------------------------------------

def test_web_identity_then_assume_role_against_mock_sts(tmp_path: Path):
    require_stack()
    token_file = tmp_path / "eks-token"
    token = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(40)
    token_file.write_text(token)
    with MockSts(region=REGION) as sts:
        web_keys = sts.allow_web_identity(WEB_ROLE, token)
        external_id = "ext-" + secrets.token_hex(4)
        role_keys = sts.allow_assume_role(GATEWAY_ROLE, *web_keys.values(), external_id=external_id)
        with MockBedrock(access_key=role_keys.access_key_id, secret_key=role_keys.secret_access_key,
                         session_token=role_keys.session_token, region=REGION) as bedrock:
            env = aws_env(tmp_path, AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file),
                          AWS_ROLE_ARN=WEB_ROLE, AWS_ROLE_SESSION_NAME="irsa-session",
                          AWS_ENDPOINT_URL_STS=sts.url)
            config = bedrock_config(bedrock, {
                "aws-role": {"aws": {"source": "default_chain", "assume_role_arn": GATEWAY_ROLE,
                                     "external_id": external_id, "session_name": "tollgate-e2e"}},
                "aws-irsa": {"aws": {"source": "default_chain"}},
            }, models={MODEL: "aws-role", "br-irsa": "aws-irsa"})
            gw = started(tmp_path / "gw", config, env)
            try:
                assert chat(gw, "via a role") == "echo: via a role"
                assert_signed_with(bedrock, role_keys)
                grants = sts.grants("AssumeRole", GATEWAY_ROLE)
                assert grants and grants[-1]["session"] == "tollgate-e2e"
                assert grants[-1]["external_id"] == external_id
                web = sts.grants("AssumeRoleWithWebIdentity", WEB_ROLE)
                assert web and web[-1]["session"] == "irsa-session"
                # the plain chain credential serves the web identity keys themselves
                bedrock.accept(web_keys.values())
                assert chat(gw, "via irsa", model="br-irsa") == "echo: via irsa"
                assert_signed_with(bedrock, web_keys)
                assert_no_leak(gw, [web_keys, role_keys])
            finally:
                gw.stop()


# ---- (c) a shared profile: static keys + role_arn/source_profile; an unknown profile ---------

def test_profile_assume_role_and_a_profile_that_appears_later(tmp_path: Path):
    require_stack()
    base = Keys.fresh()
    env_keys = Keys.fresh()  # in the environment: `source: profile` must not use them
    (tmp_path / "aws-credentials").write_text(
        f"[base]\naws_access_key_id = {base.access_key_id}\n"
        f"aws_secret_access_key = {base.secret_access_key}\n")
    with MockSts(region=REGION) as sts:
        role_keys = sts.allow_assume_role(PROFILE_ROLE, base.access_key_id, base.secret_access_key)
        (tmp_path / "aws-config").write_text(
            f"[profile app]\nrole_arn = {PROFILE_ROLE}\nsource_profile = base\n"
            f"role_session_name = tollgate-profile\nregion = {REGION}\n")
        with MockBedrock(access_key=role_keys.access_key_id, secret_key=role_keys.secret_access_key,
                         session_token=role_keys.session_token, region=REGION) as bedrock:
            env = aws_env(tmp_path, AWS_ENDPOINT_URL_STS=sts.url,
                          AWS_ACCESS_KEY_ID=env_keys.access_key_id,
                          AWS_SECRET_ACCESS_KEY=env_keys.secret_access_key)
            config = bedrock_config(bedrock, {
                "aws-app": {"aws": {"source": "profile", "profile": "app"}},
                "aws-missing": {"aws": {"source": "profile", "profile": "no-such-profile"}},
            }, models={MODEL: "aws-app", "br-missing": "aws-missing"})
            gw = started(tmp_path / "gw", config, env)
            try:
                assert chat(gw, "via a profile") == "echo: via a profile"
                assert_signed_with(bedrock, role_keys)
                grants = sts.grants("AssumeRole", PROFILE_ROLE)
                assert grants and grants[-1]["session"] == "tollgate-profile"
                # the deployment whose profile does not exist is not served, with a warning
                models = {m.id for m in gw.client(gw.admin_key).models.list()}
                assert MODEL in models and "br-missing" not in models
                harness.wait_until(
                    lambda: "AWS credentials could not be resolved" in
                    gw.cp.stderr_path.read_text(errors="replace"), 10,
                    "the warning for the unresolvable profile", on_timeout=gw.log_tails)
                warning = next(line for line in gw.cp.stderr_path.read_text().splitlines()
                               if "could not be resolved" in line)
                assert "aws-missing" in warning
                _, doc = credentials_document(gw)
                assert "aws-missing" not in doc["credentials"]
                # Once the profile is written, a retry reads the files again and serves it.
                late = Keys.fresh()
                with open(tmp_path / "aws-config", "a") as f:
                    f.write(f"\n[profile no-such-profile]\naws_access_key_id = {late.access_key_id}\n"
                            f"aws_secret_access_key = {late.secret_access_key}\n"
                            f"aws_session_token = {late.session_token}\n")
                bedrock.accept(role_keys.values(), late.values())
                harness.wait_until(lambda: "br-missing" in {m.id for m in gw.client(gw.admin_key).models.list()},
                                   40, "the model on the profile written late to be served",
                                   interval=0.2, on_timeout=gw.log_tails)
                harness.wait_until(lambda: chat(gw, "late profile", model="br-missing"), 10,
                                   "a chat on the late profile", interval=0.2, on_timeout=gw.log_tails)
                assert_signed_with(bedrock, late)
                assert_no_leak(gw, [base, role_keys, env_keys, late])
            finally:
                gw.stop()


# ---- (d) credential_process in a profile, via the default chain and AWS_PROFILE ---------------

def test_credential_process_profile_through_the_default_chain(tmp_path: Path):
    require_stack()
    keys = Keys.fresh()
    keys_file = tmp_path / "process-keys.json"
    keys_file.write_text(json.dumps({
        "Version": 1, "AccessKeyId": keys.access_key_id, "SecretAccessKey": keys.secret_access_key,
        "SessionToken": keys.session_token,
        "Expiration": iso8601(time.time() + 3600)}))
    script = tmp_path / "print-keys.py"
    script.write_text("import sys\nsys.stdout.write(open(sys.argv[1]).read())\n")
    (tmp_path / "aws-config").write_text(
        f"[profile proc]\ncredential_process = {sys.executable} {script} {keys_file}\n")
    with MockBedrock(access_key=keys.access_key_id, secret_key=keys.secret_access_key,
                     session_token=keys.session_token, region=REGION) as bedrock:
        env = aws_env(tmp_path, AWS_PROFILE="proc")
        gw = started(tmp_path / "gw", bedrock_config(bedrock, {"aws-proc": {"aws": {"source": "default_chain"}}}), env)
        try:
            assert chat(gw, "via a process") == "echo: via a process"
            assert_signed_with(bedrock, keys)
            assert_no_leak(gw, [keys])
        finally:
            gw.stop()
