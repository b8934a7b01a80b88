#!/usr/bin/env python3
"""`make accuracy`: is the ledger exact under load with faults? (issue 12; issue 13 extends it)

Starts the real stack (tests/harness.py) with the control plane on PostgreSQL (a fresh database
on 127.0.0.1:5432), Envoy with 2 workers, and two mock providers behind one model: an OpenAI
deployment first and an Anthropic one to fail over to. Clients (threads) send a mix of whole and
streamed chats for `--seconds`; some streams are abandoned after their first bytes. Faults
during the run: bursts of 503s from the OpenAI mock (retries and failovers), Anthropic streams
cut by an `overloaded_error` mid-stream, and the control plane killed for a few seconds
(records wait in Envoy meanwhile).

Then every upstream call the mocks saw (request id and attempt, from the headers Envoy sent) is
looked up in the ledger (`usage_records`, read with psql): `ledger_lost` calls without a record,
`ledger_doubled` records without a call, `token_mismatches` records whose counts differ from the
usage the mock answered with (answers the mocks cut, or whose client went away, are estimated
and counted apart). Last, `ingest_records_per_s`: synthetic batches of 5,000 records posted to
the running control plane's ingestion endpoint. The last line printed is one JSON object.

    .venv/bin/python bench/accuracy.py [--seconds 40] [--clients 16]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import requests  # noqa: E402

import harness  # noqa: E402
from mocks.anthropic_mock import MockAnthropic  # noqa: E402
from mocks.openai_mock import MockOpenAI  # noqa: E402

PG = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-At"]
MODEL = "acc"


def psql(db: str, sql: str) -> str:
    return subprocess.run([*PG, "-d", db, "-c", sql], check=True, capture_output=True, text=True, timeout=120).stdout


def ledger_tokens(usage: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input, output, cache read, cache write) as the ledger keeps them, from the provider's
    own usage fields."""
    if "prompt_tokens" in usage:
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return usage["prompt_tokens"] - cached, usage["completion_tokens"], cached, 0
    return (usage["input_tokens"], usage["output_tokens"], usage.get("cache_read_input_tokens") or 0,
            usage.get("cache_creation_input_tokens") or 0)


class Load:
    def __init__(self, url: str, key: str, seconds: float, clients: int) -> None:
        self.url, self.key, self.seconds, self.clients = url, key, seconds, clients
        self.sent = self.errors = self.aborted = 0
        self.lock = threading.Lock()

    def client(self, n: int) -> None:
        rng = random.Random(n)
        session = requests.Session()
        headers = {"Authorization": f"Bearer {self.key}"}
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(rng.randint(3, 30)))
            stream = rng.random() < 0.5
            abort = stream and rng.random() < 0.15
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"{uuid.uuid4().hex} {words}"}],
                    "stream": stream}
            try:
                with session.post(f"{self.url}/chat/completions", json=body, headers=headers, stream=stream,
                                  timeout=30) as r:
                    if abort:
                        r.raw.read(16)  # the first bytes, then the connection is closed undrained
                        r.close()
                        with self.lock:
                            self.aborted += 1
                    else:
                        _ = r.content
                        if r.status_code != 200:
                            with self.lock:
                                self.errors += 1
            except (requests.RequestException, OSError):
                with self.lock:
                    self.errors += 1
                session = requests.Session()
            with self.lock:
                self.sent += 1

    def run(self) -> None:
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(self.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def faults(stop: threading.Event, openai: Any, anthropic: Any) -> None:
    """Every 2 s: a burst of 503s (retried, failed over) and a few Anthropic streams cut."""
    while not stop.wait(2.0):
        openai.set_faults(status=503, count=5)
        anthropic.set_faults(stream_error="overloaded_error", stream_error_count=2)


def ingest_rate(stack: Any, key_id: str, total: int = 100_000, per_batch: int = 5_000) -> float:
    now = int(time.time() * 1000)
    started = time.monotonic()
    for b in range(total // per_batch):
        records = [{"request_id": f"ingest-{uuid.uuid4().hex}", "attempt": 0, "at_ms": now, "key_id": key_id,
                    "model": MODEL, "provider": "openai", "provider_model": "gpt-4o-mini-2024-07-18", "status": 200,
                    "input_tokens": 812, "output_tokens": 233, "latency_ms": 420} for _ in range(per_batch)]
        r = requests.post(f"{stack.internal_url}/internal/v1/usage", json={"records": records},
                          headers={"Authorization": f"Bearer {stack.data_plane_token}"}, timeout=120)
        r.raise_for_status()
        assert r.json()["accepted"] == per_batch, r.text
    return total / (time.monotonic() - started)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--clients", type=int, default=16)
    args = ap.parse_args()
    harness.require_built()
    db = f"tollgate_accuracy_{uuid.uuid4().hex[:10]}"
    psql("test", f"CREATE DATABASE {db}")
    work = Path(tempfile.mkdtemp(prefix="tollgate-accuracy-"))
    env = {"TG_ACC_OPENAI": harness.random_secret("sk-"), "TG_ACC_ANTHROPIC": harness.random_secret("sk-ant-")}
    openai = MockOpenAI(api_key=env["TG_ACC_OPENAI"]).start()
    anthropic = MockAnthropic(api_key=env["TG_ACC_ANTHROPIC"]).start()
    config = {"credentials": {"o": {"api_key_env": "TG_ACC_OPENAI"}, "a": {"api_key_env": "TG_ACC_ANTHROPIC"}},
              "models": [{"name": MODEL, "deployments": [
                  {"provider": "openai", "base_url": openai.base_url, "model": "gpt-4o-mini-2024-07-18",
                   "credential": "o", "priority": 0},
                  {"provider": "anthropic", "base_url": anthropic.base_url, "model": "claude-3-5-haiku-20241022",
                   "credential": "a", "priority": 1}]}]}
    stack = harness.GatewayStack(work, config, env, database_url=f"postgres://postgres@127.0.0.1:5432/{db}")
    try:
        stack.start()
        stack.wait_chat_ready(MODEL)
        key_id, key = stack.create_key(name="accuracy")
        stack.wait_key_usable(key)
        for m in (openai, anthropic):
            m.clear_requests()
            m.usage_log.clear()
        print(f"load: {args.clients} clients for {args.seconds:.0f} s, faults every 2 s, control plane killed at "
              f"{args.seconds / 3:.0f} s for 5 s", file=sys.stderr, flush=True)
        load = Load(stack.base_url, key, args.seconds, args.clients)
        stop = threading.Event()
        chaos = threading.Thread(target=faults, args=(stop, openai, anthropic), daemon=True)
        chaos.start()
        runner = threading.Thread(target=load.run)
        runner.start()
        time.sleep(args.seconds / 3)
        assert stack.cp is not None
        stack.cp.kill()
        time.sleep(5)
        stack.cp.restart()
        runner.join()
        stop.set()
        openai.reset_faults()
        anthropic.reset_faults()
        calls: dict[tuple[str, int], str] = {}
        for name, m in (("openai", openai), ("anthropic", anthropic)):
            for r in m.requests:
                h = r["headers"]
                if "x-request-id" in h:
                    calls[(h["x-request-id"], int(h.get("x-envoy-attempt-count", "1")) - 1)] = name

        def ledger() -> dict[tuple[str, int], tuple[int, ...]]:
            out = {}
            for line in psql(db, "SELECT request_id, attempt, input_tokens, output_tokens, cache_read_tokens, "
                                 f"cache_write_tokens, estimated FROM usage_records WHERE key_id = '{key_id}'").splitlines():
                rid, attempt, *rest = line.split("|")
                out[(rid, int(attempt))] = tuple(int(v) for v in rest)
            return out

        print(f"load done: {load.sent} requests, {len(calls)} upstream calls; waiting for the ledger",
              file=sys.stderr, flush=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not set(calls) <= set(rows := ledger()):
            time.sleep(1)
        time.sleep(2)
        rows = ledger()
        rows_total = int(psql(db, f"SELECT count(*) FROM usage_records WHERE key_id = '{key_id}'").strip())
        lost = len(set(calls) - set(rows))
        doubled = len(set(rows) - set(calls)) + (rows_total - len(rows))
        mismatches = estimated = cut = 0
        for m in (openai, anthropic):
            for u in m.usage_log:
                row = rows.get((u["request_id"], u["attempt"]))
                if row is None:
                    continue
                if row[4]:
                    estimated += 1
                elif u.get("cut"):
                    cut += 1
                elif row[:4] != ledger_tokens(u["usage"]):
                    mismatches += 1
        ingest = ingest_rate(stack, "key_ingest_bench")
        result = {"requests": load.sent, "client_aborts": load.aborted, "client_errors": load.errors,
                  "upstream_calls": len(calls), "ledger_records": len(set(rows) & set(calls)), "ledger_lost": lost,
                  "ledger_doubled": doubled, "token_mismatches": mismatches, "estimated_records": estimated,
                  "cut_streams": cut, "retried_attempts": sum(1 for (_, a) in calls if a > 0),
                  "anthropic_calls": sum(1 for v in calls.values() if v == "anthropic"),
                  "ingest_records_per_s": round(ingest)}
        print("metering: " + json.dumps(result), file=sys.stderr, flush=True)
        FIGURES.update(result)
        return 0 if lost == 0 and doubled == 0 and mismatches == 0 else 1
    finally:
        stack.stop()
        openai.stop()
        anthropic.stop()
        subprocess.run([*PG, "-d", "test", "-c", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True, timeout=60)


FIGURES: dict[str, Any] = {}


def all_figures() -> int:
    """The metering figures, then the quota figures (bench/accuracy_quotas.py), as one JSON line."""
    code = main()
    import accuracy_quotas
    log_line = "quotas: two Envoys, two control planes on one PostgreSQL (about 4 minutes)"
    print(log_line, file=sys.stderr, flush=True)
    FIGURES.update(accuracy_quotas.figures())
    print(json.dumps(FIGURES), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(all_figures())
