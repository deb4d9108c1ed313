"""Pusher's HTTP API end to end: the REAL Python ``pusher`` library, with only host and port
changed, against ``chalice local`` of the local stack (devtools.stack on free ports: the local
WebSocket gateway with the app's handlers, moto, the management API), and real WebSocket
clients on 127.0.0.1 — Pusher protocol 7 ones at ``/app/<key>`` and native ones with a JWT.

Scenarios: trigger to a public channel (a Pusher and a native subscriber), ``socket_id``
exclusion, ``trigger_batch``, ``channels_info``/``channel_info``/``users_info``,
``send_to_user``, ``terminate_user_connections`` (the socket is closed), a wrong secret.
"""
from __future__ import annotations

import json
import time
import uuid

import pusher
import pytest
from pusher.errors import PusherBadAuth, PusherBadRequest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.pusher_socket import PusherSocket, recv

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(local_stack):
    """The session's shared local stack (tests/conftest.py)."""
    return local_stack


def library(stack, secret=None):
    """The Python pusher library as an app would configure it: only host and port differ."""
    return pusher.Pusher(app_id=stack.env["PUSHER_APP_ID"], key=stack.env["PUSHER_KEY"],
                         secret=secret or stack.env["PUSHER_SECRET"], host="127.0.0.1",
                         port=stack.ports.http, ssl=False, timeout=20)


def pusher_socket(stack) -> PusherSocket:
    """A Pusher protocol 7 client on the stack's local gateway."""
    return PusherSocket(stack.ports.websocket, stack.env["PUSHER_KEY"])


class NativeSocket:
    """A native client (JWT at $connect, our JSON frames)."""

    def __init__(self, stack, sub):
        self.ws = connect(f"{stack.websocket_url}?token={stack.mint(sub)}", open_timeout=10)

    def subscribe(self, channel):
        self.ws.send(json.dumps({"action": "subscribe", "channel": channel}))
        assert recv(self.ws) == {"type": "subscribed", "channel": channel}

    def next_event(self, timeout=10.0):
        return recv(self.ws, timeout)

    def close(self):
        self.ws.close()


def test_trigger_reaches_both_dialects_and_socket_id_is_left_out(stack):
    channel = f"news-{uuid.uuid4().hex[:8]}"
    first, second = pusher_socket(stack), pusher_socket(stack)
    native = NativeSocket(stack, "carol")
    try:
        for client in (first, second, native):
            client.subscribe(channel)
        assert library(stack).trigger(channel, "greet", {"n": 1}) == {}
        assert first.next_event() == {"event": "greet", "channel": channel,
                                      "data": '{"n": 1}'}
        assert json.loads(second.next_event()["data"]) == {"n": 1}
        assert native.next_event() == {"type": "event", "channel": channel, "event": "greet",
                                       "data": '{"n": 1}', "id": 1}  # a new channel's first
        library(stack).trigger([channel], "again", "x", socket_id=first.socket_id)
        assert second.next_event()["event"] == "again"
        assert native.next_event()["event"] == "again"
        with pytest.raises(TimeoutError):
            first.next_event(timeout=1.0)
    finally:
        for client in (first, second, native):
            client.close()


def test_trigger_batch(stack):
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    client = pusher_socket(stack)
    try:
        client.subscribe(a)
        client.subscribe(b)
        assert library(stack).trigger_batch([{"channel": a, "name": "one", "data": "1"},
                                             {"channel": b, "name": "two", "data": "2"}]) == {}
        got = {(frame["channel"], frame["event"]) for frame in
               (client.next_event(), client.next_event())}
        assert got == {(a, "one"), (b, "two")}
    finally:
        client.close()


def test_channel_queries(stack):
    room = f"presence-{uuid.uuid4().hex[:8]}"
    public = f"public-{uuid.uuid4().hex[:8]}"
    clients = [NativeSocket(stack, "alice"), NativeSocket(stack, "alice"),
               NativeSocket(stack, "bob")]
    listener = pusher_socket(stack)
    lib = library(stack)
    try:
        for client in clients:
            client.subscribe(room)
        listener.subscribe(public)
        assert lib.channel_info(room, ["subscription_count", "user_count"]) == \
            {"occupied": True, "subscription_count": 3, "user_count": 2}
        assert lib.channel_info(public) == {"occupied": True}
        assert lib.users_info(room) == {"users": [{"id": "alice"}, {"id": "bob"}]}
        listed = lib.channels_info(room, ["user_count"])["channels"]
        assert listed == {room: {"user_count": 2}}
        assert public in lib.channels_info()["channels"]
        with pytest.raises(PusherBadRequest):
            lib.users_info(public)
        listener.close()
        deadline = time.monotonic() + 10  # $disconnect runs after the close
        while lib.channel_info(public)["occupied"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lib.channel_info(public) == {"occupied": False}
        assert public not in lib.channels_info()["channels"]
    finally:
        for client in clients:
            client.close()


def test_send_to_user_and_terminate_user_connections(stack):
    user = f"dave{uuid.uuid4().hex[:6]}"
    mine, mine_too, other = (NativeSocket(stack, user), NativeSocket(stack, user),
                             NativeSocket(stack, "erin"))
    lib = library(stack)
    try:
        assert lib.send_to_user(user, "note", {"x": 1}) == {}
        for client in (mine, mine_too):
            assert client.next_event() == {"type": "event", "event": "note",
                                           "data": '{"x": 1}', "id": 1}  # the user's first
        assert lib.terminate_user_connections(user) == {}
        for client in (mine, mine_too):
            with pytest.raises(ConnectionClosed):
                client.next_event()
        other.ws.send(json.dumps({"action": "ping"}))
        assert other.next_event() == {"type": "pong"}
    finally:
        for client in (mine, mine_too, other):
            client.close()


def test_a_wrong_secret_is_refused(stack):
    with pytest.raises(PusherBadAuth, match="Invalid signature"):
        library(stack, secret="not-the-secret").trigger("news", "e", "x")


def http_log(stack, needle, count=1, timeout=10.0):
    """The ``http`` part's log lines (``chalice local``, as ``make run`` prints them) that
    contain ``needle``, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in list(stack.logs)
                 if line.lstrip().startswith("http |") and needle in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines


def test_the_http_access_log_shows_no_signature_and_no_token(stack):
    """Issue 19 defect 6: the HTTP API's ``auth_signature`` and a JSONP ``/pusher/auth``'s
    ``token=`` JWT appear in ``make run``'s ``http`` lines only as ``<redacted>``; the other
    parameters stay readable."""
    import re

    import requests

    marker = f"m{uuid.uuid4().hex[:10]}"
    library(stack).channels_info(prefix_filter=marker)
    token = stack.mint("alice")
    requests.get(f"{stack.http_url}/pusher/auth", timeout=20, params={
        "callback": "Pusher.auth_callbacks['0']", "socket_id": "1.2",
        "channel_name": f"private-{marker}", "token": token})
    (api_line,) = http_log(stack, f"filter_by_prefix={marker}")
    assert "auth_signature=<redacted>" in api_line and "auth_key=" in api_line
    (jsonp_line,) = http_log(stack, f"channel_name=private-{marker}")
    assert "token=<redacted>" in jsonp_line
    everything = "\n".join(stack.logs)
    assert token not in everything and token.split(".")[2] not in everything
    assert not re.search(r"auth_signature=[0-9a-f]{64}", everything)


def test_a_semicolon_in_a_channel_name_stays_in_the_path(stack):
    """Issue 19 defect 7: the ``pusher`` library sends ``/apps/1/channels/c;x`` with ``;``
    unescaped (so does the Node one); API Gateway takes ``;`` as a path character, and so does
    the local stack now: the answer is about ``c;x``, not ``c``."""
    channel = f"c{uuid.uuid4().hex[:8]};x"
    listener = pusher_socket(stack)
    lib = library(stack)
    try:
        listener.subscribe(channel)
        assert lib.channel_info(channel, ["subscription_count"]) == \
            {"occupied": True, "subscription_count": 1}
        assert http_log(stack, f"/channels/{channel}?")  # sent as it is, not %3B
        assert lib.channel_info(channel.split(";")[0]) == {"occupied": False}
    finally:
        listener.close()
