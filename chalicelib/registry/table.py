"""The registry's DynamoDB table: its schema, clients and the request helpers every registry
room uses.

One table holds every item of the registry; :data:`TABLE_SCHEMA` is the one source that
:func:`create_table`, the CloudFormation template and the docs (``docs/registry.md``) follow:

* table key: ``connection_id`` (partition, a string) and ``sk`` (sort, a string);
* index ``audience-index``: ``audience`` (partition) and ``connection_id`` (sort), projecting
  ``expires_at`` and ``dialect``; only items that fan-out or listings look up carry
  ``audience``: connections of a user (``user#<user_id>``), subscribers of a channel
  (``channel#<name>``), occupied channels (``occupancy#<shard>``);
* TTL attribute ``expires_at`` (epoch seconds) on every item: API Gateway does not guarantee
  ``$disconnect``, so TTL deletion is the backstop; queries also filter out expired items,
  since DynamoDB deletes them lazily (AWS docs, "Using time to live (TTL) in DynamoDB");
* a stream (OLD_IMAGE) feeds ``registry_stream``: TTL deletes become presence
  ``member_removed``.

The item kinds, each in its own room: connection items (:mod:`.connections`), subscriptions
and audiences (:mod:`.subscriptions`), client-event rate windows (:mod:`.rates`), presence
rosters and members (:mod:`.presence`), cache-channel events (:mod:`.cache`), fan-out shard
progress (:mod:`.progress`), channel occupancy (:mod:`.occupancy`) and the listings read from
it (:mod:`.listing`).

boto3 is imported lazily (importing ``app`` must not import it). The table name comes from
``CONNECTIONS_TABLE``; local and test endpoints from boto3's own ``AWS_ENDPOINT_URL_DYNAMODB``.
Every DynamoDB failure is raised as :class:`RegistryUnavailable` (503).
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, Iterable, List, Optional

from chalicelib import aws
from chalicelib.errors import AppError
from chalicelib.settings import websocket_settings

#: API Gateway's maximum WebSocket connection duration, seconds (AWS docs, API Gateway quotas)
MAX_CONNECTION_SECONDS = 2 * 60 * 60
#: added to the maximum connection duration to form ``expires_at``, seconds
TTL_MARGIN_SECONDS = 10 * 60

INDEX_NAME = "audience-index"
TTL_ATTRIBUTE = "expires_at"
CONNECTION_SK = "connection"
CHANNEL_SK_PREFIX = "channel#"
USER_AUDIENCE_PREFIX = "user#"
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


# --- clients ----------------------------------------------------------------------------------

def dynamodb():
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


def name() -> str:
    return websocket_settings().connections_table


def call(operation: str, _client_factory=None, **kwargs) -> Dict[str, Any]:
    """Call a DynamoDB operation; map every SDK failure to :class:`RegistryUnavailable`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return getattr((_client_factory or dynamodb)(), operation)(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise RegistryUnavailable(f"DynamoDB {operation} failed: {code}") from None
    except BotoCoreError as exc:
        raise RegistryUnavailable(
            f"DynamoDB {operation} failed: {type(exc).__name__}") from None


def conditional(operation: str, **kwargs) -> Optional[Dict[str, Any]]:
    """Like :func:`_call`, but a failed ``ConditionExpression`` answers
    ``{"refused": item}`` instead of raising: ``item`` is the current item when the call asked
    for ``ReturnValuesOnConditionCheckFailure=ALL_OLD`` and it exists, else ``{}``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return getattr(dynamodb(), operation)(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        if code == "ConditionalCheckFailedException":
            return {"refused": exc.response.get("Item") or {}}
        raise RegistryUnavailable(f"DynamoDB {operation} failed: {code}") from None
    except BotoCoreError as exc:
        raise RegistryUnavailable(
            f"DynamoDB {operation} failed: {type(exc).__name__}") from None


def s(value: str) -> Dict[str, str]:
    return {"S": value}


def n(value: int) -> Dict[str, str]:
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

    chosen = table_name or name()
    ddb = client or dynamodb()
    spec = {k: v for k, v in TABLE_SCHEMA.items() if k != "TimeToLiveSpecification"}
    try:
        ddb.create_table(TableName=chosen, **spec)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise RegistryUnavailable(
                f"create_table failed: {exc.response.get('Error', {}).get('Code')}") from None
        return chosen
    ddb.get_waiter("table_exists").wait(
        TableName=chosen, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ddb.update_time_to_live(TableName=chosen,
                                 TimeToLiveSpecification=TABLE_SCHEMA["TimeToLiveSpecification"])
    return chosen


# --- connections ------------------------------------------------------------------------------

def expires_at_for(connected_at: float) -> int:
    """``expires_at`` (epoch seconds) for a connection opened at ``connected_at`` (seconds):
    the 2 hour API Gateway maximum plus :data:`TTL_MARGIN_SECONDS`."""
    return int(connected_at) + MAX_CONNECTION_SECONDS + TTL_MARGIN_SECONDS


def batch_get(keys: List[Dict[str, Any]], **options: Any) -> List[Dict[str, Any]]:
    """The items of ``keys`` (at most 100: one BatchGetItem, ``options`` such as
    ``ConsistentRead`` or ``ProjectionExpression`` added to the request); unprocessed keys are
    asked again with back-off, 8 calls at most.

    Raises:
        RegistryUnavailable: DynamoDB failed, or keys stayed unprocessed.
    """
    table = name()
    items: List[Dict[str, Any]] = []
    request = {table: {"Keys": keys, **options}}
    for attempt in range(8):
        response = call("batch_get_item", RequestItems=request)
        items.extend(response.get("Responses", {}).get(table, []))
        request = response.get("UnprocessedKeys") or {}
        if not request.get(table):
            return items
        time.sleep(min(1.0, 0.05 * (2 ** attempt)))
    raise RegistryUnavailable("BatchGetItem left keys unprocessed")


def query_all(_client_factory=None, **kwargs) -> List[Dict[str, Any]]:
    """Every item of a Query, following ``LastEvaluatedKey`` (1 MB pages)."""
    items: List[Dict[str, Any]] = []
    while True:
        response = call("query", _client_factory=_client_factory, **kwargs)
        items.extend(response.get("Items", []))
        last = response.get("LastEvaluatedKey")
        if not last:
            return items
        kwargs["ExclusiveStartKey"] = last


_audience_clients: Dict[str, Any] = {}


def audience_client():
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



def item(pk: str, sk: str, *, consistent: bool = True, projection: Optional[str] = None,
         names: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The item with table key (``pk``, ``sk``), ``{}`` when absent: one Query of that key
    (the functions' role allows Query, not GetItem), strongly consistent unless
    ``consistent`` is False, with ``projection`` (and its ``names``) when given.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    options: Dict[str, Any] = {"ConsistentRead": True} if consistent else {}
    if projection is not None:
        options["ProjectionExpression"] = projection
    if names:
        options["ExpressionAttributeNames"] = names
    items = call("query", TableName=name(),
                 KeyConditionExpression="connection_id = :c AND sk = :s",
                 ExpressionAttributeValues={":c": s(pk), ":s": s(sk)}, **options).get("Items", [])
    return items[0] if items else {}


# --- transactions ---------------------------------------------------------------------------

def transact(items: List[Dict[str, Any]]) -> Optional[List[str]]:
    """One TransactWriteItems. Returns None when it was applied, else the cancellation
    reason code of each item (``"None"``, ``"ConditionalCheckFailed"``,
    ``"TransactionConflict"``...: DynamoDB API reference, "TransactWriteItems").

    Raises:
        RegistryUnavailable: DynamoDB failed otherwise.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        dynamodb().transact_write_items(TransactItems=items)
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


def retryable(reasons: List[str]) -> bool:
    """True when every cancellation reason of :func:`transact` is worth a re-read and retry."""
    return all(code in ("None", "ConditionalCheckFailed", "TransactionConflict")
               for code in reasons)


def attempts(minimum: int, deadline: float, base: float, cap: float) -> Iterable[int]:
    """Attempt numbers 0, 1, ... of a race-prone write, sleeping a full-jitter back-off (from
    ``base`` seconds, doubling, at most ``cap``; AWS Architecture Blog, "Exponential Backoff And
    Jitter") before each retry, while fewer than ``minimum`` were made or ``deadline`` seconds
    have not passed."""
    import random

    started = time.monotonic()
    attempt = 0
    while attempt < minimum or time.monotonic() - started < deadline:
        yield attempt
        attempt += 1
        time.sleep(random.uniform(0, min(cap, base * (2 ** min(attempt, 16)))))
