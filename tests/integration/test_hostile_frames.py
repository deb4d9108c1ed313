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
