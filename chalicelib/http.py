"""Small REST handlers that belong to no other room."""
from __future__ import annotations

from chalicelib.errors import AppError, json_response, log_error
from chalicelib.auth.identity import principal_from_request


def me(request):
    """``GET /me``: the caller's principal as ``{"user_id", "sub", "iss", "scopes", "claims"}``
    (``user_id``: the caller's name in channels, presence, Pusher sign-in and notifications).

    Behind ``jwt_auth``; answers 401 JSON if the authorizer context is unusable, and 503
    ``not_configured`` naming the variable when the JWT settings are broken (the authorizer's
    ``config_error`` marker, see :mod:`chalicelib.auth.authorizer`).
    """
    try:
        return principal_from_request(request).to_json()
    except AppError as err:
        log_error(err, "GET /me")
        return json_response(err)
