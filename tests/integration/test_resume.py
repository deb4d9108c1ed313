"""Event ids and resume after a reconnect, native dialect: the app's real handlers behind the
local gateway, a one-request-at-a-time moto server (transactions stay exact), real WebSocket
clients, and publishers in threads calling the push engine as the HTTP API and the queue do.

What a client sees: every event frame carries ``id`` (increasing per channel); a client that
subscribes again with ``"after": <last id it has>`` gets what it missed, in order and once,
then live events, also while events keep arriving; past what is kept it gets
``resume_failed`` and live events after the id it names.
"""
from __future__ import annotations

import json
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from chalicelib.delivery import push
from tests.support.websocket import app_gateway, aws_env, serial_registry  # noqa: F401


@pytest.fixture
def gateway(serial_registry, monkeypatch):
    with app_gateway(monkeypatch) as gw:
        yield gw


def recv(ws, timeout=10.0):
    return json.loads(ws.recv(timeout=timeout))


def publish(channel, number):
    push.deliver(push.parse_notification({"channel": channel, "event": "n", "data": number}))


def subscribe(ws, channel, after=None):
    frame = {"action": "subscribe", "channel": channel}
    if after is not None:
        frame["after"] = after
    ws.send(json.dumps(frame))
    assert recv(ws) == {"type": "subscribed", "channel": channel}


def native(gw, token):
    return connect(f"ws://127.0.0.1:{gw.port}/test?token={token}")


def test_events_carry_ids_and_a_resume_replays_what_was_missed_once(gateway, dev_issuer):
    token = dev_issuer.mint("alice")
    with native(gateway, token) as first:
        subscribe(first, "news")
        for number in (1, 2, 3):
            publish("news", number)
        assert [recv(first) for _ in range(3)] == [
            {"type": "event", "channel": "news", "event": "n", "data": n, "id": n}
            for n in (1, 2, 3)]
    for number in (4, 5, 6):
        publish("news", number)  # nobody is subscribed
    with native(gateway, token) as again:
        subscribe(again, "news", after=3)
        assert [(f["id"], f["data"]) for f in (recv(again) for _ in range(3))] == \
            [(4, 4), (5, 5), (6, 6)]
        publish("news", 7)
        assert recv(again) == {"type": "event", "channel": "news", "event": "n", "data": 7,
                               "id": 7}
        with pytest.raises(TimeoutError):
            again.recv(timeout=0.5)  # nothing twice


def test_a_resume_under_steady_publishing_loses_and_repeats_nothing(gateway, dev_issuer):
    """A publisher at ~50 events/s; the client drops its socket 5 times and subscribes again
    with the last id it got each time: it ends with 1..N, each once, in order."""
    token = dev_issuer.mint("bob")
    stop = threading.Event()
    published = []

    def publisher():
        number = 0
        while not stop.is_set() and number < 2000:
            number += 1
            publish("private-user-bob", number)
            published.append(number)
            time.sleep(0.02)

    seen = []
    thread = threading.Thread(target=publisher, daemon=True)
    ws = native(gateway, token)
    subscribe(ws, "private-user-bob")
    thread.start()
    try:
        for cut in range(6):
            deadline = time.monotonic() + 0.6
            while time.monotonic() < deadline:
                try:
                    frame = recv(ws, timeout=0.2)
                except TimeoutError:
                    continue
                if frame.get("type") == "event":
                    seen.append(frame)
            if cut == 5:
                break
            ws.close()
            time.sleep(0.3)  # events go on while the client is away
            ws = native(gateway, token)
            subscribe(ws, "private-user-bob", after=seen[-1]["id"] if seen else 0)
        stop.set()
        thread.join(timeout=10)
        last = published[-1]
        deadline = time.monotonic() + 10
        while (not seen or seen[-1]["data"] < last) and time.monotonic() < deadline:
            try:
                frame = recv(ws, timeout=0.5)
            except TimeoutError:
                continue
            if frame.get("type") == "event":
                seen.append(frame)
    finally:
        stop.set()
        ws.close()
    assert last > 50
    assert [frame["data"] for frame in seen] == list(range(1, last + 1))
    assert [frame["id"] for frame in seen] == list(range(1, last + 1))


def test_a_resume_past_what_is_kept_fails_clearly_then_goes_live(gateway, dev_issuer,
                                                                 monkeypatch):
    from chalicelib import settings

    monkeypatch.setenv("HISTORY_MAX_EVENTS", "3")
    settings.reset()
    token = dev_issuer.mint("carol")
    for number in range(1, 7):
        publish("news", number)
    with native(gateway, token) as ws:
        subscribe(ws, "news", after=1)  # 5 missed, 3 kept for a resume
        assert recv(ws) == {"type": "resume_failed", "channel": "news",
                            "reason": "too_many_missed", "id": 6}
        publish("news", 7)
        assert recv(ws)["id"] == 7
    with native(gateway, token) as ws:
        subscribe(ws, "news", after=99)  # an id this stream never gave out
        assert recv(ws) == {"type": "resume_failed", "channel": "news",
                            "reason": "unknown_id", "id": 7}


@pytest.mark.parametrize("after", [-1, 1.5, "3", True, 2 ** 53])
def test_a_bad_resume_id_is_refused_with_an_error_frame(gateway, dev_issuer, after):
    with native(gateway, dev_issuer.mint("dave")) as ws:
        ws.send(json.dumps({"action": "subscribe", "channel": "news", "after": after}))
        reply = recv(ws)
        assert reply["type"] == "error" and reply["code"] == "bad_request", reply
        assert "after" in reply["message"]


def test_a_channel_without_history_says_it_cannot_resume(gateway, dev_issuer, monkeypatch):
    from chalicelib import settings

    monkeypatch.setenv("HISTORY_CHANNEL_PREFIXES", "private-")
    settings.reset()
    with native(gateway, dev_issuer.mint("erin")) as ws:
        subscribe(ws, "news", after=0)
        assert recv(ws) == {"type": "resume_failed", "channel": "news", "reason": "no_history"}
        publish("news", 1)
        assert recv(ws) == {"type": "event", "channel": "news", "event": "n", "data": 1}


def test_a_resume_of_a_client_that_leaves_meanwhile_ends_quietly(gateway, dev_issuer):
    for number in range(1, 4):
        publish("news", number)
    ws = native(gateway, dev_issuer.mint("frank"))
    ws.send(json.dumps({"action": "subscribe", "channel": "news", "after": 0}))
    ws.close()
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=1)
    deadline = time.monotonic() + 5
    while gateway.connection_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.connection_ids() == []
