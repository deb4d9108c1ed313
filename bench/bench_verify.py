"""Token verification benchmark: µs per verification with a warm key cache, RS256 and ES256.

Side by side, same tokens, same keys (the dev issuer, on 127.0.0.1):

* ``ws_authorizer``: the app's WebSocket REQUEST authorizer, called as Lambda calls it, with
  an API-Gateway-shaped ``$connect`` event (verification, principal, policy, context);
* ``cryptography verify``: the bare signature check of the same token (the floor);
* ``PyJWKClient + jwt.decode``: PyJWT's own flow with its key cache;
* ``aws-jwt-verify verifySync``: awslabs/aws-jwt-verify on Node (devtools/node).

Then the whole-process cold import of ``app`` against ``import chalice, jwt, pusher`` (fresh
interpreters, alternated, median), and the ratios against the targets of issue 2:
ws_authorizer RS256 ≤ 1.5× aws-jwt-verify, ≥ 2× faster than PyJWKClient; cold import ≤ 1.15×.
Run: ``make bench`` or ``python -m bench verify``.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "devtools" / "node"
ALGS = ("RS256", "ES256")
COLD_RUNS = 11


def _per_call_us(func, seconds: float = 1.0) -> float:
    """Median over 5 rounds of µs per call, each round ~seconds/5."""
    func()
    number = max(1, int(timeit.timeit(func, number=50) and 50))
    per = timeit.timeit(func, number=number) / number
    number = max(50, int(seconds / 5 / per))
    return statistics.median(timeit.repeat(func, number=number, repeat=5)) / number * 1e6


def _app_env(issuer) -> dict:
    return {"STAGE": "dev", **issuer.env(), "PUSHER_APP_ID": "bench", "PUSHER_KEY": "bench",
            "PUSHER_SECRET": "bench"}


def _event(token: str) -> dict:
    arn = "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/dev/$connect"
    return {
        "type": "REQUEST", "methodArn": arn,
        "headers": {"Host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-WebSocket-Version": "13", "X-Forwarded-Proto": "https"},
        "multiValueHeaders": {}, "queryStringParameters": {"token": token},
        "multiValueQueryStringParameters": {"token": [token]}, "stageVariables": None,
        "requestContext": {"routeKey": "$connect", "eventType": "CONNECT",
                           "stage": "dev", "apiId": "abcdef1234",
                           "connectionId": "L0SM9cOFvHcCIhw=", "requestTimeEpoch": 0},
    }


def _bare(issuer, alg: str, token: str):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    import base64

    key = issuer.private_keys[alg].public_key()
    head, payload, sig = token.split(".")
    data = f"{head}.{payload}".encode()
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    if alg == "RS256":
        pad, digest = padding.PKCS1v15(), hashes.SHA256()
        return lambda: key.verify(raw, data, pad, digest)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    scheme = ec.ECDSA(hashes.SHA256())
    return lambda: key.verify(der, data, scheme)


def _pyjwt(issuer, alg: str, token: str):
    import jwt

    client = jwt.PyJWKClient(issuer.jwks_uri, cache_keys=True)

    def run():
        key = client.get_signing_key_from_jwt(token)
        return jwt.decode(token, key.key, algorithms=[alg], audience=issuer.audience,
                          issuer=issuer.issuer)
    return run


def _node(issuer, tokens: dict) -> dict:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "aws-jwt-verify").is_dir():
        return {}
    spec = {"issuer": issuer.issuer, "audience": issuer.audience, "jwks": issuer.jwks(),
            "tokens": tokens, "seconds": 1.0}
    env = dict(os.environ, NODE_PATH=str(NODE_DIR / "node_modules"))
    done = subprocess.run([node, str(ROOT / "bench" / "verify_node.js")],
                          input=json.dumps(spec), capture_output=True, text=True,
                          cwd=NODE_DIR, env=env, timeout=120)
    if done.returncode != 0:
        print("aws-jwt-verify bench failed:", done.stderr.strip()[-500:], file=sys.stderr)
        return {}
    return json.loads(done.stdout)


def _cold_import(env: dict):
    """Median whole-process seconds for ``import app`` and ``import chalice, jwt, pusher``."""
    programs = {"app": "import app",
                "base": "import chalice, jwt, pusher"}
    times = {name: [] for name in programs}
    for _ in range(COLD_RUNS):
        for name, code in programs.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
            times[name].append(time.perf_counter() - start)
    check = subprocess.run(
        [sys.executable, "-c", "import sys, app; print('boto3' in sys.modules)"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return ({name: statistics.median(values) for name, values in times.items()},
            check.stdout.strip() == "True")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from devtools.dev_issuer import DevIssuer

    keys_dir = tempfile.mkdtemp(prefix="bench-keys-")
    issuer = DevIssuer(keys_dir=Path(keys_dir), port=0).start()
    try:
        env = dict(os.environ, **_app_env(issuer))
        os.environ.update(_app_env(issuer))
        import app as app_module

        tokens = {alg: issuer.mint("bench-user", alg=alg, ttl=3600, name="Bench User",
                                   email="bench@example.com", scope="openid profile")
                  for alg in ALGS}
        rows = {}
        for alg in ALGS:
            event = _event(tokens[alg])
            handler = app_module.ws_authorizer
            result = handler(event, None)
            assert result["principalId"] == "bench-user", result
            rows[("ws_authorizer (this app)", alg)] = _per_call_us(lambda: handler(event, None))
            rows[("cryptography verify (floor)", alg)] = _per_call_us(
                _bare(issuer, alg, tokens[alg]))
            rows[("PyJWKClient + jwt.decode", alg)] = _per_call_us(
                _pyjwt(issuer, alg, tokens[alg]))
        for alg, us in _node(issuer, tokens).items():
            rows[("aws-jwt-verify verifySync (Node)", alg)] = us
        cold, boto3_loaded = _cold_import(env)
    finally:
        issuer.stop()
        shutil.rmtree(keys_dir, ignore_errors=True)

    names = list(dict.fromkeys(name for name, _ in rows))
    print(f"{'µs per verification, warm':<36}" + "".join(f"{alg:>10}" for alg in ALGS))
    for name in names:
        cells = "".join(f"{rows[(name, alg)]:>10.1f}" if (name, alg) in rows else f"{'n/a':>10}"
                        for alg in ALGS)
        print(f"{name:<36}{cells}")
    print()
    print(f"cold import, whole process (median of {COLD_RUNS}):  import app "
          f"{cold['app'] * 1000:.0f} ms, import chalice, jwt, pusher {cold['base'] * 1000:.0f} ms"
          f"; boto3 imported by app: {'yes' if boto3_loaded else 'no'}")
    print()
    ws = rows[("ws_authorizer (this app)", "RS256")]
    node = rows.get(("aws-jwt-verify verifySync (Node)", "RS256"))
    pyjwt = rows[("PyJWKClient + jwt.decode", "RS256")]
    checks = []
    if node:
        checks.append(("ws_authorizer RS256 / aws-jwt-verify RS256", ws / node, "<= 1.50",
                       ws / node <= 1.5))
    checks.append(("PyJWKClient RS256 / ws_authorizer RS256", pyjwt / ws, ">= 2.00",
                   pyjwt / ws >= 2.0))
    ratio = cold["app"] / cold["base"]
    checks.append(("cold import app / chalice+jwt+pusher", ratio, "<= 1.15", ratio <= 1.15))
    print(f"{'ratio':<46}{'value':>8}  {'target':>8}")
    for label, value, target, ok in checks:
        print(f"{label:<46}{value:>8.2f}  {target:>8}  {'ok' if ok else 'MISSED'}")
