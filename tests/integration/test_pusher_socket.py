"""The Pusher protocol 7 dialect through the local gateway, in process: the app's real handlers
(``ws_authorizer``, ``$connect``, ``$default``, ``pusher_hello`` invoked asynchronously through
the gateway's Lambda Invoke endpoint), a moto server registry, and a real WebSocket client on
127.0.0.1 speaking Pusher's frames. pusher-js itself runs in ``tests/e2e/test_pusher_socket_e2e.py``.
"""
from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from chalicelib import settings
from chalicelib.protocol import pusher
from chalicelib.registry import connections, presence, subscriptions
from chalicelib.delivery import push
from tests.support.events import ttl_remove
from tests.support.websocket import (  # noqa: F401
    app_gateway, aws_env, one_rate_window, serial_registry)

KEY, SECRET = "app-key", "app-secret"


@pytest.fixture
def gateway(serial_registry, monkeypatch):
    monkeypatch.setenv("PUSHER_DIALECT", "true")
    with app_gateway(monkeypatch) as gw:
        yield gw


def url(gw, path="/app/app-key", query="protocol=7&client=js&version=8.6.0&flash=false"):
    return f"ws://127.0.0.1:{gw.port}{path}?{query}"


def recv(ws, timeout=5.0):
    return json.loads(ws.recv(timeout=timeout))


def data_of(frame):
    assert isinstance(frame["data"], str), frame  # Pusher sends data as a JSON string
    return json.loads(frame["data"])


def established(ws):
    frame = recv(ws)
    assert frame["event"] == "pusher:connection_established", frame
    return data_of(frame)


def test_connection_established_carries_a_reversible_socket_id(gateway):
    with connect(url(gateway)) as ws:
        data = established(ws)
        assert data["activity_timeout"] <= 120
        assert pusher.SOCKET_ID_RE.fullmatch(data["socket_id"])
        connection_id = pusher.connection_id_for(data["socket_id"])
        assert connection_id in gateway.connection_ids()
        stored = connections.get_connection(connection_id)
        assert stored.dialect == "pusher" and stored.principal is None


@pytest.mark.parametrize("query, code", [
    ("protocol=3", 4007), ("protocol=8", 4007), ("protocol=seven", 4006), ("protocol=", 4008),
    ("protocol=7&app_key=other", 4001)])
def test_refused_handshakes_get_the_protocols_error_then_close(gateway, query, code):
    with connect(url(gateway, path="/test", query=query)) as ws:
        frame = recv(ws)
        assert frame["event"] == "pusher:error"
        assert data_of(frame)["code"] == code
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)  # the server closes the socket (DeleteConnection)
    deadline = time.monotonic() + 5
    while gateway.connection_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not gateway.connection_ids()


def test_unknown_app_key_in_the_path_is_refused(gateway):
    with connect(url(gateway, path="/app/wrong-key")) as ws:
        frame = recv(ws)
        assert (frame["event"], data_of(frame)["code"]) == ("pusher:error", 4001)


def test_ping_subscribe_public_and_receive_a_notification_push(gateway):
    with connect(url(gateway)) as ws:
        established(ws)
        ws.send(json.dumps({"event": "pusher:ping", "data": {}}))
        assert recv(ws)["event"] == "pusher:pong"
        ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "news"}}))
        frame = recv(ws)
        assert (frame["event"], frame["channel"]) == (
            "pusher_internal:subscription_succeeded", "news")
        summary = push.deliver(push.parse_notification(
            {"channel": "news", "event": "greet", "data": {"n": 1}}))
        assert summary["delivered"] == 1
        frame = recv(ws)
        assert frame == {"event": "greet", "channel": "news", "data": '{"n":1}'}


def test_private_channel_needs_a_valid_signature(gateway):
    with connect(url(gateway)) as ws:
        socket_id = established(ws)["socket_id"]
        good = pusher.channel_signature(SECRET, socket_id, "private-x")
        ws.send(json.dumps({"event": "pusher:subscribe",
                            "data": {"channel": "private-x", "auth": f"{KEY}:{'0' * 64}"}}))
        frame = recv(ws)
        assert frame["event"] == "pusher:subscription_error"
        assert data_of(frame)["status"] == 401 and frame["channel"] == "private-x"
        ws.send(json.dumps({"event": "pusher:subscribe",
                            "data": {"channel": "private-x", "auth": f"{KEY}:{good}"}}))
        assert recv(ws)["event"] == "pusher_internal:subscription_succeeded"


@pytest.mark.parametrize("text", ["not json", "[]", '{"data": {}}', '{"event": "nope"}',
                                  '{"event": "pusher:subscribe", "data": 3}'])
def test_garbage_gets_a_pusher_error_never_silence(gateway, text):
    with connect(url(gateway)) as ws:
        established(ws)
        ws.send(text)
        assert recv(ws)["event"] == "pusher:error"


def test_native_clients_are_unchanged_beside_pusher_ones(gateway, dev_issuer):
    token = dev_issuer.mint("alice")
    with connect(f"ws://127.0.0.1:{gateway.port}/test?token={token}") as native, \
            connect(url(gateway)) as pusher_client:
        established(pusher_client)
        native.send(json.dumps({"action": "subscribe", "channel": "news"}))
        assert recv(native) == {"type": "subscribed", "channel": "news"}
        pusher_client.send(json.dumps({"event": "pusher:subscribe",
                                       "data": {"channel": "news"}}))
        assert recv(pusher_client)["event"] == "pusher_internal:subscription_succeeded"
        push.deliver(push.parse_notification(
            {"channel": "news", "event": "greet", "data": "text"}))
        assert recv(native) == {"type": "event", "channel": "news", "event": "greet",
                                "data": "text", "id": 1}
        assert recv(pusher_client) == {"event": "greet", "channel": "news", "data": "text"}


@pytest.mark.parametrize("with_authorizer", [True, False])
def test_the_dialect_comes_from_the_connection_never_from_a_frames_shape(
        serial_registry, monkeypatch, dev_issuer, with_authorizer):
    """A Pusher client's frame with an ``action`` member is still a Pusher frame, and a native
    client's frame shaped like Pusher's is still a native one: the door asks the authorizer
    context (or, on an API deployed without ``ws_authorizer``, the registry), not the frame."""
    monkeypatch.setenv("PUSHER_DIALECT", "true")
    config = {} if with_authorizer else {"authorizer": None}
    token = dev_issuer.mint("alice")
    with app_gateway(monkeypatch, **config) as gw, \
            connect(f"ws://127.0.0.1:{gw.port}/test?token={token}") as native, \
            connect(url(gw)) as pusher_client:
        established(pusher_client)
        pusher_client.send(json.dumps({"event": "pusher:ping", "action": "subscribe",
                                       "channel": "news", "data": {}}))
        assert recv(pusher_client) == {"event": "pusher:pong", "data": "{}"}
        pusher_client.send(json.dumps({"action": "ping"}))
        assert recv(pusher_client)["event"] == "pusher:error"
        native.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "news"}}))
        refused = recv(native)
        assert refused["type"] == "error" and refused["code"] == "invalid_frame", refused
        native.send(json.dumps({"action": "ping", "event": "pusher:ping"}))
        assert recv(native) == {"type": "pong"}


def test_first_frame_waits_for_connect_to_return(gateway):
    """The gateway answers 410 while $connect runs; pusher_hello retries until it returns."""
    started = time.monotonic()
    with connect(url(gateway)) as ws:
        established(ws)
    assert time.monotonic() - started < 5


# --- step 2: presence, client events, sign-in --------------------------------------------------

def subscribe_presence(ws, socket_id, channel, user_id, info=None):
    channel_data = json.dumps({"user_id": user_id, "user_info": info or {"name": user_id}})
    auth = pusher.channel_signature(SECRET, socket_id, channel, channel_data)
    ws.send(json.dumps({"event": "pusher:subscribe", "data": {
        "channel": channel, "auth": f"{KEY}:{auth}", "channel_data": channel_data}}))


def registered_member(connection_id, room, user_id):
    """A Pusher connection registered as a member of ``room`` straight in the registry, with
    no socket behind it: what API Gateway leaves when a client vanishes without $disconnect."""
    connection = connections.register(connection_id, None, dialect="pusher")
    subscriptions.subscribe(connection, room, member_user_id=user_id)
    presence.presence_enter(room, user_id, {}, connection)
    return connection


def subscribe_private(ws, socket_id, channel):
    auth = pusher.channel_signature(SECRET, socket_id, channel)
    ws.send(json.dumps({"event": "pusher:subscribe",
                        "data": {"channel": channel, "auth": f"{KEY}:{auth}"}}))
    assert recv(ws)["event"] == "pusher_internal:subscription_succeeded"


def test_presence_members_join_and_leave(gateway):
    room = "presence-room"
    with connect(url(gateway)) as alice:
        alice_socket = established(alice)["socket_id"]
        subscribe_presence(alice, alice_socket, room, "alice")
        frame = recv(alice)
        assert frame["event"] == "pusher_internal:subscription_succeeded"
        assert data_of(frame)["presence"] == {"ids": ["alice"],
                                              "hash": {"alice": {"name": "alice"}}, "count": 1}
        with connect(url(gateway)) as bob:
            bob_socket = established(bob)["socket_id"]
            subscribe_presence(bob, bob_socket, room, "bob")
            present = data_of(recv(bob))["presence"]
            assert sorted(present["ids"]) == ["alice", "bob"] and present["count"] == 2
            added = recv(alice)
            assert added["event"] == "pusher_internal:member_added"
            assert data_of(added) == {"user_id": "bob", "user_info": {"name": "bob"}}
            # a second connection of alice adds no member
            with connect(url(gateway)) as alice2:
                subscribe_presence(alice2, established(alice2)["socket_id"], room, "alice")
                assert data_of(recv(alice2))["presence"]["count"] == 2
            # closing it ($disconnect) removes no member either: alice is still there
        removed = recv(alice)  # bob's socket closed: $disconnect -> member_removed
        assert removed["event"] == "pusher_internal:member_removed"
        assert data_of(removed) == {"user_id": "bob"}
        assert sorted(presence.presence_members(room)) == ["alice"]


def test_presence_needs_signed_channel_data(gateway):
    with connect(url(gateway)) as ws:
        socket_id = established(ws)["socket_id"]
        channel_data = json.dumps({"user_id": "mallory"})
        auth = pusher.channel_signature(SECRET, socket_id, "presence-x",
                                                 json.dumps({"user_id": "alice"}))
        ws.send(json.dumps({"event": "pusher:subscribe", "data": {
            "channel": "presence-x", "auth": f"{KEY}:{auth}", "channel_data": channel_data}}))
        frame = recv(ws)
        assert frame["event"] == "pusher:subscription_error"
        assert data_of(frame)["status"] == 401


def test_presence_cap_is_configurable(gateway, monkeypatch):
    monkeypatch.setenv("PUSHER_PRESENCE_MAX_MEMBERS", "1")
    settings.reset()
    with connect(url(gateway)) as a, connect(url(gateway)) as b:
        subscribe_presence(a, established(a)["socket_id"], "presence-cap", "a")
        assert recv(a)["event"] == "pusher_internal:subscription_succeeded"
        subscribe_presence(b, established(b)["socket_id"], "presence-cap", "b")
        frame = recv(b)
        assert frame["event"] == "pusher:subscription_error"
        assert data_of(frame)["type"] == "LimitReached"


def test_gone_connections_leave_presence(gateway):
    """A connection that vanished without $disconnect is removed when a push meets its
    GoneException; its membership ends with member_removed."""
    room = "presence-gone"
    with connect(url(gateway)) as alice:
        subscribe_presence(alice, established(alice)["socket_id"], room, "alice")
        recv(alice)
        registered_member("ghost-conn=", room, "ghost")
        push.deliver(push.parse_notification({"channel": room, "event": "tick", "data": 1}))
        frames = [recv(alice), recv(alice)]
        assert {f["event"] for f in frames} == {"tick", "pusher_internal:member_removed"}
        assert sorted(presence.presence_members(room)) == ["alice"]


def test_client_events_reach_others_with_user_id_and_are_rate_limited(gateway, monkeypatch,
                                                                     one_rate_window):
    monkeypatch.setenv("CLIENT_EVENT_RATE_LIMIT", "2")
    settings.reset()
    room = "presence-chat"
    with connect(url(gateway)) as alice, connect(url(gateway)) as bob:
        subscribe_presence(alice, established(alice)["socket_id"], room, "alice")
        recv(alice)
        subscribe_presence(bob, established(bob)["socket_id"], room, "bob")
        recv(bob)
        recv(alice)  # member_added bob
        for n in range(3):  # three events in one second window
            alice.send(json.dumps({"event": "client-typing", "channel": room,
                                   "data": {"n": n}}))
        got = [recv(bob), recv(bob)]
        assert [data_of(f) for f in got] == [{"n": 0}, {"n": 1}]
        assert all(f["user_id"] == "alice" and f["channel"] == room for f in got)
        error = recv(alice)  # the third: over the limit; nothing echoed before it
        assert (error["event"], data_of(error)["code"]) == ("pusher:error", 4301)
        alice.send(json.dumps({"event": "client-x", "channel": "news", "data": {}}))
        assert recv(alice)["event"] == "pusher:error"  # public channel: refused


def test_signin_joins_the_user_so_send_to_user_reaches_it(gateway):
    with connect(url(gateway)) as ws:
        socket_id = established(ws)["socket_id"]
        user_data = json.dumps({"id": "alice", "user_info": {}})
        bad = pusher.user_signature("wrong", socket_id, user_data)
        ws.send(json.dumps({"event": "pusher:signin",
                            "data": {"auth": f"{KEY}:{bad}", "user_data": user_data}}))
        assert data_of(recv(ws))["code"] == 4009
        good = pusher.user_signature(SECRET, socket_id, user_data)
        ws.send(json.dumps({"event": "pusher:signin",
                            "data": {"auth": f"{KEY}:{good}", "user_data": user_data}}))
        frame = recv(ws)
        assert frame["event"] == "pusher:signin_success"
        assert data_of(frame) == {"user_data": user_data}
        summary = push.send_to_user("alice", {"type": "event", "event": "hi", "data": {"a": 1}})
        assert summary["delivered"] == 1
        assert recv(ws) == {"event": "hi", "channel": "#server-to-user-alice",
                            "data": '{"a":1}'}
        ws.send(json.dumps({"event": "pusher:subscribe",
                            "data": {"channel": "#server-to-user-bob"}}))
        assert data_of(recv(ws))["status"] == 403


def test_cache_channels_give_the_last_event_or_a_cache_miss(gateway):
    channel = "cache-scores"
    with connect(url(gateway)) as first:
        established(first)
        first.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        assert recv(first)["event"] == "pusher_internal:subscription_succeeded"
        assert recv(first) == {"event": "pusher:cache_miss", "channel": channel, "data": "{}"}
        push.deliver(push.parse_notification(
            {"channel": channel, "event": "score", "data": {"home": 2}}))
        assert data_of(recv(first)) == {"home": 2}
    with connect(url(gateway)) as later:
        established(later)
        later.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        assert recv(later)["event"] == "pusher_internal:subscription_succeeded"
        assert recv(later) == {"event": "score", "channel": channel, "data": '{"home":2}'}


def test_encrypted_channels_relay_what_a_server_library_encrypted(gateway):
    from pusher import crypto

    channel = "private-encrypted-x"
    with connect(url(gateway)) as ws:
        subscribe_private(ws, established(ws)["socket_id"], channel)
        payload = crypto.encrypt(channel, '{"a":1}', b"k" * 32)
        push.deliver(push.parse_notification({"channel": channel, "event": "e",
                                              "data": payload}))
        assert data_of(recv(ws)) == payload
    with pytest.raises(Exception) as refused:
        push.parse_notification({"channel": channel, "event": "e", "data": {"plain": 1}})
    assert "encrypted" in str(refused.value.public_message)


def test_ttl_deletes_from_the_stream_become_member_removed(gateway):
    import app as app_module

    room = "presence-ttl"
    with connect(url(gateway)) as alice:
        subscribe_presence(alice, established(alice)["socket_id"], room, "alice")
        recv(alice)
        registered_member("stale-conn=", room, "zed")
        item = {"connection_id": {"S": "stale-conn="}, "sk": {"S": f"channel#{room}"},
                "member_user_id": {"S": "zed"}, "channel": {"S": room}}
        user_delete = dict(ttl_remove(item), userIdentity=None)  # a delete by someone: skipped
        handler = app_module.app.handler_map["registry_stream"]
        assert handler({"Records": [user_delete, {"eventName": "INSERT"}, "junk"]}, None) == \
            {"batchItemFailures": []}
        assert sorted(presence.presence_members(room)) == ["alice", "zed"]
        assert handler({"Records": [ttl_remove(item)]}, None) == {"batchItemFailures": []}
        removed = recv(alice)
        assert (removed["event"], data_of(removed)) == ("pusher_internal:member_removed",
                                                        {"user_id": "zed"})
        assert sorted(presence.presence_members(room)) == ["alice"]
        # a member item expiring by itself (its connections gone unnoticed)
        member = {"connection_id": {"S": f"presence#{room}"}, "sk": {"S": "member#yan"},
                  "connections": {"SS": ["x="]}}
        handler({"Records": [ttl_remove(member)]}, None)
        assert data_of(recv(alice)) == {"user_id": "yan"}


# --- webhooks out (issue 10 D): member_added/removed, client_event, cache_miss ----------------

WEBHOOK_EVENTS = ("member_added", "member_removed", "client_event", "cache_miss")


@pytest.fixture
def hooks(monkeypatch):
    """Events the app's own handlers (chalicelib.delivery.webhooks.HANDLERS) receive, as
    ``(event, time_ms)``; registered on a fresh HANDLERS for the test."""
    from chalicelib.delivery import webhooks

    monkeypatch.setattr(webhooks, "HANDLERS", webhooks.WebhookHandlers())
    seen = []
    for name in WEBHOOK_EVENTS:
        webhooks.HANDLERS.register(name, lambda event, time_ms: seen.append((dict(event),
                                                                             time_ms)))
    return seen


def hook_events(seen, name, count=1, timeout=5.0):
    """The ``name`` events seen, once there are ``count`` of them (handlers run in the
    gateway's threads)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [event for event, _ in seen if event["name"] == name]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_members_joining_and_leaving_reach_the_apps_webhook_handlers(gateway, hooks):
    room = "presence-hooks"
    before = int(time.time() * 1000)
    with connect(url(gateway)) as alice:
        subscribe_presence(alice, established(alice)["socket_id"], room, "alice")
        recv(alice)
        with connect(url(gateway)) as bob:
            subscribe_presence(bob, established(bob)["socket_id"], room, "bob")
            recv(bob)
            recv(alice)  # member_added bob
            with connect(url(gateway)) as alice2:  # a second connection adds no member
                subscribe_presence(alice2, established(alice2)["socket_id"], room, "alice")
                recv(alice2)
            bob.send(json.dumps({"event": "pusher:unsubscribe", "data": {"channel": room}}))
            recv(alice)  # member_removed bob (unsubscribe)
        assert hook_events(hooks, "member_added", 2) == [
            {"name": "member_added", "channel": room, "user_id": "alice"},
            {"name": "member_added", "channel": room, "user_id": "bob"}]
        assert hook_events(hooks, "member_removed") == [
            {"name": "member_removed", "channel": room, "user_id": "bob"}]
    # alice's last connection closed: $disconnect -> member_removed alice
    assert hook_events(hooks, "member_removed", 2)[1:] == [
        {"name": "member_removed", "channel": room, "user_id": "alice"}]
    assert all(before <= time_ms <= int(time.time() * 1000) for _, time_ms in hooks)


def test_gone_and_ttl_member_removals_reach_the_apps_webhook_handlers(gateway, hooks):
    import app as app_module

    room = "presence-hooks-gone"
    with connect(url(gateway)) as alice:
        subscribe_presence(alice, established(alice)["socket_id"], room, "alice")
        recv(alice)
        registered_member("ghost-conn=", room, "ghost")
        push.deliver(push.parse_notification({"channel": room, "event": "tick", "data": 1}))
        assert hook_events(hooks, "member_removed") == [
            {"name": "member_removed", "channel": room, "user_id": "ghost"}]
        registered_member("stale-conn=", room, "zed")
        item = {"connection_id": {"S": "stale-conn="}, "sk": {"S": f"channel#{room}"},
                "member_user_id": {"S": "zed"}, "channel": {"S": room}}
        handler = app_module.app.handler_map["registry_stream"]
        handler({"Records": [ttl_remove(item)]}, None)
        member = {"connection_id": {"S": f"presence#{room}"}, "sk": {"S": "member#yan"},
                  "connections": {"SS": ["x="]}}
        handler({"Records": [ttl_remove(member)]}, None)
        assert hook_events(hooks, "member_removed", 3)[1:] == [
            {"name": "member_removed", "channel": room, "user_id": "zed"},
            {"name": "member_removed", "channel": room, "user_id": "yan"}]


def test_client_events_reach_the_apps_webhook_handlers_with_pushers_fields(gateway, hooks):
    room, private = "presence-hooks-chat", "private-hooks"
    with connect(url(gateway)) as alice, connect(url(gateway)) as bob:
        alice_socket = established(alice)["socket_id"]
        subscribe_presence(alice, alice_socket, room, "alice")
        recv(alice)
        subscribe_presence(bob, established(bob)["socket_id"], room, "bob")
        recv(bob)
        recv(alice)  # member_added bob
        subscribe_private(alice, alice_socket, private)
        alice.send(json.dumps({"event": "client-typing", "channel": room, "data": {"n": 1}}))
        recv(bob)
        alice.send(json.dumps({"event": "client-raw", "channel": private, "data": "text"}))
        assert hook_events(hooks, "client_event", 2) == [
            {"name": "client_event", "channel": room, "event": "client-typing",
             "data": '{"n":1}', "socket_id": alice_socket, "user_id": "alice"},
            {"name": "client_event", "channel": private, "event": "client-raw",
             "data": "text", "socket_id": alice_socket}]  # user_id only on presence
        alice.send(json.dumps({"event": "client-x", "channel": "news", "data": {}}))
        assert recv(alice)["event"] == "pusher:error"  # refused: no webhook
        assert len(hook_events(hooks, "client_event", 3, timeout=0.3)) == 2


def test_native_client_events_reach_the_apps_webhook_handlers(gateway, hooks, dev_issuer):
    token = dev_issuer.mint("alice")
    with connect(f"ws://127.0.0.1:{gateway.port}/test?token={token}") as native:
        native.send(json.dumps({"action": "subscribe", "channel": "presence-room"}))
        assert recv(native) == {"type": "subscribed", "channel": "presence-room"}
        native.send(json.dumps({"action": "publish", "channel": "presence-room",
                                "event": "client-move", "data": {"x": 1}}))
        assert recv(native)["type"] == "published"
        connection_id = gateway.connection_ids()[0]
        assert hook_events(hooks, "client_event") == [
            {"name": "client_event", "channel": "presence-room", "event": "client-move",
             "data": '{"x":1}', "socket_id": pusher.socket_id_for(connection_id),
             "user_id": "alice"}]


def test_cache_misses_reach_the_apps_webhook_handlers(gateway, hooks):
    channel = "cache-hooks"
    with connect(url(gateway)) as first:
        established(first)
        first.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        recv(first)
        assert recv(first)["event"] == "pusher:cache_miss"
        assert hook_events(hooks, "cache_miss") == [{"name": "cache_miss", "channel": channel}]
        push.deliver(push.parse_notification({"channel": channel, "event": "s", "data": 1}))
        recv(first)
    with connect(url(gateway)) as later:  # a hit: no cache_miss
        established(later)
        later.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        recv(later)
        assert recv(later)["event"] == "s"
    assert len(hook_events(hooks, "cache_miss", 2, timeout=0.3)) == 1


def test_a_failing_webhook_handler_never_fails_the_socket_operation(gateway, monkeypatch):
    from chalicelib.delivery import webhooks

    monkeypatch.setattr(webhooks, "HANDLERS", webhooks.WebhookHandlers())

    def broken(event, time_ms):
        raise RuntimeError("handler bug")

    calls = []
    for name in WEBHOOK_EVENTS:
        webhooks.HANDLERS.register(name, lambda event, time_ms: calls.append(event["name"]))
        webhooks.HANDLERS.register(name, broken)
    room = "presence-hooks-broken"
    with connect(url(gateway)) as alice, connect(url(gateway)) as bob:
        alice_socket = established(alice)["socket_id"]
        subscribe_presence(alice, alice_socket, room, "alice")
        assert recv(alice)["event"] == "pusher_internal:subscription_succeeded"
        subscribe_presence(bob, established(bob)["socket_id"], room, "bob")
        assert recv(bob)["event"] == "pusher_internal:subscription_succeeded"
        assert recv(alice)["event"] == "pusher_internal:member_added"
        alice.send(json.dumps({"event": "client-typing", "channel": room, "data": {}}))
        assert recv(bob)["event"] == "client-typing"
        bob.send(json.dumps({"event": "pusher:unsubscribe", "data": {"channel": room}}))
        assert recv(alice)["event"] == "pusher_internal:member_removed"
        alice.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "cache-b"}}))
        assert recv(alice)["event"] == "pusher_internal:subscription_succeeded"
        assert recv(alice)["event"] == "pusher:cache_miss"
    assert {"member_added", "member_removed", "client_event", "cache_miss"} <= set(calls)


def test_a_presence_joiner_is_answered_before_the_member_added_fan_out(serial_registry,
                                                                          monkeypatch):
    """Every management call takes 0.4 s here: the joiner's subscription_succeeded leaves
    first, so it arrives before the existing member's member_added, not one post later."""
    monkeypatch.setenv("PUSHER_DIALECT", "true")
    room = "presence-order"
    with app_gateway(monkeypatch, post_latency=0.4) as gw, \
            connect(url(gw)) as alice, connect(url(gw)) as bob:
        subscribe_presence(alice, established(alice)["socket_id"], room, "alice")
        assert recv(alice)["event"] == "pusher_internal:subscription_succeeded"
        subscribe_presence(bob, established(bob)["socket_id"], room, "bob")
        answered = recv(bob)
        answered_at = time.monotonic()
        added = recv(alice)
        added_at = time.monotonic()
        assert answered["event"] == "pusher_internal:subscription_succeeded"
        assert data_of(answered)["presence"]["count"] == 2
        assert added["event"] == "pusher_internal:member_added"
        assert added_at - answered_at > 0.2, (answered_at, added_at)
