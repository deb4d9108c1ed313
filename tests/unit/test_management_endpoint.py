"""Where pushes go when the deploy's ``WEBSOCKET_API_ID`` is gone (a plain ``chalice deploy``
resets the functions' environment): the WebSocket API is looked up by name once per process.

API Gateway V2 through moto (``GetApis``) or a botocore Stubber (errors, paging), a silent
TCP server on 127.0.0.1 for the timeout; ``POST /notifications`` through Chalice's test client.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from chalicelib import aws, settings
from chalicelib.registry import connections
from chalicelib.delivery import post
from chalicelib.errors import ConfigError
from chalicelib.auth.principal import Principal
from tests.support.websocket import aws_env, registry  # noqa: F401

NAME = "realtime-dev-websocket-api"  # chalice deploy's name for the dev stage (app_env)
REGION = "us-east-1"


@pytest.fixture
def no_endpoint(aws_env, monkeypatch):
    """A function environment as a plain ``chalice deploy`` leaves it: no endpoint setting."""
    for name in ("WEBSOCKET_ENDPOINT_URL", "WEBSOCKET_API_ID", "WEBSOCKET_DOMAIN",
                 "WEBSOCKET_STAGE", "WEBSOCKET_API_NAME"):
        monkeypatch.delenv(name, raising=False)
    settings.reset()
    post.reset_clients()
    yield aws_env
    post.reset_clients()


def _api(name=NAME, protocol="WEBSOCKET"):
    kwargs = {"RouteSelectionExpression": "$request.body.action"} \
        if protocol == "WEBSOCKET" else {}
    return boto3.client("apigatewayv2", region_name=REGION).create_api(
        Name=name, ProtocolType=protocol, **kwargs)["ApiId"]


def _discovery_client():
    """The client :func:`push.discover_api_id` uses (cached by its arguments)."""
    return aws.client("apigatewayv2", REGION, max_attempts=post.DISCOVERY_MAX_ATTEMPTS,
                      connect_timeout=post.DISCOVERY_CONNECT_TIMEOUT,
                      read_timeout=post.DISCOVERY_READ_TIMEOUT)


def test_the_api_is_found_by_name_once_per_process(no_endpoint):
    with mock_aws():
        _api("realtime-prod-websocket-api")
        _api(NAME, protocol="HTTP")  # same name, not a WebSocket API
        api_id = _api()
        calls = []
        _discovery_client().meta.events.register(
            "before-call.apigatewayv2.GetApis", lambda **_: calls.append(1))

        assert post.management_endpoint() == \
            f"https://{api_id}.execute-api.{REGION}.amazonaws.com/dev"
        assert post.management_endpoint() == \
            f"https://{api_id}.execute-api.{REGION}.amazonaws.com/dev"
        assert calls == [1]


def test_explicit_settings_and_the_event_win_over_the_lookup(no_endpoint, monkeypatch):
    stubber = Stubber(_discovery_client())  # no response queued: any call would fail
    with stubber:
        monkeypatch.setenv("WEBSOCKET_API_ID", "fromenv1")
        settings.reset()
        assert post.management_endpoint() == \
            f"https://fromenv1.execute-api.{REGION}.amazonaws.com/dev"
        monkeypatch.delenv("WEBSOCKET_API_ID")
        settings.reset()
        event = {"requestContext": {"domainName": "abc.execute-api.us-east-1.amazonaws.com",
                                    "stage": "dev", "apiId": "abc"}}
        assert post.management_endpoint(event) == \
            "https://abc.execute-api.us-east-1.amazonaws.com/dev"
    stubber.assert_no_pending_responses()


def test_websocket_api_name_setting(no_endpoint, monkeypatch):
    monkeypatch.setenv("WEBSOCKET_API_NAME", "my-api")
    monkeypatch.setenv("WEBSOCKET_STAGE", "live")
    settings.reset()
    with mock_aws():
        api_id = _api("my-api")
        assert post.management_endpoint() == \
            f"https://{api_id}.execute-api.{REGION}.amazonaws.com/live"


def test_no_such_api_is_a_config_error_and_is_not_retried_at_once(no_endpoint, monkeypatch):
    with mock_aws():
        _api("realtime-prod-websocket-api")
        with pytest.raises(ConfigError) as caught:
            post.management_endpoint()
        assert caught.value.status == 503
        message = caught.value.public_message
        assert f"there is no WebSocket API named {NAME} in {REGION}" in message
        assert "WEBSOCKET_API_ID, WEBSOCKET_DOMAIN or WEBSOCKET_ENDPOINT_URL" in message

        api_id = _api()  # the API appears: the failure is remembered for a while
        with pytest.raises(ConfigError):
            post.management_endpoint()
        monkeypatch.setattr(post, "DISCOVERY_RETRY_SECONDS", 0)
        assert api_id in post.management_endpoint()


def test_two_apis_with_the_name_are_ambiguous(no_endpoint):
    with mock_aws():
        _api()
        _api()
        with pytest.raises(ConfigError, match=f"there are 2 WebSocket APIs named {NAME}"):
            post.management_endpoint()


def test_lookup_follows_pages(no_endpoint):
    stubber = Stubber(_discovery_client())
    stubber.add_response("get_apis", {"Items": [
        {"ApiId": "other1", "Name": "other", "ProtocolType": "WEBSOCKET",
         "RouteSelectionExpression": "$request.body.action"}], "NextToken": "page2"}, {})
    stubber.add_response("get_apis", {"Items": [
        {"ApiId": "found2", "Name": NAME, "ProtocolType": "WEBSOCKET",
         "RouteSelectionExpression": "$request.body.action"}]}, {"NextToken": "page2"})
    with stubber:
        assert post.management_endpoint() == \
            f"https://found2.execute-api.{REGION}.amazonaws.com/dev"
    stubber.assert_no_pending_responses()


def test_access_denied_is_a_config_error_naming_the_settings(no_endpoint, caplog):
    stubber = Stubber(_discovery_client())
    stubber.add_client_error("get_apis", "AccessDeniedException", "not authorized",
                             http_status_code=403)
    with stubber, pytest.raises(ConfigError) as caught:
        post.management_endpoint()
    message = caught.value.public_message
    assert f"the WebSocket API {NAME} could not be looked up (AccessDeniedException)" in message
    assert "WEBSOCKET_API_ID" in message
    assert "AccessDeniedException" in caplog.text


@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    held, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_an_unanswered_lookup_fails_in_bounded_time(no_endpoint, monkeypatch, silent_server):
    monkeypatch.setenv("AWS_ENDPOINT_URL_APIGATEWAYV2", silent_server)
    monkeypatch.setattr(post, "DISCOVERY_READ_TIMEOUT", 0.5)  # the bound, without 2 s waits
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"could not be looked up \(ReadTimeoutError\)"):
        post.management_endpoint()
    elapsed = time.monotonic() - start
    bound = post.DISCOVERY_MAX_ATTEMPTS * (post.DISCOVERY_READ_TIMEOUT + 1)
    assert post.DISCOVERY_READ_TIMEOUT <= elapsed < bound


def test_notifications_answer_503_when_the_api_cannot_be_found(no_endpoint, registry, client,
                                                              dev_issuer):
    # (registry: moto is on, and no WebSocket API exists in it)
    connections.register("alice-1=", Principal(sub="alice", issuer="https://issuer.example"))
    response = client.http.post(
        "/notifications", body=json.dumps({"user_id": "alice", "event": "e"}),
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {dev_issuer.mint('alice')}"})
    assert response.status_code == 503
    body = json.loads(response.body)
    assert body["error"] == "not_configured"
    assert f"no WebSocket API named {NAME}" in body["message"]
