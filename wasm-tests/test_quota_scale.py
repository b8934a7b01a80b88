"""Quotas at scale (issue 13): a configuration of many quotas, and a worker serving many keys, cost
a request about what one key's quotas cost (indexes and maps, not scans of every quota)."""

from __future__ import annotations

from proxy_wasm_host import SharedData
from wasm_fixtures import (chat_body, config_bytes, decode_request_state, decode_slots, deployment, digest,
                           gateway_config, publish_keys, provider_properties, send)

from quota_helpers import REQUEST_STATE, WORST, chat, provider_on, with_quotas


def test_a_configuration_of_many_quotas_is_taken_in_time_linear_in_them(make_gateway):
    """Each quota's group and tag are found by name, not by comparing it with every other quota:
    a configuration of 2,000 key-scoped quotas (a budget per key, say) costs the gateway's
    configure about 15,000 wasm instructions a quota (JSON and all). Comparing every pair cost
    690 million at 2,000 (and grew with the square: 17 billion, seconds of a worker, at 10,000)."""
    n = 2000
    quotas = [{"id": f"quota_{i}", "metric": "total_tokens", "window_seconds": 60, "limit": 10**6, "key_id": f"key_{i}",
               "group": f"key_{i}"} for i in range(n)]
    gw = make_gateway(with_quotas(*quotas))
    assert gw.crossings["fuel@proxy_on_configure"] < 30_000 * n, dict(gw.crossings)


def test_a_request_looks_only_at_its_keys_quotas_and_those_of_no_key(make_gateway):
    """A configuration of many quotas is indexed by key: a request takes its key's quotas (by
    `key_id`, or a team's or user's `keys` list) and those that name no key (global, a model's),
    in the configuration's order, and looks at no other key's. With a budget for each of 2,000
    other keys a chat's admission costs about what it does with its own quotas alone (looking at
    each quota cost about 60 wasm instructions a quota a request: 600,000 at 10,000)."""
    shared = SharedData()
    publish_keys(shared)
    others = [{"id": f"quota_{i}", "metric": "cost_usd", "limit": 10**9, "key_id": f"key_{i}", "group": f"key_{i}"} for i in range(2000)]
    own = {"id": "quota_own", "metric": "total_tokens", "window_seconds": 60, "limit": 100 * WORST, "key_id": "k1"}
    team = {"id": "quota_team", "metric": "requests", "window_seconds": 60, "limit": 50, "keys": ["k0", "k1", "k9"]}
    everyone = {"id": "quota_everyone", "metric": "requests", "window_seconds": 60, "limit": 70}
    gpt_b = {"id": "quota_gpt_b", "metric": "requests", "window_seconds": 60, "limit": 5, "model": "gpt-b"}
    gw = make_gateway(with_quotas(*others[:1000], team, own, gpt_b, everyone, *others[1000:]), shared_data=shared)
    used = lambda q: decode_slots(shared.value(f"tollgate.quota.{q}"))[q]["used"]  # noqa: E731
    first = chat(gw)
    assert first.local_response is None
    assert (used("quota_own"), used("quota_team"), used("quota_everyone")) == (WORST, 1, 1)
    assert shared.value("tollgate.quota.quota_gpt_b") is None and shared.value("tollgate.quota.g.key_7") is None
    headers = dict(decode_request_state(first.properties_set[REQUEST_STATE])["headers"])
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("50", "49"), "the team's, the tightest"
    gw.crossings.clear()
    for _ in range(10):
        assert chat(gw).local_response is None
    assert gw.crossings["fuel@proxy_on_request_body"] < 10 * 30_000, dict(gw.crossings)


def test_a_worker_serving_many_keys_keeps_its_credits_and_give_backs_by_key_not_in_lists(make_gateway):
    """A worker serving hundreds of keys, each with its own budget and token quota, keeps its
    credits (by quota) and the reservations waiting for the tally (by quota slot) in maps past
    16 of them, and writes what it gives back on the tick value by value: a request's cost stays
    near a single key's. Scanning lists grew with the keys: about 225,000 wasm instructions a
    request with 400 keys, most of it the tick's merges (each give-back compared with every
    other) and the end of each request (its reservation compared with every slot's)."""
    n = 200
    secrets = [f"tg-m{i:05d}-5Hq0rVb2yXc8Lm4NzT7wAe1Pd9Gs3Jk6" for i in range(n)]
    keys = [{"id": f"key_{i}", "digest": digest(s), "role": "user", "models": None, "expires_at": None} for i, s in enumerate(secrets)]
    quotas = [q for i in range(n) for q in (
        {"id": f"b_{i}", "metric": "cost_usd", "limit": 10**12, "key_id": f"key_{i}", "group": f"key_{i}"},
        {"id": f"t_{i}", "metric": "total_tokens", "window_seconds": 60, "limit": 10**9, "key_id": f"key_{i}", "group": f"key_{i}"})]
    prices = {"gpt-a": {"input": 1000, "output": 2000, "cache_read": 0, "cache_write": 0}}
    shared = SharedData()
    publish_keys(shared, keys)
    gw = make_gateway(config_bytes(gateway_config(quotas=quotas, model_prices=prices)), shared_data=shared)

    def rounds(count: int) -> None:
        for r in range(count):
            down = send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=50), key=secrets[r % n])
            assert down.local_response is None, down.local_response
            down.finish()
            if r % n == n - 1:
                gw.tick()
    rounds(2 * n)
    gw.crossings.clear()
    rounds(4 * n)
    per_request = gw.crossings["fuel"] // (4 * n)
    assert per_request < 45_000, dict(gw.crossings)
    used = decode_slots(shared.value("tollgate.quota.g.key_7"))["t_7"]["used"]
    assert used > 0, "the key's own quota counted"

def test_an_attempt_looks_only_at_its_keys_quotas_of_its_provider(make_gateway, make_provider):
    """The provider filter indexes the quotas of providers by key too: with a quota at OpenAI
    for each of 2,000 other keys, an attempt takes its own key's and looks at no other (looking
    at each cost about 45 wasm instructions a quota an attempt: 106,000 for the attempt's
    request headers here, about 21,000 now)."""
    shared = SharedData()
    publish_keys(shared)
    others = [{"id": f"quota_{i}", "metric": "requests", "window_seconds": 60, "limit": 100, "provider": "openai",
               "key_id": f"key_{i}", "group": f"p=openai;key_{i}"} for i in range(2000)]
    own = {"id": "quota_own", "metric": "requests", "window_seconds": 60, "limit": 100, "provider": "openai", "key_id": "k1",
           "group": "p=openai;k1"}
    gw = make_gateway(with_quotas(*others[:1000], own, *others[1000:]), shared_data=shared)
    provider = provider_on(make_provider, shared)
    down = chat(gw)
    assert down.local_response is None
    props = provider_properties(deployment(), op=None)
    props.update(down.properties_set)
    up = provider.new_http_context(props)
    provider.crossings.clear()
    up.request_headers(list(down.request_headers_map.pairs), end_of_stream=False)
    assert up.local_response is None
    assert decode_slots(shared.value("tollgate.quota.g.p=openai;k1"))["quota_own"]["used"] == 1
    assert shared.value("tollgate.quota.g.p=openai;key_3") is None
    assert provider.crossings["fuel@proxy_on_request_headers"] < 40_000, dict(provider.crossings)
