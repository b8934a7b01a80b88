"""The spend ledger's ingestion endpoint and spend queries (issue 12, control-plane side): a
usage batch posted by the data plane (data-plane token, internal listener) is priced with the
catalogue, stored once however often it is sent, attributed to the key's user and team, and
summed per day; admins add negotiated prices that apply to later records; a model without a
price is counted as unpriced, never at $0. (The records the filters post through Envoy are
tested in test_metering.py.)"""

from __future__ import annotations

import struct
import time
import uuid

from e2e_util import http


def post_usage(gw, records, token=None):
    return http("POST", f"{gw.internal_url}/internal/v1/usage", json={"records": records},
                headers={"Authorization": f"Bearer {token or gw.data_plane_token}"})


def record(key_id: str, request_id: str, provider_model: str = "gpt-4o-mini-2024-07-18", **kw):
    return {"request_id": request_id, "attempt": 0, "at_ms": int(time.time() * 1000), "key_id": key_id,
            "model": "gpt-mock", "provider": "openai", "provider_model": provider_model, "status": 200,
            "input_tokens": 1000, "output_tokens": 500, **kw}


def binary_record(r: dict) -> bytes:
    """One record's frame in the data plane's binary form (the layout of
    tollgate_contract::usage::encode_record)."""
    def text(v: str) -> bytes:
        return struct.pack("<H", len(v.encode())) + v.encode()
    f = text(r["request_id"]) + struct.pack("<IQ", r.get("attempt", 0), r["at_ms"])
    f += b"".join(text(r[k]) for k in ("key_id", "model", "provider", "provider_model"))
    f += struct.pack("<HB", r["status"], 0)
    f += struct.pack("<QQQQI", r.get("input_tokens", 0), r.get("output_tokens", 0), 0, 0, 0)
    return struct.pack("<I", len(f)) + f


def test_usage_is_stored_once_priced_and_attributed(gw):
    team = gw.admin("POST", "/admin/v1/teams", json={"name": f"ledger-{uuid.uuid4().hex[:6]}"}).json()
    key = gw.admin("POST", "/admin/v1/keys", json={"name": "ledger", "team_id": team["id"]}).json()
    gw.secrets[f"virtual key {key['id']}"] = key["key"]
    rid = uuid.uuid4().hex
    batch = [record(key["id"], rid), record(key["id"], rid, attempt=1),
             record(key["id"], uuid.uuid4().hex, provider_model="not-in-the-catalogue")]
    # only the data plane may post
    assert post_usage(gw, batch, token="tg-not-the-token-000000000000").status_code == 401
    resp = post_usage(gw, batch)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": 3, "duplicates": 0, "rejected": 0}
    assert post_usage(gw, batch).json() == {"accepted": 0, "duplicates": 3, "rejected": 0}, "sent twice, stored once"
    rows = gw.admin("GET", f"/admin/v1/spend?scope=team&scope_id={team['id']}").json()["data"]
    assert len(rows) == 1
    # two priced attempts of gpt-4o-mini: 2 × (1000 × $0.15 + 500 × $0.60) per million
    assert (rows[0]["requests"], rows[0]["unpriced"], rows[0]["cost_usd"]) == (3, 1, "0.000900000")
    assert rows[0]["input_tokens"] == 3000 and rows[0]["output_tokens"] == 1500
    # a negotiated price applies to later records, and names a new catalogue version
    before = gw.admin("GET", "/admin/v1/prices").json()["version"]
    added = gw.admin("POST", "/admin/v1/prices", json={"provider": "openai", "model": "gpt-4o-mini*", "input": "0.10",
                                                        "output": "0.40", "as_of": "2026-12-01", "source": "contract"})
    assert added.status_code == 201 and added.json()["version"] != before
    post_usage(gw, [record(key["id"], uuid.uuid4().hex)])
    rows = gw.admin("GET", f"/admin/v1/spend?scope=key&scope_id={key['id']}").json()["data"]
    assert rows[0]["cost_usd"] == "0.001200000"  # + 1000 × 0.10 + 500 × 0.40
    # a malformed record is refused alone: the rest of its batch is stored (the data plane would
    # otherwise send the same batch again for ever)
    bad = post_usage(gw, [record(key["id"], ""), record(key["id"], uuid.uuid4().hex)])
    assert bad.status_code == 200 and bad.json() == {"accepted": 1, "duplicates": 0, "rejected": 1}
    # the binary form the data plane sends (tollgate_contract::usage::encode_record) is stored
    # the same; one that does not add up is refused as a whole with a 400
    rid2 = uuid.uuid4().hex
    body = b"TGU1" + binary_record(record(key["id"], rid2))
    headers = {"Authorization": f"Bearer {gw.data_plane_token}", "Content-Type": "application/x-tollgate-usage"}
    resp = http("POST", f"{gw.internal_url}/internal/v1/usage", data=body, headers=headers)
    assert resp.status_code == 200 and resp.json() == {"accepted": 1, "duplicates": 0, "rejected": 0}, resp.text
    assert post_usage(gw, [record(key["id"], rid2)]).json()["duplicates"] == 1, "the same record in either form"
    cut = http("POST", f"{gw.internal_url}/internal/v1/usage", data=body[:-3], headers=headers)
    assert cut.status_code == 400 and cut.json()["error"]["code"] == "invalid_batch", cut.text
    # spend is tenant-scoped like the rest of the admin API
    other = gw.admin("POST", "/admin/v1/teams", json={"name": f"other-{uuid.uuid4().hex[:6]}"}).json()
    user = gw.admin("POST", "/admin/v1/users", json={"name": "ta", "team_id": other["id"], "role": "team_admin"}).json()
    ta_key = gw.admin("POST", "/admin/v1/keys", json={"name": "ta", "user_id": user["id"]}).json()
    gw.secrets[f"virtual key {ta_key['id']}"] = ta_key["key"]
    assert gw.admin("GET", f"/admin/v1/spend?scope=team&scope_id={team['id']}", key=ta_key["key"]).status_code == 403
    assert gw.admin("GET", f"/admin/v1/spend?scope=team&scope_id={other['id']}", key=ta_key["key"]).status_code == 200
