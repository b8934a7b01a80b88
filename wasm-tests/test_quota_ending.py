"""Quotas after admission (issue 13): a request's end gives back what it held, at once or, while its
quotas are roomy, once its usage is in the worker's tally (written by the provider filter on its
tick); the worker's credits, spent in memory and given back on its tick."""

from __future__ import annotations

import json
import time

from proxy_wasm_host import SharedData
from wasm_fixtures import (assert_openai_error, chat_body, decode_request_state, decode_slots, decode_tally, deployment,
                           publish_keys, provider_properties, send)

from quota_helpers import (REQUEST_STATE, WAIT_TICKS, WORST, answer_attempt, chat, provider_on, tally_key, ticks,
                           tpm_workers, with_quotas)


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


def test_a_worker_spends_its_credit_with_no_host_call_and_gives_back_the_rest_on_its_tick(make_gateway):
    """While a quota is roomy, an admission that takes its group also takes a credit of 64
    requests' amounts (at most a 64th of the limit); the worker's next requests spend it in its
    memory (no shared-data write), and what is left of it is given back on the worker's tick:
    the slot always counts every reservation, and after the tick exactly them."""
    shared = SharedData()
    publish_keys(shared)
    credit = 64  # CREDIT_REQUESTS in the gateway's quotas/credits.rs
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
