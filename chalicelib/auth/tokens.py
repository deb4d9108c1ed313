"""Compact JWS verification: parsing, header rules, signature, claim checks. No I/O here:
keys come from :mod:`chalicelib.auth.jwks` (which fetches, caches and parses key sets).

The rules, in the order they are applied (each failure is its own
:class:`chalicelib.errors.TokenError` subclass, with a message for the log that never contains
the token):

1. at most :data:`MAX_TOKEN_CHARS` characters (8 KiB) -> ``TokenTooLarge``;
2. exactly three ``.``-separated segments, each strict base64url without padding and with
   canonical trailing bits (RFC 7515 §2, RFC 4648 §5) -> ``MalformedToken``;
3. header and payload are UTF-8 JSON *objects* read by :func:`chalicelib.jsonutil.loads`:
   no duplicate member names (RFC 7515 §5.2 step 4 lets us refuse them; RFC 8725 §3.5), no
   ``NaN``/``Infinity`` nor numbers overflowing to infinity, no lone surrogates (so every claim
   can be encoded again, into a presence member for instance), at most 64 levels of nesting;
4. header: ``alg`` in ``JWT_ALGORITHMS`` (asymmetric only, so never ``none`` nor ``HS*``;
   RFC 8725 §3.1) -> ``AlgorithmNotAllowed``; no ``crit`` (RFC 7515 §4.1.11: we understand no
   extension), and no ``jku``, ``jwk``, ``x5u``, ``x5c`` (keys come only from the configured key
   set; RFC 8725 §3.10) -> ``UnsupportedHeader``; ``kid`` a non-empty string -> ``MissingKeyId``;
5. the payload's unverified ``iss`` picks a configured issuer exactly (no prefix, suffix or
   normalisation), before any key is fetched -> ``InvalidIssuer``;
6. the key with that ``kid`` in the issuer's key set (``UnknownKeyId``, ``KeyRejected``,
   ``KeySetUnavailable``: see :mod:`chalicelib.auth.jwks`) verifies the signature over
   ``header.payload`` -> ``InvalidSignature``;
7. claims (RFC 7519 §4.1), times with ``JWT_LEEWAY_SECONDS``: ``exp`` required and numeric
   (``now >= exp + leeway`` -> ``TokenExpired``; skipped only when
   ``JWT_VERIFY_EXPIRATION=false`` on the dev stage), ``nbf`` and ``iat`` numeric when present and
   not after ``now + leeway`` -> ``TokenNotYetValid``; ``aud`` (string or list of strings) holds
   a configured audience, or, when there is no ``aud`` (Cognito access tokens), ``client_id`` is
   one -> ``InvalidAudience``; ``sub`` a non-empty string -> ``InvalidClaim``.
"""
from __future__ import annotations

import binascii
import math
import re
import time
from typing import Any, Dict, Optional

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature

from chalicelib import jsonutil
from chalicelib.auth import jwks
from chalicelib.errors import (
    AlgorithmNotAllowed, InvalidAudience, InvalidClaim, InvalidIssuer, InvalidSignature,
    MalformedToken, MissingKeyId, TokenExpired, TokenNotYetValid, TokenTooLarge,
    UnsupportedHeader,
)
from chalicelib.settings import IssuerConfig, JwtSettings

#: longest accepted token, in characters (= bytes: a valid token is ASCII)
MAX_TOKEN_CHARS = 8192

#: header parameters that would bring keys from elsewhere, or extensions we do not implement
REFUSED_HEADER_PARAMETERS = ("crit", "jku", "jwk", "x5u", "x5c")

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*").fullmatch
_PADDING = ("", None, "==", "=")
# last character of a segment whose length is 2 (resp. 3) mod 4 must leave its unused low
# bits zero (4 resp. 2 bits), else several strings decode to the same bytes
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_CANONICAL_LAST = (None, None, frozenset(_ALPHABET[0::16]), frozenset(_ALPHABET[0::4]))
_a2b = binascii.a2b_base64

#: wall clock for claim times (seconds since the epoch); tests may replace it
clock = time.time


def _describe_bad_segment(segment: str, what: str) -> str:
    if segment != segment.strip() or any(c.isspace() for c in segment):
        hint = "contains whitespace (a 'Bearer ' prefix left inside, or trailing space?)"
    elif "=" in segment:
        hint = "has base64 padding ('=')"
    elif "+" in segment or "/" in segment:
        hint = "uses the standard base64 alphabet, not base64url"
    else:
        hint = "has characters outside the base64url alphabet"
    return f"token {what} segment {hint}"


def _b64decode(segment: str, what: str) -> bytes:
    """Strict base64url (RFC 4648 §5, unpadded as RFC 7515 §2 requires) to bytes."""
    # '+', '/' and '=' are refused here; strict_mode refuses every other stray character
    if "+" in segment or "/" in segment or "=" in segment:
        raise MalformedToken(_describe_bad_segment(segment, what))
    rem = len(segment) & 3
    if rem:
        if rem == 1 or segment[-1] not in _CANONICAL_LAST[rem]:
            if not _BASE64URL(segment):
                raise MalformedToken(_describe_bad_segment(segment, what))
            if rem == 1:
                raise MalformedToken(f"token {what} segment has an impossible base64url length")
            raise MalformedToken(f"token {what} segment is not canonical base64url")
        segment += _PADDING[rem]
    try:
        return _a2b(segment.replace("-", "+").replace("_", "/"), strict_mode=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise MalformedToken(_describe_bad_segment(segment.rstrip("="), what)) from None


def _json_object(raw: bytes, what: str) -> Dict[str, Any]:
    try:
        value = jsonutil.loads(raw)
    except jsonutil.JSONRejected as err:
        raise MalformedToken(f"token {what} is not UTF-8 JSON: {err.reason}") from None
    if value.__class__ is not dict:
        raise MalformedToken(f"token {what} is JSON but not an object")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _number(claims: Dict[str, Any], name: str) -> Optional[float]:
    """The claim as a finite number, None when absent; InvalidClaim for any other type."""
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    cls = value.__class__
    if cls is int or (cls is float and math.isfinite(value)):
        return value
    raise InvalidClaim(f"claim '{name}' must be a NumericDate (a number of seconds)")


def check_claims(claims: Dict[str, Any], config: IssuerConfig, settings: JwtSettings,
                 now: float) -> None:
    """Check the registered claims of a payload whose signature is already verified.

    Args:
        claims: the payload.
        config: the issuer picked by ``claims['iss']``.
        settings: leeway (seconds) and whether ``exp`` is checked.
        now: current time, seconds since the epoch.
    Raises:
        InvalidClaim, TokenExpired, TokenNotYetValid, InvalidAudience (see the module doc).
    """
    leeway = settings.leeway_seconds
    exp = _number(claims, "exp")
    if settings.verify_expiration:
        if exp is None:
            raise InvalidClaim("claim 'exp' is required")
        if now >= exp + leeway:
            raise TokenExpired(f"token expired {int(now - exp)} s ago (leeway {leeway} s)")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise TokenNotYetValid(f"'nbf' is {int(nbf - now)} s in the future (leeway {leeway} s)")
    iat = _number(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise TokenNotYetValid(f"'iat' is {int(iat - now)} s in the future (leeway {leeway} s)")

    audiences = config.audiences
    aud = claims.get("aud")
    if aud.__class__ is str:
        if aud not in audiences:
            raise InvalidAudience(f"aud {_short(aud)} is not an authorized audience")
    elif aud.__class__ is list:
        if not aud or not all(a.__class__ is str for a in aud):
            raise InvalidAudience("aud must be a string or a non-empty list of strings")
        if not any(a in audiences for a in aud):
            raise InvalidAudience(f"no aud in {_short(aud)} is an authorized audience")
    elif "aud" in claims:
        raise InvalidAudience("aud must be a string or a non-empty list of strings")
    else:
        # Cognito access tokens carry the app client in client_id and have no aud
        client_id = claims.get("client_id")
        if client_id.__class__ is not str or client_id not in audiences:
            raise InvalidAudience("token has no aud, and no authorized client_id")

    sub = claims.get("sub")
    if sub.__class__ is not str or not sub:
        raise InvalidClaim("claim 'sub' must be a non-empty string")


def verify(token: str, settings: JwtSettings, now: Optional[float] = None) -> Dict[str, Any]:
    """Verify a compact JWS against the configured issuers; return its claims.

    Args:
        token: compact JWS text, exactly as received (no ``Bearer`` prefix).
        settings: :func:`chalicelib.settings.jwt_settings`.
        now: current time in seconds since the epoch (default: :data:`clock`).
    Returns:
        the payload (a dict; ``iss`` and ``sub`` are non-empty strings).
    Raises:
        chalicelib.errors.TokenError: the specific reason (see the module doc); the message
        never contains the token.
    """
    if token.__class__ is not str:
        raise MalformedToken("token is not a string")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenTooLarge(f"token is {len(token)} characters, over the {MAX_TOKEN_CHARS} "
                            "limit")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken(f"a compact JWS has 3 segments, this token has {len(parts)}")
    h64, p64, s64 = parts
    header = _json_object(_b64decode(h64, "header"), "header")

    alg = header.get("alg")
    if alg.__class__ is not str or alg not in settings.algorithms:
        raise AlgorithmNotAllowed(f"alg {_short(alg)} is not in JWT_ALGORITHMS")
    for name in REFUSED_HEADER_PARAMETERS:
        if name in header:
            raise UnsupportedHeader(f"header parameter '{name}' is refused")
    kid = header.get("kid")
    if kid.__class__ is not str or not kid:
        raise MissingKeyId("header has no kid, or kid is not a non-empty string")

    claims = _json_object(_b64decode(p64, "payload"), "payload")
    iss = claims.get("iss")
    config = settings.issuers.get(iss) if iss.__class__ is str else None
    if config is None:
        raise InvalidIssuer(f"iss {_short(iss)} is not a configured issuer")

    signature = _b64decode(s64, "signature")
    if not signature:
        raise MalformedToken("token signature segment is empty")
    verifier = jwks.verifier(config, kid, alg)
    try:
        verifier(token[:len(h64) + len(p64) + 1].encode("ascii"), signature)
    except _CryptoInvalidSignature:
        raise InvalidSignature(f"signature does not verify with key {_short(kid)} of "
                               f"{config.issuer}") from None

    check_claims(claims, config, settings, clock() if now is None else now)
    return claims
