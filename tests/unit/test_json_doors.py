"""One strict JSON rule at every door (issue 9, item 3), property-tested with hostile inputs.

Hostile fragments: numbers that overflow to infinity (``1e400``), the non-standard constants
``NaN``/``Infinity``, lone surrogates in strings and in member names (escaped, and raw in a
text frame), duplicate member names, and nesting far deeper than the reader's limit (which made
Python raise ``RecursionError``, not ``ValueError``). Each is placed at a random depth and
position inside an otherwise valid document, then sent through every door:

* WebSocket frames (``ws_message`` through Chalice's test client; replies read back from a real
  management API on 127.0.0.1): exactly one reply, an ``invalid_frame`` error frame repeating
  the frame's ``id`` whenever that id itself is valid and the document parsed far enough;
* ``POST /notifications``, ``/pusher/auth``, ``/pusher/user-auth``: a 400 JSON error, nothing
  pushed;
* ``POST /pusher/webhooks`` (correctly signed): a 400 JSON error, no handler called;
* the SQS worker: the bad message dropped (logged without its data), the good ones beside it
  delivered exactly once, no batch item failure;
* token payloads (signed by the dev issuer's real key): ``malformed_token``, so a 401 at every
  route (``GET /me``, presence auth), never a 500;
* authorizer contexts (``Principal.from_context``): ``$connect`` refused with 401.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from chalicelib.auth import tokens
from chalicelib.delivery import webhooks
from chalicelib.registry import connections
from chalicelib.errors import TokenError
from chalicelib.auth.principal import Principal
from chalicelib.settings import jwt_settings
from tests.support import events
from tests.support.jwks_server import forge
from tests.support.websocket import aws_env, management_api, registry  # noqa: F401

SETTINGS = hsettings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])

DEEP = 5000


def hostile(deep: int = DEEP):
    """Hostile fragments by kind: (JSON text, whether a document holding it still parses far
    enough to read its "id": the value-level faults do; depth refusals do not)."""
    return {
        "overflow": ("1e400", True),
        "negative-overflow": ("-2.5E+999", True),
        "nan": ("NaN", True),
        "infinity": ("-Infinity", True),
        "lone-high-surrogate": ('"\\ud800"', True),
        "lone-low-surrogate": ('"ok\\uDC00ok"', True),
        "reversed-pair": ('"\\udc00\\ud800"', True),
        "lone-surrogate-member-name": ('{"\\ud83d": 1}', True),
        "duplicate-member": ('{"k": 1, "k": 2}', True),
        "deep-arrays": ("[" * deep + "]" * deep, False),
        "deep-objects": ('{"a":' * deep + "1" + "}" * deep, False),
        "deep-mixed": ('[{"a":' * (deep // 2) + "0" + "}]" * (deep // 2), False),
    }


HOSTILE = hostile()
kinds = st.sampled_from(sorted(HOSTILE))
leaves = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))


@st.composite
def embedded(draw, fragment: str) -> str:
    """``fragment`` at a random depth (0-3) and position inside arrays and objects."""
    text = fragment
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            items = [json.dumps(v) for v in draw(st.lists(leaves, max_size=3))]
            items.insert(draw(st.integers(0, len(items))), text)
            text = "[" + ",".join(items) + "]"
        else:
            key = draw(st.text(max_size=6))
            siblings = draw(st.dictionaries(st.text(max_size=6), leaves, max_size=3))
            members = [f"{json.dumps(k)}:{json.dumps(v)}" for k, v in siblings.items()
                       if k != key]
            members.insert(draw(st.integers(0, len(members))), f"{json.dumps(key)}:{text}")
            text = "{" + ",".join(members) + "}"
    return text


def obj(members) -> str:
    """A JSON object from ``[(name, json text), ...]`` in that order."""
    return "{" + ",".join(f"{json.dumps(name)}:{value}" for name, value in members) + "}"


@st.composite
def hostile_object(draw, base, deep: int = DEEP):
    """``base`` (name -> Python value) with one member carrying a hostile fragment (nesting
    ``deep`` levels for the deep kinds): either an extra member, or one of base's members
    replaced. Returns (text, kind, replaced name)."""
    kind = draw(kinds)
    fragment = draw(embedded(hostile(deep)[kind][0]))
    members = [(name, json.dumps(value)) for name, value in base.items()]
    target = draw(st.sampled_from([None] + list(base)))
    if target is None:
        members.insert(draw(st.integers(0, len(members))), ("extra", fragment))
    else:
        members = [(n, fragment if n == target else v) for n, v in members]
    return obj(members), kind, target


def assert_no_5xx_json_400(response):
    assert response.status_code == 400, response.body
    assert response.headers["Content-Type"].startswith("application/json")
    answer = json.loads(response.body)
    assert answer["error"] == "bad_request" and isinstance(answer["message"], str)
    return answer


# --- the reader's contract through its doors: plain examples ---------------------------------

@pytest.fixture
def ws(registry, management_api, client, dev_issuer):
    """(client, management api, connection id of a connected alice)."""
    event = events.connect_event(token=dev_issuer.mint("alice"))
    assert client.lambda_.invoke("ws_connect", event).payload == {"statusCode": 200}
    return client, management_api, event["requestContext"]["connectionId"]


def send_raw(client, api, connection_id, text):
    before = len(api.received[connection_id])
    response = client.lambda_.invoke("ws_message", events.message_event(connection_id, raw=text))
    assert response.payload == {"statusCode": 200}
    return [json.loads(b) for b in api.received[connection_id][before:]]


@pytest.mark.parametrize("text, frame_id", [
    ('{"action": "pushtowebsocket", "id": "e1", "message": 1e400}', "e1"),
    ('{"action": "pushtowebsocket", "id": 9, "message": "\\ud800"}', 9),
    ('{"action": "ping", "id": 1e400}', None),
    ('{"action": "ping", "id": "\\udfff"}', None),
    ('{"action": "ping", "id": "dup", "id": "dup2"}', None),
    ('{"action": "ping", "id": "x", "n": ' + "[" * DEEP + "]" * DEEP + "}", None),
    ('{"action": "ping", "id": "raw", "m": "\ud800"}', "raw"),  # a raw lone surrogate
])
def test_every_frame_gets_exactly_one_invalid_frame_reply(ws, text, frame_id):
    client, api, alice = ws
    replies = send_raw(client, api, alice, text)
    assert len(replies) == 1
    (reply,) = replies
    assert reply["type"] == "error" and reply["code"] == "invalid_frame"
    assert reply.get("id") == frame_id
    assert "ud800" not in reply["message"] and "1e400" not in reply["message"]


@pytest.mark.parametrize("frame_id", ["abc", 7, 0, -3])
def test_unknown_action_repeats_the_id(ws, frame_id):
    client, api, alice = ws
    (reply,) = send_raw(client, api, alice, json.dumps({"action": "dance", "id": frame_id}))
    assert reply["code"] == "unknown_action" and reply["id"] == frame_id


def test_a_frame_at_the_depth_limit_is_still_served(ws):
    from chalicelib import jsonutil

    client, api, alice = ws
    message = json.loads("[" * (jsonutil.MAX_DEPTH - 1) + "]" * (jsonutil.MAX_DEPTH - 1))
    (reply,) = send_raw(client, api, alice, json.dumps(
        {"action": "pushtowebsocket", "id": 1, "message": message}))
    assert reply == {"type": "message", "message": message, "id": 1}
    (reply,) = send_raw(client, api, alice, json.dumps(
        {"action": "pushtowebsocket", "id": 2, "message": [message]}))
    assert reply["code"] == "invalid_frame"
    assert "id" not in reply  # refused before parsing: the id is never read
    assert f"deeper than {jsonutil.MAX_DEPTH}" in reply["message"]


def test_a_reply_that_cannot_be_encoded_still_answers_with_the_id(ws, monkeypatch):
    # unreachable with strict frames; if a handler ever builds such a reply, the client waiting
    # on its id still hears back
    from chalicelib.dialects import native

    client, api, alice = ws
    monkeypatch.setitem(native._HANDLERS, "ping",
                        lambda connection_id, frame, event: {"type": "pong", "x": float("nan")})
    replies = send_raw(client, api, alice, '{"action": "ping", "id": "p1"}')
    assert replies == [{"type": "error", "code": "internal_error", "message": "Internal error",
                        "id": "p1"}]


# --- socket frames: property ------------------------------------------------------------------

@SETTINGS
@given(data=st.data())
def test_socket_frames_always_get_one_reply_with_their_id(ws, data):
    client, api, alice = ws
    base = {"action": data.draw(st.sampled_from(["ping", "pushtowebsocket", "publish",
                                                 "subscribe", "dance"])),
            "id": data.draw(st.one_of(st.integers(-1000, 1000), st.text(max_size=10))),
            "message": "m", "channel": "news", "event": "e"}
    text, kind, target = data.draw(hostile_object(base))
    replies = send_raw(client, api, alice, text)
    assert len(replies) == 1, replies
    (reply,) = replies
    assert reply["type"] == "error" and reply["code"] == "invalid_frame"
    if HOSTILE[kind][1] and target != "id":
        assert reply["id"] == base["id"]
    else:
        assert "id" not in reply
    assert not api.received.get("news")  # nothing was published


@SETTINGS
@given(kind=kinds, data=st.data())
def test_whole_hostile_frames_are_answered(ws, kind, data):
    client, api, alice = ws
    replies = send_raw(client, api, alice, data.draw(embedded(HOSTILE[kind][0])))
    assert [r["code"] for r in replies] == ["invalid_frame"]


# --- REST doors -------------------------------------------------------------------------------

@pytest.fixture
def rest(registry, management_api, client, dev_issuer):
    connections.register("alice-1=", Principal(sub="alice", issuer=dev_issuer.issuer))
    token = dev_issuer.mint("alice", scope="notifications:send")
    return client, management_api, token


@SETTINGS
@given(data=st.data())
def test_notifications_answer_400_to_hostile_json(rest, data):
    client, api, token = rest
    text, _, _ = data.draw(hostile_object({"user_id": "alice", "event": "e", "data": {"x": 1}}))
    response = client.http.post("/notifications", body=text.encode("utf-8", "surrogatepass"),
                                headers={"Content-Type": "application/json",
                                         "Authorization": f"Bearer {token}"})
    answer = assert_no_5xx_json_400(response)
    assert answer["message"].startswith("the body is not valid JSON")
    assert api.attempts == {}


@SETTINGS
@given(data=st.data(), route=st.sampled_from(["/pusher/auth", "/pusher/user-auth"]),
       content_type=st.sampled_from(["application/json", "text/plain"]))
def test_pusher_auth_routes_answer_400_to_hostile_json(rest, data, route, content_type):
    client, _, token = rest
    base = {"socket_id": "1.2", "channel_name": "presence-room"}
    text, _, _ = data.draw(hostile_object(base))
    response = client.http.post(route, body=text.encode("utf-8", "surrogatepass"), headers={
        "Content-Type": content_type, "Authorization": f"Bearer {token}"})
    answer = assert_no_5xx_json_400(response)
    assert answer["message"].startswith("request body is not valid JSON")


def sign(body: bytes, secret: str = "app-secret") -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def recorded(monkeypatch):
    seen = []
    registry = webhooks.WebhookHandlers(default=lambda event, time_ms: seen.append(event))
    monkeypatch.setattr(webhooks, "HANDLERS", registry)
    return seen


@SETTINGS
@given(data=st.data())
def test_signed_webhooks_with_hostile_json_are_400(client, recorded, data):
    event = {"name": "channel_occupied", "channel": "presence-a"}
    text, _, _ = data.draw(hostile_object(event))
    body = ('{"time_ms": %d, "events": [%s]}' % (time.time() * 1000, text)).encode(
        "utf-8", "surrogatepass")
    response = client.http.post("/pusher/webhooks", body=body, headers={
        "Content-Type": "application/json", "X-Pusher-Key": "app-key",
        "X-Pusher-Signature": sign(body)})
    answer = assert_no_5xx_json_400(response)
    assert answer["message"].startswith("webhook body is not valid JSON")
    assert recorded == []


def test_unsigned_hostile_webhooks_stay_401(client, recorded):
    body = b'{"time_ms": 1, "events": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    response = client.http.post("/pusher/webhooks", body=body, headers={
        "Content-Type": "application/json", "X-Pusher-Key": "app-key",
        "X-Pusher-Signature": sign(body, "wrong")})
    assert response.status_code == 401
    assert recorded == []


# --- the SQS worker ---------------------------------------------------------------------------

@pytest.fixture
def worker(registry, management_api, client, monkeypatch):
    monkeypatch.setenv("PUSH_MAX_ATTEMPTS", "2")
    connections.register("alice-1=", Principal(sub="alice", issuer="https://issuer.example"))
    return client, management_api


def test_poison_and_deep_messages_are_dropped_and_the_good_ones_delivered_once(worker, caplog):
    client, api = worker
    caplog.set_level(logging.INFO)
    secret = "s3cr3t-data"
    records = [
        events.sqs_record({"user_id": "alice", "event": "one"}, message_id="good-1"),
        events.sqs_record('{"user_id": "alice", "event": "e", "data": [1e400, "%s"]}' % secret,
                          message_id="poison-inf"),
        events.sqs_record('{"user_id": "alice", "event": "e", "data": "\\ud800%s"}' % secret,
                          message_id="poison-surrogate"),
        events.sqs_record('{"user_id": "alice", "event": "e", "data": %s}'
                          % ("[" * DEEP + json.dumps(secret) + "]" * DEEP),
                          message_id="deep"),
        events.sqs_record({"user_id": "alice", "event": "two"}, message_id="good-2"),
    ]
    result = client.lambda_.invoke("push_worker", events.sqs_event(records)).payload
    assert result == {"batchItemFailures": []}
    assert api.frames("alice-1=") == [{"type": "event", "event": "one", "data": None, "id": 1},
                                      {"type": "event", "event": "two", "data": None, "id": 2}]
    for message_id in ("poison-inf", "poison-surrogate", "deep"):
        assert f"push message {message_id} dropped" in caplog.text
    assert secret not in caplog.text


@SETTINGS
@given(data=st.data())
def test_worker_never_retries_hostile_json(worker, data):
    client, api = worker
    text, _, _ = data.draw(hostile_object({"user_id": "alice", "event": "e", "data": 1}))
    before = len(api.received.get("alice-1=", []))
    result = client.lambda_.invoke("push_worker", events.sqs_event([
        events.sqs_record(text, message_id="bad"),
        events.sqs_record({"user_id": "alice", "event": "ok"}, message_id="good")])).payload
    assert result == {"batchItemFailures": []}
    (frame,) = api.frames("alice-1=")[before:]
    assert isinstance(frame.pop("id"), int)  # the user's history id: one more each example
    assert frame == {"type": "event", "event": "ok", "data": None}


# --- token payloads and authorizer contexts ---------------------------------------------------

def signed_token(dev_issuer, claims_text: str) -> str:
    return forge({"alg": "RS256", "kid": "RS256-dev", "typ": "JWT"},
                 claims_text.encode("utf-8", "surrogatepass"), dev_issuer.private_keys["RS256"])


def claims_base(dev_issuer):
    now = int(time.time())
    return {"iss": dev_issuer.issuer, "sub": "alice", "aud": dev_issuer.audience,
            "iat": now, "exp": now + 600, "name": "Alice"}


@SETTINGS
@given(data=st.data())
def test_hostile_token_payloads_are_malformed_tokens(app_env, dev_issuer, data):
    # 600 levels: far past the reader's limit of 64, yet within the 8 KiB token limit
    text, _, _ = data.draw(hostile_object(claims_base(dev_issuer), deep=600))
    with pytest.raises(TokenError) as info:
        tokens.verify(signed_token(dev_issuer, text), jwt_settings())
    assert info.value.code == "malformed_token"


@pytest.mark.parametrize("name", ['"\\ud800"', '"Al\\udfffice"', "1e400"])
def test_a_signed_claim_that_cannot_be_encoded_is_401_not_500(client, dev_issuer, name,
                                                              monkeypatch):
    monkeypatch.setenv("PUSHER_PRESENCE_USER_INFO_CLAIMS", "name")
    claims = claims_base(dev_issuer)
    claims["name"] = "NAME"
    token = signed_token(dev_issuer, json.dumps(claims).replace('"NAME"', name))
    for path, body in (("/pusher/auth", "socket_id=1.2&channel_name=presence-room"),
                       ("/pusher/user-auth", "socket_id=1.2")):
        response = client.http.post(path, body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (path, response.body)
    assert client.http.get("/me", headers={"Authorization": token}).status_code == 401


@pytest.mark.parametrize("claims", ['{"a": 1e400}', '{"\\ud800": 1}', '{"n": "\\udc00"}',
                                    '{"a": 1, "a": 2}', "[" * DEEP + "]" * DEEP, "NaN"])
def test_unreadable_authorizer_context_refuses_the_connection(registry, client, claims):
    event = events.connect_event(authorizer={"sub": "alice", "iss": "https://i.example",
                                             "claims": claims})
    assert client.lambda_.invoke("ws_connect", event).payload == {"statusCode": 401}
    assert connections.get_connection(event["requestContext"]["connectionId"]) is None
