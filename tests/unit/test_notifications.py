"""POST /notifications through Chalice's test client (jwt_auth with real dev_issuer tokens)."""
from __future__ import annotations

import json

import pytest

from chalicelib.registry import connections, subscriptions
from chalicelib.auth.principal import Principal
from tests.support.websocket import aws_env, management_api, registry  # noqa: F401

ALICE = Principal(sub="alice", issuer="https://issuer.example")
BOB = Principal(sub="bob", issuer="https://issuer.example")
SCOPE = "notifications:send"


@pytest.fixture
def env(registry, management_api, client):
    connections.register("alice-1=", ALICE)
    connections.register("alice-2=", ALICE)
    bob = connections.register("bob-1=", BOB)
    subscriptions.subscribe(bob, "news")
    return client, management_api


def post(client, dev_issuer, body, sub="alice", scope=None, raw=None, token=True):
    headers = {"Content-Type": "application/json"}
    if token:
        claims = {"scope": scope} if scope else {}
        headers["Authorization"] = f"Bearer {dev_issuer.mint(sub, **claims)}"
    response = client.http.post("/notifications", headers=headers,
                                body=raw if raw is not None else json.dumps(body))
    return response.status_code, json.loads(response.body or b"null")


def test_a_user_may_notify_themself_without_the_scope(env, dev_issuer):
    client, api = env
    status, body = post(client, dev_issuer, {"user_id": "alice", "event": "job.done",
                                             "data": {"job": 7}})
    assert status == 200
    assert body == {"delivered": 2, "gone": 0, "failed": 0, "retryable": 0}
    expected = {"type": "event", "event": "job.done", "data": {"job": 7}, "id": 1}
    assert api.frames("alice-1=") == [expected]
    assert api.frames("alice-2=") == [expected]
    assert api.frames("bob-1=") == []


def test_notifying_another_user_needs_the_scope(env, dev_issuer):
    client, api = env
    status, body = post(client, dev_issuer, {"user_id": "bob", "event": "poke"})
    assert status == 403
    assert body == {"error": "forbidden", "message": f"Notifying others needs the scope {SCOPE}"}
    assert api.attempts == {}

    status, body = post(client, dev_issuer, {"user_id": "bob", "event": "poke"}, scope=SCOPE)
    assert status == 200 and body["delivered"] == 1
    assert api.frames("bob-1=") == [{"type": "event", "event": "poke", "data": None, "id": 1}]


def test_channel_notifications_need_the_scope(env, dev_issuer):
    client, api = env
    status, _ = post(client, dev_issuer, {"channel": "news", "event": "e", "data": 1},
                     scope="other:scope")
    assert status == 403
    status, body = post(client, dev_issuer, {"channel": "news", "event": "e", "data": 1},
                        scope=f"read {SCOPE}")
    assert status == 200
    assert body == {"delivered": 1, "gone": 0, "failed": 0, "retryable": 0}
    assert api.frames("bob-1=") == [{"type": "event", "channel": "news", "event": "e",
                                     "data": 1, "id": 1}]


def test_gone_connections_are_reported_and_removed(env, dev_issuer):
    client, api = env
    api.gone.add("alice-2=")
    status, body = post(client, dev_issuer, {"user_id": "alice", "event": "e"})
    assert status == 200
    assert body == {"delivered": 1, "gone": 1, "failed": 0, "retryable": 0}
    assert subscriptions.connections_of_user("alice") == ["alice-1="]


@pytest.mark.parametrize("raw, status, error", [
    ("{not json", 400, "bad_request"),
    ("[]", 400, "bad_request"),
    ('{"event": "e"}', 400, "bad_request"),
    ('{"user_id": "alice", "channel": "news", "event": "e"}', 400, "bad_request"),
    ('{"user_id": "alice"}', 400, "bad_request"),
    ('{"user_id": "alice", "event": 3}', 400, "bad_request"),
    ('{"channel": "no spaces", "event": "e"}', 400, "bad_request"),
    ('{"connection_id": "alice-1=", "event": "e"}', 400, "bad_request"),
    ('{"user_id": "alice", "event": "e", "data": NaN}', 400, "bad_request"),
    (json.dumps({"user_id": "alice", "event": "e", "data": "x" * 131_100}), 413,
     "payload_too_large"),
    (json.dumps({"user_id": "alice", "event": "e", "data": "x" * 200_000}), 413,
     "payload_too_large"),
])
def test_bad_bodies_get_json_errors(env, dev_issuer, raw, status, error):
    client, api = env
    got_status, body = post(client, dev_issuer, None, raw=raw, scope=SCOPE)
    assert got_status == status
    assert body["error"] == error and body["message"]
    assert api.attempts == {}


def test_no_token_is_401(env, dev_issuer):
    client, api = env
    status, _ = post(client, dev_issuer, {"user_id": "alice", "event": "e"}, token=False)
    assert status == 401
    assert api.attempts == {}


def test_registry_down_is_503(env, dev_issuer, monkeypatch):
    from chalicelib import settings

    client, _ = env
    monkeypatch.setenv("CONNECTIONS_TABLE", "missing-table")
    settings.reset()
    status, body = post(client, dev_issuer, {"user_id": "alice", "event": "e"})
    assert status == 503
    assert body == {"error": "registry_unavailable",
                    "message": "Connection registry unavailable"}
