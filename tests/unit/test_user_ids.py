"""User ids: one name per (issuer, sub), in Pusher's charset, within every key-size limit.

The mapping itself (chalicelib.auth.principal), its settings (``JWT_ISSUERS`` ``user_id_prefix``),
and what a user sees through every door when two issuers share a ``sub``: Pusher channel
auth, presence members, user sign-in, ``POST /notifications``, the registry and ``GET /me`` —
with real tokens from two dev issuers on 127.0.0.1.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from chalicelib import settings
from chalicelib.registry import subscriptions
from chalicelib.errors import ConfigError
from chalicelib.auth.principal import (MAX_USER_ID_LENGTH, Principal, UserIdUnrepresentable,
                                       make_user_id, split_user_id)
from devtools.dev_issuer import DevIssuer
from tests.support import events
from tests.support.websocket import aws_env, management_api, registry  # noqa: F401

PUSHER_CHARSET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-=@,.;")
SCOPE = "notifications:send"


# --- the mapping ------------------------------------------------------------------------------

@pytest.mark.parametrize("sub, prefix, user_id", [
    ("alice", None, "alice"),
    ("9f0c-42d1_x@example.com", None, "9f0c-42d1_x@example.com"),
    ("auth0|abc", None, "auth0=7Cabc"),
    ("a=b", None, "a=3Db"),
    ("é", None, "=C3=A9"),
    ("a b/c", None, "a=20b=2Fc"),
    ("alice", "google", "google.alice"),
    ("auth0|abc", "a0", "a0.auth0=7Cabc"),
    ("x.y", "okta", "okta.x.y"),
])
def test_user_id_examples(sub, prefix, user_id):
    assert make_user_id(sub, prefix) == user_id
    assert split_user_id(user_id, prefixed=prefix is not None) == (prefix, sub)


#: subs of 1-11 characters: at most 12 escaped characters each, so 11 * 12 + len("google.")
#: stays within the 141-character limit; lone surrogates are tested on their own
subs = st.text(min_size=1, max_size=11).filter(
    lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
prefixes = st.sampled_from(["a", "ab", "b", "a-b", "a_b", "google", "A"])


@hypothesis_settings(max_examples=400, deadline=None)
@given(first=st.tuples(prefixes, subs), second=st.tuples(prefixes, subs))
def test_prefixed_user_ids_are_injective_and_in_pushers_charset(first, second):
    one, two = make_user_id(first[1], first[0]), make_user_id(second[1], second[0])
    assert set(one) <= PUSHER_CHARSET and set(two) <= PUSHER_CHARSET
    assert (one == two) == (first == second)
    assert split_user_id(one, prefixed=True) == first


@hypothesis_settings(max_examples=300, deadline=None)
@given(first=subs, second=subs)
def test_unprefixed_user_ids_are_injective(first, second):
    assert (make_user_id(first) == make_user_id(second)) == (first == second)
    assert split_user_id(make_user_id(first), prefixed=False) == (None, first)


def test_user_id_length_rule():
    assert len(f"private-encrypted-user-{'x' * MAX_USER_ID_LENGTH}") == 164
    assert make_user_id("x" * MAX_USER_ID_LENGTH) == "x" * MAX_USER_ID_LENGTH
    for sub, prefix in [("x" * (MAX_USER_ID_LENGTH + 1), None),
                        ("x" * (MAX_USER_ID_LENGTH - 2), "ab"),
                        ("é" * 24, None),               # 24 * 6 = 144 characters escaped
                        ("é" * 2000, None),
                        ("\ud800", None)]:
        with pytest.raises(UserIdUnrepresentable) as caught:
            make_user_id(sub, prefix)
        assert caught.value.status == 401 and caught.value.code == "user_id_unrepresentable"


def test_principal_round_trips_its_user_id_through_the_authorizer_context():
    principal = Principal.from_claims({"sub": "auth0|abc", "iss": "https://b.example/",
                                       "name": "Bea"}, "b")
    assert principal.user_id == "b.auth0=7Cabc"
    assert Principal.from_context(principal.flat_context()) == principal
    assert principal.to_json()["user_id"] == "b.auth0=7Cabc"


# --- settings ---------------------------------------------------------------------------------

@pytest.fixture
def jwt_env(monkeypatch):
    for name in ("JWT_ISSUER", "JWT_ISSUER_JWKS_URI", "JWT_AUTHORIZED_AUDIENCES", "STAGE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _issuers(monkeypatch, *entries):
    monkeypatch.setenv("JWT_ISSUERS", json.dumps([
        {"issuer": f"https://{name}.example/", "audiences": ["web"], **extra}
        for name, extra in entries]))
    settings.reset()
    return settings.jwt_settings()


@pytest.mark.parametrize("entries, message", [
    ([("a", {}), ("b", {})], "needs a 'user_id_prefix'"),
    ([("a", {"user_id_prefix": "x"}), ("b", {})], "JWT_ISSUERS[1] needs a 'user_id_prefix'"),
    ([("a", {"user_id_prefix": "x"}), ("b", {"user_id_prefix": "x"})], "must be distinct"),
    ([("a", {"user_id_prefix": "x.y"})], "user_id_prefix must be"),
    ([("a", {"user_id_prefix": ""})], "user_id_prefix must be"),
    ([("a", {"user_id_prefix": "x" * 33})], "user_id_prefix must be"),
    ([("a", {"user_id_prefix": 7})], "user_id_prefix must be"),
    ([("a", {"user_id_prefix": "x"}), ("a", {"user_id_prefix": "y"})], "more than once"),
])
def test_prefix_settings_are_checked(jwt_env, entries, message):
    with pytest.raises(ConfigError) as caught:
        _issuers(jwt_env, *entries)
    assert message in str(caught.value)


def test_prefix_settings(jwt_env):
    one = _issuers(jwt_env, ("a", {}))
    assert one.issuers["https://a.example/"].user_id_prefix is None
    single = _issuers(jwt_env, ("a", {"user_id_prefix": "acme"}))
    assert single.issuers["https://a.example/"].user_id_prefix == "acme"
    two = _issuers(jwt_env, ("a", {"user_id_prefix": "a"}), ("b", {"user_id_prefix": "ab"}))
    assert [c.user_id_prefix for c in two.issuers.values()] == ["a", "ab"]


# --- two issuers through every door -------------------------------------------------------------

@pytest.fixture(scope="module")
def issuer_b(tmp_path_factory):
    issuer = DevIssuer(keys_dir=tmp_path_factory.mktemp("devkeys-b"), port=0).start()
    yield issuer
    issuer.stop()


@pytest.fixture
def two_issuers(app_env, dev_issuer, issuer_b, monkeypatch):
    """Issuer A (``dev_issuer``, prefix ``a``) and issuer B (prefix ``b``)."""
    monkeypatch.setenv("JWT_ISSUERS", json.dumps([
        {"issuer": dev_issuer.issuer, "jwks_uri": dev_issuer.jwks_uri,
         "audiences": [dev_issuer.audience], "user_id_prefix": "a"},
        {"issuer": issuer_b.issuer, "jwks_uri": issuer_b.jwks_uri,
         "audiences": [issuer_b.audience], "user_id_prefix": "b"},
    ]))
    settings.reset()
    return dev_issuer, issuer_b


def _post_form(client, path, token, **fields):
    from urllib.parse import urlencode

    response = client.http.post(path, body=urlencode(fields), headers={
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/x-www-form-urlencoded"})
    return response.status_code, json.loads(response.body)


def test_a_sub_of_issuer_b_is_not_issuer_as_user(two_issuers, client):
    issuer_a, issuer_b = two_issuers
    alice_b = issuer_b.mint("alice", name="Alice B")

    status, _ = _post_form(client, "/pusher/auth", alice_b, socket_id="1.2",
                           channel_name="private-user-alice")
    assert status == 403
    status, _ = _post_form(client, "/pusher/auth", alice_b, socket_id="1.2",
                           channel_name="private-user-a.alice")
    assert status == 403
    status, body = _post_form(client, "/pusher/auth", alice_b, socket_id="1.2",
                              channel_name="private-user-b.alice")
    assert status == 200 and body["auth"].startswith("app-key:")
    status, _ = _post_form(client, "/pusher/auth", issuer_a.mint("alice"), socket_id="1.2",
                           channel_name="private-user-a.alice")
    assert status == 200

    status, body = _post_form(client, "/pusher/auth", alice_b, socket_id="1.2",
                              channel_name="presence-lobby")
    assert status == 200
    assert json.loads(body["channel_data"]) == {"user_id": "b.alice",
                                                "user_info": {"name": "Alice B"}}
    status, body = _post_form(client, "/pusher/user-auth", alice_b, socket_id="1.2")
    assert status == 200 and json.loads(body["user_data"])["id"] == "b.alice"

    response = client.http.get("/me", headers={"Authorization": f"Bearer {alice_b}"})
    assert response.status_code == 200
    assert json.loads(response.body)["user_id"] == "b.alice"
    assert json.loads(response.body)["sub"] == "alice"


def test_notifications_and_registry_keep_the_two_alices_apart(two_issuers, registry,
                                                             management_api, client):
    issuer_a, issuer_b = two_issuers
    ids = {}
    for name, issuer in (("a", issuer_a), ("b", issuer_b)):
        event = events.connect_event(token=issuer.mint("alice"))
        assert client.lambda_.invoke("ws_connect", event).payload == {"statusCode": 200}
        ids[name] = event["requestContext"]["connectionId"]
    assert subscriptions.connections_of_user("a.alice") == [ids["a"]]
    assert subscriptions.connections_of_user("b.alice") == [ids["b"]]
    assert subscriptions.connections_of_user("alice") == []

    def notify(token, body):
        response = client.http.post("/notifications", body=json.dumps(body), headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        return response.status_code, json.loads(response.body)

    alice_b = issuer_b.mint("alice")
    assert notify(alice_b, {"user_id": "a.alice", "event": "hi"})[0] == 403
    assert notify(alice_b, {"user_id": "alice", "event": "hi"})[0] == 403
    status, summary = notify(alice_b, {"user_id": "b.alice", "event": "hi"})
    assert status == 200 and summary["delivered"] == 1
    assert management_api.frames(ids["b"]) == [{"type": "event", "event": "hi", "data": None,
                                                "id": 1}]
    assert management_api.frames(ids["a"]) == []


# --- one issuer: Auth0-style subs, size limits ------------------------------------------------

def test_auth0_sub_gets_a_usable_user_id(client, dev_issuer):
    token = dev_issuer.mint("auth0|5f1a2b")
    status, body = _post_form(client, "/pusher/user-auth", token, socket_id="1.2")
    assert status == 200
    assert json.loads(body["user_data"])["id"] == "auth0=7C5f1a2b"
    status, _ = _post_form(client, "/pusher/auth", token, socket_id="1.2",
                           channel_name="private-user-auth0=7C5f1a2b")
    assert status == 200
    response = client.http.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert json.loads(response.body)["user_id"] == "auth0=7C5f1a2b"


@pytest.mark.parametrize("sub", ["x" * (MAX_USER_ID_LENGTH + 1),
                                 "中" * 700])  # 2100 bytes of UTF-8: over a 2048-byte key
def test_a_sub_too_long_for_a_user_id_is_refused_at_every_door(client, registry, dev_issuer,
                                                                auth_log, sub):
    token = dev_issuer.mint(sub)
    response = client.http.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    status, _ = _post_form(client, "/pusher/auth", token, socket_id="1.2",
                           channel_name="presence-lobby")
    assert status == 401
    event = events.connect_event(token=token)
    assert client.lambda_.invoke("ws_connect", event).payload == {"statusCode": 401}
    with pytest.raises(Exception) as caught:
        client.lambda_.invoke("ws_authorizer", {
            "type": "REQUEST", "methodArn": "arn:aws:execute-api:us-east-1:1:abc/test/$connect",
            "headers": {"Authorization": f"Bearer {token}"}})
    assert "Unauthorized" in str(caught.value)
    assert "user_id_unrepresentable" in auth_log.text
    assert sub not in auth_log.text


@pytest.mark.parametrize("user_id", ["x" * (MAX_USER_ID_LENGTH + 1), "é" * 1000,
                                     "auth0|abc", "a=zz", ""])
def test_notifications_refuse_a_user_id_that_cannot_exist(client, registry, management_api,
                                                          dev_issuer, user_id):
    token = dev_issuer.mint("alice", scope=SCOPE)
    response = client.http.post("/notifications", body=json.dumps(
        {"user_id": user_id, "event": "e"}), headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert response.status_code == 400
    body = json.loads(response.body)
    assert body["error"] == "bad_request" and "user_id" in body["message"]
    assert management_api.attempts == {}
