#!/usr/bin/env python3
"""Tollgate benchmark: the same load against the mock alone, bare Envoy, Tollgate, LiteLLM and
Portkey, each started, measured and stopped here, all in front of the same `bench-mock`.

    .venv/bin/python bench/run.py [--quick] [--targets floor envoy tollgate tollgate-bedrock litellm portkey]
                                  [--duration S] [--warmup S] [--rate RPS]

Targets run pinned to CPU 0 (Envoy with one worker); the load generator and the mock to CPU 1.
The target's CPU time per request comes from /proc/<pid>/stat (utime + stime of every process
in its tree) sampled at the edges of the measurement window, which `bench-load` announces on
stderr. See bench/README.md for the columns and the caveats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))

import harness  # noqa: E402  (the process harness of the end-to-end tests)

LITELLM_VERSION = "1.106.12"  # newest whose [proxy] extra resolves on the package mirror
PORTKEY_VERSION = "1.15.2"
TARGET_CPU = "0"
LOAD_CPU = "1"
MODEL = "gpt-4o-mini"  # what every target is asked for; each maps it to the mock
CHAT_BODY = BENCH / "requests" / "chat-2k.json"
STREAM_BODY = BENCH / "requests" / "chat-2k-stream.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ALL_TARGETS = ("floor", "envoy", "tollgate", "tollgate-bedrock", "litellm", "portkey")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")


def bench_bin(name: str) -> Path:
    return target_dir() / "release" / name


def pinned(cpu: str, argv: list[Any]) -> list[str]:
    argv = [str(a) for a in argv]
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else argv


# ---- /proc ----------------------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; everything after the last ')' is split.
    return text[text.rfind(")") + 2:].split()


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads, exited ones included)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time all CPUs spent busy (not idle nor iowait), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    values = [int(v) for v in fields[:8]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "pinning": {"targets": f"CPU {TARGET_CPU}", "load generator and mock": f"CPU {LOAD_CPU}"}}


# ---- small HTTP helpers (loopback only) -----------------------------------------------------------

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with _opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def get_status(url: str, timeout: float = 2) -> int:
    try:
        with _opener.open(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


# ---- targets --------------------------------------------------------------------------------------

class TargetError(RuntimeError):
    pass


@dataclass
class Target:
    """Something to measure. `start` leaves it serving `url(path)`; `stop` ends it."""

    name: str
    label: str
    features: list[str] = field(default_factory=list)
    version: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    procs: list[harness.ManagedProcess] = field(default_factory=list)
    port: int = 0

    def install(self, work: Path) -> None:
        """Install what is missing (raises TargetError when it cannot)."""

    def start(self, work: Path, mock: "Mock") -> None:
        raise NotImplementedError

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def measured_pids(self) -> list[int]:
        """The processes whose CPU and memory are the target's."""
        return [p for proc in self.procs[:1] if proc.pid for p in process_tree(proc.pid)]

    def side_pids(self) -> dict[str, list[int]]:
        """Other processes of the target, reported separately (Tollgate's control plane)."""
        return {}

    def stop(self) -> None:
        for proc in self.procs:  # Tollgate: Envoy first, then the control plane
            proc.stop()
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(p.log_tails(30) for p in self.procs)

    def run(self, name: str, argv: list[Any], work: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> harness.ManagedProcess:
        proc = harness.ManagedProcess(name, pinned(TARGET_CPU, argv), env or dict(os.environ),
                                      work, cwd=cwd)
        proc.start()
        self.procs.append(proc)
        return proc

    def wait_http(self, url: str, timeout: float, ok=(200,)) -> None:
        def probe() -> bool:
            for proc in self.procs:
                if not proc.alive:
                    raise harness.StartupError(f"{proc.name} exited with code {proc.returncode}\n"
                                               f"{proc.log_tails(30)}")
            return get_status(url) in ok
        harness.wait_until(probe, timeout, f"{url} to answer", interval=0.1,
                           on_timeout=self.logs)


class Mock:
    """The shared `bench-mock`, pinned beside the load generator."""

    def __init__(self, work: Path, chunks: int, chunk_delay_us: int) -> None:
        self.api_key = "sk-mock-" + secrets.token_hex(16)
        self.proc = harness.ManagedProcess(
            "bench-mock", pinned(LOAD_CPU, [bench_bin("bench-mock"), "--api-key", self.api_key,
                                            "--chunks", chunks, "--chunk-delay-us",
                                            chunk_delay_us]),
            dict(os.environ), work)
        self.port = 0

    def start(self) -> "Mock":
        self.proc.start()
        match = self.proc.wait_for_stdout(re.compile(r"^READY port=(\d+)$", re.M), 10)
        self.port = int(match[1])
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.proc.stop()


class Floor(Target):
    def start(self, work: Path, mock: Mock) -> None:
        self.port = mock.port
        self.headers = {"Authorization": f"Bearer {mock.api_key}"}
        self._mock = mock

    def measured_pids(self) -> list[int]:
        return [self._mock.proc.pid] if self._mock.proc.pid else []

    def stop(self) -> None:
        pass


BARE_ENVOY = """\
# Bare Envoy: one listener, one route, one cluster (the mock); no filter but the router.
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    per_connection_buffer_limit_bytes: 8388608
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: mock, timeout: 600s}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: mock
    connect_timeout: 5s
    type: STATIC
    per_connection_buffer_limit_bytes: 8388608
    circuit_breakers:
      thresholds: [{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}]
    load_assignment:
      cluster_name: mock
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(mock_port)d}}}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %(admin_port)d}}
"""


def envoy_version() -> str:
    envoy = harness.envoy_bin()
    if envoy is None:
        return ""
    try:
        out = subprocess.run([str(envoy), "--version"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    match = re.search(r"version: [0-9a-f]+/([^/]+)/", out)
    return match[1] if match else out.strip()[:80]


class BareEnvoy(Target):
    def install(self, work: Path) -> None:
        if harness.envoy_bin() is None:
            raise TargetError("no Envoy binary (run `make setup`)")
        self.version = envoy_version()

    def start(self, work: Path, mock: Mock) -> None:
        self.port = harness.free_port()
        admin = harness.free_port()
        bootstrap = work / "bare-envoy.yaml"
        bootstrap.write_text(BARE_ENVOY % {"port": self.port, "mock_port": mock.port,
                                           "admin_port": admin})
        self.run("bare-envoy", [harness.envoy_bin(), "-c", bootstrap, "--concurrency", "1",
                                "--use-dynamic-base-id", "--log-level", "warn"], work)
        self.wait_http(f"http://127.0.0.1:{admin}/ready", 30)
        self.headers = {"Authorization": f"Bearer {mock.api_key}"}


class Tollgate(Target):
    """Control plane + Envoy (one worker) with the gateway and provider filters."""

    def install(self, work: Path) -> None:
        missing = harness.missing_artifacts()
        if missing:
            raise TargetError("missing: " + "; ".join(missing) + " (run `make build`)")
        self.version = envoy_version()

    bedrock = False  # True: the model's deployment is Bedrock (OpenAI -> Converse + SigV4)

    def deployment(self, mock: Mock) -> dict[str, Any]:
        if self.bedrock:
            return {"provider": "bedrock", "region": "us-east-1",
                    "base_url": f"http://127.0.0.1:{mock.port}",
                    "model": "us.anthropic.claude-3-5-haiku-20241022-v1:0", "credential": "aws"}
        return {"provider": "openai", "base_url": mock.base_url, "model": "mock-model-1",
                "credential": "mock"}

    def start(self, work: Path, mock: Mock) -> None:
        config = {
            "settings": {"max_body_bytes": 8388608, "request_timeout_seconds": 600,
                         "num_retries": 2},
            "credentials": {"mock": {"api_key_env": "BENCH_MOCK_KEY"},
                            "aws": {"aws_access_key_id_env": "BENCH_AWS_ID",
                                    "aws_secret_access_key_env": "BENCH_AWS_SECRET"}},
            "models": [{"name": MODEL, "deployments": [self.deployment(mock)]}],
        }
        work = work / self.name
        work.mkdir(parents=True, exist_ok=True)
        config_path = work / "tollgate.yaml"
        config_path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        token = harness.random_secret("tg-dp-")
        admin_key = harness.random_secret("tg-admin-")
        self.port = harness.free_port()
        cp = harness.ControlPlane(work, config_path, self.port, token, admin_key,
                                  {"BENCH_MOCK_KEY": mock.api_key, "BENCH_AWS_ID": "AKIDBENCH",
                                   "BENCH_AWS_SECRET": secrets.token_hex(20)})
        cp.argv = pinned(TARGET_CPU, cp.argv)
        cp.start()
        self.procs.append(cp)
        cp.wait_ready(30)
        resp = harness.http("POST", f"{cp.url}/admin/v1/keys",
                            headers={"Authorization": f"Bearer {admin_key}"},
                            json={"name": "bench", "models": [MODEL]})
        if resp.status_code != 201:
            raise TargetError(f"creating a key: {resp.status_code} {resp.text[:300]}")
        key = resp.json()["key"]
        envoy = harness.Envoy(work, cp, token, f"tollgate-bench-{secrets.token_hex(4)}")
        argv = list(envoy.argv)
        argv[argv.index("--concurrency") + 1] = "1"
        envoy.argv = pinned(TARGET_CPU, argv)
        envoy.start()
        self.procs.insert(0, envoy)  # measured_pids: the first process is Envoy
        envoy.wait_ready(30)
        self.headers = {"Authorization": f"Bearer {key}"}
        self._cp = cp

    def side_pids(self) -> dict[str, list[int]]:
        return {"control_plane": process_tree(self._cp.pid) if self._cp.pid else []}


class TollgateBedrock(Tollgate):
    """Tollgate with the model on Bedrock: each request translated to Converse and SigV4-signed,
    the response translated back (non-streaming scenarios; the fast mock has no ConverseStream)."""

    bedrock = True


class LiteLLM(Target):
    venv = BENCH / ".venv-litellm"

    def installed_version(self) -> str:
        python = self.venv / "bin" / "python"
        if not python.exists():
            return ""
        out = subprocess.run([str(python), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip()

    def install(self, work: Path) -> None:
        if self.installed_version() != LITELLM_VERSION or not (self.venv / "bin" / "litellm").exists():
            log(f"==> installing litellm[proxy]=={LITELLM_VERSION} into {self.venv} "
                "(first run only; a few minutes)")
            if not (self.venv / "bin" / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
            pip = subprocess.run([str(self.venv / "bin" / "pip"), "install",
                                  "--disable-pip-version-check", "--progress-bar", "off",
                                  f"litellm[proxy]=={LITELLM_VERSION}"],
                                 stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
            if pip.returncode != 0:
                raise TargetError("pip install failed: " + pip.stderr.strip()[-800:])
        self.version = self.installed_version()

    def start(self, work: Path, mock: Mock) -> None:
        master = "sk-litellm-" + secrets.token_hex(16)
        config = {
            "model_list": [{"model_name": MODEL, "litellm_params": {
                "model": f"openai/{MODEL}", "api_base": mock.base_url,
                "api_key": "os.environ/BENCH_MOCK_KEY"}}],
            "litellm_settings": {"telemetry": False, "set_verbose": False, "drop_params": True},
            "general_settings": {"master_key": master, "disable_spend_logs": True},
        }
        config_path = work / "litellm.yaml"
        config_path.write_text(json.dumps(config, indent=1))
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
        env.update({"BENCH_MOCK_KEY": mock.api_key, "LITELLM_TELEMETRY": "False",
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                    "DISABLE_ADMIN_UI": "True", "NO_PROXY": "*", "no_proxy": "*"})
        self.port = harness.free_port()
        self.run("litellm", [self.venv / "bin" / "litellm", "--config", config_path,
                             "--host", "127.0.0.1", "--port", self.port, "--num_workers", "1"],
                 work, env=env)
        self.wait_http(self.url("/health/liveliness"), 120)
        self.headers = {"Authorization": f"Bearer {master}"}


class Portkey(Target):
    root = BENCH / ".portkey"

    def package_dir(self) -> Path:
        return self.root / "node_modules" / "@portkey-ai" / "gateway"

    def installed_version(self) -> str:
        try:
            return json.loads((self.package_dir() / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return ""

    def install(self, work: Path) -> None:
        if not shutil.which("node") or not shutil.which("npm"):
            raise TargetError("node and npm are needed (apt-get install nodejs npm)")
        if self.installed_version() != PORTKEY_VERSION:
            log(f"==> installing @portkey-ai/gateway@{PORTKEY_VERSION} into {self.root} "
                "(first run only)")
            self.root.mkdir(parents=True, exist_ok=True)
            pkg = self.root / "package.json"
            if not pkg.exists():
                pkg.write_text('{"name": "tollgate-bench-portkey", "private": true}\n')
            npm = subprocess.run(["npm", "install", "--no-audit", "--no-fund",
                                  f"@portkey-ai/gateway@{PORTKEY_VERSION}"], cwd=self.root,
                                 stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
            if npm.returncode != 0:
                raise TargetError("npm install failed: " + npm.stderr.strip()[-800:])
        self.version = self.installed_version()
        node = subprocess.run(["node", "--version"], capture_output=True, text=True)
        self.version += f" (node {node.stdout.strip()})"

    def start(self, work: Path, mock: Mock) -> None:
        self.port = harness.free_port()
        env = {**os.environ, "NODE_ENV": "production"}
        self.run("portkey", ["node", self.package_dir() / "build" / "start-server.js",
                             f"--port={self.port}", "--headless"], work, env=env, cwd=self.root)
        self.wait_http(self.url("/"), 60)
        self.headers = {"Authorization": f"Bearer {mock.api_key}",
                        "x-portkey-provider": "openai",
                        "x-portkey-custom-host": mock.base_url}


def make_targets() -> dict[str, Target]:
    return {
        "floor": Floor("floor", "mock alone (floor)",
                       features=["none: the load generator talks to the mock directly"]),
        "envoy": BareEnvoy("envoy", "bare Envoy",
                           features=["router only", "--concurrency 1"]),
        "tollgate": Tollgate("tollgate", "Tollgate",
                             features=["virtual-key auth (SHA-256, allowed-model list)",
                                       "request validation (body parse)", "model routing",
                                       "provider rewrite + provider key injection",
                                       "retries/failover policy", "Envoy --concurrency 1"]),
        "tollgate-bedrock": TollgateBedrock(
            "tollgate-bedrock", "Tollgate, OpenAI client -> Bedrock",
            features=["as Tollgate", "OpenAI -> Converse translation", "SigV4 signing",
                      "Converse -> OpenAI response translation"]),
        "litellm": LiteLLM("litellm", "LiteLLM proxy",
                           features=["master key", "1 uvicorn worker", "no database",
                                     "telemetry off, local cost map"]),
        "portkey": Portkey("portkey", "Portkey gateway",
                           features=["provider + custom host by headers", "node, 1 process"]),
    }


# ---- scenarios ------------------------------------------------------------------------------------

@dataclass
class Scenario:
    name: str
    what: str
    mode: str = "closed"
    concurrency: int = 1
    stream: bool = False
    rate: float | None = None


def scenarios(rate: float) -> list[Scenario]:
    return [
        Scenario("chat_c1", "chat, 2 KB body, 1 connection", concurrency=1),
        Scenario("chat_c16", "chat, 16 connections", concurrency=16),
        Scenario("chat_c64", "chat, 64 connections", concurrency=64),
        Scenario("stream_c16", "streamed chat, 16 connections", concurrency=16, stream=True),
        Scenario(f"rate_{int(rate)}", f"chat at a fixed {int(rate)} req/s (open loop, up to 64 "
                 "connections)", mode="open", concurrency=64, rate=rate),
    ]


def probe(target: Target) -> str | None:
    """A chat must succeed before anything is measured (else TargetError); returns why a
    streamed chat fails, or None when it works (the streaming scenario is then skipped)."""
    def chat() -> bool:
        status, body = post(target.url("/v1/chat/completions"), CHAT_BODY.read_bytes(),
                            target.headers)
        if status != 200 or b"usage" not in body:
            raise TargetError(f"probe chat: HTTP {status}: {body[:300]!r}")
        return True
    # Tollgate may still be fetching its provider credentials just after Envoy is ready.
    harness.wait_until(chat, 20, f"a first chat through {target.label}", interval=0.2)
    status, body = post(target.url("/v1/chat/completions"), STREAM_BODY.read_bytes(),
                        target.headers)
    if status != 200 or b"[DONE]" not in body:
        return f"streamed chat: HTTP {status}: {body[-300:].decode(errors='replace')}"
    return None


def run_load(target: Target, mock: Mock, sc: Scenario, warmup: float,
             duration: float) -> dict[str, Any]:
    argv = [bench_bin("bench-load"), "--url", target.url("/v1/chat/completions"),
            "--body-file", STREAM_BODY if sc.stream else CHAT_BODY,
            "--mode", sc.mode, "--concurrency", sc.concurrency,
            "--warmup", warmup, "--duration", duration, "--timeout", 30,
            "--expect", "[DONE]" if sc.stream else "usage"]
    for name, value in target.headers.items():
        argv += ["--header", f"{name}: {value}"]
    if sc.stream:
        argv.append("--stream")
    if sc.rate:
        argv += ["--rate", sc.rate]
    pids = target.measured_pids()
    side = target.side_pids()
    marks: dict[str, tuple[float, dict[str, float]]] = {}
    stderr_lines: list[str] = []

    proc = subprocess.Popen(pinned(LOAD_CPU, argv), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # Everything else of ours, to tell how busy the machine was with other work.
    ours = sorted(set(pids) | {p for v in side.values() for p in v} | {proc.pid}
                  | ({mock.proc.pid} if mock.proc.pid else set()))

    def sample() -> tuple[float, dict[str, float]]:
        return cpu_seconds(pids), {**{k: cpu_seconds(v) for k, v in side.items()},
                                   "_ours": cpu_seconds(ours), "_busy": machine_busy_seconds()}

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.strip()
            if line in ("BENCH WARMUP_DONE", "BENCH MEASURE_END"):
                marks[line] = sample()
            elif line:
                stderr_lines.append(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    # stdout here, stderr in the reader thread (communicate() would read both).
    killer = threading.Timer(warmup + duration + 60, proc.kill)
    killer.start()
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait()
    finally:
        killer.cancel()
    reader.join(5)
    if proc.returncode != 0:
        raise TargetError(f"bench-load failed or timed out ({sc.name}): {' | '.join(stderr_lines[-5:])}")
    result = json.loads(out)
    start, end = marks.get("BENCH WARMUP_DONE"), marks.get("BENCH MEASURE_END")
    if start and end and result["completed_in_window"]:
        # CPU spent in the window over the answers completed in it.
        n = result["completed_in_window"]
        result["cpu_us_per_req"] = round((end[0] - start[0]) / n * 1e6, 1)
        result["cpu_util"] = round((end[0] - start[0]) / duration, 3)
        result["side_cpu_us_per_req"] = {k: round((end[1][k] - start[1][k]) / n * 1e6, 1)
                                         for k in end[1] if not k.startswith("_")}
        # CPU busy with work that is none of ours (other builds, tests...), in CPUs.
        other = (end[1]["_busy"] - start[1]["_busy"]) - (end[1]["_ours"] - start[1]["_ours"])
        result["other_cpu_load"] = round(max(0.0, other) / duration, 2)
    result["rss_mb"] = round(rss_bytes(pids) / 2**20, 1)
    result["side_rss_mb"] = {k: round(rss_bytes(v) / 2**20, 1) for k, v in side.items()}
    if sc.rate:
        result["saturated"] = result["rps"] < 0.95 * sc.rate
    return result


# ---- report ---------------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def table(report: dict[str, Any]) -> str:
    lines = []
    for sc in report["scenarios"]:
        name = sc["name"]
        rows = [(t, t_res["scenarios"].get(name)) for t, t_res in report["targets"].items()]
        base = {k: (r or {}) for k, r in rows}
        env_r, floor_r = base.get("envoy", {}), base.get("floor", {})
        stream = sc["stream"]
        lines.append("")
        lines.append(f"== {name}: {sc['what']}")
        head = (f"{'target':<10} {'req/s':>9} {'p50 µs':>9} {'p90 µs':>9} {'p99 µs':>9}")
        if stream:
            head += f" {'ttfb50':>8} {'ttfb99':>8}"
        head += (f" {'err':>5} {'cpu µs/rq':>9} {'RSS MB':>7} {'other':>5} | {'rps/env':>7} {'rps/flr':>7}"
                 f" {'p50-env':>8} {'p99/env':>7} {'p50/flr':>7}")
        lines.append(head)
        for tname, r in rows:
            status = report["targets"][tname]["status"]
            if r is None:
                why = report["targets"][tname].get("scenario_errors", {}).get(name)
                lines.append(f"{tname:<10} {'failed: ' + why[:150] if why else status}")
                continue
            lat = r.get("latency_us") or {}
            row = (f"{tname:<10} {fmt(r['rps']):>9} {fmt(lat.get('p50'), 1):>9} "
                   f"{fmt(lat.get('p90'), 1):>9} {fmt(lat.get('p99'), 1):>9}")
            if stream:
                tt = r.get("ttfb_us") or {}
                row += f" {fmt(tt.get('p50'), 0):>8} {fmt(tt.get('p99'), 0):>8}"
            env_lat = env_r.get("latency_us") or {}
            floor_lat = floor_r.get("latency_us") or {}
            over = (f"{lat['p50'] - env_lat['p50']:+.1f}" if lat.get("p50") and env_lat.get("p50")
                    else "-")
            sat = "*" if r.get("saturated") else ""
            row += (f" {fmt(r['errors']):>5} {fmt(r.get('cpu_us_per_req'), 1):>9}"
                    f" {fmt(r.get('rss_mb'), 0):>7} {fmt(r.get('other_cpu_load'), 2):>5}"
                    f" | {ratio(r['rps'], env_r.get('rps')):>7}"
                    f" {ratio(r['rps'], floor_r.get('rps')):>7} {over:>8}"
                    f" {ratio(lat.get('p99'), env_lat.get('p99')):>7}"
                    f" {ratio(lat.get('p50'), floor_lat.get('p50')):>7}{sat}")
            side = r.get("side_cpu_us_per_req") or {}
            if side:
                row += "  (" + ", ".join(f"{k}: {v} cpu µs/rq, {r['side_rss_mb'].get(k)} MB"
                                         for k, v in side.items()) + ")"
            lines.append(row)
    failed = [(t, r) for t, r in report["targets"].items() if r["status"] != "ok"]
    if failed:
        lines.append("")
        for t, r in failed:
            lines.append(f"{t}: {r['status']}: {r.get('error', '')[:400]}")
    lines.append("")
    lines.append("floor's CPU and RSS are the mock's own. `*`: the target could not keep the "
                 "requested rate (saturated). other: CPUs busy with work not ours during the "
                 "window (other builds or tests); above ~0.1 the figures of that row are noisy.")
    noisy = sorted({f"{t}/{n}" for t, r in report["targets"].items()
                    for n, x in r["scenarios"].items() if (x.get("other_cpu_load") or 0) > 0.1})
    if noisy:
        lines.append("WARNING: the machine was busy with other work during: " + ", ".join(noisy))
    return "\n".join(lines)


# ---- main -----------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="short warm-up and duration, for a smoke run (< 2 minutes)")
    parser.add_argument("--targets", nargs="+", choices=ALL_TARGETS, default=list(ALL_TARGETS))
    parser.add_argument("--duration", type=float, help="seconds measured per scenario "
                        "(default 10, quick 1.5)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per scenario "
                        "(default 3, quick 0.5)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="request rate of the fixed-rate scenario (default 500/s)")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--chunk-delay-us", type=int, default=1000,
                        help="mock's delay between streamed chunks (default 1000 µs)")
    args = parser.parse_args()
    duration = args.duration or (1.5 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 3.0)

    for name in ("bench-mock", "bench-load"):
        if not bench_bin(name).exists():
            log(f"{bench_bin(name)} is missing: cargo build --release -p tollgate-bench")
            return 2
    if os.cpu_count() and os.cpu_count() < 2:
        log("warning: fewer than 2 CPUs: the load generator and the targets share one core")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_dir = BENCH / "results"
    work = results_dir / f"{stamp}-logs"
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    scs = scenarios(args.rate)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "options": {"quick": args.quick, "duration_s": duration, "warmup_s": warmup,
                    "rate": args.rate, "stream_chunks": args.chunks,
                    "chunk_delay_us": args.chunk_delay_us,
                    "request_bytes": CHAT_BODY.stat().st_size,
                    "envoy_concurrency": 1},
        "scenarios": [vars(s) for s in scs],
        "targets": {},
    }
    mock = Mock(work, args.chunks, args.chunk_delay_us).start()
    all_targets = make_targets()
    try:
        for tname in args.targets:
            target = all_targets[tname]
            entry: dict[str, Any] = {"label": target.label, "features": target.features,
                                     "status": "ok", "scenarios": {}}
            report["targets"][tname] = entry
            t0 = time.monotonic()
            try:
                target.install(work)
            except (TargetError, OSError, subprocess.SubprocessError) as err:
                entry.update(status="not installed", error=str(err))
                log(f"==> {tname}: NOT INSTALLED: {err}")
                continue
            entry["version"] = target.version
            log(f"==> {tname} ({target.label} {target.version}): starting")
            try:
                target.start(work, mock)
                stream_error = probe(target)
                entry["startup_s"] = round(time.monotonic() - t0, 1)
                for sc in scs:
                    if sc.stream and stream_error:
                        entry.setdefault("scenario_errors", {})[sc.name] = stream_error
                        log(f"    {sc.name:<11} FAILED: {stream_error}")
                        continue
                    res = run_load(target, mock, sc, warmup, duration)
                    entry["scenarios"][sc.name] = res
                    lat = res.get("latency_us") or {}
                    log(f"    {sc.name:<11} {res['rps']:>10,.0f} req/s  p50 {lat.get('p50')} µs"
                        f"  p99 {lat.get('p99')} µs  errors {res['errors']}"
                        f"  cpu {res.get('cpu_us_per_req')} µs/req"
                        f"  other load {res.get('other_cpu_load')}")
            except (TargetError, harness.StartupError, TimeoutError, OSError) as err:
                entry.update(status="failed", error=f"{err}\n{target.logs()}"[-3000:])
                log(f"==> {tname}: FAILED: {str(err)[:2000]}")
            finally:
                target.stop()
                entry["total_s"] = round(time.monotonic() - t0, 1)
    finally:
        mock.stop()
    report["elapsed_s"] = round(time.monotonic() - began, 1)
    out = results_dir / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    print(f"\nmachine: {report['machine']['cpus']} CPUs ({report['machine']['cpu_model']}); "
          f"targets on CPU {TARGET_CPU}, load generator + mock on CPU {LOAD_CPU}; "
          f"warm-up {warmup}s, measured {duration}s per scenario; run took "
          f"{report['elapsed_s']:.0f}s\nresults: {out}\nlogs: {work}")
    return 0 if all(t["status"] == "ok" for t in report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
