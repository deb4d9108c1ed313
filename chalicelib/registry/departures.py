"""Departures: where a user's Pusher connection left a channel without unsubscribing (closed,
410 Gone, API Gateway's 2-hour cap), so a connection of the same user that subscribes to it again
within the history window gets, once, the events the old one never got
(:mod:`chalicelib.dialects.pusher.resume`). Stock pusher-js sends no id of its own: the server
remembers it.

Items, none in the index:

* departure: table key (``left#<user id>``, ``<channel>#<connection id>``); ``after`` (N: the
  last id of the channel the old connection is taken to have received), ``expires_at`` = the
  departure + the history window. Written when the connection is removed, with the channel's
  head at that moment;
* gone note: table key (``gone#<connection id>``, ``<channel>``); ``after`` (N: one less than
  the first event a post of which came back 410 Gone), ``expires_at`` likewise. Written by the
  fan-out that saw the 410, before it removes the connection: events published between the
  socket's close and its removal were posted to a dead socket, and this note lowers the
  departure's ``after`` to before them.

Both keep the smallest ``after`` written (a conditional UpdateItem), so the order in which
concurrent fan-outs and the removal write does not matter.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

from chalicelib.registry import table
from chalicelib.registry.table import TTL_ATTRIBUTE

DEPARTURE_PREFIX = "left#"
GONE_PREFIX = "gone#"
#: the "channel" of a user's own events (``send_to_user``: ``#server-to-user-<id>`` in Pusher's
#: frames) in departure items; no channel name can start with ``#``
USER_EVENTS = "#user"
#: the "connection" of a departure noted for events sent while the user had none (held)
HELD = "held"


def _keep_min(key: Dict[str, Dict[str, str]], after: int, window_seconds: int,
              now: Optional[float]) -> None:
    current = time.time() if now is None else now
    table.conditional(
        "update_item", TableName=table.name(), Key=key,
        UpdateExpression="SET #after = :a, #ttl = :e, left_at = if_not_exists(left_at, :t)",
        ConditionExpression="attribute_not_exists(#after) OR #after > :a",
        ExpressionAttributeNames={"#after": "after", "#ttl": TTL_ATTRIBUTE},
        ExpressionAttributeValues={":a": table.n(after), ":t": {"N": f"{current:.3f}"},
                                   ":e": table.n(current + window_seconds)})


def record_departure(user_id: str, channel_name: str, connection_id: str, after: int, *,
                     window_seconds: int, now: Optional[float] = None) -> None:
    """Remember that ``connection_id`` of ``user_id`` left ``channel_name`` having received the
    channel's events up to ``after`` (one conditional UpdateItem; the smaller ``after`` stays).

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    _keep_min({"connection_id": table.s(DEPARTURE_PREFIX + user_id),
               "sk": table.s(f"{channel_name}#{connection_id}")}, after, window_seconds, now)


def hold(user_id: str, event_id: int, *, window_seconds: int,
         now: Optional[float] = None) -> None:
    """Event ``event_id`` to ``user_id`` found no live connection: hold it (and what follows)
    for the user's next sign-in, once: a departure of the pseudo-connection :data:`HELD` from
    :data:`USER_EVENTS` (one conditional UpdateItem; the earliest held event stays).

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    record_departure(user_id, USER_EVENTS, HELD, event_id - 1, window_seconds=window_seconds,
                     now=now)


def note_gone(connection_id: str, channel_name: str, event_id: int, *, window_seconds: int,
              now: Optional[float] = None) -> None:
    """A post of event ``event_id`` of ``channel_name`` to ``connection_id`` came back 410
    Gone: the connection got at most the events before it (one conditional UpdateItem).

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    _keep_min({"connection_id": table.s(GONE_PREFIX + connection_id),
               "sk": table.s(channel_name)}, event_id - 1, window_seconds, now)


def _gone_after(connection_id: str, channel_name: str) -> Optional[int]:
    note = table.item(GONE_PREFIX + connection_id, channel_name)
    return int(note["after"]["N"]) if "after" in note else None


def take(user_id: str, channel_name: str, connection_id: str, *,
         now: Optional[float] = None) -> Optional[Tuple[str, int]]:
    """Claim a departure of ``user_id`` from ``channel_name`` for ``connection_id`` (its new
    connection): the one recorded last (its ``left_at``), not expired and not of
    ``connection_id`` itself. The user's other departures from the channel are claimed with it:
    one recorded late (a removal that came after the user's next connection had already taken
    over) would otherwise replay, at a later reconnect, events that connection got live. So two
    connections of a user that leave one channel at the same moment: the first to come back
    gets the replay. One consistent Query of the user's departures on the channel, one
    conditional DeleteItem each (two new connections never claim the same departure), one
    Query of the chosen one's gone note.

    Returns:
        ``(old connection id, after)``: replay the channel's events after ``after``; or None.
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    current = time.time() if now is None else now
    prefix = f"{channel_name}#"
    items = table.query_all(
        TableName=table.name(), ConsistentRead=True,
        KeyConditionExpression="connection_id = :u AND begins_with(sk, :p)",
        ExpressionAttributeValues={":u": table.s(DEPARTURE_PREFIX + user_id),
                                   ":p": table.s(prefix)})
    found: List[Tuple[float, int, str, Dict[str, Dict[str, str]]]] = []
    for item in items:
        old = item["sk"]["S"][len(prefix):]
        if old == connection_id or "#" in old or "after" not in item \
                or int(item.get(TTL_ATTRIBUTE, {}).get("N", "0")) <= current:
            continue  # another channel whose name continues with "#...", or expired
        found.append((float(item.get("left_at", {}).get("N", "0")), int(item["after"]["N"]),
                      old, {"connection_id": item["connection_id"], "sk": item["sk"]}))
    claimed: Optional[Tuple[str, int]] = None
    for _, after, old, key in sorted(found, reverse=True):  # the last recorded first
        answer = table.conditional("delete_item", TableName=table.name(), Key=key,
                                   ConditionExpression="attribute_exists(sk)")
        if "refused" in answer or claimed is not None:
            continue  # claimed by another connection meanwhile; or an older one, dropped
        gone = _gone_after(old, channel_name)
        claimed = (old, min(after, gone) if gone is not None else after)
    return claimed
