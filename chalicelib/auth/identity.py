"""Who is calling: token extraction for every door, then verification into a Principal.

One extraction rule for REST routes, the Pusher endpoints, the WebSocket ``$connect`` handler
and the REQUEST authorizer: the ``Authorization`` header (``Bearer <jwt>`` or the raw token,
header name in any case), else the query string parameters ``token``, ``Auth`` or
``authorization`` (browsers cannot set headers on a WebSocket handshake).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from chalicelib.auth import tokens
from chalicelib.errors import ConfigError, NoToken
from chalicelib.auth.principal import Principal
from chalicelib.settings import jwt_settings

#: query string parameter names that may carry the token, in order of preference
QUERY_TOKEN_PARAMETERS = ("token", "Auth", "authorization")
#: the authorizer context key ``jwt_auth`` sets, alone, when the JWT settings are broken
CONFIG_ERROR_CONTEXT_KEY = "config_error"


def header(headers: Any, name: str) -> Optional[str]:
    """A request header by name, in any case (HTTP header names are case-insensitive,
    RFC 9110 §5.1).

    Args:
        headers: the event's ``headers`` map, or None/anything else (API Gateway sends ``null``).
        name: the header name.
    Returns:
        the value when it is a string, else None.
    """
    if not isinstance(headers, Mapping):
        return None
    wanted = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted and isinstance(value, str):
            return value
    return None


def extract_token(headers: Optional[Mapping[str, Any]],
                  query: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Find the caller's token.

    Args:
        headers: request headers (any case), or None (API Gateway sends ``null`` when absent).
        query: query string parameters, or None.
    Returns:
        the token text as sent (a ``Bearer`` prefix removed, case-insensitive), or None when
        no source carries a non-empty value (an empty header, or a bare ``Bearer ``, falls
        through to the query string). The token is not validated here: "Bearer " left
        inside it, trailing whitespace and the like fail verification later.
    """
    value = header(headers, "authorization")
    if value:
        if value[:7].lower() == "bearer ":
            value = value[7:]
        if value:
            return value
    if query:
        for name in QUERY_TOKEN_PARAMETERS:
            candidate = query.get(name)
            if isinstance(candidate, str) and candidate:
                return candidate
    return None


def authenticate(token: Optional[str]) -> Principal:
    """Verify a token against the configured issuers and return its principal.

    Args:
        token: compact JWS text, or None.
    Returns:
        the :class:`Principal`, its user id made with the issuer's ``user_id_prefix``.
    Raises:
        chalicelib.errors.TokenError: (a 401) with the specific reason; ``NoToken`` for None;
            ``UserIdUnrepresentable`` for a ``sub`` that cannot become a user id.
        chalicelib.errors.ConfigError: the JWT settings are missing or invalid.
    """
    if not token:
        raise NoToken("no token in the Authorization header or the query string")
    settings = jwt_settings()
    claims = tokens.verify(token, settings)
    return Principal.from_claims(claims, settings.issuers[claims["iss"]].user_id_prefix)


def authenticate_request(headers: Optional[Mapping[str, Any]],
                         query: Optional[Mapping[str, Any]]) -> Principal:
    """:func:`extract_token` then :func:`authenticate`; same errors."""
    return authenticate(extract_token(headers, query))


def principal_from_request(request) -> Principal:
    """The principal of a Chalice REST request.

    Behind ``jwt_auth`` the authorizer context (``request.context['authorizer']``) is used;
    otherwise the request's own token is verified.

    Raises:
        chalicelib.errors.ConfigError: (503) the context carries ``jwt_auth``'s
            :data:`CONFIG_ERROR_CONTEXT_KEY` marker (the JWT settings are broken; see
            :mod:`chalicelib.doors.authorizer`), whatever else it holds; or, without ``jwt_auth``,
            the settings are broken.
        chalicelib.errors.Unauthorized: no usable context nor valid token.
    """
    context = (request.context or {}).get("authorizer") or {}
    if CONFIG_ERROR_CONTEXT_KEY in context:
        reason = context[CONFIG_ERROR_CONTEXT_KEY]
        raise ConfigError(reason if isinstance(reason, str) and reason
                          else "JWT settings are invalid")
    if context.get("sub"):
        return Principal.from_context(context)
    return authenticate_request(request.headers, request.query_params)
