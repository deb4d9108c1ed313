"""Clear configuration errors everywhere, and log lines that outside text cannot forge (issue 9,
item 6), through Chalice's test client with real tokens from ``dev_issuer``."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import pytest

from chalicelib import settings
from chalicelib.delivery import webhooks
from chalicelib.errors import ConfigError
from chalicelib.logtext import for_log
from tests.support import events
from tests.support.websocket import aws_env, management_api, registry  # noqa: F401

BAD_JWT_SETTINGS = [
    ("unset JWT_ISSUER", {"JWT_ISSUER": None}, "JWT_ISSUER is required but not set"),
    ("JWT_ISSUERS not JSON", {"JWT_ISSUERS": "[{"}, "JWT_ISSUERS must be a JSON list"),
    ("JWT_ISSUERS without audiences", {"JWT_ISSUERS": '[{"issuer": "https://i.example"}]'},
     "JWT_ISSUERS[0] needs a non-empty list of string 'audiences'"),
    ("JWT_ISSUERS nested too deep", {"JWT_ISSUERS": "[" * 5000 + "]" * 5000},
     "JWT_ISSUERS must be a JSON list"),
]


def configure(monkeypatch, changes):
    for name, value in changes.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    settings.reset()


# --- one 503 at every route -------------------------------------------------------------------

@pytest.mark.parametrize("case, changes, message", BAD_JWT_SETTINGS,
                         ids=[c[0] for c in BAD_JWT_SETTINGS])
def test_every_route_answers_the_same_503_naming_the_variable(registry, client, dev_issuer,
                                                                monkeypatch, case, changes,
                                                                message):
    token = dev_issuer.mint("alice", scope="notifications:send")
    configure(monkeypatch, changes)
    bearer = {"Authorization": f"Bearer {token}"}
    answers = {
        "GET /me": client.http.get("/me", headers=bearer),
        "POST /notifications": client.http.post(
            "/notifications", headers={**bearer, "Content-Type": "application/json"},
            body=json.dumps({"user_id": "alice", "event": "e"})),
        "POST /pusher/auth": client.http.post(
            "/pusher/auth", headers={**bearer,
                                     "Content-Type": "application/x-www-form-urlencoded"},
            body="socket_id=1.2&channel_name=private-user-alice"),
        "POST /pusher/user-auth": client.http.post(
            "/pusher/user-auth", headers={**bearer,
                                          "Content-Type": "application/x-www-form-urlencoded"},
            body="socket_id=1.2"),
    }
    for route, response in answers.items():
        assert response.status_code == 503, (route, response.body)
        assert json.loads(response.body) == {"error": "not_configured", "message": message}, \
            route


def test_without_a_token_the_routes_still_answer_401(client, monkeypatch):
    configure(monkeypatch, {"JWT_ISSUER": None})
    assert client.http.get("/me").status_code == 401
    assert client.http.post("/pusher/user-auth", body="socket_id=1.2", headers={
        "Content-Type": "application/x-www-form-urlencoded"}).status_code == 401


def test_the_rest_authorizer_grants_no_principal_on_a_configuration_error(client, dev_issuer,
                                                                         monkeypatch):
    from chalice.app import AuthRequest

    from chalicelib.doors import authorizer

    token = dev_issuer.mint("alice")
    configure(monkeypatch, {"JWT_ISSUER": None})
    request = AuthRequest("TOKEN", f"Bearer {token}",
                          "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/api/GET/me")
    answer = authorizer.rest_authorizer(request)
    assert answer.context == {"config_error": "JWT_ISSUER is required but not set"}
    policy = answer.to_dict(request)
    assert "alice" not in json.dumps(policy)
    assert policy["principalId"] == authorizer.CONFIG_ERROR_PRINCIPAL


class FakeRequest:
    def __init__(self, context, headers=None):
        self.context = {"authorizer": context}
        self.headers = headers or {}
        self.query_params = None


def test_a_config_error_marker_always_wins_over_a_principal(app_env):
    from chalicelib.auth.identity import principal_from_request

    with pytest.raises(ConfigError) as info:
        principal_from_request(FakeRequest({"config_error": "JWT_ISSUER is required but not set",
                                            "sub": "mallory", "iss": "https://i.example"}))
    assert info.value.status == 503 and "JWT_ISSUER" in info.value.public_message


def test_the_websocket_authorizer_answers_401_and_logs_the_variable(client, dev_issuer,
                                                                   monkeypatch, auth_log):
    # API Gateway only lets a Lambda authorizer answer 401, 403 or 500 (see README)
    token = dev_issuer.mint("ivy")
    configure(monkeypatch, {"JWT_ISSUER": None})
    event = events.connect_event(query={"token": token})
    event.update(type="REQUEST",
                 methodArn="arn:aws:execute-api:us-east-1:123456789012:abcdef1234/test/$connect")
    with pytest.raises(Exception, match="^Unauthorized$"):
        client.lambda_.invoke("ws_authorizer", event)
    assert "not_configured (JWT_ISSUER is required but not set)" in auth_log.text
    assert [r.levelname for r in auth_log.records if "not_configured" in r.getMessage()] == \
        ["ERROR"]


def test_connect_without_the_authorizer_answers_503(registry, client, dev_issuer, monkeypatch):
    token = dev_issuer.mint("ivy")
    configure(monkeypatch, {"JWT_ISSUER": None})
    event = events.connect_event(token=token)
    assert client.lambda_.invoke("ws_connect", event).payload == {"statusCode": 503}


# --- one URL scheme rule ----------------------------------------------------------------------

@pytest.mark.parametrize("variable, url", [
    ("JWT_ISSUER", "HTTP://127.0.0.1:9999"),
    ("JWT_ISSUER", "Http://localhost:9999"),
    ("JWT_ISSUER_JWKS_URI", "hTTp://127.0.0.1:9999/jwks.json"),
])
def test_plain_http_in_any_case_is_refused_outside_dev(app_env, monkeypatch, variable, url):
    configure(monkeypatch, {"STAGE": "prod", "JWT_ISSUER": "https://issuer.example",
                            "JWT_ISSUER_JWKS_URI": None, variable: url})
    with pytest.raises(ConfigError) as info:
        settings.jwt_settings()
    assert "plain-http (local dev) issuers are only allowed on the dev stage" in str(info.value)


def test_plain_http_in_any_case_is_refused_in_jwt_issuers_outside_dev(app_env, monkeypatch):
    configure(monkeypatch, {"STAGE": "staging", "JWT_ISSUER": None, "JWT_ISSUERS": json.dumps(
        [{"issuer": "HTTP://127.0.0.1:9999", "audiences": ["a"]}])})
    with pytest.raises(ConfigError, match="plain-http"):
        settings.jwt_settings()


def test_plain_http_in_any_case_is_accepted_on_dev(app_env, monkeypatch):
    configure(monkeypatch, {"STAGE": "dev", "JWT_ISSUER": "HTTP://127.0.0.1:9999",
                            "JWT_ISSUER_JWKS_URI": None})
    assert list(settings.jwt_settings().issuers) == ["HTTP://127.0.0.1:9999"]


# --- the push queue follows the stage ---------------------------------------------------------

@pytest.mark.parametrize("stage, expected", [(None, "realtime-push-prod"),
                                             ("dev", "realtime-push-dev"),
                                             ("staging", "realtime-push-staging")])
def test_push_queue_default_follows_the_stage_default(monkeypatch, stage, expected):
    configure(monkeypatch, {"PUSH_QUEUE_NAME": None, "STAGE": stage})
    assert settings.push_queue_name() == expected
    assert settings.push_queue_name() == f"realtime-push-{settings.app_settings().stage}"
    configure(monkeypatch, {"PUSH_QUEUE_NAME": "my-queue"})
    assert settings.push_queue_name() == "my-queue"


# --- log lines cannot be forged ---------------------------------------------------------------

@pytest.mark.parametrize("value, logged", [
    ("private-a\nINFO forged", "private-a\\nINFO forged"),
    ("a\r\nb\tc", "a\\r\\nb\\tc"),
    ("back\\slash", "back\\\\slash"),
    ("nel\x85ls\u2028ps\u2029", "nel\\x85ls\\u2028ps\\u2029"),
    ("rtl\u202eevil", "rtl\\u202eevil"),
    ("lone\ud800", "lone\\ud800"),
    ("\x1b[31mred", "\\x1b[31mred"),
    ("Élodie 東京", "Élodie 東京"),
    (7, "7"),
    (None, "None"),
])
def test_for_log_keeps_values_on_one_readable_line(value, logged):
    assert for_log(value) == logged
    assert for_log(value).encode("utf-8")


def test_for_log_cuts_long_values():
    assert for_log("x" * 250) == "x" * 200 + "…(+50 chars)"


def sign(body: bytes) -> str:
    return hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()


def test_a_newline_in_a_signed_webhook_never_starts_a_log_line(client, monkeypatch, auth_log):
    monkeypatch.setattr(webhooks, "HANDLERS", webhooks.WebhookHandlers())
    evil = [{"name": "channel_vacated\nINFO realtime forged: admin logged in",
             "channel": "private-b\r\nWARNING forged", "user_id": "u\n1"},
            {"name": "member_added", "channel": "presence-a\nx", "user_id": "bob\nERROR x"}]
    body = json.dumps({"time_ms": int(time.time() * 1000), "events": evil}).encode()
    response = client.http.post("/pusher/webhooks", body=body, headers={
        "Content-Type": "application/json", "X-Pusher-Key": "app-key",
        "X-Pusher-Signature": sign(body)})
    assert response.status_code == 200
    lines = [r.getMessage() for r in auth_log.records if r.name == "realtime.webhooks"]
    assert len(lines) == 2
    for line in lines:
        assert "\n" not in line and "\r" not in line
    assert "channel_vacated\\nINFO realtime forged" in lines[0]
    assert "channel=private-b\\r\\nWARNING forged" in lines[0]
    assert "user_id=bob\\nERROR x" in lines[1]
    # what CloudWatch Logs gets: one JSON object per line, the same escaped messages
    assert [line["message"] for line in auth_log.json.lines()
            if line["name"] == "realtime.webhooks"] == lines


def test_a_failing_webhook_handler_logs_the_event_name_escaped(client, monkeypatch, auth_log):
    registry = webhooks.WebhookHandlers()

    def boom(event, time_ms):
        raise RuntimeError("bug")

    name = "evt\nforged"
    registry.register(name, boom)
    monkeypatch.setattr(webhooks, "HANDLERS", registry)
    body = json.dumps({"time_ms": int(time.time() * 1000), "events": [{"name": name}]}).encode()
    client.http.post("/pusher/webhooks", body=body, headers={
        "Content-Type": "application/json", "X-Pusher-Key": "app-key",
        "X-Pusher-Signature": sign(body)})
    (record,) = [r for r in auth_log.records if "failed on" in r.getMessage()]
    assert record.getMessage().endswith("failed on evt\\nforged")


def test_worker_logs_escape_producer_values(registry, management_api, client, auth_log):
    record = events.sqs_record({"connection_id": "nobody\nERROR forged", "event": "e"},
                               message_id="m1")
    result = client.lambda_.invoke("push_worker", events.sqs_event([record])).payload
    assert result == {"batchItemFailures": []}
    (line,) = [r.getMessage() for r in auth_log.records if r.getMessage().startswith(
        "push message m1 to")]
    assert "connection_id nobody\\nERROR forged" in line


def test_error_reasons_that_quote_input_are_escaped(auth_log):
    from chalicelib.errors import BadRequest, log_error

    log_error(BadRequest("bad value 'a\nFORGED'"), "somewhere")
    (record,) = auth_log.records
    assert record.getMessage() == "somewhere: bad_request (bad value 'a\\nFORGED')"
    (line,) = auth_log.json.lines()
    assert (line["level"], line["message"]) == ("WARNING", record.getMessage())
