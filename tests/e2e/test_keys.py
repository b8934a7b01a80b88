"""Virtual keys and the admin REST API: creation, listing, revocation, expiry, admin auth."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid

import openai
import pytest

from e2e_util import MODEL_NAMES, assert_openai_error, post_chat, unique, user_message
from harness import random_secret, wait_until


def secret_forms(secret: str) -> list[str]:
    """The secret and the usual encodings of its unsalted SHA-256."""
    digest = hashlib.sha256(secret.encode()).digest()
    b64 = base64.b64encode(digest).decode()
    urlsafe = base64.urlsafe_b64encode(digest).decode()
    return [secret, digest.hex(), digest.hex().upper(), b64, b64.rstrip("="),
            urlsafe.rstrip("=")]


def chat_status(gw, secret: str) -> int:
    return post_chat(gw, secret, {"model": "gpt-mock", "messages": user_message("ping")},
                     timeout=5).status_code


def test_create_key_response(gw):
    name = f"e2e-create-{uuid.uuid4().hex[:6]}"
    expires = int(time.time()) + 3600
    resp = gw.admin("POST", "/admin/v1/keys",
                    json={"name": name, "models": ["gpt-mock", "demo"], "expires_at": expires})
    assert resp.status_code == 201, resp.text
    data = resp.json()
    gw.secrets[f"virtual key {data['id']}"] = data["key"]
    assert data["name"] == name
    assert data["models"] == ["gpt-mock", "demo"]
    assert data["expires_at"] == expires
    assert isinstance(data["created_at"], int) and abs(data["created_at"] - time.time()) < 120
    assert isinstance(data["key"], str) and len(data["key"]) >= 32
    assert data["key"] not in data["id"] and data["id"] not in data["key"]


def test_list_keys_never_shows_secrets(gw, user_key):
    key_id, secret = gw.create_key(models=["gpt-mock"])
    resp = gw.admin("GET", "/admin/v1/keys")
    assert resp.status_code == 200
    entries = {k["id"]: k for k in resp.json()["data"]}
    assert key_id in entries and user_key[0] in entries
    entry = entries[key_id]
    assert entry["models"] == ["gpt-mock"]
    assert entry["revoked_at"] is None
    assert {"id", "name", "models", "expires_at", "created_at", "revoked_at"} <= set(entry)
    for e in entries.values():
        assert "key" not in e
        assert not [f for f in e if "secret" in f.lower() or "hash" in f.lower()], e
    for s in (secret, user_key[1]):
        for form in secret_forms(s):
            assert form not in resp.text


def test_admin_models(gw):
    resp = gw.admin("GET", "/admin/v1/models")
    assert resp.status_code == 200
    models = {m["name"]: m for m in resp.json()["data"]}
    assert set(models) == MODEL_NAMES
    assert all(isinstance(m["deployments"], list)
               and len(m["deployments"]) == (2 if name == "as-sent" else 1)
               for name, m in models.items())
    for value in gw.provider_env.values():
        assert value not in resp.text


@pytest.mark.parametrize("who", ["no key", "wrong key", "virtual key"])
def test_admin_api_requires_admin_key(gw, user_key, who):
    key = {"no key": None, "wrong key": random_secret("tg-admin-"),
           "virtual key": user_key[1]}[who]
    allowed = (401, 403) if who == "virtual key" else (401,)
    victim_id, _ = gw.create_key(name=f"e2e-victim-{uuid.uuid4().hex[:6]}")
    assert gw.admin("GET", "/admin/v1/keys", key=key).status_code in allowed
    assert gw.admin("GET", "/admin/v1/models", key=key).status_code in allowed
    name = f"e2e-forbidden-{uuid.uuid4().hex[:6]}"
    resp = gw.admin("POST", "/admin/v1/keys", key=key, json={"name": name, "models": None,
                                                            "expires_at": None})
    assert resp.status_code in allowed
    assert gw.admin("DELETE", f"/admin/v1/keys/{victim_id}", key=key).status_code in allowed
    # Nothing happened.
    keys = gw.list_keys()
    assert name not in {k["name"] for k in keys}
    assert next(k for k in keys if k["id"] == victim_id)["revoked_at"] is None


def test_revocation_takes_effect_within_a_second(gw, mock):
    key_id, secret = gw.create_key()
    gw.wait_key_usable(secret)
    token = unique()
    ok = gw.client(secret).chat.completions.create(model="gpt-mock", messages=user_message(token))
    assert ok.choices[0].message.content == f"echo: {token}"

    gw.revoke_key(key_id)
    revoked = time.monotonic()
    wait_until(lambda: chat_status(gw, secret) == 401, 5.0, "the revoked key to be refused",
               interval=0.01)
    elapsed = time.monotonic() - revoked
    assert elapsed < 1.0, f"revoked key still accepted {elapsed:.3f}s after the DELETE returned"

    # Refused from now on, on every worker (each request is a new connection).
    for _ in range(10):
        resp = post_chat(gw, secret, {"model": "gpt-mock", "messages": user_message(token)})
        assert_openai_error(resp, 401)
    with pytest.raises(openai.AuthenticationError):
        gw.client(secret).models.list()
    entry = next(k for k in gw.list_keys() if k["id"] == key_id)
    assert isinstance(entry["revoked_at"], int)


def test_key_expired_at_creation_is_refused(gw):
    _, expired = gw.create_key(expires_at=int(time.time()) - 60)
    # Created after the expired one: once it works, the expired one has reached Envoy too.
    _, fresh = gw.create_key()
    gw.wait_key_usable(fresh)
    resp = post_chat(gw, expired, {"model": "gpt-mock", "messages": user_message("x")})
    assert_openai_error(resp, 401)


def test_key_stops_working_when_it_expires(gw):
    expires_at = int(time.time()) + 3
    _, secret = gw.create_key(expires_at=expires_at)
    wait_until(lambda: gw.key_works(secret), max(0.5, expires_at - time.time() - 0.3),
               "the new key to work before it expires")
    # Valid until `expires_at` (unix seconds), refused from then on: allow 1 s of slack.
    wait_until(lambda: chat_status(gw, secret) == 401, expires_at + 1.5 - time.time(),
               "the key to be refused once expired", interval=0.05)
    assert time.time() >= expires_at - 0.05, "refused before its expiry time"
    assert_openai_error(post_chat(gw, secret, {"model": "gpt-mock",
                                               "messages": user_message("x")}), 401)
