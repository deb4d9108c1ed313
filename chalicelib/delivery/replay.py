"""Replay: a connection that resumes a channel gets, in order and once, the events it missed,
then live events.

The resuming subscription is written closed to live events (its gate waits:
:mod:`chalicelib.registry.subscriptions`), so no live fan-out reaches it meanwhile. Then, in
the subscribing handler's invocation:

1. read the stream's head h (consistent);
2. post the retained events with ``after < id <= h`` to the connection, one by one and in order
   (:mod:`chalicelib.registry.history`; each event item is written before its own fan-out reads
   the audience, so every id up to h is either readable or was never delivered to anyone);
3. open the gate at h in one transaction that also checks the head is still h. If an event came
   meanwhile the check fails: ``after`` becomes h, and steps 1-3 run again.

Every event with an id up to the final h came through the replay; every later one finds the gate
open at h and is delivered live, after the replay's posts have returned. So the connection gets
each event once and in id order (API Gateway keeps the order of posts to one connection that
follow each other).

A resume fails when the client's id is unknown (above the head: the stream started over) or
older than what is kept (the window, or more than ``HISTORY_MAX_EVENTS`` events ago): the
caller tells the client, which refetches, and the replay goes on from the head.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

from chalicelib import observability
from chalicelib.delivery import post
from chalicelib.registry import gates, history, subscriptions
from chalicelib.registry.connections import Connection
from chalicelib.settings import history_settings

log = logging.getLogger("realtime.replay")

#: a replay gives up chasing a channel that publishes faster than it can post after this long,
#: seconds; the gate then opens where the replay is and the rest is reported as not resumed
DEADLINE_SECONDS = 10.0
#: an id up to the head whose event is not readable yet (its publisher is between the two
#: writes) is waited for this long, seconds; then it counts as never published
MISSING_WAIT_SECONDS = 1.0


@dataclass
class ReplayResult:
    """What a replay did.

    Attributes:
        resumed: True when every event after the client's id was replayed (or there were
            none); False when the resume failed (``reason`` says why) and live events start
            after ``head``.
        replayed: how many events were posted.
        head: the id after which live events reach the connection.
        reason: why the resume failed, or None.
    """

    resumed: bool
    replayed: int
    head: int
    reason: Optional[str] = None


def _resumable(stream: str, after: int, head: int) -> Optional[str]:
    """None when the events after ``after`` can all be replayed, else why not."""
    settings = history_settings()
    if after > head:
        return "unknown_id"
    if head - after > settings.max_events:
        return "too_many_missed"
    if head > after:
        first = history.events_after(stream, after, upto=head, limit=1)
        if not first or first[0].id > after + 1:
            return "expired"
    return None


def replay(connection: Connection, channel_name: str, after: int,
           post_event: Callable[[history.StoredEvent], None], *,
           on_failed: Optional[Callable[[str, int], None]] = None,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> ReplayResult:
    """:func:`replay_stream` of a channel: the connection's gated subscription to
    ``channel_name`` opens at the end."""
    stream = history.channel_stream(channel_name)
    return replay_stream(
        stream, after, post_event,
        lambda head: subscriptions.open_gate(connection, channel_name, stream, head),
        on_failed=on_failed, clock=clock, sleep=sleep)


def replay_stream(stream: str, after: int, post_event: Callable[[history.StoredEvent], None],
                  open_gate: Callable[[int], str], *,
                  on_failed: Optional[Callable[[str, int], None]] = None,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> ReplayResult:
    """Replay a gated subscription's missed events, then open its gate (module docstring).

    Args:
        stream: the history stream (:func:`chalicelib.registry.history.channel_stream` or
            ``user_stream``).
        after: the last id the client has (0: it has none).
        post_event: posts one event to the connection (in the connection's dialect); raises
            on failure (the replay stops: the connection is gone or broken).
        open_gate: ``open_gate(head)`` opens the waiting item at ``head``
            (:func:`chalicelib.registry.gates.open_gate`'s answers).
        on_failed: ``(reason, head)`` called once, before any live event, when the resume
            fails; the replay then goes on from ``head``.
    Returns:
        a :class:`ReplayResult`.
    Raises:
        RegistryUnavailable: the registry failed; the gate is still closed, and the caller
            unsubscribes and answers an error (native) or opens it at the head anyway
            (:func:`chalicelib.dialects.pusher.resume.open_anyway`).
        ConnectionLost: ``post_event`` could not deliver (from :func:`poster`).
    """
    started = clock()
    head = history.head(stream)
    reason = _resumable(stream, after, head)
    if reason is not None:
        after = head
        if on_failed is not None:
            on_failed(reason, head)
    replayed = 0
    while True:
        replayed += _post_range(stream, after, head, post_event, clock, sleep)
        answer = open_gate(head)
        if answer == gates.GONE:
            return ReplayResult(resumed=False, replayed=replayed, head=head, reason="gone")
        if answer == gates.GATE_OPEN:
            break
        after, head = head, history.head(stream)
        if clock() - started > DEADLINE_SECONDS:
            # the channel outruns the replay: open at the newest head, report the rest lost
            reason = reason or "too_busy"
            if on_failed is not None:
                on_failed(reason, head)
            while open_gate(head) == gates.HEAD_MOVED:
                head = history.head(stream)
            break
    observability.count("EventsReplayed", replayed)
    if reason is not None:
        observability.count("ResumesFailed", dimension=reason)
    return ReplayResult(resumed=reason is None, replayed=replayed, head=head, reason=reason)


def _post_range(stream: str, after: int, head: int,
                post_event: Callable[[history.StoredEvent], None],
                clock: Callable[[], float], sleep: Callable[[float], None]) -> int:
    """Post the events ``after < id <= head`` in order; returns how many were posted."""
    posted = 0
    waited_since: Optional[float] = None
    while after < head:
        events: List[history.StoredEvent] = history.events_after(stream, after, upto=head)
        if not events or events[0].id != after + 1:
            # the next id is not readable yet: its publisher is between its two writes, or
            # failed there (then it was delivered to nobody)
            if waited_since is None:
                waited_since = clock()
            if clock() - waited_since < MISSING_WAIT_SECONDS:
                sleep(0.02)
                continue
            log.warning("%s: event %d never appeared; skipped", stream, after + 1)
            after = events[0].id - 1 if events else head
            waited_since = None
            continue
        waited_since = None
        for stored in events:
            if stored.id != after + 1:
                break  # a hole: fetched again from there
            post_event(stored)
            posted += 1
            after = stored.id
    return posted


class ConnectionLost(Exception):
    """A replayed event could not be posted (the connection is gone or failing): the replay
    stops."""


def poster(connection_id: str, encode: Callable[[history.StoredEvent], Any],
           event: Any = None) -> Callable[[history.StoredEvent], None]:
    """A ``post_event`` for :func:`replay_stream`: posts ``encode(stored)`` to the connection
    (:func:`chalicelib.delivery.post.send_to_connection`) and raises :class:`ConnectionLost`
    when it was not delivered."""
    def post_event(stored: history.StoredEvent) -> None:
        if not post.send_to_connection(connection_id, encode(stored),
                                       event=event).get("delivered"):
            raise ConnectionLost(connection_id)

    return post_event


def frame_of(stored: history.StoredEvent) -> Any:
    """The native event frame of a retained event (what its live fan-out posted)."""
    frame = {"type": "event"}
    if stored.channel is not None:
        frame["channel"] = stored.channel
    frame.update(event=stored.event, data=stored.data)
    if stored.user_id is not None:
        frame["user_id"] = stored.user_id
    frame["id"] = stored.id
    return frame
