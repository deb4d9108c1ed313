"""Cache channels (Pusher dialect): the last event of each channel, kept 30 minutes.

The last event of a cache channel (``cache-…``, ``private-cache-…``, ``presence-cache-…``,
``private-encrypted-cache-…``; Pusher docs, "Cache channels"): one item (``cache#<channel>``,
``event``) with ``event``, ``data`` (JSON text), ``expires_at`` = publication + 30 minutes
(Pusher keeps it 30 minutes). Not in the index.
"""
from __future__ import annotations

import json
import time
from typing import Any, Optional, Tuple

from chalicelib.registry import table
from chalicelib.registry.table import TTL_ATTRIBUTE, RegistryUnavailable

CACHE_PK_PREFIX = "cache#"
CACHE_TTL_SECONDS = 30 * 60


def cache_put(channel_name: str, event_name: str, data: Any, *,
              now: Optional[float] = None) -> None:
    """Remember the last event of a cache channel (one PutItem).

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    current = int(time.time() if now is None else now)
    table.call("put_item", TableName=table.name(), Item={
        "connection_id": table.s(CACHE_PK_PREFIX + channel_name), "sk": table.s("event"),
        "event": table.s(event_name),
        "data": table.s(json.dumps(data, separators=(",", ":"), ensure_ascii=False)),
        TTL_ATTRIBUTE: table.n(current + CACHE_TTL_SECONDS)})


def cache_get(channel_name: str, *, now: Optional[float] = None) -> Optional[Tuple[str, Any]]:
    """The last event of a cache channel, ``(event, data)``, or None (none, or older than 30
    minutes). One Query.

    Raises:
        RegistryUnavailable: DynamoDB failed or the item is unreadable.
    """
    current = int(time.time() if now is None else now)
    cached = table.item(CACHE_PK_PREFIX + channel_name, "event")
    if int(cached.get(TTL_ATTRIBUTE, {}).get("N", "0")) <= current:
        return None
    try:
        return cached["event"]["S"], json.loads(cached["data"]["S"])
    except (KeyError, ValueError):
        raise RegistryUnavailable(f"cache item of {channel_name} is unreadable") from None
