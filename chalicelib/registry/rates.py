"""The client-event rate window: how many client events a connection sent in the current second,
shared by every Lambda invocation (and every transport) that handles the connection.

Item: table key (``<connection_id>``, ``rate#client-event#<epoch second>``), attribute
``events`` (a number), ``expires_at`` = the second + :data:`RATE_ITEM_TTL_SECONDS`; not in the
index. It lives in the connection's partition, so it goes with the connection.
"""
from __future__ import annotations

import time
from typing import Optional

from chalicelib.registry import table
from chalicelib.registry.table import TTL_ATTRIBUTE

RATE_SK_PREFIX = "rate#"
#: a rate window item expires this long after its second, seconds
RATE_ITEM_TTL_SECONDS = 60


# --- client event rate limit ------------------------------------------------------------------

def allow_client_event(connection_id: str, limit: int, *, now: Optional[float] = None) -> bool:
    """Count one client event of a connection against ``limit`` per second; shared by every
    Lambda invocation (and every transport) that handles the connection.

    One conditional UpdateItem on a window item ``(connection_id, "rate#client-event#<epoch
    second>")``: ``ADD events 1`` only while ``events < limit``. The item lives in the
    connection's partition (removed with it) and expires through the table's TTL a minute
    after its second. Fixed one-second windows, like Pusher's "10 messages per second".

    Args:
        connection_id: the sending connection.
        limit: events allowed per second (``CLIENT_EVENT_RATE_LIMIT``), at least 1.
        now: epoch seconds (defaults to the clock).
    Returns:
        True when the event may go out, False when the connection is over its limit.
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    second = int(time.time() if now is None else now)
    answer = table.conditional(
        "update_item", TableName=table.name(),
        Key={"connection_id": table.s(connection_id),
             "sk": table.s(f"{RATE_SK_PREFIX}client-event#{second}")},
        UpdateExpression="ADD #events :one SET #ttl = :expires",
        ConditionExpression="attribute_not_exists(#events) OR #events < :limit",
        ExpressionAttributeNames={"#events": "events", "#ttl": TTL_ATTRIBUTE},
        ExpressionAttributeValues={":one": table.n(1), ":limit": table.n(limit),
                                   ":expires": table.n(second + RATE_ITEM_TTL_SECONDS)})
    return "refused" not in answer
