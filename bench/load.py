"""The scenarios and the load runner: probe a started target, then drive `bench-load` against it
and sample the target's CPU and memory at the edges of the measurement window."""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

from common import CHAT_BODY, LOAD_CPU, STREAM_BODY, bench_bin, harness, pinned, post
from procstat import cpu_seconds, machine_busy_seconds, rss_bytes
from targets import Mock, Target, TargetError


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
