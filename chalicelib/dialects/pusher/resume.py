"""Nothing lost across a reconnect, for stock pusher-js: a user's Pusher connection that left a
channel without unsubscribing (closed, 410 Gone, API Gateway's 2-hour cap) is followed by a
connection of the same user subscribing to it again within the history window; the new one
gets, once, in order and before live events, the channel's events the old one never got.

pusher-js sends no event id and knows nothing of this: the server remembers.

* **Who.** A connection belongs to a user when it signed in (``pusher:signin``) or when our
  ``/pusher/auth`` signed a private or presence subscription for it with the user's JWT
  (:func:`chalicelib.registry.connections.bind_user`). Anonymous connections on public
  channels have no user: they get no replay.
* **Where it left.** When such a connection is removed (``$disconnect``, a 410 Gone, TTL), its
  departure from each channel that keeps history is recorded with the channel's head at that
  moment (:func:`record_departures`). A fan-out whose post came back 410 notes the first event
  the connection missed (:func:`chalicelib.registry.departures.note_gone`): the departure
  counts the smaller.
* **Coming back.** At ``pusher:subscribe``, the oldest unclaimed departure of the user from
  the channel is claimed once (:func:`claim`); the subscription is written closed to live
  events, ``pusher_internal:subscription_succeeded`` is answered, the missed events are posted
  in Pusher's frames, and the subscription opens at the last one
  (:func:`chalicelib.delivery.replay.replay`).

Not covered: events posted while the old socket was silently dead (API Gateway still answered
200 to their posts), and a new connection that subscribes before the old one's departure was
recorded (the old one is then still registered: two connections of the same user).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional

from chalicelib.delivery import replay
from chalicelib.errors import AppError
from chalicelib.protocol import pusher as protocol
from chalicelib.registry import connections, departures, gates, history, subscriptions
from chalicelib.registry.table import CHANNEL_SK_PREFIX, CONNECTION_SK
from chalicelib.settings import history_settings

log = logging.getLogger("realtime.pusher")


def _user_of(item: Dict[str, Any]) -> Optional[str]:
    return item.get("user_id", {}).get("S") or item.get("bound_user", {}).get("S")


def record_departures(connection_id: str, items: List[Dict[str, Any]]) -> None:
    """:data:`chalicelib.registry.connections.REMOVAL_HOOKS`: a removed Pusher connection with
    a user leaves a departure on each channel it was subscribed to that keeps history (the
    channel's head read now: one Query and one UpdateItem per channel). Failures are logged."""
    meta = next((item for item in items if item.get("sk", {}).get("S") == CONNECTION_SK), None)
    if meta is None or gates.parse_gate(meta.get("dialect", {}).get("S"),
                                        connections.NATIVE)[0] != connections.PUSHER:
        return
    user = _user_of(meta)
    if not user:
        return
    settings = history_settings()
    names = (item["sk"]["S"][len(CHANNEL_SK_PREFIX):] for item in items
             if item.get("sk", {}).get("S", "").startswith(CHANNEL_SK_PREFIX))
    streams = [(name, history.channel_stream(name)) for name in names
               if settings.keeps_channel(name)]
    if meta.get("user_id") and settings.keeps_users():  # signed in: its #server-to-user- events
        streams.append((departures.USER_EVENTS, history.user_stream(user)))
    for name, stream in streams:
        try:
            departures.record_departure(user, name, connection_id, history.head(stream),
                                        window_seconds=settings.window_seconds)
        except AppError as err:
            log.warning("departure of %s not recorded: %s", connection_id, err.code)


connections.REMOVAL_HOOKS.append(record_departures)


def claim(connection: connections.Connection, name: str) -> Optional[int]:
    """The id after which ``connection`` should get ``name``'s events replayed, claimed once
    from a departure of its user; None when there is none (or no user, no history, or the
    registry failed: then it subscribes as usual)."""
    user = connection.user_id or connection.bound_user
    if not user or not history_settings().keeps_channel(name):
        return None
    try:
        taken = departures.take(user, name, connection.connection_id)
    except AppError as err:
        log.warning("departures of a user on a channel not read: %s", err.code)
        return None
    return taken[1] if taken else None


def replayer(connection: connections.Connection, name: str, after: Optional[int],
             event: Any) -> Optional[Callable[[], None]]:
    """The work to run once ``subscription_succeeded`` is posted: the replay of ``name`` after
    ``after`` to ``connection`` in Pusher's frames, then its gate opened. None when ``after`` is
    None. The callable never raises."""
    if after is None:
        return None
    cid = connection.connection_id

    post_event = replay.poster(cid, lambda stored: protocol.event_frame(
        stored.event, stored.data, stored.channel, stored.user_id), event)

    def failed(reason: str, head: int) -> None:
        log.info("resume of %s by %s failed (%s): live after %d", name, cid, reason, head)

    def run() -> None:
        try:
            result = replay.replay(connection, name, after, post_event, on_failed=failed)
            log.info("resume of %s by %s: %d replayed", name, cid, result.replayed)
        except replay.ConnectionLost:
            log.info("resume of %s stopped: %s is gone", name, cid)
        except Exception:
            log.exception("resume of %s by %s failed", name, cid)
            open_anyway(history.channel_stream(name), lambda head: subscriptions.open_gate(
                connection, name, history.channel_stream(name), head))

    return run


def open_anyway(stream: str, open_gate: Callable[[int], str], attempts: int = 5) -> None:
    """After a failed replay, open the waiting gate at the stream's current head, so live
    events flow again rather than never (what was missed stays missed; logged). Never
    raises."""
    try:
        for _ in range(attempts):
            if open_gate(history.head(stream)) != gates.HEAD_MOVED:
                return
    except Exception:
        log.exception("a gate of %s could not be opened after a failed replay", stream)


# --- a user's own events (#server-to-user-), at sign-in -----------------------------------------

def claim_user(connection_id: str, user_id: str) -> Optional[int]:
    """At ``pusher:signin``: the id after which the user's events are to be replayed to this
    connection, claimed once from a departure of the user's earlier signed-in connection, or
    from events held while the user had no connection
    (:func:`chalicelib.registry.departures.hold`); None when there is none (or on a registry
    failure: then it signs in as usual)."""
    if not history_settings().keeps_users():
        return None
    try:
        taken = departures.take(user_id, departures.USER_EVENTS, connection_id)
    except AppError as err:
        log.warning("departures of a user's events not read: %s", err.code)
        return None
    return taken[1] if taken else None


def user_replayer(connection: connections.Connection, event: Any
                  ) -> Optional[Callable[[], None]]:
    """The work to run once the ``#server-to-user-<id>`` subscription is answered: the user's
    events after ``connection.user_after``, in Pusher's frames on that channel (what pusher-js's
    ``pusher.user.bind`` reads), then the connection's user audience opened. None when the
    connection resumes nothing. The callable never raises."""
    if connection.user_after is None or not connection.user_id:
        return None
    cid, user = connection.connection_id, connection.user_id
    stream = history.user_stream(user)
    channel = protocol.USER_CHANNEL_PREFIX + user

    post_event = replay.poster(cid, lambda stored: protocol.event_frame(
        stored.event, stored.data, channel, None), event)

    def run() -> None:
        try:
            result = replay.replay_stream(
                stream, connection.user_after, post_event,
                lambda head: connections.open_user_gate(connection, stream, head))
            log.info("user events resumed by %s: %d replayed", cid, result.replayed)
        except replay.ConnectionLost:
            log.info("user events resume stopped: %s is gone", cid)
        except Exception:
            log.exception("user events resume of %s failed", cid)
            open_anyway(stream, lambda head: connections.open_user_gate(connection, stream, head))

    return run
