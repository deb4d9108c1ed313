"""Connection items: one per WebSocket connection, registered at ``$connect`` and removed (with
every item of its partition) at ``$disconnect`` or a GoneException.

Item: table key (``connection_id`` = ``<connection_id>``, ``sk`` = ``connection``); index key
(``audience`` = ``user#<user_id>``, ``connection_id``) once the connection has a user (at
``$connect`` with a JWT, or at a Pusher ``pusher:signin``). Attributes: ``user_id``,
``connected_at`` and ``expires_at`` (epoch seconds: connection time + API Gateway's 2 hour
maximum connection duration + a margin; AWS docs, "Amazon API Gateway quotas"), ``source_ip``,
``user_agent``, ``principal`` (the principal's flat authorizer context as JSON, so ``$default``
frames are judged by the same channel rules without a token), ``dialect`` (only when not
native) and ``subscribed_channels`` (string set: the atomic subscription cap,
:func:`chalicelib.registry.subscriptions.subscribe`).

``<user_id>`` is the principal's user id (:mod:`chalicelib.auth.principal`: at most 141 ASCII
characters, so every key stays far within DynamoDB's 2048-byte partition and 1024-byte sort key
limits). Every item of one connection (for removal) is one Query on the table.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from chalicelib.auth.principal import Principal
from chalicelib.errors import AppError, Unauthorized
from chalicelib.registry import gates, occupancy, table
from chalicelib.registry.table import (CHANNEL_SK_PREFIX, CONNECTION_SK, TTL_ATTRIBUTE,
                                       USER_AUDIENCE_PREFIX, RegistryUnavailable)

log = logging.getLogger("realtime.connections")

#: user agents are truncated to this many characters before storage
MAX_USER_AGENT_LENGTH = 512
#: what a connection speaks (:mod:`chalicelib.dialects.native` frames, or Pusher protocol 7
#: through :mod:`chalicelib.dialects.pusher.socket`); stored as ``dialect`` on its items only
#: when not native
NATIVE = "native"
PUSHER = "pusher"
DIALECTS = (NATIVE, PUSHER)


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
        bound_user: the user whose JWT signed a private or presence subscription for this
            (Pusher) connection at ``/pusher/auth`` (:func:`bind_user`), or None: whose
            departed connections it may resume (:mod:`chalicelib.registry.departures`).
        user_after: set while a signed-in Pusher connection waits for its user's events after
            this id to be replayed (:func:`sign_in` with ``resume_after``), else None.
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
    bound_user: Optional[str] = None
    user_after: Optional[int] = None


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
        principal=principal, connected_at=started, expires_at=table.expires_at_for(started),
        source_ip=source_ip or None,
        user_agent=(user_agent[:MAX_USER_AGENT_LENGTH] if user_agent else None),
        dialect=dialect)
    item = {
        "connection_id": table.s(connection_id),
        "sk": table.s(CONNECTION_SK),
        "connected_at": table.n(connection.connected_at),
        TTL_ATTRIBUTE: table.n(connection.expires_at),
    }
    if principal is not None:
        item.update({
            "audience": table.s(USER_AUDIENCE_PREFIX + principal.user_id),
            "user_id": table.s(principal.user_id),
            "principal": table.s(json.dumps(principal.flat_context(), separators=(",", ":"))),
        })
    if dialect != NATIVE:
        item["dialect"] = table.s(dialect)
    if connection.source_ip:
        item["source_ip"] = table.s(connection.source_ip)
    if connection.user_agent:
        item["user_agent"] = table.s(connection.user_agent)
    table.call("put_item", TableName=table.name(), Item=item)
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
    items = table.query_all(TableName=table.name(), ConsistentRead=True,
                       KeyConditionExpression="connection_id = :c",
                       ExpressionAttributeValues={":c": table.s(connection_id)})
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
    dialect, _ = gates.parse_gate(meta.get("dialect", {}).get("S"), NATIVE)
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
        channels=tuple(sorted(channels)), dialect=dialect,
        bound_user=meta.get("bound_user", {}).get("S"),
        user_after=int(meta["user_after"]["N"]) if "user_after" in meta else None)


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
    items = table.query_all(TableName=table.name(), ConsistentRead=True,
                       KeyConditionExpression="connection_id = :c",
                       ExpressionAttributeValues={":c": table.s(connection_id)},
                       ProjectionExpression="connection_id, sk, member_user_id, #u, #b, #d",
                       ExpressionAttributeNames={"#u": "user_id", "#b": "bound_user",
                                                 "#d": "dialect"})
    keys = [{"connection_id": item["connection_id"], "sk": item["sk"]} for item in items]
    _batch_delete(keys)
    for key in keys:
        if key["sk"]["S"].startswith(CHANNEL_SK_PREFIX):
            occupancy.subscription_changed(key["sk"]["S"][len(CHANNEL_SK_PREFIX):], False,
                                           connection_id)
    for hook in REMOVAL_HOOKS:  # presence: member_removed (chalicelib.dialects.pusher.socket)
        try:
            hook(connection_id, items)
        except Exception:  # a hook never fails the removal (TTL is the backstop)
            log.exception("removal hook failed for %s", connection_id)
    return len(keys)


#: functions called as ``hook(connection_id, items)`` after :func:`remove_connection`
#: deleted a connection's items (``connection_id``, ``sk``, ``member_user_id`` each, and on the
#: connection item ``user_id``, ``bound_user``, ``dialect``); the Pusher dialect registers one
#: that turns presence memberships into ``member_removed``, and one that records departures
REMOVAL_HOOKS: List[Any] = []


def _batch_delete(keys: List[Dict[str, Any]]) -> None:
    table_name = table.name()
    for start in range(0, len(keys), 25):
        requests = [{"DeleteRequest": {"Key": key}} for key in keys[start:start + 25]]
        for attempt in range(8):
            response = table.call("batch_write_item", RequestItems={table_name: requests})
            requests = response.get("UnprocessedItems", {}).get(table_name) or []
            if not requests:
                break
            time.sleep(min(1.0, 0.05 * (2 ** attempt)))
        else:
            raise RegistryUnavailable(f"{len(requests)} deletes left unprocessed")


def dialect_of(connection_id: str) -> Optional[str]:
    """The dialect of a registered connection (one Query of its connection item, projecting
    ``dialect`` only), or None when it is not registered.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    found = table.item(connection_id, CONNECTION_SK, consistent=False,
                       projection="dialect, #ttl", names={"#ttl": TTL_ATTRIBUTE})
    if not found:
        return None
    return gates.parse_gate(found.get("dialect", {}).get("S"), NATIVE)[0]


def remove_connections(connection_ids: Iterable[str]) -> int:
    """:func:`remove_connection` for several ids; returns the items deleted in total."""
    return sum(remove_connection(connection_id) for connection_id in connection_ids)


def sign_in(connection_id: str, user_id: str, *, resume_after: Optional[int] = None) -> None:
    """A Pusher connection signed in (``pusher:signin``): it joins its user's audience, so
    :func:`connections_of_user` (``send_to_user``) finds it. One conditional UpdateItem on the
    connection item (never re-creates a removed connection).

    Args:
        resume_after: the user's events after this id are to be replayed to it first
            (:mod:`chalicelib.dialects.pusher.resume`): its user audience waits behind a gate
            (:mod:`chalicelib.registry.gates`) until :func:`open_user_gate`.
    Raises:
        Unauthorized: the connection is not registered.
        RegistryUnavailable: DynamoDB failed.
    """
    update = "SET #aud = :a, #uid = :u"
    values = {":a": table.s(USER_AUDIENCE_PREFIX + user_id), ":u": table.s(user_id)}
    if resume_after is not None:
        update += ", dialect = :d, user_after = :k"
        values.update({":d": table.s(gates.gate_field(PUSHER, gates.GATE_WAIT)),
                       ":k": table.n(resume_after)})
    answer = table.conditional(
        "update_item", TableName=table.name(),
        Key={"connection_id": table.s(connection_id), "sk": table.s(CONNECTION_SK)},
        UpdateExpression=update, ConditionExpression="attribute_exists(sk)",
        ExpressionAttributeNames={"#aud": "audience", "#uid": "user_id"},
        ExpressionAttributeValues=values)
    if "refused" in answer:
        raise Unauthorized(f"connection {connection_id} is not registered",
                           public_message="Connection not registered; reconnect")


def open_user_gate(connection: Connection, stream: str, head: int) -> str:
    """:func:`chalicelib.registry.gates.open_gate` for a signed-in connection's user events
    (its connection item; ``user_after`` goes)."""
    return gates.open_gate({"connection_id": table.s(connection.connection_id),
                            "sk": table.s(CONNECTION_SK)}, connection.dialect, stream, head,
                           remove=("user_after",))


def user_gates_of(connection_ids: List[str]) -> Dict[str, Tuple[str, Any]]:
    """The current ``(dialect, gate)`` of some connections' items, read consistently.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    return gates.current([{"connection_id": table.s(cid), "sk": table.s(CONNECTION_SK)}
                          for cid in connection_ids], NATIVE)


def bind_user(connection_id: str, user_id: str) -> bool:
    """Tie a connection to the user whose JWT signed a private or presence subscription for it
    (``/pusher/auth``): one conditional UpdateItem ``SET bound_user`` on the connection item
    (never re-creates a removed one).

    Returns:
        True when the connection is registered (and now bound), False otherwise.
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    answer = table.conditional(
        "update_item", TableName=table.name(),
        Key={"connection_id": table.s(connection_id), "sk": table.s(CONNECTION_SK)},
        UpdateExpression="SET bound_user = :u", ConditionExpression="attribute_exists(sk)",
        ExpressionAttributeValues={":u": table.s(user_id)})
    return "refused" not in answer
