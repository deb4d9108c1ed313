"""Delivery (chalicelib.delivery.push) against a real management API on 127.0.0.1 and a moto
registry."""
from __future__ import annotations

import json
import socket

import pytest
from moto import mock_aws

from chalicelib import settings
from chalicelib.registry import connections, subscriptions
from chalicelib.delivery import post, push, sender
from chalicelib import errors
from chalicelib.errors import ConfigError, PayloadTooLarge
from chalicelib.auth.principal import Principal
from tests.support import events
from tests.support.websocket import aws_env, management_api, registry  # noqa: F401

ALICE = Principal(sub="alice", issuer="https://issuer.example")
BOB = Principal(sub="bob", issuer="https://issuer.example")


@pytest.fixture
def api(registry, management_api):
    return management_api


def _set(monkeypatch, **env):
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    settings.reset()
    post.reset_clients()


# --- frames and endpoints ---------------------------------------------------------------------

def test_encode_frame_limits_to_128_kib():
    assert post.encode_frame({"a": "é"}) == '{"a":"é"}'.encode()
    assert post.encode_frame("plain text") == b"plain text"
    exactly = "x" * post.MAX_FRAME_BYTES
    assert len(post.encode_frame(exactly)) == 131072
    with pytest.raises(PayloadTooLarge) as caught:
        post.encode_frame(exactly + "x")
    assert caught.value.status == 413
    assert "131072" in caught.value.public_message


def test_oversized_frame_is_refused_before_sending(api):
    connections.register("c1=", ALICE)
    with pytest.raises(PayloadTooLarge):
        push.send_to_user("alice", {"data": "x" * post.MAX_FRAME_BYTES})
    with pytest.raises(PayloadTooLarge):
        post.send_to_connection("c1=", "x" * (post.MAX_FRAME_BYTES + 1))
    assert api.attempts == {}


def test_endpoint_resolution(aws_env, monkeypatch):
    _set(monkeypatch, WEBSOCKET_ENDPOINT_URL=None, WEBSOCKET_API_ID=None, WEBSOCKET_DOMAIN=None,
         WEBSOCKET_STAGE=None)
    event = events.message_event("c1=", {"action": "ping"})
    assert post.management_endpoint(event) == \
        f"https://{events.DOMAIN}/{events.STAGE}"
    custom = events.message_event("c1=", {}, domain="ws.example.com", stage="prod")
    assert post.management_endpoint(custom) == \
        f"https://{events.API_ID}.execute-api.us-east-1.amazonaws.com/prod"
    with mock_aws(), pytest.raises(ConfigError) as caught:  # no API to find by name either
        post.management_endpoint()
    assert "WEBSOCKET_API_ID" in caught.value.public_message

    _set(monkeypatch, WEBSOCKET_API_ID="q1w2e3", WEBSOCKET_STAGE="prod")
    assert post.management_endpoint() == "https://q1w2e3.execute-api.us-east-1.amazonaws.com/prod"
    _set(monkeypatch, AWS_REGION="cn-north-1")
    assert post.management_endpoint().endswith(".cn-north-1.amazonaws.com.cn/prod")
    _set(monkeypatch, WEBSOCKET_API_ID=None, WEBSOCKET_DOMAIN="ws.example.com")
    assert post.management_endpoint() == "https://ws.example.com/prod"
    _set(monkeypatch, WEBSOCKET_ENDPOINT_URL="http://127.0.0.1:3001/local/")
    assert post.management_endpoint(event) == "http://127.0.0.1:3001/local"


# --- delivery ---------------------------------------------------------------------------------

def test_send_to_connection_posts_the_json_frame(api):
    summary = post.send_to_connection("abc+/=", {"type": "event", "data": {"n": 1}})
    assert summary == {"delivered": 1, "gone": 0, "failed": 0, "retryable": 0}
    assert api.received["abc+/="] == [b'{"type":"event","data":{"n":1}}']


def test_gone_connection_is_removed_with_its_subscriptions(api):
    stale = connections.register("stale=", ALICE)
    subscriptions.subscribe(stale, "news")
    subscriptions.subscribe(connections.register("live=", BOB), "news")
    api.gone.add("stale=")

    summary = push.publish_to_channel("news", {"type": "event", "event": "e"})

    assert summary == {"delivered": 1, "gone": 1, "failed": 0, "retryable": 0}
    assert connections.get_connection("stale=") is None
    assert subscriptions.subscribers_of_channel("news") == ["live="]
    assert subscriptions.connections_of_user("alice") == []
    assert api.attempts["stale="] == 1  # gone is final: never retried


def test_throttling_and_5xx_are_retried_then_delivered(api):
    api.script["throttled="] = [429, 429]
    api.script["flaky="] = [500, 503]
    summary = post.send_to_connections(["throttled=", "flaky="], {"type": "pong"})
    assert summary == {"delivered": 2, "gone": 0, "failed": 0, "retryable": 0}
    assert api.attempts == {"throttled=": 3, "flaky=": 3}
    assert api.frames("throttled=") == [{"type": "pong"}]


def test_retries_stop_at_push_max_attempts(api, monkeypatch):
    _set(monkeypatch, PUSH_MAX_ATTEMPTS="3")
    api.script["busy="] = [503] * 10
    summary = post.send_to_connection("busy=", {"type": "pong"})
    assert summary == {"delivered": 0, "gone": 0, "failed": 1, "retryable": 1}
    assert api.attempts["busy="] == 3
    assert api.received["busy="] == []


def test_throttling_does_not_use_up_attempts_within_the_throttle_wait(api, monkeypatch):
    _set(monkeypatch, PUSH_MAX_ATTEMPTS="2")
    api.script["throttled="] = [429] * 5
    summary = post.send_to_connection("throttled=", {"type": "pong"})
    assert summary == {"delivered": 1, "gone": 0, "failed": 0, "retryable": 0}
    assert api.attempts["throttled="] == 6
    assert api.frames("throttled=") == [{"type": "pong"}]


def test_throttling_past_the_throttle_wait_counts_attempts(api, monkeypatch):
    _set(monkeypatch, PUSH_MAX_ATTEMPTS="3", PUSH_THROTTLE_WAIT_SECONDS="0")
    api.script["busy="] = [429] * 10
    summary = post.send_to_connection("busy=", {"type": "pong"})
    assert summary == {"delivered": 0, "gone": 0, "failed": 1, "retryable": 1}
    assert api.attempts["busy="] == 3
    assert api.received["busy="] == []


def test_a_throttling_gateway_slows_the_fan_out_down_and_loses_nothing(api):
    """Item 4 of issue 11: API Gateway throttles above LIMIT posts/s; every post is delivered
    once, and the send rate converges below the limit (AIMD)."""
    limit, posts = 200.0, 700  # at least 3.5 s at the limit: time to converge, then hold
    api.throttle(rate=limit, burst=20)
    ids = [f"t{i}=" for i in range(posts)]

    summary = post.send_to_connections(ids, {"type": "event", "event": "tick"})

    assert summary == {"delivered": posts, "gone": 0, "failed": 0, "retryable": 0}
    assert all(len(api.received[cid]) == 1 for cid in ids)
    statuses = [status for _, _, status in api.answers]
    assert statuses.count(429) > 0  # the gateway did throttle
    assert statuses.count(200) == posts
    # after the first second, requests (throttled ones included) come at most a little
    # above the limit, and few are refused: the rate converged below it
    start, end = api.answers[0][0], api.answers[-1][0]
    settled = [status for at, _, status in api.answers if at >= start + 1.0]
    assert end - start > 2.0
    assert len(settled) / (end - (start + 1.0)) <= limit * 1.25
    assert settled.count(429) <= 0.15 * len(settled)
    sender = post.management_client(post.management_endpoint())
    assert sender.rate.limit is not None and sender.rate.limit <= limit * 1.2


def test_client_errors_fail_without_retry(api):
    api.script["forbidden="] = [403]
    api.script["bad="] = [400]
    summary = post.send_to_connections(["forbidden=", "bad="], {"type": "pong"})
    assert summary == {"delivered": 0, "gone": 0, "failed": 2, "retryable": 0}
    assert api.attempts == {"forbidden=": 1, "bad=": 1}


def test_unreachable_endpoint_is_a_retryable_failure(registry, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _set(monkeypatch, WEBSOCKET_ENDPOINT_URL=f"http://127.0.0.1:{port}/test",
         PUSH_MAX_ATTEMPTS="2")
    summary = post.send_to_connection("c1=", {"type": "pong"})
    assert summary == {"delivered": 0, "gone": 0, "failed": 1, "retryable": 1}


def test_backoff_is_jittered_and_capped():
    for attempt in range(1, 12):
        ceiling = min(sender.BACKOFF_CAP_SECONDS, sender.BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
        delays = {sender.backoff_seconds(attempt) for _ in range(20)}
        assert all(0 <= d <= ceiling for d in delays)
        assert len(delays) > 1


def test_two_hundred_connections_of_one_user(api):
    for index in range(200):
        connections.register(f"alice-{index}=", ALICE)
    connections.register("bob-0=", BOB)
    for index in range(0, 200, 50):
        api.gone.add(f"alice-{index}=")

    summary = push.send_to_user("alice", {"type": "event", "event": "hello"})

    assert summary == {"delivered": 196, "gone": 4, "failed": 0, "retryable": 0}
    assert api.delivered_total() == 196
    assert api.received["bob-0="] == []
    assert len(subscriptions.connections_of_user("alice")) == 196


def test_channel_with_many_more_subscribers_than_posts_in_flight(api, monkeypatch):
    # 120 subscribers, 8 posts in flight at most: the fan-out refills its slots 15 times (with
    # the default 256 that shape needs thousands of subscribers, which moto takes long to hold)
    _set(monkeypatch, PUSH_MAX_WORKERS="8")
    subscribers = 120
    for index in range(subscribers):
        connection = connections.register(f"sub-{index}=", BOB if index % 2 else ALICE)
        subscriptions.subscribe(connection, "presence-stadium")
    connections.register("bystander=", ALICE)
    api.gone.update({"sub-10=", f"sub-{subscribers - 1}="})
    api.script["sub-60="] = [429]

    frame = {"type": "event", "channel": "presence-stadium", "event": "goal", "data": [1, 0]}
    summary = push.publish_to_channel("presence-stadium", frame)

    assert summary == {"delivered": subscribers - 2, "gone": 2, "failed": 0, "retryable": 0}
    assert api.frames("sub-60=") == [{**frame, "id": 1}]  # its id in the channel's history
    assert api.received["bystander="] == []
    assert all(len(api.received[f"sub-{i}="]) == 1 for i in range(subscribers)
               if i not in (10, subscribers - 1))
    assert api.peak_in_flight <= 8
    assert len(subscriptions.subscribers_of_channel("presence-stadium")) == subscribers - 2


def test_fan_out_keeps_at_most_push_max_workers_posts_in_flight(api, monkeypatch):
    import http.client
    import threading

    _set(monkeypatch, PUSH_MAX_WORKERS="4")
    api.latency = 0.01
    senders = set()
    original = http.client.HTTPConnection.putrequest

    def spy(self, *args, **kwargs):
        senders.add(threading.current_thread())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(http.client.HTTPConnection, "putrequest", spy)
    summary = post.send_to_connections([f"c{i}=" for i in range(40)], {"type": "pong"})
    assert summary["delivered"] == 40
    assert 1 < api.peak_in_flight <= 4  # concurrent, and bounded
    assert senders == {threading.current_thread()}  # no thread pool: the caller drives all
    first_ports = {r["client_port"] for r in api.requests}
    assert 1 < len(first_ports) <= 4  # one keep-alive connection per post in flight

    post.send_to_connections([f"d{i}=" for i in range(8)], {"type": "pong"})
    assert {r["client_port"] for r in api.requests[40:]} <= first_ports  # kept between calls


def test_gone_connections_are_removed_while_others_are_in_flight(api):
    for index in range(30):
        connections.register(f"g{index}=", ALICE)
    api.gone.update(f"g{index}=" for index in range(0, 30, 3))
    summary = push.send_to_user("alice", {"type": "event", "event": "e"})
    assert summary == {"delivered": 20, "gone": 10, "failed": 0, "retryable": 0}
    assert sorted(subscriptions.connections_of_user("alice")) == sorted(
        f"g{index}=" for index in range(30) if index % 3)


def test_parse_notification_rules():
    good = push.parse_notification({"channel": "news", "event": "e", "data": {"x": 1}})
    assert good.frame() == {"type": "event", "channel": "news", "event": "e", "data": {"x": 1}}
    user = push.parse_notification({"user_id": "alice", "event": "e"})
    assert user.frame() == {"type": "event", "event": "e", "data": None}
    bad_bodies = [
        [], {"event": "e"}, {"user_id": "a", "channel": "c", "event": "e"},
        {"user_id": "", "event": "e"}, {"user_id": 5, "event": "e"},
        {"channel": "bad name!", "event": "e"}, {"channel": "private-encrypted-x", "event": "e"},
        {"user_id": "a"}, {"user_id": "a", "event": ""}, {"user_id": "a", "event": "e" * 201},
    ]
    for body in bad_bodies:
        with pytest.raises(errors.BadRequest):
            push.parse_notification(body, targets=("user_id", "channel"))
    with pytest.raises(errors.BadRequest):
        push.parse_notification({"connection_id": "c=", "event": "e"},
                                targets=("user_id", "channel"))
    assert json.loads(json.dumps(push.parse_notification(
        {"connection_id": "c=", "event": "e"}).frame()))["event"] == "e"
