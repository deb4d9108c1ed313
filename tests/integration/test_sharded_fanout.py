"""Issue 11 item 3: a channel too large for one invocation through the local push queue,
delivered by three worker processes running the app's real ``push_worker``. The sizes are the
production shape scaled down 10 times through the settings (2,000 subscribers above a
``PUSH_SHARD_THRESHOLD`` of 500, 20 shards of ``PUSH_SHARD_SIZE`` 100, an audience read in two
pages of 1,000), so the test shows sharding, not the speed of the machine.

Parts: SQS is a moto server (its own process); the registry is
:class:`tests.support.registry_stand_in.RegistryStandIn` (DynamoDB's JSON protocol for the
audience Query pages and the shards' progress markers: moto would need minutes to hold and
read thousands of subscriptions); the management API is :class:`tests.support.management_api.
ManagementAPI`, which records every post. The code under test — the worker reading the
audience, sharding it onto the queue, the workers delivering shards — is the real one.
"""
from __future__ import annotations

import json
import os
import time

import boto3

from tests.support import queue_processes
from tests.support.management_api import ManagementAPI
from tests.support.registry_stand_in import RegistryStandIn, subscriber_id

SUBSCRIBERS = 2_000
SHARD_SIZE = 100
PAGE = 1_000  # audience items per Query page (DynamoDB's 1 MB holds ~10,000)
WORKERS = 3
QUEUE = "realtime-push-shards-test"
FRAME = {"type": "event", "channel": "stadium", "event": "goal", "data": {"score": [1, 0]}}


def _env(sqs: str, dynamodb: str, management: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "PUSH_", "WEBSOCKET_"))}
    env.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "STAGE": "dev",
        "AWS_ENDPOINT_URL_SQS": sqs, "AWS_ENDPOINT_URL_DYNAMODB": dynamodb,
        "CONNECTIONS_TABLE": "realtime-connections-test", "WEBSOCKET_ENDPOINT_URL": management,
        "PUSH_QUEUE_NAME": QUEUE, "PUSH_MAX_WORKERS": "16", "PUSH_MAX_ATTEMPTS": "2",
        "PUSH_SHARD_THRESHOLD": "500", "PUSH_SHARD_SIZE": str(SHARD_SIZE),
        "PYTHONPATH": str(queue_processes.ROOT),
    })
    return env


def _left(sqs, url) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(value) for value in attributes.values())


def test_a_sharded_channel_gets_each_subscriber_exactly_one_frame():
    ids = [subscriber_id(index) for index in range(SUBSCRIBERS)]
    failing = ids[7::97]  # fail past PUSH_MAX_ATTEMPTS: their shards come back once
    gone = ids[50::400]
    with ManagementAPI(stage="test") as api, \
            RegistryStandIn(items=SUBSCRIBERS, page=PAGE) as registry:
        for cid in failing:
            api.script[cid] = [503, 503]
        api.gone.update(gone)
        sqs_process, sqs_url = queue_processes.start(["sqs"])
        workers = []
        try:
            env = _env(sqs_url, registry.endpoint_url, api.endpoint_url)
            workers = [queue_processes.start(["worker", QUEUE, "2"], env)[0]
                       for _ in range(WORKERS)]
            sqs = boto3.client("sqs", endpoint_url=sqs_url, region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
            url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(
                {"channel": "stadium", "event": "goal", "data": FRAME["data"]}))

            expected = SUBSCRIBERS - len(gone)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                time.sleep(0.1)
                if api.delivered_total() >= expected and _left(sqs, url) == 0:
                    break
            time.sleep(0.5)  # a late duplicate would show now
            left = _left(sqs, url)
        finally:
            for process in workers:  # all at once: each ends its current long poll
                process.stdin.close()
            for process in workers:
                queue_processes.stop(process)
            queue_processes.stop(sqs_process)

        assert left == 0
        assert api.delivered_total() == SUBSCRIBERS - len(gone)
        # the channel's first event: id 1, recorded once in its history before any shard
        assert len(registry.events["history#channel:stadium"]) == 1
        body = json.dumps({**FRAME, "id": 1}, separators=(",", ":")).encode()
        missed = [cid for cid in ids if cid not in api.gone and api.received[cid] != [body]]
        assert missed == []  # each connection got exactly one frame, the right one
        assert all(api.attempts[cid] == 1 and not api.received[cid] for cid in gone)
        # the shards holding a failing connection were delivered again, to it alone
        assert all(api.attempts[cid] == 3 for cid in failing)
        assert sum(api.attempts.values()) == SUBSCRIBERS + 2 * len(failing)
        assert len(registry.progress) == SUBSCRIBERS // SHARD_SIZE  # 20 shards
        assert registry.queries == 2  # one audience read, two pages
