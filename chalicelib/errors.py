"""One error hierarchy for the whole service, and the one place that maps it to the wire.

Every failure a caller can cause is an :class:`AppError` subclass carrying

* ``status``: the HTTP status a REST route answers (400, 401, 403, 404, 413, 503);
* ``code``: a short machine-readable string (``"bad_request"``, ``"token_expired"``, ...);
* ``public_message``: what the caller is told;
* ``str(err)``: the detailed reason, for the log only.

Authentication failures (:class:`Unauthorized` and every :class:`TokenError`) always show
the caller the same ``401 Unauthorized``; their specific reason is for the log. Tokens are
never put into a message: raise with a description of the fault, not the value.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, Optional

from chalicelib.logtext import for_log

log = logging.getLogger("realtime")

#: longest text an error repeats to its caller, characters (a message, a channel name): what is
#: longer is cut (:func:`clip`), so every error frame fits API Gateway's 128 KB WebSocket
#: message quota whatever the input was — an error frame over it would be dropped: silence
MAX_ECHO_CHARS = 1024
#: what marks a cut text
ELLIPSIS = "…"


def clip(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters (code points), the last one :data:`ELLIPSIS`
    when it was cut.

    Args:
        text: any string.
        limit: characters, at least 1.
    Returns:
        ``text`` unchanged when it fits, else its first ``limit - 1`` characters + ``"…"``.
    """
    return text if len(text) <= limit else text[:limit - 1] + ELLIPSIS


class AppError(Exception):
    """Base of every error the service answers deliberately.

    Args:
        message: the detailed reason for the log (never a token or a secret).
        public_message: overrides what the caller is told; defaults to the class's
            ``public_message`` (or, for classes that expose their reason, ``message``).
    """

    status = 500
    code = "internal_error"
    public_message = "Internal error"
    #: when True, the detailed message is safe and useful to show the caller
    expose_message = False
    #: the code the caller sees, when it must differ from ``code`` (the log's reason)
    public_code: Optional[str] = None

    def __init__(self, message: str = "", *, public_message: Optional[str] = None):
        super().__init__(message or self.public_message)
        if public_message is not None:
            self.public_message = public_message
        elif self.expose_message and message:
            self.public_message = message

    def body(self) -> Dict[str, Any]:
        """The JSON body a REST route answers: ``{"error": code, "message": text}``; the
        message is cut to :data:`MAX_ECHO_CHARS` (:func:`clip`)."""
        return {"error": self.public_code or self.code, "message": clip(self.public_message)}

    def frame(self) -> Dict[str, Any]:
        """The WebSocket error frame: ``{"type": "error", "code", "message"}``; the message is
        cut to :data:`MAX_ECHO_CHARS` (:func:`clip`), so the frame always fits a WebSocket
        message (with the ``id`` and ``action`` the native dialect adds, a few hundred bytes
        more)."""
        return {"type": "error", "code": self.public_code or self.code,
                "message": clip(self.public_message)}


class BadRequest(AppError):
    """The request is malformed (400); the message says what is wrong with it."""

    status = 400
    code = "bad_request"
    public_message = "Bad request"
    expose_message = True


class Unauthorized(AppError):
    """No valid credentials (401). The caller only ever sees ``Unauthorized``."""

    status = 401
    code = "unauthorized"
    public_code = "unauthorized"
    public_message = "Unauthorized"


class Forbidden(AppError):
    """Authenticated, but the rules say no (403)."""

    status = 403
    code = "forbidden"
    public_message = "Forbidden"
    expose_message = True


class NotFound(AppError):
    """The addressed thing does not exist (404)."""

    status = 404
    code = "not_found"
    public_message = "Not found"
    expose_message = True


class PayloadTooLarge(AppError):
    """A body or frame is over its limit (413); the message names the limit in bytes."""

    status = 413
    code = "payload_too_large"
    public_message = "Payload too large"
    expose_message = True


class ConfigError(AppError):
    """A setting is missing or invalid (503): the message names the environment variable.

    Setting names are not secrets, so the caller is told which one is wrong; values never
    appear in the message.
    """

    status = 503
    code = "not_configured"
    public_message = "Service not configured"
    expose_message = True


# --- token verification failures: each its own reason for the log, all a 401 for the caller

class TokenError(Unauthorized):
    """Base of every token verification failure (401). ``code`` names the reason in logs."""

    code = "invalid_token"


class NoToken(TokenError):
    """No token in the Authorization header nor in the query string."""

    code = "no_token"


class MalformedToken(TokenError):
    """Not a compact JWS: wrong segment count, bad base64url, non-object JSON, duplicate keys."""

    code = "malformed_token"


class TokenTooLarge(TokenError):
    """The token is longer than the 8 KiB limit."""

    code = "token_too_large"


class UnsupportedHeader(TokenError):
    """The header asks for something we never do: ``crit``, ``jku``, ``x5u``, ``jwk``..."""

    code = "unsupported_header"


class AlgorithmNotAllowed(TokenError):
    """``alg`` is absent, ``none``, symmetric, or outside ``JWT_ALGORITHMS``."""

    code = "algorithm_not_allowed"


class MissingKeyId(TokenError):
    """The header has no ``kid``, or it is not a string."""

    code = "missing_kid"


class UnknownKeyId(TokenError):
    """No key with this ``kid`` in the issuer's key set, even after a refetch."""

    code = "unknown_kid"


class KeyRejected(TokenError):
    """The matching JWK is unusable: wrong ``kty``, ``use`` not ``sig``, alg mismatch, weak RSA."""

    code = "key_rejected"


class KeySetUnavailable(TokenError):
    """The issuer's key set could not be fetched or parsed, and nothing usable is cached."""

    code = "jwks_unavailable"


class InvalidSignature(TokenError):
    """The signature does not verify with the issuer's key."""

    code = "invalid_signature"


class TokenExpired(TokenError):
    """``exp`` is in the past beyond the leeway."""

    code = "token_expired"


class TokenNotYetValid(TokenError):
    """``nbf`` or ``iat`` is in the future beyond the leeway."""

    code = "token_not_yet_valid"


class InvalidIssuer(TokenError):
    """``iss`` is missing or not exactly a configured issuer."""

    code = "invalid_issuer"


class InvalidAudience(TokenError):
    """Neither ``aud`` (nor Cognito's ``client_id``) contains an authorized audience."""

    code = "invalid_audience"


class InvalidClaim(TokenError):
    """A required claim is missing or has the wrong type (``exp``, ``sub``, ...)."""

    code = "invalid_claim"


def json_response(err: AppError, headers: Optional[Dict[str, str]] = None):
    """Map an :class:`AppError` to a Chalice ``Response`` with a JSON error body.

    Args:
        err: the error.
        headers: extra response headers (CORS, for instance).
    Returns:
        ``chalice.Response`` with ``err.status`` and ``err.body()``.
    """
    from chalice import Response

    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    return Response(body=json.dumps(err.body()), status_code=err.status, headers=hdrs)


def log_error(err: AppError, where: str) -> None:
    """Log an error's code and detailed reason (never a token) at a level fit for its status.
    The reason may quote input, so it is escaped (:func:`chalicelib.logtext.for_log`)."""
    level = logging.WARNING if err.status < 500 else logging.ERROR
    log.log(level, "%s: %s (%s)", where, err.code, for_log(err, limit=1000))
