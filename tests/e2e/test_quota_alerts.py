"""Quota threshold alerts (issue 13): a quota crossing a threshold of its limit in a window sends
one Slack-compatible alert to the webhook named in the settings, retried when the webhook fails,
recorded in the audit log; not sent twice, also not after a control-plane restart."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import harness
from conftest import stack_config
from e2e_util import PROVIDER_KEY_ENV, WRONG_KEY_ENV
from mocks.openai_mock import MockOpenAI


class Webhook:
    """A local webhook receiver on an ephemeral port that fails its first `fail` posts."""

    def __init__(self, fail: int) -> None:
        self.posts: list[dict] = []
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if outer.refused < fail:
                    outer.refused += 1
                    self.send_response(500)
                else:
                    outer.posts.append(json.loads(body))
                    self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def alerting(tmp_path_factory):
    hook = Webhook(fail=2)
    env = {PROVIDER_KEY_ENV: harness.random_secret("sk-mock-"), WRONG_KEY_ENV: harness.random_secret("sk-wrong-"),
           "TOLLGATE_TEST_ALERT_WEBHOOK": hook.url}
    mock = MockOpenAI(api_key=env[PROVIDER_KEY_ENV])
    config = stack_config(dead_port=harness.free_port())
    config["settings"] = {"alerts": {"webhook_url_env": "TOLLGATE_TEST_ALERT_WEBHOOK"}}
    stack = harness.GatewayStack(tmp_path_factory.mktemp("alerts"), config, env, mock)
    try:
        yield stack.start(), hook
    finally:
        stack.stop()
        hook.stop()


def test_each_threshold_alerts_once_retried_and_audited(alerting):
    gw, hook = alerting
    key_id, secret = gw.create_key(name="alerted")
    gw.wait_key_usable(secret)
    left = 60 - time.time() % 60
    if left < 30:
        time.sleep(left + 0.5)
    q = gw.admin("POST", "/admin/v1/quotas", json={"metric": "requests", "window_seconds": 60, "limit": 4,
                                                   "key_id": key_id, "alert_thresholds": [50, 100]})
    assert q.status_code == 201, q.text
    quota_id = q.json()["id"]
    time.sleep(0.5)
    word = uuid.uuid4().hex[:8]

    def chat(i: int) -> int:
        return harness.http("POST", f"{gw.base_url}/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                            json={"model": "gpt-mock", "messages": [{"role": "user", "content": f"{word} {i}"}]},
                            timeout=30).status_code
    assert [chat(i) for i in range(2)] == [200, 200]
    harness.wait_until(lambda: len(hook.posts) == 1, 20, "the 50% alert (after two refused posts)")
    assert hook.refused == 2, "the webhook's failures were retried"
    first = hook.posts[0]
    assert (first["quota"], first["threshold_percent"], first["used"], first["limit"]) == (quota_id, 50, 2, 4)
    assert quota_id in first["text"] and "50%" in first["text"]
    assert [chat(i) for i in range(2, 5)] == [200, 200, 429]
    harness.wait_until(lambda: len(hook.posts) == 2, 20, "the 100% alert")
    assert hook.posts[1]["threshold_percent"] == 100
    # Not again: neither on the next checks nor after a restart of the control plane.
    assert gw.cp is not None
    gw.cp.restart()
    time.sleep(7)
    assert len(hook.posts) == 2, hook.posts
    rows = gw.admin("GET", f"/admin/v1/audit?target={quota_id}&action=quota.alert").json()["data"]
    assert sorted(r["after"]["threshold_percent"] for r in rows) == [50, 100]
    assert all(r["actor"] == "system" for r in rows)
    for secret_value in (hook.url,):
        assert secret_value not in json.dumps(rows), "the webhook URL is in no audit row"


def test_thresholds_are_percentages(alerting):
    gw, _ = alerting
    resp = gw.admin("POST", "/admin/v1/quotas", json={"metric": "requests", "window_seconds": 60, "limit": 4,
                                                      "alert_thresholds": [0, 120]})
    assert resp.status_code == 400 and "percentages" in resp.json()["error"]["message"]
