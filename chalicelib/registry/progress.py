"""Fan-out shard progress (:mod:`chalicelib.delivery.shards`): which connection ids a queued shard
has already settled, so a redelivered shard posts each connection once.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable

from chalicelib.registry import table
from chalicelib.registry.table import TTL_ATTRIBUTE

#: a shard's progress marker: table key (``fanout#<fan-out id>#<shard index>``, ``progress``);
#: attribute ``reached`` (string set of the connection ids the shard has settled); not in the
#: index; expires through the table's TTL
PROGRESS_PREFIX = "fanout#"
PROGRESS_SK = "progress"
PROGRESS_ATTRIBUTE = "reached"


def _progress_key(fanout_id: str, index: int) -> Dict[str, Any]:
    return {"connection_id": table.s(f"{PROGRESS_PREFIX}{fanout_id}#{int(index)}"),
            "sk": table.s(PROGRESS_SK)}


def shard_progress(fanout_id: str, index: int) -> set:
    """The connection ids a shard has already settled (one strongly consistent Query).

    Returns:
        a set of connection ids (empty when the shard has no marker yet).
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    key = _progress_key(fanout_id, index)
    items = table.query_all(TableName=table.name(), ConsistentRead=True,
                       KeyConditionExpression="connection_id = :c AND sk = :s",
                       ExpressionAttributeValues={":c": key["connection_id"], ":s": key["sk"]},
                       ProjectionExpression=PROGRESS_ATTRIBUTE)
    reached: set = set()
    for item in items:
        reached.update(item.get(PROGRESS_ATTRIBUTE, {}).get("SS", []))
    return reached


def add_shard_progress(fanout_id: str, index: int, connection_ids: Iterable[str], *,
                       expires_at: int) -> None:
    """Add connection ids to a shard's progress marker (one UpdateItem, ``ADD`` to a string
    set: idempotent).

    Args:
        expires_at: epoch seconds after which the marker may be deleted (TTL).
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    ids = sorted(set(connection_ids))
    if not ids:
        return
    table.call("update_item", TableName=table.name(), Key=_progress_key(fanout_id, index),
          UpdateExpression="ADD #reached :ids SET #ttl = :expires",
          ExpressionAttributeNames={"#reached": PROGRESS_ATTRIBUTE, "#ttl": TTL_ATTRIBUTE},
          ExpressionAttributeValues={":ids": {"SS": ids}, ":expires": table.n(expires_at)})
