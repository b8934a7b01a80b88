"""The gRPC admin API of the running control plane (`--grpc-addr`), called over real HTTP/2 with
curl (`--http2-prior-knowledge`, the gRPC framing and protobuf encoded here by hand, so no gRPC
library is needed): the same keys authenticate as on REST, a write made over gRPC is seen over
REST and at the gateway (one service layer), errors carry gRPC codes with the REST messages, the
audit trail records the caller's address, and server reflection lists the service (what
`grpcurl list` asks)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import unquote

import pytest

import harness

SERVICE = "tollgate.admin.v1.AdminService"


# -- protobuf wire format (the few shapes these messages use) --

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _decode(data: bytes) -> dict[int, list]:
    """Fields by number: bytes for length-delimited ones, ints for varints."""
    fields: dict[int, list] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            fields.setdefault(number, []).append(varint())
        elif wire == 2:
            length = varint()
            fields.setdefault(number, []).append(data[i:i + length])
            i += length
        else:
            raise AssertionError(f"unexpected wire type {wire} for field {number}")
    return fields


def _text(fields: dict[int, list], number: int) -> str:
    return fields[number][0].decode()


# -- gRPC over curl --

class Answer:
    def __init__(self, status: int, message: str, trailers: dict[str, str], messages: list[bytes]):
        self.status, self.message, self.trailers, self.messages = status, message, trailers, messages

    def one(self) -> dict[int, list]:
        assert self.status == 0, f"grpc-status {self.status}: {self.message}"
        assert len(self.messages) == 1, self.messages
        return _decode(self.messages[0])


def _curl() -> str:
    curl = shutil.which("curl")
    if curl is None:
        message = "curl is needed to call the gRPC admin API"
        if harness.require_e2e():
            pytest.fail(message + " (TOLLGATE_REQUIRE_E2E is set)", pytrace=False)
        pytest.skip(message)
    return curl


def grpc(gw, tmp_path: Path, method: str, *messages: bytes, key: str | None = None,
         path: str | None = None) -> Answer:
    body = b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in messages)
    (tmp_path / "request").write_bytes(body)
    argv = [_curl(), "-s", "--http2-prior-knowledge", "--max-time", "20",
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "--data-binary", f"@{tmp_path / 'request'}",
            "-D", str(tmp_path / "headers"), "-o", str(tmp_path / "response"),
            f"http://{gw.grpc_addr}/{path or SERVICE + '/' + method}"]
    if key is not None:
        argv[1:1] = ["-H", f"authorization: Bearer {key}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    headers: dict[str, str] = {}
    for line in (tmp_path / "headers").read_text().splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith("HTTP/"):
            headers[name.strip().lower()] = value.strip()
    raw = (tmp_path / "response").read_bytes() if (tmp_path / "response").exists() else b""
    frames, i = [], 0
    while i < len(raw):
        length = int.from_bytes(raw[i + 1:i + 5], "big")
        frames.append(raw[i + 5:i + 5 + length])
        i += 5 + length
    return Answer(int(headers["grpc-status"]), unquote(headers.get("grpc-message", "")), headers, frames)


def test_grpc_writes_are_the_same_service_as_rest(gw, tmp_path):
    # No key: UNAUTHENTICATED (16), with the REST message and code.
    refused = grpc(gw, tmp_path, "WhoAmI", b"")
    rest = harness.http("GET", f"{gw.admin_url}/admin/v1/me", timeout=10).json()["error"]
    assert (refused.status, refused.message) == (16, rest["message"])
    assert refused.trailers["tollgate-error-code"] == "invalid_admin_key"

    me = grpc(gw, tmp_path, "WhoAmI", b"", key=gw.admin_key).one()
    assert _text(me, 2) == "admin"
    assert _text(me, 1) == gw.admin("GET", "/admin/v1/me").json()["key_id"]

    # A team made over gRPC is the team REST shows; a second one of the same name: ALREADY_EXISTS (6).
    name = f"grpc-{uuid.uuid4().hex[:8]}"
    team = grpc(gw, tmp_path, "CreateTeam", _field(1, name), key=gw.admin_key).one()
    team_id = _text(team, 1)
    assert gw.admin("GET", f"/admin/v1/teams/{team_id}").json()["name"] == name
    again = grpc(gw, tmp_path, "CreateTeam", _field(1, name), key=gw.admin_key)
    assert (again.status, again.message) == (6, f"A team named '{name}' exists.")

    # A key made over gRPC in that team: the secret once, usable at the gateway; revoked over
    # gRPC, refused there.
    created = grpc(gw, tmp_path, "CreateKey", _field(1, "from-grpc") + _field(6, team_id), key=gw.admin_key).one()
    key = _decode(created[1][0])
    key_id, secret = _text(key, 1), _text(created, 2)
    gw.secrets[f"virtual key {key_id}"] = secret
    assert secret.startswith("tg-") and _text(key, 9) == team_id
    shown = gw.admin("GET", f"/admin/v1/keys/{key_id}").json()
    assert (shown["name"], shown["team_id"], "key" in shown) == ("from-grpc", team_id, False)
    gw.wait_key_usable(secret)
    revoked = grpc(gw, tmp_path, "RevokeKey", _field(1, key_id), key=gw.admin_key).one()
    assert revoked[7][0] > 0, "revoked_at"
    harness.wait_until(lambda: not gw.key_works(secret), 10, "the gateway to refuse the revoked key",
                       on_timeout=gw.log_tails)
    missing = grpc(gw, tmp_path, "GetKey", _field(1, "key_0000000000000000"), key=gw.admin_key)
    assert (missing.status, missing.message) == (5, "No key with id 'key_0000000000000000'.")

    # The audit trail: by the admin key, from the caller's address, no secret.
    trail = gw.admin("GET", f"/admin/v1/audit?target={key_id}").json()["data"]
    assert [(e["action"], e["actor"], e["source"]) for e in trail] == [
        ("key.revoke", _text(me, 1), "127.0.0.1"), ("key.create", _text(me, 1), "127.0.0.1")]
    assert secret not in str(trail)


def test_grpc_tenants_and_reflection(gw, tmp_path):
    # A team admin over gRPC: its team's keys only; another team's key is PERMISSION_DENIED (7).
    teams = [gw.admin("POST", "/admin/v1/teams", json={"name": f"grpc-t-{uuid.uuid4().hex[:8]}"}).json()["id"]
             for _ in range(2)]
    user = gw.admin("POST", "/admin/v1/users",
                    json={"name": "grpc-ta", "team_id": teams[0], "role": "team_admin"}).json()
    mine = gw.admin("POST", "/admin/v1/keys", json={"name": "ta", "user_id": user["id"]}).json()
    other = gw.admin("POST", "/admin/v1/keys", json={"name": "other", "team_id": teams[1]}).json()
    for k in (mine, other):
        gw.secrets[f"virtual key {k['id']}"] = k["key"]
    listed = grpc(gw, tmp_path, "ListKeys", b"", key=mine["key"]).one()
    assert [_text(_decode(k), 1) for k in listed.get(1, [])] == [mine["id"]]
    denied = grpc(gw, tmp_path, "GetKey", _field(1, other["id"]), key=mine["key"])
    rest = gw.admin("GET", f"/admin/v1/keys/{other['id']}", key=mine["key"])
    assert (denied.status, denied.message) == (7, rest.json()["error"]["message"])
    assert rest.status_code == 403 and denied.trailers["tollgate-error-code"] == "forbidden"

    # Server reflection (v1), as grpcurl asks: list_services (field 7) answers field 6.
    reflection = grpc(gw, tmp_path, "", _field(7, ""),
                      path="grpc.reflection.v1.ServerReflection/ServerReflectionInfo").one()
    services = [_text(_decode(s), 1) for s in _decode(reflection[6][0])[1]]
    assert SERVICE in services, services
