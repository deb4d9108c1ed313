"""Key sets per issuer: discovery, fetching, caching, rotation, and parsed verification keys.

One :class:`KeySet` per configured issuer. Its keys come from ``jwks_uri`` (configured, or
found by OpenID Connect Discovery 1.0 §4 at ``{issuer}/.well-known/openid-configuration``,
whose ``issuer`` must equal the configured one, §4.3). Two document formats are accepted:
a JWK Set (RFC 7517 §5, ``{"keys": [...]}``) and Firebase's x509 map
(``{kid: "-----BEGIN CERTIFICATE-----..."}``).

Fetching (stdlib ``http.client``, no AWS SDK): HTTPS only, plain HTTP only for
localhost/127.0.0.1/::1; :data:`FETCH_TIMEOUT` seconds in total for connect, headers and body
(DNS resolution excepted); bodies over :data:`MAX_BODY_BYTES` refused; redirects are never
followed (a 3xx is a failure); TLS certificates verified with the system trust store.

Caching (times from :data:`monotonic`, which tests replace with a fake clock):

* a key set is fresh for the response's ``Cache-Control: max-age`` clamped to
  :data:`MIN_TTL`..:data:`MAX_TTL` (default :data:`DEFAULT_TTL`); a ``max-age`` too large to
  represent counts as 2^31 s (RFC 9111 §1.2.2), so it is clamped like any other;
* a ``kid`` not in a fresh set triggers one refetch, so a key the issuer published after our
  last fetch costs exactly one fetch (rotation). When the refetched set still lacks the ``kid``,
  or a fetch fails, the next fetch waits :data:`COOLDOWN` seconds, however many unknown kids
  arrive (a penalty box per issuer); a successful fetch that finds its ``kid`` starts none;
* when a refresh fails, the previous keys keep serving (stale-if-error) for up to
  :data:`STALE_IF_ERROR` seconds after they went stale, retried every :data:`COOLDOWN` s;
* keys are parsed once per fetch into ``cryptography`` public keys, and each (key, alg)
  verifier is built once, so a warm verification does no parsing at all.

Key rules (RFC 7517 §4, RFC 8725 §3): ``kty`` RSA, EC or OKP (Ed25519/Ed448); ``use``, when
present, is ``sig``; ``key_ops``, when present, contains ``verify``; no private members; the
key's ``alg``, when present, equals the token's; the key type and curve fit the token's ``alg``;
RSA keys have at least :data:`MIN_RSA_BITS` bits. A key breaking a rule is kept as a refusal,
so a token naming it fails with ``KeyRejected`` and the reason.
"""
from __future__ import annotations

import http.client
import json
import logging
import re
import ssl
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature

from chalicelib.errors import KeyRejected, KeySetUnavailable, UnknownKeyId
from chalicelib.settings import IssuerConfig, JwtSettings, key_url_allowed

log = logging.getLogger("realtime.jwks")

FETCH_TIMEOUT = 2.0          # seconds, whole request
MAX_BODY_BYTES = 1 << 20     # 1 MiB
MIN_TTL = 300                # seconds
MAX_TTL = 86400
DEFAULT_TTL = 3600
COOLDOWN = 30                # seconds before the next fetch after a failed one or a kid miss
STALE_IF_ERROR = 86400       # seconds stale keys may serve while the issuer is unreachable
MIN_RSA_BITS = 2048

#: clock for cache lifetimes (seconds, monotonic); tests replace it with a fake clock
monotonic = time.monotonic

Verifier = Callable[[bytes, bytes], None]


def _kid(kid: str) -> str:
    """A kid for a log message: repr (no raw newlines), at most 80 characters."""
    text = repr(kid)
    return text if len(text) <= 80 else text[:77] + "..."


class FetchError(Exception):
    """A key set or discovery document could not be fetched or understood (message for logs)."""


# --- verifiers --------------------------------------------------------------------------------

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES = {"ES256": ("secp256r1", 32), "ES384": ("secp384r1", 48), "ES512": ("secp521r1", 66)}


def _rsa_verifier(key: rsa.RSAPublicKey, alg: str) -> Verifier:
    digest = _HASHES[alg[2:]]()
    if alg[0] == "R":
        pad = padding.PKCS1v15()
    else:  # RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash output
        pad = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    verify = key.verify

    def verifier(data: bytes, signature: bytes) -> None:
        verify(signature, data, pad, digest)
    return verifier


def _ec_verifier(key: ec.EllipticCurvePublicKey, alg: str) -> Verifier:
    size = _CURVES[alg][1]
    scheme = ec.ECDSA(_HASHES[alg[2:]]())
    verify = key.verify
    from_bytes = int.from_bytes

    def verifier(data: bytes, signature: bytes) -> None:
        # RFC 7518 §3.4: R || S, each exactly the curve size, big-endian
        if len(signature) != 2 * size:
            raise _CryptoInvalidSignature()
        der = encode_dss_signature(from_bytes(signature[:size], "big"),
                                   from_bytes(signature[size:], "big"))
        verify(der, data, scheme)
    return verifier


def _eddsa_verifier(key, alg: str) -> Verifier:
    verify = key.verify

    def verifier(data: bytes, signature: bytes) -> None:
        verify(signature, data)
    return verifier


class KeyEntry:
    """One key of a key set: a parsed public key, or the reason it is refused.

    Args:
        kid: key id.
        public_key: a ``cryptography`` public key, or None when refused.
        alg: the JWK's ``alg`` (None when absent, as in x509 maps).
        refusal: why the key may not be used, or None.
    """

    __slots__ = ("kid", "public_key", "alg", "refusal", "_verifiers")

    def __init__(self, kid: str, public_key, alg: Optional[str], refusal: Optional[str]):
        self.kid = kid
        self.public_key = public_key
        self.alg = alg
        self.refusal = refusal
        self._verifiers: Dict[str, Any] = {}

    @property
    def usable(self) -> bool:
        return self.refusal is None

    def verifier(self, alg: str) -> Verifier:
        """A callable ``(signing_input: bytes, signature: bytes) -> None`` for tokens of ``alg``,
        raising ``cryptography.exceptions.InvalidSignature`` on a bad signature.

        Raises:
            KeyRejected: the key is refused, or does not fit ``alg``.
        """
        made = self._verifiers.get(alg)
        if made is None:
            made = self._verifiers[alg] = self._make(alg)
        if made.__class__ is str:
            raise KeyRejected(made)
        return made

    def _make(self, alg: str):
        """A verifier, or a refusal reason (str)."""
        where = f"key {_kid(self.kid)}"
        if self.refusal is not None:
            return f"{where}: {self.refusal}"
        if self.alg is not None and self.alg != alg:
            return f"{where} has alg {self.alg!r}, the token says {alg!r}"
        key = self.public_key
        if alg[:2] in ("RS", "PS"):
            if isinstance(key, rsa.RSAPublicKey):
                return _rsa_verifier(key, alg)
        elif alg in _CURVES:
            if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _CURVES[alg][0]:
                return _ec_verifier(key, alg)
        elif alg == "EdDSA":
            if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
                return _eddsa_verifier(key, alg)
        return f"{where} ({_describe(key)}) does not fit alg {alg!r}"


def _describe(key) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__


# --- key set documents ------------------------------------------------------------------------

_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def _check_public_key(key) -> Optional[str]:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"RSA key of {key.key_size} bits is shorter than {MIN_RSA_BITS}"
        return None
    if isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey,
                        ed448.Ed448PublicKey)):
        return None
    return f"{type(key).__name__} keys are not signature keys"


def entry_from_jwk(kid: str, jwk: Dict[str, Any]) -> KeyEntry:
    """Parse one JWK (RFC 7517 §4) through PyJWT's algorithm objects into a :class:`KeyEntry`.

    Never raises: an unusable key becomes an entry with a refusal reason.
    """
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    alg = jwk.get("alg")
    kty = jwk.get("kty")
    if alg is not None and alg.__class__ is not str:
        return KeyEntry(kid, None, None, "alg is not a string")
    loaders = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "OKP": OKPAlgorithm}
    if kty not in loaders:
        return KeyEntry(kid, None, alg, f"kty {kty!r} is not RSA, EC or OKP")
    use = jwk.get("use")
    if use is not None and use != "sig":
        return KeyEntry(kid, None, alg, f"use is {use!r}, not 'sig'")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return KeyEntry(kid, None, alg, "key_ops does not allow 'verify'")
    if any(name in jwk for name in _PRIVATE_MEMBERS):
        return KeyEntry(kid, None, alg, "the key set publishes private key material")
    try:
        key = loaders[kty].from_jwk(jwk)
    except Exception as exc:  # InvalidKeyError, ValueError, TypeError from bad members
        return KeyEntry(kid, None, alg, f"unreadable {kty} key ({type(exc).__name__})")
    return KeyEntry(kid, key, alg, _check_public_key(key))


def entry_from_certificate(kid: str, pem: str) -> KeyEntry:
    """Parse a PEM X.509 certificate (Firebase's key map) into a :class:`KeyEntry`."""
    from cryptography import x509

    try:
        key = x509.load_pem_x509_certificate(pem.encode("ascii")).public_key()
    except Exception as exc:
        return KeyEntry(kid, None, None, f"unreadable certificate ({type(exc).__name__})")
    return KeyEntry(kid, key, None, _check_public_key(key))


def parse_key_set(document: Any) -> Dict[str, KeyEntry]:
    """Parse a JWK Set or an x509 certificate map into ``{kid: KeyEntry}``.

    Keys without a string ``kid`` are skipped (tokens must name their key). A ``kid`` that
    appears twice keeps its one usable key; two usable keys with one ``kid`` are refused as
    ambiguous.

    Raises:
        FetchError: the document is neither format.
    """
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        items = [(jwk.get("kid"), jwk) for jwk in document["keys"] if isinstance(jwk, dict)]
        make = entry_from_jwk
    elif (isinstance(document, dict) and document and "keys" not in document
          and all(isinstance(v, str) and "BEGIN CERTIFICATE" in v for v in document.values())):
        items = list(document.items())
        make = entry_from_certificate
    else:
        raise FetchError("document is neither a JWK Set nor an x509 certificate map")
    entries: Dict[str, KeyEntry] = {}
    for kid, item in items:
        if not isinstance(kid, str) or not kid:
            continue
        entry = make(kid, item)
        previous = entries.get(kid)
        if previous is not None:
            if previous.usable and entry.usable:
                entry = KeyEntry(kid, None, None, "kid names several keys in the key set")
            elif previous.usable:
                entry = previous
        entries[kid] = entry
    return entries


# --- HTTP -------------------------------------------------------------------------------------

_ssl_context: Optional[ssl.SSLContext] = None
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?([0-9]+)", re.IGNORECASE)
#: RFC 9111 §1.2.2: a delta-seconds greater than the cache can represent counts as 2^31
DELTA_SECONDS_CAP = 2 ** 31


def check_url(url: str) -> Tuple[str, str, Optional[int], str]:
    """Split a key-set URL, enforcing HTTPS (plain HTTP for localhost only).

    Returns:
        ``(scheme, host, port, path_and_query)``.
    Raises:
        FetchError: another scheme, or plain HTTP to a non-local host.
    """
    if not key_url_allowed(url):
        raise FetchError(f"refusing {url!r}: https only (http for localhost)")
    parts = urlsplit(url)
    host = parts.hostname
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, host, parts.port, path


def http_get_json(url: str, timeout: float = FETCH_TIMEOUT,
                  max_bytes: int = MAX_BODY_BYTES) -> Tuple[Any, Optional[int]]:
    """GET a JSON document with the key-set rules (see the module doc).

    Args:
        url: https URL (http for localhost).
        timeout: seconds for the whole exchange.
        max_bytes: body size limit in bytes.
    Returns:
        ``(document, max_age)``: the parsed JSON and ``Cache-Control: max-age`` in seconds
        (None when absent; 0 for ``no-store``/``no-cache``).
    Raises:
        FetchError: any failure, with a reason for the log.
    """
    global _ssl_context
    scheme, host, port, path = check_url(url)
    deadline = time.monotonic() + timeout
    if scheme == "https":
        if _ssl_context is None:
            _ssl_context = ssl.create_default_context()
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_ssl_context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json",
                                           "Accept-Encoding": "identity",
                                           "User-Agent": "realtime-jwks/1"})
        sock = conn.sock

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FetchError(f"{url}: no complete answer within {timeout:g} s")
            sock.settimeout(left)
            return left

        remaining()
        response = conn.getresponse()
        if response.status != 200:
            if 300 <= response.status < 400:
                raise FetchError(f"{url}: HTTP {response.status} redirect (not followed)")
            raise FetchError(f"{url}: HTTP {response.status}")
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > max_bytes:
            raise FetchError(f"{url}: body of {length} bytes is over {max_bytes}")
        chunks, size = [], 0
        while True:
            remaining()
            chunk = response.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"{url}: body is over {max_bytes} bytes")
            chunks.append(chunk)
        cache_control = response.getheader("Cache-Control") or ""
    except FetchError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
            raise FetchError(f"{url}: no complete answer within {timeout:g} s") from None
        raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    try:
        document = json.loads(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FetchError(f"{url}: body is not UTF-8 JSON") from None
    return document, max_age_of(cache_control)


def max_age_of(cache_control: str) -> Optional[int]:
    """The freshness lifetime a ``Cache-Control`` header value gives (RFC 9111 §5.2.2.1).

    Args:
        cache_control: the header value ("" when absent).
    Returns:
        seconds: 0 for ``no-store``/``no-cache``; ``max-age`` (ASCII digits; one too long for
        an int, even thousands of digits, counts as :data:`DELTA_SECONDS_CAP`, RFC 9111
        §1.2.2); None when neither is present. Never raises.
    """
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0
    match = _MAX_AGE.search(cache_control)
    if match is None:
        return None
    digits = match.group(1).lstrip("0") or "0"
    if len(digits) > len(str(DELTA_SECONDS_CAP)):
        return DELTA_SECONDS_CAP
    return min(int(digits), DELTA_SECONDS_CAP)


def clamp_ttl(max_age: Optional[int]) -> int:
    """Seconds a fetched key set stays fresh: ``max_age`` within MIN_TTL..MAX_TTL."""
    if max_age is None:
        return DEFAULT_TTL
    return min(max(max_age, MIN_TTL), MAX_TTL)


# --- key sets ---------------------------------------------------------------------------------

class KeySet:
    """The cached keys of one issuer.

    Args:
        config: the issuer (exact ``iss``, optional ``jwks_uri``).
    Attributes:
        keys: ``{kid: KeyEntry}``, or None before the first successful fetch.
        fresh_until: monotonic time until which ``keys`` need no refresh.
        stale_until: monotonic time after which ``keys`` may no longer serve at all.
        next_fetch_at: earliest monotonic time of the next fetch attempt: the cooldown after a
            failed fetch, or after a fetch that did not find the ``kid`` it was made for.
        fetches: number of fetch attempts (for tests and logs).
    """

    def __init__(self, config: IssuerConfig):
        self.config = config
        self.issuer = config.issuer
        self.configured_uri = config.jwks_uri
        self.discovered_uri: Optional[str] = None
        self.keys: Optional[Dict[str, KeyEntry]] = None
        self.fresh_until = float("-inf")
        self.stale_until = float("-inf")
        self.next_fetch_at = float("-inf")
        self.last_error: Optional[str] = None
        self.fetches = 0
        self._lock = threading.Lock()

    # -- fetching
    def _jwks_uri(self) -> str:
        if self.configured_uri:
            return self.configured_uri
        if self.discovered_uri:
            return self.discovered_uri
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document, _ = http_get_json(url)
        if not isinstance(document, dict):
            raise FetchError(f"{url}: discovery document is not a JSON object")
        if document.get("issuer") != self.issuer:
            raise FetchError(f"{url}: discovery 'issuer' differs from the configured issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchError(f"{url}: discovery document has no jwks_uri")
        check_url(jwks_uri)
        self.discovered_uri = jwks_uri
        return jwks_uri

    def refresh(self, now: float) -> None:
        """Fetch and parse the key set now; on success replace the keys.

        A success starts no cooldown (a kid published just after it still costs one fetch);
        a failure does: no fetch before ``now + COOLDOWN``.

        Args:
            now: current :data:`monotonic` time.
        Raises:
            FetchError: the fetch failed (the previous keys, if any, are kept).
        """
        self.fetches += 1
        try:
            uri = self._jwks_uri()
            try:
                document, max_age = http_get_json(uri)
                keys = parse_key_set(document)
            except FetchError:
                self.discovered_uri = None  # rediscover next time: the issuer may have moved
                raise
        except FetchError as exc:
            self.last_error = str(exc)
            self.next_fetch_at = now + COOLDOWN
            log.warning("key set of %s unavailable: %s", self.issuer, exc)
            if self.keys is not None and self.fresh_until <= now < self.stale_until:
                # stale-if-error: keep serving, retry after the cooldown
                self.fresh_until = min(now + COOLDOWN, self.stale_until)
            raise
        ttl = clamp_ttl(max_age)
        self.keys = keys
        self.fresh_until = now + ttl
        self.stale_until = now + ttl + STALE_IF_ERROR
        self.last_error = None
        refused = sorted(k for k, e in keys.items() if not e.usable)
        log.info("key set of %s: %d keys (%d refused), fresh for %d s",
                 self.issuer, len(keys), len(refused), ttl)

    # -- lookups
    def lookup(self, kid: str, now: float) -> KeyEntry:
        """The entry for ``kid``, fetching when the keys are missing, stale, or lack ``kid``.

        Raises:
            UnknownKeyId: ``kid`` is not in the (refreshed, or cooling-down) key set.
            KeySetUnavailable: no usable keys: the fetch failed and nothing (fresh enough) is
                cached.
        """
        with self._lock:
            keys = self.keys
            if keys is not None and now < self.fresh_until:
                entry = keys.get(kid)
                if entry is not None:
                    return entry
                if now < self.next_fetch_at:
                    raise UnknownKeyId(
                        f"kid {_kid(kid)} not in the key set of {self.issuer} (refetch cooling "
                        f"down for {self.next_fetch_at - now:.0f} s)")
            elif now < self.next_fetch_at:
                # missing or stale keys, and the last attempt was moments ago
                if keys is not None and now < self.stale_until:
                    entry = keys.get(kid)
                    if entry is not None:
                        return entry
                    raise UnknownKeyId(f"kid {_kid(kid)} not in the (stale) key set of "
                                       f"{self.issuer}")
                raise KeySetUnavailable(f"key set of {self.issuer} unavailable: "
                                        f"{self.last_error or 'not fetched'}")
            try:
                self.refresh(now)
            except FetchError as exc:
                keys = self.keys
                if keys is not None and now < self.stale_until:
                    entry = keys.get(kid)
                    if entry is not None:
                        return entry
                    raise UnknownKeyId(f"kid {_kid(kid)} not in the key set of {self.issuer} "
                                       f"(refetch failed: {exc})") from None
                raise KeySetUnavailable(f"key set of {self.issuer} unavailable: {exc}") \
                    from None
            entry = self.keys.get(kid)
            if entry is None:
                # the penalty box: unknown kids cost one fetch per cooldown, however many come
                self.next_fetch_at = now + COOLDOWN
                raise UnknownKeyId(f"kid {_kid(kid)} not in the key set of {self.issuer}")
            return entry


_sets: Dict[str, KeySet] = {}
_sets_lock = threading.Lock()


def key_set(config: IssuerConfig) -> KeySet:
    """The :class:`KeySet` of an issuer (created on first use; replaced when its configured
    ``jwks_uri`` changes)."""
    ks = _sets.get(config.issuer)
    if ks is None or ks.configured_uri != config.jwks_uri:
        with _sets_lock:
            ks = _sets.get(config.issuer)
            if ks is None or ks.configured_uri != config.jwks_uri:
                ks = _sets[config.issuer] = KeySet(config)
    return ks


def verifier(config: IssuerConfig, kid: str, alg: str) -> Verifier:
    """The verifier of the key ``kid`` of ``config``'s issuer for tokens of ``alg``.

    Warm path: two dict lookups and a clock read. See the module doc for fetching rules.

    Returns:
        a callable ``(signing_input: bytes, signature: bytes) -> None`` raising
        ``cryptography.exceptions.InvalidSignature``.
    Raises:
        UnknownKeyId, KeyRejected, KeySetUnavailable.
    """
    ks = _sets.get(config.issuer)
    if ks is None or ks.configured_uri != config.jwks_uri:
        ks = key_set(config)
    now = monotonic()
    if now < ks.fresh_until:
        entry = ks.keys.get(kid)
        if entry is not None:
            return entry.verifier(alg)
    return ks.lookup(kid, now).verifier(alg)


def prefetch(settings: JwtSettings) -> Dict[str, Optional[str]]:
    """Fetch every issuer's key set now (cold start, ``JWKS_PREFETCH=true``). Never raises.

    Returns:
        ``{issuer: None on success, else the failure reason}``.
    """
    results: Dict[str, Optional[str]] = {}
    for config in settings.issuers.values():
        ks = key_set(config)
        try:
            with ks._lock:
                ks.refresh(monotonic())
            results[config.issuer] = None
        except FetchError as exc:
            results[config.issuer] = str(exc)
    return results


def reset() -> None:
    """Forget every key set (tests)."""
    with _sets_lock:
        _sets.clear()
