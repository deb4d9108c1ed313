"""The Python ``pusher`` library (3.3.4), side by side: the same calls against soketi (the
reference Pusher-protocol server) and against our server (``chalice local`` serving Pusher's
HTTP API, our local API Gateway serving the sockets); only host and port differ
(``server.library()``). Subscribers are raw Pusher protocol 7 WebSocket clients
(:class:`tests.support.pusher_socket.PusherSocket`), signed by the app's own ``/pusher/auth``
and ``/pusher/user-auth`` for both servers.

Each test asserts what a user of the library sees: the answer of each call and the frames the
subscribers receive. Where soketi and ours answer differently, :data:`ANSWERS` holds each
server's answer and the reason (the Pusher doc soketi departs from); every other assertion is
the same for both servers.

A few requests the library does not make by itself — ``info`` on a trigger, the documented
``terminate_connections`` path, bodies over Pusher's limits that the library refuses before
sending — go through the library's own signing (:func:`signed`), so they are still requests
as the library builds them.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Dict, List

import pusher
import pytest
from pusher.errors import PusherBadAuth, PusherBadRequest, PusherBadStatus
from pusher.http import POST, Request
from websockets.exceptions import ConnectionClosed

from tests.support.pusher_socket import PusherSocket

pytestmark = pytest.mark.e2e

#: where the two servers answer differently: scenario -> {server: answer}, and why. Ours
#: follows Pusher's docs in each ("HTTP API reference",
#: pusher.com/docs/channels/library_auth_reference/rest-api, unless named); soketi 1.6.1
#: departs from them.
ANSWERS: Dict[str, Dict[str, Any]] = {
    # POST /events answers {} (with `info`: {"channels": {...}}); soketi answers {"ok": true}
    "trigger": {"soketi": {"ok": True}, "ours": {}},
    "trigger_batch": {"soketi": {"ok": True}, "ours": {}},
    # soketi ignores `info` on events and batches (src/http-handler.ts events())
    "trigger_info": {"soketi": {"ok": True}, "ours": "channels"},
    "batch_info": {"soketi": {"ok": True}, "ours": "batch"},
    # Python pusher 3.3.4 posts terminate_user_connections to /users/{id}/... (a library bug):
    # soketi serves only the documented /apps/{app_id}/users/{id}/terminate_connections (404),
    # ours serves both paths (README, "Pusher HTTP API")
    "library_terminate": {"soketi": "404", "ours": {}},
    # GET /channels: "If this parameter [info] is missing, an empty hash of attributes will be
    # returned for each channel"; soketi always gives subscription_count and occupied, and
    # ignores `info`
    "channels_info": {"soketi": {"subscription_count": 3, "occupied": True}, "ours": {}},
    "channels_info_user_count": {"soketi": {"subscription_count": 3, "occupied": True},
                                 "ours": {"user_count": 2}},
    # GET /channels/{name}: subscription_count only when asked for in `info`; soketi always
    # adds it
    "channel_info": {"soketi": {"occupied": True, "subscription_count": 1},
                     "ours": {"occupied": True}},
    "channel_info_vacated": {"soketi": {"occupied": False, "subscription_count": 0},
                             "ours": {"occupied": False}},
    # user_count is a presence-channel attribute: Pusher answers 400 when it is asked for
    # other channels; soketi ignores `info`
    "user_count_not_presence": {"soketi": "ignored", "ours": PusherBadRequest},
    "send_to_user": {"soketi": {"ok": True}, "ours": {}},
    # member_removed is sent once, when the user's last connection leaves the channel (Pusher
    # docs, "Presence channels"); soketi closes a user's two sockets at once and each close
    # announces the user's departure
    "member_removed_on_terminate": {"soketi": 2, "ours": 1},
    # "The server will only accept requests where the timestamp is within 600s of the current
    # time" (Pusher docs, "Server API: authenticating requests"); soketi never checks it, so a
    # captured request can be replayed forever
    "stale_timestamp": {"soketi": {"ok": True}, "ours": PusherBadAuth},
    # channel names: "Channel naming conventions" (A-Z a-z 0-9 _ - = @ , . ;, up to 164);
    # data: "Event data (string)", HTTP API reference. soketi relays both unchecked.
    "bad_channel_name": {"soketi": {"ok": True}, "ours": PusherBadRequest},
    "data_not_a_string": {"soketi": {"ok": True}, "ours": PusherBadRequest},
}


#: soketi 1.6.1 answers EVERY HTTP API error with status 200 and ``{"error", "code"}`` in the
#: body (its http-handler writes the CORS headers before the status line, and uWebSockets.js
#: then sends "200 OK"), so the library returns the error body as if the call succeeded.
#: Pusher's HTTP API answers the error's status (400, 401, 404, 413: HTTP API reference) and
#: the library raises on it (``pusher.http.process_response``); ours does the same.
ERRORS_AS_200 = {"soketi": True, "ours": False}


def refused(server, call, status: int, error) -> str:
    """Run ``call`` (a library call the server refuses with ``status``) and return the error
    text: ``error`` raised by the library (ours, as Pusher), or, from soketi, the error body
    the library returned (:data:`ERRORS_AS_200`, whose ``code`` must be ``status``)."""
    if ERRORS_AS_200[server.name]:
        answer = call()
        assert isinstance(answer, dict) and answer.get("code") == status, answer
        return answer["error"]
    with pytest.raises(error) as caught:
        call()
    return str(caught.value)


def signed(lib, method: str, path: str, params: Dict[str, Any]):
    """Send a request the library's API does not build, signed and sent by the library's own
    machinery (``pusher.http.Request``: the same signature, body_md5 and error mapping)."""
    client = lib._pusher_client
    return client.http.send_request(Request(client, method, path, params))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sockets(server, count: int) -> List[PusherSocket]:
    return [PusherSocket(server.ws_port, server.key) for _ in range(count)]


def close_all(clients) -> None:
    for client in clients:
        client.close()


def assert_silent(client: PusherSocket, within: float = 1.0) -> None:
    """Nothing arrives on ``client`` within ``within`` seconds."""
    with pytest.raises(TimeoutError):
        frame = client.next_event(timeout=within)
        pytest.fail(f"unexpected frame {frame}")


def event(client: PusherSocket) -> Dict[str, Any]:
    """The next frame, skipping presence bookkeeping (``member_added``/``member_removed``)."""
    while True:
        frame = client.next_event()
        if not frame.get("event", "").startswith("pusher_internal:member_"):
            return frame


def until(predicate, within: float = 10.0) -> bool:
    """Poll ``predicate`` every 0.1 s until it is true or ``within`` seconds passed (bounded
    wait for what happens after a socket closes: both servers learn it asynchronously)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def presence_room(server, room: str, users=("alice", "alice", "bob")) -> List[PusherSocket]:
    """One socket per entry of ``users`` subscribed to ``room`` with our ``/pusher/auth``."""
    clients = sockets(server, len(users))
    tokens = {user: server.stack.mint(user) for user in set(users)}
    for client, user in zip(clients, users):
        client.subscribe_authorized(server.auth_base, tokens[user], room)
    return clients


# --- trigger ------------------------------------------------------------------------------------

def test_trigger_one_and_several_channels(server):
    a, b = unique("conf-a"), unique("conf-b")
    first, second = sockets(server, 2)
    try:
        first.subscribe(a)
        second.subscribe(a)
        second.subscribe(b)
        lib = server.library()
        assert lib.trigger(a, "greet", {"n": 1}) == ANSWERS["trigger"][server.name]
        for client in (first, second):
            assert client.next_event() == {"event": "greet", "channel": a, "data": '{"n": 1}'}
        assert lib.trigger([a, b], "both", "plain text") == ANSWERS["trigger"][server.name]
        assert first.next_event() == {"event": "both", "channel": a, "data": "plain text"}
        got = [second.next_event(), second.next_event()]
        assert sorted(frame["channel"] for frame in got) == sorted([a, b])
        assert {frame["event"] for frame in got} == {"both"}
        assert_silent(first)
    finally:
        close_all((first, second))


def test_trigger_with_socket_id_leaves_that_socket_out(server):
    channel = unique("conf-x")
    sender, other = sockets(server, 2)
    try:
        sender.subscribe(channel)
        other.subscribe(channel)
        server.library().trigger(channel, "echo", "x", socket_id=sender.socket_id)
        assert other.next_event() == {"event": "echo", "channel": channel, "data": "x"}
        assert_silent(sender)
    finally:
        close_all((sender, other))


def test_trigger_info(server):
    """``info`` on ``POST /events`` and ``/batch_events`` (HTTP API reference: the answer
    carries the attributes per channel). The library has no ``info`` argument: sent through
    its own signing."""
    public, room = unique("conf-info"), unique("presence-conf")
    listeners = sockets(server, 2)
    members = presence_room(server, room)
    try:
        for client in listeners:
            client.subscribe(public)
        lib = server.library()
        answer = signed(lib, POST, f"/apps/{server.app_id}/events", {
            "name": "counted", "data": "1", "channels": [public, room],
            "info": "subscription_count,user_count"})
        expected = ANSWERS["trigger_info"][server.name]
        if expected == "channels":
            expected = {"channels": {public: {"subscription_count": 2},
                                     room: {"subscription_count": 3, "user_count": 2}}}
        assert answer == expected
        batch = signed(lib, POST, f"/apps/{server.app_id}/batch_events", {"batch": [
            {"channel": public, "name": "b1", "data": "1", "info": "subscription_count"},
            {"channel": room, "name": "b2", "data": "2", "info": "user_count"}]})
        expected = ANSWERS["batch_info"][server.name]
        if expected == "batch":
            expected = {"batch": [{"subscription_count": 2}, {"user_count": 2}]}
        assert batch == expected
        for client in listeners:  # the events themselves reached everyone
            assert [event(client)["event"] for _ in range(2)] == ["counted", "b1"]
        for client in members:
            assert [event(client)["event"] for _ in range(2)] == ["counted", "b2"]
    finally:
        close_all(listeners + members)


def test_trigger_batch(server):
    a, b = unique("conf-ba"), unique("conf-bb")
    client, = sockets(server, 1)
    try:
        client.subscribe(a)
        client.subscribe(b)
        answer = server.library().trigger_batch([{"channel": a, "name": "one", "data": "1"},
                                                 {"channel": b, "name": "two", "data": {"k": 2}}])
        assert answer == ANSWERS["trigger_batch"][server.name]
        got = [client.next_event(), client.next_event()]
        assert sorted(got, key=lambda f: f["event"]) == [
            {"event": "one", "channel": a, "data": "1"},
            {"event": "two", "channel": b, "data": '{"k": 2}'}]
    finally:
        client.close()


# --- queries ------------------------------------------------------------------------------------

def test_channels_info(server):
    room, public = unique("presence-conf"), unique("conf-list")
    members = presence_room(server, room)
    listener, = sockets(server, 1)
    lib = server.library()
    try:
        listener.subscribe(public)
        assert lib.channels_info(room) == \
            {"channels": {room: ANSWERS["channels_info"][server.name]}}
        assert lib.channels_info(room, ["user_count"]) == \
            {"channels": {room: ANSWERS["channels_info_user_count"][server.name]}}
        listed = lib.channels_info("conf-list-")["channels"]  # filter_by_prefix
        assert public in listed and all(name.startswith("conf-list-") for name in listed)
        assert room in lib.channels_info()["channels"] and public in lib.channels_info()["channels"]
        if ANSWERS["user_count_not_presence"][server.name] is PusherBadRequest:
            refused(server, lambda: lib.channels_info(public, ["user_count"]), 400,
                    PusherBadRequest)
        else:
            assert public in lib.channels_info(public, ["user_count"])["channels"]
    finally:
        close_all(members + [listener])


def test_channel_info_and_users_info(server):
    room, public = unique("presence-conf"), unique("conf-one")
    members = presence_room(server, room)
    listener, = sockets(server, 1)
    lib = server.library()
    try:
        listener.subscribe(public)
        assert lib.channel_info(room, ["subscription_count", "user_count"]) == \
            {"occupied": True, "subscription_count": 3, "user_count": 2}
        assert lib.channel_info(public, ["subscription_count"]) == \
            {"occupied": True, "subscription_count": 1}
        assert lib.channel_info(public) == ANSWERS["channel_info"][server.name]
        if ANSWERS["user_count_not_presence"][server.name] is PusherBadRequest:
            refused(server, lambda: lib.channel_info(public, ["user_count"]), 400,
                    PusherBadRequest)
        else:
            assert lib.channel_info(public, ["user_count"])["occupied"] is True
        users = lib.users_info(room)["users"]
        assert sorted(users, key=lambda u: u["id"]) == [{"id": "alice"}, {"id": "bob"}]
        assert "presence" in refused(server, lambda: lib.users_info(public), 400,
                                     PusherBadRequest)
        listener.close()  # the last subscriber leaves: the channel is vacated
        vacated = ANSWERS["channel_info_vacated"][server.name]
        assert until(lambda: lib.channel_info(public) == vacated), lib.channel_info(public)
        assert public not in lib.channels_info("conf-one-")["channels"]
    finally:
        close_all(members + [listener])


# --- users --------------------------------------------------------------------------------------

def test_send_to_user(server):
    user, other = unique("dana"), unique("eve")
    mine, mine_too, theirs, anonymous = sockets(server, 4)
    try:
        for client, who in ((mine, user), (mine_too, user), (theirs, other)):
            client.sign_in(server.auth_base, server.stack.mint(who))
        answer = server.library().send_to_user(user, "note", {"x": 1})
        assert answer == ANSWERS["send_to_user"][server.name]
        for client in (mine, mine_too):
            assert client.next_event() == {"event": "note", "channel": f"#server-to-user-{user}",
                                           "data": '{"x": 1}'}
        assert_silent(theirs, within=0.5)
        assert_silent(anonymous, within=0.5)
    finally:
        close_all((mine, mine_too, theirs, anonymous))


def closing_frames(client: PusherSocket, within: float = 10.0) -> List[Dict[str, Any]]:
    """Every frame until the server closes the socket; fails if it stays open."""
    frames = []
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            frames.append(client.next_event(timeout=max(0.1, deadline - time.monotonic())))
    except ConnectionClosed:
        return frames
    except TimeoutError:
        pass
    pytest.fail(f"the socket is still open after {within} s; frames: {frames}")


def error_code(frame: Dict[str, Any]) -> Any:
    """The ``code`` of a ``pusher:error`` frame (its ``data`` an object or a JSON string)."""
    assert frame["event"] == "pusher:error", frame
    data = frame["data"]
    return (json.loads(data) if isinstance(data, str) else data).get("code")


def test_terminate_user_connections(server):
    user, other = unique("fred"), unique("gina")
    room = unique("presence-conf")
    mine, mine_too, theirs = sockets(server, 3)
    lib = server.library()
    try:
        for client, who in ((theirs, other), (mine, user), (mine_too, user)):
            token = server.stack.mint(who)
            client.sign_in(server.auth_base, token)
            client.subscribe_authorized(server.auth_base, token, room)
        added = theirs.next_event()  # the user joined the room (once, for two sockets)
        assert added["event"] == "pusher_internal:member_added", added
        # the library's own call (its path lacks /apps/{app_id})
        if ANSWERS["library_terminate"][server.name] == "404":
            with pytest.raises(PusherBadStatus, match="^404"):
                lib.terminate_user_connections(user)
            # the documented path, signed by the library
            assert signed(lib, POST, f"/apps/{server.app_id}/users/{user}/"
                                     "terminate_connections", {}) == {"ok": True}
        else:
            assert lib.terminate_user_connections(user) == ANSWERS["library_terminate"]["ours"]
        for client in (mine, mine_too):
            frames = closing_frames(client)
            # both send pusher:error 4009 ("Connection is unauthorized", Pusher Channels
            # Protocol) once before closing (ours then closes through DeleteConnection)
            assert len(frames) == 1 and error_code(frames[0]) == 4009, frames
        # the user left the room with their last socket; then the other user's socket lives
        # on (it answers a ping)
        frames = [theirs.next_event()]  # waits for the first member_removed
        theirs.send("pusher:ping", {})
        while frames[-1]["event"] != "pusher:pong":
            frames.append(theirs.next_event())
        removed = frames[:-1]
        assert removed and all(frame["event"] == "pusher_internal:member_removed" and
                               json.loads(frame["data"]) == {"user_id": user}
                               for frame in removed), frames
        assert len(removed) == ANSWERS["member_removed_on_terminate"][server.name], frames
        assert_silent(theirs)  # and no late duplicate
        assert lib.users_info(room) == {"users": [{"id": other}]}
    finally:
        close_all((mine, mine_too, theirs))


# --- errors -------------------------------------------------------------------------------------

def test_a_wrong_secret_is_refused(server):
    wrong = server.library(secret="not-the-secret")
    for call in (lambda: wrong.trigger(unique("conf-w"), "e", "x"),
                 lambda: wrong.channels_info(),
                 lambda: wrong.channel_info(unique("conf-w"))):
        refused(server, call, 401, PusherBadAuth)


def resigned(lib, request: Request) -> Request:
    """``request`` signed again after its query was changed (the library's own signing text,
    ``pusher.http.make_query_string``, with the app secret)."""
    from pusher.http import make_query_string
    from pusher.signature import sign

    params = {k: v for k, v in request.query_params.items() if k != "auth_signature"}
    text = "\n".join([request.method, request.path, make_query_string(params)])
    request.query_params["auth_signature"] = sign(lib._pusher_client.secret, text)
    return request


def test_a_stale_or_tampered_request(server):
    """A correctly signed request whose ``auth_timestamp`` is 700 s old (a replay), and one
    whose body was changed after signing (``body_md5``)."""
    lib = server.library()
    client = lib._pusher_client
    channel = unique("conf-replay")
    stale = Request(client, POST, f"/apps/{server.app_id}/events",
                    {"name": "e", "data": "x", "channels": [channel]})
    stale.query_params["auth_timestamp"] = str(int(time.time()) - 700)
    expected = ANSWERS["stale_timestamp"][server.name]
    if isinstance(expected, dict):
        assert client.http.send_request(resigned(lib, stale)) == expected
    else:
        with pytest.raises(expected, match="[Tt]imestamp"):
            client.http.send_request(resigned(lib, stale))
    tampered = Request(client, POST, f"/apps/{server.app_id}/events",
                       {"name": "e", "data": "x", "channels": [channel]})
    tampered.body = json.dumps({"name": "e", "data": "changed", "channels": [channel]}).encode()
    refused(server, lambda: client.http.send_request(tampered), 401, PusherBadAuth)


def test_invalid_event_fields(server):
    """Fields the library checks before sending (channel names) or always encodes (data as a
    string), sent as another library might: through the library's own signing."""
    lib = server.library()
    path = f"/apps/{server.app_id}/events"
    for scenario, params in (
            ("bad_channel_name", {"name": "e", "data": "x", "channels": ["no spaces!"]}),
            ("data_not_a_string", {"name": "e", "data": {"k": 1},
                                   "channels": [unique("conf-obj")]})):
        expected = ANSWERS[scenario][server.name]
        if isinstance(expected, dict):
            assert signed(lib, POST, path, params) == expected, scenario
        else:
            with pytest.raises(expected):
                signed(lib, POST, path, params)


def test_another_app_id_is_not_found(server):
    other = pusher.Pusher(app_id="999", key=server.key, secret=server.secret,
                          host="127.0.0.1", port=server.http_port, ssl=False, timeout=20)
    assert "999" in refused(server, lambda: other.channels_info(), 404, PusherBadStatus)


def test_over_the_limits(server):
    """Pusher's limits: 100 channels per event, 10 events per batch, 200-character event
    names (400); an event's data over the server's limit (413: Pusher 10 KB, soketi 100 KB,
    ours a 128 KB WebSocket frame). The library refuses some of these itself, so they go
    through its own signing."""
    lib = server.library()
    with pytest.raises(ValueError, match="Too many channels"):  # the library, before sending
        lib.trigger([f"conf-c{n}" for n in range(101)], "e", "x")
    path = f"/apps/{server.app_id}/events"
    assert "100 channels" in refused(server, lambda: signed(lib, POST, path, {
        "name": "e", "data": "x", "channels": [f"conf-c{n}" for n in range(101)]}),
        400, PusherBadRequest)
    assert "200" in refused(server, lambda: signed(lib, POST, path, {
        "name": "e" * 201, "data": "x", "channels": ["conf-c"]}), 400, PusherBadRequest)
    assert "10" in refused(server, lambda: signed(lib, POST, f"/apps/{server.app_id}/batch_events",
                                                  {"batch": [{"channel": "conf-c", "name": "e",
                                                              "data": str(n)}
                                                             for n in range(11)]}),
                           400, PusherBadRequest)
    refused(server, lambda: signed(lib, POST, path, {"name": "e", "channels": ["conf-c"]}),
            400, PusherBadRequest)  # no data
    refused(server, lambda: signed(lib, POST, path, {
        "name": "e", "data": "x" * 150_000, "channels": ["conf-c"]}), 413, PusherBadStatus)
