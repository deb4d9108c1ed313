"""The Pusher secret read from SSM Parameter Store (``PUSHER_SECRET_PARAMETER``).

A stuck SSM must not hold ``/pusher/auth`` past API Gateway's 29 s integration timeout, and a
failure is remembered briefly so each request does not wait again. SSM is played by a real HTTP
server on 127.0.0.1 (tests/support/ssm_server.py, reached through ``AWS_ENDPOINT_URL_SSM``), or
by moto.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import time

import pytest

from chalicelib import aws, settings
from tests.support.ssm_server import SsmServer

FORM = "application/x-www-form-urlencoded"
PARAMETER = "/realtime/test/pusher-secret"
SECRET_VALUE = "ssm-held-secret-0123"
BODY = "socket_id=123.456&channel_name=private-user-alice"


class FakeClock:
    """Stands in for settings.monotonic: time moves only when the test says so."""

    def __init__(self):
        self.now = 5000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def ssm_env(app_env, monkeypatch):
    """The app's environment with the secret in SSM instead of ``PUSHER_SECRET``."""
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL") or name == "AWS_PROFILE":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PUSHER_SECRET")
    for name, value in {"PUSHER_SECRET_PARAMETER": PARAMETER, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    aws.reset_clients()
    yield monkeypatch
    aws.reset_clients()


@pytest.fixture
def ssm(ssm_env):
    with SsmServer({PARAMETER: SECRET_VALUE}) as server:
        ssm_env.setenv("AWS_ENDPOINT_URL_SSM", server.endpoint_url)
        yield server


@pytest.fixture
def post(client, dev_issuer):
    token = dev_issuer.mint("alice", name="Alice")

    def send():
        return client.http.post("/pusher/auth", body=BODY, headers={
            "Content-Type": FORM, "Authorization": f"Bearer {token}"})
    return send


def expected_auth(secret: str = SECRET_VALUE) -> dict:
    digest = hmac.new(secret.encode(), b"123.456:private-user-alice", hashlib.sha256)
    return {"auth": f"app-key:{digest.hexdigest()}"}


def assert_503_naming_the_setting(response):
    assert response.status_code == 503
    body = json.loads(response.body)
    assert body["error"] == "not_configured"
    assert "PUSHER_SECRET_PARAMETER" in body["message"]
    assert SECRET_VALUE not in response.body.decode()
    return body["message"]


@pytest.mark.timeout(30)
def test_stuck_ssm_is_503_within_the_bound_then_remembered(ssm, post, monkeypatch):
    attempts = settings.SSM_MAX_ATTEMPTS
    # the bound: every attempt connects and waits for its read; far below API Gateway's 29 s
    assert attempts * (settings.SSM_CONNECT_TIMEOUT + settings.SSM_READ_TIMEOUT) <= 6.5
    # measured with a shorter read timeout (the 2 s one would make this test wait 4 s)
    monkeypatch.setattr(settings, "SSM_READ_TIMEOUT", 0.5)
    ssm.mode = "hang"
    start = time.monotonic()
    message = assert_503_naming_the_setting(post())
    elapsed = time.monotonic() - start
    assert attempts * 0.5 <= elapsed < attempts * 0.5 + 1.5   # each attempt's read timed out
    assert "ReadTimeoutError" in message
    assert ssm.connections == attempts
    ssm.mode = "ok"                            # fixed, but the failure is still remembered
    start = time.monotonic()
    assert_503_naming_the_setting(post())
    assert time.monotonic() - start < 0.5      # no new wait of a read timeout
    assert ssm.connections == attempts         # no new connection to SSM


@pytest.mark.timeout(30)
def test_remembered_failure_expires_and_the_fixed_secret_is_used(ssm, post, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(settings, "monotonic", clock)
    monkeypatch.setattr(settings, "SSM_READ_TIMEOUT", 0.3)  # the stuck SSM fails sooner
    ssm.mode = "hang"
    assert_503_naming_the_setting(post())
    attempts = len(ssm.requests)
    ssm.mode = "ok"
    clock.advance(settings.SECRET_FAILURE_MEMORY - 1)
    message = assert_503_naming_the_setting(post())
    assert "next attempt in 1 s" in message
    assert len(ssm.requests) == attempts
    clock.advance(1)
    response = post()
    assert response.status_code == 200
    assert json.loads(response.body) == expected_auth()
    assert len(ssm.requests) == attempts + 1


def test_unreachable_ssm_is_503_at_once_and_remembered(ssm_env, post):
    with SsmServer() as stopped:
        url = stopped.endpoint_url
    ssm_env.setenv("AWS_ENDPOINT_URL_SSM", url)   # nothing listens there any more
    start = time.monotonic()
    message = assert_503_naming_the_setting(post())
    assert "EndpointConnectionError" in message
    assert_503_naming_the_setting(post())
    assert time.monotonic() - start < 6.5


def test_missing_parameter_is_503_naming_the_setting_and_the_error_code(ssm, post):
    ssm.parameters.clear()
    message = assert_503_naming_the_setting(post())
    assert "ParameterNotFound" in message
    assert len(ssm.requests) == 1              # a client error is not retried


def test_secret_is_read_once_and_signs(ssm, post):
    for _ in range(3):
        response = post()
        assert response.status_code == 200
        assert json.loads(response.body) == expected_auth()
    assert ssm.requests == [("AmazonSSM.GetParameter", PARAMETER)]


def test_secret_from_ssm_with_moto(ssm_env, post):
    from moto import mock_aws

    with mock_aws():
        aws.reset_clients()
        import boto3

        boto3.client("ssm", region_name="us-east-1").put_parameter(
            Name=PARAMETER, Value="moto-secret", Type="SecureString")
        response = post()
    assert response.status_code == 200
    assert json.loads(response.body) == expected_auth("moto-secret")


def test_reset_forgets_a_remembered_failure(ssm, post):
    ssm.parameters.clear()
    assert_503_naming_the_setting(post())
    ssm.parameters[PARAMETER] = SECRET_VALUE
    settings.reset()
    assert post().status_code == 200
