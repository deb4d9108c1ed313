"""Channel listings for Pusher's HTTP API (:mod:`chalicelib.dialects.pusher.http_api`): occupied
channels (from the occupancy items of :mod:`.occupancy`), subscription counts and the user ids
of a channel's subscribers. Reads only; no item of its own.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional
import time

from chalicelib.registry import subscriptions, table
from chalicelib.registry.occupancy import (OCCUPANCY_AUDIENCE_PREFIX, OCCUPANCY_PREFIX,
                                           OCCUPANCY_SHARDS)
from chalicelib.registry.table import (CHANNEL_AUDIENCE_PREFIX, CHANNEL_SK_PREFIX, INDEX_NAME,
                                       TTL_ATTRIBUTE)

def count_subscribers(channel_name: str, *, now: Optional[float] = None) -> int:
    """Live subscriptions of a channel (``Select=COUNT`` Queries on the index, paginated:
    only a count comes back).

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    current = int(time.time() if now is None else now)
    kwargs: Dict[str, Any] = dict(
        TableName=table.name(), IndexName=INDEX_NAME, Select="COUNT",
        KeyConditionExpression="audience = :a", FilterExpression="#ttl > :now",
        ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
        ExpressionAttributeValues={":a": table.s(CHANNEL_AUDIENCE_PREFIX + channel_name),
                                   ":now": table.n(current)})
    total = 0
    while True:
        response = table.call("query", **kwargs)
        total += int(response.get("Count", 0))
        last = response.get("LastEvaluatedKey")
        if not last:
            return total
        kwargs["ExclusiveStartKey"] = last


def channel_user_ids(channel_name: str, *, now: Optional[float] = None) -> List[str]:
    """Distinct user ids of a channel's live subscribers, sorted: the subscribers from the
    index (one Query), then their subscription items (BatchGetItem, 100 keys per call): the
    presence member a Pusher connection joined as (``member_user_id``, from its signed
    ``channel_data``), else the connection's ``user_id``. Anonymous Pusher connections that
    joined no presence member have neither and are not counted.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    ids = subscriptions.subscribers_of_channel(channel_name, now=now)
    users = set()
    for start in range(0, len(ids), 100):
        keys = [{"connection_id": table.s(cid), "sk": table.s(CHANNEL_SK_PREFIX + channel_name)}
                for cid in ids[start:start + 100]]
        for item in table.batch_get(keys, ProjectionExpression="user_id, member_user_id"):
            user_id = (item.get("member_user_id", {}).get("S")
                       or item.get("user_id", {}).get("S"))
            if user_id:
                users.add(user_id)
    return sorted(users)


def occupied_channels(prefix: str = "", *, now: Optional[float] = None) -> List[str]:
    """Names of the channels whose occupancy item is live, starting with ``prefix``, sorted:
    one Query per shard on the index (``begins_with`` on its sort key). A listed channel may
    have been vacated an instant ago: check it with :func:`count_subscribers`.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    current = int(time.time() if now is None else now)
    names = []
    for shard in range(OCCUPANCY_SHARDS):
        items = table.query_all(
            TableName=table.name(), IndexName=INDEX_NAME,
            KeyConditionExpression="audience = :a AND begins_with(connection_id, :p)",
            FilterExpression="#ttl > :now",
            ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
            ExpressionAttributeValues={":a": table.s(f"{OCCUPANCY_AUDIENCE_PREFIX}{shard}"),
                                       ":p": table.s(OCCUPANCY_PREFIX + prefix),
                                       ":now": table.n(current)},
            ProjectionExpression="connection_id")
        names.extend(item["connection_id"]["S"][len(OCCUPANCY_PREFIX):] for item in items)
    return sorted(names)
