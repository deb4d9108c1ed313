"""devtools.local_sqs: the local stand-in for Lambda's SQS event source mapping (moto SQS)."""
from __future__ import annotations

import json

import boto3
import pytest
from chalice import Chalice
from moto import mock_aws

from devtools.local_sqs import SqsPoller, sqs_handlers

app = Chalice(app_name="sqs-conformance")
BATCHES: list = []


@app.on_sqs_message(queue="local-sqs-test", batch_size=5)
def worker(event):
    records = event.to_dict()["Records"]
    BATCHES.append(records)
    failed = [{"itemIdentifier": r["messageId"]} for r in records
              if json.loads(r["body"]).get("fail")]
    if any(json.loads(r["body"]).get("crash") for r in records):
        raise RuntimeError("worker bug")
    return {"batchItemFailures": failed}


@pytest.fixture
def poller(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    BATCHES.clear()
    with mock_aws():
        yield SqsPoller(app, "worker", "local-sqs-test", batch_size=5, wait_seconds=0)


def _send(poller, *bodies):
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="local-sqs-test")["QueueUrl"]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    return sqs, url


def _left(sqs, url):
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "0"})
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"])


def test_sqs_handlers_are_found_from_the_app():
    assert sqs_handlers(app) == [{"name": "worker", "queue": "local-sqs-test", "batch_size": 5}]


def test_batches_are_sqs_shaped_and_only_reported_failures_stay(poller):
    sqs, url = _send(poller, {"n": 1}, {"n": 2, "fail": True}, {"n": 3})
    poller.queue_url = url
    assert poller.poll_once() == 3
    records = BATCHES[0]
    assert {json.loads(r["body"])["n"] for r in records} == {1, 2, 3}
    assert all(r["eventSource"] == "aws:sqs" and r["receiptHandle"] for r in records)
    assert records[0]["eventSourceARN"].endswith(":local-sqs-test")
    assert _left(sqs, url) == 1


def test_a_failing_handler_leaves_the_whole_batch(poller):
    sqs, url = _send(poller, {"n": 1}, {"n": 2, "crash": True})
    poller.queue_url = url
    assert poller.poll_once() == 2
    assert _left(sqs, url) == 2


def test_start_waits_for_an_sqs_endpoint_that_comes_up_late(monkeypatch):
    """`make run` starts moto beside the gateway: the poller's CreateQueue waits for it."""
    import socket
    import threading

    from moto.server import ThreadedMotoServer

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{port}")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    late = threading.Timer(1.0, server.start)
    late.start()
    poller = SqsPoller(app, "worker", "local-sqs-late", wait_seconds=0)
    try:
        poller.start(connect_wait=20)
        assert poller.queue_url and poller.queue_url.endswith("/local-sqs-late")
    finally:
        poller.stop()
        late.join()
        server.stop()
