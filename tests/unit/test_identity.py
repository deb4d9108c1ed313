"""Where tokens come from (one rule for every door), and verification into a Principal."""
from __future__ import annotations

import pytest

from chalicelib.auth import identity, jwks
from chalicelib.errors import TokenError
from chalicelib.auth.principal import Principal


@pytest.fixture(autouse=True)
def _fresh_keys():
    jwks.reset()
    yield
    jwks.reset()


@pytest.mark.parametrize("headers, query, expected", [
    ({"Authorization": "Bearer abc"}, None, "abc"),
    ({"authorization": "bearer abc"}, None, "abc"),
    ({"AUTHORIZATION": "BeArEr abc"}, None, "abc"),
    ({"Authorization": "abc"}, None, "abc"),
    ({"Authorization": "Bearer Bearer abc"}, None, "Bearer abc"),
    ({"Authorization": "Bearer "}, {"token": "q"}, "q"),
    ({"Authorization": ""}, {"token": "q"}, "q"),
    (None, {"token": "t", "Auth": "a", "authorization": "z"}, "t"),
    (None, {"Auth": "a", "authorization": "z"}, "a"),
    ({}, {"authorization": "z"}, "z"),
    ({"Authorization": "h"}, {"token": "q"}, "h"),
    (None, None, None),
    ({}, {}, None),
    ({"X-Other": "abc"}, {"tok": "x", "token": ""}, None),
    ({"Authorization": None}, {"token": None}, None),
])
def test_extract_token(headers, query, expected):
    assert identity.extract_token(headers, query) == expected


def test_authenticate_returns_the_principal(app_env, dev_issuer):
    token = dev_issuer.mint("alice", name="Alice", scope="openid chat", groups=["g"],
                           unrelated="not copied")
    principal = identity.authenticate(token)
    assert principal == Principal(sub="alice", issuer=dev_issuer.issuer,
                                  scopes=("openid", "chat"),
                                  claims={"name": "Alice", "groups": ["g"]})
    assert Principal.from_context(principal.flat_context()) == principal


def test_authenticate_request_reads_query_when_headers_are_null(app_env, dev_issuer):
    token = dev_issuer.mint("bob")
    assert identity.authenticate_request(None, {"Auth": token}).sub == "bob"


@pytest.mark.parametrize("token", [None, ""])
def test_no_token(token, app_env):
    with pytest.raises(TokenError) as info:
        identity.authenticate(token)
    assert info.value.code == "no_token" and info.value.status == 401


def test_refusals_are_token_errors_with_401(app_env, dev_issuer):
    expired = dev_issuer.mint("carol", ttl=-3600)
    with pytest.raises(TokenError) as info:
        identity.authenticate_request({"Authorization": f"Bearer {expired}"}, None)
    assert (info.value.code, info.value.status, info.value.public_message) == \
        ("token_expired", 401, "Unauthorized")
    assert expired not in str(info.value)


def test_principal_from_request_prefers_authorizer_context(app_env, dev_issuer):
    class Request:
        headers = {"authorization": "Bearer garbage"}
        query_params = None
        context = {"authorizer": Principal("dave", "https://i", ("s",), {}).flat_context()}

    assert identity.principal_from_request(Request()).sub == "dave"
    Request.context = {}
    with pytest.raises(TokenError):
        identity.principal_from_request(Request())
    Request.headers = {"Authorization": dev_issuer.mint("erin")}
    assert identity.principal_from_request(Request()).sub == "erin"
