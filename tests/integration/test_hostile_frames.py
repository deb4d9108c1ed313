"""What hostile clients tried against both dialects (issue 19's defects), through the local
gateway with real WebSocket clients on 127.0.0.1: the app's real handlers, a moto server
registry. Helpers and fixtures are those of ``tests/integration/test_pusher_socket.py``.
"""
from __future__ import annotations

import json

from websockets.sync.client import connect

from chalicelib.delivery import push
from chalicelib.dialects.pusher import http_api
from tests.integration.test_pusher_socket import (  # noqa: F401
    data_of, established, gateway, recv, subscribe_presence, url)
from tests.support.websocket import aws_env, serial_registry  # noqa: F401


def subscribe_public(ws, channel):
    ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
    return recv(ws)


# --- defect 1: client events never set a cache channel's cached event -------------------------

def test_client_events_never_become_a_cache_channels_state(gateway, dev_issuer):
    """A member of a ``presence-cache-…`` channel sends ``client-score`` (Pusher dialect) and
    a native member publishes one too: the others receive them, but a later subscriber still
    gets ``pusher:cache_miss``; only what the server publishes (the HTTP API,
    ``POST /notifications``) becomes what new subscribers are given (soketi caches only
    those)."""
    room = "presence-cache-game"
    token = dev_issuer.mint("carol")
    with connect(url(gateway)) as alice, connect(url(gateway)) as bob, \
            connect(f"ws://127.0.0.1:{gateway.port}/test?token={token}") as carol:
        subscribe_presence(alice, established(alice)["socket_id"], room, "alice")
        assert recv(alice)["event"] == "pusher_internal:subscription_succeeded"
        assert recv(alice)["event"] == "pusher:cache_miss"
        subscribe_presence(bob, established(bob)["socket_id"], room, "bob")
        assert recv(bob)["event"] == "pusher_internal:subscription_succeeded"
        assert recv(bob)["event"] == "pusher:cache_miss"
        assert recv(alice)["event"] == "pusher_internal:member_added"
        carol.send(json.dumps({"action": "subscribe", "channel": room}))
        assert recv(carol) == {"type": "subscribed", "channel": room}
        alice.send(json.dumps({"event": "client-score", "channel": room,
                               "data": {"forged": True}}))
        assert (recv(bob)["event"], recv(carol)["event"]) == ("client-score", "client-score")
        carol.send(json.dumps({"action": "publish", "channel": room, "event": "client-score",
                               "data": {"forged": "native"}}))
        assert recv(carol)["type"] == "published"
        assert data_of(recv(bob)) == {"forged": "native"}
        with connect(url(gateway)) as later:
            subscribe_presence(later, established(later)["socket_id"], room, "dave")
            assert recv(later)["event"] == "pusher_internal:subscription_succeeded"
            assert recv(later) == {"event": "pusher:cache_miss", "channel": room,
                                   "data": "{}"}
    # what the server publishes is the channel's state: the HTTP API's events, notifications
    channel = "cache-board"
    http_api.publish(http_api.parse_event({"name": "score", "data": '{"home":1}',
                                           "channel": channel}))
    with connect(url(gateway)) as later:
        established(later)
        assert subscribe_public(later, channel)["event"] == \
            "pusher_internal:subscription_succeeded"
        assert recv(later) == {"event": "score", "channel": channel, "data": '{"home":1}'}
    push.deliver(push.parse_notification({"channel": channel, "event": "score",
                                          "data": {"home": 2}}))
    with connect(url(gateway)) as later:
        established(later)
        subscribe_public(later, channel)
        assert recv(later) == {"event": "score", "channel": channel, "data": '{"home":2}'}


# --- defect 2: client events over Pusher's 10 KB are refused in both dialects ------------------

def test_client_events_over_pushers_10_kb_are_refused_in_both_dialects(gateway, dev_issuer):
    """Pusher's limit is 10 KB of data per event (``CLIENT_EVENT_MAX_BYTES``, default 10,240):
    at the limit an event is relayed; one byte more gets soketi's ``pusher:error`` 4301 (Pusher
    dialect) or ``client_event_too_large`` (native), and nobody receives it."""
    room = "presence-big"
    token = dev_issuer.mint("carol")
    # a list of one string: counted as its compact JSON, brackets and quotes included
    at_limit, over = "x" * (10240 - 4), "x" * (10241 - 4)
    with connect(url(gateway)) as alice, connect(url(gateway)) as bob, \
            connect(f"ws://127.0.0.1:{gateway.port}/test?token={token}") as carol:
        subscribe_presence(alice, established(alice)["socket_id"], room, "alice")
        recv(alice)
        subscribe_presence(bob, established(bob)["socket_id"], room, "bob")
        recv(bob)
        recv(alice)  # member_added bob
        carol.send(json.dumps({"action": "subscribe", "channel": room}))
        assert recv(carol)["type"] == "subscribed"
        alice.send(json.dumps({"event": "client-big", "channel": room, "data": [over]}))
        refused = recv(alice)
        assert refused["event"] == "pusher:error", refused
        assert data_of(refused)["code"] == 4301
        assert "10240 bytes" in data_of(refused)["message"]
        carol.send(json.dumps({"action": "publish", "channel": room, "event": "client-big",
                               "data": [over], "id": 7}))
        refused = recv(carol)
        assert (refused["type"], refused["code"], refused["id"]) == (
            "error", "client_event_too_large", 7)
        assert "10240 bytes" in refused["message"]
        # at the limit: relayed (the others get it, nothing above got through)
        alice.send(json.dumps({"event": "client-big", "channel": room, "data": [at_limit]}))
        got = recv(bob)
        assert (got["event"], len(got["data"].encode())) == ("client-big", 10240)
        assert recv(carol)["event"] == "client-big"
        carol.send(json.dumps({"action": "publish", "channel": room, "event": "client-big",
                               "data": "x" * 10240}))  # a string counts as sent
        assert recv(carol)["type"] == "published"
        assert len(recv(bob)["data"].encode()) == 10240


def test_the_client_event_limit_is_a_setting(gateway, monkeypatch):
    from chalicelib import settings

    monkeypatch.setenv("CLIENT_EVENT_MAX_BYTES", "100")
    settings.reset()
    room = "private-small"
    from tests.integration.test_pusher_socket import subscribe_private

    with connect(url(gateway)) as alice, connect(url(gateway)) as bob:
        subscribe_private(alice, established(alice)["socket_id"], room)
        subscribe_private(bob, established(bob)["socket_id"], room)
        alice.send(json.dumps({"event": "client-x", "channel": room, "data": "é" * 51}))
        refused = recv(alice)  # 102 bytes of UTF-8: counted in bytes, not characters
        assert (refused["event"], data_of(refused)["code"]) == ("pusher:error", 4301)
        alice.send(json.dumps({"event": "client-x", "channel": room, "data": "é" * 50}))
        assert recv(bob)["data"] == "é" * 50


# --- defect 3: error frames always fit, whatever they repeat -----------------------------------

def fragments(text, size=32 * 1024):
    """``text`` as the fragments of one WebSocket message, each within API Gateway's 32 KB
    frame quota (a message may be 128 KB)."""
    return [text[i:i + size] for i in range(0, len(text), size)]


def test_an_over_long_channel_name_gets_an_answer_never_silence(gateway, dev_issuer):
    """``pusher:subscribe`` of a 131,000-character channel (the whole frame just under API
    Gateway's 128 KB message quota) gets its ``pusher:subscription_error`` with the name cut
    to 1,024 characters ending in ``…``; a shorter bad name comes back whole (pusher-js finds
    its channel by it). The native dialect answers the same frame's twin too."""
    name = "n" * 131000
    frame = json.dumps({"event": "pusher:subscribe", "data": {"channel": name}})
    assert len(frame) <= 128 * 1024
    with connect(url(gateway), max_size=None) as ws:
        established(ws)
        ws.send(fragments(frame))
        refused = recv(ws)
        assert refused["event"] == "pusher:subscription_error", refused
        assert refused["channel"] == "n" * 1023 + "…"
        assert data_of(refused)["status"] == 400
        bad = "bad channel " * 20  # 240 characters, spaces: invalid, echoed whole
        ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": bad}}))
        refused = recv(ws)
        assert (refused["event"], refused["channel"]) == ("pusher:subscription_error", bad)
        ws.send(json.dumps({"event": "pusher:ping", "data": {}}))  # the socket still works
        assert recv(ws)["event"] == "pusher:pong"
    token = dev_issuer.mint("alice")
    with connect(f"ws://127.0.0.1:{gateway.port}/test?token={token}", max_size=None) as ws:
        ws.send(fragments(json.dumps({"action": "subscribe", "channel": name, "id": 1})))
        refused = recv(ws)
        assert (refused["type"], refused["code"], refused["id"]) == ("error", "bad_request", 1)


def test_a_reply_over_128_kb_becomes_a_pusher_error_never_silence(gateway):
    """A presence roster of 70 members with 2 KB of ``user_info`` each makes a
    ``subscription_succeeded`` over 128 KB: the joiner is told so with a ``pusher:error``
    instead of hearing nothing."""
    from chalicelib.registry import connections, presence, subscriptions

    room = "presence-crowded"
    for n in range(70):
        member = connections.register(f"crowd-{n}=", None, dialect="pusher")
        subscriptions.subscribe(member, room, member_user_id=f"user-{n}")
        presence.presence_enter(room, f"user-{n}", {"bio": "b" * 2000}, member)
    with connect(url(gateway)) as ws:
        subscribe_presence(ws, established(ws)["socket_id"], room, "late")
        refused = recv(ws)
        assert refused["event"] == "pusher:error", refused
        assert "131072 bytes" in data_of(refused)["message"]
