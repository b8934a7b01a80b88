"""Test data and helpers shared by the filter tests: keys, configurations, requests, and the
OpenAI error-shape assertion."""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

from proxy_wasm_host import Host, HttpContext, LocalResponse

REPO = Path(__file__).resolve().parent.parent
WASM_DIR = Path(os.environ.get("TOLLGATE_WASM_DIR", REPO / "target" / "wasm32-wasip1" / "release"))
GATEWAY_WASM = WASM_DIR / "tollgate_gateway_filter.wasm"
PROVIDER_WASM = WASM_DIR / "tollgate_provider_filter.wasm"
SERVICE_WASM = WASM_DIR / "tollgate_service.wasm"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

NOW = 1_700_000_000

# Virtual keys (secrets) and their public ids.
K1_SECRET = "tg-k1-5Hq0rVb2yXc8Lm4NzT7wAe1Pd9Gs3Jk6Uf0Io2Ry"  # every model
K2_SECRET = "tg-k2-Wm7Ct3Ob8Zx1Qa5Nv9Ee2Lr6Hy4Pj0Ks3Gd8Tf1"  # only gpt-a
K3_SECRET = "tg-k3-Bn2Xs6Mq9Ja4Vt8Lc1Rz5Ko7Fe3Wy0Hu2Pg6Di9"  # expires at NOW + 10
UNKNOWN_SECRET = "tg-zz-Unknown0Unknown1Unknown2Unknown3Unkno"
EXPIRES_AT = NOW + 10

# Provider filter secrets.
DATA_PLANE_TOKEN = "dp-token-Qe3Xv9Lm2Nb7Zr5"
API_KEY = "sk-test-123"
API_KEY_2 = "sk-rotated-456"

SECRETS = (K1_SECRET, K2_SECRET, K3_SECRET, UNKNOWN_SECRET, DATA_PLANE_TOKEN, API_KEY, API_KEY_2)

DEPLOYMENT_PATH = ("xds", "upstream_host_metadata", "filter_metadata", "tollgate", "deployment")
CREDENTIALS_CLUSTER = "tollgate_control_plane_internal"
CREDENTIALS_PATH = "/internal/v1/credentials"
SHARED_CREDENTIALS_KEY = "tollgate.credentials.v1"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# The key table the gateway fixtures publish in shared data (as the service VM does).
KEYS = [
    {"id": "k1", "digest": digest(K1_SECRET), "role": "user", "models": None, "expires_at": None},
    {"id": "k2", "digest": digest(K2_SECRET), "role": "user", "models": ["gpt-a"], "expires_at": None},
    {"id": "k3", "digest": digest(K3_SECRET), "role": "user", "models": None, "expires_at": EXPIRES_AT},
]


def publish_keys(shared_data, keys=KEYS, epoch: int = 1, version: int = 1) -> None:
    """Puts a whole key table of `keys` into `shared_data`, as the service VM publishes it."""
    import keytable_codec

    keytable_codec.publish(shared_data, keytable_codec.table(keys, epoch, version), epoch, version)


def gateway_config(**overrides) -> dict:
    cfg = {
        "schema": 1,
        "max_body_bytes": 1024,
        "models": [
            {"name": "gpt-a", "cluster": "tg_a", "owned_by": "tollgate", "created": 1},
            {"name": "gpt-b", "cluster": "tg_b", "owned_by": "tollgate", "created": 2},
        ],
    }
    cfg.update(overrides)
    return cfg


def config_bytes(cfg: dict) -> bytes:
    return json.dumps(cfg).encode()


def chat_body(model: str = "gpt-a", **extra) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}]}
    body.update(extra)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def embeddings_body(model: str = "gpt-b") -> bytes:
    return json.dumps({"model": model, "input": ["a", "b"]}).encode()


def request_headers(
    method: str,
    path: str,
    key: Optional[str] = K1_SECRET,
    via: str = "bearer",
    extra: Iterable[tuple[str, str]] = (),
) -> list[tuple[str, object]]:
    headers: list[tuple[str, object]] = [
        (":method", method),
        (":path", path),
        (":authority", "gateway.local"),
        (":scheme", "https"),
        ("user-agent", "OpenAI/Python 1.0"),
    ]
    if key is not None:
        if via == "bearer":
            headers.append(("authorization", f"Bearer {key}"))
        elif via == "x-api-key":
            headers.append(("x-api-key", key))
        else:
            raise ValueError(via)
    headers.extend(extra)
    return headers


def send(
    host: Host,
    method: str,
    path: str,
    body: Optional[bytes] = None,
    *,
    key: Optional[str] = K1_SECRET,
    via: str = "bearer",
    extra: Iterable[tuple[str, str]] = (),
    chunks: Optional[Sequence[int]] = None,
    properties=None,
) -> HttpContext:
    """One client request through the filter: headers (end_of_stream when there is no body),
    then the body in `chunks`, stopping when the filter answers locally."""
    ctx = host.new_http_context(properties)
    ctx.request_headers(request_headers(method, path, key, via, extra), end_of_stream=body is None)
    if body is not None and not ctx.local_responses:
        ctx.send_request_body(body, chunks)
    return ctx


def assert_openai_error(
    resp: Optional[LocalResponse],
    status: int,
    code: Optional[str],
    type_: str,
    param: Optional[str] = None,
) -> dict:
    """The local reply is an OpenAI-format error: exact status, JSON content type and the shape
    `{"error": {"message", "type", "param", "code"}}` with nothing else."""
    assert resp is not None, "expected a local response"
    assert resp.status == status, (resp.status, resp.body)
    assert resp.header("content-type") == "application/json"
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert err["type"] == type_, err
    assert err["code"] == code, err
    assert err["param"] == param, err
    return err


def random_chunk_sizes(total: int, rng: random.Random) -> list[int]:
    """Random split points, including empty chunks now and then."""
    sizes, left = [], total
    while left > 0:
        n = rng.choice([0, 1, 1, 2, 3, 5, 8, 13, 64, rng.randint(1, max(1, left))])
        n = min(n, left)
        sizes.append(n)
        left -= n
    return sizes


def deployment(**overrides) -> str:
    dep = {
        "id": "d1",
        "provider": "openai",
        "model": "real-model",
        "authority": "api.example.com",
        "base_path": "/v1",
        "credential": "cred1",
    }
    dep.update(overrides)
    return json.dumps(dep)


_OPS = {"chat_completions": 1, "embeddings": 2, "anthropic_messages": 3,
        "bedrock_converse": 4, "bedrock_converse_stream": 5}
_OP_NAMES = {v: k for k, v in _OPS.items()}


def request_state(op: str = "chat_completions", key_id: str = "k1", model: str = "gpt-a") -> bytes:
    """The gateway filter's filter state for a routed request, in the codec's version 2 layout
    (filters/tollgate-contract/src/state.rs). `op` may carry `;stream`, `;usage`, `;len=N`."""
    name, *flags = op.split(";")
    bits, body_len = 0, b""
    for f in flags:
        if f == "stream":
            bits |= 1
        elif f == "usage":
            bits |= 2
        elif f.startswith("len="):
            bits |= 4
            body_len = struct.pack("<Q", int(f[4:]))
    out = bytes([2, _OPS[name], bits]) + body_len
    for text in (key_id, model):
        raw = text.encode()
        out += struct.pack("<H", len(raw)) + raw
    return out


def decode_request_state(state: bytes) -> dict:
    """The fields of a version-2 request state (the inverse of `request_state`)."""
    assert state[0] == 2, f"request state version {state[0]}"
    op, bits = _OP_NAMES[state[1]], state[2]
    i = 3
    body_len = None
    if bits & 4:
        (body_len,) = struct.unpack_from("<Q", state, i)
        i += 8
    texts = []
    for _ in range(2):
        (n,) = struct.unpack_from("<H", state, i)
        texts.append(state[i + 2:i + 2 + n].decode())
        i += 2 + n
    holds, headers = None, None
    if bits & 8 and i < len(state):  # the quota holds (tollgate_contract::quota::Holds)
        holds, headers = [], []

        def text() -> str:
            nonlocal i
            (n,) = struct.unpack_from("<H", state, i)
            i += 2 + n
            return state[i - n:i].decode()
        metrics = ["requests", "input_tokens", "output_tokens", "total_tokens", "concurrency", "cost_usd"]
        form, count = state[i], state[i + 1]
        i += 2
        assert form in (0, 1), f"holds' form {form}"
        for _ in range(count):
            if form == 1:  # tagged (a roomy request's, counted in the worker's tally): the slot's tag
                (tag,) = struct.unpack_from("<I", state, i)
                (window,) = struct.unpack_from("<Q", state, i + 5)
                holds.append({"tag": tag, "metric": metrics[state[i + 4]], "window": window})
                i += 13
                continue
            qid = text()
            group = text() or None
            metric = metrics[state[i]]
            window, reserved, epoch = struct.unpack_from("<QQQ", state, i + 1)
            i += 25
            holds.append({"id": qid, "metric": metric, "window": window, "reserved": reserved, "group": group,
                          "epoch": epoch})
        # The rate limits as numbers (tollgate_contract::quota::RateLimits), shown as the headers
        # the provider filter writes from them.
        flags = state[i]
        i += 1
        assert flags & ~31 == 0, f"rate-limit flags {flags}"

        def u64() -> int:
            nonlocal i
            (v,) = struct.unpack_from("<Q", state, i)
            i += 8
            return v
        standings = []
        for present, has_reset in ((1, 8), (2, 16)):
            standings.append((u64(), u64(), u64() if flags & has_reset else None) if flags & present else None)
        anthropic_at = u64() if flags & 4 else None
        for kind, standing in zip(("requests", "tokens"), standings):
            if standing is None:
                continue
            limit, remaining, reset = standing
            if anthropic_at is None:
                names = [f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}"]
                reset_text = None if reset is None else f"{reset}s"
            else:
                names = [f"anthropic-ratelimit-{kind}-{n}" for n in ("limit", "remaining", "reset")]
                reset_text = None if reset is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(anthropic_at + reset))
            headers += [[names[0], str(limit)], [names[1], str(remaining)]]
            if reset_text is not None:
                headers.append([names[2], reset_text])
        reserve_by = struct.unpack_from("<QQQQ", state, i)
        i += 32
    assert i == len(state), "trailing bytes in the request state"
    out = {"op": op, "stream": bool(bits & 1), "usage": bool(bits & 2), "len": body_len,
           "key": texts[0], "model": texts[1], "holds": holds, "headers": headers}
    if holds is not None:
        out["reserve_by"] = {"body_len": reserve_by[0], "max_output": reserve_by[1]}
        out["tally"] = reserve_by[2]
        out["admitted_ns"] = reserve_by[3]
    return out


def decode_tally(value: bytes) -> dict:
    """A usage tally (`tollgate_contract::quota::tally`): the writer's instance and write count,
    then per quota slot the gateway worker's tag for it, the window and the usage."""
    instance, seq = struct.unpack_from("<QQ", value, 0)
    assert (len(value) - 16) % 20 == 0, "tally entries are 20 bytes"
    entries = [dict(zip(("tag", "window", "used"), struct.unpack_from("<IQQ", value, i))) for i in range(16, len(value), 20)]
    return {"instance": instance, "seq": seq, "entries": entries}


def key_id_of(ctx) -> Optional[str]:
    """The key id in the request state a gateway context set, if any."""
    state = ctx.property("tollgate_request")
    if state is None:
        return None
    return decode_request_state(state)["key"]


def provider_properties(dep: Optional[str] = None, op: Optional[str] = "chat_completions",
                        model: str = "gpt-a") -> dict:
    props: dict = {}
    if dep is not None:
        props[DEPLOYMENT_PATH] = dep
    if op is not None:
        props["tollgate_request"] = request_state(op, model=model)
    return props


def credentials_doc(version: str = "v1", api_key: str = API_KEY, **more) -> bytes:
    creds = {"cred1": {"api_key": api_key}}
    creds.update(more)
    return json.dumps({"version": version, "credentials": creds}).encode()


def decode_slots(raw: bytes, full: bool = False) -> dict:
    """A quota value in shared data: its slots by quota id (tollgate_contract::quota::decode_slots);
    with `full`, each slot's reservation epoch and held counts too."""
    out, i = {}, 0
    while i < len(raw):
        n = raw[i]
        qid = raw[i + 1:i + 1 + n].decode()
        window, used, leased, free, epoch, held0, held1 = struct.unpack_from("<QQQQQQQ", raw, i + 1 + n)
        out[qid] = {"window": window, "used": used, "leased": leased, "free": free}
        if full:
            out[qid].update(epoch=epoch, held=[held0, held1])
        i += 1 + n + 56
    return out


def encode_slots(slots: dict) -> bytes:
    """The inverse of `decode_slots`."""
    return b"".join(bytes([len(q.encode())]) + q.encode()
                    + struct.pack("<QQQQQQQ", s["window"], s["used"], s["leased"], s["free"], s.get("epoch", 0),
                                  *s.get("held", [0, 0]))
                    for q, s in slots.items())


def decode_usage_batch(body: bytes) -> list[dict]:
    """The records of a binary usage batch (tollgate_contract::usage::decode_batch), as the JSON
    form's objects."""
    assert body[:4] == b"TGU1", body[:8]
    out, i = [], 4
    while i < len(body):
        (n,) = struct.unpack_from("<I", body, i)
        f, i = body[i + 4:i + 4 + n], i + 4 + n
        assert len(f) == n, "truncated frame"
        j = 0

        def text() -> str:
            nonlocal j
            (m,) = struct.unpack_from("<H", f, j)
            j += 2 + m
            return f[j - m:j].decode()
        rec: dict = {"request_id": text()}
        rec["attempt"], rec["at_ms"] = struct.unpack_from("<IQ", f, j)
        j += 12
        for name in ("key_id", "model", "provider", "provider_model"):
            rec[name] = text()
        rec["status"], flags = struct.unpack_from("<HB", f, j)
        j += 3
        (rec["input_tokens"], rec["output_tokens"], rec["cache_read_tokens"], rec["cache_write_tokens"],
         rec["latency_ms"]) = struct.unpack_from("<QQQQI", f, j)
        j += 36
        rec["stream"], rec["estimated"] = bool(flags & 1), bool(flags & 2)
        rec["ttft_ms"] = None
        if flags & 4:
            (rec["ttft_ms"],) = struct.unpack_from("<I", f, j)
            j += 4
        assert j == n, "trailing bytes in a frame"
        out.append(rec)
    return out
