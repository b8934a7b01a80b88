"""The key table across the data plane: the service VM's long poll (`POST /internal/v1/keys`,
its manifest in the body, shards in the answer) publishing shards in shared data, and the gateway
filter on a worker copying only the shards that changed, refusing with 503 `keys_not_loaded`
until a table is in. One SharedData joins the service VM and the workers as Envoy's does."""

from __future__ import annotations

import struct

import keytable_codec as kt
from proxy_wasm_host import LogLevel, SharedData
from wasm_fixtures import (
    DATA_PLANE_TOKEN,
    K1_SECRET,
    K2_SECRET,
    K3_SECRET,
    KEYS,
    NOW,
    assert_openai_error,
    chat_body,
    digest,
    key_id_of,
    send,
)

CHAT = "/v1/chat/completions"
KEYS_PATH = "/internal/v1/keys"
OCTETS = [("content-type", "application/octet-stream")]


def key_polls(service) -> dict:
    return {t: c for t, c in service.pending_http_calls.items() if c.header(":path").startswith(KEYS_PATH)}


def shard_of(secret: str) -> int:
    return kt.digest_bytes(secret)[0]


def full_table(keys=KEYS, epoch=5, version=1) -> dict[int, bytes]:
    return kt.table(keys, epoch, version)


def answer_poll(service, shards, status=200) -> object:
    """Answers the key poll in flight with `shards`; returns the call answered."""
    (token, call) = next(iter(key_polls(service).items()))
    body = kt.encode_update(list(shards)) if status == 200 else b""
    service.respond_http_call(token, status, OCTETS, body)
    return call


def test_poll_carries_the_manifest_and_the_table_is_published_whole(make_service):
    shared = SharedData()
    service = make_service(shared_data=shared)
    service.tick()
    (call,) = key_polls(service).values()
    assert call.header(":method") == "POST" and call.header(":path") == f"{KEYS_PATH}?wait=20"
    assert call.header("authorization") == f"Bearer {DATA_PLANE_TOKEN}"
    assert kt.decode_manifest(call.body) == [(0, 0)] * kt.SHARDS
    assert call.timeout_ms > 20_000
    service.tick()  # one poll in flight
    assert len(key_polls(service)) == 1

    table = full_table()
    # the first answer has half the shards: published, but no version key yet (not complete)
    answer_poll(service, [table[i] for i in range(128)])
    assert kt.VERSION_KEY not in shared
    assert shared.value(kt.shard_key(0)) == table[0]
    (second,) = key_polls(service).values()  # polled again at once
    assert kt.decode_manifest(second.body)[:128] == [(5, 1)] * 128
    assert kt.decode_manifest(second.body)[128:] == [(0, 0)] * 128
    answer_poll(service, [table[i] for i in range(128, 256)])
    assert kt.VERSION_KEY in shared
    assert kt.decode_manifest(shared.value(kt.MANIFEST_KEY)) == [(5, 1)] * kt.SHARDS
    # nothing changed for the wait: 304, and the next poll goes out at once
    answer_poll(service, [], status=304)
    assert len(key_polls(service)) == 1


def test_an_invalid_update_or_shard_is_refused_and_the_published_table_stays(make_service):
    shared = SharedData()
    service = make_service(shared_data=shared)
    service.tick()
    table = full_table()
    answer_poll(service, table.values())
    before = shared.get(kt.VERSION_KEY)
    warnings = len(service.logs_at(LogLevel.WARN))
    (token,) = key_polls(service)
    service.respond_http_call(token, 200, OCTETS, b"TGKU\x01\x00\x00\x00\xff\xff\xff\xff")
    assert len(service.logs_at(LogLevel.WARN)) == warnings + 1
    assert shared.get(kt.VERSION_KEY) == before
    # a shard whose records are out of order: that shard refused, the rest of the answer kept
    i = shard_of(K1_SECRET)
    bad = bytearray(kt.encode_shard(i, 5, 2, [{"digest": bytes([i]) + b"\x02" * 31, "id": "b"},
                                              {"digest": bytes([i]) + b"\x01" * 31, "id": "a"}]))
    bad[36:36 + 48], bad[84:84 + 48] = bad[84:84 + 48], bad[36:36 + 48]
    j = (i + 1) % 256
    good = kt.encode_shard(j, 5, 2, [])
    service.tick()
    answer_poll(service, [bytes(bad), good])
    assert shared.value(kt.shard_key(i)) == table[i]
    assert shared.value(kt.shard_key(j)) == good
    assert any(f"key shard {i} refused" in m for m in service.logs_at(LogLevel.WARN))
    # a failed poll (reset) is retried on the timer
    service.tick()
    (token,) = key_polls(service)
    service.fail_http_call(token)
    assert key_polls(service) == {}
    service.tick()
    assert len(key_polls(service)) == 1


def test_a_restarted_service_sends_what_is_published(make_service):
    shared = SharedData()
    first = make_service(shared_data=shared)
    first.tick()
    answer_poll(first, full_table().values())
    second = make_service(shared_data=shared)
    second.tick()
    (call,) = key_polls(second).values()
    assert kt.decode_manifest(call.body) == [(5, 1)] * kt.SHARDS


def test_no_table_yet_is_503_keys_not_loaded_in_the_clients_format(make_gateway):
    host = make_gateway(keys=None)
    ctx = send(host, "POST", CHAT, chat_body())
    assert_openai_error(ctx.local_response, 503, "keys_not_loaded", "api_error")
    assert ctx.request_header("x-tollgate-cluster") is None
    # Anthropic's route answers in Anthropic's format
    anthropic = send(host, "POST", "/v1/messages", b'{"model":"gpt-a","max_tokens":1,"messages":[]}')
    assert anthropic.local_response.status == 503
    assert anthropic.local_response.json()["type"] == "error"
    # no key at all is still a 401
    missing = send(host, "POST", CHAT, chat_body(), key=None)
    assert_openai_error(missing.local_response, 401, "missing_api_key", "authentication_error")
    # the service VM publishes: the next request is served, with no reconfiguration
    kt.publish(host.shared_data, full_table(), 5, 1)
    ok = send(host, "POST", CHAT, chat_body())
    assert ok.local_response is None and key_id_of(ok) == "k1"


def test_a_revocation_is_refused_on_the_next_request_and_only_its_shard_is_copied(make_gateway):
    shared = SharedData()
    kt.publish(shared, full_table(), 5, 1)
    workers = [make_gateway(shared_data=shared) for _ in range(2)]
    for w in workers:
        assert key_id_of(send(w, "POST", CHAT, chat_body("gpt-a"), key=K2_SECRET)) == "k2"
        assert key_id_of(send(w, "POST", CHAT, chat_body(), key=K1_SECRET)) == "k1"
    i = shard_of(K2_SECRET)
    others = [s for s in (shard_of(K1_SECRET), shard_of(K3_SECRET)) if s != i]
    # Overwrite another shard's bytes without changing its version in the manifest: a worker
    # that copied shards other than the changed one would now fail on it.
    for o in others:
        shared.set(kt.shard_key(o), b"garbage", 0)
    revoked = [k for k in KEYS if k["id"] != "k2"]
    kt.publish(shared, {i: kt.table(revoked, 5, 2)[i]}, 5, 2)
    for w in workers:
        ctx = send(w, "POST", CHAT, chat_body("gpt-a"), key=K2_SECRET)
        assert_openai_error(ctx.local_response, 401, "invalid_api_key", "authentication_error")
        assert key_id_of(send(w, "POST", CHAT, chat_body(), key=K1_SECRET)) == "k1"
        assert not w.logs_at(LogLevel.WARN), w.logs_at(LogLevel.WARN)


def test_a_key_is_hashed_once_per_worker_and_an_unknown_one_every_time(make_gateway):
    # The SHA-256 a presented key is looked up by (about 5,000 wasm instructions) is kept, by a
    # keyed tag of the key, once the key authenticates; an unknown key is hashed every time and
    # never kept (the table is looked up on every request: revocation above).
    shared = SharedData()
    kt.publish(shared, full_table(), 5, 1)
    w = make_gateway(shared_data=shared)
    assert key_id_of(send(w, "POST", CHAT, chat_body("gpt-a"), key=K2_SECRET)) == "k2"  # the table copied

    def headers_fuel(key: str):
        w.crossings.clear()
        ctx = send(w, "POST", CHAT, chat_body(), key=key)
        return w.crossings["fuel@proxy_on_request_headers"], ctx

    first, ctx = headers_fuel(K1_SECRET)
    assert key_id_of(ctx) == "k1"
    again, ctx = headers_fuel(K1_SECRET)
    assert key_id_of(ctx) == "k1"
    assert first - again > 3000, (first, again)
    unknown = K1_SECRET[:-4] + "zzzz"
    for _ in range(2):
        fuel, ctx = headers_fuel(unknown)
        assert_openai_error(ctx.local_response, 401, "invalid_api_key", "authentication_error")
        assert fuel - again > 3000, (fuel, again)


def test_a_bad_shard_keeps_the_previous_one_and_is_retried(make_gateway):
    shared = SharedData()
    kt.publish(shared, full_table(), 5, 1)
    host = make_gateway(shared_data=shared)
    assert key_id_of(send(host, "POST", CHAT, chat_body(), key=K1_SECRET)) == "k1"
    i = shard_of(K1_SECRET)
    manifest = kt.decode_manifest(shared.value(kt.MANIFEST_KEY))
    manifest[i] = (5, 2)
    shared.set(kt.shard_key(i), b"TGKS\x01" + bytes([i]) + b"\x00" * 10, 0)  # truncated
    shared.set(kt.MANIFEST_KEY, kt.encode_manifest(manifest), 0)
    shared.set(kt.VERSION_KEY, struct.pack("<QQ", 5, 2), 0)
    for _ in range(3):
        assert key_id_of(send(host, "POST", CHAT, chat_body(), key=K1_SECRET)) == "k1"
    assert len(host.logs_at(LogLevel.WARN)) == 1, "logged once per version"
    # fixed: the key moves to the new shard version (k1 now limited to gpt-b)
    changed = [dict(k, models=["gpt-b"]) if k["id"] == "k1" else k for k in KEYS]
    kt.publish(shared, {i: kt.table(changed, 5, 3)[i]}, 5, 3)
    ctx = send(host, "POST", CHAT, chat_body("gpt-a"), key=K1_SECRET)
    assert_openai_error(ctx.local_response, 403, "model_not_allowed", "permission_error", "model")


def test_rotation_grace_entry_is_refused_when_the_grace_ends(make_gateway):
    old, new = "tg-old-" + "x" * 40, "tg-new-" + "y" * 40
    keys = [{"id": "rot", "digest": digest(new)}, {"id": "rot", "digest": digest(old), "expires_at": NOW + 5}]
    host = make_gateway(keys=keys)
    assert key_id_of(send(host, "POST", CHAT, chat_body(), key=old)) == "rot"
    host.now = NOW + 5
    ctx = send(host, "POST", CHAT, chat_body(), key=old)
    assert_openai_error(ctx.local_response, 401, "expired_api_key", "authentication_error")
    assert key_id_of(send(host, "POST", CHAT, chat_body(), key=new)) == "rot"


def test_service_and_workers_together(make_service, make_gateway):
    shared = SharedData()
    service = make_service(shared_data=shared)
    worker = make_gateway(shared_data=shared)
    assert send(worker, "POST", CHAT, chat_body()).local_response.status == 503
    service.tick()
    answer_poll(service, full_table().values())
    assert key_id_of(send(worker, "POST", CHAT, chat_body())) == "k1"
    i = shard_of(K1_SECRET)
    answer_poll(service, [kt.table([k for k in KEYS if k["id"] != "k1"], 5, 2)[i]])
    assert send(worker, "POST", CHAT, chat_body()).local_response.status == 401


def test_a_configuration_change_keeps_the_workers_table(make_gateway):
    from wasm_fixtures import config_bytes, gateway_config

    host = make_gateway()
    assert key_id_of(send(host, "POST", CHAT, chat_body(), key=K1_SECRET)) == "k1"
    host.crossings.clear()
    assert key_id_of(send(host, "POST", CHAT, chat_body(), key=K1_SECRET)) == "k1"
    assert host.crossings["host:proxy_get_shared_data"] == 1, "a request reads the version key only"
    # ... whose value is empty: no buffer comes back for it (the request's buffers back are its
    # header map and its body)
    assert host.crossings["alloc"] == 2, dict(host.crossings)
    # a new root context (ECDS update): the table stays, nothing is copied again
    assert host.reconfigure(config_bytes(gateway_config(max_body_bytes=2048))) is True
    host.crossings.clear()
    assert key_id_of(send(host, "POST", CHAT, chat_body(), key=K1_SECRET)) == "k1"
    assert host.crossings["host:proxy_get_shared_data"] == 1, dict(host.crossings)


def test_a_first_table_that_cannot_be_read_whole_is_not_served_from(make_gateway):
    shared = SharedData()
    kt.publish(shared, full_table(), 5, 1)
    i = shard_of(K1_SECRET)
    shared.set(kt.shard_key(i), b"garbage", 0)
    host = make_gateway(shared_data=shared)
    for secret in (K1_SECRET, K2_SECRET):
        ctx = send(host, "POST", CHAT, chat_body("gpt-a"), key=secret)
        assert_openai_error(ctx.local_response, 503, "keys_not_loaded", "api_error")
    shared.set(kt.shard_key(i), full_table()[i], 0)
    assert key_id_of(send(host, "POST", CHAT, chat_body("gpt-a"), key=K2_SECRET)) == "k2"
