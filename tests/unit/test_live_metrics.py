"""The local stack's live figures (issue 12): EMF documents the functions really print,
read back from text lines and added up per second for the demo page's chart."""
from __future__ import annotations

import io
import json
import sys

from chalicelib import observability
from devtools.live_metrics import LiveMetrics, parse_emf


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def printed(app_env, monkeypatch, **figures) -> list:
    """The lines one invocation prints for ``figures`` (``name=value`` or
    ``name=(value, dimension)``)."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    with observability.invocation("f", "r"):
        for name, value in figures.items():
            value, dimension = value if isinstance(value, tuple) else (value, None)
            if name in observability.DISTRIBUTIONS:
                observability.measure(name, value)
            else:
                observability.count(name, value, dimension=dimension)
    monkeypatch.setattr(sys, "stdout", sys.__stdout__)
    return out.getvalue().splitlines()


def test_only_emf_lines_are_taken(app_env, monkeypatch):
    metrics = LiveMetrics()
    lines = printed(app_env, monkeypatch, MessagesDelivered=3)
    assert [metrics.feed_line(line) for line in lines] == [True]
    for other in ('{"level":"INFO","message":"x"}', "realtime.ws - INFO - hello", "",
                  '{"_aws": broken', '{"_aws": {"Timestamp": 1}}', "[1, 2]"):
        assert metrics.feed_line(other) is False
    assert metrics.documents == 1
    assert parse_emf(lines[0])["MessagesDelivered"] == 3


def test_messages_per_second_and_open_connections(app_env, monkeypatch):
    clock = Clock(1_800_000_000.5)
    metrics = LiveMetrics(window=10, clock=clock)
    now_ms = int(clock.now * 1000)

    def feed(offset_s, **figures):
        for line in printed(app_env, monkeypatch, **figures):
            doc = json.loads(line)
            doc["_aws"]["Timestamp"] = now_ms + offset_s * 1000
            assert metrics.feed_line(json.dumps(doc))

    feed(-5, ConnectionsOpened=(2, "native"))
    feed(-4, MessagesDelivered=4, FanoutAudience=4)
    feed(-4, MessagesDelivered=1)
    feed(-2, ConnectionsClosed=(1, "native"), MessagesDelivered=7)
    snap = metrics.snapshot()
    assert snap["seconds"][-1] == int(clock.now) and len(snap["seconds"]) == 10
    assert snap["messages_per_second"][-6:] == [0, 5, 0, 7, 0, 0]
    assert snap["open_connections"][-7:] == [0, 2, 2, 2, 1, 1, 1]
    assert snap["open"] == 1
    assert snap["totals"] == {"ConnectionsClosed": 1, "ConnectionsOpened": 2,
                              "FanoutAudience": 4, "MessagesDelivered": 12}
    clock.now += 30  # the window moves on; the level of open connections stays
    snap = metrics.snapshot()
    assert snap["messages_per_second"] == [0] * 10
    assert snap["open_connections"] == [1] * 10


def test_open_connections_never_go_below_zero(app_env, monkeypatch):
    metrics = LiveMetrics()
    for line in printed(app_env, monkeypatch, ConnectionsClosed=(1, "native")):
        metrics.feed_line(line)
    assert metrics.snapshot()["open"] == 0
