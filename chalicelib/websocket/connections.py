"""The WebSocket connection registry: connections and channel subscriptions in one DynamoDB table.

Key schema (single table, one global secondary index; :data:`TABLE_SCHEMA` is the one source
that :func:`create_table`, the CloudFormation template and README.md follow):

* connection item: table key (``connection_id`` = ``<connection_id>``, ``sk`` =
  ``connection``); index key (``audience`` = ``user#<user_id>``, ``connection_id``);
* subscription item: table key (``<connection_id>``, ``channel#<channel_name>``); index key
  (``audience`` = ``channel#<channel_name>``, ``connection_id``);
* client-event rate window: table key (``<connection_id>``, ``rate#client-event#<epoch
  second>``), attribute ``events``; not in the index (:func:`allow_client_event`).

* every item of one connection (for removal) is one Query on the table;
* every connection of a user is one Query on ``audience-index`` with ``audience = user#<sub>``;
* every subscriber of a channel is one Query on ``audience-index`` with
  ``audience = channel#<name>``.

``<user_id>`` is the principal's user id (:mod:`chalicelib.auth.principal`: at most 141 ASCII
characters, so every key stays far within DynamoDB's 2048-byte partition and 1024-byte sort key
limits). The connection item also holds ``user_id``, ``connected_at`` and ``expires_at`` (epoch
seconds), ``source_ip``, ``user_agent``, ``principal`` (the principal's flat authorizer
context as JSON, so ``$default`` frames are judged by the same channel rules without a token)
and ``subscribed_channels`` (string set: the atomic subscription cap, see :func:`subscribe`).
Every item carries ``expires_at`` = connection time + API Gateway's 2 hour maximum connection
duration (AWS docs, "Amazon API Gateway quotas": "Connection duration for WebSocket API")
+ a margin. It is the table's TTL attribute: API Gateway does not guarantee ``$disconnect``, so
TTL deletion is the backstop; queries also filter out expired items, since DynamoDB deletes
expired items lazily (AWS docs, "Using time to live (TTL) in DynamoDB").

boto3 is imported lazily (importing ``app`` must not import it). The table name comes from
``CONNECTIONS_TABLE``; local and test endpoints from boto3's own ``AWS_ENDPOINT_URL_DYNAMODB``.
Every DynamoDB failure is raised as :class:`RegistryUnavailable` (503).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from chalicelib import aws
from chalicelib.errors import AppError, Unauthorized
from chalicelib.auth.principal import Principal
from chalicelib.settings import websocket_settings

log = logging.getLogger("realtime.connections")

#: API Gateway's maximum WebSocket connection duration, seconds (AWS docs, API Gateway quotas)
MAX_CONNECTION_SECONDS = 2 * 60 * 60
#: added to the maximum connection duration to form ``expires_at``, seconds
TTL_MARGIN_SECONDS = 10 * 60
#: subscriptions one connection may hold (each costs one item and one index entry)
MAX_SUBSCRIPTIONS_PER_CONNECTION = 100
#: user agents are truncated to this many characters before storage
MAX_USER_AGENT_LENGTH = 512

INDEX_NAME = "audience-index"
TTL_ATTRIBUTE = "expires_at"
CONNECTION_SK = "connection"
CHANNEL_SK_PREFIX = "channel#"
RATE_SK_PREFIX = "rate#"
#: the connection item's string set of subscribed channel names (the cap's atomic count)
CHANNELS_ATTRIBUTE = "subscribed_channels"
#: a rate window item expires this long after its second, seconds
RATE_ITEM_TTL_SECONDS = 60
USER_AUDIENCE_PREFIX = "user#"
#: what a connection speaks (:mod:`chalicelib.websocket.ws` frames, or Pusher protocol 7 through
#: :mod:`chalicelib.pusher.pusher_socket`); stored as ``dialect`` on its items only when not native
NATIVE = "native"
PUSHER = "pusher"
DIALECTS = (NATIVE, PUSHER)
CHANNEL_AUDIENCE_PREFIX = "channel#"

#: The table's schema. Keys are shared by boto3 ``create_table`` and CloudFormation's
#: ``AWS::DynamoDB::Table`` (``TimeToLiveSpecification`` has the same shape as boto3's
#: ``update_time_to_live`` argument). Mirror it, never copy it by hand into a second place.
TABLE_SCHEMA: Dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": "connection_id", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
        {"AttributeName": "audience", "AttributeType": "S"},
    ],
    "KeySchema": [
        {"AttributeName": "connection_id", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": INDEX_NAME,
            "KeySchema": [
                {"AttributeName": "audience", "KeyType": "HASH"},
                {"AttributeName": "connection_id", "KeyType": "RANGE"},
            ],
            # fan-out needs the connection id (a key) and expires_at (to skip expired items)
            # and the dialect, so one push is encoded once per dialect without a read
            "Projection": {"ProjectionType": "INCLUDE",
                           "NonKeyAttributes": [TTL_ATTRIBUTE, "dialect"]},
        },
    ],
    "BillingMode": "PAY_PER_REQUEST",
    "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
    # TTL deletes reach ``registry_stream`` (presence member_removed); OLD_IMAGE carries the
    # deleted item (CloudFormation's StreamSpecification has StreamViewType only)
    "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "OLD_IMAGE"},
}


class RegistryUnavailable(AppError):
    """DynamoDB could not be reached or refused the request (503); details go to the log."""

    status = 503
    code = "registry_unavailable"
    public_message = "Connection registry unavailable"


class SubscriptionLimit(AppError):
    """A connection asked for more than :data:`MAX_SUBSCRIPTIONS_PER_CONNECTION` channels
    (400)."""

    status = 400
    code = "subscription_limit"
    public_message = "Too many subscriptions"
    expose_message = True


@dataclass(frozen=True)
class Connection:
    """One registered WebSocket connection.

    Attributes:
        connection_id: API Gateway's connection id.
        user_id: the principal's user id (:attr:`Principal.user_id`); ``""`` for an anonymous
            Pusher connection.
        principal: the verified caller as it was at ``$connect``; None for an anonymous
            Pusher connection (its rights come from signed subscriptions).
        connected_at, expires_at: epoch seconds.
        source_ip, user_agent: from the ``$connect`` request, or None.
        channels: channel names this connection is subscribed to (sorted).
        dialect: :data:`NATIVE` or :data:`PUSHER`.
    """

    connection_id: str
    user_id: str
    principal: Optional[Principal]
    connected_at: int
    expires_at: int
    source_ip: Optional[str] = None
    user_agent: Optional[str] = None
    channels: Tuple[str, ...] = ()
    dialect: str = NATIVE


# --- clients ----------------------------------------------------------------------------------

def _client():
    """The DynamoDB client for the configured region (cached; see :mod:`chalicelib.aws`).

    boto3 reads ``AWS_ENDPOINT_URL_DYNAMODB`` itself when the client is created; call
    :func:`reset_clients` after changing it in a running process. The pool is as large as the
    fan-out: its threads may each delete a stale connection at once.
    """
    ws = websocket_settings()
    return aws.client("dynamodb", ws.region,
                      max_pool_connections=max(10, ws.push_max_workers), max_attempts=4)


def reset_clients() -> None:
    """Forget cached clients (tests; a changed ``AWS_ENDPOINT_URL_DYNAMODB``)."""
    aws.reset_clients()
    _audience_clients.clear()


def _table() -> str:
    return websocket_settings().connections_table


def _call(operation: str, _client_factory=None, **kwargs) -> Dict[str, Any]:
    """Call a DynamoDB operation; map every SDK failure to :class:`RegistryUnavailable`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return getattr((_client_factory or _client)(), operation)(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise RegistryUnavailable(f"DynamoDB {operation} failed: {code}") from None
    except BotoCoreError as exc:
        raise RegistryUnavailable(
            f"DynamoDB {operation} failed: {type(exc).__name__}") from None


def _conditional(operation: str, **kwargs) -> Optional[Dict[str, Any]]:
    """Like :func:`_call`, but a failed ``ConditionExpression`` answers
    ``{"refused": item}`` instead of raising: ``item`` is the current item when the call asked
    for ``ReturnValuesOnConditionCheckFailure=ALL_OLD`` and it exists, else ``{}``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return getattr(_client(), operation)(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        if code == "ConditionalCheckFailedException":
            return {"refused": exc.response.get("Item") or {}}
        raise RegistryUnavailable(f"DynamoDB {operation} failed: {code}") from None
    except BotoCoreError as exc:
        raise RegistryUnavailable(
            f"DynamoDB {operation} failed: {type(exc).__name__}") from None


def _s(value: str) -> Dict[str, str]:
    return {"S": value}


def _n(value: int) -> Dict[str, str]:
    return {"N": str(int(value))}


# --- schema -----------------------------------------------------------------------------------

def create_table(table_name: Optional[str] = None, *, client=None) -> str:
    """Create the registry table from :data:`TABLE_SCHEMA` and enable its TTL (tests, local
    stacks; deployments create it from the CloudFormation template).

    Args:
        table_name: defaults to ``CONNECTIONS_TABLE``.
        client: a boto3 DynamoDB client; defaults to the registry's own.
    Returns:
        the table name. An existing table is left as it is.
    Raises:
        RegistryUnavailable: DynamoDB refused (other than "already exists").
    """
    from botocore.exceptions import ClientError

    name = table_name or _table()
    dynamodb = client or _client()
    spec = {k: v for k, v in TABLE_SCHEMA.items() if k != "TimeToLiveSpecification"}
    try:
        dynamodb.create_table(TableName=name, **spec)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise RegistryUnavailable(
                f"create_table failed: {exc.response.get('Error', {}).get('Code')}") from None
        return name
    dynamodb.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    dynamodb.update_time_to_live(TableName=name,
                                 TimeToLiveSpecification=TABLE_SCHEMA["TimeToLiveSpecification"])
    return name


# --- connections ------------------------------------------------------------------------------

def expires_at_for(connected_at: float) -> int:
    """``expires_at`` (epoch seconds) for a connection opened at ``connected_at`` (seconds):
    the 2 hour API Gateway maximum plus :data:`TTL_MARGIN_SECONDS`."""
    return int(connected_at) + MAX_CONNECTION_SECONDS + TTL_MARGIN_SECONDS


def register(connection_id: str, principal: Optional[Principal], *,
             source_ip: Optional[str] = None, user_agent: Optional[str] = None,
             connected_at: Optional[float] = None, dialect: str = NATIVE) -> Connection:
    """Store a new connection (one PutItem; a repeated ``$connect`` overwrites).

    Args:
        connection_id: API Gateway's connection id (non-empty).
        principal: the verified caller; None for an anonymous Pusher connection (then the item
            has no ``audience``: it is in no user's audience until sign-in).
        dialect: :data:`NATIVE` or :data:`PUSHER` (kept as ``dialect`` on the connection's
            items when not native, and projected into the index for fan-out).
        source_ip, user_agent: from the ``$connect`` request (user agent truncated to
            :data:`MAX_USER_AGENT_LENGTH` characters).
        connected_at: epoch seconds; defaults to now.
    Returns:
        the stored :class:`Connection`.
    Raises:
        ValueError: an empty connection id.
        RegistryUnavailable: DynamoDB failed.
    """
    if not connection_id:
        raise ValueError("connection_id must not be empty")
    if dialect not in DIALECTS or (principal is None and dialect == NATIVE):
        raise ValueError("a native connection needs a principal; dialect must be one of "
                         + ", ".join(DIALECTS))
    started = int(connected_at if connected_at is not None else time.time())
    connection = Connection(
        connection_id=connection_id, user_id=principal.user_id if principal else "",
        principal=principal, connected_at=started, expires_at=expires_at_for(started),
        source_ip=source_ip or None,
        user_agent=(user_agent[:MAX_USER_AGENT_LENGTH] if user_agent else None),
        dialect=dialect)
    item = {
        "connection_id": _s(connection_id),
        "sk": _s(CONNECTION_SK),
        "connected_at": _n(connection.connected_at),
        TTL_ATTRIBUTE: _n(connection.expires_at),
    }
    if principal is not None:
        item.update({
            "audience": _s(USER_AUDIENCE_PREFIX + principal.user_id),
            "user_id": _s(principal.user_id),
            "principal": _s(json.dumps(principal.flat_context(), separators=(",", ":"))),
        })
    if dialect != NATIVE:
        item["dialect"] = _s(dialect)
    if connection.source_ip:
        item["source_ip"] = _s(connection.source_ip)
    if connection.user_agent:
        item["user_agent"] = _s(connection.user_agent)
    _call("put_item", TableName=_table(), Item=item)
    return connection


def get_connection(connection_id: str, *, now: Optional[float] = None) -> Optional[Connection]:
    """Read a connection and its subscriptions (one strongly consistent Query).

    Returns:
        the :class:`Connection`, or None when it is not registered or has expired.
    Raises:
        RegistryUnavailable: DynamoDB failed, or the stored principal is unreadable.
    """
    if not connection_id:
        return None
    items = _query_all(TableName=_table(), ConsistentRead=True,
                       KeyConditionExpression="connection_id = :c",
                       ExpressionAttributeValues={":c": _s(connection_id)})
    current = time.time() if now is None else now
    meta = None
    channels: List[str] = []
    for item in items:
        if int(item.get(TTL_ATTRIBUTE, {}).get("N", "0")) <= current:
            continue
        sk = item["sk"]["S"]
        if sk == CONNECTION_SK:
            meta = item
        elif sk.startswith(CHANNEL_SK_PREFIX):
            channels.append(sk[len(CHANNEL_SK_PREFIX):])
    if meta is None:
        return None
    dialect = meta.get("dialect", {}).get("S", NATIVE)
    principal = None
    if "principal" in meta or dialect == NATIVE:
        try:
            principal = Principal.from_context(json.loads(meta["principal"]["S"]))
        except (KeyError, ValueError, AppError):
            raise RegistryUnavailable(
                f"connection item {connection_id} has no usable principal") from None
    return Connection(
        connection_id=connection_id, user_id=meta.get("user_id", {}).get("S", ""),
        principal=principal,
        connected_at=int(meta["connected_at"]["N"]), expires_at=int(meta[TTL_ATTRIBUTE]["N"]),
        source_ip=meta.get("source_ip", {}).get("S"),
        user_agent=meta.get("user_agent", {}).get("S"),
        channels=tuple(sorted(channels)), dialect=dialect)


def remove_connection(connection_id: str) -> int:
    """Delete a connection and all its subscriptions; idempotent.

    One Query for the connection's keys, then BatchWriteItem deletes of up to 25 keys each
    (DynamoDB's batch limit), retrying unprocessed keys with back-off.

    Returns:
        how many items were deleted (0 when nothing was registered).
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    if not connection_id:
        return 0
    items = _query_all(TableName=_table(), ConsistentRead=True,
                       KeyConditionExpression="connection_id = :c",
                       ExpressionAttributeValues={":c": _s(connection_id)},
                       ProjectionExpression="connection_id, sk, member_user_id")
    keys = [{"connection_id": item["connection_id"], "sk": item["sk"]} for item in items]
    _batch_delete(keys)
    for key in keys:
        if key["sk"]["S"].startswith(CHANNEL_SK_PREFIX):
            _occupancy_changed(key["sk"]["S"][len(CHANNEL_SK_PREFIX):], False, connection_id)
    for hook in REMOVAL_HOOKS:  # presence: member_removed (chalicelib.pusher.pusher_socket)
        try:
            hook(connection_id, items)
        except Exception:  # a hook never fails the removal (TTL is the backstop)
            log.exception("removal hook failed for %s", connection_id)
    return len(keys)


#: functions called as ``hook(connection_id, items)`` after :func:`remove_connection`
#: deleted a connection's items (``connection_id``, ``sk``, ``member_user_id`` each); the
#: Pusher dialect registers one that turns presence memberships into ``member_removed``
REMOVAL_HOOKS: List[Any] = []


def _batch_delete(keys: List[Dict[str, Any]]) -> None:
    table = _table()
    for start in range(0, len(keys), 25):
        requests = [{"DeleteRequest": {"Key": key}} for key in keys[start:start + 25]]
        for attempt in range(8):
            response = _call("batch_write_item", RequestItems={table: requests})
            requests = response.get("UnprocessedItems", {}).get(table) or []
            if not requests:
                break
            time.sleep(min(1.0, 0.05 * (2 ** attempt)))
        else:
            raise RegistryUnavailable(f"{len(requests)} deletes left unprocessed")


def _batch_get(keys: List[Dict[str, Any]], **options: Any) -> List[Dict[str, Any]]:
    """The items of ``keys`` (at most 100: one BatchGetItem, ``options`` such as
    ``ConsistentRead`` or ``ProjectionExpression`` added to the request); unprocessed keys are
    asked again with back-off, 8 calls at most.

    Raises:
        RegistryUnavailable: DynamoDB failed, or keys stayed unprocessed.
    """
    table = _table()
    items: List[Dict[str, Any]] = []
    request = {table: {"Keys": keys, **options}}
    for attempt in range(8):
        response = _call("batch_get_item", RequestItems=request)
        items.extend(response.get("Responses", {}).get(table, []))
        request = response.get("UnprocessedKeys") or {}
        if not request.get(table):
            return items
        time.sleep(min(1.0, 0.05 * (2 ** attempt)))
    raise RegistryUnavailable("BatchGetItem left keys unprocessed")


# --- subscriptions ----------------------------------------------------------------------------

def subscribe(connection: Connection, channel_name: str, *,
              member_user_id: Optional[str] = None) -> bool:
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
    table = _table()
    answer = _conditional(
        "update_item", TableName=table,
        Key={"connection_id": _s(connection.connection_id), "sk": _s(CONNECTION_SK)},
        UpdateExpression="ADD #subs :names",
        ConditionExpression="attribute_exists(sk) AND (attribute_not_exists(#subs) "
                            "OR size(#subs) < :cap OR contains(#subs, :name))",
        ExpressionAttributeNames={"#subs": CHANNELS_ATTRIBUTE},
        ExpressionAttributeValues={":names": {"SS": [channel_name]}, ":name": _s(channel_name),
                                   ":cap": _n(MAX_SUBSCRIPTIONS_PER_CONNECTION)},
        ReturnValues="UPDATED_OLD", ReturnValuesOnConditionCheckFailure="ALL_OLD")
    if "refused" in answer:
        if not answer["refused"]:
            raise Unauthorized(f"connection {connection.connection_id} is not registered",
                               public_message="Connection not registered; reconnect")
        raise _limit()
    before = answer.get("Attributes", {}).get(CHANNELS_ATTRIBUTE, {}).get("SS", [])
    item = {
        "connection_id": _s(connection.connection_id),
        "sk": _s(CHANNEL_SK_PREFIX + channel_name),
        "audience": _s(CHANNEL_AUDIENCE_PREFIX + channel_name),
        "channel": _s(channel_name),
        "subscribed_at": _n(time.time()),
        TTL_ATTRIBUTE: _n(connection.expires_at),
    }
    if connection.user_id:
        item["user_id"] = _s(connection.user_id)
    if connection.dialect != NATIVE:
        item["dialect"] = _s(connection.dialect)
    if member_user_id is not None:
        item["member_user_id"] = _s(member_user_id)
    _call("put_item", TableName=table, Item=item)
    if channel_name not in before:
        _occupancy_changed(channel_name, True)  # for GET /apps/{id}/channels (pusher_http)
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
    response = _call("delete_item", TableName=_table(), ReturnValues="ALL_OLD", Key={
        "connection_id": _s(connection_id), "sk": _s(CHANNEL_SK_PREFIX + channel_name)})
    _conditional(
        "update_item", TableName=_table(),
        Key={"connection_id": _s(connection_id), "sk": _s(CONNECTION_SK)},
        UpdateExpression="DELETE #subs :names",
        ConditionExpression="attribute_exists(sk)",  # never re-create a removed connection
        ExpressionAttributeNames={"#subs": CHANNELS_ATTRIBUTE},
        ExpressionAttributeValues={":names": {"SS": [channel_name]}})
    if response.get("Attributes"):
        _occupancy_changed(channel_name, False, connection_id)
    return response.get("Attributes") or {}


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
    answer = _conditional(
        "update_item", TableName=_table(),
        Key={"connection_id": _s(connection_id),
             "sk": _s(f"{RATE_SK_PREFIX}client-event#{second}")},
        UpdateExpression="ADD #events :one SET #ttl = :expires",
        ConditionExpression="attribute_not_exists(#events) OR #events < :limit",
        ExpressionAttributeNames={"#events": "events", "#ttl": TTL_ATTRIBUTE},
        ExpressionAttributeValues={":one": _n(1), ":limit": _n(limit),
                                   ":expires": _n(second + RATE_ITEM_TTL_SECONDS)})
    return "refused" not in answer


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
    return _query_all(TableName=_table(), IndexName=INDEX_NAME,
                      KeyConditionExpression="audience = :a",
                      FilterExpression="#ttl > :now",
                      ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
                      ExpressionAttributeValues={":a": _s(audience), ":now": _n(current)},
                      ProjectionExpression=projection, _client_factory=_audience_client)


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
    items = _audience_items(audience, now, "connection_id, dialect")
    groups: Dict[str, List[str]] = {}
    for item in items:
        dialect = item.get("dialect", {}).get("S", NATIVE)
        groups.setdefault(dialect, []).append(item["connection_id"]["S"])
    return groups


def dialect_of(connection_id: str) -> Optional[str]:
    """The dialect of a registered connection (one Query of its connection item, projecting
    ``dialect`` only), or None when it is not registered.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    items = _call("query", TableName=_table(),
                  KeyConditionExpression="connection_id = :c AND sk = :s",
                  ExpressionAttributeValues={":c": _s(connection_id), ":s": _s(CONNECTION_SK)},
                  ProjectionExpression="dialect, #ttl",
                  ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE}).get("Items", [])
    if not items:
        return None
    return items[0].get("dialect", {}).get("S", NATIVE)


def _query_all(_client_factory=None, **kwargs) -> List[Dict[str, Any]]:
    """Every item of a Query, following ``LastEvaluatedKey`` (1 MB pages)."""
    items: List[Dict[str, Any]] = []
    while True:
        response = _call("query", _client_factory=_client_factory, **kwargs)
        items.extend(response.get("Items", []))
        last = response.get("LastEvaluatedKey")
        if not last:
            return items
        kwargs["ExclusiveStartKey"] = last


_audience_clients: Dict[str, Any] = {}


def _audience_client():
    """The DynamoDB client of the audience Query (fan-out): the registry's client, except
    that the items of a successful Query answer are taken as sent instead of being walked by
    botocore's response parser.

    A page of 10,000 ids costs ~90 ms of CPU in botocore's parser (its shape walk per
    attribute value), 100,000 subscribers ~1 s, several seconds on a 512 MB function. The
    items of this Query (``connection_id``, a string) have the same shape in DynamoDB's JSON
    as botocore's parsed form (``{"connection_id": {"S": "..."}}``), so a ``before-parse``
    handler (botocore's event, emitted with the raw ``response_dict`` before parsing) hands
    them over as they are and botocore parses the rest of the answer (``Count``,
    ``LastEvaluatedKey``, errors) as always. Signing, retries and endpoints stay botocore's.
    """
    ws = websocket_settings()
    found = _audience_clients.get(ws.region)
    if found is None:
        import boto3  # lazy: importing app must not import boto3
        from botocore.config import Config

        found = boto3.session.Session().client(
            "dynamodb", region_name=ws.region,
            config=Config(retries={"mode": "standard", "total_max_attempts": 4}))
        found.meta.events.register("before-parse.dynamodb.Query", _items_as_sent)
        _audience_clients[ws.region] = found
    return found


def _items_as_sent(response_dict: Dict[str, Any], customized_response_dict: Dict[str, Any],
                   **_: Any) -> None:
    """``before-parse`` handler: move ``Items`` of a 200 answer past botocore's parser."""
    if response_dict.get("status_code") != 200:
        return
    try:
        body = json.loads(response_dict["body"])
    except (KeyError, TypeError, ValueError):
        return  # botocore parses (and reports) it
    if not isinstance(body, dict) or not isinstance(body.get("Items"), list):
        return
    customized_response_dict["Items"] = body.pop("Items")
    response_dict["body"] = json.dumps(body).encode()


def remove_connections(connection_ids: Iterable[str]) -> int:
    """:func:`remove_connection` for several ids; returns the items deleted in total."""
    return sum(remove_connection(connection_id) for connection_id in connection_ids)


# --- presence members (Pusher dialect) --------------------------------------------------------
#
# One item per (presence channel, user): table key (``presence#<channel>``, ``member#<user
# id>``), no ``audience`` (not in the index); ``user_id``, ``channel``, ``user_info`` (JSON
# text), ``connections`` (string set of the user's connection ids on the channel), ``joined``
# (the join sequence number that created the member), per connection ``seq#<connection id>``
# (its join sequence number), ``ans#<connection id>`` (present once its
# ``subscription_succeeded`` was posted) and ``pend#<connection id>`` (string set: members whose
# ``member_added`` it still has to get), and ``expires_at`` (the latest of its connections'). A
# user is a member while the item exists: ``member_added`` on its first connection,
# ``member_removed`` when the last one leaves (Pusher docs, "Presence channels").
#
# One roster item per channel: (``presence#<channel>``, ``roster``) — its sort key does not
# begin with ``member#``, and member listings query ``begins_with(sk, "member#")`` — with
# ``seq`` (the last join sequence number given out), ``members`` (how many member items
# exist) and ``expires_at`` (the latest joiner's, so the roster outlives its members).
#
# Why joins are exact (see :func:`presence_enter`): every presence subscription of a connection
# is ONE TransactWriteItems that moves the roster's ``seq`` from the value it read to the next
# one (condition ``seq = :read``) and writes the member, so the joins of a channel are
# serialized and each gets a unique number; a new member's transaction also adds one to
# ``members`` on condition ``members < cap``. A member item is deleted only together with the
# decrement (one transaction), so ``members`` counts the member items.

PRESENCE_PK_PREFIX = "presence#"
MEMBER_SK_PREFIX = "member#"
ROSTER_SK = "roster"
#: member item attributes kept per connection (followed by the connection id)
SEQ_PREFIX = "seq#"
ANSWERED_PREFIX = "ans#"
PENDING_PREFIX = "pend#"
#: a join, leave or recount whose write lost a race is re-read and retried: at least
#: :data:`PRESENCE_ATTEMPTS` times, and for up to :data:`PRESENCE_DEADLINE_SECONDS` (joins of
#: one channel are serialized: 40 simultaneous joiners wait for each other), with full-jitter
#: back-off between attempts growing from :data:`PRESENCE_BACKOFF_BASE` to
#: :data:`PRESENCE_BACKOFF_CAP` seconds (AWS Architecture Blog, "Exponential Backoff And
#: Jitter"); then RegistryUnavailable (a 503 ``subscription_error``: retry)
PRESENCE_ATTEMPTS = 25
PRESENCE_DEADLINE_SECONDS = 8.0
PRESENCE_BACKOFF_BASE = 0.005
PRESENCE_BACKOFF_CAP = 0.2


class PresenceFull(AppError):
    """A presence channel already has its maximum of members (Pusher's default: 100)."""

    status = 400
    code = "presence_full"
    public_message = "The presence channel has reached its maximum number of members"


@dataclass(frozen=True)
class PresenceEntry:
    """What a connection's presence join found (:func:`presence_enter`).

    Attributes:
        first: True when the user became a member (its first connection): ``member_added``.
        seq: the join's sequence number in the channel (1, 2, ...).
        members: ``{user_id: user_info}`` for the joiner's ``subscription_succeeded``: the
            members that existed before this join (and the joiner), in user id order.
        announce_to: (when ``first``) connection ids of the members that joined earlier and
            have their own answer already: post them ``member_added`` now.
        hold_for: (when ``first``) ``(user_id, connection_id)`` of earlier connections not
            answered yet: hand them to :func:`presence_hold` (they get ``member_added`` after
            their answer).
    """

    first: bool
    seq: int
    members: Dict[str, Any]
    announce_to: Tuple[str, ...] = ()
    hold_for: Tuple[Tuple[str, str], ...] = ()


def _presence_pk(channel_name: str) -> Dict[str, str]:
    return _s(PRESENCE_PK_PREFIX + channel_name)


def _member_key(channel_name: str, user_id: str) -> Dict[str, Any]:
    return {"connection_id": _presence_pk(channel_name), "sk": _s(MEMBER_SK_PREFIX + user_id)}


def _roster_key(channel_name: str) -> Dict[str, Any]:
    return {"connection_id": _presence_pk(channel_name), "sk": _s(ROSTER_SK)}


def _member_items(channel_name: str, **extra: Any) -> List[Dict[str, Any]]:
    """The member items of a channel (consistent Query, ``begins_with(sk, "member#")``: never
    the roster), in user id order; items without connections (written by older versions while
    a member left) are skipped."""
    items = _query_all(TableName=_table(), ConsistentRead=True,
                       KeyConditionExpression="connection_id = :c AND begins_with(sk, :m)",
                       ExpressionAttributeValues={":c": _presence_pk(channel_name),
                                                  ":m": _s(MEMBER_SK_PREFIX)}, **extra)
    return [item for item in items if item.get("connections", {}).get("SS")]


def _user_info(item: Dict[str, Any], channel_name: str) -> Any:
    try:
        return json.loads(item.get("user_info", {}).get("S", "null"))
    except ValueError:
        raise RegistryUnavailable(f"member item of {channel_name} is unreadable") from None


def _member_user(item: Dict[str, Any]) -> str:
    return item["sk"]["S"][len(MEMBER_SK_PREFIX):]


def presence_members(channel_name: str) -> Dict[str, Any]:
    """The members of a presence channel: ``{user_id: user_info}`` in user id order (one
    consistent Query; the roster item is not a member).

    Raises:
        RegistryUnavailable: DynamoDB failed, or a stored ``user_info`` is unreadable.
    """
    return {_member_user(item): _user_info(item, channel_name)
            for item in _member_items(channel_name)}


def presence_count(channel_name: str) -> int:
    """The roster's member count of a presence channel (one consistent Query of the roster;
    0 without one): what the cap is checked against.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    return max(0, _number(_roster(channel_name), "members"))


def _roster(channel_name: str) -> Dict[str, Any]:
    """A channel's roster item, ``{}`` when absent (one consistent Query of that key: the
    functions' role allows Query, not GetItem)."""
    items = _call("query", TableName=_table(), ConsistentRead=True,
                  KeyConditionExpression="connection_id = :c AND sk = :s",
                  ExpressionAttributeValues={":c": _presence_pk(channel_name),
                                             ":s": _s(ROSTER_SK)}).get("Items", [])
    return items[0] if items else {}


def _attempts() -> Iterable[int]:
    """Attempt numbers 0, 1, ... of a race-prone write, sleeping a full-jitter back-off before
    each retry, while fewer than :data:`PRESENCE_ATTEMPTS` were made or
    :data:`PRESENCE_DEADLINE_SECONDS` have not passed."""
    import random

    started = time.monotonic()
    attempt = 0
    while attempt < PRESENCE_ATTEMPTS \
            or time.monotonic() - started < PRESENCE_DEADLINE_SECONDS:
        yield attempt
        attempt += 1
        time.sleep(random.uniform(0, min(PRESENCE_BACKOFF_CAP,
                                         PRESENCE_BACKOFF_BASE * (2 ** min(attempt, 16)))))


def _transact(items: List[Dict[str, Any]]) -> Optional[List[str]]:
    """One TransactWriteItems. Returns None when it was applied, else the cancellation
    reason code of each item (``"None"``, ``"ConditionalCheckFailed"``,
    ``"TransactionConflict"``...: DynamoDB API reference, "TransactWriteItems").

    Raises:
        RegistryUnavailable: DynamoDB failed otherwise.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _client().transact_write_items(TransactItems=items)
        return None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        if code == "TransactionCanceledException":
            reasons = exc.response.get("CancellationReasons") or []
            return [str(reason.get("Code", "None")) for reason in reasons] \
                or ["TransactionConflict"]
        if code in ("TransactionConflictException", "TransactionInProgressException"):
            return ["TransactionConflict"]
        raise RegistryUnavailable(f"DynamoDB transact_write_items failed: {code}") from None
    except BotoCoreError as exc:
        raise RegistryUnavailable(
            f"DynamoDB transact_write_items failed: {type(exc).__name__}") from None


def _retryable(reasons: List[str]) -> bool:
    return all(code in ("None", "ConditionalCheckFailed", "TransactionConflict")
               for code in reasons)


def _read_join_state(channel_name: str, user_id: str) -> Tuple[Dict[str, Any],
                                                                Dict[str, Any]]:
    """The roster and the user's member item (``{}`` when absent): one BatchGetItem,
    strongly consistent."""
    found = {item["sk"]["S"]: item for item in _batch_get(
        [_roster_key(channel_name), _member_key(channel_name, user_id)], ConsistentRead=True)}
    return found.get(ROSTER_SK, {}), found.get(MEMBER_SK_PREFIX + user_id, {})


def _number(item: Dict[str, Any], name: str) -> int:
    return int(item.get(name, {}).get("N", "0"))


def presence_enter(channel_name: str, user_id: str, user_info: Any, connection: Connection, *,
                   max_members: int = 100) -> PresenceEntry:
    """Add a connection to a presence member (creating the member), exactly under
    concurrency.

    Each attempt: one strongly consistent BatchGetItem of the roster (``seq`` s, ``members``
    n) and of the user's member item, then ONE TransactWriteItems:

    * roster: ``SET seq = s+1`` (and ``ADD members 1`` for a new member), on condition
      ``seq = s`` (``attribute_not_exists(seq)`` when s is 0) and, for a new member,
      ``members < max_members``;
    * member: for a new member a Put (``joined = s+1``) on condition
      ``attribute_not_exists(connections)``; for an existing one ``ADD connections {c}``, on
      condition ``attribute_exists(connections)``; both ``SET seq#<c> = s+1``.

    DynamoDB applies a transaction all or nothing (Developer Guide, "Amazon DynamoDB
    Transactions"), so only one of several simultaneous joins can move ``seq`` from s: the
    joins of a channel are serialized, each connection gets a unique number together with its
    member write, and ``members`` never passes the cap (a refused transaction is re-read and
    retried with full-jitter back-off, see :data:`PRESENCE_DEADLINE_SECONDS`; then
    RegistryUnavailable). A new member is refused (:class:`PresenceFull`) only when a fresh
    read shows the channel full, after one recount of the member items
    (:func:`presence_recount`), so a count left too high (a lost decrement) never locks a
    channel.

    Then one consistent Query of the member items decides who learns of whom. For two
    connections a (number q_a) and b (q_b > q_a) of different members A and B, b's Query runs
    after b's transaction, which follows a's, so it sees A (unless A has left):

    * b's list holds the members with ``joined`` < q_b — A when A joined before b — and never
      a member that joined after b;
    * a new member B posts ``member_added`` to the connections with a number below q_b —
      a — and never to a later one.

    So a either lists B (B joined before a) or gets B's ``member_added`` (B joined after a,
    and a joined before B's query), never both, never neither; a member that left meanwhile is
    in neither, and its ``member_removed`` follows. B posts at once only to the connections
    whose answer is marked (``ans#``); the others get theirs queued (:func:`presence_hold`)
    and take it after their answer (:func:`presence_answered`), so no ``member_added``
    overtakes a ``subscription_succeeded``. Self-correction: when the Query's count of
    members differs from the roster's (a missed decrement, items of an older version), the
    roster is set to it by one conditional UpdateItem (only while no join or leave came in
    between: ``seq`` and ``members`` unchanged).

    A repeated subscribe of a connection already in the member keeps its number (nothing is
    written). Requests: BatchGetItem 1, TransactWriteItems 1, Query 1 (+1 per lost race).

    Args:
        channel_name, user_id, user_info: the channel and the signed member.
        connection: the joining connection (its ``expires_at`` bounds the items' TTL).
        max_members: members allowed (``PUSHER_PRESENCE_MAX_MEMBERS``).
    Returns:
        a :class:`PresenceEntry`.
    Raises:
        PresenceFull: a new member and the channel is full.
        RegistryUnavailable: DynamoDB failed, or the joins kept racing.
    """
    cid = connection.connection_id
    info = _s(json.dumps(user_info, separators=(",", ":")))
    table = _table()
    recounted = False
    for _ in _attempts():
        roster, member = _read_join_state(channel_name, user_id)
        if cid in member.get("connections", {}).get("SS", []):
            seq = _number(member, SEQ_PREFIX + cid)  # 0: joined through an older version
            return PresenceEntry(False, seq, _listed(channel_name, user_id, seq or 1 << 62,
                                                     _member_items(channel_name))[0])
        seq, count = _number(roster, "seq"), max(0, _number(roster, "members"))
        new = not member.get("connections", {}).get("SS")
        if new and count >= max_members:
            if not recounted:
                recounted = True
                if presence_recount(channel_name) < max_members:
                    continue
            raise PresenceFull(f"{channel_name} has {count} members")
        mine = seq + 1
        expires = max(connection.expires_at, _number(roster, TTL_ATTRIBUTE))
        names = {"#ttl": TTL_ATTRIBUTE}
        values: Dict[str, Any] = {":next": _n(mine), ":e": _n(expires)}
        if seq:
            condition = "seq = :seq"
            values[":seq"] = _n(seq)
        else:
            condition = "attribute_not_exists(seq)"
        update = "SET seq = :next, #ttl = :e"
        if new:
            update += " ADD members :one"
            condition += " AND (attribute_not_exists(members) OR members < :max)"
            values.update({":one": _n(1), ":max": _n(max_members)})
            write = {"Put": {
                "TableName": table,
                "Item": {**_member_key(channel_name, user_id), "user_id": _s(user_id),
                         "channel": _s(channel_name), "user_info": info,
                         "connections": {"SS": [cid]}, "joined": _n(mine),
                         SEQ_PREFIX + cid: _n(mine), TTL_ATTRIBUTE: _n(connection.expires_at)},
                "ConditionExpression": "attribute_not_exists(connections)"}}
        else:
            write = {"Update": {
                "TableName": table, "Key": _member_key(channel_name, user_id),
                "UpdateExpression": "ADD #conns :c SET #seq = :q, #info = :i, #ttl = :e",
                "ConditionExpression": "attribute_exists(#conns)",
                "ExpressionAttributeNames": {"#conns": "connections", "#seq": SEQ_PREFIX + cid,
                                             "#info": "user_info", "#ttl": TTL_ATTRIBUTE},
                "ExpressionAttributeValues": {
                    ":c": {"SS": [cid]}, ":q": _n(mine), ":i": info,
                    ":e": _n(max(connection.expires_at, _number(member, TTL_ATTRIBUTE)))}}}
        reasons = _transact([
            {"Update": {"TableName": table, "Key": _roster_key(channel_name),
                        "UpdateExpression": update, "ConditionExpression": condition,
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values}},
            write])
        if reasons is None:
            break
        if not _retryable(reasons):
            raise RegistryUnavailable(f"presence join refused: {', '.join(reasons)}")
    else:
        raise RegistryUnavailable(f"presence join of {channel_name} kept racing")
    items = _member_items(channel_name)
    members, earlier = _listed(channel_name, user_id, mine, items)
    if len(items) != count + (1 if new else 0):
        _correct_count(channel_name, mine, count + (1 if new else 0), len(items))
    if not new:
        return PresenceEntry(False, mine, members)
    announce, hold = [], []
    for item in earlier:
        for other in item["connections"]["SS"]:
            if _number(item, SEQ_PREFIX + other) >= mine:
                continue
            # connections joined by older versions have no number (and no answer mark): they
            # were answered long ago
            if ANSWERED_PREFIX + other in item or SEQ_PREFIX + other not in item:
                announce.append(other)
            else:
                hold.append((_member_user(item), other))
    return PresenceEntry(True, mine, members, tuple(announce), tuple(hold))


def _listed(channel_name: str, user_id: str, seq: int,
            items: List[Dict[str, Any]]) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """The joiner's member list (members created before number ``seq``, and itself) and the
    items of the other members among them."""
    members: Dict[str, Any] = {}
    earlier = []
    for item in items:
        other = _member_user(item)
        if other == user_id:
            members[other] = _user_info(item, channel_name)
        elif _number(item, "joined") < seq:
            members[other] = _user_info(item, channel_name)
            earlier.append(item)
    return members, earlier


def _correct_count(channel_name: str, seq: int, believed: int, real: int) -> bool:
    """Set the roster's ``members`` to ``real`` while its ``seq`` and ``members`` are still
    ``seq`` and ``believed`` (one conditional UpdateItem). Returns True when written."""
    answer = _conditional(
        "update_item", TableName=_table(), Key=_roster_key(channel_name),
        UpdateExpression="SET members = :real",
        ConditionExpression="seq = :seq AND members = :believed",
        ExpressionAttributeValues={":real": _n(real), ":seq": _n(seq),
                                   ":believed": _n(believed)})
    if "refused" in answer:
        return False
    log.warning("presence count of a channel corrected from %d to %d", believed, real)
    return True


def presence_recount(channel_name: str) -> int:
    """Count a channel's member items and correct the roster's ``members`` to it when it
    differs: read the roster (consistent Query of its key), count (consistent ``Select=COUNT`` Query),
    write on condition that ``seq`` and ``members`` are unchanged (no join or leave in
    between), else again. Idempotent, never below 0: the registry stream calls it for every
    member item TTL deleted, however often the record comes.

    Returns:
        the number of members counted.
    Raises:
        RegistryUnavailable: DynamoDB failed, or joins and leaves kept changing the roster.
    """
    for _ in _attempts():
        roster = _roster(channel_name)
        kwargs: Dict[str, Any] = dict(
            TableName=_table(), ConsistentRead=True, Select="COUNT",
            KeyConditionExpression="connection_id = :c AND begins_with(sk, :m)",
            FilterExpression="attribute_exists(connections)",
            ExpressionAttributeValues={":c": _presence_pk(channel_name),
                                       ":m": _s(MEMBER_SK_PREFIX)})
        real = 0
        while True:
            response = _call("query", **kwargs)
            real += int(response.get("Count", 0))
            if not response.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        if not roster or "seq" not in roster:
            return real  # no joins yet: the first one counts (and corrects) from there
        believed = _number(roster, "members")
        if believed == real or _correct_count(channel_name, _number(roster, "seq"),
                                              believed, real):
            return real
    raise RegistryUnavailable(f"presence recount of {channel_name} kept racing")


def presence_join(channel_name: str, user_id: str, user_info: Any, connection: Connection, *,
                  max_members: int = 100) -> bool:
    """:func:`presence_enter`, answering only whether the user became a member (True: its
    first connection on the channel).

    Raises:
        PresenceFull: a new member and the channel is full.
        RegistryUnavailable: DynamoDB failed.
    """
    return presence_enter(channel_name, user_id, user_info, connection,
                          max_members=max_members).first


def presence_hold(channel_name: str, user_id: str,
                  held: Iterable[Tuple[str, str]]) -> List[str]:
    """A new member's ``member_added`` for earlier connections not answered yet
    (:attr:`PresenceEntry.hold_for`): each is queued on the connection's member item
    (``ADD pend#<c> {user_id}``, one conditional UpdateItem each, on condition that the
    connection is still there and not answered). Whether the queue or the answer mark
    (:func:`presence_answered`) comes first, DynamoDB applies the two writes of one item in
    some order, so the announcement goes out exactly once and after the connection's
    ``subscription_succeeded`` (pusher-js resets its member list on that answer: a
    ``member_added`` arriving before it would be lost).

    Returns:
        the connection ids answered meanwhile: post them ``member_added`` now.
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    now_answered = []
    for member, other in held:
        answer = _conditional(
            "update_item", TableName=_table(), Key=_member_key(channel_name, member),
            UpdateExpression="ADD #pend :u",
            ConditionExpression="contains(#conns, :c) AND attribute_not_exists(#ans)",
            ExpressionAttributeNames={"#pend": PENDING_PREFIX + other, "#conns": "connections",
                                      "#ans": ANSWERED_PREFIX + other},
            ExpressionAttributeValues={":u": {"SS": [user_id]}, ":c": _s(other)},
            ReturnValuesOnConditionCheckFailure="ALL_OLD")
        refused = answer.get("refused") if answer else None
        if refused is not None and ANSWERED_PREFIX + other in refused \
                and other in refused.get("connections", {}).get("SS", []):
            now_answered.append(other)
    return now_answered


def presence_answered(channel_name: str, user_id: str, connection_id: str) -> Dict[str, Any]:
    """Mark a connection's ``subscription_succeeded`` as posted (``SET ans#<c>``, one
    conditional UpdateItem, taking the queued ``pend#<c>`` away in the same write).

    Returns:
        ``{user_id: user_info}`` of the members queued for it by :func:`presence_hold` and
        still there (one more Query when there are any): post it their ``member_added``.
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    answer = _conditional(
        "update_item", TableName=_table(), Key=_member_key(channel_name, user_id),
        UpdateExpression="SET #ans = :one REMOVE #pend",
        ConditionExpression="contains(#conns, :c)",  # never re-create a member that left
        ExpressionAttributeNames={"#ans": ANSWERED_PREFIX + connection_id,
                                  "#pend": PENDING_PREFIX + connection_id,
                                  "#conns": "connections"},
        ExpressionAttributeValues={":one": _n(1), ":c": _s(connection_id)},
        ReturnValues="UPDATED_OLD")
    if "refused" in answer:
        return {}
    queued = set(answer.get("Attributes", {}).get(PENDING_PREFIX + connection_id, {})
                 .get("SS", []))
    if not queued:
        return {}
    return {member: info for member, info in presence_members(channel_name).items()
            if member in queued}


def presence_leave(channel_name: str, user_id: str, connection_id: str) -> bool:
    """Remove a connection from a presence member; the member goes with its last connection.

    A connection that is not the last: one conditional UpdateItem (``DELETE connections {c}``
    and its ``seq#``/``ans#``/``pend#`` attributes, on condition ``size(connections) > 1``).
    The last one: that UpdateItem is refused (its answer carries the item), then ONE
    TransactWriteItems deletes the member item (condition: the set is exactly ``{c}``) and
    decrements the roster's ``members`` (condition ``members > 0``), so the count moves with
    the item, never twice; a lost race is re-read and retried. A roster already at 0 (or
    absent) lets the member item go alone.

    Returns:
        True when the member is gone (this was its last connection): ``member_removed``.
    Raises:
        RegistryUnavailable: DynamoDB failed, or the leave kept racing.
    """
    key = _member_key(channel_name, user_id)
    names = {"#conns": "connections", "#seq": SEQ_PREFIX + connection_id,
             "#ans": ANSWERED_PREFIX + connection_id, "#pend": PENDING_PREFIX + connection_id}
    for _ in _attempts():
        answer = _conditional(
            "update_item", TableName=_table(), Key=key,
            UpdateExpression="DELETE #conns :c REMOVE #seq, #ans, #pend",
            ConditionExpression="contains(#conns, :id) AND size(#conns) > :one",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":c": {"SS": [connection_id]}, ":id": _s(connection_id),
                                       ":one": _n(1)},
            ReturnValuesOnConditionCheckFailure="ALL_OLD")
        if "refused" not in answer:
            return False
        if connection_id not in answer["refused"].get("connections", {}).get("SS", []):
            return False  # not a member through this connection (already left)
        last = {"TableName": _table(), "Key": key,
                "ConditionExpression": "contains(#conns, :id) AND size(#conns) = :one",
                "ExpressionAttributeNames": {"#conns": "connections"},
                "ExpressionAttributeValues": {":id": _s(connection_id), ":one": _n(1)}}
        reasons = _transact([
            {"Delete": last},
            {"Update": {"TableName": _table(), "Key": _roster_key(channel_name),
                        "UpdateExpression": "ADD members :minus",
                        "ConditionExpression": "members > :zero",
                        "ExpressionAttributeValues": {":minus": _n(-1), ":zero": _n(0)}}}])
        if reasons is None:
            return True
        if not _retryable(reasons):
            raise RegistryUnavailable(f"presence leave refused: {', '.join(reasons)}")
        if reasons[0] != "ConditionalCheckFailed" and reasons[-1] == "ConditionalCheckFailed":
            # the roster counts no member (lost or never had it): the item goes alone
            if "refused" not in _conditional("delete_item", **last):
                return True
    raise RegistryUnavailable(f"presence leave of {channel_name} kept racing")


def member_of(connection_id: str, channel_name: str) -> Optional[str]:
    """The presence member user id a connection joined ``channel_name`` as, or None.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    items = _call("query", TableName=_table(), ConsistentRead=True,
                  KeyConditionExpression="connection_id = :c AND sk = :s",
                  ExpressionAttributeValues={":c": _s(connection_id),
                                             ":s": _s(CHANNEL_SK_PREFIX + channel_name)},
                  ProjectionExpression="member_user_id").get("Items", [])
    return items[0].get("member_user_id", {}).get("S") if items else None


def sign_in(connection_id: str, user_id: str) -> None:
    """A Pusher connection signed in (``pusher:signin``): it joins its user's audience, so
    :func:`connections_of_user` (``send_to_user``) finds it. One conditional UpdateItem on the
    connection item (never re-creates a removed connection).

    Raises:
        Unauthorized: the connection is not registered.
        RegistryUnavailable: DynamoDB failed.
    """
    answer = _conditional(
        "update_item", TableName=_table(),
        Key={"connection_id": _s(connection_id), "sk": _s(CONNECTION_SK)},
        UpdateExpression="SET #aud = :a, #uid = :u", ConditionExpression="attribute_exists(sk)",
        ExpressionAttributeNames={"#aud": "audience", "#uid": "user_id"},
        ExpressionAttributeValues={":a": _s(USER_AUDIENCE_PREFIX + user_id), ":u": _s(user_id)})
    if "refused" in answer:
        raise Unauthorized(f"connection {connection_id} is not registered",
                           public_message="Connection not registered; reconnect")


# --- cache channels (Pusher dialect) ----------------------------------------------------------
#
# The last event of a cache channel (``cache-…``, ``private-cache-…``, ``presence-cache-…``,
# ``private-encrypted-cache-…``; Pusher docs, "Cache channels"): one item (``cache#<channel>``,
# ``event``) with ``event``, ``data`` (JSON text), ``expires_at`` = publication + 30 minutes
# (Pusher keeps it 30 minutes). Not in the index.

CACHE_PK_PREFIX = "cache#"
CACHE_TTL_SECONDS = 30 * 60


def cache_put(channel_name: str, event_name: str, data: Any, *,
              now: Optional[float] = None) -> None:
    """Remember the last event of a cache channel (one PutItem).

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    current = int(time.time() if now is None else now)
    _call("put_item", TableName=_table(), Item={
        "connection_id": _s(CACHE_PK_PREFIX + channel_name), "sk": _s("event"),
        "event": _s(event_name),
        "data": _s(json.dumps(data, separators=(",", ":"), ensure_ascii=False)),
        TTL_ATTRIBUTE: _n(current + CACHE_TTL_SECONDS)})


def cache_get(channel_name: str, *, now: Optional[float] = None) -> Optional[Tuple[str, Any]]:
    """The last event of a cache channel, ``(event, data)``, or None (none, or older than 30
    minutes). One Query.

    Raises:
        RegistryUnavailable: DynamoDB failed or the item is unreadable.
    """
    current = int(time.time() if now is None else now)
    items = _call("query", TableName=_table(), ConsistentRead=True,
                  KeyConditionExpression="connection_id = :c AND sk = :s",
                  ExpressionAttributeValues={":c": _s(CACHE_PK_PREFIX + channel_name),
                                             ":s": _s("event")}).get("Items", [])
    if not items or int(items[0].get(TTL_ATTRIBUTE, {}).get("N", "0")) <= current:
        return None
    try:
        return items[0]["event"]["S"], json.loads(items[0]["data"]["S"])
    except (KeyError, ValueError):
        raise RegistryUnavailable(f"cache item of {channel_name} is unreadable") from None


# --- fan-out progress (chalicelib.websocket.shards) -------------------------------------------

#: a shard's progress marker: table key (``fanout#<fan-out id>#<shard index>``, ``progress``);
#: attribute ``reached`` (string set of the connection ids the shard has settled); not in the
#: index; expires through the table's TTL
PROGRESS_PREFIX = "fanout#"
PROGRESS_SK = "progress"
PROGRESS_ATTRIBUTE = "reached"


def _progress_key(fanout_id: str, index: int) -> Dict[str, Any]:
    return {"connection_id": _s(f"{PROGRESS_PREFIX}{fanout_id}#{int(index)}"),
            "sk": _s(PROGRESS_SK)}


def shard_progress(fanout_id: str, index: int) -> set:
    """The connection ids a shard has already settled (one strongly consistent Query).

    Returns:
        a set of connection ids (empty when the shard has no marker yet).
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    key = _progress_key(fanout_id, index)
    items = _query_all(TableName=_table(), ConsistentRead=True,
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
    _call("update_item", TableName=_table(), Key=_progress_key(fanout_id, index),
          UpdateExpression="ADD #reached :ids SET #ttl = :expires",
          ExpressionAttributeNames={"#reached": PROGRESS_ATTRIBUTE, "#ttl": TTL_ATTRIBUTE},
          ExpressionAttributeValues={":ids": {"SS": ids}, ":expires": _n(expires_at)})


# --- channel queries (Pusher's HTTP API: chalicelib.pusher.pusher_http) -----------------------
#
# Channel occupancy items let GET /apps/{id}/channels list occupied channels without a Scan:
# one item per channel with at least one subscription, table key (``#occupancy#<channel>``,
# ``occupancy``), index key (``audience`` = ``occupancy#<shard>``, ``connection_id`` =
# ``#occupancy#<channel>``), so a listing is one Query per shard, a ``filter_by_prefix`` a
# ``begins_with`` on the index's sort key. :data:`OCCUPANCY_SHARDS` spreads the writes of
# busy apps over that many index partitions. A subscribe writes (refreshes) the item; when an
# unsubscribe or a removed connection leaves the channel without live subscriptions the item
# is deleted (conditionally on its version, so a concurrent subscribe keeps it). Readers
# check each listed channel with a COUNT Query anyway, so an item left behind (a failure
# between two writes) never lists an empty channel; it expires with its TTL.

#: index partitions of the channel occupancy items
OCCUPANCY_SHARDS = 8
OCCUPANCY_PREFIX = "#occupancy#"
OCCUPANCY_SK = "occupancy"
OCCUPANCY_AUDIENCE_PREFIX = "occupancy#"


def _occupancy_key(channel_name: str) -> Dict[str, Any]:
    return {"connection_id": _s(OCCUPANCY_PREFIX + channel_name), "sk": _s(OCCUPANCY_SK)}


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
    expires_at = expires_at_for(time.time() if now is None else now)
    answer = _call(
        "update_item", TableName=_table(), Key=_occupancy_key(channel_name),
        ReturnValues="ALL_OLD",
        UpdateExpression="SET audience = :a, channel = :c, #ttl = :e ADD version :one",
        ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
        ExpressionAttributeValues={
            ":a": _s(f"{OCCUPANCY_AUDIENCE_PREFIX}{occupancy_shard(channel_name)}"),
            ":c": _s(channel_name), ":e": _n(expires_at), ":one": _n(1)})
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
    items = _call("query", TableName=_table(), ConsistentRead=True,
                  KeyConditionExpression="connection_id = :c AND sk = :s",
                  ExpressionAttributeValues={":c": _s(OCCUPANCY_PREFIX + channel_name),
                                             ":s": _s(OCCUPANCY_SK)},
                  ProjectionExpression="version").get("Items", [])
    if not items or has_subscribers(channel_name, ignore=ignore, now=now):
        return False
    answer = _conditional("delete_item", TableName=_table(), Key=_occupancy_key(channel_name),
                          ConditionExpression="version = :v",
                          ExpressionAttributeValues={":v": items[0].get("version", _n(0))})
    return "refused" not in answer


#: ``listener(channel_name, occupied)`` called when a channel becomes occupied (True) or
#: vacated (False) (:mod:`chalicelib.pusher.webhooks_out` adds itself); a listener that raises is
#: logged, never fails the subscription
OCCUPANCY_LISTENERS: List[Any] = []


def _occupancy_changed(channel_name: str, subscribed: bool,
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
        TableName=_table(), IndexName=INDEX_NAME, Limit=2,
        KeyConditionExpression="audience = :a", FilterExpression="#ttl > :now",
        ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
        ExpressionAttributeValues={":a": _s(CHANNEL_AUDIENCE_PREFIX + channel_name),
                                   ":now": _n(current)},
        ProjectionExpression="connection_id")
    while True:
        response = _call("query", **kwargs)
        if any(item["connection_id"]["S"] != ignore for item in response.get("Items", [])):
            return True
        last = response.get("LastEvaluatedKey")
        if not last:
            return False
        kwargs["ExclusiveStartKey"] = last
        kwargs["Limit"] = 25


def count_subscribers(channel_name: str, *, now: Optional[float] = None) -> int:
    """Live subscriptions of a channel (``Select=COUNT`` Queries on the index, paginated:
    only a count comes back).

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    current = int(time.time() if now is None else now)
    kwargs: Dict[str, Any] = dict(
        TableName=_table(), IndexName=INDEX_NAME, Select="COUNT",
        KeyConditionExpression="audience = :a", FilterExpression="#ttl > :now",
        ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
        ExpressionAttributeValues={":a": _s(CHANNEL_AUDIENCE_PREFIX + channel_name),
                                   ":now": _n(current)})
    total = 0
    while True:
        response = _call("query", **kwargs)
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
    ids = subscribers_of_channel(channel_name, now=now)
    users = set()
    for start in range(0, len(ids), 100):
        keys = [{"connection_id": _s(cid), "sk": _s(CHANNEL_SK_PREFIX + channel_name)}
                for cid in ids[start:start + 100]]
        for item in _batch_get(keys, ProjectionExpression="user_id, member_user_id"):
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
        items = _query_all(
            TableName=_table(), IndexName=INDEX_NAME,
            KeyConditionExpression="audience = :a AND begins_with(connection_id, :p)",
            FilterExpression="#ttl > :now",
            ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
            ExpressionAttributeValues={":a": _s(f"{OCCUPANCY_AUDIENCE_PREFIX}{shard}"),
                                       ":p": _s(OCCUPANCY_PREFIX + prefix),
                                       ":now": _n(current)},
            ProjectionExpression="connection_id")
        names.extend(item["connection_id"]["S"][len(OCCUPANCY_PREFIX):] for item in items)
    return sorted(names)
