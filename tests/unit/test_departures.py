"""Departures of a user's Pusher connections (chalicelib.registry.departures) against moto: the
smaller id wins whoever writes first, a departure is claimed once, and only by another
connection of the same user within the window."""
from __future__ import annotations

import time

from chalicelib.registry import departures
from tests.support.websocket import TABLE, aws_env, registry  # noqa: F401

WINDOW = 120


def test_the_smaller_after_stays_whichever_write_comes_first(registry):
    departures.note_gone("old=", "private-user-u1", 7, window_seconds=WINDOW)  # 410 on id 7
    departures.record_departure("u1", "private-user-u1", "old=", 9, window_seconds=WINDOW)
    departures.record_departure("u1", "private-user-u1", "old=", 12, window_seconds=WINDOW)
    assert departures.take("u1", "private-user-u1", "new=") == ("old=", 6)


def test_a_departure_is_claimed_once_and_the_oldest_first(registry):
    departures.record_departure("u2", "news", "a=", 5, window_seconds=WINDOW)
    departures.record_departure("u2", "news", "b=", 3, window_seconds=WINDOW)
    departures.record_departure("u2", "news-2", "c=", 1, window_seconds=WINDOW)  # not "news"
    assert departures.take("u2", "news", "new1=") == ("b=", 3)
    assert departures.take("u2", "news", "new2=") == ("a=", 5)
    assert departures.take("u2", "news", "new3=") is None
    assert departures.take("u2", "news-2", "new3=") == ("c=", 1)


def test_only_another_connection_of_the_same_user_within_the_window(registry):
    departures.record_departure("u3", "news", "x=", 4, window_seconds=WINDOW)
    assert departures.take("someone-else", "news", "y=") is None
    assert departures.take("u3", "news", "x=") is None  # its own departure
    later = time.time() + WINDOW + 1
    assert departures.take("u3", "news", "y=", now=later) is None  # expired
    assert departures.take("u3", "news", "y=") == ("x=", 4)
