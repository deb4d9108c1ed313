"""A local OpenID Connect issuer for ``make run`` and the tests: keys, discovery, JWKS, tokens.

Keys are generated once into a folder (default ``.devkeys/``, untracked) so tokens stay valid
across restarts. The HTTP server binds 127.0.0.1 only and serves::

    GET /.well-known/openid-configuration   -> {"issuer", "jwks_uri", ...}
    GET /.well-known/jwks.json              -> {"keys": [...]}  (one key per algorithm)

The issuer URL is ``http://127.0.0.1:<port>``; the settings refuse plain-http issuers outside
the dev stage, so this issuer can never be trusted by staging or prod.

Command line::

    python -m devtools.dev_issuer serve [--port 9999]
    python -m devtools.dev_issuer token SUB [--port 9999] [--alg RS256] [--claim k=v ...]
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Dict, Optional

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from devtools.loopback import LoopbackHTTPServer

DEFAULT_PORT = 9999
DEFAULT_AUDIENCE = "realtime-dev"
DEFAULT_KEYS_DIR = Path(__file__).resolve().parent.parent / ".devkeys"

#: one signing key per algorithm family; kid = "<alg>-dev"
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
              "ES256", "ES384", "ES512", "EdDSA")


def _generate(alg: str):
    if alg[:2] in ("RS", "PS"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg == "ES512":
        return ec.generate_private_key(ec.SECP521R1())
    return ed25519.Ed25519PrivateKey.generate()


def _public_jwk(alg: str, private_key) -> Dict[str, Any]:
    algo = jwt.get_algorithm_by_name(alg)
    jwk = json.loads(algo.to_jwk(private_key.public_key()))
    jwk.update({"kid": f"{alg}-dev", "alg": alg, "use": "sig"})
    return jwk


class DevIssuer:
    """Keys plus a loopback HTTP server publishing them.

    Args:
        keys_dir: where PEM private keys live (created if missing).
        port: TCP port on 127.0.0.1 (0 picks a free one).
        audience: default ``aud`` of minted tokens.
    """

    def __init__(self, keys_dir: Path = DEFAULT_KEYS_DIR, port: int = DEFAULT_PORT,
                 audience: str = DEFAULT_AUDIENCE):
        self.keys_dir = Path(keys_dir)
        self.port = port
        self.audience = audience
        self.private_keys: Dict[str, Any] = {}
        self._server: Optional[LoopbackHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._load_or_create_keys()

    # -- keys
    def _load_or_create_keys(self) -> None:
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.keys_dir, 0o700)
        except OSError:
            pass
        for alg in ALGORITHMS:
            path = self.keys_dir / f"{alg}.pem"
            if path.exists():
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            else:
                key = _generate(alg)
                path.write_bytes(key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption()))
                os.chmod(path, 0o600)
            self.private_keys[alg] = key

    @property
    def issuer(self) -> str:
        """The issuer URL (``iss``), ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"

    def jwks(self) -> Dict[str, Any]:
        """The public key set, ``{"keys": [...]}``."""
        return {"keys": [_public_jwk(alg, key) for alg, key in self.private_keys.items()]}

    def mint(self, sub: str, alg: str = "RS256", ttl: int = 3600,
             **claims: Any) -> str:
        """Sign a token for ``sub``.

        Args:
            sub: subject.
            alg: one of :data:`ALGORITHMS`.
            ttl: lifetime in seconds (``exp = iat + ttl``).
            claims: extra or overriding claims (``aud``, ``name``, ``scope``...).
        Returns:
            compact JWS text.
        """
        now = int(time.time())
        payload = {"iss": self.issuer, "sub": sub, "aud": self.audience, "iat": now,
                   "exp": now + ttl, "jti": uuid.uuid4().hex}
        payload.update(claims)
        return jwt.encode(payload, self.private_keys[alg], algorithm=alg,
                          headers={"kid": f"{alg}-dev"})

    # -- HTTP
    def start(self) -> "DevIssuer":
        """Serve discovery and JWKS on 127.0.0.1 in a daemon thread; returns self."""
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.issuer, "jwks_uri": issuer.jwks_uri,
                            "id_token_signing_alg_values_supported": list(ALGORITHMS),
                            "response_types_supported": ["id_token"],
                            "subject_types_supported": ["public"]}
                elif self.path == "/.well-known/jwks.json":
                    body = issuer.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "max-age=3600")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        self._server = LoopbackHTTPServer(Handler, self.port).start(name="dev-issuer")
        self.port = self._server.port
        return self

    def stop(self) -> None:
        """Stop the server and release the port."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def env(self) -> Dict[str, str]:
        """Settings that make the app trust this issuer (dev stage only)."""
        return {"JWT_ISSUER": self.issuer, "JWT_ISSUER_JWKS_URI": self.jwks_uri,
                "JWT_AUTHORIZED_AUDIENCES": self.audience}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.dev_issuer")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve discovery and JWKS on 127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    tok = sub.add_parser("token", help="print a token")
    tok.add_argument("sub")
    tok.add_argument("--port", type=int, default=DEFAULT_PORT)
    tok.add_argument("--alg", default="RS256", choices=ALGORITHMS)
    tok.add_argument("--ttl", type=int, default=3600)
    tok.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE",
                     help="extra claim; VALUE parsed as JSON when it is JSON")
    args = parser.parse_args(argv)
    issuer = DevIssuer(port=args.port)
    if args.command == "token":
        claims = {}
        for item in args.claim:
            name, _, value = item.partition("=")
            try:
                claims[name] = json.loads(value)
            except ValueError:
                claims[name] = value
        print(issuer.mint(args.sub, alg=args.alg, ttl=args.ttl, **claims))
        return 0
    issuer.start()
    print(f"dev issuer on {issuer.issuer} (JWKS {issuer.jwks_uri})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        issuer.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
