"""The real pusher-js (Node build, ``tests/e2e/pusher/socket.js``) against OUR WebSocket API:
the local stack on free ports (devtools.stack: local gateway with the app's handlers, moto,
``chalice local`` for ``/pusher/auth`` and ``/notifications``, the SQS push queue).

Scenarios: connect and a public channel event from ``POST /notifications``; a private channel
authorized by our ``/pusher/auth`` receiving a push from the SQS queue; a bad signature ->
``pusher:subscription_error`` 401; an unknown app key -> ``pusher:error`` 4001; presence
through our ``/pusher/auth`` (member list, member_added, member_removed after a dropped
socket); a client event (``trigger``) reaching the other member with the sender's user id and
never echoed; ``signin()`` through our ``/pusher/user-auth`` and a push to the user; an
encrypted channel (server library encrypts, pusher-js decrypts); a cache channel (miss, then
the last event for a new subscriber).
"""
from __future__ import annotations

import json
import os
import uuid

import boto3
import pytest
import requests

from tests.e2e.test_pusher_e2e import NODE_DIR, NodeClient

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(local_stack):
    """The session's shared local stack (tests/conftest.py)."""
    return local_stack


def node(stack, scenario, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "NODE_PATH": str(NODE_DIR / "node_modules"),
        "PUSHER_KEY": stack.env["PUSHER_KEY"],
        "WS_PORT": str(stack.ports.websocket),
        "AUTH_BASE": stack.http_url,
        "TOKEN_ALICE": stack.mint("alice", name="Alice"),
        "TOKEN_BOB": stack.mint("bob", name="Bob"),
        **extra,
    })
    return NodeClient("socket.js", scenario, env)


def test_public_channel_event_from_post_notifications(stack):
    channel = f"news-{uuid.uuid4().hex[:8]}"
    client = node(stack, "public", CHANNEL=channel)
    ready = client.expect("ready")
    assert ready["channel"] == channel and "." in ready["socket_id"]
    token = stack.mint("ops", scope="notifications:send")
    answer = requests.post(f"{stack.http_url}/notifications",
                           headers={"Authorization": f"Bearer {token}"},
                           json={"channel": channel, "event": "greet", "data": {"n": 1}},
                           timeout=10)
    assert answer.status_code == 200 and answer.json()["delivered"] == 1, answer.text
    received = client.expect("received")
    assert received["data"] == {"n": 1} and received["channel"] == channel


def test_private_channel_via_our_auth_and_a_queue_push(stack):
    client = node(stack, "private")
    client.expect("ready")
    sqs = boto3.session.Session().client(
        "sqs", endpoint_url=stack.dynamodb_url, region_name="us-east-1",
        aws_access_key_id="local", aws_secret_access_key="local")
    queue_url = sqs.get_queue_url(QueueName=stack.env["PUSH_QUEUE_NAME"])["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(
        {"channel": "private-user-alice", "event": "greet", "data": {"from": "queue"}}))
    received = client.expect("received", within=30)
    assert received["data"] == {"from": "queue"}
    assert received["channel"] == "private-user-alice"


def test_bad_signature_gets_subscription_error_401(stack):
    client = node(stack, "badsig")
    error = client.expect("subscription_error")["error"]
    assert error["status"] == 401 and error["type"] == "AuthError"


def test_unknown_app_key_gets_pusher_error_4001(stack):
    client = node(stack, "badkey")
    error = client.expect("error")
    assert error["code"] == 4001
    states = client.expect("states")["states"]
    assert "connected" not in states


def test_presence_members_join_and_leave_by_a_dropped_socket(stack):
    room = f"presence-{uuid.uuid4().hex[:8]}"
    client = node(stack, "presence", PRESENCE_ROOM=room)
    alice = client.expect("alice_subscribed")
    assert alice["me"] == {"id": "alice", "info": {"name": "Alice"}} and alice["count"] == 1
    bob = client.expect("bob_subscribed")
    assert bob["ids"] == ["alice", "bob"] and bob["count"] == 2
    # alice's member_added and bob's subscription race: either may come first
    added = next((m for m in client.seen if m["step"] == "member_added"), None) \
        or client.expect("member_added")
    assert added == {"step": "member_added", "id": "bob", "info": {"name": "Bob"}}
    removed = client.expect("member_removed")
    assert removed["id"] == "bob" and removed["count"] == 1


def test_client_event_reaches_the_other_member_with_the_senders_user_id(stack):
    client = node(stack, "whisper", PRESENCE_ROOM=f"presence-{uuid.uuid4().hex[:8]}")
    assert client.expect("sent")["ok"] is True
    received = client.expect("received")
    assert received["data"] == {"typing": True} and received["user_id"] == "alice"
    assert client.proc.wait(timeout=10) == 0  # 1 if alice got her own event back


def test_signin_then_a_push_to_the_user(stack):
    client = node(stack, "signin")
    assert client.expect("ready")["id"] == "alice"
    token = stack.mint("alice")
    answer = requests.post(f"{stack.http_url}/notifications",
                           headers={"Authorization": f"Bearer {token}"},
                           json={"user_id": "alice", "event": "greet", "data": {"to": "you"}},
                           timeout=10)
    assert answer.status_code == 200 and answer.json()["delivered"] >= 1, answer.text
    assert client.expect("received")["data"] == {"to": "you"}


def test_encrypted_channel_is_relayed_and_decrypted_by_the_client(stack):
    import base64

    from pusher import crypto

    client = node(stack, "encrypted")
    client.expect("ready")
    master_key = base64.b64decode(stack.env["PUSHER_ENCRYPTION_MASTER_KEY_BASE64"])
    channel = "private-encrypted-user-alice"
    payload = crypto.encrypt(channel, json.dumps({"secret": "only alice"}), master_key)
    token = stack.mint("ops", scope="notifications:send")
    answer = requests.post(f"{stack.http_url}/notifications",
                           headers={"Authorization": f"Bearer {token}"},
                           json={"channel": channel, "event": "greet", "data": payload},
                           timeout=10)
    # delivered live (1), or, when an earlier connection of alice left this channel on the
    # shared stack, by the replay of its departure right after the subscription (0 here)
    assert answer.status_code == 200 and answer.json()["delivered"] in (0, 1), answer.text
    assert client.expect("received")["data"] == {"secret": "only alice"}


def test_cache_channel_miss_then_the_last_event_for_a_new_subscriber(stack):
    channel = f"cache-{uuid.uuid4().hex[:8]}"
    client = node(stack, "cache", CHANNEL=channel)
    client.expect("cache_miss")
    token = stack.mint("ops", scope="notifications:send")
    answer = requests.post(f"{stack.http_url}/notifications",
                           headers={"Authorization": f"Bearer {token}"},
                           json={"channel": channel, "event": "greet", "data": {"v": 7}},
                           timeout=10)
    assert answer.status_code == 200, answer.text
    assert client.expect("first_received")["data"] == {"v": 7}
    assert client.expect("received")["data"] == {"v": 7}
