"""The verified caller, and its flat form for API Gateway authorizer context.

API Gateway only passes string, number and boolean values in an authorizer's ``context``
(AWS docs, "Output from an API Gateway Lambda authorizer"), so :meth:`Principal.flat_context`
flattens; :meth:`Principal.from_context` rebuilds the principal on the other side (REST routes
behind ``jwt_auth``, ``ws_connect`` behind ``ws_authorizer``).

**User ids.** Every principal has a *user id*: the name of the user in channel rules, the
connection registry, presence members, Pusher user sign-in, notifications and ``GET /me``. It is
derived from (issuer, ``sub``) by :func:`make_user_id`, a pure function:

* ``escape(sub)``: every character outside ``A-Z a-z 0-9 _ - @ , . ;`` (Pusher's channel-name
  charset minus ``=``) becomes ``=XX`` per UTF-8 byte, in uppercase hex; ``=`` itself becomes
  ``=3D``. So Auth0's ``auth0|abc`` becomes ``auth0=7Cabc``; today's plain subs are unchanged.
* with a ``user_id_prefix`` for the issuer (``JWT_ISSUERS``; required and distinct when there
  are several issuers): ``<prefix>.<escape(sub)>``, the prefix made of ``A-Z a-z 0-9 _ -``.

Why this is injective over (issuer, sub): ``escape`` is injective (``=`` only ever starts a
three-character escape, so the text decodes back to exactly one byte string, and UTF-8 to
exactly one string). A prefix never contains ``.``, so in ``<prefix>.<rest>`` the first ``.``
ends the prefix: the prefix, hence the issuer (prefixes are distinct), and ``rest``, hence the
sub, are read back unambiguously (:func:`split_user_id`). With a single issuer there is only one
mapping, so ``escape`` alone suffices.

A user id is at most :data:`MAX_USER_ID_LENGTH` (141) characters: the length that lets
``private-encrypted-user-{user_id}`` (and so ``private-user-{user_id}``) fit Pusher's
164-character channel names. That is also under Pusher's 200-character user id limit and, being
ASCII, far under DynamoDB's key limits (2048 bytes for a partition key, 1024 for a sort key),
so the registry never sees a key it would refuse. A token whose user id would be longer, or
whose ``sub`` is not valid Unicode text, is refused with :class:`UserIdUnrepresentable` (401).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from chalicelib import jsonutil
from chalicelib.errors import BadRequest, TokenError, Unauthorized
from chalicelib.settings import USER_ID_PREFIX_RE

#: claims copied from a verified token into the principal (when present)
SELECTED_CLAIMS = ("name", "email", "email_verified", "preferred_username", "groups",
                   "cognito:groups", "cognito:username")

FlatValue = Union[str, int, float, bool]

#: ``json.dumps(..., separators=(",", ":"), sort_keys=True)`` without building an encoder per call
_compact_json = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


#: characters a user id keeps as they are: Pusher's channel-name charset minus ``=`` (Pusher docs,
#: "Channel naming conventions")
USER_ID_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-@,.;")
#: between a user id prefix and the escaped sub; never part of a prefix
USER_ID_SEPARATOR = "."
#: longest user id, characters: 164 (Pusher's channel-name limit) minus
#: ``len("private-encrypted-user-")``
MAX_USER_ID_LENGTH = 164 - len("private-encrypted-user-")
#: a well-formed user id: safe characters and ``=XX`` escapes, 1..MAX_USER_ID_LENGTH characters
USER_ID_RE = re.compile(r"(?:[A-Za-z0-9_\-@,.;]|=[0-9A-F]{2})+", re.ASCII)


class UserIdUnrepresentable(TokenError):
    """A verified token whose ``sub`` cannot become a user id (401): longer than
    :data:`MAX_USER_ID_LENGTH` characters once escaped and prefixed, or not valid Unicode
    text (a lone surrogate). The caller sees ``401 Unauthorized``; this reason is logged."""

    code = "user_id_unrepresentable"


def escape_sub(sub: str) -> str:
    """Escape a ``sub`` into the user id charset (see the module docstring).

    Args:
        sub: any string.
    Returns:
        ``sub`` with every character outside :data:`USER_ID_SAFE` replaced by ``=XX`` per UTF-8
        byte (uppercase hex): ``"auth0|abc"`` -> ``"auth0=7Cabc"``, ``"a=b"`` -> ``"a=3Db"``.
    Raises:
        UnicodeEncodeError: ``sub`` holds a lone surrogate (not UTF-8 encodable).
    """
    if all(char in USER_ID_SAFE for char in sub):
        return sub
    return "".join(char if char in USER_ID_SAFE
                   else "".join(f"={byte:02X}" for byte in char.encode("utf-8"))
                   for char in sub)


def unescape_sub(escaped: str) -> str:
    """The inverse of :func:`escape_sub`.

    Raises:
        ValueError: not a well-formed escaped text (a stray ``=``, lowercase hex, invalid UTF-8).
    """
    if not USER_ID_RE.fullmatch(escaped):
        raise ValueError("not an escaped sub")
    out = bytearray()
    index = 0
    while index < len(escaped):
        if escaped[index] == "=":
            out.append(int(escaped[index + 1:index + 3], 16))
            index += 3
        else:
            out.extend(escaped[index].encode("ascii"))
            index += 1
    return out.decode("utf-8")


def make_user_id(sub: str, prefix: Optional[str] = None) -> str:
    """The user id of ``sub`` at an issuer whose ``user_id_prefix`` is ``prefix``.

    Args:
        sub: the token's ``sub`` (non-empty).
        prefix: the issuer's ``user_id_prefix`` (:data:`USER_ID_PREFIX_RE`), or None.
    Returns:
        ``escape_sub(sub)``, or ``prefix + "." + escape_sub(sub)``.
    Raises:
        UserIdUnrepresentable: the result would be longer than :data:`MAX_USER_ID_LENGTH`, or
            ``sub`` is empty or not valid Unicode text.
        ValueError: ``prefix`` does not match :data:`USER_ID_PREFIX_RE` (a settings bug; the
            settings loader refuses such prefixes).
    """
    if prefix is not None and not USER_ID_PREFIX_RE.fullmatch(prefix):
        raise ValueError("user_id_prefix must be 1-32 of A-Z a-z 0-9 _ -")
    if not isinstance(sub, str) or not sub:
        raise UserIdUnrepresentable("sub is empty")
    # cheap bound first: a character escapes to at most 12 characters, never to fewer than 1
    if len(sub) > MAX_USER_ID_LENGTH:
        raise UserIdUnrepresentable(
            f"sub is {len(sub)} characters; a user id is at most {MAX_USER_ID_LENGTH}")
    try:
        escaped = escape_sub(sub)
    except UnicodeEncodeError:
        raise UserIdUnrepresentable("sub is not valid Unicode text") from None
    user_id = escaped if prefix is None else prefix + USER_ID_SEPARATOR + escaped
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise UserIdUnrepresentable(
            f"sub makes a user id of {len(user_id)} characters; the limit is "
            f"{MAX_USER_ID_LENGTH}")
    return user_id


def split_user_id(user_id: str, prefixed: bool) -> Tuple[Optional[str], str]:
    """The inverse of :func:`make_user_id`: ``(prefix or None, sub)``.

    Args:
        user_id: a user id.
        prefixed: whether the deployment's issuers have prefixes.
    Raises:
        ValueError: not a user id this mapping can produce.
    """
    if not prefixed:
        return None, unescape_sub(user_id)
    prefix, separator, rest = user_id.partition(USER_ID_SEPARATOR)
    if not separator or not USER_ID_PREFIX_RE.fullmatch(prefix):
        raise ValueError("not a prefixed user id")
    return prefix, unescape_sub(rest)


def validate_user_id(value: Any, field_name: str = "user_id") -> str:
    """Check a user id given by a caller (``POST /notifications``, the push queue).

    Args:
        value: the candidate.
        field_name: the field named in the error message.
    Returns:
        the value, unchanged.
    Raises:
        BadRequest: not a string of 1..:data:`MAX_USER_ID_LENGTH` characters of
            ``A-Z a-z 0-9 _ - @ , . ;`` and ``=XX`` escapes (the value is not echoed).
    """
    if not isinstance(value, str) or not value:
        raise BadRequest(f'"{field_name}" must be a non-empty string')
    if len(value) > MAX_USER_ID_LENGTH:
        raise BadRequest(f'"{field_name}" must be at most {MAX_USER_ID_LENGTH} characters')
    if not USER_ID_RE.fullmatch(value):
        raise BadRequest(f'"{field_name}" must be a user id: A-Z a-z 0-9 _ - @ , . ; and =XX '
                         "escapes (see GET /me)")
    return value


def scopes_from_claims(claims: Mapping[str, Any]) -> Tuple[str, ...]:
    """Scopes from ``scope`` (RFC 8693 §4.2: space-separated string) or ``scp`` (Okta, Azure:
    a list or a space-separated string). Returns a tuple of non-empty strings."""
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return tuple(raw.split())
    if isinstance(raw, list):
        return tuple(s for s in raw if isinstance(s, str) and s)
    return ()


@dataclass(frozen=True)
class Principal:
    """A verified caller.

    Attributes:
        sub: the token's subject (non-empty string).
        issuer: the token's exact ``iss``.
        scopes: granted scopes, in token order.
        claims: selected claims (:data:`SELECTED_CLAIMS` present in the token), JSON values.
        user_id: the user's name everywhere in the service (see the module docstring). Built
            by :meth:`from_claims` with the issuer's prefix and carried through
            :meth:`flat_context`/:meth:`from_context`; when left empty it is
            ``make_user_id(sub)`` (the single-issuer form without prefix).

    Raises:
        UserIdUnrepresentable: (on construction without ``user_id``) see :func:`make_user_id`.
    """

    sub: str
    issuer: str
    scopes: Tuple[str, ...] = ()
    claims: Dict[str, Any] = field(default_factory=dict)
    user_id: str = ""

    def __post_init__(self) -> None:
        if not self.user_id:
            object.__setattr__(self, "user_id", make_user_id(self.sub))

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any],
                    user_id_prefix: Optional[str] = None) -> "Principal":
        """Build from a verified payload (``sub`` and ``iss`` already checked as strings).

        Args:
            claims: the verified payload.
            user_id_prefix: the issuer's ``user_id_prefix`` (``IssuerConfig.user_id_prefix``).
        Raises:
            UserIdUnrepresentable: (401) the ``sub`` cannot become a user id.
        """
        selected = {name: claims[name] for name in SELECTED_CLAIMS if name in claims}
        return cls(sub=claims["sub"], issuer=claims["iss"],
                   scopes=scopes_from_claims(claims), claims=selected,
                   user_id=make_user_id(claims["sub"], user_id_prefix))

    def has_scope(self, scope: str) -> bool:
        """True when ``scope`` was granted."""
        return scope in self.scopes

    def to_json(self) -> Dict[str, Any]:
        """The shape ``GET /me`` answers: ``{"user_id", "sub", "iss", "scopes", "claims"}``."""
        return {"user_id": self.user_id, "sub": self.sub, "iss": self.issuer,
                "scopes": list(self.scopes), "claims": dict(self.claims)}

    def flat_context(self) -> Dict[str, FlatValue]:
        """Authorizer context: only str/int/float/bool values.

        Keys: ``sub``, ``iss``, ``user_id``, ``scopes`` (space-separated), ``claims`` (JSON
        object text), plus each scalar selected claim under its own name (``name``,
        ``email``...) for mapping templates and logs.
        """
        flat: Dict[str, FlatValue] = {
            "sub": self.sub,
            "iss": self.issuer,
            "user_id": self.user_id,
            "scopes": " ".join(self.scopes),
            "claims": _compact_json(self.claims),
        }
        for name, value in self.claims.items():
            if isinstance(value, (str, int, float, bool)) and name not in flat:
                flat[name] = value
        return flat

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> "Principal":
        """Rebuild from an authorizer context made by :meth:`flat_context`.

        A context without ``user_id`` (made before user ids existed: an authorizer cache entry
        or a registry item of a connection opened before the upgrade) gets the user id of
        ``(iss, sub)`` under the current ``JWT_*`` settings.

        Raises:
            Unauthorized: the context lacks ``sub``/``iss``, its ``claims`` is not a JSON
                object that :func:`chalicelib.jsonutil.loads` accepts, or its ``user_id`` is
                not a well-formed user id.
        """
        sub, issuer = context.get("sub"), context.get("iss")
        if not isinstance(sub, str) or not sub or not isinstance(issuer, str):
            raise Unauthorized("authorizer context without sub/iss")
        raw_claims = context.get("claims") or "{}"
        try:
            claims = (jsonutil.loads(raw_claims) if isinstance(raw_claims, str)
                      else dict(raw_claims))
        except (ValueError, TypeError):  # JSONRejected is a ValueError
            raise Unauthorized("authorizer context with unreadable claims") from None
        if not isinstance(claims, dict):
            raise Unauthorized("authorizer context with non-object claims")
        scopes = context.get("scopes") or ""
        user_id = context.get("user_id")
        if user_id is None:
            user_id = _user_id_from_settings(issuer, sub)
        elif not isinstance(user_id, str) or len(user_id) > MAX_USER_ID_LENGTH \
                or not USER_ID_RE.fullmatch(user_id):
            raise Unauthorized("authorizer context with a malformed user_id")
        return cls(sub=sub, issuer=issuer,
                   scopes=tuple(scopes.split()) if isinstance(scopes, str) else (),
                   claims=claims, user_id=user_id)


def _user_id_from_settings(issuer: str, sub: str) -> str:
    from chalicelib.settings import jwt_settings  # settings import no AWS SDK

    config = jwt_settings().issuers.get(issuer)
    if config is None:
        raise Unauthorized("authorizer context of an issuer that is no longer configured")
    return make_user_id(sub, config.user_id_prefix)
