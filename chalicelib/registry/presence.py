"""Presence channels (Pusher dialect): a roster per channel and an item per member.

One item per (presence channel, user): table key (``presence#<channel>``, ``member#<user
id>``), no ``audience`` (not in the index); ``user_id``, ``channel``, ``user_info`` (JSON
text), ``connections`` (string set of the user's connection ids on the channel), ``joined``
(the join sequence number that created the member), per connection ``seq#<connection id>``
(its join sequence number), ``ans#<connection id>`` (present once its
``subscription_succeeded`` was posted) and ``pend#<connection id>`` (string set: members whose
``member_added`` it still has to get), and ``expires_at`` (the latest of its connections'). A
user is a member while the item exists: ``member_added`` on its first connection,
``member_removed`` when the last one leaves (Pusher docs, "Presence channels").

One roster item per channel: (``presence#<channel>``, ``roster``) — its sort key does not
begin with ``member#``, and member listings query ``begins_with(sk, "member#")`` — with
``seq`` (the last join sequence number given out), ``members`` (how many member items
exist) and ``expires_at`` (the latest joiner's, so the roster outlives its members).

Why joins are exact (see :func:`presence_enter`): every presence subscription of a connection
is ONE TransactWriteItems that moves the roster's ``seq`` from the value it read to the next
one (condition ``seq = :read``) and writes the member, so the joins of a channel are
serialized and each gets a unique number; a new member's transaction also adds one to
``members`` on condition ``members < cap``. A member item is deleted only together with the
decrement (one transaction), so ``members`` counts the member items.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Tuple

from chalicelib.errors import AppError
from chalicelib.registry import table
from chalicelib.registry.connections import Connection
from chalicelib.registry.table import TTL_ATTRIBUTE, RegistryUnavailable

log = logging.getLogger("realtime.connections")

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
    return table.s(PRESENCE_PK_PREFIX + channel_name)


def _member_key(channel_name: str, user_id: str) -> Dict[str, Any]:
    return {"connection_id": _presence_pk(channel_name), "sk": table.s(MEMBER_SK_PREFIX + user_id)}


def _roster_key(channel_name: str) -> Dict[str, Any]:
    return {"connection_id": _presence_pk(channel_name), "sk": table.s(ROSTER_SK)}


def _member_items(channel_name: str, **extra: Any) -> List[Dict[str, Any]]:
    """The member items of a channel (consistent Query, ``begins_with(sk, "member#")``: never
    the roster), in user id order; items without connections (written by older versions while
    a member left) are skipped."""
    items = table.query_all(TableName=table.name(), ConsistentRead=True,
                       KeyConditionExpression="connection_id = :c AND begins_with(sk, :m)",
                       ExpressionAttributeValues={":c": _presence_pk(channel_name),
                                                  ":m": table.s(MEMBER_SK_PREFIX)}, **extra)
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
    return table.item(PRESENCE_PK_PREFIX + channel_name, ROSTER_SK)





def _read_join_state(channel_name: str, user_id: str) -> Tuple[Dict[str, Any],
                                                                Dict[str, Any]]:
    """The roster and the user's member item (``{}`` when absent): one BatchGetItem,
    strongly consistent."""
    found = {item["sk"]["S"]: item for item in table.batch_get(
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
    info = table.s(json.dumps(user_info, separators=(",", ":")))
    table_name = table.name()
    recounted = False
    for _ in table.attempts(PRESENCE_ATTEMPTS, PRESENCE_DEADLINE_SECONDS,
                              PRESENCE_BACKOFF_BASE, PRESENCE_BACKOFF_CAP):
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
        values: Dict[str, Any] = {":next": table.n(mine), ":e": table.n(expires)}
        if seq:
            condition = "seq = :seq"
            values[":seq"] = table.n(seq)
        else:
            condition = "attribute_not_exists(seq)"
        update = "SET seq = :next, #ttl = :e"
        if new:
            update += " ADD members :one"
            condition += " AND (attribute_not_exists(members) OR members < :max)"
            values.update({":one": table.n(1), ":max": table.n(max_members)})
            write = {"Put": {
                "TableName": table_name,
                "Item": {**_member_key(channel_name, user_id), "user_id": table.s(user_id),
                         "channel": table.s(channel_name), "user_info": info,
                         "connections": {"SS": [cid]}, "joined": table.n(mine),
                         SEQ_PREFIX + cid: table.n(mine),
                         TTL_ATTRIBUTE: table.n(connection.expires_at)},
                "ConditionExpression": "attribute_not_exists(connections)"}}
        else:
            write = {"Update": {
                "TableName": table_name, "Key": _member_key(channel_name, user_id),
                "UpdateExpression": "ADD #conns :c SET #seq = :q, #info = :i, #ttl = :e",
                "ConditionExpression": "attribute_exists(#conns)",
                "ExpressionAttributeNames": {"#conns": "connections", "#seq": SEQ_PREFIX + cid,
                                             "#info": "user_info", "#ttl": TTL_ATTRIBUTE},
                "ExpressionAttributeValues": {
                    ":c": {"SS": [cid]}, ":q": table.n(mine), ":i": info,
                    ":e": table.n(max(connection.expires_at, _number(member, TTL_ATTRIBUTE)))}}}
        reasons = table.transact([
            {"Update": {"TableName": table_name, "Key": _roster_key(channel_name),
                        "UpdateExpression": update, "ConditionExpression": condition,
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values}},
            write])
        if reasons is None:
            break
        if not table.retryable(reasons):
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
    answer = table.conditional(
        "update_item", TableName=table.name(), Key=_roster_key(channel_name),
        UpdateExpression="SET members = :real",
        ConditionExpression="seq = :seq AND members = :believed",
        ExpressionAttributeValues={":real": table.n(real), ":seq": table.n(seq),
                                   ":believed": table.n(believed)})
    if "refused" in answer:
        return False
    log.warning("presence count of a channel corrected from %d to %d", believed, real)
    return True


def presence_recount(channel_name: str) -> int:
    """Count a channel's member items and correct the roster's ``members`` to it when it
    differs: read the roster (consistent Query of its key), count (consistent
    ``Select=COUNT`` Query), write on condition that ``seq`` and ``members`` are unchanged (no
    join or leave in between), else again. Idempotent, never below 0: the registry stream calls it for every
    member item TTL deleted, however often the record comes.

    Returns:
        the number of members counted.
    Raises:
        RegistryUnavailable: DynamoDB failed, or joins and leaves kept changing the roster.
    """
    for _ in table.attempts(PRESENCE_ATTEMPTS, PRESENCE_DEADLINE_SECONDS,
                              PRESENCE_BACKOFF_BASE, PRESENCE_BACKOFF_CAP):
        roster = _roster(channel_name)
        kwargs: Dict[str, Any] = dict(
            TableName=table.name(), ConsistentRead=True, Select="COUNT",
            KeyConditionExpression="connection_id = :c AND begins_with(sk, :m)",
            FilterExpression="attribute_exists(connections)",
            ExpressionAttributeValues={":c": _presence_pk(channel_name),
                                       ":m": table.s(MEMBER_SK_PREFIX)})
        real = 0
        while True:
            response = table.call("query", **kwargs)
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
        answer = table.conditional(
            "update_item", TableName=table.name(), Key=_member_key(channel_name, member),
            UpdateExpression="ADD #pend :u",
            ConditionExpression="contains(#conns, :c) AND attribute_not_exists(#ans)",
            ExpressionAttributeNames={"#pend": PENDING_PREFIX + other, "#conns": "connections",
                                      "#ans": ANSWERED_PREFIX + other},
            ExpressionAttributeValues={":u": {"SS": [user_id]}, ":c": table.s(other)},
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
    answer = table.conditional(
        "update_item", TableName=table.name(), Key=_member_key(channel_name, user_id),
        UpdateExpression="SET #ans = :one REMOVE #pend",
        ConditionExpression="contains(#conns, :c)",  # never re-create a member that left
        ExpressionAttributeNames={"#ans": ANSWERED_PREFIX + connection_id,
                                  "#pend": PENDING_PREFIX + connection_id,
                                  "#conns": "connections"},
        ExpressionAttributeValues={":one": table.n(1), ":c": table.s(connection_id)},
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
    for _ in table.attempts(PRESENCE_ATTEMPTS, PRESENCE_DEADLINE_SECONDS,
                              PRESENCE_BACKOFF_BASE, PRESENCE_BACKOFF_CAP):
        answer = table.conditional(
            "update_item", TableName=table.name(), Key=key,
            UpdateExpression="DELETE #conns :c REMOVE #seq, #ans, #pend",
            ConditionExpression="contains(#conns, :id) AND size(#conns) > :one",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":c": {"SS": [connection_id]}, ":id": table.s(connection_id),
                                       ":one": table.n(1)},
            ReturnValuesOnConditionCheckFailure="ALL_OLD")
        if "refused" not in answer:
            return False
        if connection_id not in answer["refused"].get("connections", {}).get("SS", []):
            return False  # not a member through this connection (already left)
        last = {"TableName": table.name(), "Key": key,
                "ConditionExpression": "contains(#conns, :id) AND size(#conns) = :one",
                "ExpressionAttributeNames": {"#conns": "connections"},
                "ExpressionAttributeValues": {":id": table.s(connection_id), ":one": table.n(1)}}
        reasons = table.transact([
            {"Delete": last},
            {"Update": {"TableName": table.name(), "Key": _roster_key(channel_name),
                        "UpdateExpression": "ADD members :minus",
                        "ConditionExpression": "members > :zero",
                        "ExpressionAttributeValues": {":minus": table.n(-1),
                                                      ":zero": table.n(0)}}}])
        if reasons is None:
            return True
        if not table.retryable(reasons):
            raise RegistryUnavailable(f"presence leave refused: {', '.join(reasons)}")
        if reasons[0] != "ConditionalCheckFailed" and reasons[-1] == "ConditionalCheckFailed":
            # the roster counts no member (lost or never had it): the item goes alone
            if "refused" not in table.conditional("delete_item", **last):
                return True
    raise RegistryUnavailable(f"presence leave of {channel_name} kept racing")
