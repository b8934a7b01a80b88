"""The data plane keeps serving while the control plane is down, and catches up after."""

from __future__ import annotations

import time

import pytest
import requests

from e2e_util import assert_openai_error, post_chat, unique, user_message
from harness import http, wait_until


@pytest.mark.e2e_order(1)  # restarts the control plane: run after the other tests
def test_control_plane_down_and_restart(gw, mock):
    key_id, secret = gw.create_key()
    gw.wait_key_usable(secret)
    revoked_id, revoked = gw.create_key()
    gw.wait_key_usable(revoked)
    gw.revoke_key(revoked_id)
    wait_until(lambda: not gw.key_works(revoked), 5.0, "the revoked key to be refused")

    gw.cp.kill()  # kill -9
    assert not gw.cp.alive
    with pytest.raises(requests.ConnectionError):
        http("GET", f"{gw.admin_url}/healthz", timeout=2)

    # Existing keys keep working, promptly (no blocking call to the dead control plane).
    client = gw.client(secret, timeout=5.0)
    for _ in range(5):
        token = unique()
        start = time.monotonic()
        resp = client.chat.completions.create(model="gpt-mock", messages=user_message(token))
        assert resp.choices[0].message.content == f"echo: {token}"
        assert time.monotonic() - start < 2.0
    token = unique()
    chunks = list(client.chat.completions.create(model="gpt-mock", stream=True,
                                                 messages=user_message(token)))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        f"echo: {token}"
    # ... and revoked ones stay refused.
    assert_openai_error(post_chat(gw, revoked, {"model": "gpt-mock",
                                                "messages": user_message("x")}), 401)

    gw.cp.restart()  # same arguments, ports and data dir
    new_id, new_secret = gw.create_key()
    took = gw.wait_key_usable(new_secret, timeout=15.0)
    resp = gw.client(new_secret).chat.completions.create(model="gpt-mock",
                                                         messages=user_message("after restart"))
    assert resp.choices[0].message.content == "echo: after restart"

    # State survived the restart: the old key works, the revoked one does not.
    assert gw.key_works(secret)
    assert_openai_error(post_chat(gw, revoked, {"model": "gpt-mock",
                                                "messages": user_message("x")}), 401)
    ids = {k["id"] for k in gw.list_keys()}
    assert {key_id, revoked_id, new_id} <= ids
    print(f"new key usable {took:.2f}s after the control plane restarted")
