"""Sharded fan-out through the push queue: large audiences are split into shards of connection
ids, one SQS message each, delivered by parallel ``push_worker`` invocations.

Producer (:func:`enqueue`, called by :func:`chalicelib.delivery.push.deliver` when an audience is
over ``PUSH_SHARD_THRESHOLD``): the frame is encoded once; connection ids are cut into shards of at
most ``PUSH_SHARD_SIZE`` ids and at most :data:`MAX_MESSAGE_BYTES` per message (SQS's message
size limit, 256 KiB: AWS docs, "Amazon SQS message quotas"), so a large frame makes smaller
shards. Shards go out with ``SendMessageBatch`` (10 entries and 256 KiB per call at most; the
IAM action is ``sqs:SendMessage``). The caller answers at once with the shard count.

A shard message is self-contained::

    {"shard": {"fanout": "<fan-out id>", "index": 3, "count": 100,
               "frame": "<the frame as text>" | "frame_b64": "<base64>",
               "ids": ["<connection id>", ...]}}

(``frame`` when the payload is UTF-8 text and escaping it in JSON costs less than base64 would,
else ``frame_b64``). The management endpoint is the worker's own (settings or lookup).

Consumer (:func:`handle`, from :mod:`chalicelib.doors.queue`). Delivery guarantee:

* in normal operation every live connection of the audience gets the frame exactly once (each
  id is in exactly one shard, each shard is processed once);
* **a redelivered shard does not resend to connections it already reached**: when a shard
  ends, the ids it settled (delivered, gone, or refused for good) are added to its progress
  marker in the registry table (item ``("fanout#<id>#<index>", "progress")``, a string set,
  expiring after :data:`PROGRESS_TTL_SECONDS`); a shard received again
  (``ApproximateReceiveCount`` > 1: reported as failed, its visibility timeout ran out, or its
  delete was lost) reads the marker first and posts only to the others;
* only a worker that dies in the middle of a shard (Lambda timeout, crash), before writing the
  marker, can make the shard's next delivery repeat the frame to connections it had reached:
  at least once then, never lost; likewise when queuing stops part-way (503), the shards
  already queued are delivered and a retry queues the whole audience again;
* posts still failing after the retries (throttling past ``PUSH_THROTTLE_WAIT_SECONDS``, 5xx,
  network) make the shard count as failed: SQS redelivers it (progress kept) and after the
  queue's ``maxReceiveCount`` moves it to the dead-letter queue. A **poison shard** (fields
  missing or wrong, a frame over 128 KB) is reported as failed too, so it reaches the
  dead-letter queue after ``maxReceiveCount`` receives and never loops.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from chalicelib import aws
from chalicelib.registry import progress
from chalicelib.delivery import post
from chalicelib.delivery.summary import RETRYABLE, empty_summary, tally
from chalicelib.errors import AppError
from chalicelib.logtext import for_log
from chalicelib.settings import push_queue_name, websocket_settings

log = logging.getLogger("realtime.shards")

#: SQS's largest message, bytes (256 KiB; batches: :func:`chalicelib.aws.sqs_batches`)
MAX_MESSAGE_BYTES = 262_144
#: connection ids in one shard at most (``PUSH_SHARD_SIZE`` is capped here)
MAX_SHARD_IDS = 5000
#: longest connection id accepted in a shard, characters
MAX_ID_LENGTH = 1024
#: how long a shard's progress marker lives: SQS's longest retention (14 days) and a day
PROGRESS_TTL_SECONDS = 15 * 24 * 3600
#: attempts of one ``SendMessageBatch`` whose entries failed
SEND_ATTEMPTS = 4
#: the shape of a fan-out id
FANOUT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: the message's top-level key that marks a shard
SHARD_KEY = "shard"


class QueueUnavailable(AppError):
    """The push queue could not be reached or refused the shards (503)."""

    status = 503
    code = "queue_unavailable"
    public_message = "Push queue unavailable"


# --- producer ---------------------------------------------------------------------------------

def _frame_field(data: bytes) -> Dict[str, str]:
    """``{"frame": text}`` or ``{"frame_b64": base64}``, whichever is shorter in JSON."""
    encoded = base64.b64encode(data).decode("ascii")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"frame_b64": encoded}
    if len(json.dumps(text, ensure_ascii=False).encode("utf-8")) <= len(encoded) + 2:
        return {"frame": text}
    return {"frame_b64": encoded}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def plan(connection_ids: Sequence[str], data: bytes, *, fanout_id: str,
         shard_size: int) -> List[str]:
    """The shard messages (bodies) for one fan-out.

    Args:
        connection_ids: distinct, non-empty connection ids.
        data: the frame (at most 128 KB).
        fanout_id: the fan-out's id (:data:`FANOUT_ID`).
        shard_size: ids per shard at most (capped at :data:`MAX_SHARD_IDS`).
    Returns:
        JSON bodies, each at most :data:`MAX_MESSAGE_BYTES` bytes in UTF-8; every id is in
        exactly one of them, in order.
    """
    shard_size = max(1, min(MAX_SHARD_IDS, int(shard_size)))
    head = {"fanout": fanout_id, "index": 0, "count": 0, **_frame_field(data)}
    # room for the ids: the message with an empty list and the widest index/count numbers
    base = len(_dumps({SHARD_KEY: {**head, "index": 10 ** 9, "count": 10 ** 9,
                                   "ids": []}}).encode("utf-8"))
    groups: List[List[str]] = []
    current: List[str] = []
    size = base
    for cid in connection_ids:
        cost = len(_dumps(cid).encode("utf-8")) + 1
        if current and (len(current) >= shard_size or size + cost > MAX_MESSAGE_BYTES):
            groups.append(current)
            current, size = [], base
        current.append(cid)
        size += cost
    if current:
        groups.append(current)
    return [_dumps({SHARD_KEY: {**head, "index": index, "count": len(groups), "ids": ids}})
            for index, ids in enumerate(groups)]


def _sqs():
    return aws.client("sqs", websocket_settings().region)


def _queue_url() -> str:
    return aws.queue_url(_sqs(), push_queue_name(), websocket_settings().region)


def reset() -> None:
    """Forget the cached queue URL (tests; a changed ``PUSH_QUEUE_NAME``)."""
    aws.forget_queue_urls()


def send_bodies(bodies: Sequence[str]) -> None:
    """Put messages on the push queue with ``SendMessageBatch`` (entries that fail are sent
    again, :data:`SEND_ATTEMPTS` times at most).

    Raises:
        QueueUnavailable: SQS could not be reached, or entries still failed.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        url, sqs = _queue_url(), _sqs()
        for group in aws.sqs_batches(bodies):
            entries = [{"Id": str(i), "MessageBody": bodies[i]} for i in group]
            for attempt in range(SEND_ATTEMPTS):
                failed = sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
                if not failed:
                    break
                again = {item.get("Id") for item in failed}
                entries = [entry for entry in entries if entry["Id"] in again]
                time.sleep(min(1.0, 0.05 * 2 ** attempt))
            else:
                raise QueueUnavailable(f"{len(entries)} shards could not be queued")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise QueueUnavailable(f"SQS refused the shards: {code}") from None
    except BotoCoreError as exc:
        raise QueueUnavailable(f"SQS failed: {type(exc).__name__}") from None


def enqueue(connection_ids: Sequence[str], data: bytes,
            fanout_id: Optional[str] = None) -> Dict[str, int]:
    """Shard a fan-out onto the push queue.

    Args:
        connection_ids: the audience (duplicates and empty ids are dropped).
        data: the encoded frame (:func:`chalicelib.delivery.post.encode_frame`).
        fanout_id: defaults to a new random id.
    Returns:
        the delivery summary with nothing delivered yet, plus ``"queued"`` (connections
        queued) and ``"shards"`` (messages queued).
    Raises:
        QueueUnavailable: the queue could not take the shards (some may have been queued).
    """
    ids = [cid for cid in dict.fromkeys(connection_ids) if isinstance(cid, str) and cid]
    fanout_id = fanout_id or os.urandom(16).hex()
    bodies = plan(ids, data, fanout_id=fanout_id,
                  shard_size=websocket_settings().push_shard_size)
    send_bodies(bodies)
    log.info("fan-out %s: %d connections queued in %d shards", fanout_id, len(ids), len(bodies))
    return {**empty_summary(), "queued": len(ids), "shards": len(bodies)}


# --- consumer ---------------------------------------------------------------------------------

class PoisonShard(ValueError):
    """A shard message that can never be delivered (its fields are missing or wrong)."""


class Shard:
    """One parsed shard: ``fanout_id``, ``index``, ``data`` (bytes), ``ids`` (list)."""

    __slots__ = ("fanout_id", "index", "data", "ids")

    def __init__(self, fanout_id: str, index: int, data: bytes, ids: List[str]) -> None:
        self.fanout_id, self.index, self.data, self.ids = fanout_id, index, data, ids


def parse(shard: Any) -> Shard:
    """Validate a shard message's ``"shard"`` object.

    Raises:
        PoisonShard: a field is missing or wrong (the message says which, never the data).
    """
    if not isinstance(shard, Mapping):
        raise PoisonShard('"shard" must be an object')
    fanout_id, index, ids = shard.get("fanout"), shard.get("index"), shard.get("ids")
    if not isinstance(fanout_id, str) or not FANOUT_ID.match(fanout_id):
        raise PoisonShard('"fanout" must be 1-64 characters of A-Z a-z 0-9 _ -')
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise PoisonShard('"index" must be a non-negative integer')
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_SHARD_IDS or not all(
            isinstance(cid, str) and 0 < len(cid) <= MAX_ID_LENGTH for cid in ids):
        raise PoisonShard(f'"ids" must be 1-{MAX_SHARD_IDS} non-empty strings')
    if isinstance(shard.get("frame"), str):
        data = shard["frame"].encode("utf-8")
    elif isinstance(shard.get("frame_b64"), str):
        try:
            data = base64.b64decode(shard["frame_b64"], validate=True)
        except (binascii.Error, ValueError):
            raise PoisonShard('"frame_b64" is not base64') from None
    else:
        raise PoisonShard('"frame" (text) or "frame_b64" is required')
    if len(data) > post.MAX_FRAME_BYTES:
        raise PoisonShard(f"the frame is over {post.MAX_FRAME_BYTES} bytes")
    return Shard(fanout_id, index, data, list(dict.fromkeys(ids)))


def _receive_count(record: Mapping[str, Any]) -> int:
    attributes = record.get("attributes")
    try:
        return int(attributes.get("ApproximateReceiveCount"))  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        return 0  # unknown: treat as a possible redelivery


def handle(shard_object: Any, record: Mapping[str, Any]) -> bool:
    """Deliver one shard (see the module docstring for the guarantee).

    Args:
        shard_object: the message's ``"shard"`` value.
        record: the SQS record (``messageId``, ``attributes.ApproximateReceiveCount``).
    Returns:
        True when the shard is done; False when SQS should deliver it again (posts still
        failing, registry or settings unavailable, or a poison shard, which so reaches the
        dead-letter queue after ``maxReceiveCount`` receives).
    """
    message_id = for_log(record.get("messageId", "-"))
    try:
        shard = parse(shard_object)
    except PoisonShard as err:
        log.error("poison shard %s reported as failed (the dead-letter queue takes it after "
                  "maxReceiveCount receives): %s", message_id, err)
        return False
    label = f"shard {shard.index} of fan-out {shard.fanout_id} (message {message_id})"
    targets = shard.ids
    if _receive_count(record) != 1:
        try:
            reached = progress.shard_progress(shard.fanout_id, shard.index)
        except AppError as err:
            log.error("%s will be retried: its progress could not be read (%s)", label, err)
            return False
        targets = [cid for cid in shard.ids if cid not in reached]
        log.info("%s received again: %d of %d connections already reached", label,
                 len(shard.ids) - len(targets), len(shard.ids))
    try:
        outcomes = post.post_outcomes(targets, shard.data)
    except AppError as err:  # no endpoint configured
        log.error("%s will be retried: %s (%s)", label, err.code, err)
        return False
    settled = [cid for cid, outcome in outcomes.items() if outcome != RETRYABLE]
    left = len(outcomes) - len(settled)
    if settled:
        try:
            progress.add_shard_progress(shard.fanout_id, shard.index, settled,
                                           expires_at=int(time.time()) + PROGRESS_TTL_SECONDS)
        except AppError as err:
            log.warning("%s: progress not recorded (%s); a redelivery would repeat it", label,
                        err)
    summary = tally(outcomes.values())
    if left:
        log.warning("%s will be retried for %d connections: %s", label, left, summary)
        return False
    log.info("%s delivered: %s", label, summary)
    return True
