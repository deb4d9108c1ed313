"""Departures of a user's Pusher connections (chalicelib.registry.departures) against moto: the
smaller id wins whoever writes first, a departure is claimed once, and only by another
connection of the same user within the window."""
from __future__ import annotations

import time

from chalicelib.registry import departures
from tests.support.websocket import aws_env, registry  # noqa: F401

WINDOW = 120


def test_the_smaller_after_stays_whichever_write_comes_first(registry):
    departures.note_gone("old=", "private-user-u1", 7, window_seconds=WINDOW)  # 410 on id 7
    departures.record_departure("u1", "private-user-u1", "old=", 9, window_seconds=WINDOW)
    departures.record_departure("u1", "private-user-u1", "old=", 12, window_seconds=WINDOW)
    assert departures.take("u1", "private-user-u1", "new=") == ("old=", 6)


def test_the_last_recorded_departure_is_claimed_once_with_the_older_ones(registry):
    now = time.time()
    departures.record_departure("u2", "news", "a=", 3, window_seconds=WINDOW, now=now - 5)
    departures.record_departure("u2", "news", "b=", 8, window_seconds=WINDOW, now=now - 1)
    departures.record_departure("u2", "news-2", "c=", 1, window_seconds=WINDOW)  # not "news"
    # "a=" was recorded before "b=" (a late removal): the connection that came back last left
    # at 8; "a=" goes with it, never to replay 4..8 again at a later reconnect
    assert departures.take("u2", "news", "new1=") == ("b=", 8)
    assert departures.take("u2", "news", "new2=") is None
    assert departures.take("u2", "news-2", "new3=") == ("c=", 1)


def test_held_events_are_claimed_at_the_next_sign_in(registry):
    departures.hold("u4", 5, window_seconds=WINDOW)  # 5 found no connection: held from 4
    departures.hold("u4", 6, window_seconds=WINDOW)
    assert departures.take("u4", departures.USER_EVENTS, "new=") == ("held", 4)
    assert departures.take("u4", departures.USER_EVENTS, "again=") is None


def test_only_another_connection_of_the_same_user_within_the_window(registry):
    departures.record_departure("u3", "news", "x=", 4, window_seconds=WINDOW)
    assert departures.take("someone-else", "news", "y=") is None
    assert departures.take("u3", "news", "x=") is None  # its own departure
    later = time.time() + WINDOW + 1
    assert departures.take("u3", "news", "y=", now=later) is None  # expired
    assert departures.take("u3", "news", "y=") == ("x=", 4)


def test_a_failed_pusher_replay_still_lets_live_events_in(registry, monkeypatch):
    """A replay that fails (here: the registry refuses mid-way) must not leave the resumed
    subscription closed for good: its gate opens at the channel's head, live events flow."""
    from chalicelib.delivery import replay
    from chalicelib.dialects.pusher import resume
    from chalicelib.registry import connections, history, subscriptions

    connection = connections.register("p1=", None, dialect=connections.PUSHER)
    for _ in range(3):
        history.record(history.channel_stream("news"), "e", 1, window_seconds=WINDOW)
    assert subscriptions.subscribe(connection, "news", gated=True)
    assert subscriptions.gates_of(["p1="], "news") == {"p1=": ("pusher", "wait")}

    def broken(*args, **kwargs):
        raise RuntimeError("registry refused mid-way")

    monkeypatch.setattr(replay, "replay", broken)
    resume.replayer(connection, "news", 0, None)()  # never raises
    assert subscriptions.gates_of(["p1="], "news") == {"p1=": ("pusher", 3)}
