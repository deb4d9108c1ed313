"""Pusher Channels endpoints: channel authorization (single, batch, JSONP), user sign-in, webhooks.

Every signature is made and checked by the ``pusher`` library (``Pusher.authenticate``,
``authenticate_user``, ``validate_webhook``); this module validates the input first, asks
:mod:`chalicelib.channels` who may join what, and shapes the answers pusher-js expects.

Routes (see README, "Pusher Channels"):

* ``POST /pusher/auth`` — form (pusher-js 8.x) or JSON: ``socket_id``, ``channel_name``;
  answers ``{"auth"}``, ``{"auth", "channel_data"}`` (presence) or ``{"auth", "shared_secret"}``
  (private-encrypted). With ``channel_name[0]``, ``channel_name[1]``… (npm ``pusher-js-auth``)
  answers ``{"<channel>": {"status": 200, "data": {...}}, "<other>": {"status": 403, ...}}``.
* ``GET /pusher/auth`` — JSONP (pusher-js ``channelAuthorization.transport: 'jsonp'``):
  ``/**/<callback>(<json>);`` as ``application/javascript``.
* ``POST /pusher/user-auth`` — ``socket_id``; answers ``{"auth", "user_data"}``.
* ``POST /pusher/webhooks`` — ``X-Pusher-Key``/``X-Pusher-Signature`` over the raw body, at most
  5 minutes old; events go to :mod:`chalicelib.delivery.webhooks`.

Every JSON body (auth requests, signed webhooks) is read with :func:`chalicelib.jsonutil.loads`,
the service's one strict reader; what it refuses is a 400 naming the reason.

Failures answer a JSON error ``{"error": code, "message": text}`` (chalicelib.errors) with
400/401/403/413/503 and the CORS headers, so a browser can read them. Protocol sources: Pusher
docs, "Authorizing users", "Authenticating users", "Encrypted channels", "Presence channels",
"Webhooks"; pusher-js 8.x ``src/core/auth`` and ``src/runtimes/web/auth/jsonp_auth.ts``.

Signing does no I/O and imports no AWS SDK (the ``pusher`` library is imported lazily, on the
first Pusher request, so other Lambdas sharing app.py do not pay for it).
"""
from __future__ import annotations

import base64
import functools
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qsl

from chalicelib import channels, jsonutil, observability
from chalicelib.delivery import webhooks as webhook_events
from chalicelib.errors import (AppError, BadRequest, ConfigError, Forbidden, PayloadTooLarge,
                               Unauthorized, json_response, log_error)
from chalicelib.auth.identity import authenticate_request
from chalicelib.auth.principal import Principal
from chalicelib.settings import PusherSettings, app_settings, pusher_settings

log = logging.getLogger("realtime.pusher")

#: socket ids are ``<digits>.<digits>`` (Pusher docs, "Authorizing users"); ASCII digits only
SOCKET_ID_RE = re.compile(r"[0-9]{1,32}\.[0-9]{1,32}", re.ASCII)
#: the callback name pusher-js's JSONP transport sends (src/runtimes/web/auth/jsonp_auth.ts)
PUSHER_JS_CALLBACK_RE = re.compile(r"Pusher\.auth_callbacks\['[0-9]{1,10}'\]", re.ASCII)
#: otherwise a plain dotted ASCII JavaScript identifier (``myApp.onPusherAuth``)
DOTTED_IDENTIFIER_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*",
                                  re.ASCII)
MAX_CALLBACK_LENGTH = 128
#: largest accepted request body (bytes): 100 channels of 164 characters, percent-encoded
MAX_BODY_BYTES = 64 * 1024
#: largest accepted webhook body (bytes)
MAX_WEBHOOK_BYTES = 1024 * 1024
#: channels per batch request (pusher-js-auth)
MAX_BATCH_CHANNELS = 100
#: form fields per request body
MAX_FORM_FIELDS = MAX_BATCH_CHANNELS + 50
#: ``user_info`` size limit in bytes of compact JSON (Pusher docs, "Presence channels": 1 KB)
MAX_USER_INFO_BYTES = 1024
#: user ids for user authentication: the channel charset, at most 200 characters (pusher
#: library ``validate_user_id``)
USER_ID_RE = re.compile(r"[A-Za-z0-9_\-=@,.;]{1,200}", re.ASCII)
ENCRYPTION_KEY_SETTING = "PUSHER_ENCRYPTION_MASTER_KEY_BASE64"

CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-Requested-With, X-CSRF-Token, X-Socket-ID"


# --- the pusher client --------------------------------------------------------------------------

class SignedBodyRefused(Exception):
    """A webhook whose key and signature are valid but whose body is not strict JSON.

    Deliberately not a ``ValueError``: ``Pusher.validate_webhook`` turns a ``ValueError`` from
    its JSON decoder into "invalid webhook" (``None``), which would report a correctly signed
    but malformed body as a bad signature (401) instead of a bad body (400).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StrictWebhookDecoder(json.JSONDecoder):
    """The ``json_decoder`` given to the ``pusher`` client: ``validate_webhook`` decodes the
    body only after checking key and signature, and decodes it with this class, so a signed
    body gets the one strict rule (:func:`chalicelib.jsonutil.loads`)."""

    def decode(self, s, *args, **kwargs):  # noqa: D102 (json.JSONDecoder API)
        try:
            return jsonutil.loads(s)
        except jsonutil.JSONRejected as err:
            raise SignedBodyRefused(err.reason) from None


@functools.lru_cache(maxsize=4)
def _client_for(config: PusherSettings):
    import pusher  # lazy: only Pusher routes pay for the import

    key_b64 = (base64.b64encode(config.encryption_master_key).decode("ascii")
               if config.encryption_master_key is not None else None)
    try:
        return pusher.Pusher(
            app_id=config.app_id, key=config.key, secret=config.secret,
            cluster=config.cluster, host=config.host, port=config.port, ssl=config.ssl,
            encryption_master_key_base64=key_b64, json_decoder=StrictWebhookDecoder)
    except (ValueError, TypeError) as exc:
        # the settings loader validates these already; the library's wording names no variable
        raise ConfigError(f"PUSHER_* settings rejected by the pusher library: {exc}",
                          public_message="PUSHER_* settings are invalid") from None


def pusher_client():
    """The ``pusher.Pusher`` client for the current :func:`pusher_settings` (cached).

    Raises:
        ConfigError: (503) a PUSHER_* variable is missing or invalid; the message names it.
    """
    return _client_for(pusher_settings())


# --- answers ------------------------------------------------------------------------------------

def cors_headers(methods: str = "POST, OPTIONS") -> Dict[str, str]:
    """CORS headers for the stage's ``CORS_ALLOW_ORIGIN`` (none when it is unset).

    Returns:
        ``Access-Control-Allow-Origin`` and friends; ``Vary: Origin`` unless the origin is ``*``.
        An invalid app setting gives no CORS headers (the route then answers its 503).
    """
    try:
        origin = app_settings().cors_allow_origin
    except ConfigError:
        return {}
    if not origin:
        return {}
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
        "Access-Control-Max-Age": "600",
    }
    if origin != "*":
        headers["Vary"] = "Origin"
    return headers


def _json_answer(body: Any, headers: Mapping[str, str], status: int = 200):
    from chalice import Response

    all_headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    all_headers.update(headers)
    return Response(body=json.dumps(body, separators=(",", ":")), status_code=status,
                    headers=all_headers)


def _error_answer(err: AppError, where: str, headers: Mapping[str, str]):
    log_error(err, where)
    return json_response(err, {"Cache-Control": "no-store", **headers})


def _unexpected(where: str, headers: Mapping[str, str]):
    log.exception("%s: unexpected failure", where)
    return json_response(AppError("unexpected failure"), {"Cache-Control": "no-store", **headers})


# --- request parsing ----------------------------------------------------------------------------

@dataclass(frozen=True)
class AuthRequest:
    """A parsed channel authorization request.

    Attributes:
        socket_id: validated ``<digits>.<digits>``.
        channel_names: requested names in request order, duplicates removed (not yet validated).
        batch: True for the pusher-js-auth shape (``channel_name[N]`` or a JSON list).
    """

    socket_id: str
    channel_names: Tuple[str, ...]
    batch: bool


def validate_socket_id(value: Any) -> str:
    """Check a Pusher ``socket_id`` (``^[0-9]+\\.[0-9]+$``, ASCII digits, each part ≤ 32 digits).

    Raises:
        BadRequest: missing, not a string, or malformed (the value is not echoed).
    """
    if value is None or value == "":
        raise BadRequest("socket_id is required")
    if not isinstance(value, str) or not SOCKET_ID_RE.fullmatch(value):
        raise BadRequest("socket_id must look like 1234.5678")
    return value


def _content_type(request) -> str:
    headers = request.headers or {}
    return (headers.get("content-type") or "").split(";")[0].strip().lower()


def raw_body(request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request's raw body as bytes (Chalice gives ``str`` or ``bytes``, or None).

    Raises:
        PayloadTooLarge: (413) over ``limit`` bytes.
    """
    raw = request.raw_body or b""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body must be at most {limit} bytes")
    return raw


def _body_fields(request) -> Dict[str, List[Any]]:
    """Read a form or JSON body into ``{name: [values...]}``.

    JSON bodies must be an object; each member becomes a one-element list (a JSON list value
    stays one value: ``channel_name: [...]`` is the JSON batch form).
    """
    raw = raw_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body must be UTF-8") from None
    kind = _content_type(request)
    is_json = kind == "application/json" or kind.endswith("+json") or (
        kind == "text/plain" and text.lstrip().startswith("{"))
    if is_json:
        try:
            data = jsonutil.loads(text)
        except jsonutil.JSONRejected as err:
            raise BadRequest(f"request body is not valid JSON: {err.reason}") from None
        if not isinstance(data, dict):
            raise BadRequest("request body must be a JSON object")
        return {str(name): [value] for name, value in data.items()}
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                          encoding="utf-8", errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except UnicodeDecodeError:
        raise BadRequest("form fields must be percent-encoded UTF-8") from None
    except ValueError:
        raise PayloadTooLarge(f"at most {MAX_FORM_FIELDS} form fields") from None
    fields: Dict[str, List[Any]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields


def _single(fields: Mapping[str, List[Any]], name: str) -> Any:
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"{name} must be given once")
    return values[0]


_BATCH_KEY_RE = re.compile(r"channel_name\[([0-9]{0,6})\]", re.ASCII)


def parse_auth_request(fields: Mapping[str, List[Any]]) -> AuthRequest:
    """Build an :class:`AuthRequest` from body fields (form or JSON, see :func:`_body_fields`).

    Accepted shapes: ``channel_name=x`` (pusher-js); ``channel_name[0]=a&channel_name[1]=b``
    (pusher-js-auth 4.x) or ``channel_name[]=…``; JSON ``{"channel_name": "x" | ["a", "b"]}``.
    Other fields (pusher-js ``params``) are ignored.

    Raises:
        BadRequest: a missing/malformed socket_id, no channel, both shapes at once, a repeated
            field, non-string names.
        PayloadTooLarge: more than :data:`MAX_BATCH_CHANNELS` channels.
    """
    socket_id = validate_socket_id(_single(fields, "socket_id"))
    single = _single(fields, "channel_name")
    indexed: List[Tuple[int, int, Any]] = []
    for order, (name, values) in enumerate(fields.items()):
        found = _BATCH_KEY_RE.fullmatch(name)
        if not found:
            continue
        if found.group(1):
            if len(values) > 1:
                raise BadRequest(f"{name} must be given once")
            indexed.append((int(found.group(1)), order, values[0]))
        else:  # channel_name[]=a&channel_name[]=b
            indexed.extend((10 ** 7 + i, order, value) for i, value in enumerate(values))
    if single is not None and indexed:
        raise BadRequest("give channel_name or channel_name[N], not both")
    if isinstance(single, list):  # JSON batch
        names, batch = single, True
    elif indexed:
        names, batch = [value for _, _, value in sorted(indexed, key=lambda t: (t[0], t[1]))], True
    elif single is None or single == "":
        raise BadRequest("channel_name is required")
    else:
        names, batch = [single], False
    if not names:
        raise BadRequest("channel_name is required")
    if len(names) > MAX_BATCH_CHANNELS:
        raise PayloadTooLarge(f"at most {MAX_BATCH_CHANNELS} channels per request")
    if not all(isinstance(name, str) for name in names):
        raise BadRequest("channel_name must be a string")
    unique = tuple(dict.fromkeys(names))
    return AuthRequest(socket_id=socket_id, channel_names=unique, batch=batch)


# --- signing ------------------------------------------------------------------------------------

def user_info(principal: Principal, claim_names: Tuple[str, ...]) -> Dict[str, Any]:
    """The ``user_info`` object from the principal's claims named in
    ``PUSHER_PRESENCE_USER_INFO_CLAIMS``, in that order, kept within
    :data:`MAX_USER_INFO_BYTES` of compact UTF-8 JSON: a claim that would overflow is left out
    (and logged by name), the others stay.

    Only claims the principal carries are available (chalicelib.auth.principal.SELECTED_CLAIMS).
    """
    info: Dict[str, Any] = {}
    for name in claim_names:
        if name not in principal.claims:
            continue
        candidate = dict(info)
        candidate[name] = principal.claims[name]
        size = len(json.dumps(candidate, separators=(",", ":"), ensure_ascii=False)
                   .encode("utf-8"))
        if size > MAX_USER_INFO_BYTES:
            log.warning("user_info claim %s left out: user_info would exceed %d bytes",
                        name, MAX_USER_INFO_BYTES)
            continue
        info = candidate
    return info


def presence_member(principal: Principal, config: PusherSettings) -> Dict[str, Any]:
    """The presence member signed into ``channel_data``:
    ``{"user_id": <the principal's user id>, "user_info": {...}}`` (user ids: see
    :mod:`chalicelib.auth.principal`)."""
    return {"user_id": principal.user_id,
            "user_info": user_info(principal, config.presence_user_info_claims)}


def sign_channel(principal: Principal, channel_name: Any, socket_id: str,
                 config: Optional[PusherSettings] = None) -> Dict[str, str]:
    """Authorize one channel subscription and sign it.

    Args:
        principal: the verified caller.
        channel_name: the requested channel (validated here).
        socket_id: an already validated socket id.
        config: Pusher settings (default :func:`pusher_settings`).
    Returns:
        ``{"auth"}`` (private), ``{"auth", "channel_data"}`` (presence; ``channel_data`` is the
        JSON text that was signed) or ``{"auth", "shared_secret"}`` (private-encrypted;
        ``shared_secret`` base64 text).
    Raises:
        BadRequest: an invalid name, or a public channel (they need no authorization).
        Forbidden: the channel rules say no.
        ConfigError: Pusher settings missing, or ``PUSHER_ENCRYPTION_MASTER_KEY_BASE64`` unset
            for a private-encrypted channel.
    """
    config = config or pusher_settings()
    grant = channels.authorize(principal, channel_name)
    if grant.kind == channels.PUBLIC:
        raise BadRequest("public channels need no authorization: subscribe without auth")
    if grant.kind == channels.PRIVATE_ENCRYPTED and config.encryption_master_key is None:
        raise ConfigError(f"{ENCRYPTION_KEY_SETTING} is not set: private-encrypted channels "
                          "are disabled on this deployment")
    client = _client_for(config)
    custom = presence_member(principal, config) if grant.kind == channels.PRESENCE else None
    try:
        signed = client.authenticate(channel=grant.channel_name, socket_id=socket_id,
                                     custom_data=custom)
    except (ValueError, TypeError) as exc:  # inputs are validated above: log, answer 400
        log.warning("pusher library refused to sign: %s", type(exc).__name__)
        raise BadRequest("cannot sign this subscription") from None
    answer = {"auth": signed["auth"]}
    if "channel_data" in signed:
        answer["channel_data"] = signed["channel_data"]
    if "shared_secret" in signed:
        secret = signed["shared_secret"]
        answer["shared_secret"] = secret.decode("ascii") if isinstance(secret, bytes) else secret
    return answer


def sign_user(principal: Principal, socket_id: str,
              config: Optional[PusherSettings] = None) -> Dict[str, str]:
    """Sign a pusher-js user sign-in: ``{"auth", "user_data"}`` where ``user_data`` is the JSON
    text ``{"id": <the principal's user id>, "user_info": {...}}`` that was signed.

    The user id always fits Pusher's user id rule (charset ``A-Z a-z 0-9 _ - = @ , . ;``, at
    most 200 characters: pusher library ``validate_user_id``), since
    :func:`chalicelib.auth.principal.make_user_id` escapes every other character and stays within
    141 characters; the check below only guards against a principal built by hand.

    Raises:
        Forbidden: the user id is not a valid Pusher user id.
        ConfigError: Pusher settings missing.
    """
    config = config or pusher_settings()
    if not USER_ID_RE.fullmatch(principal.user_id):
        raise Forbidden("user id is not a valid Pusher user id",
                        public_message="This account's user id cannot be used as a Pusher user "
                                       "id (allowed: A-Z a-z 0-9 _ - = @ , . ; up to 200)")
    client = _client_for(config)
    user_data = {"id": principal.user_id,
                 "user_info": user_info(principal, config.presence_user_info_claims)}
    try:
        signed = client.authenticate_user(socket_id=socket_id, user_data=user_data)
    except (ValueError, TypeError) as exc:
        log.warning("pusher library refused to sign a user: %s", type(exc).__name__)
        raise BadRequest("cannot sign this user") from None
    return {"auth": signed["auth"], "user_data": signed["user_data"]}


def _batch_entry(principal: Principal, name: str, socket_id: str,
                 config: PusherSettings) -> Dict[str, Any]:
    try:
        return {"status": 200, "data": sign_channel(principal, name, socket_id, config)}
    except AppError as err:
        log_error(err, "pusher.auth batch")
        observability.count("SubscriptionsRefused", dimension=err.code)
        return {"status": err.status, "error": err.body()}


# --- routes -------------------------------------------------------------------------------------

def _principal(request) -> Principal:
    principal = authenticate_request(request.headers, request.query_params)
    observability.set_fields(user_id=principal.user_id)
    return principal


def bind_socket(socket_id: str, user_id: str) -> None:
    """Tie the WebSocket connection of ``socket_id`` (when it is one of our Pusher dialect's)
    to the user whose JWT signed a subscription for it, so a reconnect of that user can resume
    what this connection misses (:mod:`chalicelib.dialects.pusher.resume`). One conditional
    UpdateItem; never fails the answer (a failure is logged)."""
    from chalicelib.protocol import pusher as protocol
    from chalicelib.registry import connections
    from chalicelib.settings import history_settings, pusher_socket_settings

    try:
        if not pusher_socket_settings().enabled or history_settings().window_seconds <= 0:
            return
        connections.bind_user(protocol.connection_id_for(socket_id), user_id)
    except ValueError:  # protocol.ProtocolError too
        return  # a socket of hosted Pusher or soketi: none of ours
    except AppError as err:
        log.warning("socket %s not tied to its user: %s", socket_id, err.code)


def channel_auth(request):
    """``POST /pusher/auth``: one channel (pusher-js) or a batch (pusher-js-auth).

    Returns:
        a Chalice ``Response``: 200 with the signed answer; 400 (malformed body, socket_id or
        channel_name; public channel), 401 (no valid token), 403 (rules), 413 (too large),
        503 (settings) with a JSON error. A batch answers 200 with one entry per channel.
    """
    headers = cors_headers()
    try:
        raw_body(request)  # size first: nothing else is read from an oversized body
        config = pusher_settings()
        principal = _principal(request)
        parsed = parse_auth_request(_body_fields(request))
        if parsed.batch:
            answer = {name: _batch_entry(principal, name, parsed.socket_id, config)
                      for name in parsed.channel_names}
        else:
            answer = sign_channel(principal, parsed.channel_names[0], parsed.socket_id, config)
        bind_socket(parsed.socket_id, principal.user_id)
        return _json_answer(answer, headers)
    except AppError as err:
        if isinstance(err, Forbidden):  # the channel rules said no
            observability.count("SubscriptionsRefused", dimension=err.code)
        return _error_answer(err, "pusher.auth", headers)
    except Exception:
        return _unexpected("pusher.auth", headers)


def user_auth(request):
    """``POST /pusher/user-auth``: pusher-js ``signin()``; body ``socket_id`` (form or JSON).

    Returns:
        200 ``{"auth", "user_data"}``; 400/401/403/413/503 JSON errors.
    """
    headers = cors_headers()
    try:
        raw_body(request)
        config = pusher_settings()
        principal = _principal(request)
        socket_id = validate_socket_id(_single(_body_fields(request), "socket_id"))
        return _json_answer(sign_user(principal, socket_id, config), headers)
    except AppError as err:
        return _error_answer(err, "pusher.user-auth", headers)
    except Exception:
        return _unexpected("pusher.user-auth", headers)


def preflight(request):
    """``OPTIONS`` on the POST routes: 204 with the stage's CORS headers."""
    from chalice import Response

    return Response(body="", status_code=204, headers=cors_headers())


# --- JSONP --------------------------------------------------------------------------------------

def valid_callback(value: Any) -> bool:
    """True for pusher-js's own ``Pusher.auth_callbacks['N']`` or a dotted ASCII identifier of
    at most :data:`MAX_CALLBACK_LENGTH` characters. Anything else is never written back."""
    if not isinstance(value, str) or not value or len(value) > MAX_CALLBACK_LENGTH:
        return False
    return bool(PUSHER_JS_CALLBACK_RE.fullmatch(value) or DOTTED_IDENTIFIER_RE.fullmatch(value))


def _js_json(value: Any) -> str:
    """JSON that is also safe inside a script: ASCII only, ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _js_answer(body: str, status: int):
    from chalice import Response

    return Response(body=body, status_code=status, headers={
        "Content-Type": "application/javascript; charset=utf-8",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    })


def _query_single(query, name: str) -> Any:
    if not query:
        return None
    getlist = getattr(query, "getlist", None)
    values = getlist(name) if getlist is not None and name in query else (
        [query[name]] if name in query else [])
    if len(values) > 1:
        raise BadRequest(f"{name} must be given once")
    return values[0] if values else None


def channel_auth_jsonp(request):
    """``GET /pusher/auth?callback=…&socket_id=…&channel_name=…&token=<jwt>`` (JSONP).

    Returns:
        ``application/javascript`` with ``X-Content-Type-Options: nosniff``:
        ``/**/<callback>(<json>);`` with status 200, or with the error's status (400/401/403/
        503) and the JSON error as argument. A missing or invalid callback (or a repeated one)
        is 400 with ``/**/throw new Error("…");`` and the callback is not echoed.
    """
    query = request.query_params
    try:
        callback = _query_single(query, "callback")
    except BadRequest:
        callback = None
    if not valid_callback(callback):
        err = BadRequest("callback must be Pusher.auth_callbacks['N'] or a dotted JavaScript "
                         f"identifier of at most {MAX_CALLBACK_LENGTH} characters")
        log_error(err, "pusher.auth jsonp")
        return _js_answer(f"/**/throw new Error({_js_json(err.public_message)});", err.status)
    try:
        config = pusher_settings()
        principal = _principal(request)
        socket_id = validate_socket_id(_query_single(query, "socket_id"))
        channel_name = _query_single(query, "channel_name")
        if channel_name is None or channel_name == "":
            raise BadRequest("channel_name is required")
        body, status = sign_channel(principal, channel_name, socket_id, config), 200
        bind_socket(socket_id, principal.user_id)
    except AppError as err:
        log_error(err, "pusher.auth jsonp")
        body, status = err.body(), err.status
    except Exception:
        log.exception("pusher.auth jsonp: unexpected failure")
        err = AppError("unexpected failure")
        body, status = err.body(), err.status
    return _js_answer(f"/**/{callback}({_js_json(body)});", status)


# --- webhooks -----------------------------------------------------------------------------------

def webhooks(request):
    """``POST /pusher/webhooks``: verify with ``Pusher.validate_webhook`` (key, HMAC-SHA256 of
    the raw body, ``time_ms`` within 5 minutes), then dispatch the events by name.

    Returns:
        200 ``{"received", "handled", "failed", "skipped"}``; 401 for a missing, wrong or stale
        signature (or a body it cannot cover); 400 when a signed body is not strict JSON (see
        :mod:`chalicelib.jsonutil`) or has no ``events`` list; 413 over
        :data:`MAX_WEBHOOK_BYTES`; 503 when Pusher settings are missing.
    """
    try:
        raw = raw_body(request, MAX_WEBHOOK_BYTES)
        client = pusher_client()
        headers = request.headers or {}
        key, signature = headers.get("x-pusher-key"), headers.get("x-pusher-signature")
        if not key or not signature:
            raise Unauthorized("webhook without X-Pusher-Key/X-Pusher-Signature")
        try:
            body = raw.decode("utf-8")
            data = client.validate_webhook(key=key, signature=signature, body=body)
        except SignedBodyRefused as err:
            raise BadRequest(f"webhook body is not valid JSON: {err.reason}") from None
        except Exception:  # undecodable body, non-ASCII signature, non-object JSON...
            data = None
        if data is None:
            raise Unauthorized("webhook key, signature or time_ms rejected")
        events = data.get("events")
        if not isinstance(events, list):
            raise BadRequest("webhook body has no events list")
        result = webhook_events.HANDLERS.dispatch(events, data.get("time_ms"))
        return _json_answer(result.to_json(), {})
    except AppError as err:
        return _error_answer(err, "pusher.webhooks", {})
    except Exception:
        return _unexpected("pusher.webhooks", {})
