"""pysher 1.0.8, a widely used Python Pusher client, against our WebSocket API through the local
gateway (issue 19 defect 8): it connects with ``protocol=6``, which Pusher serves (its protocol
doc: only versions 1-3 are unsupported) and soketi serves too. The real client from PyPI, used
as its README shows: connect, subscribe on ``pusher:connection_established``, bind an event.
"""
from __future__ import annotations

import json
import logging
import threading

import pysher
import pytest

from chalicelib.delivery import push
from tests.integration.test_pusher_socket import KEY, gateway  # noqa: F401
from tests.support.websocket import aws_env, serial_registry  # noqa: F401


@pytest.fixture
def client(gateway):
    """A pysher client on the gateway (plain ws on 127.0.0.1), connected; disconnected after."""
    pusher = pysher.Pusher(KEY, custom_host="127.0.0.1", port=gateway.port, secure=False,
                           reconnect_interval=1, log_level=logging.WARNING)
    connected = threading.Event()
    pusher.connection.bind("pusher:connection_established", lambda data: connected.set())
    errors = []
    pusher.connection.bind("pusher:error", errors.append)
    pusher.connect()
    try:
        assert connected.wait(10), f"pysher did not connect: {errors}"
        assert "protocol=6" in pusher.url
        yield pusher
    finally:
        pusher.disconnect(timeout=5)


def test_pysher_subscribes_and_receives_an_event(client):
    subscribed, received = threading.Event(), []
    channel = client.subscribe("news")
    channel.bind("pusher_internal:subscription_succeeded", lambda data: subscribed.set())
    got = threading.Event()
    channel.bind("greet", lambda data: (received.append(data), got.set()))
    assert subscribed.wait(10)
    summary = push.deliver(push.parse_notification(
        {"channel": "news", "event": "greet", "data": {"n": 1}}))
    assert summary["delivered"] == 1
    assert got.wait(10)
    assert json.loads(received[0]) == {"n": 1}


def test_pysher_pings_and_pongs_without_errors(client):
    """pysher pings as soon as the socket opens and answers a ``pusher:ping`` with
    ``pusher:pong`` (protocol 5+): both are taken without a ``pusher:error``."""
    pongs, errors = threading.Event(), []
    client.connection.bind("pusher:pong", lambda data: pongs.set())
    client.connection.bind("pusher:error", errors.append)
    client.connection.send_ping()
    assert pongs.wait(10)
    client.connection.send_pong()  # unasked: answered with nothing
    client.connection.send_ping()
    pongs.clear()
    assert pongs.wait(10)
    assert errors == []
