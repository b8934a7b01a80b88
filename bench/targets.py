"""The targets: what is measured (the mock alone, bare Envoy, Tollgate, Tollgate to Bedrock,
LiteLLM, Portkey), each installed, started and stopped here; and the shared mock provider."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (BENCH, LITELLM_VERSION, LOAD_CPU, MODEL, PORTKEY_VERSION, TARGET_CPU,
                    bench_bin, get_status, harness, log, pinned)
from procstat import process_tree


# `BENCH_ENVOY_WRAP="valgrind --tool=callgrind ..."` runs Envoy under a wrapper (bench/instructions.py:
# instruction counts per request), with longer start-up timeouts.
ENVOY_WRAP = shlex.split(os.environ.get("BENCH_ENVOY_WRAP", ""))
WRAP_SLOWDOWN = 20 if ENVOY_WRAP else 1


def wrapped(argv: list[Any]) -> list[Any]:
    """Envoy's argv under ENVOY_WRAP: the pip package's `envoy` is a Python launcher that execs
    the real binary, which a wrapper must be given itself."""
    if not ENVOY_WRAP:
        return argv
    real = Path(str(argv[0])).resolve().parent.parent / "lib"
    binaries = list(real.glob("python3*/site-packages/envoy/_bin/envoy"))
    return [*ENVOY_WRAP, binaries[0] if binaries else argv[0], *argv[1:]]


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


# Envoy with the routing features Tollgate's configuration uses, and none of its filters: the
# retry policy (the router buffers the body to replay it), an upstream HTTP filter chain
# (upstream_codec only), outlier detection, circuit breakers, endpoint metadata and the route's
# header removal. Tollgate minus this is the cost of the two wasm filters themselves.
ENVOY_ROUTING = """\
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
          stream_idle_timeout: 300s
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                request_headers_to_remove: [x-tollgate-cluster]
                route:
                  cluster: mock
                  timeout: 600s
                  retry_policy:
                    retry_on: connect-failure,reset,retriable-status-codes
                    retriable_status_codes: [429, 500, 503, 504]
                    num_retries: 2
                    retry_priority:
                      name: envoy.retry_priorities.previous_priorities
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig
                        update_frequency: 1
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.previous_hosts
                      typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}
                    host_selection_retry_max_attempts: 3
                    retry_back_off: {base_interval: 0.1s, max_interval: 2s}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: mock
    connect_timeout: 5s
    type: STATIC
    per_connection_buffer_limit_bytes: 8388608
    circuit_breakers:
      thresholds: [{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000, max_retries: 1000}]
    outlier_detection: {consecutive_5xx: 5, base_ejection_time: 30s, max_ejection_percent: 100}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http_protocol_options: {}}
        http_filters:
        - name: envoy.filters.http.upstream_codec
          typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec}
    load_assignment:
      cluster_name: mock
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(mock_port)d}}}
          metadata: {filter_metadata: {tollgate: {deployment: '{"id":"m/0","provider":"openai"}'}}}
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

    config = BARE_ENVOY

    def start(self, work: Path, mock: Mock) -> None:
        self.port = harness.free_port()
        admin = harness.free_port()
        bootstrap = work / f"{self.name}.yaml"
        bootstrap.write_text(self.config % {"port": self.port, "mock_port": mock.port,
                                            "admin_port": admin})
        self.run("bare-envoy", [*wrapped([harness.envoy_bin()]), "-c", bootstrap, "--concurrency", "1",
                                "--use-dynamic-base-id", "--log-level", "warn"], work)
        self.wait_http(f"http://127.0.0.1:{admin}/ready", 30 * WRAP_SLOWDOWN)
        self.headers = {"Authorization": f"Bearer {mock.api_key}"}


class EnvoyRouting(BareEnvoy):
    config = ENVOY_ROUTING


def _wasm_filter(name: str, path: Path, indent: str, configuration: str = "") -> str:
    lines = [
        f"- name: {name}",
        "  typed_config:",
        '    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm',
        "    config:",
        f"      name: {name}",
        # As Tollgate's filters: a filter holding the headers gets the body (otherwise Envoy
        # stops all iteration and waits for a resume that never comes).
        "      allow_on_headers_stop_iteration: true",
        f"      vm_config: {{vm_id: {name}, runtime: envoy.wasm.runtime.v8, "
        f"code: {{local: {{filename: {path}}}}}}}",
    ]
    if configuration:
        lines.append(f'      configuration: {{"@type": type.googleapis.com/google.protobuf.StringValue, value: "{configuration}"}}')
    return "\n".join(indent + line for line in lines) + "\n"


class EnvoyWasmNoop(BareEnvoy):
    """envoy-routing plus two no-op wasm filters where Tollgate has its two (downstream, and
    upstream before the codec), each entered for the request and response headers and bodies.

    `calls`, `up_calls`: host calls the downstream and the upstream one make on every request
    (`[phase.]kind=count,...`, see bench/noop-filter; `bench/crossing_costs.py` measures what
    each kind costs)."""

    calls = ""
    up_calls = ""

    def install(self, work: Path) -> None:
        super().install(work)
        wasm = harness.wasm_dir() / "tollgate_noop_filter.wasm"
        if not wasm.exists():
            raise TargetError(f"missing {wasm} (run `make bench`)")
        down = "\n          http_filters:\n"  # the HCM's (exact indentation)
        up = "\n        http_filters:\n"  # the cluster's upstream filters
        config = ENVOY_ROUTING.replace(down, down + _wasm_filter("noop_down", wasm, "          ", self.calls), 1)
        self.config = config.replace(up, up + _wasm_filter("noop_up", wasm, "        ", self.up_calls), 1)


class EnvoyWasmCrossings(EnvoyWasmNoop):
    """The two no-op filters making the host calls Tollgate's make for the bench's chat (a key,
    metering on, the model's id rewritten), in the same callbacks, with none of their code: what
    Tollgate's crossings cost Envoy by themselves (wasm-tests/test_crossings.py counts them; in
    Envoy the router writes `:authority` and drops `accept-encoding`, two calls fewer than
    there)."""

    # Gateway: the headers in one call, the key table's version (written empty: nothing comes
    # back); the body, the cluster header, the request state.
    calls = ("headers.get_headers=1,headers.get_shared_absent=1,"
             "body.get_body=1,body.set_header=1,body.set_property=1")
    # Provider: the deployment and the request state; at the body's end the body, the headers,
    # the clock, the credential, content-length and the path, the body rewritten; the status;
    # the answer read for its usage; the clock at the end.
    up_calls = ("headers.get_property=2,"
                "body.get_body=1,body.get_headers=1,body.now=1,body.set_header=3,body.set_body=1,"
                "response_headers.get_status=1,response_body.get_body=1,response_body.now=1")


class EnvoyWasmCrossingsQuotas(EnvoyWasmCrossings):
    """`envoy-wasm-crossings` plus the host calls `tollgate-quotas`' three quotas add (a budget,
    an RPM and a TPM quota on the key, one shared-data group): what the quota path's crossings
    cost by themselves."""

    # Gateway, at admission: the clock, the group's slots read and written with
    # compare-and-swap (the reservations of ended requests are given back in that same
    # compare-and-swap while the quotas are far from spent, as the bench's are).
    calls = EnvoyWasmCrossings.calls + ",body.now=1,body.get_shared_data=1,body.set_shared_data=1"
    # Provider: six rate-limit headers on the answer; no clock read when the attempt goes out
    # (the first attempt starts at the gateway's admission, whose clock read is handed on). The
    # attempt's usage goes to the worker's tally in the provider VM's memory, written on its
    # tick (while the quotas are roomy, as the bench's are): no host call per request (was one
    # blind write at the attempt's end until the ninth session).
    up_calls = (EnvoyWasmCrossings.up_calls.replace("body.now=1,", "")
                + ",response_headers.set_header=6")


class Tollgate(Target):
    """Control plane + Envoy (one worker) with the gateway and provider filters."""

    def install(self, work: Path) -> None:
        missing = harness.missing_artifacts()
        if missing:
            raise TargetError("missing: " + "; ".join(missing) + " (run `make build`)")
        self.version = envoy_version()

    bedrock = False  # True: the model's deployment is Bedrock (OpenAI -> Converse + SigV4)
    metering = True  # False: `settings.metering: false` (what metering costs, issue 12)
    quotas = False  # True: the bench key has a budget, a request and a token quota (never reached)
    # True: the bench model is priced (so every answer's cost is computed and, on a non-streamed
    # one, sent as `x-tollgate-cost-usd`); a budget needs a price, so `quotas` implies it.
    priced = False
    # Virtual keys created (in bulk) besides the bench key before Envoy starts (`run.py --keys`):
    # the request path with a large key table.
    extra_keys = 0

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
                         "num_retries": 2,
                         # the bench mock listens on 127.0.0.1 (refused by default)
                         "egress": {"allow_loopback": True}, "metering": self.metering},
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
        if self.priced or self.quotas:
            # The model priced so that a budget reserves and settles real amounts.
            dep = self.deployment(mock)
            price = {"provider": dep["provider"], "model": dep["model"], "input": "0.15", "output": "0.60",
                     "as_of": "2026-12-05", "source": "bench"}
            p = harness.http("POST", f"{cp.url}/admin/v1/prices", headers={"Authorization": f"Bearer {admin_key}"}, json=price)
            if p.status_code != 201:
                raise TargetError(f"adding a price: {p.status_code} {p.text[:300]}")
        if self.quotas:
            # Issue 13's case: a key with a budget, an RPM and a TPM limit (never reached).
            for spec in ({"metric": "cost_usd", "limit_usd": "1000000"},
                         {"metric": "requests", "window_seconds": 60, "limit": 10**12},
                         {"metric": "total_tokens", "window_seconds": 60, "limit": 10**15}):
                q = harness.http("POST", f"{cp.url}/admin/v1/quotas", headers={"Authorization": f"Bearer {admin_key}"},
                                 json={**spec, "key_id": resp.json()["id"]})
                if q.status_code != 201:
                    raise TargetError(f"creating a quota: {q.status_code} {q.text[:300]}")
        made = 0
        while made < self.extra_keys:
            n = min(10_000, self.extra_keys - made)
            resp = harness.http("POST", f"{cp.url}/admin/v1/keys/bulk", timeout=600,
                                headers={"Authorization": f"Bearer {admin_key}"},
                                json={"keys": [{"name": f"bench-{made + i}"} for i in range(n)]})
            if resp.status_code != 201:
                raise TargetError(f"creating keys in bulk: {resp.status_code} {resp.text[:300]}")
            made += n
        envoy = harness.Envoy(work, cp, token, f"tollgate-bench-{secrets.token_hex(4)}")
        argv = wrapped(list(envoy.argv))
        argv[argv.index("--concurrency") + 1] = "1"
        envoy.argv = pinned(TARGET_CPU, argv)
        envoy.start()
        self.procs.insert(0, envoy)  # measured_pids: the first process is Envoy
        envoy.wait_ready(30 * WRAP_SLOWDOWN)
        self.headers = {"Authorization": f"Bearer {key}"}
        self._cp = cp
        # The key table is in once the bench key is no longer answered 503 keys_not_loaded.
        models = f"http://127.0.0.1:{self.port}/v1/models"
        harness.wait_until(lambda: harness.http("GET", models, headers=self.headers, timeout=5).status_code == 200,
                           60, "the gateway to load its key table")

    def side_pids(self) -> dict[str, list[int]]:
        return {"control_plane": process_tree(self._cp.pid) if self._cp.pid else []}


class TollgateNoMetering(Tollgate):
    """Tollgate with `settings.metering: false`: no usage read, no records (to measure their cost)."""

    metering = False


class TollgatePriced(Tollgate):
    """Tollgate with the bench model priced and no quota: `tollgate-quotas`' deployment with the
    same key without quotas (the price table is metering's; a budget needs it)."""

    priced = True


class TollgateQuotas(Tollgate):
    """Tollgate with a budget, a per-minute request quota and a per-minute token quota on the
    bench key (leased from the control plane's quota authority; never reached)."""

    quotas = True


class TollgateBedrock(Tollgate):
    """Tollgate with the model on Bedrock: each request translated to Converse and SigV4-signed,
    the response translated back (non-streaming scenarios; the fast mock has no ConverseStream)."""

    bedrock = True


class TollgateBedrockPriced(TollgateBedrock):
    """`tollgate-bedrock` with the model priced: `tollgate-bedrock-quotas` without its quotas."""

    priced = True


class TollgateBedrockQuotas(TollgateBedrock):
    """`tollgate-quotas`' three quotas with the model on Bedrock, whose answers carry no
    rate-limit headers of their own: the provider filter adds the six instead of replacing them."""

    quotas = True


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
        "envoy-routing": EnvoyRouting("envoy-routing", "Envoy, Tollgate's routing, no filters",
                                      features=["retry policy (body buffered for replay)",
                                                "upstream filter chain (codec only)",
                                                "outlier detection", "--concurrency 1"]),
        "envoy-wasm-noop": EnvoyWasmNoop("envoy-wasm-noop",
                                         "Envoy, Tollgate's routing, two no-op wasm filters",
                                         features=["as envoy-routing",
                                                   "a no-op wasm filter downstream and one "
                                                   "upstream (V8; entered for request and "
                                                   "response headers and bodies)"]),
        "envoy-wasm-crossings": EnvoyWasmCrossings(
            "envoy-wasm-crossings", "Envoy, two no-op wasm filters making Tollgate's host calls",
            features=["as envoy-wasm-noop", "the host calls Tollgate's filters make for a chat, "
                      "in the same callbacks, with none of their code"]),
        "envoy-wasm-crossings-quotas": EnvoyWasmCrossingsQuotas(
            "envoy-wasm-crossings-quotas", "Envoy, two no-op wasm filters making Tollgate's host calls with 3 quotas",
            features=["as envoy-wasm-crossings", "plus the host calls three quotas add"]),
        "tollgate": Tollgate("tollgate", "Tollgate",
                             features=["virtual-key auth (SHA-256, allowed-model list)",
                                       "request validation (body parse)", "model routing",
                                       "provider rewrite + provider key injection",
                                       "retries/failover policy", "usage records (metering)",
                                       "Envoy --concurrency 1"]),
        "tollgate-nometer": TollgateNoMetering(
            "tollgate-nometer", "Tollgate, metering off",
            features=["as Tollgate", "settings.metering: false (no usage read, no records)"]),
        "tollgate-priced": TollgatePriced(
            "tollgate-priced", "Tollgate, model priced",
            features=["as Tollgate", "the model priced (cost computed, x-tollgate-cost-usd on non-streamed answers)"]),
        "tollgate-quotas": TollgateQuotas(
            "tollgate-quotas", "Tollgate, key with a budget, RPM and TPM quotas",
            features=["as Tollgate, model priced", "a budget, a requests/minute and a tokens/minute quota on the key (never reached)"]),
        "tollgate-bedrock": TollgateBedrock(
            "tollgate-bedrock", "Tollgate, OpenAI client -> Bedrock",
            features=["as Tollgate", "OpenAI -> Converse translation", "SigV4 signing",
                      "Converse -> OpenAI response translation"]),
        "tollgate-bedrock-priced": TollgateBedrockPriced(
            "tollgate-bedrock-priced", "Tollgate, OpenAI client -> Bedrock, model priced",
            features=["as Tollgate, OpenAI client -> Bedrock", "the model priced"]),
        "tollgate-bedrock-quotas": TollgateBedrockQuotas(
            "tollgate-bedrock-quotas", "Tollgate, OpenAI client -> Bedrock, key with a budget, RPM and TPM quotas",
            features=["as Tollgate, OpenAI client -> Bedrock, model priced", "the three quotas of tollgate-quotas (rate-limit headers added)"]),
        "litellm": LiteLLM("litellm", "LiteLLM proxy",
                           features=["master key", "1 uvicorn worker", "no database",
                                     "telemetry off, local cost map"]),
        "portkey": Portkey("portkey", "Portkey gateway",
                           features=["provider + custom host by headers", "node, 1 process"]),
    }
