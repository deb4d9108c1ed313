"""Webhooks out to external URLs (issue 10 D): events of ``chalicelib.delivery.webhooks_out`` become
signed Pusher webhooks, queued on the (moto) push queue and POSTed by the real ``push_worker`` to a
real HTTP receiver on 127.0.0.1 that checks them with the ``pusher`` library's ``validate_webhook``.
"""
from __future__ import annotations

import email.utils
import json
import socket
import time

import boto3
import pytest

from chalicelib.delivery import webhook_sender, webhooks_out
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.websocket import aws_env, registry  # noqa: F401

QUEUE = "realtime-push-hooks-test"
PATH = "/pusher/s3cr3t-path?token=tok-123"


class Queue:
    """The moto push queue, read the way Lambda's event source mapping reads it."""

    def __init__(self) -> None:
        self.sqs = boto3.client("sqs", region_name="us-east-1")
        self.url = self.sqs.create_queue(QueueName=QUEUE)["QueueUrl"]

    def records(self, visibility=None, wait=0):
        """Up to 10 messages as Lambda SQS records; ``visibility`` (seconds) is this receive's
        visibility timeout (0 leaves them visible: only the worker then hides a message)."""
        extra = {} if visibility is None else {"VisibilityTimeout": visibility}
        messages = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, AttributeNames=["All"],
            WaitTimeSeconds=wait, **extra).get("Messages", [])
        return [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                 "body": m["Body"], "attributes": m.get("Attributes", {}),
                 "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""),
                 "eventSource": "aws:sqs",
                 "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{QUEUE}",
                 "awsRegion": "us-east-1"} for m in messages]

    def jobs(self):
        return [json.loads(r["body"])["webhook"] for r in self.records()]


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def queue(registry, monkeypatch):
    monkeypatch.setenv("PUSH_QUEUE_NAME", QUEUE)
    webhook_sender.reset()
    yield Queue()
    webhook_sender.reset()


def configure(monkeypatch, *targets):
    monkeypatch.setenv("PUSHER_WEBHOOKS", json.dumps(list(targets)))
    from chalicelib import settings

    settings.reset()


@pytest.fixture
def hooks(receiver, queue, monkeypatch):
    configure(monkeypatch, {"url": receiver.url(PATH),
                            "event_types": ["member_added", "member_removed", "cache_miss"]})
    return receiver


def work(client, *records):
    """One push_worker invocation (Chalice's test client: the app's real handler)."""
    return client.lambda_.invoke("push_worker", {"Records": list(records)}).payload


def failures(result):
    return [item["itemIdentifier"] for item in result["batchItemFailures"]]


# --- format and signature ---------------------------------------------------------------------

def test_events_reach_the_receiver_signed_as_pusher_signs(hooks, queue, client):
    before = int(time.time() * 1000)
    with webhook_sender.batch():
        webhooks_out.member_added("presence-room", "alice")
        webhooks_out.cache_miss("cache-news")
        webhooks_out.on_occupancy("presence-room", True)  # not among the target's event types
    (record,) = queue.records()
    assert work(client, record) == {"batchItemFailures": []}
    (request,) = hooks.requests
    assert request["valid"], "pusher.Pusher.validate_webhook refused the webhook"
    assert request["path"] == PATH
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-pusher-key"] == "app-key"
    (webhook,) = hooks.accepted
    assert set(webhook) == {"time_ms", "events"}
    assert isinstance(webhook["time_ms"], int)
    assert before <= webhook["time_ms"] <= time.time() * 1000
    assert webhook["events"] == [
        {"name": "member_added", "channel": "presence-room", "user_id": "alice"},
        {"name": "cache_miss", "channel": "cache-news"}]


def test_client_events_carry_pusher_fields(receiver, queue, client, monkeypatch):
    configure(monkeypatch, {"url": receiver.url("/"), "event_types": ["client_event"]})
    webhooks_out.client_event("presence-room", "client-typing", {"on": True}, "abc=",
                              user_id="alice")
    (record,) = queue.records()
    assert work(client, record) == {"batchItemFailures": []}
    (webhook,) = receiver.accepted
    (event,) = webhook["events"]
    assert event["name"] == "client_event" and event["event"] == "client-typing"
    assert event["data"] == '{"on":true}' and event["user_id"] == "alice"
    assert event["socket_id"]


def test_custom_headers_are_sent_and_cannot_replace_the_signature(receiver, queue, client,
                                                                  monkeypatch):
    configure(monkeypatch, {"url": receiver.url("/"), "event_types": ["member_added"],
                            "headers": {"Authorization": "Bearer receiver-token"}})
    webhooks_out.member_added("presence-room", "bob")
    assert work(client, *queue.records()) == {"batchItemFailures": []}
    (request,) = receiver.requests
    assert request["headers"]["Authorization"] == "Bearer receiver-token"
    assert request["valid"]


# --- what goes on the queue ---------------------------------------------------------------------

def test_one_invocation_is_one_send_with_one_message_per_target(receiver, queue, monkeypatch):
    configure(monkeypatch,
              {"url": receiver.url("/a"), "event_types": ["member_added"]},
              {"url": receiver.url("/b"), "event_types": ["member_added", "cache_miss"],
               "filter": {"channel_name_starts_with": "presence-"}})
    sqs = webhook_sender._sqs()
    calls = []
    real = sqs.send_message_batch
    monkeypatch.setattr(sqs, "send_message_batch",
                        lambda **kw: calls.append(kw) or real(**kw))
    with webhook_sender.batch():
        webhooks_out.member_added("presence-room", "alice")
        webhooks_out.member_added("private-ish", "bob")  # b's filter leaves it out
        webhooks_out.cache_miss("presence-cache")
        assert calls == []  # nothing leaves before the invocation ends
    assert len(calls) == 1 and len(calls[0]["Entries"]) == 2
    jobs = {job["target"]: job for job in queue.jobs()}
    first = jobs[webhook_sender.target_id(receiver.url("/a"))]
    second = jobs[webhook_sender.target_id(receiver.url("/b"))]
    assert [e["user_id"] for e in first["events"]] == ["alice", "bob"]
    assert [e["name"] for e in second["events"]] == ["member_added", "cache_miss"]
    assert first["time_ms"] == second["time_ms"]
    for text in (json.dumps(job) for job in jobs.values()):
        assert "127.0.0.1" not in text  # the queue names targets by id, never by URL


def test_outside_an_invocation_scope_events_are_queued_at_once(hooks, queue):
    webhooks_out.member_removed("presence-room", "alice")
    (job,) = queue.jobs()
    assert job["events"] == [
        {"name": "member_removed", "channel": "presence-room", "user_id": "alice"}]


def test_nothing_is_queued_without_targets_or_wanted_events(receiver, queue, monkeypatch):
    webhooks_out.member_added("presence-room", "alice")  # PUSHER_WEBHOOKS unset
    configure(monkeypatch, {"url": receiver.url("/"), "event_types": ["cache_miss"]})
    webhooks_out.member_added("presence-room", "alice")
    assert queue.jobs() == []


def test_a_queue_outage_never_fails_the_socket_operation(hooks, queue, auth_log):
    queue.sqs.delete_queue(QueueUrl=queue.url)
    webhook_sender.reset()
    with webhook_sender.batch():
        webhooks_out.member_added("presence-room", "alice")  # must not raise
    assert "webhook events not queued" in auth_log.text
    assert "s3cr3t" not in auth_log.text and "tok-123" not in auth_log.text


def test_a_bad_setting_never_fails_the_socket_operation(queue, monkeypatch, auth_log):
    monkeypatch.setenv("PUSHER_WEBHOOKS", '[{"url": "http://hooks.example.com/s3cr3t"}]')
    webhooks_out.member_added("presence-room", "alice")
    assert "PUSHER_WEBHOOKS" in auth_log.text and "s3cr3t" not in auth_log.text


def test_a_large_batch_is_split_and_nothing_is_lost(hooks, queue):
    with webhook_sender.batch():
        for index in range(250):
            webhooks_out.member_added("presence-room", f"user-{index}")
    jobs = queue.jobs() + queue.jobs()
    users = [e["user_id"] for job in jobs for e in job["events"]]
    assert sorted(users) == sorted(f"user-{index}" for index in range(250))
    assert all(len(job["events"]) <= webhook_sender.MAX_EVENTS_PER_JOB
               for job in jobs)


# --- delivery and retries -------------------------------------------------------------------------

def test_a_failing_target_is_retried_with_back_off_and_accepted_once(hooks, queue, client,
                                                                     monkeypatch):
    monkeypatch.setattr(webhook_sender, "RETRY_BASE_SECONDS", 1)
    hooks.script = [500]
    webhooks_out.member_added("presence-room", "alice")
    (record,) = queue.records(visibility=0)  # visible unless the worker hides it
    assert failures(work(client, record)) == [record["messageId"]]
    assert queue.records(visibility=0) == []  # ChangeMessageVisibility: backing off
    again = queue.records(visibility=0, wait=3)
    assert [r["messageId"] for r in again] == [record["messageId"]]
    assert again[0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert work(client, again[0]) == {"batchItemFailures": []}
    assert [r["status"] for r in hooks.requests] == [500, 200]
    assert hooks.requests[0]["body"] == hooks.requests[1]["body"]  # the same bytes, re-signed
    assert len(hooks.accepted) == 1


@pytest.mark.parametrize("status", [408, 429, 502, 503])
def test_transient_answers_are_retried(hooks, queue, client, status):
    hooks.script = [status]
    webhooks_out.member_added("presence-room", "alice")
    (record,) = queue.records()
    assert failures(work(client, record)) == [record["messageId"]]
    assert hooks.accepted == []


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(hooks, queue, client, monkeypatch, auth_log, status):
    """A 429 or 503 with ``Retry-After: 3`` hides the job 3 s, not the 1 s back-off."""
    monkeypatch.setattr(webhook_sender, "RETRY_BASE_SECONDS", 1)
    hooks.script, hooks.answer_headers = [status], {"Retry-After": "3"}
    webhooks_out.member_added("presence-room", "alice")
    (record,) = queue.records(visibility=0)
    started = time.monotonic()
    assert failures(work(client, record)) == [record["messageId"]]
    assert "Retry-After 3 s" in auth_log.text and "next attempt in 3 s" in auth_log.text
    assert queue.records(visibility=0, wait=2) == []  # the 1 s back-off would have ended
    again = queue.records(visibility=0, wait=5)
    assert [r["messageId"] for r in again] == [record["messageId"]]
    assert time.monotonic() - started >= 2.5
    hooks.answer_headers = {}
    assert work(client, again[0]) == {"batchItemFailures": []}
    assert len(hooks.accepted) == 1


def test_a_long_retry_after_is_capped(hooks, queue, client, monkeypatch, auth_log):
    """Pusher's receivers accept a webhook's time_ms for 5 minutes: a Retry-After of an hour
    is cut to RETRY_CAP_SECONDS (here 1 s), so the job still arrives in time."""
    monkeypatch.setattr(webhook_sender, "RETRY_BASE_SECONDS", 1)
    monkeypatch.setattr(webhook_sender, "RETRY_CAP_SECONDS", 1)
    hooks.script, hooks.answer_headers = [429], {"Retry-After": "3600"}
    webhooks_out.member_added("presence-room", "alice")
    (record,) = queue.records(visibility=0)
    assert failures(work(client, record)) == [record["messageId"]]
    assert "next attempt in 1 s" in auth_log.text
    assert [r["messageId"] for r in queue.records(visibility=0, wait=4)] == \
        [record["messageId"]]


def test_retry_after_values_follow_rfc_9110():
    now = 1_700_000_000.0
    assert webhook_sender.retry_after_seconds("120", now) == 120
    assert webhook_sender.retry_after_seconds(" 0 ", now) == 0
    date = email.utils.formatdate(now + 30, usegmt=True)  # "Tue, 14 Nov 2023 22:13:50 GMT"
    assert webhook_sender.retry_after_seconds(date, now) == pytest.approx(30)
    assert webhook_sender.retry_after_seconds(email.utils.formatdate(now - 60, usegmt=True),
                                              now) == 0
    for bad in (None, "", "soon", "-5", "1.5", "Tue, 99 Nov 2023 99:99:99 GMT"):
        assert webhook_sender.retry_after_seconds(bad, now) is None, bad


@pytest.mark.parametrize("status", [400, 403, 404, 410, 301])
def test_a_refusal_is_dropped_with_a_log_not_retried(hooks, queue, client, status, auth_log):
    hooks.script = [status]
    webhooks_out.member_added("presence-room", "alice")
    (record,) = queue.records()
    assert work(client, record) == {"batchItemFailures": []}
    assert f"refused with {status}" in auth_log.text
    assert hooks.accepted == []


def test_a_hanging_target_costs_a_bounded_time(hooks, queue, client, auth_log, monkeypatch):
    assert webhook_sender.CONNECT_TIMEOUT <= 2 and webhook_sender.TOTAL_TIMEOUT <= 5
    monkeypatch.setattr(webhook_sender, "TOTAL_TIMEOUT", 1.0)  # the bound, without 5 s waits
    hooks.mode = "hang"
    webhooks_out.member_added("presence-room", "alice")
    (record,) = queue.records()
    started = time.monotonic()
    assert failures(work(client, record)) == [record["messageId"]]
    assert time.monotonic() - started < webhook_sender.TOTAL_TIMEOUT + 1.5
    assert "timed out" in auth_log.text


def test_a_trickling_target_is_cut_at_the_total_timeout(hooks, queue, client, monkeypatch):
    monkeypatch.setattr(webhook_sender, "TOTAL_TIMEOUT", 1.0)
    hooks.mode = "trickle"
    webhooks_out.member_added("presence-room", "alice")
    (record,) = queue.records()
    started = time.monotonic()
    assert failures(work(client, record)) == [record["messageId"]]
    assert time.monotonic() - started < 2.5  # each read alone would have waited its turn


def test_an_unreachable_target_is_retried(queue, client, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: connection refused
    configure(monkeypatch, {"url": f"http://127.0.0.1:{port}/", "event_types": ["cache_miss"]})
    webhooks_out.cache_miss("cache-x")
    (record,) = queue.records()
    assert failures(work(client, record)) == [record["messageId"]]


def test_https_targets_are_verified_and_reached(queue, client, monkeypatch, tmp_path):
    import ssl

    from tests.support import tls

    context, ca_file = tls.server_context(tmp_path)
    with WebhookReceiver(tls=context) as tls_receiver:
        configure(monkeypatch, {"url": tls_receiver.url(PATH), "event_types": ["cache_miss"]})
        webhooks_out.cache_miss("cache-x")
        (record,) = queue.records(visibility=0)
        # a certificate the trust store does not know: no request, the job is retried
        assert failures(work(client, record)) == [record["messageId"]]
        assert tls_receiver.requests == []
        # the same server trusted: delivered over TLS, signature valid
        monkeypatch.setattr(webhook_sender, "_tls", [ssl.create_default_context(
            cafile=ca_file)])
        queue.sqs.change_message_visibility(QueueUrl=queue.url,
                                            ReceiptHandle=record["receiptHandle"],
                                            VisibilityTimeout=0)
        assert work(client, *queue.records()) == {"batchItemFailures": []}
        assert [r["valid"] for r in tls_receiver.requests] == [True]


def test_jobs_of_one_batch_are_posted_in_parallel(receiver, queue, client, monkeypatch):
    monkeypatch.setattr(webhook_sender, "TOTAL_TIMEOUT", 1.0)  # one after another: 4 s
    configure(monkeypatch, *({"url": receiver.url(f"/{i}"), "event_types": ["cache_miss"]}
                             for i in range(4)))
    receiver.mode = "hang"
    webhooks_out.cache_miss("cache-x")
    records = queue.records()
    assert len(records) == 4
    started = time.monotonic()
    assert sorted(failures(work(client, *records))) == sorted(r["messageId"] for r in records)
    assert time.monotonic() - started < webhook_sender.TOTAL_TIMEOUT * 2


def test_a_mixed_batch_reports_only_the_failed_job(receiver, queue, client, monkeypatch):
    with WebhookReceiver() as failing:
        failing.default_status = 503
        configure(monkeypatch, {"url": receiver.url("/ok"), "event_types": ["cache_miss"]},
                  {"url": failing.url("/down"), "event_types": ["cache_miss"]})
        webhooks_out.cache_miss("cache-x")
        jobs = queue.records()
        down = next(r for r in jobs if json.loads(r["body"])["webhook"]["target"]
                    == webhook_sender.target_id(failing.url("/down")))
        garbage = dict(jobs[0], messageId="m-garbage", body="{not json")
        assert failures(work(client, garbage, *jobs)) == [down["messageId"]]
        assert len(receiver.accepted) == 1 and len(failing.requests) == 1


def test_poison_jobs_and_removed_targets_are_dropped(hooks, queue, client, monkeypatch,
                                                     auth_log):
    webhooks_out.member_added("presence-room", "alice")
    (record,) = queue.records()
    configure(monkeypatch, {"url": hooks.url("/other"), "event_types": ["member_added"]})
    poison = dict(record, messageId="m-poison",
                  body=json.dumps({"webhook": {"target": "x", "events": "[1]"}}))
    assert work(client, record, poison) == {"batchItemFailures": []}
    assert hooks.requests == []
    assert "no longer configured" in auth_log.text and "m-poison" in auth_log.text


def test_logs_name_the_target_by_scheme_and_host_only(hooks, queue, client, auth_log):
    hooks.script = [503]
    webhooks_out.member_added("presence-room", "alice")
    for _ in range(2):
        for record in queue.records(visibility=0):
            work(client, record)
        time.sleep(0.1)
    text = auth_log.text + auth_log.json.text
    assert f"http://127.0.0.1:{hooks.port}" in text
    for secret in ("s3cr3t", "tok-123", "app-secret"):
        assert secret not in text


def test_delivery_is_counted_in_metrics(hooks, queue, client, capsys):
    hooks.script = [503]
    webhooks_out.member_added("presence-room", "alice")
    (record,) = queue.records(visibility=0)
    capsys.readouterr()
    work(client, record)
    queue.sqs.change_message_visibility(QueueUrl=queue.url,
                                        ReceiptHandle=record["receiptHandle"],
                                        VisibilityTimeout=0)
    work(client, *queue.records())
    metrics = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith('{"_aws"'):
            for name, value in json.loads(line).items():
                if name.startswith("Webhooks"):
                    metrics[name] = metrics.get(name, 0) + value
    assert metrics == {"WebhooksRetried": 1, "WebhooksDelivered": 1}


# --- back-off -------------------------------------------------------------------------------------

def test_the_back_off_grows_with_the_receive_count_is_capped_and_jittered():
    base, cap = webhook_sender.RETRY_BASE_SECONDS, webhook_sender.RETRY_CAP_SECONDS
    for count in range(1, 12):
        ceiling = min(cap, base * 2 ** (count - 1))
        delays = {webhook_sender.retry_delay(count) for _ in range(200)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (count, delays)
        if ceiling >= 10:
            assert len(delays) > 1  # jitter: workers retrying one endpoint spread out
    # SQS moves a job to the dead-letter queue after maxReceiveCount receives (5): the four
    # waits before it stay within Pusher's 5-minute retry window, which validate_webhook's
    # time_ms check mirrors
    assert sum(min(cap, base * 2 ** (n - 1)) for n in range(1, 5)) <= 300
