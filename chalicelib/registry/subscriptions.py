"""Channel subscriptions and the audiences fan-out reads.

Subscription item: table key (``<connection_id>``, ``channel#<channel_name>``); index key
(``audience`` = ``channel#<channel_name>``, ``connection_id``); attributes ``channel``,
``subscribed_at``, ``user_id`` (when the connection has one), ``dialect`` (when not native),
``member_user_id`` (a presence member joined through the Pusher dialect) and ``expires_at``
(the connection's). The connection item's ``subscribed_channels`` set holds the cap.

Audiences: every connection of a user is one Query on ``audience-index`` with
``audience = user#<user_id>``; every subscriber of a channel one Query with
``audience = channel#<name>`` (the dialect is projected, so a push is encoded once per
dialect without a read).
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

from chalicelib.errors import AppError, Unauthorized
from chalicelib.registry import gates, occupancy, table
from chalicelib.registry.connections import NATIVE, Connection
from chalicelib.registry.table import (CHANNEL_AUDIENCE_PREFIX, CHANNEL_SK_PREFIX, CONNECTION_SK,
                                       INDEX_NAME, TTL_ATTRIBUTE, USER_AUDIENCE_PREFIX)

#: subscriptions one connection may hold (each costs one item and one index entry)
MAX_SUBSCRIPTIONS_PER_CONNECTION = 100
#: the connection item's string set of subscribed channel names (the cap's atomic count)
CHANNELS_ATTRIBUTE = "subscribed_channels"


class SubscriptionLimit(AppError):
    """A connection asked for more than :data:`MAX_SUBSCRIPTIONS_PER_CONNECTION` channels
    (400)."""

    status = 400
    code = "subscription_limit"
    public_message = "Too many subscriptions"
    expose_message = True


# --- subscriptions ----------------------------------------------------------------------------

def subscribe(connection: Connection, channel_name: str, *,
              member_user_id: Optional[str] = None, gated: bool = False) -> bool:
    """Subscribe a registered connection to a channel; idempotent, and the cap of
    :data:`MAX_SUBSCRIPTIONS_PER_CONNECTION` holds under concurrency.

    API Gateway runs ``$default`` invocations of one connection concurrently, so the cap cannot
    rest on a count read earlier. The connection item keeps the set of its channel names
    (``subscribed_channels``, a string set), and one conditional UpdateItem — which DynamoDB
    applies atomically (Developer Guide, "Condition expressions") — adds the name only while the
    set holds fewer than the cap or already holds the name:

    1. UpdateItem on the connection item: ``ADD subscribed_channels {name}`` if the item exists
       and (``size(subscribed_channels) < cap`` or the name is in it); else
       :class:`SubscriptionLimit` (or ``Unauthorized`` when the connection item is gone);
    2. PutItem of the subscription item (what fan-out queries).

    Adding to a set is idempotent, so a duplicate subscribe, a concurrent one and an SDK retry
    of a write that did land all count once (a counter would count a retried write twice).

    The subscription expires with its connection (same ``expires_at``).

    Args:
        connection: from :func:`get_connection` (its ``channels`` answer a repeated subscribe
            without a write).
        channel_name: an already authorized channel name.
        member_user_id: on a presence channel joined through the Pusher dialect, the member's
            user id (from the signed ``channel_data``), kept as ``member_user_id`` so leaving
            finds the member (:func:`presence_leave`).
        gated: a new subscription starts closed to live events (:data:`GATE_WAIT`): the
            caller replays what the connection missed, then opens it with :func:`open_gate`.
    Returns:
        True when the subscription is new, False when it already existed.
    Raises:
        SubscriptionLimit: the connection already holds the maximum.
        Unauthorized: the connection is no longer registered.
        RegistryUnavailable: DynamoDB failed.
    """
    if channel_name in connection.channels and member_user_id is None:
        return False
    if channel_name not in connection.channels \
            and len(connection.channels) >= MAX_SUBSCRIPTIONS_PER_CONNECTION:
        raise _limit()
    table_name = table.name()
    answer = table.conditional(
        "update_item", TableName=table_name,
        Key={"connection_id": table.s(connection.connection_id), "sk": table.s(CONNECTION_SK)},
        UpdateExpression="ADD #subs :names",
        ConditionExpression="attribute_exists(sk) AND (attribute_not_exists(#subs) "
                            "OR size(#subs) < :cap OR contains(#subs, :name))",
        ExpressionAttributeNames={"#subs": CHANNELS_ATTRIBUTE},
        ExpressionAttributeValues={":names": {"SS": [channel_name]}, ":name": table.s(channel_name),
                                   ":cap": table.n(MAX_SUBSCRIPTIONS_PER_CONNECTION)},
        ReturnValues="UPDATED_OLD", ReturnValuesOnConditionCheckFailure="ALL_OLD")
    if "refused" in answer:
        if not answer["refused"]:
            raise Unauthorized(f"connection {connection.connection_id} is not registered",
                               public_message="Connection not registered; reconnect")
        raise _limit()
    before = answer.get("Attributes", {}).get(CHANNELS_ATTRIBUTE, {}).get("SS", [])
    item = {
        "connection_id": table.s(connection.connection_id),
        "sk": table.s(CHANNEL_SK_PREFIX + channel_name),
        "audience": table.s(CHANNEL_AUDIENCE_PREFIX + channel_name),
        "channel": table.s(channel_name),
        "subscribed_at": table.n(time.time()),
        TTL_ATTRIBUTE: table.n(connection.expires_at),
    }
    if connection.user_id:
        item["user_id"] = table.s(connection.user_id)
    if gated and channel_name not in before:
        item["dialect"] = table.s(gates.gate_field(connection.dialect, gates.GATE_WAIT))
    elif connection.dialect != NATIVE:
        item["dialect"] = table.s(connection.dialect)
    if member_user_id is not None:
        item["member_user_id"] = table.s(member_user_id)
    table.call("put_item", TableName=table_name, Item=item)
    if channel_name not in before:
        occupancy.subscription_changed(channel_name, True)  # GET /apps/{id}/channels
    return channel_name not in before


def _limit() -> SubscriptionLimit:
    return SubscriptionLimit(
        f"at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions per connection")


def unsubscribe(connection_id: str, channel_name: str) -> bool:
    """Remove one subscription: DeleteItem of the subscription item, then the name leaves the
    connection's ``subscribed_channels`` set (so its place under the cap is given back exactly
    once, whatever the retries). Idempotent.

    Returns:
        True when a subscription was removed, False when there was none.
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    return bool(unsubscribe_item(connection_id, channel_name))


def unsubscribe_item(connection_id: str, channel_name: str) -> Dict[str, Any]:
    """:func:`unsubscribe`, answering the removed subscription item (DynamoDB's attribute
    map; ``{}`` when there was none), so a presence member can be found.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    response = table.call("delete_item", TableName=table.name(), ReturnValues="ALL_OLD", Key={
        "connection_id": table.s(connection_id), "sk": table.s(CHANNEL_SK_PREFIX + channel_name)})
    table.conditional(
        "update_item", TableName=table.name(),
        Key={"connection_id": table.s(connection_id), "sk": table.s(CONNECTION_SK)},
        UpdateExpression="DELETE #subs :names",
        ConditionExpression="attribute_exists(sk)",  # never re-create a removed connection
        ExpressionAttributeNames={"#subs": CHANNELS_ATTRIBUTE},
        ExpressionAttributeValues={":names": {"SS": [channel_name]}})
    if response.get("Attributes"):
        occupancy.subscription_changed(channel_name, False, connection_id)
    return response.get("Attributes") or {}


# --- audiences --------------------------------------------------------------------------------

def connections_of_user(user_id: str, *, now: Optional[float] = None) -> List[str]:
    """Connection ids of every live connection of a user (one Query on the index, paginated).

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    return _audience(USER_AUDIENCE_PREFIX + user_id, now)


def subscribers_of_channel(channel_name: str, *, now: Optional[float] = None) -> List[str]:
    """Connection ids of every live subscriber of a channel (one Query on the index,
    paginated).

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    return _audience(CHANNEL_AUDIENCE_PREFIX + channel_name, now)


def _audience_items(audience: str, now: Optional[float],
                    projection: str) -> List[Dict[str, Any]]:
    """The live items of an audience (one paginated Query on the index, through the
    unparsed-items client :func:`_audience_client`), each with ``projection``'s attributes."""
    current = int(time.time() if now is None else now)
    return table.query_all(TableName=table.name(), IndexName=INDEX_NAME,
                      KeyConditionExpression="audience = :a",
                      FilterExpression="#ttl > :now",
                      ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
                      ExpressionAttributeValues={":a": table.s(audience), ":now": table.n(current)},
                      ProjectionExpression=projection, _client_factory=table.audience_client)


def _audience(audience: str, now: Optional[float]) -> List[str]:
    return [item["connection_id"]["S"]
            for item in _audience_items(audience, now, "connection_id")]


def subscribers_by_dialect(channel_name: str, *,
                           now: Optional[float] = None) -> Dict[str, List[str]]:
    """Live subscribers of a channel grouped by dialect (one Query on the index, paginated;
    the dialect is projected into it).

    Returns:
        ``{dialect: [connection id, ...]}`` with only the dialects present.
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    return _audience_by_dialect(CHANNEL_AUDIENCE_PREFIX + channel_name, now)


def connections_of_user_by_dialect(user_id: str, *,
                                   now: Optional[float] = None) -> Dict[str, List[str]]:
    """Live connections of a user grouped by dialect (as :func:`subscribers_by_dialect`)."""
    return _audience_by_dialect(USER_AUDIENCE_PREFIX + user_id, now)


def _audience_by_dialect(audience: str, now: Optional[float]) -> Dict[str, List[str]]:
    groups: Dict[str, List[str]] = {}
    for connection_id, dialect, _ in _with_gates(audience, now):
        groups.setdefault(dialect, []).append(connection_id)
    return groups


def member_of(connection_id: str, channel_name: str) -> Optional[str]:
    """The presence member user id a connection joined ``channel_name`` as, or None.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    return table.item(connection_id, CHANNEL_SK_PREFIX + channel_name,
                      projection="member_user_id").get("member_user_id", {}).get("S")


# --- gates (chalicelib.registry.gates) of channel subscriptions ---------------------------------

def subscribers_with_gates(channel_name: str, *, now: Optional[float] = None
                           ) -> List[Tuple[str, str, Any]]:
    """Live subscribers of a channel as ``(connection id, dialect, gate)`` (one Query on the
    index, paginated; the gate as the index shows it, possibly stale).

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    return _with_gates(CHANNEL_AUDIENCE_PREFIX + channel_name, now)


def gates_of(connection_ids: List[str], channel_name: str) -> Dict[str, Tuple[str, Any]]:
    """The current ``(dialect, gate)`` of some connections' subscriptions to a channel, read
    consistently; unsubscribed connections are left out.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    return gates.current([{"connection_id": table.s(cid),
                           "sk": table.s(CHANNEL_SK_PREFIX + channel_name)}
                          for cid in connection_ids], NATIVE)


def open_gate(connection: Connection, channel_name: str, stream: str, head: int) -> str:
    """:func:`chalicelib.registry.gates.open_gate` for a connection's subscription to
    ``channel_name``."""
    return gates.open_gate({"connection_id": table.s(connection.connection_id),
                            "sk": table.s(CHANNEL_SK_PREFIX + channel_name)},
                           connection.dialect, stream, head)


def connections_of_user_with_gates(user_id: str, *, now: Optional[float] = None
                                   ) -> List[Tuple[str, str, Any]]:
    """Live connections of a user as ``(connection id, dialect, gate)``: the gate of a Pusher
    connection that resumed the user's events at sign-in (one Query on the index).

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    return _with_gates(USER_AUDIENCE_PREFIX + user_id, now)


def _with_gates(audience: str, now: Optional[float]) -> List[Tuple[str, str, Any]]:
    return [(item["connection_id"]["S"],
             *gates.parse_gate(item.get("dialect", {}).get("S"), NATIVE))
            for item in _audience_items(audience, now, "connection_id, dialect")]
