"""Fast tests of the e2e harness's building blocks (no Rust binaries needed)."""

from __future__ import annotations

import re
import socket
import sys
import time

import pytest

import harness


def test_render_bootstrap(tmp_path):
    template = tmp_path / "bootstrap.yaml"
    template.write_text("node: {id: {{NODE_ID}}}\nport: {{XDS_PORT}}\nagain: {{XDS_PORT}}\n")
    out = harness.render_bootstrap(template, {"NODE_ID": "n1", "XDS_PORT": 1234})
    assert out == "node: {id: n1}\nport: 1234\nagain: 1234\n"
    with pytest.raises(ValueError, match="ADMIN_PORT"):
        template.write_text("admin: {{ADMIN_PORT}} {{NODE_ID}}")
        harness.render_bootstrap(template, {"NODE_ID": "n1"})


def test_bootstrap_placeholders_are_the_templates():
    template = (harness.REPO_ROOT / "envoy" / "bootstrap.yaml").read_text()
    assert set(re.findall(r"\{\{([A-Z_]+)\}\}", template)) == set(harness.BOOTSTRAP_PLACEHOLDERS)


def test_free_port_is_bindable_and_not_repeated():
    ports = {harness.free_port() for _ in range(20)}
    assert len(ports) == 20
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_wait_until_returns_value_and_times_out():
    start = time.monotonic()
    calls = []

    def probe():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return "ready"

    assert harness.wait_until(probe, 5, "probe") == "ready"
    with pytest.raises(TimeoutError, match="never.*last error: ValueError"):
        harness.wait_until(lambda: (_ for _ in ()).throw(ValueError("x")), 0.1, "never")
    assert time.monotonic() - start < 3


def test_managed_process_lifecycle(tmp_path):
    script = ("import sys, time\n"
              "print('starting'); print('READY xds=127.0.0.1:1 http=127.0.0.1:2 internal=127.0.0.1:3', flush=True)\n"
              "sys.stderr.write('err line\\n'); sys.stderr.flush(); time.sleep(60)\n")
    proc = harness.ManagedProcess("toy", [sys.executable, "-c", script], {}, tmp_path)
    proc.start()
    try:
        match = proc.wait_for_stdout(harness.READY_RE, 10)
        assert (match["http_port"], match["internal_port"]) == ("2", "3")
        proc.kill()
        assert not proc.alive and proc.returncode == -9
        # A restart appends to the same logs and only looks at its own output.
        proc.start()
        proc.wait_for_stdout(harness.READY_RE, 10)
        assert proc.stdout_path.read_text().count("READY") == 2
        assert "err line" in proc.log_tails()
    finally:
        proc.stop()
    assert not proc.alive


def test_process_exit_fails_fast_with_logs(tmp_path):
    proc = harness.ManagedProcess(
        "dies", [sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"],
        {}, tmp_path)
    proc.start()
    start = time.monotonic()
    with pytest.raises(harness.StartupError, match=r"(?s)exited with code 3.*boom"):
        proc.wait_for_stdout(re.compile("READY"), 20)
    assert time.monotonic() - start < 10


def test_missing_artifacts_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TOLLGATE_BIN", str(tmp_path / "tollgate"))
    monkeypatch.setenv("TOLLGATE_WASM_DIR", str(tmp_path))
    monkeypatch.setenv("TOLLGATE_BOOTSTRAP", str(tmp_path / "bootstrap.yaml"))
    assert len(harness.missing_artifacts()) == 5
    for name in ("tollgate", "bootstrap.yaml", *harness.WASM_FILES):
        (tmp_path / name).write_text("")
    assert [m for m in harness.missing_artifacts() if "Envoy binary" not in m] == []
    monkeypatch.setenv("TOLLGATE_BIN", "debug")
    assert harness.tollgate_bin() == harness.target_dir() / "debug" / "tollgate"
