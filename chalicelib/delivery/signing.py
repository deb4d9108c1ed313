"""SigV4 signing of PostToConnection requests with botocore's signer, cheaply per post.

:class:`FanoutSigV4Auth` is botocore's ``SigV4Auth`` that remembers the results of its pure
steps which repeat across a fan-out: the SHA-256 of the payload (one frame for every target);
the canonical and signed header lists (equal for every post signed within the same second);
the derived signing key per (secret key, date, region, service) — four HMACs (AWS docs,
"Create a signed AWS API request", step 4). The canonical request, string to sign and signature
are botocore's own code, so the signature is exactly botocore's (tested against it).

Credentials come from botocore's default credential chain (:func:`credential_source`).
Imports botocore: import this module lazily (``import app`` must not pay for it).
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Tuple

from botocore.auth import SigV4Auth

#: the signing name of the management API (``apigatewaymanagementapi``'s ``signingName``)
SIGNING_SERVICE = "execute-api"


class SigningRequest:
    """The request fields botocore's ``SigV4Auth.add_auth`` reads and writes (the duck type of
    ``botocore.awsrequest.AWSRequest``, without its header object and URL preparation).

    Attributes:
        method: ``"POST"``.
        url: the full URL, path already percent-encoded.
        headers: header name -> value; ``add_auth`` adds ``X-Amz-Date``,
            ``X-Amz-Security-Token`` (session credentials) and ``Authorization``.
        body: the payload (bytes).
        params: query parameters (none here).
        context: botocore's signing context (``timestamp``).
    """

    __slots__ = ("method", "url", "headers", "body", "params", "context")

    def __init__(self, url: str, headers: Dict[str, str], body: bytes,
                 method: str = "POST") -> None:
        self.method, self.url, self.headers, self.body = method, url, headers, body
        self.params: Dict[str, str] = {}
        self.context: Dict[str, Any] = {}


class FanoutSigV4Auth(SigV4Auth):
    """botocore's SigV4 signer, remembering the results of its pure steps that repeat across a
    fan-out (same payload, same headers but for the path, same day).

    The signature is exactly ``SigV4Auth``'s for the same request and second (tested against
    botocore's own signer).

    Args:
        credentials: botocore ``ReadOnlyCredentials`` (``access_key``, ``secret_key``,
            ``token``); replace :attr:`credentials` to sign with renewed ones.
        region_name: the API's region.
        keys: a shared cache of derived signing keys, ``{(secret, date, region, service):
            key}`` (kept by the caller across fan-outs).
    """

    def __init__(self, credentials, region_name: str,
                 keys: Optional[Dict[Tuple[str, str, str, str], bytes]] = None) -> None:
        super().__init__(credentials, SIGNING_SERVICE, region_name)
        self._keys = keys if keys is not None else {}
        self._body: Optional[bytes] = None
        self._body_hash = ""
        self._header_key: Optional[Tuple[Tuple[str, str], ...]] = None
        self._header_map: Any = None
        self._canonical = ""
        self._signed = ""

    def payload(self, request) -> str:
        body = request.body
        if body is not None and body is self._body:
            return self._body_hash
        digest = super().payload(request)
        if isinstance(body, bytes):
            self._body, self._body_hash = body, digest
        return digest

    def headers_to_sign(self, request):
        key = tuple(request.headers.items())
        if key != self._header_key:
            header_map = super().headers_to_sign(request)
            self._canonical = super().canonical_headers(header_map)
            self._signed = super().signed_headers(header_map)
            self._header_key, self._header_map = key, header_map
        return self._header_map

    def canonical_headers(self, headers_to_sign) -> str:
        if headers_to_sign is self._header_map:
            return self._canonical
        return super().canonical_headers(headers_to_sign)

    def signed_headers(self, headers_to_sign) -> str:
        if headers_to_sign is self._header_map:
            return self._signed
        return super().signed_headers(headers_to_sign)

    def signature(self, string_to_sign: str, request) -> str:
        secret = self.credentials.secret_key
        scope = (secret, request.context["timestamp"][0:8], self._region_name,
                 self._service_name)
        key = self._keys.get(scope)
        if key is None:
            k_date = self._sign(f"AWS4{secret}".encode(), scope[1])
            k_region = self._sign(k_date, self._region_name)
            k_service = self._sign(k_region, self._service_name)
            key = self._sign(k_service, "aws4_request")
            if len(self._keys) > 16:
                self._keys.clear()
            self._keys[scope] = key
        return self._sign(key, string_to_sign, hex=True)


_credentials_lock = threading.Lock()
_credentials: List[Any] = []


def credential_source():
    """botocore's credentials from its default chain (environment, shared files, container or
    instance role; cached per process — refreshable ones renew themselves on
    ``get_frozen_credentials()``), or None when the chain finds none."""
    with _credentials_lock:
        if not _credentials:
            import botocore.session

            _credentials.append(botocore.session.get_session().get_credentials())
        return _credentials[0]


def reset() -> None:
    """Forget the cached credentials (tests; changed environment variables)."""
    with _credentials_lock:
        _credentials.clear()
