"""Quotas in the data plane (issue 13): admission with compare-and-swap on one shared-data slot
per quota, exact across the workers of an Envoy (two VMs sharing one SharedData here, as
Envoy's process-wide store joins its workers), a refused request given back, concurrency given
back when a request ends, token reservations settled to the usage each attempt reports, and the
OpenAI-style rate-limit headers."""

from __future__ import annotations

import json
import time

import pytest

from proxy_wasm_host import SharedData
from wasm_fixtures import (NOW, assert_openai_error, chat_body, config_bytes, credentials_doc, decode_request_state, decode_slots,
                           decode_tally, deployment, digest, gateway_config, publish_keys, provider_properties, send)

REQUEST_STATE = ("tollgate_request",)


def with_quotas(*quotas) -> bytes:
    return config_bytes(gateway_config(quotas=list(quotas)))


def chat(gw):
    return send(gw, "POST", "/v1/chat/completions", chat_body())


def provider_on(make_provider, shared: SharedData):
    """A provider worker on `shared`, with the credential document read."""
    provider = make_provider(shared_data=shared)
    shared.set("tollgate.credentials.v1", credentials_doc())
    provider.tick()
    return provider


# How many ticks a gateway worker waits for a tally write made after a request ended before it
# gives the request's reservations back without one (`WAIT_TICKS` in the gateway's quotas.rs).
WAIT_TICKS = 50


def ticks(gw, n: int, provider=None) -> None:
    """`n` ticks of a gateway worker, each after one of `provider`'s (the worker's provider VM,
    which writes the tallies on its tick). A roomy request's usage is counted from the tally on
    the first gateway tick after the provider wrote it, and written on the next; its reservation
    is given back once a tick reads a write newer than the one the first tick after its end saw
    (the second round here), and written on the tick after (or with an admission to its group,
    whichever comes first). Without a write (no provider: its request never reached one), after
    `WAIT_TICKS` ticks."""
    for _ in range(n):
        if provider is not None:
            provider.tick()
        gw.tick()


def tally_key(ctx) -> str:
    """The shared-data key of the usage tally a gateway context's request names."""
    return f"tollgate.quota.tally.{decode_request_state(ctx.properties_set[REQUEST_STATE])['tally']:016x}"


def test_a_request_quota_admits_exactly_its_limit_across_workers(make_gateway):
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_rpm", "metric": "requests", "window_seconds": 60, "limit": 5, "key_id": "k1"}
    workers = [make_gateway(with_quotas(q), shared_data=shared) for _ in range(2)]
    outcomes = [chat(workers[i % 2]) for i in range(9)]
    admitted = [c for c in outcomes if c.local_response is None]
    refused = [c.local_response for c in outcomes if c.local_response is not None]
    assert len(admitted) == 5 and len(refused) == 4
    err = assert_openai_error(refused[0], 429, "rate_limit_exceeded", "rate_limit_error")
    assert "quota_rpm" in err["message"]
    assert refused[0].header("retry-after") == str(60 - NOW % 60)
    held = decode_request_state(admitted[-1].properties_set[REQUEST_STATE])
    assert ["x-ratelimit-remaining-requests", "0"] in held["headers"]
    assert ["x-ratelimit-limit-requests", "5"] in held["headers"]
    # another key is not counted; the next window starts again
    assert send(workers[0], "POST", "/v1/chat/completions", chat_body(), key=__import__("wasm_fixtures").K2_SECRET).local_response is None
    for w in workers:
        w.now += 60
    assert chat(workers[1]).local_response is None


def test_concurrency_is_given_back_when_the_request_ends(make_gateway):
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_conc", "metric": "concurrency", "limit": 2}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    first, second = chat(gw), chat(gw)
    assert first.local_response is None and second.local_response is None
    third = chat(gw)
    assert third.local_response.status == 429 and third.local_response.header("retry-after") == "1"
    first.finish()
    assert chat(gw).local_response is None


def test_a_reservation_never_given_back_expires_and_one_given_back_late_is_not_taken_twice(make_gateway):
    """A worker whose VM crashed mid-request never gives back what its requests hold: after the
    longest a request may run (`quota_hold_seconds`, one to two epochs) the reservation expires."""
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_conc", "metric": "concurrency", "limit": 2}
    cfg = config_bytes(gateway_config(quotas=[q], quota_hold_seconds=100))
    crashed, alive = make_gateway(cfg, shared_data=shared), make_gateway(cfg, shared_data=shared)
    lost = chat(crashed)  # its worker dies: this request never ends
    assert lost.local_response is None
    slow = chat(alive)
    assert chat(alive).local_response.status == 429, "both slots held"
    alive.now += 100
    assert chat(alive).local_response.status == 429, "one epoch on: still held"
    alive.now += 100
    fresh = chat(alive)
    assert fresh.local_response is None, "two epochs on: the crashed worker's slot expired"
    held = decode_slots(shared.value("tollgate.quota.quota_conc"), full=True)["quota_conc"]
    assert held["used"] == 1 and sum(held["held"]) == 1
    slow.finish()  # ran past its expiry: giving it back takes nothing off
    assert decode_slots(shared.value("tollgate.quota.quota_conc"))["quota_conc"]["used"] == 1
    assert chat(alive).local_response is None
    assert chat(alive).local_response.status == 429, "still exactly the limit"
    fresh.finish()
    assert decode_slots(shared.value("tollgate.quota.quota_conc"))["quota_conc"]["used"] == 1


def test_tokens_reserve_the_worst_case_and_settle_to_the_usage(make_gateway, make_provider):
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 10000}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    provider = provider_on(make_provider, shared)
    down = chat(gw)
    assert down.local_response is None
    slot = lambda: decode_slots(shared.value("tollgate.quota.quota_tpm"))["quota_tpm"]["used"]  # noqa: E731
    assert slot() == (len(chat_body()) + 3) // 4 + 4096, "input estimate + the output reservation"
    assert chat(gw).local_response is None and chat(gw).local_response.status == 429, "a third worst case is over"
    # the attempt reports 12 + 7 tokens: they count, and the reservation is given back
    props = provider_properties(deployment(), op=None)  # the request state is the gateway's own
    props.update(down.properties_set)
    up = provider.new_http_context(props)
    up.request_headers(list(down.request_headers_map.pairs), end_of_stream=False)
    up.send_request_body(bytes(down.request_body_forwarded))
    answer = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [],
                         "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}).encode()
    up.response_headers([(":status", "200"), ("content-type", "application/json")])
    assert up.response_headers_map.get("x-ratelimit-limit-tokens") == "10000"
    up.response_body(answer, end_of_stream=True)
    before = slot()
    # Two worst cases leave more than half the limit: the quota is roomy, and the attempt's usage
    # goes to the gateway worker's tally (written on the provider's tick), not to the slot.
    state = decode_request_state(down.properties_set[REQUEST_STATE])
    assert state["tally"] != 0
    # Its holds travel by the worker's tags for their quota slots (no quota text).
    assert [h["metric"] for h in state["holds"]] == ["total_tokens"] and state["holds"][0]["tag"] > 0
    assert b"quota_tpm" not in down.properties_set[REQUEST_STATE]
    provider.crossings.clear()
    up.finish()
    assert slot() == before
    assert not [k for k in provider.crossings if "shared_data" in k], "counted in the provider's memory"
    assert shared.value(tally_key(down)) is None
    provider.tick()  # the tally written (one blind write), beside the tick's own reads
    assert provider.crossings["host:proxy_set_shared_data"] == 1, dict(provider.crossings)
    tally = decode_tally(shared.value(tally_key(down)))
    assert [(e["tag"], e["used"]) for e in tally["entries"]] == [(state["holds"][0]["tag"], 19)] and tally["seq"] == 1
    gw.crossings.clear()
    down.finish()
    # nothing is written when the request ends: the worker's tick reads the tally and counts its
    # usage, and gives the reservation back once it reads a newer write (its usage surely in it)
    assert slot() == before
    assert not [k for k in gw.crossings if k.startswith("host:") and k != "host:proxy_log"], dict(gw.crossings)
    assert gw.tick_period_ms == 100
    gw.tick()
    assert slot() == before, "read, to be written with the next admission or tick"
    gw.tick()
    assert slot() == before + 19
    gw.tick()
    gw.tick()
    assert slot() == before + 19, "no newer write of the tally: the reservation waits"
    provider.tick()
    assert decode_tally(shared.value(tally_key(down)))["seq"] == 2
    gw.tick()
    assert slot() == before + 19, "a newer write read: given back with the next admission or tick"
    gw.tick()
    assert slot() == before + 19 - ((len(chat_body()) + 3) // 4 + 4096)
    ticks(gw, 3, provider)
    assert slot() == before + 19 - ((len(chat_body()) + 3) // 4 + 4096), "counted once, given back once"



def test_a_roomy_request_admitted_before_a_new_configuration_is_counted_in_its_quota(make_gateway, make_provider):
    """A roomy request's holds travel by the worker's tags for their quota slots, and its usage
    comes back in the tally by them: a tag stays the same slot's for as long as the worker runs,
    so a request admitted under one configuration and ended under another (its quota now second,
    after a new one) is counted in its own quota's slot, and nothing in the new quota's."""
    shared = SharedData()
    publish_keys(shared)
    tpm = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 10000}
    gw = make_gateway(with_quotas(tpm), shared_data=shared)
    provider = provider_on(make_provider, shared)
    used = lambda q: decode_slots(shared.value(f"tollgate.quota.{q}"))[q]["used"]  # noqa: E731
    down = chat(gw)
    tag = decode_request_state(down.properties_set[REQUEST_STATE])["holds"][0]["tag"]
    answer_attempt(provider, down, 12, 7).finish()
    other = {"id": "quota_other", "metric": "output_tokens", "window_seconds": 60, "limit": 10**6}
    assert gw.reconfigure(with_quotas(other, tpm)) is True
    down.finish()
    ticks(gw, 3, provider)
    assert used("quota_tpm") == 19, "counted in its own slot, its reservation given back"
    later = chat(gw)
    holds = decode_request_state(later.properties_set[REQUEST_STATE])["holds"]
    assert [h["metric"] for h in holds] == ["output_tokens", "total_tokens"]
    assert holds[1]["tag"] == tag and holds[0]["tag"] not in (0, tag), "the same slot, the same tag"
    answer_attempt(provider, later, 3, 2).finish()
    later.finish()
    ticks(gw, 3, provider)
    assert (used("quota_tpm"), used("quota_other")) == (24, 2)


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

# A chat's worst case against a token quota: its input estimate + the 4,096 output tokens
# reserved when the client sets no limit.
WORST = (len(chat_body()) + 3) // 4 + 4096


def tpm_workers(make_gateway, limit: int, workers: int = 1):
    """Gateway workers of one Envoy sharing a TPM quota of `limit`, and its slot's `used`."""
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": limit}
    gws = [make_gateway(with_quotas(q), shared_data=shared) for _ in range(workers)]
    return gws, lambda: decode_slots(shared.value("tollgate.quota.quota_tpm"))["quota_tpm"]["used"]


def test_a_reservation_kept_at_the_end_is_given_back_by_the_next_admission(make_gateway):
    [gw], slot = tpm_workers(make_gateway, 10000)
    first, second = chat(gw), chat(gw)
    assert first.local_response is None and second.local_response is None and slot() == 2 * WORST
    assert chat(gw).local_response.status == 429, "a third WORST case is over"
    first.finish()
    ticks(gw, WAIT_TICKS)
    assert slot() == 2 * WORST, "kept by the worker (no tally write came: its request never reached a provider)"
    gw.tick()  # the last tick of its wait: given back with the next admission or tick
    assert slot() == 2 * WORST
    gw.crossings.clear()
    third = chat(gw)
    assert third.local_response is None, "the kept reservation was given back before the take"
    assert slot() == 2 * WORST
    assert gw.crossings["host:proxy_get_shared_data"] == 2, "the version key and the group: one read, one write for both"
    assert gw.crossings["host:proxy_set_shared_data"] == 1, dict(gw.crossings)
    second.finish()
    third.finish()
    ticks(gw, WAIT_TICKS + 2)
    assert slot() == 0


def test_reservations_of_one_quota_given_back_together_are_each_given_back_once(make_gateway):
    """Several ended requests' reservations of one quota without a group, given back in one
    tick: each counts once (they were each given back as many times as there were, an
    undercount, before the seventh session)."""
    [gw], slot = tpm_workers(make_gateway, 10 * WORST)
    a, b, c = chat(gw), chat(gw), chat(gw)
    a.finish()
    b.finish()
    ticks(gw, WAIT_TICKS + 2)
    assert slot() == WORST, "the one still running"
    c.finish()
    ticks(gw, WAIT_TICKS + 2)
    assert slot() == 0


def test_what_ended_requests_give_back_late_is_kept_one_change_per_slot(make_gateway):
    """A worker adds up what its ended requests give back late per quota slot (window,
    reservation epoch and kind), not per request: the admission that writes thirty requests'
    give-backs applies one change, and costs about what the one that writes one request's
    does; each is given back exactly once."""
    def admission_after(n: int) -> tuple[int, int]:
        [gw], slot = tpm_workers(make_gateway, 64 * WORST)  # no credit (a 64th is one request)
        held = [chat(gw) for _ in range(n)]
        for r in held:
            r.finish()
        ticks(gw, WAIT_TICKS + 1)  # no provider: given back after the wait, to be written next
        assert slot() == n * WORST
        gw.crossings.clear()
        assert chat(gw).local_response is None
        return gw.crossings["fuel@proxy_on_request_body"], slot()

    (one, slot_one), (thirty, slot_thirty) = admission_after(1), admission_after(30)
    assert slot_one == slot_thirty == WORST, "each given back once, the new request's taken"
    assert thirty - one < 1_000, (one, thirty)


def test_a_refused_request_gives_back_what_the_worker_kept(make_gateway):
    [gw], slot = tpm_workers(make_gateway, 10000)
    first, second = chat(gw), chat(gw)
    first.finish()
    ticks(gw, WAIT_TICKS + 1)
    # a request bigger than what is left even with the kept reservation given back
    big = send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=9000))
    assert big.local_response.status == 429
    assert slot() == WORST, "refused, and the kept reservation given back all the same"
    second.finish()
    ticks(gw, WAIT_TICKS + 2)
    assert slot() == 0


def test_a_request_refused_by_a_later_group_gives_back_what_earlier_groups_counted(make_gateway):
    """Quotas in different groups are taken one group after another: when a later one refuses,
    what the earlier ones took (a request quota's count, which no hold carries, and a
    concurrency slot) is given back."""
    shared = SharedData()
    publish_keys(shared)
    rpm = {"id": "quota_rpm", "metric": "requests", "window_seconds": 60, "limit": 100}
    conc = {"id": "quota_conc", "metric": "concurrency", "limit": 5}
    tpm = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": WORST + 10}
    gw = make_gateway(with_quotas(rpm, conc, tpm), shared_data=shared)
    used = lambda q: decode_slots(shared.value(f"tollgate.quota.{q}"))[q]["used"]  # noqa: E731
    first = chat(gw)
    assert first.local_response is None and (used("quota_rpm"), used("quota_conc"), used("quota_tpm")) == (1, 1, WORST)
    refused = chat(gw)
    assert refused.local_response.status == 429 and "quota_tpm" in refused.local_response.body.decode()
    assert (used("quota_rpm"), used("quota_conc"), used("quota_tpm")) == (1, 1, WORST), "the refused request counts nowhere"
    first.finish()


def test_a_budget_reserves_at_the_dearest_price_and_settles_at_the_deployments(make_gateway, make_provider):
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_budget", "metric": "cost_usd", "window_seconds": 0, "limit": 20_000_000}
    cfg = gateway_config(quotas=[q], model_prices={"gpt-a": {"input": 1000, "output": 2000, "cache_read": 0, "cache_write": 0}})
    gw = make_gateway(config_bytes(cfg), shared_data=shared)
    provider = provider_on(make_provider, shared)
    slot = lambda: decode_slots(shared.value("tollgate.quota.quota_budget"))["quota_budget"]["used"]  # noqa: E731
    reserved = (len(chat_body()) + 3) // 4 * 1000 + 4096 * 2000
    down = chat(gw)
    assert down.local_response is None and slot() == reserved
    assert chat(gw).local_response is None, "two worst cases fit in $0.02"
    third = chat(gw).local_response
    err = assert_openai_error(third, 429, "budget_exceeded", "rate_limit_error")
    assert "quota_budget" in err["message"]
    props = provider_properties(json.dumps({**json.loads(deployment()), "price": {"input": 500, "output": 1000, "cache_read": 0, "cache_write": 0}}), op=None)
    props.update(down.properties_set)
    up = provider.new_http_context(props)
    up.request_headers(list(down.request_headers_map.pairs), end_of_stream=False)
    up.send_request_body(bytes(down.request_body_forwarded))
    up.response_headers([(":status", "200"), ("content-type", "application/json")])
    up.response_body(json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [],
                                 "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}).encode(), end_of_stream=True)
    before = slot()
    up.finish()
    down.finish()
    ticks(gw, 3, provider)
    assert slot() == before + 12 * 500 + 7 * 1000 - reserved, "the deployment's price, the reservation given back"


def test_tokens_reserve_the_clients_own_output_limit(make_gateway):
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_out", "metric": "output_tokens", "window_seconds": 60, "limit": 100}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    slot = lambda: decode_slots(shared.value("tollgate.quota.quota_out"))["quota_out"]["used"]  # noqa: E731
    assert send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=60)).local_response is None
    assert slot() == 60, "the client's max_tokens, not the 4096 default"
    assert send(gw, "POST", "/v1/chat/completions", chat_body(max_completion_tokens=40)).local_response is None
    assert slot() == 100
    assert send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=1)).local_response.status == 429


def test_a_calendar_window_and_a_schedule_pushed_by_the_control_plane(make_gateway):
    """The control plane lays a calendar window out as Unix times (the filters carry no time-zone
    data): the window is the pushed one `now` falls in, its id its start, retry-after its end;
    a schedule's limit switches at its boundary."""
    shared = SharedData()
    publish_keys(shared)
    start, end = NOW - 100, NOW + 500
    q = {"id": "quota_month", "metric": "requests", "limit": 100, "key_id": "k1",
         "periods": [start, end, end + 2_000_000], "limits": [[NOW - 50, 2], [NOW + 60, 5]]}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    assert chat(gw).local_response is None and chat(gw).local_response is None
    third = chat(gw).local_response
    err = assert_openai_error(third, 429, "rate_limit_exceeded", "rate_limit_error")
    assert "2 requests in this calendar window" in err["message"]
    assert third.header("retry-after") == "500"
    assert decode_slots(shared.value("tollgate.quota.quota_month"))["quota_month"]["window"] == start, "the window's id is its start"
    gw.now += 60  # the schedule raises the limit to 5 within the same window: the count goes on
    assert [chat(gw).local_response is None for _ in range(4)] == [True, True, True, False]
    gw.now += 500  # the next calendar window starts from zero
    assert chat(gw).local_response is None


def test_a_quota_of_a_provider_is_taken_per_attempt_and_refuses_with_a_429(make_gateway, make_provider):
    """Only an attempt knows its provider: the provider filter takes the quotas scoped to it
    (the gateway filter hands on what to reserve by) and answers a refused attempt with a 429
    in the client's format; an attempt to another provider is not counted."""
    shared = SharedData()
    publish_keys(shared)
    rpm = {"id": "quota_openai", "metric": "requests", "window_seconds": 60, "limit": 1, "provider": "openai", "group": "p=openai;"}
    conc = {"id": "quota_conc", "metric": "concurrency", "limit": 5, "provider": "openai", "group": "p=openai;"}
    gw = make_gateway(with_quotas(rpm, conc), shared_data=shared)
    provider = provider_on(make_provider, shared)  # the gateway filter publishes the quotas of providers for it

    def attempt(down, provider_kind="openai"):
        props = provider_properties(deployment(provider=provider_kind), op=None)
        props.update(down.properties_set)
        up = provider.new_http_context(props)
        up.request_headers(list(down.request_headers_map.pairs), end_of_stream=False)
        return up

    first, second = chat(gw), chat(gw)
    assert first.local_response is None and second.local_response is None, "the gateway takes none of them"
    held = decode_request_state(first.properties_set[REQUEST_STATE])
    assert held["holds"] == [] and held["reserve_by"]["body_len"] == len(chat_body())
    up = attempt(first)
    assert up.local_response is None
    slots = lambda: decode_slots(shared.value("tollgate.quota.g.p=openai;"))  # noqa: E731
    assert (slots()["quota_openai"]["used"], slots()["quota_conc"]["used"]) == (1, 1)
    refused = attempt(second)
    err = assert_openai_error(refused.local_response, 429, "rate_limit_exceeded", "rate_limit_error")
    assert "quota_openai" in err["message"] and "provider openai" in err["message"]
    assert refused.local_response.header("retry-after") == str(60 - NOW % 60)
    assert (slots()["quota_openai"]["used"], slots()["quota_conc"]["used"]) == (1, 1), "the refused attempt took nothing"
    refused.finish()
    other = attempt(second, "anthropic")
    assert other.local_response is None, "an attempt to another provider goes"
    assert slots()["quota_openai"]["used"] == 1
    up.send_request_body(bytes(first.request_body_forwarded))
    up.response_headers([(":status", "200"), ("content-type", "application/json")])
    up.response_body(json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [],
                                 "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}).encode(),
                     end_of_stream=True)
    up.finish()
    assert (slots()["quota_openai"]["used"], slots()["quota_conc"]["used"]) == (1, 0), "the slot given back at the attempt's end"



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

def test_a_spent_quota_of_a_provider_is_gone_around_when_the_model_has_another(make_gateway):
    """The provider filter's refusal cannot be retried past (Envoy does not retry an upstream
    filter's own answer), so the gateway filter, which checks the leases of the model's
    providers' quotas before routing, sends a request whose quota at a provider is spent (the
    lease used up and the authority out) to the model's cluster without that provider."""
    from wasm_fixtures import encode_slots
    shared = SharedData()
    publish_keys(shared)
    rpm = {"id": "quota_openai", "metric": "requests", "window_seconds": 60, "limit": 10, "lease": True, "share": 5,
           "provider": "openai", "group": "p=openai;"}
    bedrock = {**rpm, "id": "quota_bedrock", "provider": "bedrock", "group": "p=bedrock;"}
    models = [{"name": "gpt-a", "cluster": "tg_a", "owned_by": "tollgate", "created": 1, "providers": ["openai", "bedrock", "anthropic"],
               "without": [{"providers": ["openai"], "cluster": "tg_a_no_openai"},
                           {"providers": ["bedrock"], "cluster": "tg_a_no_bedrock"},
                           {"providers": ["bedrock", "openai"], "cluster": "tg_a_no_bedrock_openai"}]},
              {"name": "gpt-b", "cluster": "tg_b", "owned_by": "tollgate", "created": 2, "providers": ["openai"]}]
    gw = make_gateway(config_bytes(gateway_config(quotas=[rpm, bedrock], models=models)), shared_data=shared)
    window = NOW // 60

    def lease(used, leased, free, provider="openai"):
        shared.set(f"tollgate.quota.g.p={provider};",
                   encode_slots({f"quota_{provider}": {"window": window, "used": used, "leased": leased, "free": free}}))
    lease(used=0, leased=5, free=5, provider="bedrock")

    def cluster(model="gpt-a"):
        ctx = send(gw, "POST", "/v1/chat/completions", chat_body(model))
        assert ctx.local_response is None, ctx.local_response
        return ctx.request_headers_map.get("x-tollgate-cluster")

    lease(used=2, leased=5, free=3)
    assert cluster() == "tg_a", "the lease covers it: the model's own cluster"
    lease(used=5, leased=5, free=0)
    assert cluster() == "tg_a_no_openai", "spent at OpenAI and the authority out: around OpenAI"
    assert cluster("gpt-b") == "tg_b", "no other provider: the provider filter answers with its 429"
    lease(used=5, leased=5, free=0, provider="bedrock")
    assert cluster() == "tg_a_no_bedrock_openai", "both spent: to the provider left"


def test_past_half_a_quota_a_reservation_is_given_back_at_once(make_gateway):
    """A reservation held late counts against every worker until given back: past half its limit
    a quota's are given back at the request's end, so that a client's next request (on another
    worker) is not refused by one that is over."""
    workers, slot = tpm_workers(make_gateway, 6000, workers=2)
    for i in range(4):
        r = chat(workers[i % 2])
        assert r.local_response is None, f"request {i}"
        assert slot() == WORST
        r.finish()
        assert slot() == 0, "given back at the end (4,100 of 6,000 taken: past half)"


def answer_attempt(provider, down, prompt: int, completion: int, extra_headers=()):
    """The provider filter's attempt for gateway request `down`, answered with this usage."""
    props = provider_properties(deployment(), op=None)
    props.update(down.properties_set)
    up = provider.new_http_context(props)
    up.request_headers(list(down.request_headers_map.pairs) + list(extra_headers), end_of_stream=False)
    up.send_request_body(bytes(down.request_body_forwarded))
    up.response_headers([(":status", "200"), ("content-type", "application/json")])
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    up.response_body(json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [],
                                 "usage": usage}).encode(), end_of_stream=True)
    return up



BEDROCK = deployment(provider="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0",
                     authority="bedrock-runtime.us-east-1.amazonaws.com", base_path="", credential="aws", region="us-east-1")
BEDROCK_ANSWER = json.dumps({"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
                             "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}, "metrics": {"latencyMs": 1}}).encode()


@pytest.mark.parametrize("provider_kind", ["openai", "bedrock"])
def test_rate_limit_headers_replace_a_providers_own_and_are_added_where_it_sends_none(make_gateway, make_provider, provider_kind):
    """The rate-limit headers replace the provider's own where its answers may carry the same
    names (an OpenAI-style server's `x-ratelimit-*`): the client sees one value of each, Tollgate's.
    Bedrock's answers carry none, so there they are added (a replace looks for the name's values
    first: about 750 of Envoy's instructions a header more), with the same headers seen."""
    shared = SharedData()
    publish_keys(shared)
    rpm = {"id": "quota_rpm", "metric": "requests", "window_seconds": 60, "limit": 100}
    tpm = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 100 * WORST}
    gw = make_gateway(with_quotas(rpm, tpm), shared_data=shared)
    provider = make_provider(shared_data=shared)
    shared.set("tollgate.credentials.v1", credentials_doc(aws={"aws": {"access_key_id": "AKIDQUOTA", "secret_access_key": "quota-secret"}}))
    provider.tick()
    down = chat(gw)
    assert down.local_response is None
    props = provider_properties(BEDROCK if provider_kind == "bedrock" else deployment(), op=None)
    props.update(down.properties_set)
    up = provider.new_http_context(props)
    up.request_headers(list(down.request_headers_map.pairs), end_of_stream=False)
    up.send_request_body(bytes(down.request_body_forwarded))
    assert up.local_response is None, up.local_response
    provider.crossings.clear()
    if provider_kind == "bedrock":
        up.response_headers([(":status", "200"), ("content-type", "application/json"), ("x-amzn-requestid", "r1")])
        up.response_body(BEDROCK_ANSWER, end_of_stream=True)
    else:
        own = [("x-ratelimit-limit-requests", "5000"), ("x-ratelimit-remaining-tokens", "1"), ("x-ratelimit-reset-requests", "12ms")]
        up.response_headers([(":status", "200"), ("content-type", "application/json")] + own)
        up.response_body(json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [],
                                     "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode(),
                         end_of_stream=True)
    seen = [(k.decode(), v.decode()) for k, v in up.response_headers_map.pairs if k.startswith(b"x-ratelimit-")]
    assert sorted(seen) == sorted([("x-ratelimit-limit-requests", "100"), ("x-ratelimit-remaining-requests", "99"),
                                   ("x-ratelimit-reset-requests", f"{60 - NOW % 60}s"), ("x-ratelimit-limit-tokens", str(100 * WORST)),
                                   ("x-ratelimit-remaining-tokens", str(99 * WORST)), ("x-ratelimit-reset-tokens", f"{60 - NOW % 60}s")]), seen
    added = provider.crossings["host:proxy_add_header_map_value"]
    assert added == (6 if provider_kind == "bedrock" else 0), dict(provider.crossings)


def test_a_first_bedrock_attempt_signs_with_the_admission_time_and_a_retry_reads_the_clock(make_gateway, make_provider):
    """SigV4 signs with the time: a first attempt of a request with quotas takes the time the
    gateway filter read to admit it (the same event-loop pass), as its meter does, and reads no
    clock of its own; a retry reads the clock."""
    shared = SharedData()
    publish_keys(shared)
    tpm = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 100 * WORST}
    gw = make_gateway(with_quotas(tpm), shared_data=shared)
    provider = make_provider(shared_data=shared)
    shared.set("tollgate.credentials.v1", credentials_doc(aws={"aws": {"access_key_id": "AKIDQUOTA", "secret_access_key": "quota-secret"}}))
    provider.tick()
    down = chat(gw)
    admitted_ns = decode_request_state(down.properties_set[REQUEST_STATE])["admitted_ns"]
    assert admitted_ns > 0
    clock = "host:proxy_get_current_time_nanoseconds"
    for attempt, reads in ((1, 0), (2, 1)):
        props = provider_properties(BEDROCK, op=None)
        props.update(down.properties_set)
        up = provider.new_http_context(props)
        provider.crossings.clear()
        up.request_headers(list(down.request_headers_map.pairs) + [("x-envoy-attempt-count", str(attempt))], end_of_stream=False)
        up.send_request_body(bytes(down.request_body_forwarded))
        assert provider.crossings[clock] == reads, (attempt, dict(provider.crossings))
        if attempt == 1:
            amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(admitted_ns // 10**9))
            assert up.local_response is None, up.local_response
            assert up.request_headers_map.get("x-amz-date") == amz_date
        up.response_headers([(":status", "200"), ("content-type", "application/json")])
        up.response_body(BEDROCK_ANSWER, end_of_stream=True)
        up.finish()

def test_usage_goes_through_the_tally_while_roomy_and_into_the_slot_past_half(make_gateway, make_provider):
    """A roomy request's attempts add their usage to the worker's tally (no slot read); past
    half the limit the provider filter settles in the slot at once, as the gateway gives the
    reservation back at once. A provider VM made again (a new instance in the tally) starts its
    totals from zero, and the gateway counts them from zero: nothing is counted twice or lost
    of what it wrote."""
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 3 * WORST}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    provider = provider_on(make_provider, shared)
    slot = lambda: decode_slots(shared.value("tollgate.quota.quota_tpm"))["quota_tpm"]["used"]  # noqa: E731
    roomy = chat(gw)  # 2 worst cases left of 3: roomy
    assert decode_request_state(roomy.properties_set[REQUEST_STATE])["tally"] != 0
    answer_attempt(provider, roomy, 10, 5).finish()
    answer_attempt(provider, roomy, 1, 1).finish()  # a retry: both attempts count
    provider.tick()
    first = decode_tally(shared.value(tally_key(roomy)))
    assert first["entries"][0]["used"] == 17
    roomy.finish()
    tight = chat(gw)  # 1 worst case left of 3: past half
    assert decode_request_state(tight.properties_set[REQUEST_STATE])["tally"] == 0
    assert slot() == 2 * WORST
    provider.crossings.clear()
    answer_attempt(provider, tight, 20, 3).finish()
    assert slot() == 2 * WORST + 23, "settled in the slot at once"
    assert provider.crossings["host:proxy_get_shared_data"] == 1 and provider.crossings["host:proxy_set_shared_data"] == 1
    assert decode_tally(shared.value(tally_key(roomy)))["entries"][0]["used"] == 17, "not in the tally"
    tight.finish()
    assert slot() == WORST + 23, "its reservation given back at once"
    ticks(gw, 3, provider)
    assert slot() == 17 + 23, "the roomy request's usage counted, its reservation given back"
    # The provider's VM is made again: its tally starts from zero under a new instance.
    again = provider_on(make_provider, shared)
    r = chat(gw)
    answer_attempt(again, r, 2, 2).finish()
    again.tick()
    after = decode_tally(shared.value(tally_key(r)))
    assert after["instance"] != first["instance"] and after["entries"][0]["used"] == 4
    r.finish()
    ticks(gw, 3, again)
    assert slot() == 17 + 23 + 4


def test_the_provider_writes_a_tally_once_a_period_whatever_its_roots_and_stops_when_quiet(make_gateway, make_provider):
    """The provider VM writes the tallies on its tick, not when an attempt ends: once a period
    (at least 200 ms apart) however many of its roots (one per cluster) tick, and for 40 writes
    after an attempt last ended on a tally (each lets the gateway give back what waited for a
    write newer than its request's end); then not again until another attempt ends."""
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 10 * WORST}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    provider = provider_on(make_provider, shared)
    first_root = provider.root_id
    provider.add_root(b"")  # another cluster's
    down = chat(gw)
    answer_attempt(provider, down, 3, 4).finish()
    down.finish()
    seq = lambda: decode_tally(shared.value(tally_key(down)))["seq"]  # noqa: E731
    assert shared.value(tally_key(down)) is None, "nothing written when the attempt ends"
    provider.tick()
    assert seq() == 1
    provider.tick(root_id=first_root)  # the other root's tick, at the same time
    assert seq() == 1, "one write a period for the VM"
    for _ in range(45):
        provider.tick()
    assert seq() == 40, "40 writes after the attempt, then none"
    again = chat(gw)
    answer_attempt(provider, again, 1, 1).finish()
    provider.tick()
    assert seq() == 41 and decode_tally(shared.value(tally_key(down)))["entries"][0]["used"] == 9


def test_an_attempt_that_ends_after_its_request_still_counts_before_the_reservation_goes(make_gateway, make_provider):
    """A client that goes away: Envoy ends the gateway's stream first and the attempt's after it
    (in the same pass of the event loop; here even after the gateway's next tick). The
    reservation waits for a tally write newer than the one the first tick after the request's
    end saw, so the attempt's usage, counted after the request ended, is counted first: the
    slot never counts less than the usage, with no tally written yet and with one written
    before."""
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 10 * WORST}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    provider = provider_on(make_provider, shared)
    slot = lambda: decode_slots(shared.value("tollgate.quota.quota_tpm"))["quota_tpm"]["used"]  # noqa: E731
    total = 0
    for prompt, completion in ((300, 200), (40, 2)):
        down = chat(gw)
        up = answer_attempt(provider, down, prompt, completion)
        total += prompt + completion
        down.finish()  # the request ends first
        gw.tick()
        up.finish()  # then its attempt, with its usage
        seen = [slot()]
        for _ in range(5):
            gw.tick()
            seen.append(slot())
        assert seen == [total - prompt - completion + WORST] * 6, f"no write since the end: the reservation waits: {seen}"
        for _ in range(3):
            provider.tick()
            gw.tick()
            seen.append(slot())
        assert all(s >= total for s in seen), f"never counted below the usage: {seen}"
        assert seen[-1] == total, seen


def test_a_quota_that_fits_lowers_the_output_limit_instead_of_refusing(make_gateway):
    """`fit_output`: a request whose worst case no longer fits is admitted with its output limit
    lowered to what is left (the body rewritten, its content-length with it), down to the
    quota's floor; below that it is refused."""
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_out", "metric": "output_tokens", "window_seconds": 60, "limit": 100, "fit_output": 10}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    slot = lambda: decode_slots(shared.value("tollgate.quota.quota_out"))["quota_out"]["used"]  # noqa: E731
    first = send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=60, temperature=0.5))
    assert first.local_response is None and slot() == 60
    assert json.loads(first.request_body_forwarded)["max_tokens"] == 60, "a request that fits goes as it came"
    lowered = send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=60, temperature=0.5))
    assert lowered.local_response is None, "lowered, not refused"
    body = json.loads(lowered.request_body_forwarded)
    assert (body["max_tokens"], body["temperature"], body["messages"]) == (40, 0.5, [{"role": "user", "content": "Hello"}])
    assert lowered.request_header("content-length") == str(len(lowered.request_body_forwarded))
    assert slot() == 100
    # Nothing left: not even the floor fits.
    assert_openai_error(send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=60)).local_response, 429, "rate_limit_exceeded", "rate_limit_error")
    # A request that never set a limit, lowered, now carries one (it reserved 4,096).
    lowered.finish()
    gw.tick()
    assert slot() == 60
    capped = send(gw, "POST", "/v1/chat/completions", chat_body())
    assert capped.local_response is None and json.loads(capped.request_body_forwarded)["max_tokens"] == 40
    # Anthropic's Messages: its own max_tokens.
    first.finish()
    capped.finish()
    gw.tick()
    msg = json.dumps({"model": "gpt-a", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hi"}]}).encode()
    sent = send(gw, "POST", "/v1/messages", msg, via="x-api-key", extra=[("anthropic-version", "2023-06-01")])
    assert sent.local_response is None and json.loads(sent.request_body_forwarded)["max_tokens"] == 100


def test_a_budget_that_fits_lowers_a_request_to_what_it_can_pay(make_gateway):
    shared = SharedData()
    publish_keys(shared)
    input_cost = (len(chat_body(max_tokens=500)) + 3) // 4 * 1000
    # Room for the first request whole and 123 output tokens (and some) of the second.
    limit = 2 * input_cost + 500 * 2000 + 123 * 2000 + 1999
    q = {"id": "quota_budget", "metric": "cost_usd", "window_seconds": 0, "limit": limit, "fit_output": 100}
    cfg = gateway_config(quotas=[q], model_prices={"gpt-a": {"input": 1000, "output": 2000, "cache_read": 0, "cache_write": 0}})
    gw = make_gateway(config_bytes(cfg), shared_data=shared)
    assert send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=500)).local_response is None
    second = send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=500))
    assert second.local_response is None and json.loads(second.request_body_forwarded)["max_tokens"] == 123
    used = decode_slots(shared.value("tollgate.quota.quota_budget"))["quota_budget"]["used"]
    assert used == limit - 1999, "the lowered request reserves what it may cost"
    err = assert_openai_error(send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=500)).local_response, 429, "budget_exceeded", "rate_limit_error")
    assert "quota_budget" in err["message"]


def test_a_quota_without_fit_refuses(make_gateway):
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_out", "metric": "output_tokens", "window_seconds": 60, "limit": 100}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    assert send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=60)).local_response is None
    assert send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=60)).local_response.status == 429


def test_a_responses_request_is_never_lowered_below_16_output_tokens(make_gateway):
    """OpenAI's Responses API refuses a `max_output_tokens` under 16: the floor is 16 there
    whatever the quota's."""
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_out", "metric": "output_tokens", "window_seconds": 60, "limit": 100, "fit_output": 4}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    body = lambda: json.dumps({"model": "gpt-a", "input": "Hi", "max_output_tokens": 500}).encode()  # noqa: E731
    first = send(gw, "POST", "/v1/responses", body())
    assert first.local_response is None and json.loads(first.request_body_forwarded)["max_output_tokens"] == 100
    first.finish()
    gw.tick()
    assert send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=88)).local_response is None
    # 12 left: a chat could have them, a Responses request cannot.
    assert send(gw, "POST", "/v1/responses", body()).local_response.status == 429
    chat = send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=500))
    assert chat.local_response is None and json.loads(chat.request_body_forwarded)["max_tokens"] == 12


def test_a_first_attempt_starts_when_the_gateway_admitted_it_without_a_clock_read(make_gateway, make_provider, make_service):
    """The gateway reads the clock for the quotas' windows and hands the instant on in the
    holds: the first attempt's meter starts from it (no clock read of its own before the
    answer's end); a retry reads its own start."""
    from test_usage_records import load_credentials, shipped

    shared = SharedData()
    publish_keys(shared)
    service, provider = make_service(shared_data=shared), make_provider(shared_data=shared)
    load_credentials(service, provider)
    q = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 100 * WORST}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    down = chat(gw)
    assert decode_request_state(down.properties_set[REQUEST_STATE])["admitted_ns"] == NOW * 10**9
    clock = "host:proxy_get_current_time_nanoseconds"

    def attempt(count: int, starts: float, ends: float):
        """Clock reads of attempt `count` until its answer has passed (its end reads one)."""
        provider.now = starts
        provider.crossings.clear()
        up = answer_attempt(provider, down, 3, 2, extra_headers=[("x-envoy-attempt-count", str(count))])
        reads = provider.crossings[clock]
        provider.now = ends
        up.finish()
        return reads

    assert attempt(1, NOW + 2.5, NOW + 3.0) == 0, "the first attempt reads no clock to start"
    assert attempt(2, NOW + 3.0, NOW + 3.25) == 1, "a retry reads its own start"
    records = shipped(service, provider)
    # From the gateway's admission (3 s before the first attempt's end), and from the retry's own
    # start (the harness's clock is a float: within a millisecond).
    assert [r["attempt"] for r in records] == [0, 1]
    assert [abs(r["latency_ms"] - want) <= 1 for r, want in zip(records, (3000, 250))] == [True, True], records


def test_a_worker_spends_its_credit_with_no_host_call_and_gives_back_the_rest_on_its_tick(make_gateway):
    """While a quota is roomy, an admission that takes its group also takes a credit of 64
    requests' amounts (at most a 64th of the limit); the worker's next requests spend it in its
    memory (no shared-data write), and what is left of it is given back on the worker's tick:
    the slot always counts every reservation, and after the tick exactly them."""
    shared = SharedData()
    publish_keys(shared)
    credit = 64  # CREDIT_REQUESTS in the gateway's quotas.rs
    limit = 64 * credit
    q = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": limit * WORST}
    gw = make_gateway(with_quotas(q), shared_data=shared)
    slot = lambda: decode_slots(shared.value("tollgate.quota.quota_tpm"))["quota_tpm"]["used"]  # noqa: E731
    first = chat(gw)
    assert first.local_response is None
    assert slot() == (1 + credit) * WORST, "the request's reservation and the worker's credit"
    gw.crossings.clear()
    spent = [chat(gw) for _ in range(credit)]
    assert all(c.local_response is None for c in spent)
    assert gw.crossings["host:proxy_set_shared_data"] == 0, dict(gw.crossings)
    # One read a request: the key table's version (written empty), as for a key with no quota.
    assert gw.crossings["host:proxy_get_shared_data"] == credit, dict(gw.crossings)
    assert slot() == (1 + credit) * WORST, "spent from the credit"
    states = [decode_request_state(c.properties_set[REQUEST_STATE]) for c in (first, spent[0], spent[-1])]
    assert all(s["holds"][0]["tag"] > 0 and s["holds"][0]["window"] == states[0]["holds"][0]["window"] for s in states)
    remaining = [int(dict(s["headers"])["x-ratelimit-remaining-tokens"]) for s in states]
    assert remaining == [(limit - n) * WORST for n in (1, 2, 1 + credit)], "the headers count down as the credit is spent"
    assert all(s["tally"] != 0 for s in states), "roomy: usage through the tally"
    gw.crossings.clear()
    again = chat(gw)  # the credit is spent: the group is taken again, with a new credit
    assert again.local_response is None and gw.crossings["host:proxy_set_shared_data"] == 1
    assert slot() == 2 * (1 + credit) * WORST
    gw.tick()
    assert slot() == (2 + credit) * WORST, "the rest of the credit given back: the reservations"
    gw.crossings.clear()
    chat(gw)
    assert gw.crossings["host:proxy_set_shared_data"] == 1, "no credit after the tick: taken again"


def test_credits_of_two_workers_never_go_over_and_are_all_spent_by_the_end(make_gateway):
    """Exactness with credits: two workers of one Envoy, a request quota of 1,024 (credits of 16
    while half of it is left), ticks every 40 requests: exactly 1,024 admitted of 1,100, with far
    fewer compare-and-swaps than requests while the quota is roomy."""
    shared = SharedData()
    publish_keys(shared)
    q = {"id": "quota_rpm", "metric": "requests", "window_seconds": 60, "limit": 1024, "key_id": "k1"}
    workers = [make_gateway(with_quotas(q), shared_data=shared) for _ in range(2)]
    admitted, writes_roomy = 0, 0
    for n in range(1100):
        w = workers[n % 2]
        if n % 40 == 39:
            for x in workers:
                x.tick()
        w.crossings.clear()
        c = chat(w)
        if n < 320:
            writes_roomy += w.crossings["host:proxy_set_shared_data"]
        if c.local_response is None:
            admitted += 1
        else:
            assert_openai_error(c.local_response, 429, "rate_limit_exceeded", "rate_limit_error")
    assert admitted == 1024
    assert writes_roomy < 60, f"{writes_roomy} writes for 320 roomy requests"
    for x in workers:
        x.tick()
    assert decode_slots(shared.value("tollgate.quota.quota_rpm"))["quota_rpm"]["used"] == 1024


def test_no_credit_for_a_group_with_a_quota_that_gets_none_and_credits_go_back_when_the_configuration_changes(make_gateway):
    """Credits are for a whole group: a group with a concurrency quota (which never gets one)
    takes none for its token quota either; and a new configuration gives back what the worker's
    credits had left."""
    shared = SharedData()
    publish_keys(shared)
    conc = {"id": "quota_conc", "metric": "concurrency", "limit": 100, "group": "k1"}
    tpm = {"id": "quota_tpm", "metric": "total_tokens", "window_seconds": 60, "limit": 4096 * WORST, "group": "k1"}
    gw = make_gateway(with_quotas(conc, tpm), shared_data=shared)
    used = lambda key, q: decode_slots(shared.value(f"tollgate.quota.{key}"))[q]["used"]  # noqa: E731
    assert chat(gw).local_response is None  # (the group's value made, then taken)
    gw.crossings.clear()
    for _ in range(3):
        assert chat(gw).local_response is None
    assert used("g.k1", "quota_tpm") == 4 * WORST, "no credit taken"
    assert gw.crossings["host:proxy_set_shared_data"] == 3, "each request takes the group"
    alone = make_gateway(with_quotas(tpm | {"group": None}), shared_data=shared)
    assert chat(alone).local_response is None
    assert used("quota_tpm", "quota_tpm") == 65 * WORST, "alone, the token quota takes a credit (of 64 requests)"
    assert alone.reconfigure(with_quotas(tpm | {"group": None, "limit": 6000 * WORST})) is True
    assert used("quota_tpm", "quota_tpm") == WORST, "the credit given back with the new configuration"
