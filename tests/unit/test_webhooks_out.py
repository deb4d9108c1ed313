"""Webhooks out (issue 10 D, first slice): ``channel_occupied`` and ``channel_vacated`` from the
registry's channel occupancy bookkeeping, dispatched to the app's own handlers
(chalicelib/delivery/webhooks.py), against a moto registry."""
from __future__ import annotations

import pytest

from chalicelib.delivery import webhooks, webhooks_out
from chalicelib.registry import connections, subscriptions
from chalicelib.auth.principal import Principal
from tests.support.websocket import aws_env, registry  # noqa: F401

ALICE = Principal(sub="alice", issuer="https://issuer.example")
BOB = Principal(sub="bob", issuer="https://issuer.example")


@pytest.fixture
def seen(registry, monkeypatch):
    """Events the app's handlers receive (handlers registered on a fresh HANDLERS)."""
    handlers = webhooks.WebhookHandlers()
    monkeypatch.setattr(webhooks, "HANDLERS", handlers)
    events = []
    for name in ("channel_occupied", "channel_vacated"):
        handlers.register(name, lambda event, time_ms: events.append(dict(event)))
    return events


def subscribed(connection_id, principal, channel):
    connection = connections.register(connection_id, principal)
    subscriptions.subscribe(connection, channel)


def test_first_subscriber_occupies_and_last_one_vacates(seen):
    subscribed("a=", ALICE, "news")
    assert seen == [{"name": "channel_occupied", "channel": "news"}]
    subscribed("b=", BOB, "news")
    connections.remove_connection("a=")
    assert len(seen) == 1  # neither the second subscriber nor the first leaving change it
    subscriptions.unsubscribe("b=", "news")
    assert seen[1:] == [{"name": "channel_vacated", "channel": "news"}]


def test_a_vacated_channel_is_occupied_again(seen):
    subscribed("a=", ALICE, "news")
    connections.remove_connection("a=")
    subscribed("b=", BOB, "news")
    assert [event["name"] for event in seen] == ["channel_occupied", "channel_vacated",
                                                 "channel_occupied"]


def test_a_failing_handler_never_breaks_a_subscription(registry, monkeypatch):
    handlers = webhooks.WebhookHandlers()
    monkeypatch.setattr(webhooks, "HANDLERS", handlers)

    def broken(event, time_ms):
        raise RuntimeError("handler bug")

    handlers.register("channel_occupied", broken)
    subscribed("a=", ALICE, "news")
    assert subscriptions.subscribers_of_channel("news") == ["a="]


def test_events_carry_the_time_in_milliseconds(seen, monkeypatch):
    times = []
    webhooks.HANDLERS.register("channel_occupied", lambda event, time_ms: times.append(time_ms))
    monkeypatch.setattr(webhooks_out.time, "time", lambda: 1700000000.25)
    subscribed("a=", ALICE, "news")
    assert times == [1700000000250]
