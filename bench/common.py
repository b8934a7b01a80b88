"""Shared by the benchmark's modules: paths, pinning, the pinned CPUs, the request bodies, and
small loopback HTTP helpers. Importing it puts `tests/` on the path for the process harness."""

from __future__ import annotations

import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))

import harness  # noqa: E402,F401  (the process harness of the end-to-end tests)

LITELLM_VERSION = "1.106.12"  # newest whose [proxy] extra resolves on the package mirror
PORTKEY_VERSION = "1.15.2"
TARGET_CPU = "0"
LOAD_CPU = "1"
MODEL = "gpt-4o-mini"  # what every target is asked for; each maps it to the mock
CHAT_BODY = BENCH / "requests" / "chat-2k.json"
STREAM_BODY = BENCH / "requests" / "chat-2k-stream.json"
ALL_TARGETS = ("floor", "envoy", "envoy-routing", "envoy-wasm-noop", "envoy-wasm-crossings", "envoy-wasm-crossings-quotas", "tollgate", "tollgate-nometer", "tollgate-priced", "tollgate-quotas", "tollgate-bedrock", "litellm", "portkey")
# Measured only when named (`--targets`): the quota path on a Bedrock deployment, whose answers
# carry no rate-limit headers of their own (the provider filter adds its six instead of replacing).
MORE_TARGETS = ("tollgate-bedrock-priced", "tollgate-bedrock-quotas")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")


def bench_bin(name: str) -> Path:
    return target_dir() / "release" / name


def pinned(cpu: str, argv: list[Any]) -> list[str]:
    argv = [str(a) for a in argv]
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else argv


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
