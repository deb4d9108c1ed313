"""API Gateway Lambda authorizers: the REST TOKEN authorizer and the WebSocket REQUEST authorizer.

Both verify the caller's JWT through :mod:`chalicelib.auth.identity` and answer an IAM policy with
the principal's flat claims as ``context`` (API Gateway passes only string, number and boolean
context values: AWS docs, "Output from an API Gateway Lambda authorizer").

On any failure they raise ``Exception('Unauthorized')`` — the exact text API Gateway turns
into ``401 Unauthorized`` (a Deny policy would be a 403, any other error a 500). The reason
code and message are logged (``realtime`` logger, WARNING); the token never is.

Configuration errors (``JWT_ISSUER`` unset, ``JWT_ISSUERS`` invalid...) must answer the same
clear 503 at every route, but an authorizer can only make API Gateway answer 401, 403 or 500
(AWS docs, "Output from an API Gateway Lambda authorizer"). So, fail-closed:

* ``jwt_auth`` (REST), on a :class:`~chalicelib.errors.ConfigError` only, allows the request
  with principal id :data:`CONFIG_ERROR_PRINCIPAL` and a context holding nothing but
  ``{"config_error": <message naming the variable>}`` — no ``sub``, no claims. The route's
  :func:`chalicelib.auth.identity.principal_from_request` sees the marker and raises that
  ``ConfigError`` (503 ``not_configured``), so no route can treat such a request as
  authenticated. Every route behind ``jwt_auth`` must get its caller through
  ``principal_from_request``. A request without a token never reaches the authorizer (API
  Gateway answers 401), as the Pusher routes answer 401 without a token. API Gateway caches
  the answer per token for the authorizer's TTL, so a fixed setting can take that long to show.
* ``ws_authorizer`` (WebSocket ``$connect``) answers 401 like any other failure, and logs the
  reason at ERROR naming the variable; a ``$connect`` deployed without it answers 503.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional

from chalicelib import observability
from chalicelib.auth import identity, jwks
from chalicelib.protocol import pusher
from chalicelib.errors import AppError, ConfigError, Unauthorized, log, log_error
from chalicelib.settings import jwt_settings

UNAUTHORIZED = "Unauthorized"
#: principal id of the answer ``jwt_auth`` gives when the JWT settings are broken (no caller)
CONFIG_ERROR_PRINCIPAL = "config-error"


def _unauthorized() -> Exception:
    """The exception that makes API Gateway answer 401.

    Under Chalice's local gateway (``chalice local`` and ``chalice.test``), which does not
    interpret the Lambda error text, its own 401 exception is used instead so local runs answer
    like API Gateway; ``chalice.local`` is never loaded in a deployed Lambda.
    """
    local = sys.modules.get("chalice.local")
    error_class = getattr(local, "NotAuthorizedError", None)
    if error_class is not None:
        err = error_class({"x-amzn-ErrorType": "UnauthorizedException"},
                          b'{"message":"Unauthorized"}')
        err.args = (UNAUTHORIZED,)
        return err
    return Exception(UNAUTHORIZED)


def rest_authorizer(auth_request):
    """Chalice TOKEN authorizer (``jwt_auth``): the ``Authorization`` header -> AuthResponse.

    Args:
        auth_request: ``chalice.app.AuthRequest`` (``token`` = the Authorization header value,
            ``Bearer <jwt>`` or the raw token; ``method_arn``).
    Returns:
        ``chalice.AuthResponse(routes=['*'], principal_id=user id, context=flat claims)``; when the
        JWT settings are missing or invalid, ``principal_id`` :data:`CONFIG_ERROR_PRINCIPAL`
        and context ``{"config_error": message}`` (see the module docstring: the route then
        answers 503).
    Raises:
        Exception: ``'Unauthorized'`` for any other failure (API Gateway answers 401).
    """
    from chalice import AuthResponse

    try:
        token = identity.extract_token({"authorization": auth_request.token}, None)
        principal = identity.authenticate(token)
    except ConfigError as err:
        log_error(err, "jwt_auth")
        observability.count("AuthorizerRefused", dimension=err.code)
        return AuthResponse(routes=["*"], principal_id=CONFIG_ERROR_PRINCIPAL,
                            context={identity.CONFIG_ERROR_CONTEXT_KEY: err.public_message})
    except AppError as err:
        log_error(err, "jwt_auth")
        observability.count("AuthorizerRefused", dimension=err.code)
        raise _unauthorized() from None
    except Exception as exc:  # never a 500 from an authorizer; the message may hold input
        log.error("jwt_auth: unexpected %s", type(exc).__name__)
        observability.count("AuthorizerRefused", dimension="unexpected")
        raise _unauthorized() from None
    return AuthResponse(routes=["*"], principal_id=principal.user_id,
                        context=principal.flat_context())


def _first_values(multi: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    if not multi:
        return None
    return {k: v[0] for k, v in multi.items() if isinstance(v, list) and v}


def parse_method_arn(method_arn: Any) -> Dict[str, str]:
    """Split ``arn:{partition}:execute-api:{region}:{account}:{api_id}/{stage}/{route}``.

    Returns:
        dict with ``partition``, ``region``, ``account``, ``api_id``, ``stage``, ``route``.
    Raises:
        Unauthorized: not an execute-api method ARN.
    """
    if isinstance(method_arn, str):
        parts = method_arn.split(":", 5)
        if len(parts) == 6 and parts[0] == "arn" and parts[2] == "execute-api":
            path = parts[5].split("/", 2)
            if len(path) == 3 and all(path[:2]) and all(parts[3:5]):
                return {"partition": parts[1], "region": parts[3], "account": parts[4],
                        "api_id": path[0], "stage": path[1], "route": path[2]}
    raise Unauthorized("methodArn is not an execute-api method ARN")


def policy_resources(method_arn: str, authorized_apis) -> List[str]:
    """Resources the WebSocket policy allows.

    Args:
        method_arn: the event's method ARN.
        authorized_apis: ``AUTHORIZED_APIS`` ids; empty means just ``method_arn``.
    Returns:
        ``[method_arn]``, or one ``arn:…:{api_id}/*`` per authorized API.
    Raises:
        Unauthorized: the ARN is malformed, or its API is not among ``authorized_apis``.
    """
    arn = parse_method_arn(method_arn)
    if not authorized_apis:
        return [method_arn]
    if arn["api_id"] not in authorized_apis:
        raise Unauthorized(f"API {arn['api_id']!r} is not in AUTHORIZED_APIS")
    prefix = f"arn:{arn['partition']}:execute-api:{arn['region']}:{arn['account']}:"
    return [f"{prefix}{api}/*" for api in authorized_apis]


def websocket_authorizer(event: Mapping[str, Any]) -> Dict[str, Any]:
    """REQUEST authorizer for the WebSocket ``$connect`` route.

    Args:
        event: API Gateway's REQUEST authorizer event: ``methodArn``, ``headers`` and
            ``queryStringParameters`` (either may be null; ``multiValueHeaders`` /
            ``multiValueQueryStringParameters`` are used when the single-value maps are absent).
    Returns:
        ``{"principalId": user id, "policyDocument": {Allow execute-api:Invoke on the method ARN,
        or on each API of AUTHORIZED_APIS}, "context": flat claims}``; for a Pusher-dialect
        connect (``protocol`` in the query string, ``PUSHER_DIALECT`` on) the same policy with
        principal ``pusher-anonymous`` and context ``{"dialect": "pusher"}``
        (:func:`chalicelib.dialects.pusher.socket.authorizer_answer`).
    Raises:
        Exception: ``'Unauthorized'`` for any failure (API Gateway answers 401).
    """
    try:
        headers = event.get("headers") or _first_values(event.get("multiValueHeaders"))
        query = (event.get("queryStringParameters")
                 or _first_values(event.get("multiValueQueryStringParameters")))
        # anonymous: rights come from signed subscriptions. The pure check first: the room
        # (and the registry it imports) loads only for a Pusher connect
        if pusher.requests_pusher(query):
            from chalicelib.dialects.pusher import socket

            if socket.requested(event):
                return socket.authorizer_answer(
                    event,
                    policy_resources(event.get("methodArn"), jwt_settings().authorized_apis))
        principal = identity.authenticate_request(headers, query)
        resources = policy_resources(event.get("methodArn"), jwt_settings().authorized_apis)
    except AppError as err:
        log_error(err, "ws_authorizer")
        observability.count("AuthorizerRefused", dimension=err.code)
        raise Exception(UNAUTHORIZED) from None
    except Exception as exc:  # never a 500 from an authorizer; the message may hold input
        log.error("ws_authorizer: unexpected %s", type(exc).__name__)
        observability.count("AuthorizerRefused", dimension="unexpected")
        raise Exception(UNAUTHORIZED) from None
    return {
        "principalId": principal.user_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow",
                           "Resource": resources}],
        },
        "context": principal.flat_context(),
    }


def _prefetch_at_cold_start() -> None:
    """``JWKS_PREFETCH=true``: fetch the key sets while the Lambda initialises."""
    try:
        settings = jwt_settings()
    except AppError:
        return  # reported with its message by the first request
    if settings.prefetch:
        for issuer, failure in jwks.prefetch(settings).items():
            if failure:
                log.warning("JWKS prefetch for %s failed: %s", issuer, failure)


_prefetch_at_cold_start()
