"""Event history: every event published to a channel (or to a user) gets an id, increasing per
stream, and is kept for a short window so a client that reconnects gets what it missed.

A stream is ``channel:<channel_name>`` or ``user:<user_id>``. Items, all in the stream's
partition and none in the index:

* head: table key (``history#<stream>``, ``head``); ``seq`` (N: the last id given out),
  ``expires_at`` = the last publication + :data:`HEAD_TTL_SECONDS` (the ids of a stream idle
  that long start again at 1; a client's older id is then "unknown", and its resume fails
  cleanly, see :func:`replay_range`);
* event: table key (``history#<stream>``, ``e#<id, 20 digits>``); ``event``, ``data`` (JSON
  text), ``channel`` (a channel stream), ``user_id`` (a client event on a presence channel:
  the sender), ``published_at`` (epoch seconds), ``expires_at`` = publication + the window
  (``HISTORY_WINDOW_SECONDS``).

One item per published event, never one per subscriber: a publication costs one UpdateItem (the
id) and one PutItem (the event), whatever its audience. The event item is written before the
audience is read (:mod:`chalicelib.delivery.push`), so whatever a fan-out may miss is already
readable here.

Which channels keep history is a setting (``HISTORY_CHANNEL_PREFIXES``); users' streams follow
``HISTORY_USERS``. Reads are strongly consistent.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from chalicelib.registry import table
from chalicelib.registry.table import TTL_ATTRIBUTE, RegistryUnavailable

PREFIX = "history#"
HEAD_SK = "head"
EVENT_SK_PREFIX = "e#"
#: the head of an idle stream expires this long after its last publication, seconds
HEAD_TTL_SECONDS = 7 * 24 * 3600
#: digits of the zero-padded id in an event's sort key (ids sort as numbers)
ID_DIGITS = 20
#: at most this many events are read per Query page when replaying
PAGE_EVENTS = 100


@dataclass(frozen=True)
class StoredEvent:
    """One retained event.

    Attributes:
        id: its id in the stream (1, 2, ...).
        event: the event name.
        data: the event's data (any JSON value).
        channel: the channel (channel streams), else None.
        user_id: the sender of a client event on a presence channel, else None.
        published_at: epoch seconds.
    """

    id: int
    event: str
    data: Any
    channel: Optional[str] = None
    user_id: Optional[str] = None
    published_at: float = 0.0


def channel_stream(channel_name: str) -> str:
    """The stream name of a channel."""
    return "channel:" + channel_name


def user_stream(user_id: str) -> str:
    """The stream name of a user's events (``send_to_user``, ``POST /notifications`` to a
    user, queue jobs to a user)."""
    return "user:" + user_id


def _pk(stream: str) -> Dict[str, str]:
    return table.s(PREFIX + stream)


def head_key(stream: str) -> Dict[str, Any]:
    """The table key of a stream's head item (for conditions on its ``seq``)."""
    return {"connection_id": _pk(stream), "sk": table.s(HEAD_SK)}


def _event_sk(event_id: int) -> str:
    return f"{EVENT_SK_PREFIX}{int(event_id):0{ID_DIGITS}d}"


def record(stream: str, event: str, data: Any, *, window_seconds: int,
           channel: Optional[str] = None, user_id: Optional[str] = None,
           now: Optional[float] = None) -> int:
    """Give an event the stream's next id and keep it for ``window_seconds``.

    Two requests: UpdateItem ``ADD seq 1`` on the head (the id, atomic under concurrency), then
    PutItem of the event item. Callers read the audience after this returns, so a connection
    the fan-out misses can find the event here.

    Args:
        stream: :func:`channel_stream` or :func:`user_stream`.
        event, data: the event name and its data (JSON-serializable).
        window_seconds: how long the event is kept (seconds, > 0).
        channel, user_id: kept with the event (see :class:`StoredEvent`).
    Returns:
        the event's id.
    Raises:
        RegistryUnavailable: DynamoDB failed (nothing was delivered yet).
    """
    current = time.time() if now is None else now
    answer = table.call(
        "update_item", TableName=table.name(),
        Key={"connection_id": _pk(stream), "sk": table.s(HEAD_SK)},
        UpdateExpression="ADD seq :one SET #ttl = :e",
        ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
        ExpressionAttributeValues={":one": table.n(1),
                                   ":e": table.n(current + HEAD_TTL_SECONDS)},
        ReturnValues="UPDATED_NEW")
    event_id = int(answer["Attributes"]["seq"]["N"])
    item = {"connection_id": _pk(stream), "sk": table.s(_event_sk(event_id)),
            "event": table.s(event),
            "data": table.s(json.dumps(data, separators=(",", ":"), ensure_ascii=False)),
            "published_at": {"N": f"{current:.3f}"},
            TTL_ATTRIBUTE: table.n(current + window_seconds)}
    if channel is not None:
        item["channel"] = table.s(channel)
    if user_id is not None:
        item["user_id"] = table.s(user_id)
    table.call("put_item", TableName=table.name(), Item=item)
    return event_id


def head(stream: str) -> int:
    """The last id given out in a stream (0 when it has none). One consistent Query.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    return int(table.item(PREFIX + stream, HEAD_SK).get("seq", {}).get("N", "0"))


def events_after(stream: str, after: int, *, upto: Optional[int] = None,
                 limit: int = PAGE_EVENTS, now: Optional[float] = None) -> List[StoredEvent]:
    """The retained events of a stream with ``after < id <= upto``, in id order (one consistent
    Query; expired items that DynamoDB has not deleted yet are left out).

    Args:
        after: the last id the caller has (0 for everything retained).
        upto: the highest id wanted (None: no bound).
        limit: at most this many events.
    Raises:
        RegistryUnavailable: DynamoDB failed, or a stored event is unreadable.
    """
    current = time.time() if now is None else now
    low = table.s(_event_sk(after + 1))
    high = table.s(_event_sk(upto) if upto is not None else EVENT_SK_PREFIX + "9" * ID_DIGITS)
    if upto is not None and upto <= after:
        return []
    items = table.call("query", TableName=table.name(), ConsistentRead=True, Limit=limit,
                       KeyConditionExpression="connection_id = :c AND sk BETWEEN :lo AND :hi",
                       ExpressionAttributeValues={":c": _pk(stream), ":lo": low,
                                                  ":hi": high}).get("Items", [])
    found = []
    for item in items:
        if int(item.get(TTL_ATTRIBUTE, {}).get("N", "0")) <= current:
            continue
        try:
            found.append(StoredEvent(
                id=int(item["sk"]["S"][len(EVENT_SK_PREFIX):]), event=item["event"]["S"],
                data=json.loads(item["data"]["S"]), channel=item.get("channel", {}).get("S"),
                user_id=item.get("user_id", {}).get("S"),
                published_at=float(item.get("published_at", {}).get("N", "0"))))
        except (KeyError, ValueError):
            raise RegistryUnavailable("an event of a history stream is unreadable") from None
    return found
