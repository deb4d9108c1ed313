"""Channel occupancy: an item per occupied channel, and the listeners told when a channel becomes
occupied or vacated (webhooks ``channel_occupied``/``channel_vacated``).

Channel occupancy items let GET /apps/{id}/channels list occupied channels without a Scan:
one item per channel with at least one subscription, table key (``#occupancy#<channel>``,
``occupancy``), index key (``audience`` = ``occupancy#<shard>``, ``connection_id`` =
``#occupancy#<channel>``), so a listing is one Query per shard, a ``filter_by_prefix`` a
``begins_with`` on the index's sort key. :data:`OCCUPANCY_SHARDS` spreads the writes of
busy apps over that many index partitions. A subscribe writes (refreshes) the item; when an
unsubscribe or a removed connection leaves the channel without live subscriptions the item
is deleted (conditionally on its version, so a concurrent subscribe keeps it). Readers
check each listed channel with a COUNT Query anyway, so an item left behind (a failure
between two writes) never lists an empty channel; it expires with its TTL.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional

from chalicelib.errors import AppError
from chalicelib.registry import table
from chalicelib.registry.table import CHANNEL_AUDIENCE_PREFIX, INDEX_NAME, TTL_ATTRIBUTE

log = logging.getLogger("realtime.connections")

#: index partitions of the channel occupancy items
OCCUPANCY_SHARDS = 8
OCCUPANCY_PREFIX = "#occupancy#"
OCCUPANCY_SK = "occupancy"
OCCUPANCY_AUDIENCE_PREFIX = "occupancy#"


def _occupancy_key(channel_name: str) -> Dict[str, Any]:
    return {"connection_id": table.s(OCCUPANCY_PREFIX + channel_name), "sk": table.s(OCCUPANCY_SK)}


def occupancy_shard(channel_name: str) -> int:
    """The index shard (0..:data:`OCCUPANCY_SHARDS`-1) of a channel's occupancy item (CRC-32 of
    its UTF-8 name, so every process agrees)."""
    import zlib

    return zlib.crc32(channel_name.encode("utf-8")) % OCCUPANCY_SHARDS


def mark_occupied(channel_name: str, *, now: Optional[float] = None) -> bool:
    """Write (or refresh) a channel's occupancy item: one UpdateItem; its TTL is the latest a
    subscription made now can live (:func:`expires_at_for` of now), its version goes up by one.

    Returns:
        True when the item is new (the channel was not occupied).
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    expires_at = table.expires_at_for(time.time() if now is None else now)
    answer = table.call(
        "update_item", TableName=table.name(), Key=_occupancy_key(channel_name),
        ReturnValues="ALL_OLD",
        UpdateExpression="SET audience = :a, channel = :c, #ttl = :e ADD version :one",
        ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
        ExpressionAttributeValues={
            ":a": table.s(f"{OCCUPANCY_AUDIENCE_PREFIX}{occupancy_shard(channel_name)}"),
            ":c": table.s(channel_name), ":e": table.n(expires_at), ":one": table.n(1)})
    return not answer.get("Attributes")


def vacate_if_empty(channel_name: str, *, ignore: Optional[str] = None,
                    now: Optional[float] = None) -> bool:
    """Delete a channel's occupancy item when no live subscription is left: read its version
    (one Query), look for one live subscriber (a Query of one item), then a DeleteItem on
    condition that the version is unchanged (a subscribe in between keeps the item).

    Args:
        ignore: a connection id whose subscription was just deleted (the index, eventually
            consistent, may still show it for a moment).
    Returns:
        True when the item was deleted.
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    occupied = table.item(OCCUPANCY_PREFIX + channel_name, OCCUPANCY_SK, projection="version")
    if not occupied or has_subscribers(channel_name, ignore=ignore, now=now):
        return False
    answer = table.conditional("delete_item", TableName=table.name(),
                               Key=_occupancy_key(channel_name),
                          ConditionExpression="version = :v",
                          ExpressionAttributeValues={":v": occupied.get("version", table.n(0))})
    return "refused" not in answer


#: ``listener(channel_name, occupied)`` called when a channel becomes occupied (True) or
#: vacated (False) (:mod:`chalicelib.delivery.webhooks_out` adds itself); a listener that raises is
#: logged, never fails the subscription
OCCUPANCY_LISTENERS: List[Any] = []


def subscription_changed(channel_name: str, subscribed: bool,
                       removed: Optional[str] = None) -> None:
    """Keep the occupancy item after a subscription was added or removed, and tell
    :data:`OCCUPANCY_LISTENERS` when the channel became occupied or vacated; a failure is only
    logged (the subscription itself stands; readers verify occupancy with a COUNT)."""
    try:
        changed = (mark_occupied(channel_name) if subscribed
                   else vacate_if_empty(channel_name, ignore=removed))
    except AppError as err:
        log.warning("occupancy of a channel not updated: %s", err.code)
        return
    for listener in (OCCUPANCY_LISTENERS if changed else ()):
        try:
            listener(channel_name, subscribed)
        except Exception:  # a listener's bug must not fail a subscribe or a disconnect
            log.exception("occupancy listener failed")


def has_subscribers(channel_name: str, *, ignore: Optional[str] = None,
                    now: Optional[float] = None) -> bool:
    """Whether a channel has at least one live subscription other than ``ignore``'s (Queries
    of two items on the index, paging only past expired or ignored ones).

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    current = int(time.time() if now is None else now)
    kwargs: Dict[str, Any] = dict(
        TableName=table.name(), IndexName=INDEX_NAME, Limit=2,
        KeyConditionExpression="audience = :a", FilterExpression="#ttl > :now",
        ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
        ExpressionAttributeValues={":a": table.s(CHANNEL_AUDIENCE_PREFIX + channel_name),
                                   ":now": table.n(current)},
        ProjectionExpression="connection_id")
    while True:
        response = table.call("query", **kwargs)
        if any(item["connection_id"]["S"] != ignore for item in response.get("Items", [])):
            return True
        last = response.get("LastEvaluatedKey")
        if not last:
            return False
        kwargs["ExclusiveStartKey"] = last
        kwargs["Limit"] = 25
