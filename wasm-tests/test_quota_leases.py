"""Quota leases in the data plane (issue 13): a leased quota is spent from the lease the quota
authority granted this Envoy; a request whose lease is spent waits for a grant (a callout with
the service VM's ticket, then the request resumes or is refused), the service VM keeps leases
topped up and takes the next window's ahead, and when the authority cannot be reached a rate
limit falls back to this Envoy's share while a budget stays closed."""

from __future__ import annotations

import hashlib
import hmac
import json

from proxy_wasm_host import SharedData
from wasm_fixtures import (DATA_PLANE_TOKEN, NOW, assert_openai_error, chat_body, config_bytes, decode_request_state,
                           decode_slots, encode_slots, gateway_config, publish_keys, send)

CLUSTER = "tollgate_control_plane_internal"
NODE = {("node", "id"): b"envoy-a"}
RPM = {"id": "quota_rpm", "metric": "requests", "window_seconds": 60, "limit": 600, "lease": True, "share": 300}
BUDGET = {"id": "quota_budget", "metric": "cost_usd", "limit": 10_000_000_000, "lease": True}
TICKET = "t1.%d.%s"


def slot(shared: SharedData, quota: str, suffix: str = "") -> dict:
    return decode_slots(shared.value(f"tollgate.quota.{quota}{suffix}"))[quota]


def put_slot(shared: SharedData, quota: str, window: int, used: int, leased: int, free: int, suffix: str = "") -> None:
    shared.set(f"tollgate.quota.{quota}{suffix}", encode_slots({quota: {"window": window, "used": used, "leased": leased, "free": free}}))


PRICES = {"gpt-a": {"input": 1000, "output": 2000, "cache_read": 0, "cache_write": 0}}


def gateway_with(make_gateway, *quotas, shared=None):
    shared = shared or SharedData()
    publish_keys(shared)
    shared.set("tollgate.quota.ticket.v1", b"t1.9999999999.00")
    cfg = gateway_config(quotas=list(quotas), model_prices=PRICES)
    return make_gateway(config_bytes(cfg), shared_data=shared, properties=NODE), shared


def chat(gw):
    return send(gw, "POST", "/v1/chat/completions", chat_body())


def grant_answer(call, granted: int, free: int) -> bytes:
    asks = json.loads(call.body)["asks"]
    return json.dumps({"grants": [{"quota": a["quota"], "window": a["window"], "granted": granted, "free": free} for a in asks]}).encode()


def test_a_spent_lease_waits_for_a_grant_then_the_request_goes_on(make_gateway):
    gw, shared = gateway_with(make_gateway, RPM)
    first = chat(gw)
    assert first.local_response is None and not first.continued, "held for the grant"
    assert CLUSTER in str(gw.http_calls[-1].upstream)
    call = gw.http_calls[-1]
    headers = dict(call.headers)
    assert headers[":path"] == "/internal/v1/quota/grants" and headers[":method"] == "POST"
    assert headers["x-tollgate-quota-ticket"] == "t1.9999999999.00", "the service VM's ticket, never the token"
    assert "authorization" not in headers
    ask = json.loads(call.body)
    assert ask["envoy"] == "envoy-a"
    assert ask["asks"] == [{"quota": "quota_rpm", "window": NOW // 60, "want": 12, "need": 1}]
    gw.respond_http_call(call.token, body=grant_answer(call, 3, 500))
    assert first.continued == [0], "resumed"
    assert first.request_header("x-tollgate-cluster") is not None
    assert slot(shared, "quota_rpm") == {"window": NOW // 60, "used": 1, "leased": 3, "free": 500}
    held = decode_request_state(first.properties_set[("tollgate_request",)])
    assert ["x-ratelimit-remaining-requests", "502"] in held["headers"], "the authority's free + the lease's spare"
    assert ["x-ratelimit-limit-requests", "600"] in held["headers"]
    calls = len(gw.http_calls)
    for _ in range(2):
        assert chat(gw).local_response is None
    assert len(gw.http_calls) == calls, "spent from the lease: no call"
    assert slot(shared, "quota_rpm")["used"] == 3


def test_nothing_left_refuses_and_the_next_request_does_not_ask_again(make_gateway):
    gw, shared = gateway_with(make_gateway, RPM)
    first = chat(gw)
    gw.respond_http_call(gw.http_calls[-1].token, body=json.dumps({"grants": []}).encode())
    err = assert_openai_error(first.local_response, 429, "rate_limit_exceeded", "rate_limit_error")
    assert "quota_rpm" in err["message"]
    assert first.local_response.header("retry-after") == str(60 - NOW % 60)
    # The authority says the window is spent: refused without a call until it ends.
    put_slot(shared, "quota_rpm", NOW // 60, 5, 5, 0)
    calls = len(gw.http_calls)
    assert chat(gw).local_response.status == 429
    assert len(gw.http_calls) == calls
    gw.now += 60
    assert chat(gw).local_response is None and len(gw.http_calls) == calls + 1, "a new window asks again"


def test_the_next_windows_lease_taken_ahead_is_used_at_the_boundary(make_gateway):
    gw, shared = gateway_with(make_gateway, RPM)
    put_slot(shared, "quota_rpm", NOW // 60 - 1, 9, 9, 40)
    put_slot(shared, "quota_rpm", NOW // 60, 0, 4, 100, suffix=".next")
    assert chat(gw).local_response is None and not gw.http_calls
    assert slot(shared, "quota_rpm") == {"window": NOW // 60, "used": 1, "leased": 4, "free": 100}


def test_without_the_authority_a_rate_limit_falls_back_to_its_share_and_a_budget_is_closed(make_gateway):
    gw, shared = gateway_with(make_gateway, dict(RPM, share=2))
    first = chat(gw)
    gw.fail_http_call(gw.http_calls[-1].token)
    assert first.continued == [0] and first.local_response is None, "admitted on this Envoy's share"
    assert any("did not answer a grant" in m for m in gw.log_text.splitlines())
    shared.set("tollgate.quota.authority.v1", b"down")
    calls = len(gw.http_calls)
    assert chat(gw).local_response is None, "the second of a share of 2, without a call"
    assert chat(gw).local_response.status == 429
    assert len(gw.http_calls) == calls
    budget, _ = gateway_with(make_gateway, BUDGET)
    waiting = chat(budget)
    budget.fail_http_call(budget.http_calls[-1].token)
    assert_openai_error(waiting.local_response, 429, "budget_exceeded", "rate_limit_error")


def test_a_refused_request_gives_back_the_quotas_it_took(make_gateway):
    gw, shared = gateway_with(make_gateway, dict(RPM, id="quota_a"), dict(RPM, id="quota_b"))
    put_slot(shared, "quota_a", NOW // 60, 0, 10, 100)
    put_slot(shared, "quota_b", NOW // 60, 5, 5, 0)
    assert chat(gw).local_response.status == 429
    assert slot(shared, "quota_a")["used"] == 0


def test_an_answer_that_the_quota_is_short_stands_half_a_second_then_is_asked_again(make_gateway):
    """With its lease spent and the authority's last answer short of the request, a request is
    refused without asking while that answer is under half a second old (an Envoy's ask is
    noted in shared data, for all its workers); an older one is asked again, as the usage the
    authority recorded since may have freed some (a spent budget's sequential client was
    refused with room left when the answer was stale)."""
    gw, shared = gateway_with(make_gateway, RPM)
    calls = len(gw.http_calls)
    put_slot(shared, "quota_rpm", NOW // 60, 5, 5, 0)
    assert chat(gw).local_response.status == 429, "no ask noted: the slot's word is taken"
    assert len(gw.http_calls) == calls
    asked = lambda seconds_ago: shared.set("tollgate.quota.quota_rpm.asked", (int((gw.now - seconds_ago) * 1e9)).to_bytes(8, "little"))  # noqa: E731
    asked(0.2)
    assert chat(gw).local_response.status == 429, "asked 0.2 s ago: refused without asking"
    assert len(gw.http_calls) == calls
    asked(0.7)
    waiting = chat(gw)
    assert waiting.local_response is None and len(gw.http_calls) == calls + 1, "asked 0.7 s ago: asked again"
    noted = int.from_bytes(shared.value("tollgate.quota.quota_rpm.asked"), "little")
    assert abs(noted - gw.now * 1e9) < 1e6, "the new ask noted"


def test_the_gateway_publishes_its_leased_quotas_for_the_service_vm(make_gateway):
    _, shared = gateway_with(make_gateway, RPM, {"id": "quota_c", "metric": "concurrency", "limit": 3})
    docs = json.loads(shared.value("tollgate.quota.docs.v1"))
    assert [d["id"] for d in docs] == ["quota_rpm"]


# ------------------------------------------------------------------------------ the service VM


def service_with_docs(make_service, *docs):
    shared = SharedData()
    shared.set("tollgate.quota.docs.v1", json.dumps(list(docs)).encode())
    return make_service(shared_data=shared, properties=NODE), shared


def grant_calls(host):
    return [c for c in host.http_calls if dict(c.headers)[":path"] == "/internal/v1/quota/grants"]


def test_the_service_vm_mints_a_ticket_the_control_plane_can_check(make_service):
    svc, shared = service_with_docs(make_service, RPM)
    svc.tick()
    ticket = shared.value("tollgate.quota.ticket.v1").decode()
    tag, expires, mac = ticket.split(".")
    assert tag == "t1" and int(expires) > svc.now
    want = hmac.new(DATA_PLANE_TOKEN.encode(), f"tollgate-quota-grant.{expires}".encode(), hashlib.sha256).hexdigest()
    assert mac == want
    assert DATA_PLANE_TOKEN not in ticket


def test_the_service_vm_tops_up_a_lease_in_use_and_takes_the_next_window_ahead(make_service):
    svc, shared = service_with_docs(make_service, RPM)
    svc.now = NOW - NOW % 60 + 10.0
    window = int(svc.now) // 60
    svc.tick(advance=False)
    assert not grant_calls(svc), "an idle quota is not leased"
    put_slot(shared, "quota_rpm", window, 4, 4, 500)
    svc.tick()
    calls = grant_calls(svc)
    assert len(calls) == 1
    call = calls[0]
    assert dict(call.headers)["authorization"] == f"Bearer {DATA_PLANE_TOKEN}"
    ask = json.loads(call.body)
    assert ask["envoy"] == "envoy-a" and ask["asks"][0]["quota"] == "quota_rpm" and ask["asks"][0]["window"] == window
    assert ask["asks"][0]["want"] >= 6
    svc.respond_http_call(call.token, body=grant_answer(call, 20, 480))
    assert slot(shared, "quota_rpm") == {"window": window, "used": 4, "leased": 24, "free": 480}
    # Near the window's end, the next window's lease is taken ahead and kept beside the slot.
    put_slot(shared, "quota_rpm", window, 24, 40, 480)
    svc.now = (window + 1) * 60 - 3.0
    svc.tick(advance=False)
    nxt = [a for a in json.loads(grant_calls(svc)[-1].body)["asks"] if a["window"] == window + 1]
    assert nxt, "the next window is asked for"
    svc.respond_http_call(grant_calls(svc)[-1].token, body=json.dumps({"grants": [{"quota": "quota_rpm", "window": window + 1, "granted": 9, "free": 591}]}).encode())
    assert slot(shared, "quota_rpm", ".next") == {"window": window + 1, "used": 0, "leased": 9, "free": 591}
    assert slot(shared, "quota_rpm")["leased"] == 40, "the current lease is untouched"


def test_the_service_vm_marks_the_authority_down_and_up_once_each(make_service):
    svc, shared = service_with_docs(make_service, RPM)
    window = int(svc.now) // 60
    put_slot(shared, "quota_rpm", window, 4, 4, 500)
    svc.tick()
    svc.fail_http_call(grant_calls(svc)[-1].token)
    assert shared.value("tollgate.quota.authority.v1") == b"down"
    put_slot(shared, "quota_rpm", window, 5, 5, 500)  # in use: the keeper keeps asking
    svc.tick()
    svc.respond_http_call(grant_calls(svc)[-1].token, status=503, body=b"{}")
    put_slot(shared, "quota_rpm", window, 6, 6, 500)
    downs = [m for m in svc.log_text.splitlines() if "quota authority is unreachable" in m]
    assert len(downs) == 1, "one line per change"
    assert {m["name"]: m["value"] for m in svc.metrics.values()}["tollgate_quota_authority_failures"] == 2
    svc.tick()
    call = grant_calls(svc)[-1]
    svc.respond_http_call(call.token, body=grant_answer(call, 5, 100))
    assert shared.value("tollgate.quota.authority.v1") == b"up"
    assert any("answers again" in m for m in svc.log_text.splitlines())


def test_a_waiting_request_gives_back_its_leases_fragment_and_asks_for_its_whole_need(make_gateway):
    """Near a quota's end the Envoys' fragments pool at the authority, where one request can
    have them."""
    tpm = {"id": "quota_tpm", "metric": "output_tokens", "window_seconds": 60, "limit": 6000, "lease": True, "share": 3000}
    gw, shared = gateway_with(make_gateway, tpm)
    put_slot(shared, "quota_tpm", NOW // 60, 20, 100, 5900)
    waiting = send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=100))
    ask = json.loads(gw.http_calls[-1].body)["asks"][0]
    assert (ask["need"], ask["want"], ask["returned"]) == (100, 120, 80), "100 needed, the 80 unspent given back"
    assert slot(shared, "quota_tpm") == {"window": NOW // 60, "used": 20, "leased": 20, "free": 5900}
    gw.respond_http_call(gw.http_calls[-1].token, body=grant_answer(gw.http_calls[-1], 100, 5880))
    assert waiting.continued == [0]
    assert slot(shared, "quota_tpm") == {"window": NOW // 60, "used": 120, "leased": 120, "free": 5880}


def test_a_spent_lease_with_a_fragment_pools_it_even_when_the_authority_had_too_little(make_gateway):
    tpm = {"id": "quota_tpm", "metric": "output_tokens", "window_seconds": 60, "limit": 6000, "lease": True, "share": 3000}
    gw, shared = gateway_with(make_gateway, tpm)
    put_slot(shared, "quota_tpm", NOW // 60, 5950, 5990, 10)
    refused = send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=100))
    ask = json.loads(gw.http_calls[-1].body)["asks"][0]
    assert (ask["need"], ask["returned"]) == (100, 40), "the fragment goes to the authority"
    gw.respond_http_call(gw.http_calls[-1].token, body=grant_answer(gw.http_calls[-1], 0, 50))
    assert refused.local_response.status == 429
    # Nothing of its own to pool and the authority short: refused without a call.
    calls = len(gw.http_calls)
    assert send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=100)).local_response.status == 429
    assert len(gw.http_calls) == calls
    # A request the authority's remainder covers still asks.
    assert send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=30)).local_response is None
    assert len(gw.http_calls) == calls + 1


def test_an_idle_lease_of_a_lifetime_budget_goes_back_to_the_authority(make_service):
    budget = dict(BUDGET, limit=10**9)
    svc, shared = service_with_docs(make_service, budget)
    put_slot(shared, "quota_budget", 0, 300, 1000, 5000)
    svc.tick()
    assert grant_calls(svc), "in use: topped up"
    svc.respond_http_call(grant_calls(svc)[-1].token, body=grant_answer(grant_calls(svc)[-1], 0, 5000))
    calls = len(grant_calls(svc))
    for _ in range(5 * 31):  # 31 s without use
        svc.tick()
        for c in grant_calls(svc)[calls:]:
            if c.token in svc.pending_http_calls:
                svc.respond_http_call(c.token, body=json.dumps({"grants": []}).encode())
    returns = [a for c in grant_calls(svc)[calls:] for a in json.loads(c.body)["asks"] if a.get("returned")]
    assert returns == [{"quota": "quota_budget", "window": 0, "want": 0, "need": 0, "returned": 700}]
    assert slot(shared, "quota_budget") == {"window": 0, "used": 300, "leased": 300, "free": 5000}
    assert any("giving back 700" in m for m in svc.log_text.splitlines())


def test_near_a_budgets_end_an_idle_lease_goes_back_within_half_a_second(make_service):
    budget = dict(BUDGET, limit=10**6)
    svc, shared = service_with_docs(make_service, budget)
    put_slot(shared, "quota_budget", 0, 300, 1000, 5000)  # the authority has under a tenth left
    svc.tick()
    calls = len(grant_calls(svc))
    for c in grant_calls(svc):
        if c.token in svc.pending_http_calls:
            svc.respond_http_call(c.token, body=grant_answer(c, 0, 5000))
    for _ in range(3):  # 600 ms without use
        svc.tick()
    returns = [a for c in grant_calls(svc)[calls:] for a in json.loads(c.body)["asks"] if a.get("returned")]
    assert returns == [{"quota": "quota_budget", "window": 0, "want": 0, "need": 0, "returned": 700}]


def test_a_changed_limit_makes_the_envoy_ask_again(make_service):
    svc, shared = service_with_docs(make_service, BUDGET)
    put_slot(shared, "quota_budget", 0, 1000, 1000, 0)  # the authority said: nothing left
    svc.tick()
    assert slot(shared, "quota_budget")["free"] == 0
    shared.set("tollgate.quota.docs.v1", json.dumps([dict(BUDGET, limit=BUDGET["limit"] * 2)]).encode())
    svc.tick()
    assert slot(shared, "quota_budget")["free"] == 2**64 - 1, "unknown until the authority answers"


def test_a_waiting_request_asks_for_what_the_slot_counts_beyond_its_lease_too(make_gateway):
    """Reservations of ended requests another worker has yet to give back count beside the
    usage already settled for them, past the lease: a grant of the request's amount alone would
    leave it short again (and refuse it while the authority has plenty)."""
    tpm = {"id": "quota_tpm", "metric": "output_tokens", "window_seconds": 60, "limit": 6000, "lease": True, "share": 3000}
    gw, shared = gateway_with(make_gateway, tpm)
    put_slot(shared, "quota_tpm", NOW // 60, 150, 100, 5000)
    waiting = send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=100))
    call = gw.http_calls[-1]
    ask = json.loads(call.body)["asks"][0]
    assert (ask["need"], ask["want"], ask.get("least")) == (150, 150, None), "100 for the request, 50 over the lease"
    gw.respond_http_call(call.token, body=grant_answer(call, 150, 4850))
    assert waiting.continued == [0] and waiting.local_response is None
    assert slot(shared, "quota_tpm") == {"window": NOW // 60, "used": 250, "leased": 250, "free": 4850}


def test_a_request_that_can_be_lowered_says_how_little_would_do_and_fits_what_is_granted(make_gateway):
    tpm = {"id": "quota_tpm", "metric": "output_tokens", "window_seconds": 60, "limit": 6000, "lease": True, "fit_output": 10}
    gw, shared = gateway_with(make_gateway, tpm)
    put_slot(shared, "quota_tpm", NOW // 60, 100, 100, 5000)
    waiting = send(gw, "POST", "/v1/chat/completions", chat_body(max_tokens=100))
    call = gw.http_calls[-1]
    ask = json.loads(call.body)["asks"][0]
    assert (ask["need"], ask["least"]) == (100, 10)
    # The authority had only 40 left: all of it, and the request goes with 40 output tokens.
    gw.respond_http_call(call.token, body=grant_answer(call, 40, 0))
    assert waiting.continued == [0] and waiting.local_response is None
    assert json.loads(bytes(waiting.request_body_buffer))["max_tokens"] == 40, "held, rewritten, then resumed"
    assert slot(shared, "quota_tpm")["used"] == 140


def test_a_workers_credit_takes_at_most_a_quarter_of_the_envoys_lease(make_gateway):
    """A credit on a leased quota (see the gateway's `quotas`) leaves three quarters of what is
    left of the Envoy's lease to its other workers, so that they do not wait for a grant while
    it lasts; with too little lease left for a request's worth, none is taken."""
    rpm = RPM | {"limit": 100_000}
    gw, shared = gateway_with(make_gateway, rpm)
    window = NOW // 60
    put_slot(shared, "quota_rpm", window, used=0, leased=41, free=90_000)
    assert chat(gw).local_response is None
    assert slot(shared, "quota_rpm")["used"] == 1 + 10, "the request and a credit of 40 / 4"
    for _ in range(10):
        assert chat(gw).local_response is None
    assert slot(shared, "quota_rpm")["used"] == 11, "spent from the credit"
    put_slot(shared, "quota_rpm", window, used=0, leased=4, free=90_000)
    other = make_gateway(config_bytes(gateway_config(quotas=[rpm], model_prices=PRICES)), shared_data=shared, properties=NODE)
    assert chat(other).local_response is None
    assert slot(shared, "quota_rpm")["used"] == 1, "3 left of the lease: no credit"


def test_the_service_vm_reads_an_idle_quotas_slot_once_a_second_and_one_in_use_every_tick(make_service):
    """With a budget for each of many keys, the service VM's tick reads the slot of a quota in use
    (and its next window's lease) on every tick, and an idle quota's slot on one tick in five
    (each in its turn), a group's value once a tick: an idle quota put to use is topped up within
    a second. Reading every slot and every next window's lease on every tick cost 2 reads a
    quota, 5 times a second."""
    n = 500
    budgets = [dict(BUDGET, id=f"quota_{i}", key_id=f"key_{i}", group=f"key_{i}") for i in range(n)]
    svc, shared = service_with_docs(make_service, RPM, *budgets)
    window = int(svc.now) // 60
    put_slot(shared, "quota_rpm", window, 4, 4, 500)  # in use
    for _ in range(3):  # every quota seen (read twice when new), and the RPM asked for
        svc.tick()
        for c in grant_calls(svc):
            if c.token in svc.pending_http_calls:
                svc.respond_http_call(c.token, body=grant_answer(c, 20, 480))
    reads = []
    for i in range(5):
        put_slot(shared, "quota_rpm", window, 10 + i, 40, 480)  # still in use
        svc.crossings.clear()
        svc.tick()
        reads.append(svc.crossings["host:proxy_get_shared_data"])
        for c in grant_calls(svc):
            if c.token in svc.pending_http_calls:
                svc.respond_http_call(c.token, body=grant_answer(c, 20, 480))
    # Each tick: a fifth of the idle budgets, the RPM's slot and next window's, and the tick's
    # own few reads (the leased quotas' document, the key table's poll).
    assert all(n // 5 <= r <= n // 5 + 10 for r in reads), reads
    # An idle budget put to use is asked for within five ticks.
    shared.set("tollgate.quota.g.key_7", encode_slots({"quota_7": {"window": 0, "used": 50, "leased": 50, "free": 10**9}}))
    asked = []
    for _ in range(5):
        svc.tick()
        for c in grant_calls(svc):
            if c.token in svc.pending_http_calls:
                asked += [a["quota"] for a in json.loads(c.body)["asks"]]
                svc.respond_http_call(c.token, body=grant_answer(c, 20, 10**9))
    assert "quota_7" in asked
