"""Usage records from the provider filter to the control plane (issue 12): each attempt's record
waits in the worker's outbox, goes to the service VM through the shared queue on the worker's
timer, and leaves the service VM in batches posted to the internal listener; a batch leaves the
service VM's buffer only when the control plane answered 200. One SharedData joins the VMs as
Envoy's process-wide store (shared data and queues) does."""

from __future__ import annotations

import json

from proxy_wasm_host import SharedData
from wasm_fixtures import (CREDENTIALS_CLUSTER, CREDENTIALS_PATH, DATA_PLANE_TOKEN, chat_body, credentials_doc, decode_usage_batch,
                           deployment, provider_properties, request_headers)

USAGE_PATH = "/internal/v1/usage"
ANSWER = json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "real-model",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
                               "prompt_tokens_details": {"cached_tokens": 2}}}).encode()


def one_attempt(provider, request_id: str, attempt: int = 1, status: int = 200, body: bytes = ANSWER) -> None:
    ctx = provider.new_http_context(provider_properties(deployment()))
    headers = request_headers("POST", "/v1/chat/completions", extra=[("x-request-id", request_id),
                                                                      ("x-envoy-attempt-count", str(attempt))])
    ctx.request_headers(headers, end_of_stream=False)
    ctx.send_request_body(chat_body())
    ctx.response_headers([(":status", str(status)), ("content-type", "application/json")])
    ctx.response_body(body, end_of_stream=True)
    ctx.finish()


def stack(make_service, make_provider):
    """A service VM and a worker's provider filter, credentials loaded."""
    shared = SharedData()
    service = make_service(shared_data=shared)
    provider = make_provider(shared_data=shared)
    load_credentials(service, provider)
    return service, provider


def load_credentials(service, provider, doc: bytes | None = None) -> None:
    service.tick()
    [call] = [c for c in service.pending_http_calls.values() if c.header(":path") == CREDENTIALS_PATH]
    service.respond_http_call(call.token, 200, [("content-type", "application/json")], doc or credentials_doc())
    provider.tick()


def usage_calls(service) -> list:
    return [c for c in service.pending_http_calls.values() if c.header(":path") == USAGE_PATH]


def shipped(service, provider) -> list[dict]:
    """The worker's timer hands its outbox over, the service VM posts it: the records of that
    one call."""
    provider.tick()
    service.queue_ready()
    service.now += 1
    service.tick()
    [call] = usage_calls(service)
    return decode_usage_batch(call.body)


def test_records_travel_in_batches_and_leave_only_when_stored(make_service, make_provider):
    service, provider = stack(make_service, make_provider)
    one_attempt(provider, "req-1")
    one_attempt(provider, "req-2", attempt=1, status=503, body=b'{"error":{"message":"busy"}}')
    one_attempt(provider, "req-2", attempt=2)
    assert provider.crossings["host:proxy_enqueue_shared_queue"] == 0, "no host call per request"
    provider.tick()  # the worker's timer hands its outbox over: one item
    assert provider.crossings["host:proxy_enqueue_shared_queue"] == 1
    service.queue_ready()
    service.now += 1.0
    service.tick()
    [call] = usage_calls(service)
    assert call.upstream == CREDENTIALS_CLUSTER and call.header(":method") == "POST"
    assert call.header("authorization") == f"Bearer {DATA_PLANE_TOKEN}"
    batch = decode_usage_batch(call.body)
    assert [(r["request_id"], r["attempt"], r["status"]) for r in batch] == [("req-1", 0, 200), ("req-2", 0, 503), ("req-2", 1, 200)]
    ok = batch[0]
    assert (ok["input_tokens"], ok["output_tokens"], ok["cache_read_tokens"]) == (10, 7, 2)
    assert (ok["provider"], ok["provider_model"], ok["model"], ok["estimated"]) == ("openai", "real-model", "gpt-a", False)
    assert batch[1]["input_tokens"] == 0 and not batch[1]["estimated"]
    # the control plane is down: the batch is kept and sent again, whole, after a pause
    service.respond_http_call(call.token, None)
    one_attempt(provider, "req-3")
    provider.tick()
    service.queue_ready()
    service.tick(advance=False)
    assert usage_calls(service) == [], "backing off"
    service.now += 30
    service.tick()
    [again] = usage_calls(service)
    assert [r["request_id"] for r in decode_usage_batch(again.body)] == ["req-1", "req-2", "req-2", "req-3"]
    service.respond_http_call(again.token, 200, [("content-type", "application/json")], b'{"accepted":4,"duplicates":0}')
    service.now += 30
    service.tick()
    assert usage_calls(service) == [], "nothing left to send"


def test_a_record_outlives_the_root_its_stream_was_made_from(make_service, make_provider):
    # The provider filter has a root per cluster and makes each stream from the root configured
    # last (no proxy_on_context_create: Envoy does not say which). A cluster removed while its
    # request is in flight takes its root, not the request's usage record: the worker's roots
    # share one outbox, so another root's timer hands it over.
    service, provider = stack(make_service, make_provider)
    first = provider.root_id
    second = provider.add_root(b"")
    ctx = provider.new_http_context(provider_properties(deployment()))
    ctx.request_headers(request_headers("POST", "/v1/chat/completions", extra=[("x-request-id", "req-orphan")]), end_of_stream=False)
    ctx.send_request_body(chat_body())
    provider.retire_root(second)
    assert provider.root_id == first
    ctx.response_headers([(":status", "200"), ("content-type", "application/json")])
    ctx.response_body(ANSWER, end_of_stream=True)
    ctx.finish()
    one_attempt(provider, "req-after")  # made from the remaining root
    [orphan, after] = shipped(service, provider)
    assert (orphan["request_id"], orphan["input_tokens"], orphan["output_tokens"]) == ("req-orphan", 10, 7)
    assert after["request_id"] == "req-after"


def test_a_batch_refused_as_malformed_is_dropped_and_counted(make_service, make_provider):
    service, provider = stack(make_service, make_provider)
    one_attempt(provider, "req-bad")
    provider.tick()
    service.queue_ready()
    service.now += 1
    service.tick()
    [call] = usage_calls(service)
    service.respond_http_call(call.token, 400, [("content-type", "application/json")], b'{"error":{}}')
    dropped = [m for m in service.metrics.values() if m["name"] == "tollgate_usage_records_dropped"]
    assert dropped and dropped[0]["value"] == 1
    service.now += 30
    service.tick()
    assert usage_calls(service) == []


def test_records_wait_in_the_worker_until_the_service_vm_has_registered_its_queue(make_service, make_provider):
    shared = SharedData()
    shared.set("tollgate.credentials.v1", credentials_doc())
    provider = make_provider(shared_data=shared)
    one_attempt(provider, "req-early")
    provider.tick()  # no queue yet: kept
    service = make_service(shared_data=shared)
    provider.tick()
    service.queue_ready()
    service.now += 1
    service.tick()
    [call] = usage_calls(service)
    assert [r["request_id"] for r in decode_usage_batch(call.body)] == ["req-early"]


def test_an_answer_without_usage_is_estimated_and_flagged(make_service, make_provider):
    service, provider = stack(make_service, make_provider)
    one_attempt(provider, "req-nousage", body=b'{"id":"c","choices":[]}')
    [r] = shipped(service, provider)
    assert r["estimated"] and r["output_tokens"] == 6  # 23 bytes delivered, about 4 a token


def _event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """An AWS event-stream message (string headers), as SageMaker frames each `PayloadPart`."""
    import struct
    import zlib
    hdrs = b"".join(bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode() for k, v in headers.items())
    total = 12 + len(hdrs) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hdrs))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + hdrs + payload
    return head + struct.pack(">I", zlib.crc32(head))


def test_a_sagemaker_stream_whose_end_marker_is_cut_by_its_framing_keeps_its_exact_usage(make_service, make_provider):
    """SageMaker frames an OpenAI-style container's SSE in `PayloadPart` events cut anywhere, so
    `[DONE]` can be split by event-stream framing: the usage chunk itself is the final count
    (an OpenAI-compatible stream reports usage once), so a client that goes away after reading
    it leaves an exact record, not an estimate (found by the e2e matrix, one run in several)."""
    shared = SharedData()
    service = make_service(shared_data=shared)
    provider = make_provider(shared_data=shared)
    aws = {"aws_cred": {"aws": {"access_key_id": "AKIDUSAGE", "secret_access_key": "usage-secret"}}}
    load_credentials(service, provider, credentials_doc(**aws))
    dep = deployment(provider="sagemaker", model="oai-endpoint", authority="runtime.sagemaker.us-east-1.amazonaws.com",
                     base_path="", credential="aws_cred", region="us-east-1")
    ctx = provider.new_http_context(provider_properties(dep, op="chat_completions;stream;usage"))
    ctx.request_headers(request_headers("POST", "/v1/chat/completions", extra=[("x-request-id", "req-sm")]), end_of_stream=False)
    ctx.send_request_body(chat_body(stream=True, stream_options={"include_usage": True}))
    ctx.response_headers([(":status", "200"), ("content-type", "application/vnd.amazon.eventstream")])
    sse = (b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
           b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
           b'"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}\n\n'
           b'data: [DONE]\n\n')
    cut = sse.index(b"[DONE]") + 3
    part = {":event-type": "PayloadPart", ":content-type": "application/octet-stream", ":message-type": "event"}
    ctx.response_body(_event_frame(part, sse[:cut]) + _event_frame(part, sse[cut:]), end_of_stream=False)
    # The client reads the whole translated stream (the usage chunk and [DONE] included).
    assert b'"completion_tokens":4' in bytes(ctx.response_body_forwarded)
    ctx.finish()  # the client went away before the end of the stream
    [r] = shipped(service, provider)
    assert (r["request_id"], r["provider"], r["stream"]) == ("req-sm", "sagemaker", True)
    assert (r["input_tokens"], r["output_tokens"], r["estimated"]) == (11, 4, False), r
