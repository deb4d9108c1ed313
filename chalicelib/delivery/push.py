"""The push engine: one frame to a user, a channel or a connection, encoded once per dialect,
and the notification shape shared by ``POST /notifications`` and the SQS worker.

An audience comes from the registry (:mod:`chalicelib.registry.subscriptions`, grouped by
dialect); each group's frame is encoded once (:func:`encode_for`) and posted by
:mod:`chalicelib.delivery.post`. An audience of more than ``PUSH_SHARD_THRESHOLD`` connections
is sharded onto the push queue instead (:mod:`chalicelib.delivery.shards`). Cache channels keep
their last event (:mod:`chalicelib.registry.cache`). Every function answers a delivery summary
(:mod:`chalicelib.delivery.summary`).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from chalicelib import channels, jsonutil, observability
from chalicelib.auth.principal import validate_user_id
from chalicelib.delivery import post, shards
from chalicelib.delivery.sender import FAILED
from chalicelib.delivery.summary import Summary, merge
from chalicelib.errors import AppError, BadRequest, PayloadTooLarge
from chalicelib.protocol import pusher as pusher_protocol
from chalicelib.registry import cache, connections, departures, gates, history, subscriptions
from chalicelib.settings import history_settings, websocket_settings

log = logging.getLogger("realtime.push")

def encode_for(dialect: str, frame: Any) -> bytes:
    """The bytes posted for ``frame`` to a connection of ``dialect``: one push engine for
    every dialect.

    Args:
        dialect: ``connections.NATIVE`` (the frame as it is, :func:`encode_frame`) or
            ``connections.PUSHER``: a native event frame ``{"type": "event", "event",
            "channel"?, "data", "user_id"?}`` becomes Pusher's ``{"event", "channel"?,
            "data": <JSON string>, "user_id"?}``
            (:func:`chalicelib.protocol.pusher.event_frame`); text and bytes go as they are.
        frame: see :func:`encode_frame`.
    Raises:
        PayloadTooLarge: the encoded frame is over 128 KB.
    """
    if dialect == connections.PUSHER and isinstance(frame, Mapping) \
            and frame.get("type") == "event":
        frame = pusher_protocol.event_frame(frame.get("event"), frame.get("data"),
                                            frame.get("channel"), frame.get("user_id"))
    return post.encode_frame(frame)


def send_by_dialect(groups: Mapping[str, Iterable[str]], frame: Any, *,
                    event: Any = None, frames: Optional[Mapping[str, Any]] = None,
                    gone_note: Optional[post.GoneNote] = None) -> Summary:
    """Post one frame to connections grouped by dialect, each group's frame encoded once
    (:func:`encode_for`).

    A group whose encoding is over 128 KB (a Pusher frame carries ``data`` as an escaped
    string, so it can outgrow the native one) counts as ``failed`` (not retryable) and is
    logged; the other groups are still sent.

    Args:
        groups: ``{dialect: connection ids}``
            (:func:`chalicelib.registry.subscriptions.subscribers_by_dialect`).
        frames: ``{dialect: frame}`` used instead of ``frame`` for those dialects.
    Returns:
        the delivery summary of all groups.
    Raises:
        ConfigError: no management endpoint is configured.
    """
    summaries = []
    for dialect, ids in groups.items():
        ids = list(ids)
        if not ids:
            continue
        try:
            data = encode_for(dialect, (frames or {}).get(dialect, frame))
        except PayloadTooLarge as err:
            log.warning("%d %s connections not sent a frame: %s", len(ids), dialect, err)
            summaries.append({FAILED: len(ids)})
            continue
        summaries.append(post.send_to_connections(ids, data, event=event, gone_note=gone_note))
    return merge(*summaries)


def send_to_user(user_id: str, frame: Any, *, event: Any = None,
                 exclude: Optional[str] = None) -> Summary:
    """Post one frame to every live connection of a user (one registry Query, then fan-out),
    encoded for each connection's dialect. An event frame is first kept in the user's history
    (:func:`record`), so native frames carry its ``id``.

    Args:
        exclude: a connection id left out (Pusher's ``socket_id`` exclusion).
    Raises:
        PayloadTooLarge: checked before the registry is read.
        RegistryUnavailable: the registry could not be read or written.
        ConfigError: no management endpoint is configured.
    """
    post.encode_frame(frame)
    frame, groups, frames = _to_user(user_id, frame)
    return send_by_dialect({dialect: [cid for cid in ids if cid != exclude]
                            for dialect, ids in groups.items()}, frame,
                           event=event, frames=frames)


def record(stream: str, frame: Any, kept: bool) -> Tuple[Any, Optional[int]]:
    """Keep an event frame in its stream's history when the stream keeps history, before any
    audience is read.

    Args:
        stream: :func:`chalicelib.registry.history.channel_stream` or ``user_stream``.
        frame: the frame to publish; only event frames (``{"type": "event", ...}``) are kept.
        kept: whether the stream keeps history
            (:class:`chalicelib.settings.HistorySettings`).
    Returns:
        ``(frame, id)``: the frame with its ``id`` added (native frames carry it; the Pusher
        form leaves it out, as stock clients parse), or the frame unchanged and None.
    Raises:
        RegistryUnavailable: the history could not be written (nothing was delivered).
    """
    if not (kept and isinstance(frame, Mapping) and frame.get("type") == "event"):
        return frame, None
    event_id = history.record(stream, frame.get("event"), frame.get("data"),
                              window_seconds=history_settings().window_seconds,
                              channel=frame.get("channel"), user_id=frame.get("user_id"))
    return {**frame, "id": event_id}, event_id


def _to_user(user_id: str, frame: Any) -> Tuple[Any, Dict[str, List[str]], Dict[str, Any]]:
    """An event to a user, recorded in the user's history: ``(frame with its id, {dialect:
    connection ids that get it live}, {dialect: frame} overrides)``; held when the user has
    no live connection (:func:`_hold_if_offline`)."""
    frame, event_id = record(history.user_stream(user_id), frame,
                             history_settings().keeps_users())
    groups, live = user_audience(user_id, event_id)
    _hold_if_offline(user_id, event_id, live)
    return frame, groups, _user_frames(user_id, frame)


def _to_channel(channel_name: str, frame: Any
                ) -> Tuple[Any, Dict[str, List[str]], Optional[post.GoneNote]]:
    """An event to a channel, recorded in the channel's history: ``(frame with its id,
    {dialect: subscribers that get it live}, the gone note of its posts)``."""
    frame, event_id = record(history.channel_stream(channel_name), frame,
                             history_settings().keeps_channel(channel_name))
    note = (channel_name, event_id) if event_id is not None else None
    return frame, channel_audience(channel_name, event_id), note


def _gated(entries, event_id: Optional[int], recheck) -> Dict[str, List[str]]:
    """``{dialect: [connection id, ...]}`` of the ``(connection id, dialect, gate)`` entries
    that get event ``event_id`` live (:func:`chalicelib.registry.gates.takes`); entries the
    index shows waiting are read again consistently (``recheck(ids)``)."""
    groups: Dict[str, List[str]] = {}
    waiting: List[str] = []
    for connection_id, dialect, gate in entries:
        if gate == gates.GATE_WAIT and event_id is not None:
            waiting.append(connection_id)
        elif gates.takes(gate, event_id):
            groups.setdefault(dialect, []).append(connection_id)
    if waiting:
        for connection_id, (dialect, gate) in recheck(waiting).items():
            if gates.takes(gate, event_id):
                groups.setdefault(dialect, []).append(connection_id)
    return groups


def channel_audience(channel_name: str, event_id: Optional[int]) -> Dict[str, List[str]]:
    """``{dialect: [connection id, ...]}``: the subscribers of a channel that get event
    ``event_id`` live. A subscription resuming the channel (its gate,
    :mod:`chalicelib.registry.gates`) gets only events after the id its replay reached; while
    it waits it gets none (its replay sends them).

    Raises:
        RegistryUnavailable: the registry could not be read.
    """
    if event_id is None:
        return subscriptions.subscribers_by_dialect(channel_name)
    return _gated(subscriptions.subscribers_with_gates(channel_name), event_id,
                  lambda ids: subscriptions.gates_of(ids, channel_name))


def user_audience(user_id: str, event_id: Optional[int]) -> Tuple[Dict[str, List[str]], int]:
    """``({dialect: [connection id, ...]}, live connections)``: a user's connections that get
    event ``event_id`` live (a signed-in Pusher connection resuming the user's events waits
    behind its gate, as :func:`channel_audience`), and how many live connections the user has,
    gated ones included.

    Raises:
        RegistryUnavailable: the registry could not be read.
    """
    entries = subscriptions.connections_of_user_with_gates(user_id)
    return _gated(entries, event_id, connections.user_gates_of), len(entries)


def _hold_if_offline(user_id: str, event_id: Optional[int], live: int) -> None:
    """An event to a user with no live connection is held: its id is noted so the user's next
    Pusher sign-in gets it (and what followed) once
    (:func:`chalicelib.registry.departures.hold`). A failure is logged."""
    if live or event_id is None:
        return
    try:
        departures.hold(user_id, event_id, window_seconds=history_settings().window_seconds)
    except AppError as err:
        log.warning("a held event of a user not noted: %s", err.code)


def _user_frames(user_id: str, frame: Any) -> Dict[str, Any]:
    """``{dialect: frame}`` overrides for a push to a user: Pusher clients get a user event on
    Pusher's user channel, whose events pusher-js hands to ``pusher.user.bind`` (pusher-js
    src/core/user.ts; Pusher docs, "User authentication": send_to_user)."""
    if isinstance(frame, Mapping) and frame.get("type") == "event" and "channel" not in frame:
        return {connections.PUSHER: {**frame,
                                     "channel": pusher_protocol.USER_CHANNEL_PREFIX + user_id}}
    return {}


def _remember_cache(channel_name: str, frame: Any) -> None:
    """Keep the event of a cache channel 30 min for new subscribers (Pusher docs, "Cache
    channels"). Only for events the server publishes (HTTP API, ``POST /notifications``, the
    queue, a native ``publish`` with ``notifications:send``): a client event never sets the
    cache, as in soketi, which caches only what its HTTP API triggers."""
    if channels.is_cache_channel(channel_name) and isinstance(frame, Mapping) \
            and frame.get("type") == "event":
        cache.cache_put(channel_name, frame.get("event"), frame.get("data"))


@observability.timed_fanout
def publish_to_channel(channel_name: str, frame: Any, *, event: Any = None,
                       exclude: Optional[str] = None, server_event: bool = False) -> Summary:
    """Post one frame to every live subscriber of a channel (one registry Query, then
    fan-out), encoded for each subscriber's dialect. The channel name is not judged here:
    callers authorize first.

    Args:
        exclude: a connection id left out (the sender of a client event, which Pusher never
            echoes: Pusher docs, "Events" -> "Triggering client events").
        server_event: True for an event the server publishes (the HTTP API): on a cache
            channel it becomes the channel's cached event. False (client events) leaves the
            cache alone: any member could otherwise set what every later subscriber is given
            as the channel's state.

    Raises:
        PayloadTooLarge: checked before the registry is read.
        RegistryUnavailable: the registry could not be read.
        ConfigError: no management endpoint is configured.
    """
    post.encode_frame(frame)
    if server_event:
        _remember_cache(channel_name, frame)
    frame, groups, note = _to_channel(channel_name, frame)
    return send_by_dialect({dialect: [cid for cid in ids if cid != exclude]
                            for dialect, ids in groups.items()}, frame, event=event,
                           gone_note=note)


# --- notifications: the message shape shared by POST /notifications and the SQS worker --------

#: longest event name, characters (Pusher's limit for event names, "Events" docs)
MAX_EVENT_NAME_LENGTH = 200
TARGETS = ("connection_id", "user_id", "channel")


class Notification:
    """One message to deliver: ``{"<target>": ..., "event": str, "data": any JSON}``.

    Attributes:
        target: ``"connection_id"``, ``"user_id"`` or ``"channel"``.
        address: the connection id, user id or channel name.
        event: the event name (1-200 characters).
        data: any JSON value (None when absent).
    """

    __slots__ = ("target", "address", "event", "data")

    def __init__(self, target: str, address: str, event: str, data: Any) -> None:
        self.target, self.address, self.event, self.data = target, address, event, data

    def frame(self) -> Dict[str, Any]:
        """The frame subscribers receive: ``{"type": "event", "channel"?, "event", "data"}``
        (``channel`` only for channel messages)."""
        frame: Dict[str, Any] = {"type": "event"}
        if self.target == "channel":
            frame["channel"] = self.address
        frame.update(event=self.event, data=self.data)
        return frame


def is_encrypted_payload(data: Any) -> bool:
    """True for the data of an end-to-end encrypted event as Pusher's server libraries make it
    (``pusher.crypto.encrypt``: ``{"nonce": base64, "ciphertext": base64}``, as an object or
    its JSON text; Pusher docs, "End-to-end encryption"). Such data is relayed as it is: only
    the clients hold the channel's key."""
    if isinstance(data, str):
        try:
            data = jsonutil.loads(data)
        except jsonutil.JSONRejected:
            return False
    return isinstance(data, dict) and set(data) == {"nonce", "ciphertext"} \
        and all(isinstance(v, str) and v for v in data.values())


def validate_event_name(name: Any) -> str:
    """An event name: a non-empty string of at most :data:`MAX_EVENT_NAME_LENGTH` characters.

    Raises:
        BadRequest: otherwise (the message does not repeat the value).
    """
    if not isinstance(name, str) or not name:
        raise BadRequest('"event" must be a non-empty string')
    if len(name) > MAX_EVENT_NAME_LENGTH:
        raise BadRequest(f'"event" must be at most {MAX_EVENT_NAME_LENGTH} characters')
    return name


def parse_notification(body: Any, targets: Tuple[str, ...] = TARGETS) -> Notification:
    """Validate a notification body.

    Args:
        body: the parsed JSON body.
        targets: the target keys allowed here (``POST /notifications`` allows ``user_id`` and
            ``channel``; the SQS worker also ``connection_id``).
    Returns:
        a :class:`Notification`; channel names are checked with
        :func:`chalicelib.channels.validate_channel_name`, user ids with
        :func:`chalicelib.auth.principal.validate_user_id`.
    Raises:
        BadRequest: not an object, not exactly one target, a bad target value or event name.
    """
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    present = [key for key in targets if key in body]
    if len(present) != 1:
        raise BadRequest("give exactly one of " + ", ".join(f'"{t}"' for t in targets))
    target = present[0]
    address = body[target]
    if target == "channel":
        address = channels.validate_channel_name(address)
        if channels.channel_kind(address) == channels.PRIVATE_ENCRYPTED \
                and not is_encrypted_payload(body.get("data")):
            raise BadRequest("private-encrypted channels take only data a Pusher server "
                             "library encrypted: {\"nonce\", \"ciphertext\"} (base64)")
    elif target == "user_id":  # a user id (chalicelib.auth.principal), within DynamoDB key limits
        address = validate_user_id(address)
    elif not isinstance(address, str) or not address or len(address) > 1024:
        raise BadRequest(f'"{target}" must be a non-empty string of at most 1024 characters')
    return Notification(target, address, validate_event_name(body.get("event")),
                        body.get("data"))


@observability.timed_fanout
def deliver(notification: Notification, *, event: Any = None) -> Summary:
    """Deliver a :class:`Notification` to its connection, user or channel.

    An audience of more than ``PUSH_SHARD_THRESHOLD`` connections is not posted to here: it
    is sharded onto the push queue (:func:`chalicelib.delivery.shards.enqueue`) and delivered by
    the ``push_worker`` invocations.

    Returns:
        the delivery summary; when sharded, nothing is delivered yet and the summary also
        holds ``"queued"`` (connections) and ``"shards"`` (queue messages).
    Raises:
        PayloadTooLarge: the frame is over 128 KB (nothing is sent).
        RegistryUnavailable, ConfigError: as :func:`send_to_user` / :func:`publish_to_channel`.
        chalicelib.delivery.shards.QueueUnavailable: the shards could not be queued (503).
    """
    frame = notification.frame()
    if notification.target == "connection_id":
        post.encode_frame(frame)
        try:
            dialect = connections.dialect_of(notification.address) or connections.NATIVE
        except AppError as err:  # a direct push needs no registry: pusher-js reads the
            # native frame too ({"event", "data"}; it ignores "type"), only data is not a string
            log.warning("dialect of %s unknown (%s); sent as native", notification.address,
                        err.code)
            dialect = connections.NATIVE
        return send_by_dialect({dialect: [notification.address]}, frame, event=event)
    post.encode_frame(frame)
    note = None
    if notification.target == "user_id":
        frame, groups, frames = _to_user(notification.address, frame)
    else:
        _remember_cache(notification.address, frame)
        frame, groups, note = _to_channel(notification.address, frame)
        frames = {}
    if sum(len(ids) for ids in groups.values()) > websocket_settings().push_shard_threshold:
        # one fan-out per dialect, each group's frame encoded once (a shard carries one frame)
        total: Dict[str, int] = {}
        for dialect, ids in groups.items():
            if ids:
                queued = shards.enqueue(ids, encode_for(dialect, frames.get(dialect, frame)))
                for key, value in queued.items():
                    total[key] = total.get(key, 0) + value
        return total
    return send_by_dialect(groups, frame, event=event, frames=frames, gone_note=note)
