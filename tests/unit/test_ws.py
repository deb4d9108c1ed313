"""The WebSocket handlers through Chalice's test client (``lambda_.invoke``) with API-Gateway-shaped
events, a moto registry, real tokens from ``dev_issuer`` and replies read back from a real
management API on 127.0.0.1."""
from __future__ import annotations

import json

import pytest

from chalicelib import settings
from chalicelib.registry import connections, subscriptions, table
from chalicelib.auth.principal import Principal
from tests.support import events
from tests.support.websocket import (TABLE, aws_env, management_api, registry,  # noqa: F401
                                     one_rate_window, serial_registry)

SCOPE = "notifications:send"


@pytest.fixture
def ws(registry, management_api, client):
    """(client, management api)."""
    return client, management_api


def _items():
    return table.dynamodb().scan(TableName=TABLE)["Items"]


def connect(client, **kwargs):
    event = events.connect_event(**kwargs)
    response = client.lambda_.invoke("ws_connect", event).payload
    return event["requestContext"]["connectionId"], response


def send(client, api, connection_id, body=None, **kwargs):
    """Send one frame; returns the frames the sender received in reply."""
    before = len(api.received[connection_id])
    response = client.lambda_.invoke(
        "ws_message", events.message_event(connection_id, body, **kwargs)).payload
    assert response == {"statusCode": 200}
    return [json.loads(b) for b in api.received[connection_id][before:]]


def connected(client, dev_issuer, sub="alice", **claims):
    connection_id, response = connect(client, token=dev_issuer.mint(sub, **claims))
    assert response == {"statusCode": 200}
    return connection_id


# --- $connect ---------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["bearer-header", "raw-header", "lowercase-header", "token",
                                    "Auth", "authorization"])
def test_connect_accepts_every_token_source(ws, dev_issuer, source):
    client, _ = ws
    token = dev_issuer.mint("alice", name="Alice")
    kwargs = {
        "bearer-header": {"headers": {"Authorization": f"Bearer {token}"}},
        "raw-header": {"headers": {"Authorization": token}},
        "lowercase-header": {"headers": {"authorization": f"bearer {token}"}},
    }.get(source, {"query": {source: token}})

    connection_id, response = connect(client, **kwargs)

    assert response == {"statusCode": 200}
    stored = connections.get_connection(connection_id)
    assert stored.user_id == "alice"
    assert stored.principal.claims == {"name": "Alice"}
    assert stored.source_ip == events.SOURCE_IP
    assert stored.user_agent == events.USER_AGENT
    assert stored.expires_at - stored.connected_at > 2 * 3600


def test_connect_uses_the_authorizer_context(ws):
    client, _ = ws
    principal = Principal(sub="carol", issuer="https://issuer.example",
                          scopes=("notifications:send",), claims={"email": "c@example.com"})
    connection_id, response = connect(client, authorizer=principal.flat_context())
    assert response == {"statusCode": 200}
    assert connections.get_connection(connection_id).principal == principal


@pytest.mark.parametrize("case", ["none", "garbage", "expired", "wrong-audience", "tampered",
                                  "empty-query"])
def test_connect_rejects_without_writing(ws, dev_issuer, case):
    client, api = ws
    token = dev_issuer.mint("alice")
    kwargs = {
        "none": {},
        "garbage": {"headers": {"Authorization": "Bearer not.a.jwt"}},
        "expired": {"token": dev_issuer.mint("alice", ttl=-3600)},
        "wrong-audience": {"token": dev_issuer.mint("alice", aud="someone-else")},
        "tampered": {"token": token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB")},
        "empty-query": {"query": {"token": ""}},
    }[case]
    _, response = connect(client, **kwargs)
    assert response == {"statusCode": 401}
    assert _items() == []
    assert api.attempts == {}


def test_connect_with_registry_down_is_refused(ws, dev_issuer, monkeypatch):
    client, _ = ws
    monkeypatch.setenv("CONNECTIONS_TABLE", "missing-table")
    settings.reset()
    _, response = connect(client, token=dev_issuer.mint("alice"))
    assert response == {"statusCode": 503}


# --- $default ---------------------------------------------------------------------------------

def test_ping_pong_with_id(ws, dev_issuer):
    client, api = ws
    connection_id = connected(client, dev_issuer)
    assert send(client, api, connection_id, {"action": "ping"}) == [{"type": "pong"}]
    assert send(client, api, connection_id, {"action": "ping", "id": "r1"}) == \
        [{"type": "pong", "id": "r1"}]
    assert send(client, api, connection_id, {"action": "ping", "id": 7}) == \
        [{"type": "pong", "id": 7}]


def test_subscribe_publish_unsubscribe(ws, dev_issuer):
    client, api = ws
    alice = connected(client, dev_issuer, "alice")
    bob = connected(client, dev_issuer, "bob")
    carol = connected(client, dev_issuer, "carol", scope=SCOPE)  # server events need it

    assert send(client, api, alice, {"action": "subscribe", "channel": "news"}) == \
        [{"type": "subscribed", "channel": "news"}]
    assert send(client, api, bob, {"action": "subscribe", "channel": "news", "id": "s"}) == \
        [{"type": "subscribed", "channel": "news", "id": "s"}]
    assert sorted(subscriptions.subscribers_of_channel("news")) == sorted([alice, bob])

    replies = send(client, api, carol, {"action": "publish", "channel": "news",
                                        "event": "headline", "data": {"title": "Hi"}})
    assert replies == [{"type": "published", "channel": "news", "event": "headline"}]
    event_frame = {"type": "event", "channel": "news", "event": "headline",
                   "data": {"title": "Hi"}, "id": 1}
    assert api.frames(alice)[-1] == event_frame
    assert api.frames(bob)[-1] == event_frame

    assert send(client, api, bob, {"action": "unsubscribe", "channel": "news"}) == \
        [{"type": "unsubscribed", "channel": "news"}]
    assert send(client, api, bob, {"action": "unsubscribe", "channel": "news"}) == \
        [{"type": "unsubscribed", "channel": "news"}]
    assert subscriptions.subscribers_of_channel("news") == [alice]
    send(client, api, carol, {"action": "publish", "channel": "news", "event": "again"})
    assert api.frames(alice)[-1]["event"] == "again"
    assert [f["event"] for f in api.frames(bob) if f["type"] == "event"] == ["headline"]


def test_channel_rules_apply_to_subscriptions(ws, dev_issuer):
    client, api = ws
    alice = connected(client, dev_issuer, "alice")
    ok = [
        ("private-user-alice", {"type": "subscribed", "channel": "private-user-alice"}),
        ("presence-lobby", {"type": "subscribed", "channel": "presence-lobby"}),
    ]
    for channel, expected in ok:
        assert send(client, api, alice, {"action": "subscribe", "channel": channel}) == [expected]
    denied = [("private-user-bob", "forbidden"), ("private-admins", "forbidden"),
              ("private-encrypted-user-alice", "bad_request"), ("bad name!", "bad_request"),
              ("x" * 165, "bad_request"), (None, "bad_request"), (42, "bad_request")]
    for channel, code in denied:
        body = {"action": "subscribe"}
        if channel is not None:
            body["channel"] = channel
        (reply,) = send(client, api, alice, body)
        assert reply["type"] == "error" and reply["code"] == code, (channel, reply)
        assert reply["action"] == "subscribe"
        assert reply["message"]
    assert connections.get_connection(alice).channels == ("presence-lobby",
                                                          "private-user-alice")


def test_publish_cannot_reach_a_channel_of_someone_else(ws, dev_issuer):
    client, api = ws
    alice = connected(client, dev_issuer, "alice")
    bob = connected(client, dev_issuer, "bob")
    send(client, api, bob, {"action": "subscribe", "channel": "private-user-bob"})
    for event_name, code in (("spoof", "client_event_name"), ("client-spoof", "not_subscribed")):
        (reply,) = send(client, api, alice, {"action": "publish", "channel": "private-user-bob",
                                             "event": event_name, "data": 1})
        assert reply["type"] == "error" and reply["code"] == code
    assert api.frames(bob) == [{"type": "subscribed", "channel": "private-user-bob"}]


@pytest.mark.parametrize("body, code", [
    ({"action": "publish", "channel": "news"}, "bad_request"),
    ({"action": "publish", "channel": "news", "event": ""}, "bad_request"),
    ({"action": "publish", "channel": "news", "event": "e" * 201}, "bad_request"),
    ({"action": "publish", "event": "e"}, "bad_request"),
    ({"action": "publish", "channel": "presence-room", "event": "client-e",
      "data": "x" * 140_000}, "client_event_too_large"),  # over 10 KB (CLIENT_EVENT_MAX_BYTES)
    ({"action": "publish", "channel": "news", "event": "server-e",
      "data": "x" * 140_000}, "payload_too_large"),  # a server event: the 128 KB frame
    ({"action": "pushtowebsocket"}, "bad_request"),
])
def test_bad_action_fields_get_error_frames(ws, dev_issuer, body, code):
    client, api = ws
    alice = connected(client, dev_issuer, "alice", scope=SCOPE)
    listener = connected(client, dev_issuer, "bob")
    for channel in ("news", "presence-room"):
        send(client, api, listener, {"action": "subscribe", "channel": channel})
    send(client, api, alice, {"action": "subscribe", "channel": "presence-room"})
    (reply,) = send(client, api, alice, body)
    assert reply["type"] == "error"
    assert reply["code"] == code
    assert reply["action"] == body["action"]
    assert len(api.frames(listener)) == 2  # only its "subscribed": nothing was published


def test_pushtowebsocket_echoes_through_post_to_connection(ws, dev_issuer):
    client, api = ws
    alice = connected(client, dev_issuer)
    assert send(client, api, alice, {"action": "pushtowebsocket", "message": "hello"}) == \
        [{"type": "message", "message": "hello"}]
    assert send(client, api, alice, {"action": "pushtowebsocket",
                                     "message": {"nested": [1, 2]}}) == \
        [{"type": "message", "message": {"nested": [1, 2]}}]
    (reply,) = send(client, api, alice, {"action": "pushtowebsocket",
                                         "message": "é" * 65_530, "id": "big"})
    assert reply["code"] == "payload_too_large" and reply["id"] == "big"


@pytest.mark.parametrize("kwargs, code", [
    ({"raw": "{not json"}, "invalid_frame"),
    ({"raw": ""}, "invalid_frame"),
    ({"raw": '{"action": "ping", "n": NaN}'}, "invalid_frame"),
    ({"body": ["ping"]}, "invalid_frame"),
    ({"body": "ping"}, "invalid_frame"),
    ({"body": {"channel": "news"}}, "invalid_frame"),
    ({"body": {"action": "dance"}}, "unknown_action"),
    ({"body": {"action": 5}}, "unknown_action"),
    ({"body": {"action": "PING"}}, "unknown_action"),
    ({"binary": b"\x00\x01"}, "invalid_frame"),
])
def test_bad_frames_get_error_frames(ws, dev_issuer, kwargs, code):
    client, api = ws
    alice = connected(client, dev_issuer)
    (reply,) = send(client, api, alice, **kwargs)
    assert set(reply) >= {"type", "code", "message"}
    assert reply["type"] == "error" and reply["code"] == code
    assert isinstance(reply["message"], str) and reply["message"]


def test_unregistered_connection_is_told_to_reconnect(ws):
    client, api = ws
    (reply,) = send(client, api, "ghost=", {"action": "subscribe", "channel": "news"})
    assert reply == {"type": "error", "code": "unauthorized",
                     "message": "Connection not registered; reconnect", "action": "subscribe"}
    assert subscriptions.subscribers_of_channel("news") == []


# --- $disconnect ------------------------------------------------------------------------------

def test_disconnect_removes_everything_and_is_idempotent(ws, dev_issuer):
    client, api = ws
    alice = connected(client, dev_issuer, "alice")
    other = connected(client, dev_issuer, "alice")
    for channel in ("news", "presence-lobby", "private-user-alice"):
        send(client, api, alice, {"action": "subscribe", "channel": channel})

    for _ in range(2):
        response = client.lambda_.invoke("ws_disconnect", events.disconnect_event(alice))
        assert response.payload == {"statusCode": 200}

    assert connections.get_connection(alice) is None
    assert subscriptions.connections_of_user("alice") == [other]
    assert subscriptions.subscribers_of_channel("news") == []
    assert {item["connection_id"]["S"] for item in _items()} == {other}


def test_disconnect_with_registry_down_still_answers(ws, dev_issuer, monkeypatch, caplog):
    client, _ = ws
    alice = connected(client, dev_issuer)
    monkeypatch.setenv("CONNECTIONS_TABLE", "missing-table")
    settings.reset()
    response = client.lambda_.invoke("ws_disconnect", events.disconnect_event(alice))
    assert response.payload == {"statusCode": 200}
    assert "registry_unavailable" in caplog.text
    monkeypatch.setenv("CONNECTIONS_TABLE", TABLE)
    settings.reset()
    assert connections.get_connection(alice) is not None  # left for the TTL


# --- client events (Pusher's model) -----------------------------------------------------------

def _subscribe_all(client, api, channel, *connection_ids):
    for connection_id in connection_ids:
        assert send(client, api, connection_id, {"action": "subscribe", "channel": channel}) \
            == [{"type": "subscribed", "channel": channel}]


def _events(api, connection_id):
    return [f for f in api.frames(connection_id) if f["type"] == "event"]


def test_client_event_on_presence_reaches_the_others_with_the_senders_user_id(ws, dev_issuer):
    client, api = ws
    alice = connected(client, dev_issuer, "auth0|alice")
    bob = connected(client, dev_issuer, "bob")
    carol = connected(client, dev_issuer, "carol")
    outsider = connected(client, dev_issuer, "dave")
    _subscribe_all(client, api, "presence-room", alice, bob, carol)

    replies = send(client, api, alice, {"action": "publish", "channel": "presence-room",
                                        "event": "client-typing", "data": {"on": True}})
    assert replies == [{"type": "published", "channel": "presence-room",
                        "event": "client-typing"}]
    expected = {"type": "event", "channel": "presence-room", "event": "client-typing",
                "data": {"on": True}, "user_id": "auth0=7Calice", "id": 1}
    assert _events(api, bob) == [expected]
    assert _events(api, carol) == [expected]
    assert _events(api, alice) == []          # never echoed to its sender
    assert api.frames(outsider) == []


def test_client_event_on_a_private_channel_skips_only_the_sending_connection(ws, dev_issuer):
    client, api = ws
    phone = connected(client, dev_issuer, "alice")
    laptop = connected(client, dev_issuer, "alice")
    _subscribe_all(client, api, "private-user-alice", phone, laptop)
    send(client, api, phone, {"action": "publish", "channel": "private-user-alice",
                              "event": "client-sync", "data": 3})
    assert _events(api, laptop) == [{"type": "event", "channel": "private-user-alice",
                                     "event": "client-sync", "data": 3, "id": 1}]
    assert _events(api, phone) == []


@pytest.mark.parametrize("channel, event_name, code", [
    ("news", "client-x", "client_event_channel"),            # public channel
    ("presence-room", "typing", "client_event_name"),        # not client-, no scope
    ("presence-other", "client-x", "not_subscribed"),
    ("private-encrypted-user-alice", "client-x", "client_event_channel"),
    ("bad name", "client-x", "bad_request"),
])
def test_client_event_rules_give_clear_error_frames(ws, dev_issuer, channel, event_name, code):
    client, api = ws
    alice = connected(client, dev_issuer, "alice")
    bob = connected(client, dev_issuer, "bob")
    for name in ("news", "presence-room"):
        _subscribe_all(client, api, name, alice, bob)
    (reply,) = send(client, api, alice, {"action": "publish", "channel": channel,
                                         "event": event_name, "id": 9})
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert reply["id"] == 9 and reply["message"]
    assert _events(api, bob) == []


def test_server_events_over_the_socket_need_the_scope_and_act_like_rest(ws, dev_issuer):
    client, api = ws
    sender = connected(client, dev_issuer, "ops", scope=SCOPE)
    listener = connected(client, dev_issuer, "bob")
    _subscribe_all(client, api, "news", sender, listener)
    (reply,) = [f for f in send(client, api, sender, {
        "action": "publish", "channel": "news", "event": "deploy", "data": 1})
        if f["type"] != "event"]
    assert reply == {"type": "published", "channel": "news", "event": "deploy"}
    frame = {"type": "event", "channel": "news", "event": "deploy", "data": 1, "id": 1}
    assert _events(api, listener) == [frame]
    assert _events(api, sender) == [frame]    # as POST /notifications: every subscriber


@pytest.mark.parametrize("limit", [None, "3"])
def test_client_events_are_rate_limited_per_connection(ws, dev_issuer, monkeypatch, limit,
                                                       one_rate_window):
    client, api = ws
    if limit:
        monkeypatch.setenv("CLIENT_EVENT_RATE_LIMIT", limit)
    allowed = int(limit or 10)  # Pusher's 10 per second by default
    alice = connected(client, dev_issuer, "alice")
    bob = connected(client, dev_issuer, "bob")
    _subscribe_all(client, api, "presence-room", alice, bob)
    frame = {"action": "publish", "channel": "presence-room", "event": "client-move"}
    replies = [send(client, api, alice, {**frame, "data": n})[0] for n in range(allowed + 2)]
    assert [r["type"] for r in replies] == ["published"] * allowed + ["error", "error"]
    assert replies[-1]["code"] == "client_event_rate_limited"
    assert str(allowed) in replies[-1]["message"]
    assert [f["data"] for f in _events(api, bob)] == list(range(allowed))
    # another connection has its own budget
    _subscribe_all(client, api, "presence-room", bob)
    assert send(client, api, bob, {**frame, "data": "b"})[0]["type"] == "published"


# --- the subscription cap under concurrency ---------------------------------------------------

#: the cap these tests race against, lowered from the documented 100
#: (``subscriptions.MAX_SUBSCRIPTIONS_PER_CONNECTION``) so that each frame is one of few: on the
#: serial moto server every subscribe costs tens of milliseconds
SMALL_CAP = 10


def test_concurrent_subscribes_never_pass_the_cap(serial_registry, management_api, client,
                                                  dev_issuer, monkeypatch):
    """API Gateway runs $default invocations of one connection concurrently: 30 subscribe
    frames at once, through the real Lambda handler, leave at most the cap's subscriptions."""
    from concurrent.futures import ThreadPoolExecutor

    import app as app_module

    monkeypatch.setattr(subscriptions, "MAX_SUBSCRIPTIONS_PER_CONNECTION", SMALL_CAP)
    api = management_api
    alice = connected(client, dev_issuer, "alice")
    frames = [events.message_event(alice, {"action": "subscribe", "channel": f"room-{n}",
                                           "id": n}) for n in range(3 * SMALL_CAP)]
    with ThreadPoolExecutor(max_workers=len(frames)) as pool:
        results = list(pool.map(lambda e: app_module.ws_message(e, None), frames))
    assert results == [{"statusCode": 200}] * len(frames)

    replies = {f["id"]: f for f in api.frames(alice)}
    assert sorted(replies) == list(range(len(frames)))   # every frame answered
    kinds = [r.get("type") if r["type"] == "subscribed" else r["code"]
             for r in replies.values()]
    assert set(kinds) <= {"subscribed", "subscription_limit"}
    stored = connections.get_connection(alice).channels
    assert len(stored) == kinds.count("subscribed") == SMALL_CAP
    assert sorted(stored) == sorted(r["channel"] for r in replies.values()
                                    if r["type"] == "subscribed")


def test_duplicate_and_removed_subscriptions_keep_the_count_exact(serial_registry,
                                                                  management_api, client,
                                                                  dev_issuer, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import app as app_module

    assert subscriptions.MAX_SUBSCRIPTIONS_PER_CONNECTION == 100  # the documented cap
    monkeypatch.setattr(subscriptions, "MAX_SUBSCRIPTIONS_PER_CONNECTION", SMALL_CAP)
    api = management_api
    alice = connected(client, dev_issuer, "alice")
    same = [events.message_event(alice, {"action": "subscribe", "channel": "news"})
            for _ in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda e: app_module.ws_message(e, None), same))
    assert api.frames(alice) == [{"type": "subscribed", "channel": "news"}] * 20
    for n in range(SMALL_CAP - 1):
        send(client, api, alice, {"action": "subscribe", "channel": f"room-{n}"})
    (reply,) = send(client, api, alice, {"action": "subscribe", "channel": "one-more"})
    assert reply["code"] == "subscription_limit"
    for _ in range(3):  # unsubscribing what is not there gives nothing back
        send(client, api, alice, {"action": "unsubscribe", "channel": "never"})
    (reply,) = send(client, api, alice, {"action": "subscribe", "channel": "one-more"})
    assert reply["code"] == "subscription_limit"
    send(client, api, alice, {"action": "unsubscribe", "channel": "news"})
    send(client, api, alice, {"action": "unsubscribe", "channel": "news"})
    assert send(client, api, alice, {"action": "subscribe", "channel": "one-more"}) == \
        [{"type": "subscribed", "channel": "one-more"}]
    (reply,) = send(client, api, alice, {"action": "subscribe", "channel": "another"})
    assert reply["code"] == "subscription_limit"
