"""``make package STAGE=dev``'s output, deployed through ministack's CloudFormation, used as its
users use it: through the emulator's API Gateway (REST and WebSocket), its Lambda, DynamoDB and
SQS, with stock clients: ``requests``-like HTTP, the ``websockets`` client with a JWT, the Python
``pusher`` library against the Pusher HTTP API, and stock pusher-js (the scenarios of
tests/conformance/pusher_js.js, unchanged) through the stage's custom domains on loopback
(tests/deploy/relay.py). The emulator's gaps are worked around in tests/deploy/ministack_gaps.py
only.

Run: ``make test-deploy`` (installs ministack into .venv-ministack/ first). The last test checks
that the registry is empty once every client has left, so the tests run in file order.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pusher
import pytest

from tests.deploy import ministack_gaps as gaps
from tests.e2e.test_pusher_e2e import NODE_DIR, NodeClient

pytestmark = pytest.mark.deploy

SCRIPT = str(Path(__file__).resolve().parents[1] / "conformance" / "pusher_js.js")
WITHIN = 20.0  # seconds: a cold start of each function on the emulator takes ~1.5 s


# --- helpers ------------------------------------------------------------------------------------

def http(method: str, url: str, *, token: Optional[str] = None, form: Optional[dict] = None,
         body: Optional[bytes] = None, headers: Optional[dict] = None) -> Tuple[int, dict]:
    """``(status, JSON body or {"text": ...})`` of one request."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if form is not None:
        body = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, {"text": text}


def sign(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def library(deployment, **options) -> pusher.Pusher:
    """The Python ``pusher`` library as an app configures it: host and port of the REST domain."""
    env = deployment.env
    return pusher.Pusher(app_id=env["PUSHER_APP_ID"], key=env["PUSHER_KEY"],
                         secret=env["PUSHER_SECRET"], host="127.0.0.1",
                         port=deployment.http.port, ssl=False, timeout=30, **options)


@pytest.fixture(scope="module")
def tokens(deployment) -> Dict[str, str]:
    issuer = deployment.issuer
    return {"TOKEN_ALICE": issuer.mint("alice", name="Alice"),
            "TOKEN_BOB": issuer.mint("bob", name="Bob")}


def node(deployment, tokens, scenario: str, **extra: str) -> NodeClient:
    """A pusher-js scenario of tests/conformance/pusher_js.js against the deployed stage."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(PUSHER_KEY=deployment.env["PUSHER_KEY"], WS_HOST="127.0.0.1",
               WS_PORT=str(deployment.ws.port), AUTH_BASE=deployment.domain_http_url,
               SCENARIO_TIMEOUT_MS="40000", NODE_PATH=str(NODE_DIR / "node_modules"))
    env.update(tokens)
    env.update(extra)
    return NodeClient(SCRIPT, scenario, env)


def steps(client: NodeClient, step: str) -> List[dict]:
    return [line for line in client.seen if line.get("step") == step]


class NativeClient:
    """A native WebSocket client (``websockets``) on its own event loop."""

    def __init__(self, url: str, headers: Optional[dict] = None):
        from websockets.sync.client import connect

        self.ws = connect(url, additional_headers=headers or {}, open_timeout=WITHIN,
                          close_timeout=5)

    def send(self, frame: dict) -> None:
        self.ws.send(json.dumps(frame))

    def receive(self, within: float = WITHIN) -> dict:
        return json.loads(self.ws.recv(timeout=within))

    def receive_until(self, predicate, within: float = WITHIN) -> dict:
        deadline = time.monotonic() + within
        seen = []
        while time.monotonic() < deadline:
            try:
                frame = self.receive(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            if predicate(frame):
                return frame
            seen.append(frame)
        raise AssertionError(f"no such frame within {within} s; saw {seen}")

    def close(self) -> None:
        self.ws.close()


def handshake_status(url: str, headers: Optional[dict] = None) -> int:
    """The HTTP status a refused WebSocket handshake is answered with (101: accepted)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect(url, additional_headers=headers or {}, open_timeout=WITHIN):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


# --- the stack ----------------------------------------------------------------------------------

def test_the_stack_was_created_with_every_route(deployment):
    """What CloudFormation made of the template: the outputs a user reads, both APIs' routes."""
    outputs = deployment.stack.outputs
    for key in ("WebSocketURL", "HttpURL", "ConnectionsTableName", "PushQueueUrl",
                "PushDeadLetterQueueUrl"):
        assert outputs.get(key), (key, outputs)
    routes = deployment.ministack.client("apigatewayv2").get_routes(
        ApiId=outputs["WebsocketAPIId"])["Items"]
    by_key = {route["RouteKey"]: route for route in routes}
    assert set(by_key) == {"$connect", "$default", "$disconnect"}
    assert by_key["$connect"]["AuthorizationType"] == "CUSTOM"
    # every change the harness made names one of the emulator's gaps
    assert all(change.split(":")[0] in gaps.GAPS for change in deployment.stack.changes)


# --- REST ---------------------------------------------------------------------------------------

def test_me_with_and_without_a_token(deployment, tokens):
    status, body = http("GET", deployment.rest_url + "/me", token=tokens["TOKEN_ALICE"])
    assert status == 200, body
    assert body["user_id"] == "alice" and body["sub"] == "alice"
    assert body["iss"] == deployment.issuer.issuer
    assert http("GET", deployment.rest_url + "/me")[0] == 401
    expired = deployment.issuer.mint("alice", ttl=-120)
    assert http("GET", deployment.rest_url + "/me", token=expired)[0] == 401


def test_pusher_auth_signs_what_the_rules_allow(deployment, tokens):
    env = deployment.env
    key, secret = env["PUSHER_KEY"], env["PUSHER_SECRET"]
    url = deployment.rest_url + "/pusher/auth"
    socket_id = "1234.5678"
    status, body = http("POST", url, token=tokens["TOKEN_ALICE"],
                        form={"socket_id": socket_id, "channel_name": "private-user-alice"})
    assert status == 200, body
    assert body == {"auth": f"{key}:{sign(secret, f'{socket_id}:private-user-alice')}"}
    # someone else's private channel, and no token at all
    status, _ = http("POST", url, token=tokens["TOKEN_ALICE"],
                     form={"socket_id": socket_id, "channel_name": "private-user-bob"})
    assert status == 403
    status, _ = http("POST", url, form={"socket_id": socket_id,
                                        "channel_name": "private-user-alice"})
    assert status == 401
    # presence: the member is the token's user, with the claims of user_info
    room = name("presence-room")
    status, body = http("POST", url, token=tokens["TOKEN_BOB"],
                        form={"socket_id": socket_id, "channel_name": room})
    assert status == 200, body
    member = json.loads(body["channel_data"])
    assert member == {"user_id": "bob", "user_info": {"name": "Bob"}}
    assert body["auth"] == f"{key}:{sign(secret, f'{socket_id}:{room}:' + body['channel_data'])}"


def test_pusher_user_auth(deployment, tokens):
    env = deployment.env
    socket_id = "4321.8765"
    status, body = http("POST", deployment.rest_url + "/pusher/user-auth",
                        token=tokens["TOKEN_ALICE"], form={"socket_id": socket_id})
    assert status == 200, body
    assert json.loads(body["user_data"])["id"] == "alice"
    signed = f"{socket_id}::user::{body['user_data']}"
    assert body["auth"] == f"{env['PUSHER_KEY']}:{sign(env['PUSHER_SECRET'], signed)}"
    assert http("POST", deployment.rest_url + "/pusher/user-auth",
                form={"socket_id": socket_id})[0] == 401


def test_pusher_http_api_refuses_a_wrong_signature(deployment):
    good = library(deployment)
    assert good.channels_info() == {"channels": {}}
    wrong = pusher.Pusher(app_id=deployment.env["PUSHER_APP_ID"], key=deployment.env["PUSHER_KEY"],
                          secret="not-the-secret", host="127.0.0.1", port=deployment.http.port,
                          ssl=False, timeout=30)
    with pytest.raises(pusher.errors.PusherBadAuth):
        wrong.trigger("anything", "greet", {})


# --- native WebSocket ---------------------------------------------------------------------------

def test_native_websocket_with_a_jwt(deployment, tokens):
    """A header client (Authorization) and a browser-style one (?token=) subscribe; the Pusher
    HTTP API triggers on the channel; both receive it."""
    channel = name("native")
    header_client = NativeClient(deployment.websocket_url,
                                 {"Authorization": f"Bearer {tokens['TOKEN_ALICE']}"})
    query_client = NativeClient(deployment.websocket_url + "?token=" + tokens["TOKEN_BOB"])
    try:
        for client in (header_client, query_client):
            client.send({"action": "subscribe", "channel": channel, "id": 1})
            assert client.receive() == {"type": "subscribed", "channel": channel, "id": 1}
        header_client.send({"action": "ping"})
        assert header_client.receive() == {"type": "pong"}
        library(deployment).trigger(channel, "greet", {"n": 1})
        for client in (header_client, query_client):
            frame = client.receive_until(lambda f: f.get("type") == "event")
            # the HTTP API's data is text, passed on as it came (docs/http-api.md)
            assert frame == {"type": "event", "channel": channel, "event": "greet",
                             "data": '{"n": 1}', "id": 1}, frame  # the channel's first event
    finally:
        header_client.close()
        query_client.close()


def test_native_websocket_refused_without_a_valid_token(deployment):
    """ws_authorizer refuses: AWS answers 401, the emulator 500 (gap unauthorized-is-500)."""
    expected = gaps.REFUSED_HANDSHAKE_STATUS
    assert handshake_status(deployment.websocket_url) == expected
    expired = deployment.issuer.mint("alice", ttl=-120)
    assert handshake_status(deployment.websocket_url + "?token=" + expired) == expected
    assert handshake_status(deployment.websocket_url,
                            {"Authorization": "Bearer not.a.token"}) == expected


# --- the SQS worker -----------------------------------------------------------------------------

def test_a_message_on_the_push_queue_reaches_the_user(deployment, tokens):
    """An internal producer drops ``{"user_id", "event", "data"}`` on the push queue; the worker
    (SQS event source mapping -> push_worker) delivers it to the user's connection."""
    client = NativeClient(deployment.websocket_url + "?token=" + tokens["TOKEN_ALICE"])
    try:
        client.send({"action": "ping"})
        assert client.receive() == {"type": "pong"}  # connected and registered
        sqs = deployment.ministack.client("sqs")
        queue_url = sqs.get_queue_url(QueueName=deployment.env["PUSH_QUEUE_NAME"])["QueueUrl"]
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(
            {"user_id": "alice", "event": "job-done", "data": {"job": 42}}))
        frame = client.receive_until(lambda f: f.get("type") == "event", within=30)
        assert frame.pop("id") >= 1, frame  # its id in alice's history of events
        assert frame == {"type": "event", "event": "job-done", "data": {"job": 42}}, frame
    finally:
        client.close()


# --- stock pusher-js, through the stage's custom domains ----------------------------------------

def test_pusher_js_connects_and_pings(deployment, tokens):
    client = node(deployment, tokens, "connect")
    connected = client.expect("connected", WITHIN)
    assert connected["activity_timeout_ms"] == 120000
    client.expect("pong", WITHIN)
    assert client.wait() == 0


def test_pusher_js_public_channel(deployment, tokens):
    channel = name("public")
    client = node(deployment, tokens, "subscribe", CHANNEL=channel)
    client.expect("ready", WITHIN)
    lib = library(deployment)
    assert lib.channel_info(channel, ["subscription_count"]) == {
        "occupied": True, "subscription_count": 1}
    lib.trigger(channel, "greet", {"n": 1})
    assert client.expect("received", WITHIN) == {"step": "received", "data": {"n": 1},
                                                 "channel": channel}
    assert client.wait() == 0


def test_pusher_js_private_channel(deployment, tokens):
    client = node(deployment, tokens, "subscribe", CHANNEL="private-user-alice")
    client.expect("ready", WITHIN)
    library(deployment).trigger("private-user-alice", "greet", {"for": "alice"})
    assert client.expect("received", WITHIN)["data"] == {"for": "alice"}
    assert client.wait() == 0


def test_pusher_js_presence(deployment, tokens):
    room = name("presence-room")
    alice = node(deployment, tokens, "presence_watch", ROOM=room)
    assert alice.expect("subscribed", WITHIN) == {
        "step": "subscribed", "ids": ["alice"], "count": 1,
        "me": {"id": "alice", "info": {"name": "Alice"}}}
    bob = node(deployment, tokens, "presence_join", ROOM=room, LEAVE="unsubscribe")
    bobs = bob.expect("subscribed", WITHIN)
    assert bobs["ids"] == ["alice", "bob"] and bobs["count"] == 2
    assert alice.expect("member_added", WITHIN) == {
        "step": "member_added", "id": "bob", "info": {"name": "Bob"}, "count": 2}
    bob.expect("unsubscribed", WITHIN)
    assert alice.expect("member_removed", WITHIN) == {
        "step": "member_removed", "id": "bob", "count": 1}
    assert library(deployment).users_info(room) == {"users": [{"id": "alice"}]}
    bob.stop()
    alice.stop()


def test_pusher_js_client_events(deployment, tokens):
    room = name("presence-whisper")
    client = node(deployment, tokens, "client_events", CHANNEL=room, COUNT="1",
                  WAIT_MARKER="1")
    assert client.expect("sent", WITHIN) == {"step": "sent", "count": 1, "accepted": 1}
    received = client.expect("received", WITHIN)
    assert received["data"] == {"n": 0} and received["user_id"] == "alice", received
    assert client.expect("done", WITHIN) == {"step": "done", "received": 1, "errors": 0}
    library(deployment).trigger(room, "greet", {"marker": True})
    assert client.expect("marker", WITHIN)["data"] == {"marker": True}
    assert steps(client, "echoed") == []  # never echoed to its sender
    assert client.wait() == 0


def test_pusher_js_signin_and_send_to_user(deployment, tokens):
    client = node(deployment, tokens, "signin")
    assert client.expect("ready", WITHIN)["id"] == "alice"
    library(deployment).send_to_user("alice", "greet", {"to": "you"})
    assert client.expect("received", WITHIN)["data"] == {"to": "you"}
    client.stop()


def test_pusher_js_wrong_key_gets_4001(deployment, tokens):
    client = node(deployment, tokens, "bad_key")
    error = client.expect("error", WITHIN)
    assert error["type"] == "WebSocketError" and error["code"] == 4001, error
    assert "does not exist" in error["message"]
    client.expect("done", WITHIN)
    states = [line["current"] for line in steps(client, "state")]
    assert "connected" not in states and states[-1] == "disconnected", states


# --- last: nothing left behind ------------------------------------------------------------------

def test_the_registry_is_empty_after_every_client_left(deployment):
    """Every client of the tests above has closed its socket: ``$disconnect`` removed each
    connection with its subscriptions and presence members (the TTL would not here: the
    emulator writes no stream record for it, gap no-ttl-remove-record), and the HTTP API lists
    no channel. Some items belong to no connection and stay until their TTL by design:
    client-event rate windows (chalicelib/registry/rates.py); presence rosters, which outlive
    their members to keep the join sequence (chalicelib/registry/presence.py): a roster must
    count no member; the event history (chalicelib/registry/history.py) and the departures a
    reconnect resumes (chalicelib/registry/departures.py), kept the history window."""
    dynamodb = deployment.ministack.client("dynamodb")
    table = deployment.stack.outputs["ConnectionsTableName"]
    deadline = time.monotonic() + 30
    while True:
        items = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
        left = [item for item in items if not _bookkeeping(item)]
        rosters = [item for item in items if _text(item, "sk") == "roster"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert left == [], [(_text(i, "connection_id"), _text(i, "sk")) for i in left]
    assert {(_text(i, "connection_id"), i["members"]["N"]) for i in rosters} == {
        (_text(i, "connection_id"), "0") for i in rosters}
    assert library(deployment).channels_info() == {"channels": {}}


def _text(item: dict, key: str) -> str:
    return item.get(key, {}).get("S", "")


def _bookkeeping(item: dict) -> bool:
    """A rate window (``rates.RATE_SK_PREFIX``), a presence roster (``presence.ROSTER_SK``), an
    event of the history or its head (``history#``), a departure or a gone note (``left#``,
    ``gone#``): each with a TTL within the history window (a head: a week)."""
    pk = _text(item, "connection_id")
    if pk.startswith(("history#", "left#", "gone#")):
        limit = 7 * 24 * 3600 if _text(item, "sk") == "head" else 120
        return int(item["expires_at"]["N"]) <= time.time() + limit + 5
    return _text(item, "sk").startswith("rate#") or _text(item, "sk") == "roster"
