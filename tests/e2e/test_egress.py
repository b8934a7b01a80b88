"""The egress policy on provider base URLs (SECURITY-CATALOGUE B-27, issue 9 finding 6): a
config file that points a deployment at the cloud metadata service, loopback or the gateway's
own ports is refused at load with a clear message; a stored row that does is not served and is
reported, and nothing of it reaches Envoy."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
import yaml

import harness
from e2e_util import bearer


def require_stack() -> None:
    missing = harness.missing_artifacts()
    if missing:
        if os.environ.get("TOLLGATE_REQUIRE_E2E", "") not in ("", "0", "false", "no"):
            pytest.fail("e2e stack not built: " + "; ".join(missing), pytrace=False)
        pytest.skip("e2e stack not built")


def start_refused(tmp_path, config: dict, envoy_admin_port: int | None = None) -> str:
    """Start the control plane on `config`; it must exit non-zero. Returns its stderr."""
    require_stack()
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tollgate.yaml"
    path.write_text(yaml.safe_dump(config))
    cp = harness.ControlPlane(tmp_path, path, harness.free_port(), harness.random_secret("tg-dp-"),
                              harness.random_secret("tg-admin-"), {}, None, envoy_admin_port)
    cp.start()
    try:
        harness.wait_until(lambda: not cp.alive, 20, "the control plane to refuse its config",
                           on_timeout=cp.log_tails)
    finally:
        cp.stop()
    assert cp.returncode not in (0, None)
    return cp.stderr_path.read_text()


def one_model(base_url: str, settings: dict | None = None) -> dict:
    return {"settings": settings or {},
            "models": [{"name": "m", "deployments": [{"provider": "openai", "base_url": base_url}]}]}


@pytest.mark.parametrize("base_url", [
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/",
    "http://metadata.google.internal/computeMetadata/v1", "http://0xA9FEA9FE/",
    "http://2852039166/", "http://169.254.169.254.nip.io/", "http://[::ffff:169.254.169.254]/"])
def test_a_config_file_pointing_at_metadata_is_refused(tmp_path, base_url):
    # even with loopback and private destinations allowed
    err = start_refused(tmp_path, one_model(base_url, {"egress": {"allow_loopback": True,
                                                                  "allow_private": True}}))
    assert "model `m`: base_url points at a cloud metadata address; refused" in err, err
    assert "169.254" not in err and "a9fea9fe" not in err.lower(), "the URL is not echoed"


def test_loopback_and_the_gateways_own_ports_need_an_allowance(tmp_path):
    err = start_refused(tmp_path / "a", one_model("http://127.0.0.1:5000/v1", {"egress": {}}))
    assert "base_url points at a loopback address; refused unless settings.egress.allow_loopback" in err
    admin_port = harness.free_port()
    err = start_refused(tmp_path / "b", one_model(f"http://127.0.0.1:{admin_port}/",
                                                  {"egress": {"allow_loopback": True}}), admin_port)
    assert "base_url points at one of the gateway's own ports" in err, err


def test_a_stored_metadata_row_is_skipped_and_reported(tmp_path):
    require_stack()
    stack = harness.GatewayStack(tmp_path, {"models": [
        {"name": "demo", "deployments": [{"provider": "demo"}]}]}, {})
    try:
        stack.start()
        # A row the config file would refuse, written straight into the store.
        spec = {"name": "imds", "deployments": [
            {"provider": "openai", "base_url": "http://169.254.169.254/latest"},
            {"provider": "openai", "base_url": "http://0251.0376.0251.0376/v1"}]}
        with sqlite3.connect(stack.cp.data_dir / "tollgate.db", timeout=10) as db:
            db.execute("INSERT INTO models (name, position, spec, created_at) VALUES (?, 99, ?, 1)",
                       ("imds", json.dumps(spec)))
        db.close()
        models = {m["name"]: m for m in stack.admin("GET", "/admin/v1/models").json()["data"]}
        assert models["imds"]["served"] is False
        reason = ("base_url points at a cloud metadata address; refused (list the host under "
                  "settings.egress.allow_hosts to allow it)")
        assert models["imds"]["problems"][:2] == [{"deployment": 0, "reason": reason},
                                                  {"deployment": 1, "reason": reason}]
        # a key change republishes; the row is still left out of everything Envoy gets
        _, secret = stack.create_key()
        stack.wait_key_usable(secret)
        listed = harness.http("GET", f"{stack.base_url}/models", headers=bearer(secret)).json()
        assert [m["id"] for m in listed["data"]] == ["demo"]
        dump = stack.config_dump()
        assert "169.254.169.254" not in dump and "0251.0376" not in dump
        assert "demo" in dump
    finally:
        stack.stop()
