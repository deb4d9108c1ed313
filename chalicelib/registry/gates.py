"""Gates: a subscription (or a signed-in connection's user audience) that resumes a stream
takes live events only after its replay.

It starts "waiting": the fan-out of an event leaves it out, while the handler that made it
replays the events the connection missed from the history (:mod:`chalicelib.delivery.replay`).
The handler then opens the gate at the last id it replayed, h, in ONE transaction with a check
that the stream's head is still h: every later event's fan-out sees "live after h" and delivers,
every earlier one was replayed.

The gate rides in the item's ``dialect`` attribute, which the index already projects:
``<dialect>|wait`` or ``<dialect>|after=<h>`` (no ``|``: no gate), so fan-out needs no extra
read, except a consistent one (:func:`current`) for the rare entries the index still shows
waiting. Items: subscription items (:mod:`.subscriptions`) and connection items
(:mod:`.connections`, for events to users).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from chalicelib.registry import history, table
from chalicelib.registry.table import RegistryUnavailable

GATE_WAIT = "wait"
_GATE_AFTER = "after="
#: answers of :func:`open_gate`
GATE_OPEN, HEAD_MOVED, GONE = "open", "head_moved", "gone"


def gate_field(dialect: str, gate: Any) -> str:
    """The ``dialect`` attribute of a gated item: ``gate`` is :data:`GATE_WAIT` or an id (int:
    live after it)."""
    return f"{dialect}|{GATE_WAIT if gate == GATE_WAIT else _GATE_AFTER + str(int(gate))}"


def parse_gate(value: Optional[str], default: str) -> Tuple[str, Any]:
    """``(dialect, gate)`` of a ``dialect`` attribute (``default`` when absent): gate None (no
    gate), :data:`GATE_WAIT`, or an int (live after that id). An unreadable gate counts as
    none."""
    if not value:
        return default, None
    dialect, _, gate = value.partition("|")
    if gate == GATE_WAIT:
        return dialect, GATE_WAIT
    if gate.startswith(_GATE_AFTER) and gate[len(_GATE_AFTER):].isdigit():
        return dialect, int(gate[len(_GATE_AFTER):])
    return dialect, None


def takes(gate: Any, event_id: Optional[int]) -> bool:
    """Whether an item with ``gate`` gets event ``event_id`` live (None: an event without an
    id, which no replay covers)."""
    if gate is None or event_id is None:
        return True
    return gate != GATE_WAIT and event_id > gate


def current(keys: List[Dict[str, Any]], default: str) -> Dict[str, Tuple[str, Any]]:
    """``{connection id: (dialect, gate)}`` of items read consistently (BatchGetItem, 100 keys
    a call); items that no longer exist are left out.

    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    found: Dict[str, Tuple[str, Any]] = {}
    for start in range(0, len(keys), 100):
        for item in table.batch_get(keys[start:start + 100], ConsistentRead=True,
                                    ProjectionExpression="connection_id, dialect"):
            found[item["connection_id"]["S"]] = parse_gate(item.get("dialect", {}).get("S"),
                                                           default)
    return found


def open_gate(key: Dict[str, Any], dialect: str, stream: str, head: int, *,
              remove: Tuple[str, ...] = ()) -> str:
    """Open a waiting item (table ``key``) to live events after ``head``, if the stream's head
    is still ``head``: ONE TransactWriteItems (a ConditionCheck of the history head, an Update
    of the item on condition it exists, also removing the attributes ``remove``).

    Returns:
        :data:`GATE_OPEN`; :data:`HEAD_MOVED` (replay what came meanwhile, then try again);
        :data:`GONE` (the item went meanwhile: unsubscribed or disconnected).
    Raises:
        RegistryUnavailable: DynamoDB failed.
    """
    check: Dict[str, Any] = {"TableName": table.name(), "Key": history.head_key(stream)}
    if head:
        check.update(ConditionExpression="seq = :h",
                     ExpressionAttributeValues={":h": table.n(head)})
    else:
        check["ConditionExpression"] = "attribute_not_exists(seq)"
    update = "SET dialect = :d" + (" REMOVE " + ", ".join(remove) if remove else "")
    reasons = table.transact([
        {"ConditionCheck": check},
        {"Update": {"TableName": table.name(), "Key": key, "UpdateExpression": update,
                    "ConditionExpression": "attribute_exists(sk)",
                    "ExpressionAttributeValues": {":d": table.s(gate_field(dialect, head))}}}])
    if reasons is None:
        return GATE_OPEN
    if not table.retryable(reasons):
        raise RegistryUnavailable(f"opening a gate refused: {', '.join(reasons)}")
    if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
        return GONE
    return HEAD_MOVED
