"""What callers see of errors: statuses, JSON bodies, socket frames — never an auth reason."""
import json

import pytest

from chalicelib import errors

TOKEN_ERRORS = [cls for cls in vars(errors).values()
                if isinstance(cls, type) and issubclass(cls, errors.Unauthorized)]


def test_every_token_failure_class_is_covered():
    # the hierarchy has one class per reason; make sure the list below is not empty by accident
    assert errors.TokenExpired in TOKEN_ERRORS and errors.InvalidSignature in TOKEN_ERRORS
    assert len(TOKEN_ERRORS) >= 15


@pytest.mark.parametrize("cls", TOKEN_ERRORS, ids=lambda cls: cls.__name__)
def test_authentication_failures_never_tell_the_caller_why(cls):
    err = cls("kid 'k1' not in key set of https://issuer.example")
    assert err.status == 401
    assert err.body() == {"error": "unauthorized", "message": "Unauthorized"}
    assert err.frame() == {"type": "error", "code": "unauthorized", "message": "Unauthorized"}
    # the specific reason stays available for the log
    assert "not in key set" in str(err)


@pytest.mark.parametrize("cls, status", [
    (errors.BadRequest, 400), (errors.Forbidden, 403), (errors.NotFound, 404),
    (errors.PayloadTooLarge, 413), (errors.ConfigError, 503),
])
def test_client_errors_explain_themselves(cls, status):
    err = cls("channel_name is longer than 164 characters")
    response = errors.json_response(err, {"Access-Control-Allow-Origin": "*"})
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert json.loads(response.body) == {
        "error": cls.code, "message": "channel_name is longer than 164 characters"}


def test_an_internal_error_hides_its_detail():
    err = errors.AppError("database password rejected")
    assert err.status == 500
    assert err.body() == {"error": "internal_error", "message": "Internal error"}


def test_expired_token_on_a_route_is_a_plain_401(client, dev_issuer):
    token = dev_issuer.mint("alice", ttl=-3600)
    response = client.http.post(
        "/pusher/auth", body="socket_id=1.2&channel_name=private-user-alice",
        headers={"Authorization": f"Bearer {token}",
                 "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 401
    assert json.loads(response.body) == {"error": "unauthorized", "message": "Unauthorized"}
