"""Valid tokens of every algorithm pass both doors: ``GET /me`` behind the REST TOKEN authorizer
``jwt_auth``, and the WebSocket REQUEST authorizer ``ws_authorizer`` invoked with
API-Gateway-shaped ``$connect`` events (each token source, header case, null maps)."""
from __future__ import annotations

import json
import logging

import pytest

from chalicelib.auth import jwks
from devtools.dev_issuer import ALGORITHMS

ACCOUNT_ARN = "arn:aws:execute-api:eu-west-1:123456789012"
METHOD_ARN = f"{ACCOUNT_ARN}:abcdef1234/dev/$connect"


@pytest.fixture(autouse=True)
def _fresh_keys():
    jwks.reset()
    yield
    jwks.reset()


def connect_event(headers=None, query=None, multi_headers=None, method_arn=METHOD_ARN):
    """A REQUEST authorizer event as API Gateway sends it for a WebSocket ``$connect``."""
    return {
        "type": "REQUEST",
        "methodArn": method_arn,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "stageVariables": None,
        "requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "stage": "dev",
                           "apiId": "abcdef1234", "connectionId": "L0SM9cOFvHcCIhw=",
                           "domainName": "abcdef1234.execute-api.eu-west-1.amazonaws.com"},
    }


def invoke(client, event):
    return client.lambda_.invoke("ws_authorizer", event).payload


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_every_algorithm_passes_get_me(alg, client, dev_issuer):
    token = dev_issuer.mint("alice", alg=alg, name="Alice", email="alice@example.com",
                           scope="openid chat:write", groups=["admins", "staff"])
    response = client.http.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.body
    assert json.loads(response.body) == {
        "user_id": "alice", "sub": "alice", "iss": dev_issuer.issuer, "scopes": ["openid", "chat:write"],
        "claims": {"name": "Alice", "email": "alice@example.com",
                   "groups": ["admins", "staff"]},
    }


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_every_algorithm_passes_ws_authorizer(alg, client, dev_issuer):
    token = dev_issuer.mint("bob", alg=alg, name="Bob", scp=["read", "write"])
    result = invoke(client, connect_event(headers={"Authorization": f"Bearer {token}"}))
    assert result["principalId"] == "bob"
    assert result["policyDocument"] == {
        "Version": "2012-10-17",
        "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow",
                       "Resource": [METHOD_ARN]}],
    }
    context = result["context"]
    assert context["sub"] == "bob" and context["iss"] == dev_issuer.issuer
    assert context["scopes"] == "read write" and context["name"] == "Bob"
    assert json.loads(context["claims"]) == {"name": "Bob"}


def test_context_holds_only_flat_values(client, dev_issuer):
    token = dev_issuer.mint("carol", name="Carol", email_verified=True, groups=["a", "b"],
                           address={"country": "FR"}, **{"cognito:groups": ["x"]})
    context = invoke(client, connect_event(query={"token": token}))["context"]
    assert context and all(isinstance(v, (str, int, float, bool)) for v in context.values())
    assert context["email_verified"] is True
    assert json.loads(context["claims"])["groups"] == ["a", "b"]
    assert "address" not in json.loads(context["claims"])


@pytest.mark.parametrize("headers, query", [
    ({"Authorization": "Bearer {t}"}, None),
    ({"authorization": "bearer {t}"}, None),
    ({"AUTHORIZATION": "BEARER {t}"}, {}),
    ({"aUtHoRiZaTiOn": "{t}"}, None),
    (None, {"token": "{t}"}),
    ({}, {"Auth": "{t}"}),
    ({"Host": "x"}, {"authorization": "{t}"}),
    ({"Authorization": ""}, {"token": "{t}"}),
], ids=["bearer", "lower-case", "upper-case-empty-query", "raw-mixed-case", "query-token",
        "query-Auth", "query-authorization", "empty-header-then-query"])
def test_token_sources(headers, query, client, dev_issuer):
    token = dev_issuer.mint("dave")

    def fill(mapping):
        return None if mapping is None else {k: v.format(t=token) for k, v in mapping.items()}
    result = invoke(client, connect_event(headers=fill(headers), query=fill(query)))
    assert result["principalId"] == "dave"


def test_multi_value_headers_only(client, dev_issuer):
    token = dev_issuer.mint("erin")
    event = connect_event(multi_headers={"Authorization": [f"Bearer {token}"]})
    assert invoke(client, event)["principalId"] == "erin"


def test_header_wins_over_query(client, dev_issuer):
    header_token, query_token = dev_issuer.mint("from-header"), dev_issuer.mint("from-query")
    event = connect_event(headers={"Authorization": header_token}, query={"token": query_token})
    assert invoke(client, event)["principalId"] == "from-header"


def test_no_headers_no_query_is_unauthorized(client, caplog):
    logging.getLogger("realtime").addHandler(caplog.handler)
    try:
        with pytest.raises(Exception, match="^Unauthorized$"):
            invoke(client, connect_event())
    finally:
        logging.getLogger("realtime").removeHandler(caplog.handler)
    assert "ws_authorizer: no_token" in caplog.text


def test_authorized_apis_grants_each_listed_api(client, dev_issuer, monkeypatch):
    monkeypatch.setenv("AUTHORIZED_APIS", "abcdef1234, zyxwvu9876")
    token = dev_issuer.mint("frank")
    result = invoke(client, connect_event(query={"token": token}))
    assert result["policyDocument"]["Statement"][0]["Resource"] == [
        f"{ACCOUNT_ARN}:abcdef1234/*", f"{ACCOUNT_ARN}:zyxwvu9876/*"]


def test_api_outside_authorized_apis_is_unauthorized(client, dev_issuer, monkeypatch, caplog):
    monkeypatch.setenv("AUTHORIZED_APIS", "zyxwvu9876")
    logging.getLogger("realtime").addHandler(caplog.handler)
    try:
        with pytest.raises(Exception, match="^Unauthorized$"):
            invoke(client, connect_event(query={"token": dev_issuer.mint("gina")}))
    finally:
        logging.getLogger("realtime").removeHandler(caplog.handler)
    assert "'abcdef1234' is not in AUTHORIZED_APIS" in caplog.text


@pytest.mark.parametrize("arn", [None, "", "arn:aws:lambda:eu-west-1:1:function:x",
                                 "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234"])
def test_malformed_method_arn_is_unauthorized(arn, client, dev_issuer):
    with pytest.raises(Exception, match="^Unauthorized$"):
        invoke(client, connect_event(query={"token": dev_issuer.mint("hank")}, method_arn=arn))


def test_configuration_error_is_never_500(client, dev_issuer, monkeypatch, caplog):
    # the WebSocket authorizer can only answer 401; GET /me answers the 503 every route gives
    # (tests/unit/test_config_and_logs.py)
    monkeypatch.delenv("JWT_ISSUER")
    logging.getLogger("realtime").addHandler(caplog.handler)
    try:
        with pytest.raises(Exception, match="^Unauthorized$"):
            invoke(client, connect_event(query={"token": dev_issuer.mint("ivy")}))
        response = client.http.get("/me", headers={"Authorization": dev_issuer.mint("ivy")})
    finally:
        logging.getLogger("realtime").removeHandler(caplog.handler)
    assert response.status_code == 503
    assert "not_configured (JWT_ISSUER is required but not set)" in caplog.text


@pytest.mark.parametrize("event", [{}, {"headers": "not a map"}, {"headers": {"a": 1}},
                                   {"queryStringParameters": {"token": 5}}, []])
def test_odd_events_are_unauthorized(event, client):
    with pytest.raises(Exception, match="^Unauthorized$"):
        invoke(client, event)


def test_rest_authorizer_answers_auth_response(client, dev_issuer):
    from chalice.app import AuthRequest

    from chalicelib.doors import authorizer

    token = dev_issuer.mint("judy", email="judy@example.com")
    arn = f"{ACCOUNT_ARN}:abcdef1234/dev/GET/me"
    response = authorizer.rest_authorizer(AuthRequest("TOKEN", f"Bearer {token}", arn))
    policy = response.to_dict(AuthRequest("TOKEN", token, arn))
    assert policy["principalId"] == "judy"
    assert policy["context"]["email"] == "judy@example.com"
    assert policy["policyDocument"]["Statement"][0]["Resource"] == [
        f"{ACCOUNT_ARN}:abcdef1234/dev/*/*"]


def test_me_without_token_is_401(client):
    response = client.http.get("/me")
    assert response.status_code == 401
