"""A local SQS event source mapping: polls a queue and invokes the app's ``@app.on_sqs_message``
handler with SQS-shaped events, as Lambda's event source mapping does. Dev tooling only.

Behaviour (AWS Lambda developer guide, "Using Lambda with Amazon SQS"):

* up to ``batch_size`` messages per invocation, long polling;
* the event is ``{"Records": [{"messageId", "receiptHandle", "body", "attributes",
  "messageAttributes", "md5OfBody", "eventSource": "aws:sqs", "eventSourceARN",
  "awsRegion"}]}``;
* the handler returns normally → every message is deleted, except the ones listed in a
  ``{"batchItemFailures": [{"itemIdentifier": messageId}]}`` answer (``ReportBatchItemFailures``);
  the handler raises → nothing is deleted, the batch comes back after the visibility timeout.

The queue endpoint is boto3's own (``AWS_ENDPOINT_URL_SQS`` for moto server); the queue is created
when missing (local stacks only).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional

log = logging.getLogger("local_sqs")


class _Context:
    def __init__(self, name: str):
        self.function_name = name
        self.aws_request_id = ""
        self._deadline = time.monotonic() + 60

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def sqs_handlers(app: Any) -> List[Dict[str, Any]]:
    """The app's SQS event sources: ``[{"name": function name, "queue": queue name,
    "batch_size": n}]`` (from ``app.event_sources``, what ``chalice deploy`` reads)."""
    from chalice.app import SQSEventConfig

    found = []
    for source in getattr(app, "event_sources", []):
        if isinstance(source, SQSEventConfig) and source.queue:
            found.append({"name": source.name, "queue": source.queue,
                          "batch_size": getattr(source, "batch_size", 10) or 10})
    return found


class SqsPoller:
    """Feed one SQS queue to one handler of the app, in a daemon thread.

    Args:
        app: the Chalice app.
        function_name: the handler's name in ``app.handler_map`` (``push_worker``).
        queue_name: the queue; created if missing.
        batch_size: messages per invocation (1-10).
        region: AWS region of the queue.
        wait_seconds: long-poll duration per receive call (seconds).
        retry_delay: when set, messages the handler reports as failed are made visible again
            after this many seconds (``ChangeMessageVisibilityBatch``) instead of after the
            queue's visibility timeout — a local shortcut; Lambda waits for the timeout.
    """

    def __init__(self, app: Any, function_name: str, queue_name: str, batch_size: int = 10,
                 region: str = "us-east-1", wait_seconds: int = 1,
                 retry_delay: Optional[int] = None):
        import boto3

        self.app = app
        self.function_name = function_name
        self.queue_name = queue_name
        self.batch_size = max(1, min(10, batch_size))
        self.region = region
        self.wait_seconds = wait_seconds
        self.retry_delay = retry_delay
        self.sqs = boto3.session.Session().client("sqs", region_name=region)
        self.queue_url: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self, connect_wait: float = 30.0) -> "SqsPoller":
        """Create the queue if needed and start polling; returns self.

        Args:
            connect_wait: seconds to keep retrying while the SQS endpoint refuses
                connections (``make run`` starts moto beside this gateway, not before it).
        Raises:
            botocore's ``EndpointConnectionError`` after ``connect_wait``, or any other error
            of ``CreateQueue`` at once.
        """
        from botocore.exceptions import EndpointConnectionError

        deadline = time.monotonic() + connect_wait
        while True:
            try:
                self.queue_url = self.sqs.create_queue(QueueName=self.queue_name)["QueueUrl"]
                break
            except EndpointConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._thread = threading.Thread(target=self._run, name=f"sqs-{self.queue_name}",
                                        daemon=True)
        self._thread.start()
        log.info("SQS queue %s feeds %s", self.queue_name, self.function_name)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.wait_seconds + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # keep polling: a local queue may restart
                log.exception("polling %s failed", self.queue_name)
                self._stop.wait(1)

    def poll_once(self) -> int:
        """Receive one batch and invoke the handler; returns the number of messages."""
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=self.wait_seconds, AttributeNames=["All"],
            MessageAttributeNames=["All"])
        messages = response.get("Messages", [])
        if not messages:
            return 0
        arn = f"arn:aws:sqs:{self.region}:123456789012:{self.queue_name}"
        records = [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"], "attributes": m.get("Attributes", {}),
            "messageAttributes": m.get("MessageAttributes", {}),
            "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
            "eventSourceARN": arn, "awsRegion": self.region,
        } for m in messages]
        try:
            result = self.app.handler_map[self.function_name](
                {"Records": records}, _Context(self.function_name))
        except Exception:
            log.exception("%s failed; the batch will be retried", self.function_name)
            return len(messages)
        failed = set()
        if isinstance(result, dict):
            failed = {item.get("itemIdentifier") for item in result.get("batchItemFailures") or []
                      if isinstance(item, dict)}
        done = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                for i, r in enumerate(records) if r["messageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=done)
        if failed:
            log.warning("%s reported %d failed message(s); they will be retried",
                        self.function_name, len(failed))
            if self.retry_delay is not None:
                again = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"],
                          "VisibilityTimeout": self.retry_delay}
                         for i, r in enumerate(records) if r["messageId"] in failed]
                self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url,
                                                         Entries=again)
        return len(messages)
