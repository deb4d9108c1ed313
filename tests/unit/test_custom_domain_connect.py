"""``ws_authorizer`` on the ``$connect`` events API Gateway sends for a client that came in
through a custom domain (README, "Custom domains"): no path anywhere in the event (WebSocket
events carry none), the stage in ``requestContext.stage``, and either

* through the stage's CloudFront distribution: ``Host`` and ``requestContext.domainName`` name
  the ``execute-api`` origin (the origin request policy forwards every header but ``Host``),
  CloudFront's own headers are added, and pusher-js's key arrives as ``app_key`` (the path
  function's rewrite of ``/app/<key>``); or
* through an API Gateway custom domain (a native client with its token):
  ``requestContext.domainName`` is the custom name.
"""
from __future__ import annotations

import pytest

from chalicelib.auth import jwks

API_ID = "abcdef1234"
METHOD_ARN = f"arn:aws:execute-api:eu-west-1:123456789012:{API_ID}/prod/$connect"
ORIGIN = f"{API_ID}.execute-api.eu-west-1.amazonaws.com"


@pytest.fixture(autouse=True)
def _fresh_keys():
    jwks.reset()
    yield
    jwks.reset()


def connect_event(query, domain_name, host):
    """A REQUEST authorizer event for a WebSocket ``$connect`` that came through a custom
    domain, as API Gateway builds it."""
    headers = {
        "Host": host,
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
        "Origin": "https://app.example.com",
        "User-Agent": "Mozilla/5.0",
        "X-Forwarded-For": "198.51.100.7, 130.176.0.1",
        "X-Forwarded-Port": "443", "X-Forwarded-Proto": "https",
    }
    if host == ORIGIN:  # came through CloudFront
        headers.update({"Via": "1.1 0123456789abcdef.cloudfront.net (CloudFront)",
                        "X-Amz-Cf-Id": "vUtW2gmDL5WZfdP4P0Z8_aVJOCqkfmbTDyN7m3Wk3D_RSHEAvZ0Vg=="})
    return {
        "type": "REQUEST",
        "methodArn": METHOD_ARN,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()},
        "stageVariables": None,
        "requestContext": {
            "routeKey": "$connect", "eventType": "CONNECT", "extendedRequestId": "Abc=",
            "requestTime": "22/Nov/2026:05:00:00 +0000", "messageDirection": "IN",
            "stage": "prod", "connectedAt": 1795237200000, "requestTimeEpoch": 1795237200000,
            "identity": {"sourceIp": "130.176.0.1", "userAgent": "Mozilla/5.0"},
            "requestId": "Abc=", "domainName": domain_name,
            "connectionId": "L0SM9cOFvHcCIhw=", "apiId": API_ID},
    }


PUSHER_JS = {"protocol": "7", "client": "js", "version": "8.4.0", "flash": "false",
             "app_key": "app-key"}


@pytest.mark.parametrize("domain_name, host", [(ORIGIN, ORIGIN),
                                               ("ws.example.com", "ws.example.com")])
def test_pusher_js_through_a_custom_domain_is_let_in_anonymously(client, monkeypatch,
                                                                  domain_name, host):
    monkeypatch.setenv("PUSHER_DIALECT", "true")
    answer = client.lambda_.invoke("ws_authorizer",
                                   connect_event(PUSHER_JS, domain_name, host)).payload
    assert answer["principalId"] == "pusher-anonymous"
    assert answer["context"] == {"dialect": "pusher"}
    assert answer["policyDocument"]["Statement"][0]["Resource"] == [METHOD_ARN]


@pytest.mark.parametrize("domain_name, host", [(ORIGIN, ORIGIN),
                                               ("ws.example.com", "ws.example.com")])
def test_a_native_client_through_a_custom_domain_signs_in_with_its_token(
        client, dev_issuer, domain_name, host):
    token = dev_issuer.mint("alice")
    answer = client.lambda_.invoke("ws_authorizer",
                                   connect_event({"token": token}, domain_name, host)).payload
    assert answer["principalId"] == "alice"
    assert answer["policyDocument"]["Statement"][0]["Resource"] == [METHOD_ARN]


def test_without_a_token_the_custom_domain_changes_nothing(client):
    with pytest.raises(Exception, match="^Unauthorized$"):
        client.lambda_.invoke("ws_authorizer", connect_event({}, ORIGIN, ORIGIN))
