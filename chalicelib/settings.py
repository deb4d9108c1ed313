"""Typed, validated settings read from environment variables (per stage in .chalice/config.json).

Every room of ``chalicelib`` reads its settings through the loaders below, never ``os.environ``
directly. Each loader reads its section once, when first needed, and caches it; a missing or
invalid value raises :class:`chalicelib.errors.ConfigError` naming the variable (values are
never echoed: they may be secrets). :func:`reset` drops the caches (tests, and stage switches
in Chalice's test client).

Sections: :func:`app_settings` (stage, CORS), :func:`jwt_settings` (token verification),
:func:`pusher_settings` (Pusher Channels), :func:`websocket_settings` (registry and push),
:func:`webhook_targets` (webhooks out to external URLs).
Every variable and its default is documented in README.md, "Settings".
"""
from __future__ import annotations

import base64
import binascii
import functools
import os
import re
import time
from dataclasses import dataclass, field
from typing import Optional, Tuple
from urllib.parse import urlsplit

from chalicelib import jsonutil
from chalicelib.errors import ConfigError

#: an issuer's ``user_id_prefix`` in ``JWT_ISSUERS``: 1-32 of ``A-Z a-z 0-9 _ -`` (no ``.``, the
#: separator of prefix and sub in a user id: :mod:`chalicelib.auth.principal`)
USER_ID_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]{1,32}", re.ASCII)

ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)
STAGES = ("dev", "staging", "prod")
#: ``STAGE`` when unset: the strictest stage (dev-only relaxations need an explicit STAGE=dev)
DEFAULT_STAGE = "prod"


# --- primitive readers ----------------------------------------------------------------------

def _raw(name: str) -> Optional[str]:
    value = os.environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _required(name: str) -> str:
    value = _raw(name)
    if value is None:
        raise ConfigError(f"{name} is required but not set")
    return value


def _int(name: str, default: int, minimum: int, maximum: int) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}")
    return number


def _bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false")


def _csv(name: str) -> Tuple[str, ...]:
    value = _raw(name)
    if value is None:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


#: hosts a key-set or discovery URL may reach over plain http (local dev issuers)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def url_scheme(url: str) -> str:
    """The scheme of ``url``, lower-cased: schemes are case-insensitive (RFC 3986 §3.1), so
    ``HTTP://`` is plain http. The one scheme rule of every URL check here."""
    return urlsplit(url).scheme.lower()


def key_url_allowed(url: str) -> bool:
    """The key-set URL rule, shared by these settings and :mod:`chalicelib.auth.jwks`: an https URL
    with a host, or plain http to a loopback host (:data:`LOCAL_HOSTS`); scheme in any case."""
    host = urlsplit(url).hostname
    scheme = url_scheme(url)
    return bool(host) and (scheme == "https" or (scheme == "http" and host in LOCAL_HOSTS))


def _check_url(name: str, url: str) -> str:
    """Key-set and discovery URLs: :func:`key_url_allowed`, else a ConfigError naming ``name``."""
    if key_url_allowed(url):
        return url
    raise ConfigError(f"{name} must be an https URL (http only for localhost)")


# --- app ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AppSettings:
    """Stage-wide settings.

    Attributes:
        stage: ``STAGE``: ``dev``, ``staging`` or ``prod`` (default ``prod``: dev-only
            relaxations need an explicit ``STAGE=dev``).
        cors_allow_origin: ``CORS_ALLOW_ORIGIN``: the origin allowed to call the POST routes
            from a browser (default ``*`` on dev, none elsewhere).
    """

    stage: str
    cors_allow_origin: Optional[str]

    @property
    def is_dev(self) -> bool:
        return self.stage == "dev"


@functools.lru_cache(maxsize=None)
def app_settings() -> AppSettings:
    """Load :class:`AppSettings`. Raises ConfigError for an unknown ``STAGE``."""
    stage = _raw("STAGE") or DEFAULT_STAGE
    if stage not in STAGES:
        raise ConfigError(f"STAGE must be one of {', '.join(STAGES)}")
    origin = _raw("CORS_ALLOW_ORIGIN")
    if origin is None and stage == "dev":
        origin = "*"
    return AppSettings(stage=stage, cors_allow_origin=origin)


# --- JWT ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IssuerConfig:
    """One trusted identity provider.

    Attributes:
        issuer: the exact ``iss`` value.
        jwks_uri: key set URL, or None to discover it from
            ``{issuer}/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0 §4).
        audiences: accepted ``aud`` values (or Cognito ``client_id`` for access tokens).
        user_id_prefix: put before the escaped ``sub`` to make this issuer's user ids
            (``<prefix>.<sub>``, see :mod:`chalicelib.auth.principal`), or None. Required and
            distinct when several issuers are trusted.
    """

    issuer: str
    jwks_uri: Optional[str]
    audiences: Tuple[str, ...]
    user_id_prefix: Optional[str] = None


@dataclass(frozen=True)
class JwtSettings:
    """Token verification settings.

    Attributes:
        issuers: trusted issuers keyed by exact ``iss``.
        algorithms: allowed JWS ``alg`` values (asymmetric only).
        leeway_seconds: clock skew tolerated on ``exp``, ``nbf``, ``iat`` (seconds).
        verify_expiration: False only on the dev stage with ``JWT_VERIFY_EXPIRATION=false``.
        authorized_apis: API ids the WebSocket authorizer's policy may grant; empty means the
            API of the method ARN.
        prefetch: fetch every issuer's key set at cold start (``JWKS_PREFETCH``).
    """

    issuers: "dict[str, IssuerConfig]" = field(default_factory=dict)
    algorithms: Tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    leeway_seconds: int = 5
    verify_expiration: bool = True
    authorized_apis: Tuple[str, ...] = ()
    prefetch: bool = False


def _json_list(name: str, raw: str, *, non_empty: bool = False) -> list:
    """The JSON list of setting ``name`` (strict: :func:`chalicelib.jsonutil.loads`).

    Raises:
        ConfigError: not JSON, not a list, or (``non_empty``) an empty list.
    """
    try:
        entries = jsonutil.loads(raw)
    except jsonutil.JSONRejected:
        raise ConfigError(f"{name} must be a JSON list") from None
    if not isinstance(entries, list) or (non_empty and not entries):
        raise ConfigError(f"{name} must be a {'non-empty ' if non_empty else ''}JSON list")
    return entries


def _issuers_from_json(raw: str) -> "dict[str, IssuerConfig]":
    name = "JWT_ISSUERS"
    entries = _json_list(name, raw, non_empty=True)
    issuers = {}
    for index, entry in enumerate(entries):
        where = f"{name}[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("issuer"), str) \
                or not entry["issuer"]:
            raise ConfigError(f"{where} needs a non-empty string 'issuer'")
        audiences = entry.get("audiences")
        if isinstance(audiences, str):
            audiences = [a.strip() for a in audiences.split(",") if a.strip()]
        if not isinstance(audiences, list) or not audiences \
                or not all(isinstance(a, str) and a for a in audiences):
            raise ConfigError(f"{where} needs a non-empty list of string 'audiences'")
        jwks_uri = entry.get("jwks_uri")
        if jwks_uri is not None:
            if not isinstance(jwks_uri, str):
                raise ConfigError(f"{where}.jwks_uri must be a string")
            _check_url(f"{where}.jwks_uri", jwks_uri)
        else:
            _check_url(f"{where}.issuer", entry["issuer"])
        issuers[entry["issuer"]] = IssuerConfig(entry["issuer"], jwks_uri, tuple(audiences))
    return _with_user_id_prefixes(entries, issuers)


def _with_user_id_prefixes(entries: list, issuers: "dict[str, IssuerConfig]"
                           ) -> "dict[str, IssuerConfig]":
    """Add each ``JWT_ISSUERS`` entry's ``user_id_prefix``.

    The user id of (issuer, sub) must be injective (see :mod:`chalicelib.auth.principal`): an issuer
    listed twice, a prefix outside ``[A-Za-z0-9_-]{1,32}``, or several issuers without a prefix
    each, or sharing one, is a configuration error.
    """
    name = "JWT_ISSUERS"
    if len(issuers) != len(entries):
        raise ConfigError(f"{name} lists an issuer more than once")
    prefixes: "dict[str, str]" = {}
    result = {}
    for index, entry in enumerate(entries):
        prefix = entry.get("user_id_prefix")
        if prefix is not None and (not isinstance(prefix, str)
                                   or not USER_ID_PREFIX_RE.fullmatch(prefix)):
            raise ConfigError(f"{name}[{index}].user_id_prefix must be 1-32 characters of "
                              "A-Z a-z 0-9 _ -")
        if prefix is None and len(entries) > 1:
            raise ConfigError(f"{name}[{index}] needs a 'user_id_prefix': with several issuers "
                              "each needs its own, so equal subs of two issuers stay two users")
        if prefix is not None:
            if prefix in prefixes:
                raise ConfigError(f"{name}[{index}].user_id_prefix is already used by "
                                  f"{name}[{prefixes[prefix]}]; prefixes must be distinct")
            prefixes[prefix] = str(index)
        config = issuers[entry["issuer"]]
        result[config.issuer] = IssuerConfig(config.issuer, config.jwks_uri, config.audiences,
                                             prefix)
    return result


@functools.lru_cache(maxsize=None)
def jwt_settings() -> JwtSettings:
    """Load :class:`JwtSettings` from ``JWT_*``, ``AUTHORIZED_APIS``, ``JWKS_PREFETCH``.

    Raises:
        ConfigError: naming the variable that is missing or invalid.
    """
    stage = app_settings().stage
    raw_issuers = _raw("JWT_ISSUERS")
    if raw_issuers is not None:
        issuers = _issuers_from_json(raw_issuers)
    else:
        issuer = _required("JWT_ISSUER")
        jwks_uri = _raw("JWT_ISSUER_JWKS_URI")
        if jwks_uri is not None:
            _check_url("JWT_ISSUER_JWKS_URI", jwks_uri)
        else:
            _check_url("JWT_ISSUER", issuer)
        audiences = _csv("JWT_AUTHORIZED_AUDIENCES")
        if not audiences:
            raise ConfigError("JWT_AUTHORIZED_AUDIENCES is required but not set")
        issuers = {issuer: IssuerConfig(issuer, jwks_uri, audiences)}

    if stage != "dev":
        for config in issuers.values():
            for url in (config.issuer, config.jwks_uri or ""):
                if url_scheme(url) == "http":
                    raise ConfigError(
                        "JWT_ISSUER/JWT_ISSUERS: plain-http (local dev) issuers are only "
                        "allowed on the dev stage")

    algorithms = _csv("JWT_ALGORITHMS") or ASYMMETRIC_ALGORITHMS
    for alg in algorithms:
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise ConfigError(
                "JWT_ALGORITHMS may only list asymmetric algorithms "
                f"({', '.join(ASYMMETRIC_ALGORITHMS)}); 'none' and HS* are refused")

    verify_expiration = _bool("JWT_VERIFY_EXPIRATION", True)
    if not verify_expiration and stage != "dev":
        raise ConfigError("JWT_VERIFY_EXPIRATION=false is only allowed on the dev stage")

    return JwtSettings(
        issuers=issuers,
        algorithms=algorithms,
        leeway_seconds=_int("JWT_LEEWAY_SECONDS", 5, 0, 300),
        verify_expiration=verify_expiration,
        authorized_apis=_csv("AUTHORIZED_APIS"),
        prefetch=_bool("JWKS_PREFETCH", False),
    )


# --- Pusher ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PusherSettings:
    """Pusher Channels settings.

    Attributes:
        app_id, key, secret, cluster: the Pusher app (``PUSHER_APP_ID``, ``PUSHER_KEY``,
            ``PUSHER_SECRET`` or the SSM SecureString named by ``PUSHER_SECRET_PARAMETER``,
            ``PUSHER_CLUSTER`` default ``mt1``).
        host, port, ssl: a self-hosted Pusher-protocol server (soketi): ``PUSHER_HOST``,
            ``PUSHER_PORT``, ``PUSHER_SSL`` (default true).
        encryption_master_key: 32 bytes from ``PUSHER_ENCRYPTION_MASTER_KEY_BASE64``, or None
            (encrypted channels are then refused with a clear error).
        presence_user_info_claims: claims copied into a presence member's ``user_info``
            (``PUSHER_PRESENCE_USER_INFO_CLAIMS``, default ``name``).
    """

    app_id: str
    key: str
    secret: str
    cluster: str
    host: Optional[str]
    port: Optional[int]
    ssl: bool
    encryption_master_key: Optional[bytes]
    presence_user_info_claims: Tuple[str, ...]


#: SSM client limits for ``PUSHER_SECRET_PARAMETER``: seconds to connect (TCP and TLS), seconds
#: to wait for each read of the answer, total attempts (botocore's standard retry mode, whose
#: backoff after a timeout is under 0.05 s). A stuck SSM thus costs about 2 x (1 + 2) = 6 s
#: (a throttled answer may add botocore's up-to-6 s backoff), far below API Gateway's 29 s
#: integration timeout (AWS docs, "Amazon API Gateway quotas").
SSM_CONNECT_TIMEOUT = 1.0
SSM_READ_TIMEOUT = 2.0
SSM_MAX_ATTEMPTS = 2
#: seconds a failed read is remembered: requests in that window get the same 503 at once
SECRET_FAILURE_MEMORY = 30

#: clock of :data:`SECRET_FAILURE_MEMORY` (seconds, monotonic); tests replace it
monotonic = time.monotonic

_secret_failures: "dict[str, Tuple[float, str]]" = {}


def _read_secret_parameter(name: str) -> str:
    """Read the SecureString ``name`` from SSM Parameter Store (``ssm:GetParameter``, decrypted).

    Uses the cached client of :func:`chalicelib.aws.client` (boto3 imported lazily, endpoint per
    boto3's resolution, so ``AWS_ENDPOINT_URL_SSM`` works) with the bounds above. A failure is
    remembered for :data:`SECRET_FAILURE_MEMORY` seconds: until then the same error is raised
    without asking SSM again (:func:`reset` forgets it).

    Returns:
        the parameter's value.
    Raises:
        ConfigError: (503) naming ``PUSHER_SECRET_PARAMETER`` and the failure's kind (the
            exception class or AWS error code), never the value.
    """
    now = monotonic()
    remembered = _secret_failures.get(name)
    if remembered is not None and now < remembered[0]:
        raise ConfigError(_secret_failure_message(remembered[1], remembered[0] - now))
    from chalicelib import aws

    region = _raw("AWS_REGION") or _raw("AWS_DEFAULT_REGION") or "us-east-1"
    try:
        ssm = aws.client("ssm", region, max_attempts=SSM_MAX_ATTEMPTS,
                         connect_timeout=SSM_CONNECT_TIMEOUT, read_timeout=SSM_READ_TIMEOUT)
        response = ssm.get_parameter(Name=name, WithDecryption=True)
        value = response["Parameter"]["Value"]
    except Exception as exc:  # botocore errors, missing credentials, ...
        error = getattr(exc, "response", None)
        code = error.get("Error", {}).get("Code") if isinstance(error, dict) else None
        reason = f"{type(exc).__name__}: {code}" if code else type(exc).__name__
        _secret_failures[name] = (monotonic() + SECRET_FAILURE_MEMORY, reason)
        raise ConfigError(_secret_failure_message(reason, SECRET_FAILURE_MEMORY)) from None
    _secret_failures.pop(name, None)
    return value


def _secret_failure_message(reason: str, retry_in: float) -> str:
    return (f"PUSHER_SECRET_PARAMETER could not be read from SSM ({reason}); "
            f"next attempt in {max(1, round(retry_in))} s")


@functools.lru_cache(maxsize=None)
def pusher_settings() -> PusherSettings:
    """Load :class:`PusherSettings`.

    Raises:
        ConfigError: naming the variable that is missing or invalid.
    """
    secret = _raw("PUSHER_SECRET")
    parameter = _raw("PUSHER_SECRET_PARAMETER")
    if secret is None:
        if parameter is None:
            raise ConfigError("PUSHER_SECRET (or PUSHER_SECRET_PARAMETER) is required but not set")
        secret = _read_secret_parameter(parameter)

    master_key = None
    raw_key = _raw("PUSHER_ENCRYPTION_MASTER_KEY_BASE64")
    if raw_key is not None:
        try:
            master_key = base64.b64decode(raw_key, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("PUSHER_ENCRYPTION_MASTER_KEY_BASE64 must be base64") from None
        if len(master_key) != 32:
            raise ConfigError("PUSHER_ENCRYPTION_MASTER_KEY_BASE64 must decode to 32 bytes")

    app_id = _required("PUSHER_APP_ID")
    if not app_id.isascii() or not app_id.isdigit():
        raise ConfigError("PUSHER_APP_ID must be the numeric Pusher app id")
    port = _raw("PUSHER_PORT")
    return PusherSettings(
        app_id=app_id,
        key=_required("PUSHER_KEY"),
        secret=secret,
        cluster=_raw("PUSHER_CLUSTER") or "mt1",
        host=_raw("PUSHER_HOST"),
        port=_int("PUSHER_PORT", 0, 1, 65535) if port is not None else None,
        ssl=_bool("PUSHER_SSL", True),
        encryption_master_key=master_key,
        presence_user_info_claims=_csv("PUSHER_PRESENCE_USER_INFO_CLAIMS") or ("name",),
    )


# --- WebSocket registry and push --------------------------------------------------------------

@dataclass(frozen=True)
class WebSocketSettings:
    """Connection registry and push settings.

    Attributes:
        connections_table: DynamoDB table (``CONNECTIONS_TABLE``, required when used).
        api_id, domain, stage: where the management API lives (``WEBSOCKET_API_ID`` or
            ``WEBSOCKET_DOMAIN``, ``WEBSOCKET_STAGE`` default the app stage).
        endpoint_url: explicit management endpoint (``WEBSOCKET_ENDPOINT_URL``), for local
            gateways: Chalice ignores ``AWS_ENDPOINT_URL``.
        region: ``AWS_REGION`` (default ``us-east-1``).
        push_max_workers: posts in flight at once in a fan-out, one keep-alive connection each
            (``PUSH_MAX_WORKERS``, default 256).
        push_max_attempts: attempts per post on throttling/5xx (``PUSH_MAX_ATTEMPTS``, default 4).
        api_name: the WebSocket API's name (``WEBSOCKET_API_NAME``, default
            ``realtime-<STAGE>-websocket-api``, the name ``chalice deploy`` gives it), looked
            up when none of ``WEBSOCKET_ENDPOINT_URL``, ``WEBSOCKET_API_ID``,
            ``WEBSOCKET_DOMAIN`` is set.
        client_event_rate_limit: client events one connection may publish per second
            (``CLIENT_EVENT_RATE_LIMIT``, default 10: Pusher's limit, "Events" docs).
        client_event_max_bytes: largest ``data`` of a client event, bytes of its UTF-8 text
            (a string as sent, anything else as compact JSON) (``CLIENT_EVENT_MAX_BYTES``,
            default 10,240: Pusher's 10 KB message size limit; 1..131,072).
        push_throttle_seconds: how long a fan-out keeps waiting out throttling (429) without
            counting attempts, seconds (``PUSH_THROTTLE_WAIT_SECONDS``, default 10, 0..600).
        push_shard_threshold: audiences larger than this many connections are sharded
            through the push queue (``PUSH_SHARD_THRESHOLD``, default 2,000, 1..1,000,000).
        push_shard_size: connection ids per shard at most (``PUSH_SHARD_SIZE``, default
            1,000, 1..5,000; fewer when the frame is large: a shard is one SQS message).
    """

    connections_table: str
    api_id: Optional[str]
    domain: Optional[str]
    stage: str
    endpoint_url: Optional[str]
    region: str
    push_max_workers: int
    push_max_attempts: int
    api_name: str
    client_event_rate_limit: int = 10
    client_event_max_bytes: int = 10240
    push_throttle_seconds: int = 10
    push_shard_threshold: int = 2000
    push_shard_size: int = 1000


@functools.lru_cache(maxsize=None)
def websocket_settings() -> WebSocketSettings:
    """Load :class:`WebSocketSettings`. Raises ConfigError naming a bad variable."""
    return WebSocketSettings(
        connections_table=_required("CONNECTIONS_TABLE"),
        api_id=_raw("WEBSOCKET_API_ID"),
        domain=_raw("WEBSOCKET_DOMAIN"),
        stage=_raw("WEBSOCKET_STAGE") or app_settings().stage,
        endpoint_url=_raw("WEBSOCKET_ENDPOINT_URL"),
        region=_raw("AWS_REGION") or _raw("AWS_DEFAULT_REGION") or "us-east-1",
        push_max_workers=_int("PUSH_MAX_WORKERS", 256, 1, 256),
        push_max_attempts=_int("PUSH_MAX_ATTEMPTS", 4, 1, 10),
        api_name=_raw("WEBSOCKET_API_NAME")
        or f"realtime-{app_settings().stage}-websocket-api",
        client_event_rate_limit=_int("CLIENT_EVENT_RATE_LIMIT", 10, 1, 1000),
        client_event_max_bytes=_int("CLIENT_EVENT_MAX_BYTES", 10240, 1, 131072),
        push_throttle_seconds=_int("PUSH_THROTTLE_WAIT_SECONDS", 10, 0, 600),
        push_shard_threshold=_int("PUSH_SHARD_THRESHOLD", 2000, 1, 1_000_000),
        push_shard_size=_int("PUSH_SHARD_SIZE", 1000, 1, 5000),
    )


# --- event history (replay after a reconnect) ---------------------------------------------------

@dataclass(frozen=True)
class HistorySettings:
    """How long published events are kept for clients that reconnect
    (:mod:`chalicelib.registry.history`).

    Attributes:
        window_seconds: ``HISTORY_WINDOW_SECONDS`` (default 120, 0..3600; 0 turns history
            off): an event is kept this long after its publication.
        max_events: ``HISTORY_MAX_EVENTS`` (default 100, 1..10000): a client that missed more
            than this many events of one stream is told its resume failed instead of getting
            them.
        channel_prefixes: ``HISTORY_CHANNEL_PREFIXES``, comma-separated (default: every
            channel; ``none``: no channel): channels whose name starts with one of them keep
            history.
        users: ``HISTORY_USERS`` (default true): events to users (``send_to_user``,
            ``POST /notifications`` to a user, queue jobs to a user) keep history.
    """

    window_seconds: int = 120
    max_events: int = 100
    channel_prefixes: Tuple[str, ...] = ("",)
    users: bool = True

    def keeps_channel(self, channel_name: str) -> bool:
        """True when events published on ``channel_name`` get ids and are kept."""
        return self.window_seconds > 0 and any(channel_name.startswith(prefix)
                                               for prefix in self.channel_prefixes)

    def keeps_users(self) -> bool:
        """True when events to users get ids and are kept."""
        return self.window_seconds > 0 and self.users


@functools.lru_cache(maxsize=None)
def history_settings() -> HistorySettings:
    """Load :class:`HistorySettings`. Raises ConfigError naming a bad variable."""
    prefixes = _csv("HISTORY_CHANNEL_PREFIXES")
    if prefixes == ("none",):
        prefixes = ()
    elif not prefixes:
        prefixes = ("",)
    return HistorySettings(
        window_seconds=_int("HISTORY_WINDOW_SECONDS", 120, 0, 3600),
        max_events=_int("HISTORY_MAX_EVENTS", 100, 1, 10000),
        channel_prefixes=prefixes,
        users=_bool("HISTORY_USERS", True),
    )


# --- the Pusher dialect of the WebSocket API ---------------------------------------------------

@dataclass(frozen=True)
class PusherSocketSettings:
    """Settings of the Pusher protocol 7 dialect of the WebSocket API
    (:mod:`chalicelib.dialects.pusher.socket`).

    Attributes:
        enabled: ``PUSHER_DIALECT`` (default false): pusher-js clients (``protocol=7`` in the
            query string) may connect anonymously; off, such a ``$connect`` is judged as a
            native one (a JWT is required).
        hello_function: ``PUSHER_HELLO_FUNCTION``, the Lambda function ``$connect`` invokes
            asynchronously to send ``pusher:connection_established`` (default
            ``realtime-<STAGE>-pusher_hello``, the name ``chalice deploy`` gives
            ``@app.lambda_function(name="pusher_hello")``).
        presence_max_members: ``PUSHER_PRESENCE_MAX_MEMBERS`` (default 100, Pusher's limit per
            presence channel; 1..10000).
    """

    enabled: bool
    hello_function: str
    presence_max_members: int = 100


@functools.lru_cache(maxsize=None)
def pusher_socket_settings() -> PusherSocketSettings:
    """Load :class:`PusherSocketSettings`. Raises ConfigError naming a bad variable."""
    return PusherSocketSettings(
        enabled=_bool("PUSHER_DIALECT", False),
        hello_function=_raw("PUSHER_HELLO_FUNCTION")
        or f"realtime-{app_settings().stage}-pusher_hello",
        presence_max_members=_int("PUSHER_PRESENCE_MAX_MEMBERS", 100, 1, 10000),
    )


def push_queue_name() -> str:
    """The SQS queue the push worker listens to: ``PUSH_QUEUE_NAME``, default
    ``realtime-push-<STAGE>`` with ``STAGE``'s own default (:data:`DEFAULT_STAGE`, ``prod``).

    Read at import time by app.py's ``on_sqs_message`` decorator — in a deployed Lambda, and in
    the ``chalice deploy``/``chalice package`` process, which builds the event source from it
    with that process's environment (not the stage's ``environment_variables``). Never raises,
    so importing ``app`` cannot fail: an unknown ``STAGE`` is reported by :func:`app_settings`.
    """
    return _raw("PUSH_QUEUE_NAME") or f"realtime-push-{_raw('STAGE') or DEFAULT_STAGE}"


# --- observability ------------------------------------------------------------------------------

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class ObservabilitySettings:
    """Logs and metrics (:mod:`chalicelib.observability`).

    Attributes:
        log_level: ``POWERTOOLS_LOG_LEVEL``: one of :data:`LOG_LEVELS` (default ``INFO``).
        metrics_namespace: ``POWERTOOLS_METRICS_NAMESPACE``: the CloudWatch namespace of the
            service's metrics (default ``Realtime/<STAGE>``).
        problems: what was wrong with the variables (an invalid level falls back to ``INFO``:
            logging must start even with a bad setting); logged once at start.
    """

    log_level: str
    metrics_namespace: str
    problems: Tuple[str, ...] = ()


def default_metrics_namespace(stage: str) -> str:
    """The CloudWatch namespace of a stage's metrics when ``POWERTOOLS_METRICS_NAMESPACE`` is
    unset: ``Realtime/<stage>`` (infra's dashboard and alarms use the same rule)."""
    return f"Realtime/{stage}"


@functools.lru_cache(maxsize=None)
def observability_settings() -> ObservabilitySettings:
    """Load :class:`ObservabilitySettings`. Never raises (read while importing ``app``)."""
    problems = []
    level = (_raw("POWERTOOLS_LOG_LEVEL") or "INFO").upper()
    if level not in LOG_LEVELS:
        problems.append("POWERTOOLS_LOG_LEVEL must be one of " + ", ".join(LOG_LEVELS)
                        + "; using INFO")
        level = "INFO"
    namespace = _raw("POWERTOOLS_METRICS_NAMESPACE") or \
        default_metrics_namespace(_raw("STAGE") or DEFAULT_STAGE)
    return ObservabilitySettings(log_level=level, metrics_namespace=namespace,
                                 problems=tuple(problems))


#: cached loaders of other settings modules (:mod:`chalicelib.webhook_settings`), cleared by
#: :func:`reset` too; each adds itself when imported
OTHER_LOADERS: list = []


def reset() -> None:
    """Forget every cached section (tests; Chalice's test client switching stages)."""
    for loader in (app_settings, jwt_settings, pusher_settings, websocket_settings,
                   pusher_socket_settings, observability_settings, history_settings,
                   *OTHER_LOADERS):
        loader.cache_clear()
    _secret_failures.clear()
