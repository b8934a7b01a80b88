"""Wasm memory pressure (SECURITY-CATALOGUE F-13): 100 concurrent 900 KB responses through a
translated route (OpenAI client -> Anthropic provider, so the provider filter buffers, parses and
rewrites every body in the worker's wasm memory).

Envoy 1.40 has no gauge of a VM's linear memory, so the test holds what can be observed: every
response arrives whole and correct, no VM fails or is reloaded (Envoy's wasm failure stats), and
Envoy's resident memory grows by a bounded amount (a worker VM handles one callback at a time, so
its memory peaks at a few bodies, not at 100). Shared data: the filters use a fixed set of keys
(the credential document, and the key table's version key, manifest and 256 shard keys, all
written by the service VM), so the catalogue's "10k shared-data keys" cannot happen here;
`test_shared_data_keys_are_a_fixed_set` keeps it so.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dataplane_util import DataPlaneStack, dp  # noqa: F401 (fixture)
from e2e_util import http, unique

BODY_TEXT = 900 * 1024
CONCURRENCY = 100
RSS_GROWTH_LIMIT = 150 * 1024 * 1024  # measured +26 MiB; 100 bodies of 900 KB held at once would be ~180 MB each way


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wasm_failures(dp: DataPlaneStack) -> int:
    assert dp.stack.envoy is not None
    stats = http("GET", f"{dp.stack.envoy.admin_url}/stats?filter=wasm").text
    return sum(int(line.rsplit(":", 1)[1]) for line in stats.splitlines()
               if re.search(r"runtime_error|vm_failed|failed_vm|created", line) and line.strip())


def test_100_concurrent_900kb_translated_responses(dp):  # noqa: F811
    assert dp.stack.envoy is not None and dp.stack.envoy.pid is not None
    pid = dp.stack.envoy.pid
    before_failures = wasm_failures(dp)
    before_rss = rss_bytes(pid)

    def one(i: int) -> tuple[int, str, str]:
        token = unique()
        text = token + " " + ("x" * (BODY_TEXT - len(token) - 1))
        resp = http("POST", f"{dp.stack.base_url}/chat/completions", timeout=120,
                    headers={"Authorization": f"Bearer {dp.key}", "Content-Type": "application/json"},
                    data=json.dumps({"model": "dp-anthropic", "max_tokens": 10,
                                     "messages": [{"role": "user", "content": text}]}))
        content = resp.json()["choices"][0]["message"]["content"] if resp.status_code == 200 else resp.text[:300]
        return resp.status_code, content, text

    peak = before_rss
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [pool.submit(one, i) for i in range(CONCURRENCY)]
        results = []
        for f in futures:
            results.append(f.result())
            peak = max(peak, rss_bytes(pid))
    for status, content, text in results:
        assert status == 200, content
        assert content == "echo: " + text  # whole, byte for byte
    assert wasm_failures(dp) == before_failures, "a wasm VM failed or was reloaded under memory pressure"
    growth = peak - before_rss
    print(f"Envoy RSS {before_rss / 2**20:.1f} MiB before, peak {peak / 2**20:.1f} MiB "
          f"(+{growth / 2**20:.1f} MiB) for {CONCURRENCY} concurrent {BODY_TEXT // 1024} KB responses")
    assert growth < RSS_GROWTH_LIMIT
    # And the gateway serves a normal request afterwards.
    token = unique()
    resp = http("POST", f"{dp.stack.base_url}/chat/completions",
                headers={"Authorization": f"Bearer {dp.key}", "Content-Type": "application/json"},
                data=json.dumps({"model": "dp-anthropic", "max_tokens": 10,
                                 "messages": [{"role": "user", "content": token}]}))
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == "echo: " + token


def test_shared_data_keys_are_a_fixed_set():
    """Shared data is process-wide and never expires: the filters must not make keys per request
    (catalogue F-13). Every `set_shared_data` / `shared_data` call in the filter sources names the
    credential-document key or one of the key table's: its version key, its manifest, or a shard
    key (`shared_shard_key` takes a `u8`: at most 256); or a quota's: its slot and its next
    window's lease (`key`, `next`: two per quota of the configuration, whatever the traffic),
    the leased quotas, the quotas of providers, the grant ticket and the authority's state (one
    each); a worker's usage tally (one per gateway VM, named at random when the VM is made: a
    VM made again after a trap makes one more, of at most 256 quotas' totals; the provider filter
    writes it under the key it keeps beside the totals, `kept.key`, made with `tally_key`); and
    when an Envoy last asked the authority for a leased quota (`asked`, made with
    `quota::asked_key`: one per quota of the configuration)."""
    root = Path(__file__).resolve().parents[2] / "filters"
    calls = []
    for src in root.rglob("*.rs"):
        if "tests" in src.parts or src.name.endswith("_tests.rs"):
            continue
        for m in re.finditer(r"\.(set_shared_data|shared_data)\(\s*([^,)]+)", src.read_text()):
            calls.append((src.relative_to(root).as_posix(), m.group(2).strip()))
    assert calls, "no shared-data calls found: has the credential hand-off moved?"
    keys = {arg for _, arg in calls}
    # The ABI wrappers pass their parameter on (`key`); every filter names the one constant.
    assert keys <= {"contract::SHARED_CREDENTIALS_KEY", "key", "keytable::SHARED_VERSION_KEY",
                    "keytable::SHARED_MANIFEST_KEY", "&keytable::shared_shard_key(i", "&keytable::shared_shard_key(index",
                    "next", "quota_lease::SHARED_AUTHORITY_KEY", "quota_lease::SHARED_TICKET_KEY", "SHARED_TICKET_KEY",
                    "quota_lease::SHARED_DOCS_KEY", "tollgate_contract::quota_lease::SHARED_DOCS_KEY",
                    "quota::SHARED_PROVIDER_QUOTAS_KEY", "&tally::tally_key(tally_id(", "&kept.key", "&asked", "asked"}, calls
    assert ("contract::SHARED_CREDENTIALS_KEY" in keys), calls
    shard_key = Path(root / "tollgate-contract/src/keytable/mod.rs").read_text()
    assert "pub fn shared_shard_key(i: u8) -> String" in shard_key
