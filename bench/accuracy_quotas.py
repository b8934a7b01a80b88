#!/usr/bin/env python3
"""Quota accuracy (issue 13), run by `make accuracy` after the metering figures (bench/accuracy.py
merges these into its last JSON line). Real Envoys (2 workers each), two control planes on one
PostgreSQL database (each with its own Envoy), the OpenAI mock. Scenarios run side by side on
their own keys:

- rpm_one_envoy: 60 requests a minute on Envoy A alone, offered 180 a minute for one full
  aligned window: how many were admitted (goal: 60).
- rpm_two_envoys: L = 600 a minute over both Envoys, offered 2L from 200 client threads for two
  full aligned windows: admitted per window, min and max (goal: within [L - 2, L]). A request's
  window is read from its own `x-ratelimit-reset-requests` header (the gateway's window, not the
  client's clock).
- tpm: 6,000 total tokens a minute over both Envoys, 20 clients: tokens in the ledger per
  window (by the record's time), over the limit (goal: 0) and under it at the end.
- budget: a lifetime $ budget over both Envoys, 200 concurrent clients until each is refused
  twice in a row (half a second apart, as the SDKs retry): the ledger's spend over the budget
  (goal: never), and what was left, in requests of the mean cost (goal: within 2) and in
  reservations (what one request reserves: its worst case, here 4.8 times its mean cost; a
  budget that is never overspent can end up to one reservation short, never more).
- budget_fit: the same on a budget with `fit_output_tokens: 2` (a request that no longer fits
  is admitted with its max_tokens lowered to what fits, down to 2): never over (goal), and the
  gap in mean-cost requests (goal: within 2; it is under one request at its floor), with how
  many requests were lowered (the mock stops each answer at its max_tokens, as OpenAI does).
- concurrency: 10 at once on Envoy A, 50 clients streaming slowly: the most streams between
  their 200 and their last byte at once, seen by the clients (goal: 10).
- waits: 1,000 a minute on Envoy A used at 20 a second for 30 s (under 80%): the requests that
  waited for a grant (`tollgate_quota_network_waits`) per request (goal: at most 1 in 50).
- authority: grants answered per second and the control planes' CPU during the two-Envoy run;
  then 100 simulated Envoys (threads speaking the grant protocol, each asking every 200 ms as a
  service VM does) against control plane A for 20 s.
- fault: in a third window of the two-Envoy run, control plane B is killed for 5 s (its Envoy's
  quota falls back to its share, `limit / 2`, while its authority is gone): that window's count
  is reported apart (`rpm_two_envoys_fault_window`).
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import harness  # noqa: E402
from mocks.openai_mock import MockOpenAI  # noqa: E402

MODEL = "acc-quota-model"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def chat(stack: Any, key: str, text: str, **body: Any):
    return harness.http("POST", f"{stack.base_url}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                        json={"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 16, **body},
                        timeout=60)


def reservation_nanos(stack: Any, text: str) -> int:
    """What the gateway reserves of a budget for one `chat` request (its documented worst case:
    the body's bytes / 4 as input tokens, plus max_tokens as output, at the model's price)."""
    import fnmatch
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 16}
    input_tokens = -(-len(json.dumps(body).encode()) // 4)
    prices = stack.admin("GET", "/admin/v1/prices").json()
    entries = [e for e in prices["overrides"] + prices["defaults"]
               if e["provider"] == "openai" and fnmatch.fnmatchcase("gpt-4o-mini-2024-07-18", e["model"])]
    best = max(entries, key=lambda e: len(e["model"].rstrip("*")))
    per_token = lambda usd: round(float(usd) * 1000)  # noqa: E731  $ per million tokens -> nanos per token
    return input_tokens * per_token(best["input"]) + 16 * per_token(best["output"])


def window_of(resp: Any, sent_at: float, header: str) -> int | None:
    """The gateway's window of an admitted request: its reset header says how long the window
    had left when it was admitted."""
    reset = resp.headers.get(header)
    if not reset:
        return None
    return round((sent_at + float(reset.rstrip("s"))) / 60) - 1


def quota(stack: Any, **spec: Any) -> str:
    r = stack.admin("POST", "/admin/v1/quotas", json=spec)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def cpu_seconds(pid: int | None) -> float:
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counter(stack: Any, name: str) -> int:
    text = harness.http("GET", f"{stack.envoy_admin_url}/stats?filter={name}", timeout=5).text
    return sum(int(line.rsplit(":", 1)[1]) for line in text.splitlines() if name in line and line.rsplit(":", 1)[1].strip().isdigit())


def grant_stats(stack: Any) -> dict[str, int]:
    r = harness.http("GET", f"{stack.internal_url}/internal/v1/quota/grants",
                     headers={"Authorization": f"Bearer {stack.data_plane_token}"}, timeout=5)
    return r.json() if r.status_code == 200 else {"requests": 0, "asks": 0}


def next_window_start() -> float:
    return (int(time.time() // 60) + 1) * 60


def wait_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 1))


class Paced:
    """`threads` clients, together offering `per_minute` requests a minute from `start` to
    `end`, spread over `stacks`; records (sent_at, response) of each."""

    def __init__(self, stacks: list[Any], key: str, per_minute: float, threads: int, start: float, end: float,
                 tag: str) -> None:
        self.stacks, self.key, self.threads, self.start, self.end, self.tag = stacks, key, threads, start, end, tag
        self.interval = 60.0 * threads / per_minute
        self.results: list[tuple[float, Any]] = []
        self.lock = threading.Lock()

    def client(self, i: int) -> None:
        stack = self.stacks[i % len(self.stacks)]
        t = self.start + random.random() * self.interval
        n = 0
        while t < self.end:
            wait_until(t)
            sent = time.time()
            try:
                r = chat(stack, self.key, f"{self.tag} {i} {n}")
            except Exception:  # noqa: BLE001 (a client error is counted, not fatal)
                r = None
            with self.lock:
                self.results.append((sent, r))
            n += 1
            t += self.interval

    def run(self) -> threading.Thread:
        def all_clients() -> None:
            with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
                list(pool.map(self.client, range(self.threads)))
        th = threading.Thread(target=all_clients)
        th.start()
        return th

    def admitted_by_window(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for sent, r in self.results:
            if r is not None and r.status_code == 200:
                w = window_of(r, sent, "x-ratelimit-reset-requests")
                if w is not None:
                    out[w] = out.get(w, 0) + 1
        return out


def budget_run(stacks: list[Any], key: str, clients: int, tag: str = "budget") -> tuple[int, int]:
    """200 clients over both Envoys until every one has been refused twice in a row; after a
    refusal a client waits half a second, as the official SDKs do before their first retry
    (`INITIAL_RETRY_DELAY = 0.5` in openai-python). An answer other than a 200 or a budget's 429
    fails the run."""
    ok = refused = 0
    other: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        nonlocal ok, refused
        stack, misses, n = stacks[i % 2], 0, 0
        while misses < 2 and n < 200:
            r = chat(stack, key, f"{tag} {i} {n}")
            n += 1
            with lock:
                if r.status_code == 200:
                    ok += 1
                    misses = 0
                else:
                    refused += 1
                    misses += 1
                    if r.status_code != 429 or "budget_exceeded" not in r.text:
                        other.append(f"{r.status_code} {r.text[:200]}")
            if r.status_code != 200:
                time.sleep(0.5)
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    if other:
        raise AssertionError(f"{tag}: {len(other)} answers neither 200 nor budget_exceeded, e.g. {other[0]}")
    return ok, refused


def concurrency_run(stack: Any, key: str, mock: Any, clients: int) -> int:
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for n in range(3):
            with harness.http("POST", f"{stack.base_url}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": MODEL, "stream": True, "max_tokens": 16,
                                    "messages": [{"role": "user", "content": f"slow stream {i} {n} a b c d e"}]},
                              timeout=60, stream=True) as r:
                if r.status_code != 200:
                    time.sleep(0.05)
                    continue
                began = time.monotonic()
                for _ in r.iter_content(None):
                    pass
                with lock:
                    spans.append((began, time.monotonic()))
    mock.set_faults(chunk_delay_ms=60)
    try:
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
    finally:
        mock.reset_faults()
    events = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def simulated_envoys(stack: Any, quota_id: str, envoys: int, seconds: float) -> tuple[float, float]:
    """`envoys` threads, each an Envoy asking for the quota every 200 ms: grants/s answered and
    the control plane's CPU %."""
    stop = time.monotonic() + seconds
    answered = 0
    lock = threading.Lock()

    def envoy(i: int) -> None:
        nonlocal answered
        while time.monotonic() < stop:
            window = int(time.time() // 60)
            body = {"envoy": f"simulated-{i}", "asks": [{"quota": quota_id, "window": window, "want": 5, "need": 0}]}
            r = harness.http("POST", f"{stack.internal_url}/internal/v1/quota/grants", json=body, timeout=10,
                             headers={"Authorization": f"Bearer {stack.data_plane_token}"})
            if r.status_code == 200 and r.json()["grants"]:
                with lock:
                    answered += 1
            time.sleep(0.2)
    cpu0, t0 = cpu_seconds(stack.cp.pid), time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(envoys) as pool:
        list(pool.map(envoy, range(envoys)))
    took = time.monotonic() - t0
    return answered / took, 100 * (cpu_seconds(stack.cp.pid) - cpu0) / took


def run(db_url: str, work: Path, only: set[str] | None = None) -> dict[str, Any]:
    def wanted(name: str) -> bool:
        return only is None or name in only

    env = {"TG_ACCQ_OPENAI": harness.random_secret("sk-"), "TOLLGATE_KEK": base64.b64encode(os.urandom(32)).decode()}
    mock = MockOpenAI(api_key=env["TG_ACCQ_OPENAI"]).start()
    config = {"credentials": {"o": {"api_key_env": "TG_ACCQ_OPENAI"}},
              "models": [{"name": MODEL, "deployments": [
                  {"provider": "openai", "base_url": mock.base_url, "model": "gpt-4o-mini-2024-07-18", "credential": "o"}]}]}
    stacks: list[Any] = []
    try:
        a = harness.GatewayStack(work / "a", config, env, database_url=db_url).start()
        stacks.append(a)
        b = harness.GatewayStack(work / "b", config, env, database_url=db_url, admin_key=a.admin_key,
                                 data_plane_token=a.data_plane_token).start()
        stacks.append(b)
        for s in (a, b):
            s.wait_chat_ready(MODEL)
        keys = {}
        for name in ("rpm1", "rpm2", "tpm", "budget", "budget_fit", "conc", "waits"):
            kid, secret = a.create_key(name=f"acc-{name}")
            keys[name] = (kid, secret)
        for _, secret in keys.values():
            harness.wait_until(lambda: a.key_works(secret) and b.key_works(secret), 10, "keys on both Envoys")
        L = 600
        q_rpm1 = quota(a, metric="requests", window_seconds=60, limit=60, key_id=keys["rpm1"][0])
        q_rpm2 = quota(a, metric="requests", window_seconds=60, limit=L, key_id=keys["rpm2"][0])
        quota(a, metric="total_tokens", window_seconds=60, limit=6000, key_id=keys["tpm"][0])
        budget_usd = "0.02"
        q_budget = quota(a, metric="cost_usd", limit_usd=budget_usd, key_id=keys["budget"][0])
        q_fit = quota(a, metric="cost_usd", limit_usd=budget_usd, key_id=keys["budget_fit"][0], fit_output_tokens=2)
        quota(a, metric="concurrency", limit=10, key_id=keys["conc"][0])
        q_waits = quota(a, metric="requests", window_seconds=60, limit=1000, key_id=keys["waits"][0])
        time.sleep(3)  # on both Envoys (B's control plane republishes on A's notification)

        rpm_one, full, fault, first, cpu_pct, grants_per_s = None, [None], None, 0, None, None
        if wanted("windowed"):
            # --- windowed runs, side by side, from the next aligned minute ---------------------------------
            w0 = next_window_start()
            log(f"windowed runs start at {time.strftime('%H:%M:%S', time.localtime(w0))} (3 windows; control plane B "
                "killed for 5 s in the third)")
            rpm1 = Paced([a], keys["rpm1"][1], 180, 6, w0, w0 + 60, "rpm1")
            rpm2 = Paced([a, b], keys["rpm2"][1], 2 * L, 200, w0, w0 + 180, "rpm2")
            tpm = Paced([a, b], keys["tpm"][1], 1200, 20, w0, w0 + 120, "tpm")
            threads = [p.run() for p in (rpm1, rpm2, tpm)]
            wait_until(w0)
            cpu0 = {s: cpu_seconds(s.cp.pid) for s in (a, b)}
            grants0 = sum(grant_stats(s)["asks"] for s in (a, b))
            wait_until(w0 + 120)
            took = time.time() - w0
            cpu_pct = sum(100 * (cpu_seconds(s.cp.pid) - cpu0[s]) for s in (a, b)) / took
            grants_per_s = (sum(grant_stats(s)["asks"] for s in (a, b)) - grants0) / took
            wait_until(w0 + 130)
            assert b.cp is not None
            log("killing control plane B for 5 s")
            b.cp.kill()
            time.sleep(5)
            b.cp.restart()
            for th in threads:
                th.join()
            first = int(w0 // 60)
            by_window = rpm2.admitted_by_window()
            full = [by_window.get(first + i, 0) for i in range(2)]
            fault = by_window.get(first + 2, 0)
            rpm_one = rpm1.admitted_by_window().get(first, 0)
            log(f"rpm one Envoy: {rpm_one} of 60; two Envoys per window: {full} (fault window: {fault})")

        # --- waits below 80%, budget, concurrency -------------------------------------------------------
        waits_count, sent_waits, ok, most, fit_ok, lowered = 0, 0, None, None, None, None
        if wanted("waits"):
            before = counter(a, "tollgate_quota_network_waits")
            waits = Paced([a], keys["waits"][1], 1200 * 0.5, 4, time.time(), time.time() + 30, "waits")
            waits.run().join()
            sent_waits = len(waits.results)
            waits_count = counter(a, "tollgate_quota_network_waits") - before
            log(f"waits: {waits_count} of {sent_waits} requests")
        if wanted("budget"):
            ok, refused = budget_run([a, b], keys["budget"][1], 200)
            log(f"budget: {ok} admitted, {refused} refused; the authority's state after: "
                f"{a.admin('GET', f'/admin/v1/quotas/{q_budget}/state').text}")
            fit_ok, fit_refused = budget_run([a, b], keys["budget_fit"][1], 200, "fit")
            lowered = sum(1 for r in mock.requests if isinstance(r.get("json"), dict)
                          and str(r["json"].get("messages", [{}])[0].get("content", "")).startswith("fit ")
                          and r["json"].get("max_tokens", 16) < 16)
            log(f"budget with fit_output_tokens: {fit_ok} admitted ({lowered} lowered), {fit_refused} refused; the "
                f"authority's state after: {a.admin('GET', f'/admin/v1/quotas/{q_fit}/state').text}")
        if wanted("concurrency"):
            most = concurrency_run(a, keys["conc"][1], mock, 50)
            log(f"concurrency: at most {most} streams at once")

        # --- the ledger ----------------------------------------------------------------------------------
        time.sleep(3)

        def ledger(sql: str) -> list[list[str]]:
            out = harness_psql(db_url, sql)
            return [line.split("|") for line in out.splitlines() if line]
        tpm_rows = ledger(f"SELECT at_ms / 60000, SUM(input_tokens + output_tokens) FROM usage_records "
                          f"WHERE key_id = '{keys['tpm'][0]}' GROUP BY 1 ORDER BY 1")
        tpm_windows = {int(w): int(t) for w, t in tpm_rows}
        tpm_full = [tpm_windows.get(first + i, 0) for i in range(2)] if wanted("windowed") else [6000]
        spend_rows = ledger(f"SELECT COALESCE(SUM(cost_nanos), 0), COUNT(*) FROM usage_records WHERE key_id = '{keys['budget'][0]}'")
        spend_nanos, budget_requests = int(spend_rows[0][0]), int(spend_rows[0][1])
        budget_nanos = int(float(budget_usd) * 1e9)
        mean = spend_nanos / max(budget_requests, 1)
        reserved = reservation_nanos(a, "budget 100 10") if wanted("budget") else 0
        fit_rows = ledger(f"SELECT COALESCE(SUM(cost_nanos), 0), COUNT(*) FROM usage_records WHERE key_id = '{keys['budget_fit'][0]}'")
        fit_spend, fit_requests = int(fit_rows[0][0]), int(fit_rows[0][1])
        fit_mean = fit_spend / max(fit_requests, 1)

        # --- the authority with 100 simulated Envoys -----------------------------------------------------
        sim_grants, sim_cpu = None, None
        if wanted("authority"):
            q_sim = quota(a, metric="requests", window_seconds=60, limit=10**12)
            sim_grants, sim_cpu = simulated_envoys(a, q_sim, 100, 20)
            log(f"100 simulated Envoys: {sim_grants:.0f} grants/s, control plane {sim_cpu:.0f}% CPU")
        del q_rpm1, q_rpm2, q_waits
        return {
            "rpm_one_envoy_admitted": rpm_one,
            "rpm_two_envoys_window_min": min(full, key=lambda n: n or 0),
            "rpm_two_envoys_window_max": max(full, key=lambda n: n or 0),
            "rpm_two_envoys_fault_window": fault,
            "tpm_overshoot_tokens": max(max(t - 6000 for t in tpm_full), 0),
            "tpm_under_tokens": 6000 - max(tpm_full),
            "budget_overshoot_usd": round(max(spend_nanos - budget_nanos, 0) / 1e9, 9),
            "budget_gap_requests": round((budget_nanos - spend_nanos) / mean, 2) if mean else None,
            "budget_gap_reservations": round((budget_nanos - spend_nanos) / reserved, 2) if reserved else None,
            "budget_reservation_over_mean": round(reserved / mean, 2) if reserved and mean else None,
            "budget_admitted": ok,
            "budget_fit_overshoot_usd": round(max(fit_spend - budget_nanos, 0) / 1e9, 9),
            "budget_fit_gap_requests": round((budget_nanos - fit_spend) / fit_mean, 2) if fit_spend else None,
            "budget_fit_admitted": fit_ok,
            "budget_fit_lowered": lowered,
            "concurrency_max_in_flight": most,
            "network_waits_per_request_below_80pct": round(waits_count / max(sent_waits, 1), 4),
            "authority_grants_per_s_two_envoys": grants_per_s and round(grants_per_s, 1),
            "authority_cpu_pct_two_envoys": cpu_pct and round(cpu_pct, 1),
            "authority_grants_per_s_100_envoys": sim_grants and round(sim_grants),
            "authority_cpu_pct_100_envoys": sim_cpu and round(sim_cpu, 1),
        }
    finally:
        for s in stacks:
            s.stop()
        mock.stop()


def harness_psql(db_url: str, sql: str) -> str:
    import subprocess
    db = db_url.rsplit("/", 1)[1]
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-At", "-d", db,
                           "-c", sql], check=True, capture_output=True, text=True, timeout=120).stdout


def figures(only: set[str] | None = None) -> dict[str, Any]:
    import subprocess
    harness.require_built()
    db = f"tollgate_accq_{uuid.uuid4().hex[:10]}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c", f"CREATE DATABASE {db}"],
                   check=True, capture_output=True, timeout=60)
    try:
        return run(f"postgres://postgres@127.0.0.1:5432/{db}", Path(tempfile.mkdtemp(prefix="tollgate-accq-")), only)
    finally:
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c",
                        f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True, timeout=60)


def main() -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated scenarios: windowed, waits, budget, concurrency, authority "
                    "(default: all; the figures of the others are null)")
    args = ap.parse_args()
    print(json.dumps(figures(set(args.only.split(",")) if args.only else None)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
