"""Webhooks out end to end (issue 10 D): a pusher-protocol client subscribes to a presence channel
through the local gateway (the app's real handlers, a moto server registry and push queue), the
``$default`` invocation queues one webhook job, the app's real ``push_worker`` (fed by
``devtools.local_sqs``, as Lambda's event source mapping feeds it) POSTs it to a real receiver on
127.0.0.1, which checks it with the ``pusher`` library's ``validate_webhook``.
"""
from __future__ import annotations

import json
import os
import time
import uuid

import pytest
from websockets.sync.client import connect

from chalicelib.delivery import webhook_sender
from chalicelib.protocol import pusher
from devtools.local_sqs import SqsPoller
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.websocket import app_gateway, aws_env, serial_registry  # noqa: F401

KEY, SECRET = "app-key", "app-secret"
ROOM = "presence-room"


@pytest.fixture
def receiver():
    with WebhookReceiver(key=KEY, secret=SECRET) as server:
        yield server


@pytest.fixture
def stack(serial_registry, receiver, monkeypatch):
    """The gateway, the push queue on the same moto server as the registry, and a poller
    feeding the queue to ``push_worker``."""
    import app as app_module

    queue = f"realtime-push-hooks-{uuid.uuid4().hex[:8]}"  # moto's state outlives the test
    # the serial moto server of the registry serves SQS too
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", os.environ["AWS_ENDPOINT_URL_DYNAMODB"])
    monkeypatch.setenv("PUSH_QUEUE_NAME", queue)
    monkeypatch.setenv("PUSHER_DIALECT", "true")
    monkeypatch.setenv("PUSHER_WEBHOOKS", json.dumps([{
        "url": receiver.url("/hooks?token=tok-123"),
        "event_types": ["member_added", "member_removed", "channel_vacated"]}]))
    from chalicelib import aws

    aws.reset_clients()
    with app_gateway(monkeypatch) as gw:
        # no long polls: the moto server is serial, and a receive waiting there would hold up
        # every registry request of the handlers meanwhile (seconds per $disconnect)
        poller = SqsPoller(app_module.app, "push_worker", queue, wait_seconds=0)
        poller.queue_url = poller.sqs.create_queue(QueueName=queue)["QueueUrl"]
        try:
            yield gw, poller
        finally:
            aws.reset_clients()


def recv(ws, timeout=5.0):
    return json.loads(ws.recv(timeout=timeout))


def subscribe_presence(ws, user_id):
    frame = recv(ws)
    assert frame["event"] == "pusher:connection_established", frame
    socket_id = json.loads(frame["data"])["socket_id"]
    channel_data = json.dumps({"user_id": user_id, "user_info": {"name": user_id}})
    auth = pusher.channel_signature(SECRET, socket_id, ROOM, channel_data)
    ws.send(json.dumps({"event": "pusher:subscribe", "data": {
        "channel": ROOM, "auth": f"{KEY}:{auth}", "channel_data": channel_data}}))
    frame = recv(ws)
    assert frame["event"] == "pusher_internal:subscription_succeeded", frame


def work_until(poller, receiver, count, timeout=15.0):
    deadline = time.monotonic() + timeout
    while len(receiver.accepted) < count and time.monotonic() < deadline:
        if not poller.poll_once():
            time.sleep(0.05)
    return receiver.accepted


def test_presence_join_and_leave_reach_the_receiver_signed(stack, receiver):
    gw, poller = stack
    url = f"ws://127.0.0.1:{gw.port}/app/{KEY}?protocol=7&client=js&version=8.6.0&flash=false"
    receiver.mode = "hang"  # the socket operation never waits on the target
    with connect(url) as alice:
        started = time.monotonic()
        subscribe_presence(alice, "alice")
        assert time.monotonic() - started < webhook_sender.TOTAL_TIMEOUT
        assert receiver.requests == []
        receiver.mode = "answer"
        (joined,) = work_until(poller, receiver, 1)
        assert joined["events"] == [{"name": "member_added", "channel": ROOM,
                                     "user_id": "alice"}]
    # the socket closes: $disconnect -> member_removed and channel_vacated, one webhook
    accepted = work_until(poller, receiver, 2)
    assert len(accepted) == 2, receiver.requests
    assert sorted(accepted[1]["events"], key=lambda e: e["name"]) == [
        {"name": "channel_vacated", "channel": ROOM},
        {"name": "member_removed", "channel": ROOM, "user_id": "alice"}]
    assert all(request["valid"] and request["path"] == "/hooks?token=tok-123"
               for request in receiver.requests)
    assert accepted[0]["time_ms"] <= accepted[1]["time_ms"]
