"""The SQS push worker: delivers ``{"connection_id"|"user_id"|"channel", "event", "data"}``
messages dropped on the push queue by asynchronous work (the seeds' "API enqueues, worker
finishes, user is told" pattern).

* Malformed messages (text :func:`chalicelib.jsonutil.loads` refuses: invalid JSON, ``NaN``,
  numbers overflowing to infinity, lone surrogates, duplicate names, nesting over 64 levels;
  wrong fields; a frame over 128 KB) are logged by message id and reason, never with their
  data, and dropped: retrying them could never succeed, and failing the batch would redeliver
  its good messages.
* Transient failures (registry unavailable, settings missing, posts still throttled or failing
  with 5xx after ``PUSH_MAX_ATTEMPTS``) are reported as partial batch failures
  (``{"batchItemFailures": [{"itemIdentifier": messageId}]}``), so SQS retries only those
  messages (AWS docs, "Handling errors for an SQS event source in Lambda": reporting batch item
  failures). This needs ``FunctionResponseTypes: [ReportBatchItemFailures]`` on the event source
  mapping, which Chalice's ``on_sqs_message`` does not set: the deployment adds it.
  A retried channel message is delivered again to every subscriber: delivery is at least once.
* An unexpected failure on one record is reported for that record alone (SQS retries it, then
  moves it to the dead-letter queue); it never fails the whole batch.
* A channel or user with more than ``PUSH_SHARD_THRESHOLD`` connections is sharded back onto
  the queue (:mod:`chalicelib.delivery.shards`); shard messages (``{"shard": {...}}``) are
  delivered by :func:`chalicelib.delivery.shards.handle`: a redelivered shard skips the connections
  it already reached, a poison shard is reported as failed so the dead-letter queue takes it.
* Webhook jobs (``{"webhook": {...}}``, issue 10 D) are POSTed to their external target by
  :mod:`chalicelib.delivery.webhook_sender`, the jobs of one batch in parallel; a failed POST is
  reported as a batch item failure after a back-off (``ChangeMessageVisibility``).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from chalicelib import jsonutil, observability
from chalicelib.delivery import push
from chalicelib.delivery.summary import RETRYABLE
from chalicelib.errors import AppError, PayloadTooLarge
from chalicelib.logtext import for_log

log = logging.getLogger("realtime.worker")


def handle_record(record: Dict[str, Any]) -> bool:
    """Deliver one SQS record.

    Args:
        record: one element of the event's ``Records`` (``messageId``, ``body``...).
    Returns:
        True when the record is done (delivered, or malformed and dropped); False when it
        should be retried.
    """
    message_id = for_log(record.get("messageId", "-"))
    try:
        body = jsonutil.loads(record.get("body") or "")
        if isinstance(body, dict) and "shard" in body:  # chalicelib.delivery.shards.SHARD_KEY
            # lazy: the cold start of every function pays less
            from chalicelib.delivery import shards

            return shards.handle(body[shards.SHARD_KEY], record)
        if isinstance(body, dict) and "webhook" in body:  # chalicelib.delivery.webhook_sender.JOB_KEY
            from chalicelib.delivery import webhook_sender

            return webhook_sender.handle(body[webhook_sender.JOB_KEY], record)
        notification = push.parse_notification(body)
    except jsonutil.JSONRejected as err:
        log.warning("push message %s dropped: body refused as JSON: %s", message_id, err.reason)
        return True
    except AppError as err:
        log.warning("push message %s dropped: %s", message_id, for_log(err))
        return True
    try:
        summary = push.deliver(notification)
    except PayloadTooLarge as err:
        log.warning("push message %s dropped: %s", message_id, err)
        return True
    except (ValueError, TypeError) as err:  # a frame that cannot be encoded: never succeeds
        log.warning("push message %s dropped: its frame cannot be encoded (%s)", message_id,
                    type(err).__name__)
        return True
    except AppError as err:  # registry unavailable, settings missing: worth a retry
        log.error("push message %s will be retried: %s (%s)", message_id, err.code, err)
        return False
    except Exception:
        log.exception("push message %s will be retried", message_id)
        return False
    log.info("push message %s to %s %s: %s", message_id, notification.target,
             for_log(notification.address), summary)
    if summary[RETRYABLE]:
        log.warning("push message %s will be retried: %d transient failures", message_id,
                    summary[RETRYABLE])
        return False
    return True


def handle_batch(event: Any, app: Any = None) -> Dict[str, List[Dict[str, str]]]:
    """The ``on_sqs_message`` handler.

    Args:
        event: Chalice ``SQSEvent`` (or the raw Lambda event dict).
        app: the Chalice app (unused; kept for a uniform handler signature).
    Returns:
        ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}`` listing the records
        to retry (empty when all are done).
    """
    raw = event.to_dict() if hasattr(event, "to_dict") else event
    records = raw.get("Records") if isinstance(raw, dict) else None
    failures: List[Dict[str, str]] = []
    webhook_results = _webhook_jobs(records or [])
    for index, record in enumerate(records or []):
        if not isinstance(record, dict):
            log.warning("SQS event with a non-object record dropped")
            continue
        try:
            done = webhook_results[index] if index in webhook_results else handle_record(record)
        except Exception:  # one record's surprise must not fail (and redeliver) the batch
            log.exception("push message %s will be retried: unexpected failure",
                          for_log(record.get("messageId", "-")))
            done = False
        if done:
            continue
        message_id = record.get("messageId")
        if isinstance(message_id, str) and message_id:
            failures.append({"itemIdentifier": message_id})
        else:  # an empty identifier would fail the whole batch
            log.error("a record to retry has no messageId; it is dropped")
    observability.count("ShardsProcessed", len(records or []))
    observability.count("ShardsRetried", len(failures))
    return {"batchItemFailures": failures}


def _webhook_jobs(records: List[Any]) -> Dict[int, bool]:
    """The webhook jobs of a batch, POSTed in parallel (:func:`chalicelib.delivery.webhook_sender.
    handle_many`): ``{record index: done}``. Records that are not well-formed webhook jobs are
    left to :func:`handle_record`."""
    jobs: Dict[int, Any] = {}
    for index, record in enumerate(records):
        body = record.get("body") if isinstance(record, dict) else None
        if isinstance(body, str) and body.startswith('{"webhook"'):
            try:
                parsed = jsonutil.loads(body)
            except jsonutil.JSONRejected:
                continue
            if isinstance(parsed, dict) and "webhook" in parsed:
                jobs[index] = parsed["webhook"]
    if not jobs:
        return {}
    from chalicelib.delivery import webhook_sender

    indexes = list(jobs)
    try:
        results = webhook_sender.handle_many([(jobs[i], records[i]) for i in indexes])
    except Exception:  # never fail the batch: every job is retried
        log.exception("webhook jobs will be retried: unexpected failure")
        results = [False] * len(indexes)
    return dict(zip(indexes, results))
