"""CloudWatch metrics in the embedded metric format (issue 12): one flush per invocation, with
the figures an operator needs — through Chalice's test client, real tokens, a moto registry and
a real management API on 127.0.0.1. Each test reads the EMF documents the invocation printed."""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from chalicelib import observability
from chalicelib.delivery import webhooks
from chalicelib.registry import connections, subscriptions
from chalicelib.auth.principal import Principal
from tests.support import events
from tests.support.websocket import aws_env, management_api, registry  # noqa: F401

NAMESPACE = "Realtime/dev"  # the default for STAGE=dev
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/dev/$connect"


def emf(capsys):
    """The EMF documents printed since the last call (other output ignored)."""
    docs = []
    for line in capsys.readouterr().out.splitlines():
        if line.startswith('{"_aws"'):
            doc = json.loads(line)
            check_emf(doc)
            docs.append(doc)
    return docs


def check_emf(doc):
    """The EMF specification's rules (AWS docs, "Specification: Embedded metric format")."""
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int) and abs(meta["Timestamp"] / 1000 - time.time()) < 60
    (directive,) = meta["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    for dimension_set in directive["Dimensions"]:
        for name in dimension_set:
            assert isinstance(doc[name], str)
    for metric in directive["Metrics"]:
        value = doc[metric["Name"]]
        assert isinstance(value, (int, float)) or (
            isinstance(value, list) and all(isinstance(v, (int, float)) for v in value))
        assert metric["Unit"] in ("Count", "Milliseconds")


def figures(docs):
    """``{(metric, extra dimension value or None): value}`` over the documents."""
    out = {}
    for doc in docs:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        (dimensions,) = directive["Dimensions"]
        extra = [doc[d] for d in dimensions if d != "service"]
        for metric in directive["Metrics"]:
            out[(metric["Name"], extra[0] if extra else None)] = doc[metric["Name"]]
    return out


@pytest.fixture
def ws(registry, management_api, client):
    return client, management_api


def test_connections_opened_and_closed_by_dialect(ws, dev_issuer, capsys):
    client, _ = ws
    emf(capsys)
    event = events.connect_event(token=dev_issuer.mint("alice"))
    client.lambda_.invoke("ws_connect", event)
    opened = emf(capsys)
    assert figures(opened) == {("ConnectionsOpened", "native"): 1}
    assert opened[0]["dialect"] == "native" and opened[0]["service"] == "realtime"
    client.lambda_.invoke("ws_disconnect",
                          events.disconnect_event(event["requestContext"]["connectionId"]))
    assert figures(emf(capsys)) == {("ConnectionsClosed", "native"): 1}
    client.lambda_.invoke("ws_connect", events.connect_event(token="not-a-token"))
    assert figures(emf(capsys)) == {("ConnectionsRefused", "401"): 1}


def test_authorizer_allow_and_refuse_by_reason(ws, dev_issuer, capsys):
    import app as app_module

    client, _ = ws
    emf(capsys)
    base = {"type": "REQUEST", "methodArn": METHOD_ARN, "headers": {}}
    allowed = app_module.ws_authorizer(dict(base, queryStringParameters={
        "token": dev_issuer.mint("alice")}), None)
    # the allowed path writes nothing (its hot path stays cheap) ...
    assert emf(capsys) == []
    # ... the $connect it lets through counts it
    client.lambda_.invoke("ws_connect", events.connect_event(authorizer={
        **allowed["context"], "principalId": allowed["principalId"]}))
    assert figures(emf(capsys)) == {("AuthorizerAllowed", None): 1,
                                    ("ConnectionsOpened", "native"): 1}
    for query, reason in ((None, "no_token"), ({"token": "a.b.c"}, "malformed_token")):
        with pytest.raises(Exception, match="^Unauthorized$"):
            app_module.ws_authorizer(dict(base, queryStringParameters=query), None)
        docs = emf(capsys)
        assert figures(docs) == {("AuthorizerRefused", reason): 1}
        assert docs[0]["reason"] == reason


def test_rest_authorizer_counts_too(client, dev_issuer, capsys):
    emf(capsys)
    assert client.http.get("/me", headers={"Authorization": "Bearer x.y.z"}).status_code == 401
    assert ("AuthorizerRefused", "malformed_token") in figures(emf(capsys))
    token = dev_issuer.mint("bob")
    assert client.http.get("/me", headers={"Authorization": f"Bearer {token}"}) \
        .status_code == 200
    assert ("AuthorizerAllowed", None) in figures(emf(capsys))


def test_a_fan_out_is_one_document_not_one_per_message(ws, dev_issuer, capsys):
    client, api = ws
    for n in range(5):
        connection = connections.register(f"sub-{n}=", Principal(sub=f"u{n}",
                                                                  issuer="https://i.example"))
        subscriptions.subscribe(connection, "news")
    api.gone.add("sub-4=")
    emf(capsys)
    response = client.http.post("/notifications", headers={
        "Content-Type": "application/json",
        "Authorization": f"Bearer {dev_issuer.mint('alice', scope='notifications:send')}"},
        body=json.dumps({"channel": "news", "event": "e", "data": 1}))
    assert response.status_code == 200
    route = emf(capsys)
    assert len(route) == 1  # every figure of the route's invocation in one document
    got = figures(route)
    assert got[("AuthorizerAllowed", None)] == 1  # jwt_auth let it through
    assert got[("MessagesDelivered", None)] == 4
    assert got[("MessagesGone", None)] == 1
    assert got[("FanoutAudience", None)] == [5]
    (duration,) = got[("FanoutDuration", None)]
    assert 0 < duration < 10_000


def test_throttled_and_failed_posts(ws, dev_issuer, capsys, monkeypatch):
    client, api = ws
    monkeypatch.setenv("PUSH_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("PUSH_THROTTLE_WAIT_SECONDS", "0")  # a 429 counts as an attempt at once
    from chalicelib import settings

    settings.reset()
    connections.register("t-1=", Principal(sub="alice", issuer="https://i.example"))
    connections.register("t-2=", Principal(sub="alice", issuer="https://i.example"))
    api.script["t-1="] = [429]
    api.script["t-2="] = [403]
    emf(capsys)
    client.http.post("/notifications", headers={
        "Content-Type": "application/json",
        "Authorization": f"Bearer {dev_issuer.mint('alice')}"},
        body=json.dumps({"user_id": "alice", "event": "e"}))
    got = figures(emf(capsys))
    assert got[("MessagesFailed", None)] == 2
    assert got[("MessagesThrottled", None)] == 1
    assert ("MessagesDelivered", None) not in got


def test_client_events_and_refused_subscriptions(ws, dev_issuer, capsys):
    client, api = ws
    ids = []
    for sub in ("alice", "bob"):
        event = events.connect_event(token=dev_issuer.mint(sub))
        client.lambda_.invoke("ws_connect", event)
        ids.append(event["requestContext"]["connectionId"])
    for connection_id in ids:
        client.lambda_.invoke("ws_message", events.message_event(
            connection_id, {"action": "subscribe", "channel": "presence-room"}))
    emf(capsys)
    client.lambda_.invoke("ws_message", events.message_event(
        ids[0], {"action": "publish", "channel": "presence-room", "event": "client-typing",
                 "data": {}}))
    got = figures(emf(capsys))
    assert got[("ClientEvents", None)] == 1
    assert got[("MessagesDelivered", None)] == 2  # bob's event and alice's "published" reply
    client.lambda_.invoke("ws_message", events.message_event(
        ids[1], {"action": "subscribe", "channel": "private-user-alice"}))
    got = figures(emf(capsys))
    assert got[("SubscriptionsRefused", "forbidden")] == 1


def test_pusher_channel_auth_refusals_count_as_refused_subscriptions(client, dev_issuer,
                                                                      capsys):
    emf(capsys)
    response = client.http.post("/pusher/auth", headers={
        "Authorization": f"Bearer {dev_issuer.mint('bob')}",
        "Content-Type": "application/x-www-form-urlencoded"},
        body="socket_id=1.2&channel_name=private-user-alice")
    assert response.status_code == 403
    assert figures(emf(capsys)) == {("SubscriptionsRefused", "forbidden"): 1}


def test_webhooks_received_and_failed(client, monkeypatch, capsys):
    registry = webhooks.WebhookHandlers()

    def boom(event, time_ms):
        raise RuntimeError("bug")

    registry.register("member_added", boom)
    monkeypatch.setattr(webhooks, "HANDLERS", registry)
    body = json.dumps({"time_ms": int(time.time() * 1000), "events": [
        {"name": "member_added", "channel": "presence-a", "user_id": "u"},
        {"name": "channel_vacated", "channel": "private-b"}]}).encode()
    emf(capsys)
    response = client.http.post("/pusher/webhooks", body=body, headers={
        "Content-Type": "application/json", "X-Pusher-Key": "app-key",
        "X-Pusher-Signature": hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()})
    assert response.status_code == 200
    assert figures(emf(capsys)) == {("WebhooksReceived", None): 2, ("WebhooksFailed", None): 1}


def test_worker_counts_the_shards_it_processed(ws, capsys, monkeypatch):
    client, api = ws
    connections.register("w-1=", Principal(sub="alice", issuer="https://i.example"))
    records = [events.sqs_record({"connection_id": "w-1=", "event": "e"}, message_id="m1"),
               events.sqs_record({"user_id": "alice", "event": "e"}, message_id="m2")]
    emf(capsys)
    result = client.lambda_.invoke("push_worker", events.sqs_event(records)).payload
    assert result == {"batchItemFailures": []}
    got = figures(emf(capsys))
    assert got[("ShardsProcessed", None)] == 2
    assert got[("MessagesDelivered", None)] == 2
    assert got[("FanoutAudience", None)] == [1, 1]


def test_nothing_is_printed_by_an_invocation_without_figures(client, capsys):
    emf(capsys)
    assert client.http.request("OPTIONS", "/pusher/auth", headers={
        "Origin": "https://a.example", "Access-Control-Request-Method": "POST"}) is not None
    assert emf(capsys) == []


def test_documents_are_valid_for_any_mix(app_env):
    counts = {(None, "MessagesDelivered"): 3, ("native", "ConnectionsOpened"): 1,
              ("expired", "AuthorizerRefused"): 2, (None, "FanoutDuration"): [1.5, 2.0]}
    docs = [json.loads(d) for d in observability.emf_documents(counts, NAMESPACE, 1_700_000)]
    assert len(docs) == 3
    for doc in docs:
        assert doc["_aws"]["Timestamp"] == 1_700_000
    assert figures(docs) == {("MessagesDelivered", None): 3, ("FanoutDuration", None): [1.5, 2],
                             ("ConnectionsOpened", "native"): 1,
                             ("AuthorizerRefused", "expired"): 2}
    with pytest.raises(KeyError):
        observability.count("NoSuchMetric")


def test_the_config_error_principal_is_not_counted_as_allowed(client, dev_issuer, capsys,
                                                             monkeypatch):
    from chalicelib import settings
    from chalicelib.doors import authorizer

    assert observability.CONFIG_ERROR_PRINCIPAL == authorizer.CONFIG_ERROR_PRINCIPAL
    monkeypatch.delenv("JWT_ISSUER")
    settings.reset()
    emf(capsys)
    response = client.http.get("/me", headers={
        "Authorization": f"Bearer {dev_issuer.mint('alice')}"})
    assert response.status_code == 503
    assert figures(emf(capsys)) == {("AuthorizerRefused", "not_configured"): 1}
