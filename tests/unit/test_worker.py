"""The SQS push worker through Chalice's test client (``lambda_.invoke("push_worker", ...)``)."""
from __future__ import annotations

import pytest

from chalicelib import settings
from chalicelib.registry import connections, subscriptions
from chalicelib.auth.principal import Principal
from tests.support import events
from tests.support.websocket import aws_env, management_api, registry  # noqa: F401

ALICE = Principal(sub="alice", issuer="https://issuer.example")
BOB = Principal(sub="bob", issuer="https://issuer.example")


@pytest.fixture
def env(registry, management_api, client, monkeypatch):
    monkeypatch.setenv("PUSH_MAX_ATTEMPTS", "2")
    settings.reset()
    connections.register("alice-1=", ALICE)
    subscriptions.subscribe(connections.register("bob-1=", BOB), "news")
    return client, management_api


def invoke(client, *records):
    return client.lambda_.invoke("push_worker", events.sqs_event(records)).payload


def test_a_good_batch_is_delivered_with_no_failures(env):
    client, api = env
    result = invoke(client,
                    events.sqs_record({"user_id": "alice", "event": "job.done", "data": 1}),
                    events.sqs_record({"channel": "news", "event": "flash", "data": "x"}),
                    events.sqs_record({"connection_id": "bob-1=", "event": "direct"}))
    assert result == {"batchItemFailures": []}
    assert api.frames("alice-1=") == [{"type": "event", "event": "job.done", "data": 1, "id": 1}]
    assert api.frames("bob-1=") == [
        {"type": "event", "channel": "news", "event": "flash", "data": "x", "id": 1},
        {"type": "event", "event": "direct", "data": None}]  # no stream: no id


def test_malformed_messages_are_dropped_and_the_rest_delivered(env, caplog):
    client, api = env
    bad = [
        events.sqs_record("{not json", message_id="m-json"),
        events.sqs_record("[1, 2]", message_id="m-array"),
        events.sqs_record({"event": "no-target"}, message_id="m-target"),
        events.sqs_record({"user_id": "alice", "channel": "news", "event": "e"},
                          message_id="m-two"),
        events.sqs_record({"channel": "bad name", "event": "e"}, message_id="m-channel"),
        events.sqs_record({"user_id": "alice", "event": "e", "data": "x" * 140_000},
                          message_id="m-big"),
        events.sqs_record('{"user_id": "alice", "event": "e", "data": NaN}',
                          message_id="m-nan"),
    ]
    good = events.sqs_record({"user_id": "alice", "event": "ok"}, message_id="m-good")
    result = invoke(client, *bad, good)
    assert result == {"batchItemFailures": []}
    assert api.frames("alice-1=") == [{"type": "event", "event": "ok", "data": None, "id": 1}]
    for record in bad:
        assert f"push message {record['messageId']} dropped" in caplog.text


def test_transient_failures_are_reported_per_message(env):
    client, api = env
    api.script["bob-1="] = [503] * 5  # failing beyond PUSH_MAX_ATTEMPTS=2
    connections.register("alice-2=", ALICE)
    api.gone.add("alice-2=")
    result = invoke(client,
                    events.sqs_record({"user_id": "alice", "event": "ok"}, message_id="m1"),
                    events.sqs_record({"channel": "news", "event": "busy"}, message_id="m2"),
                    events.sqs_record({"user_id": "carol", "event": "nobody"},
                                      message_id="m3"))
    assert result == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert api.attempts["bob-1="] == 2
    assert len(api.frames("alice-1=")) == 1
    assert subscriptions.connections_of_user("alice") == ["alice-1="]  # gone one removed

    # SQS redelivers only m2; the connection has recovered
    api.script["bob-1="] = []
    result = invoke(client, events.sqs_record({"channel": "news", "event": "busy"},
                                              message_id="m2"))
    assert result == {"batchItemFailures": []}
    # a redelivered job is published again: a new id in the channel's history
    assert api.frames("bob-1=") == [{"type": "event", "channel": "news", "event": "busy",
                                     "data": None, "id": 2}]


def test_registry_outage_fails_only_the_messages_that_need_it(env, monkeypatch):
    client, api = env
    monkeypatch.setenv("CONNECTIONS_TABLE", "missing-table")
    settings.reset()
    result = invoke(client,
                    events.sqs_record({"user_id": "alice", "event": "e"}, message_id="m1"),
                    events.sqs_record({"connection_id": "alice-1=", "event": "direct"},
                                      message_id="m2"),
                    events.sqs_record("garbage", message_id="m3"))
    assert result == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert api.frames("alice-1=") == [{"type": "event", "event": "direct", "data": None}]


def test_missing_endpoint_settings_are_retried(env, monkeypatch):
    client, api = env
    monkeypatch.delenv("WEBSOCKET_ENDPOINT_URL")
    settings.reset()
    result = invoke(client, events.sqs_record({"user_id": "alice", "event": "e"},
                                              message_id="m1"))
    assert result == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert api.attempts == {}
