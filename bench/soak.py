#!/usr/bin/env python3
"""`make soak`: Tollgate under steady mixed load for a long time, watching for leaks.

200 concurrent clients (keep-alive HTTP/1.1, asyncio) send chat completions for SOAK_SECONDS
(default 600): 45% streamed, 45% not, 10% streamed and aborted by the client after the first
bytes. The mock (`bench-mock --error-every 20`) answers 5% of them with a 500 (Envoy retries
them). Envoy's RSS and memory gauges are sampled every 5 s.

Criteria (printed as one JSON line; exit status 1 if one fails):
- Envoy RSS slope over the last 80% of the run (the last 8 minutes of 10) at most 1% per 5
  minutes, relative to the mean RSS of that window (least-squares fit);
- wasm memory flat: the same slope rule on Envoy's `wasm`-related memory gauges if Envoy has
  any (Envoy 1.40 reports none per VM; `server.memory_allocated` is reported beside);
- upstream connections back to their baseline (`upstream_cx_active` of the model's cluster)
  within 90 s after the load (the cluster's idle timeout is 60 s);
- no client saw anything but the expected answers (a 2xx with content, a complete stream, or,
  when all three attempts met a fault, the provider's 500 as an OpenAI-format error).

Usage: SOAK_SECONDS=60 .venv/bin/python bench/soak.py   (a smoke run)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, bench_bin, harness, log  # noqa: E402

CONCURRENCY = int(os.environ.get("SOAK_CONCURRENCY", "200"))
DURATION = float(os.environ.get("SOAK_SECONDS", "600"))
SAMPLE_EVERY = 5.0
ABORT_SHARE, STREAM_SHARE = 0.10, 0.45
MODEL = "soak-model"


class BenchMock:
    """bench-mock with upstream faults, in the shape GatewayStack expects of a mock."""

    def __init__(self, work: Path) -> None:
        self.api_key = "sk-soak-" + os.urandom(12).hex()
        self.proc = harness.ManagedProcess(
            "bench-mock", [bench_bin("bench-mock"), "--api-key", self.api_key, "--chunks", "20",
                           "--chunk-delay-us", "10000", "--error-every", "20"],
            dict(os.environ), work)
        self.port = 0

    def start(self) -> None:
        if not self.proc.alive:
            self.proc.start()
            self.port = int(self.proc.wait_for_stdout(re.compile(r"^READY port=(\d+)$", re.M), 10)[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.proc.stop()


def envoy_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def envoy_stats(gw: Any) -> dict[str, int]:
    text = harness.http("GET", f"{gw.envoy_admin_url}/stats?format=json", timeout=10).json()
    return {s["name"]: s["value"] for s in text.get("stats", []) if "value" in s}


def slope_pct_per_5min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, v), as % of the mean per 300 s."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0 or mv == 0:
        return 0.0
    slope = sum((t - mt) * (v - mv) for t, v in samples) / var
    return slope * 300 / mv * 100


def cluster_cx_active(stats: dict[str, int]) -> int:
    return sum(v for k, v in stats.items()
               if k.startswith("cluster.tg_model_") and k.endswith(".upstream_cx_active"))


class Counts:
    def __init__(self) -> None:
        self.by_kind: dict[str, int] = {"stream": 0, "plain": 0, "abort": 0}
        self.status: dict[str, int] = {}
        self.bad: list[str] = []
        self.provider_errors = 0

    def bad_answer(self, what: str) -> None:
        if len(self.bad) < 20:
            self.bad.append(what)
        self.status["bad"] = self.status.get("bad", 0) + 1


async def read_response(reader: asyncio.StreamReader, abort: bool) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
    if abort:
        return status, b""
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def worker(port: int, key: str, deadline: float, counts: Counts, seed: int) -> None:
    rnd = random.Random(seed)
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.monotonic() < deadline:
        r = rnd.random()
        kind = "abort" if r < ABORT_SHARE else "stream" if r < ABORT_SHARE + STREAM_SHARE else "plain"
        body = json.dumps({"model": MODEL, "stream": kind != "plain",
                           "messages": [{"role": "user", "content": f"soak {rnd.random()}"}]}).encode()
        req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = conn
            writer.write(req)
            await writer.drain()
            status, answer = await asyncio.wait_for(read_response(reader, kind == "abort"), 60)
            counts.by_kind[kind] += 1
            counts.status[str(status)] = counts.status.get(str(status), 0) + 1
            if kind == "abort":
                # the client goes away mid-stream, after the head and maybe some chunks
                if rnd.random() < 0.5:
                    await asyncio.wait_for(reader.read(200), 5)
                writer.transport.abort()
                conn = None
            elif status >= 500 and b'"error"' in answer and b'"type"' in answer:
                # every attempt met a fault (1 in 20^3): the provider's error, in OpenAI format
                counts.provider_errors += 1
            elif status != 200:
                counts.bad_answer(f"{kind} {status} {answer[:200]!r}")
            elif kind == "stream" and b"data: [DONE]" not in answer:
                counts.bad_answer(f"stream without [DONE]: {answer[-200:]!r}")
            elif kind == "plain" and b'"content"' not in answer:
                counts.bad_answer(f"plain without content: {answer[:200]!r}")
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError,
                ValueError, IndexError) as err:
            counts.bad_answer(f"{kind} {type(err).__name__}: {err}")
            if conn is not None:
                conn[1].transport.abort()
            conn = None
    if conn is not None:
        conn[1].close()


async def sampler(gw: Any, pid: int, start: float, deadline: float,
                  rss: list[tuple[float, float]], wasm: dict[str, list[tuple[float, float]]],
                  allocated: list[tuple[float, float]]) -> None:
    while time.monotonic() < deadline:
        t = time.monotonic() - start
        rss.append((t, envoy_rss(pid)))
        stats = await asyncio.to_thread(envoy_stats, gw)
        allocated.append((t, stats.get("server.memory_allocated", 0)))
        for name, value in stats.items():
            if "wasm" in name and ("memory" in name or "bytes" in name):
                wasm.setdefault(name, []).append((t, value))
        await asyncio.sleep(SAMPLE_EVERY)


async def load(gw: Any, key: str, pid: int) -> dict[str, Any]:
    counts = Counts()
    rss: list[tuple[float, float]] = []
    wasm: dict[str, list[tuple[float, float]]] = {}
    allocated: list[tuple[float, float]] = []
    start = time.monotonic()
    deadline = start + DURATION
    tasks = [asyncio.create_task(worker(gw.gateway_port, key, deadline, counts, i))
             for i in range(CONCURRENCY)]
    tasks.append(asyncio.create_task(sampler(gw, pid, start, deadline, rss, wasm, allocated)))
    await asyncio.gather(*tasks)
    window = DURATION * 0.2  # the first 2 of 10 minutes are warm-up
    tail = [s for s in rss if s[0] >= window]
    wasm_slopes = {n: slope_pct_per_5min([s for s in v if s[0] >= window]) for n, v in wasm.items()}
    return {
        "counts": counts,
        "rss_mb_first": round(rss[0][1] / 2**20, 1) if rss else None,
        "rss_mb_window_start": round(tail[0][1] / 2**20, 1) if tail else None,
        "rss_mb_last": round(rss[-1][1] / 2**20, 1) if rss else None,
        "rss_slope_pct_per_5min": slope_pct_per_5min(tail),
        "wasm_slopes": wasm_slopes,
        "allocated_slope_pct_per_5min": slope_pct_per_5min([s for s in allocated if s[0] >= window]),
        "samples": len(rss),
    }


def main() -> int:
    missing = harness.missing_artifacts()
    if missing or not bench_bin("bench-mock").exists():
        log("soak: missing " + "; ".join(missing or ["bench-mock (make bench-tools)"]))
        return 2
    work = REPO / "bench" / "results" / f"soak-{time.strftime('%Y%m%dT%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    mock = BenchMock(work)
    config = {"settings": {"egress": {"allow_loopback": True}},
              "credentials": {"mock": {"api_key_env": "SOAK_MOCK_KEY"}},
              "models": [{"name": MODEL, "deployments": [
                  {"provider": "openai", "base_url": "{{MOCK_BASE_URL}}", "model": "mock-model-1",
                   "credential": "mock"}]}]}
    mock.start()
    gw = harness.GatewayStack(work, config, {"SOAK_MOCK_KEY": mock.api_key}, mock=mock)
    try:
        gw.start()
        gw.wait_chat_ready(MODEL, timeout=30)
        _, key = gw.create_key(name="soak")
        gw.wait_key_usable(key)
        assert gw.envoy is not None and gw.envoy.pid is not None
        baseline = cluster_cx_active(envoy_stats(gw))
        log(f"soak: {CONCURRENCY} clients for {DURATION:.0f}s (logs in {work})")
        result = asyncio.run(load(gw, key, gw.envoy.pid))
        after_load = cluster_cx_active(envoy_stats(gw))
        settle_start = time.monotonic()
        back = False
        while time.monotonic() - settle_start < 90:
            if cluster_cx_active(envoy_stats(gw)) <= baseline:
                back = True
                break
            time.sleep(1)
        settled_s = round(time.monotonic() - settle_start, 1)
        final = cluster_cx_active(envoy_stats(gw))
        envoy_alive = gw.envoy.alive
    finally:
        gw.stop()
    counts: Counts = result.pop("counts")
    total = sum(counts.by_kind.values())
    rss_ok = result["rss_slope_pct_per_5min"] is not None and result["rss_slope_pct_per_5min"] <= 1.0
    wasm_ok = all(s is None or s <= 1.0 for s in result["wasm_slopes"].values())
    figures = {
        "soak_seconds": DURATION, "concurrency": CONCURRENCY, "requests": total,
        "rps": round(total / DURATION, 1), "by_kind": counts.by_kind, "status": counts.status,
        "provider_errors_after_retries": counts.provider_errors,
        "bad_answers": counts.bad[:5],
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()
           if k != "wasm_slopes"},
        "wasm_memory": ({k: (round(v, 3) if v is not None else None)
                         for k, v in result["wasm_slopes"].items()}
                        or "Envoy reports no wasm memory gauge; server.memory_allocated above"),
        "upstream_cx_active": {"baseline": baseline, "after_load": after_load, "final": final,
                               "back_to_baseline": back, "settled_s": settled_s},
        "envoy_alive": envoy_alive,
    }
    figures["pass"] = bool(rss_ok and wasm_ok and back and envoy_alive and not counts.bad)
    print(json.dumps(figures), flush=True)
    return 0 if figures["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
