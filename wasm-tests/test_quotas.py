"""Quotas in the data plane (issue 13): admission with compare-and-swap on one shared-data slot
per quota, exact across the workers of an Envoy (two VMs sharing one SharedData here, as
Envoy's process-wide store joins its workers), a refused request given back, concurrency given
back when a request ends, token reservations settled to the usage each attempt reports, and the
OpenAI-style rate-limit headers."""

from __future__ import annotations

import json
import time

from proxy_wasm_host import SharedData
from wasm_fixtures import (NOW, assert_openai_error, chat_body, config_bytes, decode_request_state, decode_slots,
                           deployment, gateway_config, publish_keys, provider_properties, send)

from quota_helpers import REQUEST_STATE, WORST, chat, provider_on, ticks, with_quotas


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
