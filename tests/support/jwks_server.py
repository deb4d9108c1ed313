"""A fault-injecting OIDC issuer on 127.0.0.1 for the key-set tests, and token forging helpers.

:class:`JwksServer` serves ``/.well-known/openid-configuration`` and ``/jwks.json`` from a
document the test controls, and can misbehave on demand (:attr:`JwksServer.fault`):

* ``None``: answer the document with :attr:`cache_control`;
* ``"500"``: HTTP 500;
* ``"slow"``: wait :attr:`slow_seconds` before answering (released early by :meth:`stop`);
* ``"garbage"``: 200 with a body that is not JSON;
* ``"huge"``: 200 with a JSON body over 1 MiB (a valid key set padded with a long member);
* ``"redirect"``: 302 to a second, valid key-set URL on the same server;
* ``"dribble"``: 200 headers at once, then the body one byte every 0.2 s (each read is
  quick, the whole is slower than any sane timeout).

An endpoint that is down altogether is :func:`closed_port_url`.

Every request path is recorded in :attr:`requests` (``jwks_fetches`` counts key-set GETs).

:func:`forge` builds compact JWS tokens from arbitrary header and payload bytes, so tests can
make every malformed or hostile token; :func:`public_jwk` turns keys into JWKs.
"""
from __future__ import annotations

import base64
import functools
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, List, Optional, Union

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from devtools.loopback import LoopbackHTTPServer


@functools.lru_cache(maxsize=None)
def private_key(name: str, kind: str = "RSA", bits: int = 2048):
    """A private key made once per test process, per ``name`` (RSA ``bits``, EC P-256/384/521
    as ``kind`` "P-256"..., or "Ed25519")."""
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if kind == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    curve = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}[kind]
    return ec.generate_private_key(curve())


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _as_bytes(part: Union[bytes, str, Dict[str, Any], List[Any]]) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, str):
        return part.encode()
    return json.dumps(part).encode()


def sign(data: bytes, key, alg: str) -> bytes:
    """A JWS signature of ``data`` with a private key (JWS encoding: raw R||S for ECDSA)."""
    if alg.startswith("HS"):
        return jwt.get_algorithm_by_name(alg).sign(data, key)
    digest = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}.get(alg[2:])
    if alg.startswith("RS"):
        return key.sign(data, padding.PKCS1v15(), digest())
    if alg.startswith("PS"):
        return key.sign(data, padding.PSS(padding.MGF1(digest()), digest().digest_size),
                        digest())
    if alg.startswith("ES"):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest())))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "EdDSA":
        return key.sign(data)
    raise ValueError(alg)


def forge(header, payload, key=None, alg: Optional[str] = None) -> str:
    """A compact JWS from raw parts.

    Args:
        header, payload: dicts/lists (JSON-encoded), str or bytes (used as is).
        key: private key (or HMAC secret bytes); None leaves the signature empty.
        alg: signing algorithm (default: ``header['alg']``).
    """
    signing_input = f"{b64url(_as_bytes(header))}.{b64url(_as_bytes(payload))}"
    if key is None:
        return signing_input + "."
    alg = alg or header["alg"]
    return f"{signing_input}.{b64url(sign(signing_input.encode(), key, alg))}"


def public_jwk(private_key, kid: str, **members: Any) -> Dict[str, Any]:
    """The public JWK of a private key with ``kid`` and extra members (``alg``, ``use``...)."""
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        algo = jwt.algorithms.RSAAlgorithm
    elif isinstance(public, ec.EllipticCurvePublicKey):
        algo = jwt.algorithms.ECAlgorithm
    elif isinstance(public, ed25519.Ed25519PublicKey):
        algo = jwt.algorithms.OKPAlgorithm
    else:
        raise ValueError(type(public))
    jwk = json.loads(algo.to_jwk(public))
    jwk["kid"] = kid
    jwk.update(members)
    return jwk


class JwksServer:
    """An issuer whose discovery and key-set endpoints the test controls (see module doc)."""

    def __init__(self, document: Optional[Dict[str, Any]] = None,
                 cache_control: Optional[str] = "max-age=3600", tls=None):
        self.document: Any = document if document is not None else {"keys": []}
        self.cache_control = cache_control
        self.fault: Optional[str] = None
        self.slow_seconds = 5.0
        self.requests: List[str] = []
        self._release = threading.Event()
        self._server: Optional[LoopbackHTTPServer] = None
        self._refused: Optional[socket.socket] = None
        self.port = 0
        self.tls = tls  # an ssl.SSLContext (server side): serve https instead of http

    # -- addresses
    @property
    def issuer(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks.json"

    @property
    def jwks_fetches(self) -> int:
        return sum(1 for path in self.requests if path.startswith(("/jwks.json", "/moved")))

    def env(self, audience: str = "test-audience") -> Dict[str, str]:
        return {"JWT_ISSUER": self.issuer, "JWT_ISSUER_JWKS_URI": self.jwks_uri,
                "JWT_AUTHORIZED_AUDIENCES": audience}

    # -- lifecycle
    def start(self) -> "JwksServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server API)
                server.requests.append(self.path)
                fault = server.fault
                if self.path == "/.well-known/openid-configuration":
                    return self._send(200, json.dumps({"issuer": server.issuer,
                                                       "jwks_uri": server.jwks_uri}).encode())
                if self.path not in ("/jwks.json", "/moved"):
                    return self._send(404, b"{}")
                if fault == "500":
                    return self._send(500, b'{"message":"internal"}')
                if fault == "slow":
                    server._release.wait(server.slow_seconds)
                if fault == "garbage":
                    return self._send(200, b"<html>this is not a key set</html>")
                if fault == "huge":
                    doc = dict(server.document, padding="x" * (1 << 20))
                    return self._send(200, json.dumps(doc).encode())
                if fault == "dribble":
                    body = json.dumps(server.document).encode()
                    try:
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        for i in range(len(body)):
                            if server._release.wait(0.2):
                                return
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                    except OSError:
                        return
                    return
                if fault == "redirect" and self.path == "/jwks.json":
                    return self._send(302, b"", {"Location": f"{server.issuer}/moved"})
                self._send(200, json.dumps(server.document).encode(),
                           {"Cache-Control": server.cache_control} if server.cache_control
                           else {})

            def _send(self, status: int, body: bytes, headers: Optional[dict] = None):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeouts): expected

            def log_message(self, *args):
                pass

        # clients that hang up mid-answer are part of the tests: no tracebacks for them
        self._server = LoopbackHTTPServer(Handler, quiet_errors=True)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.port
        self._server.start(poll_interval=0.05)
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "JwksServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def closed_port_url(path: str = "/jwks.json") -> str:
    """An http://127.0.0.1 URL on a port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
