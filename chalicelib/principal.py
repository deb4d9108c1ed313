"""The verified caller, and its flat form for API Gateway authorizer context.

API Gateway only passes string, number and boolean values in an authorizer's ``context``
(AWS docs, "Output from an API Gateway Lambda authorizer"), so :meth:`Principal.flat_context`
flattens; :meth:`Principal.from_context` rebuilds the principal on the other side (REST routes
behind ``jwt_auth``, ``ws_connect`` behind ``ws_authorizer``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Tuple, Union

from chalicelib import jsonutil
from chalicelib.errors import Unauthorized

#: claims copied from a verified token into the principal (when present)
SELECTED_CLAIMS = ("name", "email", "email_verified", "preferred_username", "groups",
                   "cognito:groups", "cognito:username")

FlatValue = Union[str, int, float, bool]

#: ``json.dumps(..., separators=(",", ":"), sort_keys=True)`` without building an encoder per call
_compact_json = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


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
    """

    sub: str
    issuer: str
    scopes: Tuple[str, ...] = ()
    claims: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> "Principal":
        """Build from a verified payload (``sub`` and ``iss`` already checked as strings)."""
        selected = {name: claims[name] for name in SELECTED_CLAIMS if name in claims}
        return cls(sub=claims["sub"], issuer=claims["iss"],
                   scopes=scopes_from_claims(claims), claims=selected)

    def has_scope(self, scope: str) -> bool:
        """True when ``scope`` was granted."""
        return scope in self.scopes

    def to_json(self) -> Dict[str, Any]:
        """The shape ``GET /me`` answers: ``{"sub", "iss", "scopes", "claims"}``."""
        return {"sub": self.sub, "iss": self.issuer, "scopes": list(self.scopes),
                "claims": dict(self.claims)}

    def flat_context(self) -> Dict[str, FlatValue]:
        """Authorizer context: only str/int/float/bool values.

        Keys: ``sub``, ``iss``, ``scopes`` (space-separated), ``claims`` (JSON object text),
        plus each scalar selected claim under its own name (``name``, ``email``...) for
        mapping templates and logs.
        """
        flat: Dict[str, FlatValue] = {
            "sub": self.sub,
            "iss": self.issuer,
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

        Raises:
            Unauthorized: the context lacks ``sub``/``iss``, or its ``claims`` is not a JSON
                object that :func:`chalicelib.jsonutil.loads` accepts.
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
        return cls(sub=sub, issuer=issuer,
                   scopes=tuple(scopes.split()) if isinstance(scopes, str) else (),
                   claims=claims)
