"""Provider credentials and models managed at runtime (issue 11): a secret given to the admin
API is stored encrypted (AES-256-GCM under TOLLGATE_KEK; the database file never holds it), is
never returned (a fingerprint instead), is replaced without a failed request under load, and a
KEK rotation (restart with TOLLGATE_KEK new and TOLLGATE_KEK_PREVIOUS old) re-encrypts it.
Models referencing it are created, changed and deleted through the API, validated when set
(egress policy, known credential)."""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid

import pytest

import harness
from e2e_util import post_chat, user_message
from mocks.openai_mock import MockOpenAI


def kek() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("tollgate-creds")
    mock = MockOpenAI(api_key=harness.random_secret("sk-live-"))
    config = {"models": [{"name": "demo", "deployments": [{"provider": "demo"}]}]}
    s = harness.GatewayStack(work, config, {"TOLLGATE_KEK": kek()}, mock)
    s.secrets["provider key (stored)"] = mock.api_key
    try:
        s.start()
    except harness.StartupError as err:
        mock.stop()
        pytest.fail(str(err), pytrace=False)
    yield s, mock
    s.stop()
    mock.stop()


def ok(resp, status=200):
    assert resp.status_code == status, f"{resp.status_code} {resp.text[:400]}"
    return resp.json() if resp.content else None


def chat(s, secret: str, model: str) -> int:
    return post_chat(s, secret, {"model": model, "messages": user_message("hi")}, timeout=10).status_code


def test_stored_secret_is_encrypted_never_shown_and_rotated_without_a_failed_request(stack):
    s, mock = stack
    name = f"openai-{uuid.uuid4().hex[:6]}"
    view = ok(s.admin("POST", "/admin/v1/credentials", json={"name": name, "api_key": mock.api_key}), 201)
    assert view["kind"] == "api_key" and view["source"] == "api" and view["usable"] is True
    assert view["fingerprint"].startswith("sha256:") and mock.api_key not in str(view)
    model = f"m-{uuid.uuid4().hex[:6]}"
    ok(s.admin("POST", "/admin/v1/models", json={"name": model, "deployments": [
        {"provider": "openai", "base_url": mock.base_url, "model": "mock-model-1", "credential": name}]}), 201)
    key_id, secret = s.create_key()
    s.wait_key_usable(secret)
    harness.wait_until(lambda: chat(s, secret, model) == 200, 5, "the API-made model to serve")
    # never returned, not in the database file in plain text
    listed = ok(s.admin("GET", "/admin/v1/credentials"))["data"]
    assert [c["name"] for c in listed if c["name"] == name] == [name]
    assert mock.api_key not in str(listed)
    db = b"".join(p.read_bytes() for p in s.work_dir.rglob("tollgate.db*"))
    assert db and mock.api_key.encode() not in db
    assert name.encode() in db  # the row is there, encrypted

    # rotation under load: the provider accepts old and new while Envoys switch; no request fails
    new_secret = harness.random_secret("sk-live-")
    s.secrets["provider key (rotated)"] = new_secret
    mock.also_accept.add(new_secret)
    statuses: list[int] = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            statuses.append(chat(s, secret, model))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    rotated = ok(s.admin("PUT", f"/admin/v1/credentials/{name}", json={"api_key": new_secret}))
    assert rotated["fingerprint"] != view["fingerprint"]
    n = len(mock.requests)
    harness.wait_until(lambda: len(mock.requests) > n + 20 and all(
        r["headers"].get("authorization") == f"Bearer {new_secret}" for r in mock.requests[-10:]), 5,
        "Envoy to sign with the new secret")
    stop.set()
    for t in threads:
        t.join()
    assert statuses and set(statuses) == {200}, {st: statuses.count(st) for st in set(statuses)}
    # the old secret is gone from the data plane: the provider may now revoke it
    mock.api_key, mock.also_accept = new_secret, set()
    assert chat(s, secret, model) == 200
    rows = ok(s.admin("GET", f"/admin/v1/audit?target={name}"))["data"]
    assert [r["action"] for r in rows] == ["credential.rotate", "credential.create"]
    assert new_secret not in str(rows) and view["fingerprint"] in str(rows)
    # a credential in use cannot be deleted; the model first
    assert s.admin("DELETE", f"/admin/v1/credentials/{name}").status_code == 400
    assert s.admin("DELETE", f"/admin/v1/models/{model}").status_code == 204
    harness.wait_until(lambda: chat(s, secret, model) == 404, 3, "the deleted model to be gone")
    assert s.admin("DELETE", f"/admin/v1/credentials/{name}").status_code == 204
    dump = s.config_dump()
    assert new_secret not in dump and view["fingerprint"] not in dump


@pytest.mark.parametrize("base_url,code", [
    ("http://169.254.169.254/v1", "forbidden_destination"),
    ("http://[fd00:ec2::254]/v1", "forbidden_destination"),
    ("http://0xA9FEA9FE/v1", "forbidden_destination"),
    ("https://httpbin.org#/v1", None),
    ("file:///etc/passwd", None),
])
def test_models_are_validated_when_set(stack, base_url, code):
    s, _ = stack
    name = f"bad-{uuid.uuid4().hex[:6]}"
    resp = s.admin("POST", "/admin/v1/models", json={"name": name, "deployments": [{"provider": "openai", "base_url": base_url}]})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == code
    assert name not in {m["name"] for m in ok(s.admin("GET", "/admin/v1/models"))["data"]}
    resp = s.admin("POST", "/admin/v1/models", json={"name": name, "deployments": [
        {"provider": "openai", "base_url": "https://api.openai.com/v1", "credential": "no-such"}]})
    assert resp.status_code == 400 and "no-such" in resp.json()["error"]["message"]


def test_no_kek_means_no_stored_secrets(tmp_path):
    mock = MockOpenAI()
    s = harness.GatewayStack(tmp_path, {"models": [{"name": "demo", "deployments": [{"provider": "demo"}]}]},
                             {"TOLLGATE_KEK": None}, mock)
    try:
        s.start()
        resp = s.admin("POST", "/admin/v1/credentials", json={"name": "x", "api_key": "sk-abc-123"})
        assert resp.status_code == 400 and "TOLLGATE_KEK" in resp.json()["error"]["message"]
        # references to environment variables work without a KEK
        ok(s.admin("POST", "/admin/v1/credentials", json={"name": "y", "api_key_env": "SOME_VAR"}), 201)
    finally:
        s.stop()
        mock.stop()
