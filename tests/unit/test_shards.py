"""Sharded fan-out through the push queue (chalicelib.delivery.shards; issue 11 item 3): moto SQS
and DynamoDB in-process, a real management API on 127.0.0.1, the app's real ``push_worker``."""
from __future__ import annotations

import json

import boto3
import pytest

from chalicelib import settings
from chalicelib.registry import connections, subscriptions, table
from chalicelib.doors import queue
from chalicelib.delivery import post, push, shards
from chalicelib.auth.principal import Principal
from devtools.local_sqs import SqsPoller
from tests.support import events
from tests.support.websocket import aws_env, management_api, registry  # noqa: F401

QUEUE = "realtime-push-test"
DLQ = "realtime-push-test-dlq"
ALICE = Principal(sub="alice", issuer="https://issuer.example")


@pytest.fixture
def env(registry, management_api, monkeypatch):
    """Threshold 5 connections, shards of 4; a push queue with a dead-letter queue
    (maxReceiveCount 3)."""
    for name, value in {"PUSH_SHARD_THRESHOLD": "5", "PUSH_SHARD_SIZE": "4",
                        "PUSH_QUEUE_NAME": QUEUE, "PUSH_MAX_ATTEMPTS": "2"}.items():
        monkeypatch.setenv(name, value)
    settings.reset()
    shards.reset()
    sqs = boto3.client("sqs", region_name="us-east-1")
    dlq = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=QUEUE, Attributes={
        "VisibilityTimeout": "30",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})})[
        "QueueUrl"]
    yield {"api": management_api, "sqs": sqs, "url": url, "dlq": dlq}
    shards.reset()


def _subscribe(count: int, channel: str = "stadium", prefix: str = "s") -> list:
    ids = [f"{prefix}{index}=" for index in range(count)]
    for cid in ids:
        subscriptions.subscribe(connections.register(cid, ALICE), channel)
    return ids


def _receive(sqs, url, count=10):
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=count,
                                   AttributeNames=["All"]).get("Messages", [])
    return [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
             "body": m["Body"], "attributes": m["Attributes"]} for m in messages]


def _drain(env, rounds=20):
    """Run the app's push_worker on the queue until it is empty (failed messages come back
    at once)."""
    import app as app_module

    poller = SqsPoller(app_module.app, "push_worker", QUEUE, wait_seconds=0, retry_delay=0)
    poller.queue_url = env["url"]
    for _ in range(rounds):
        if not poller.poll_once():
            return
    raise AssertionError("the queue did not drain")


def _dlq_bodies(env):
    return [json.loads(m["body"]) for m in _receive(env["sqs"], env["dlq"])]


# --- plan -------------------------------------------------------------------------------------

def test_shards_hold_every_id_once_within_the_count_and_sqs_size_limits():
    ids = [f"conn-{index:06d}=" for index in range(2500)]
    bodies = shards.plan(ids, b'{"type":"event"}', fanout_id="f1", shard_size=1000)
    parsed = [json.loads(body)["shard"] for body in bodies]
    assert [len(p["ids"]) for p in parsed] == [1000, 1000, 500]
    assert [p["index"] for p in parsed] == [0, 1, 2] and {p["count"] for p in parsed} == {3}
    assert sum((p["ids"] for p in parsed), []) == ids
    assert parsed[0]["frame"] == '{"type":"event"}'

    # a 128 KB frame that JSON escaping would double travels as base64; shards shrink to fit
    big = b'"' * post.MAX_FRAME_BYTES
    many = [f"connection-{index:06d}=" for index in range(5000)]
    bodies = shards.plan(many, big, fanout_id="f2", shard_size=5000)
    assert all(len(body.encode()) <= shards.MAX_MESSAGE_BYTES for body in bodies)
    assert all("frame_b64" in json.loads(body)["shard"] for body in bodies)
    parsed = [shards.parse(json.loads(body)["shard"]) for body in bodies]
    assert all(shard.data == big for shard in parsed)
    assert sum((shard.ids for shard in parsed), []) == many
    assert len(parsed) == 2  # 5,000 ids do not fit beside the frame in one message


# --- producer ---------------------------------------------------------------------------------

def test_a_large_audience_is_answered_at_once_with_the_shard_count(env, client, dev_issuer):
    ids = _subscribe(10)
    token = dev_issuer.mint("alice", scope="notifications:send")
    response = client.http.post("/notifications", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        body=json.dumps({"channel": "stadium", "event": "goal", "data": 1}))
    assert response.status_code == 202
    assert json.loads(response.body) == {"delivered": 0, "gone": 0, "failed": 0,
                                         "retryable": 0, "queued": 10, "shards": 3}
    assert env["api"].attempts == {}  # nothing posted by the API call itself

    _drain(env)
    frame = {"type": "event", "channel": "stadium", "event": "goal", "data": 1, "id": 1}
    assert all(env["api"].frames(cid) == [frame] for cid in ids)
    assert env["api"].delivered_total() == 10


def test_a_small_audience_is_still_delivered_directly(env):
    _subscribe(5)
    summary = push.deliver(push.parse_notification({"channel": "stadium", "event": "e"}))
    assert summary == {"delivered": 5, "gone": 0, "failed": 0, "retryable": 0}


def test_the_worker_shards_a_large_channel_message_back_onto_the_queue(env):
    ids = _subscribe(9)
    env["sqs"].send_message(QueueUrl=env["url"], MessageBody=json.dumps(
        {"channel": "stadium", "event": "flash"}))
    _drain(env)
    assert all(len(env["api"].received[cid]) == 1 for cid in ids)
    assert env["api"].delivered_total() == 9


# --- consumer ---------------------------------------------------------------------------------

def test_a_redelivered_shard_does_not_resend_to_connections_it_reached(env):
    api = env["api"]
    ids = _subscribe(4, prefix="r")
    api.script["r1="] = [503, 503]  # fails past PUSH_MAX_ATTEMPTS=2 on the first delivery
    api.gone.add("r3=")
    body = shards.plan(ids, b'{"n":1}', fanout_id="redo", shard_size=4)[0]

    first = events.sqs_record(body, message_id="m1")
    assert queue.handle_batch(events.sqs_event([first])) == {
        "batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert api.attempts == {"r0=": 1, "r1=": 2, "r2=": 1, "r3=": 1}

    again = events.sqs_record(body, message_id="m1")
    again["attributes"]["ApproximateReceiveCount"] = "2"
    assert queue.handle_batch(events.sqs_event([again])) == {"batchItemFailures": []}
    assert api.attempts == {"r0=": 1, "r1=": 3, "r2=": 1, "r3=": 1}  # only r1= again
    assert [len(api.received[cid]) for cid in ids] == [1, 1, 1, 0]

    # a third delivery (a lost delete) posts nothing
    again["attributes"]["ApproximateReceiveCount"] = "3"
    assert queue.handle_batch(events.sqs_event([again])) == {"batchItemFailures": []}
    assert sum(api.attempts.values()) == 6


def test_a_poison_shard_goes_to_the_dead_letter_queue_and_never_loops(env, caplog):
    ids = _subscribe(2, prefix="p")
    good = shards.plan(ids, b'{"ok":true}', fanout_id="good", shard_size=4)[0]
    poison = [{"shard": {"fanout": "bad id!", "index": 0, "frame": "x", "ids": ["a="]}},
              {"shard": {"fanout": "f", "index": -1, "frame": "x", "ids": ["a="]}},
              {"shard": {"fanout": "f", "index": 0, "frame": "x", "ids": []}},
              {"shard": {"fanout": "f", "index": 0, "ids": ["a="]}},
              {"shard": {"fanout": "f", "index": 0, "frame_b64": "%%%", "ids": ["a="]}},
              {"shard": "not an object"}]
    for body in [good, *map(json.dumps, poison)]:
        env["sqs"].send_message(QueueUrl=env["url"], MessageBody=body)

    _drain(env)  # ends: after maxReceiveCount receives SQS moves each poison shard away

    assert [len(env["api"].received[cid]) for cid in ids] == [1, 1]
    assert sorted(map(json.dumps, _dlq_bodies(env))) == sorted(map(json.dumps, poison))
    assert env["api"].attempts.keys() == set(ids)
    assert "poison shard" in caplog.text and "bad id!" not in caplog.text


def test_a_shard_failing_every_time_ends_in_the_dead_letter_queue(env):
    api = env["api"]
    ids = _subscribe(3, prefix="d")
    api.script["d0="] = [503] * 100
    env["sqs"].send_message(QueueUrl=env["url"], MessageBody=shards.plan(
        ids, b'{"n":2}', fanout_id="stuck", shard_size=4)[0])
    _drain(env)
    assert api.attempts["d0="] == 3 * 2  # maxReceiveCount x PUSH_MAX_ATTEMPTS
    assert api.attempts["d1="] == api.attempts["d2="] == 1  # reached once, never again
    dead = _dlq_bodies(env)
    assert len(dead) == 1 and dead[0]["shard"]["fanout"] == "stuck"


# --- the audience Query -----------------------------------------------------------------------

def test_the_audience_query_follows_every_page(aws_env, monkeypatch):
    from tests.support.registry_stand_in import RegistryStandIn, subscriber_id

    with RegistryStandIn(items=25_000, page=10_000) as registry:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", registry.endpoint_url)
        table.reset_clients()
        try:
            ids = subscriptions.subscribers_of_channel("stadium")
            assert ids == [subscriber_id(index) for index in range(25_000)]
            assert registry.queries == 3
            # an error answer is still botocore's to parse and ours to report
            monkeypatch.setattr(registry, "answer", lambda operation, request: (
                400, {"__type": "com.amazon.coral.validate#ValidationException",
                      "message": "refused"}))
            with pytest.raises(table.RegistryUnavailable) as caught:
                subscriptions.subscribers_of_channel("stadium")
            assert "ValidationException" in str(caught.value)
        finally:
            table.reset_clients()



def test_a_sharded_fan_out_reaches_each_dialect_in_its_own_encoding(env):
    """Shards carry one encoded frame: a channel with native and Pusher-protocol subscribers
    is sharded per dialect, so pusher-js gets Pusher's frame (data as JSON text)."""
    native = _subscribe(4, prefix="n")
    pusher_ids = [f"p{index}=" for index in range(4)]
    for cid in pusher_ids:
        subscriptions.subscribe(connections.register(cid, None, dialect=connections.PUSHER),
                              "stadium")
    summary = push.deliver(push.parse_notification(
        {"channel": "stadium", "event": "goal", "data": {"score": 1}}))
    assert summary["queued"] == 8 and summary["shards"] == 2  # one shard per dialect
    _drain(env)
    assert all(env["api"].frames(cid) == [{"type": "event", "channel": "stadium",
                                          "event": "goal", "data": {"score": 1}, "id": 1}]
               for cid in native)
    assert all(env["api"].frames(cid) == [{"event": "goal", "channel": "stadium",
                                          "data": '{"score":1}'}]
               for cid in pusher_ids)
