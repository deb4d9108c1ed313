"""Pusher's HTTP API (the "Channels HTTP API") on our REST API: server libraries (the Python
``pusher`` library, Laravel's Pusher broadcaster, ...) publish to our WebSocket API with only
their host and port changed.

Routes (see README, "Pusher HTTP API"):

* ``POST /apps/{app_id}/events`` — ``{"name", "data", "channels" | "channel", "socket_id"?,
  "info"?}``: one event to up to 100 channels; answers ``{}`` or ``{"channels": {...}}``;
* ``POST /apps/{app_id}/batch_events`` — ``{"batch": [event, ...]}``, at most 10 events;
  answers ``{}`` or ``{"batch": [{...}, ...]}``;
* ``GET /apps/{app_id}/channels`` — ``filter_by_prefix``, ``info``: occupied channels;
* ``GET /apps/{app_id}/channels/{channel_name}`` — ``info``: ``occupied``,
  ``subscription_count``, ``user_count``;
* ``GET /apps/{app_id}/channels/{channel_name}/users`` — presence channels: ``{"users":
  [{"id"}]}``;
* ``POST /apps/{app_id}/users/{user_id}/terminate_connections`` (and
  ``POST /users/{user_id}/terminate_connections``, the path the Python ``pusher`` library 3.3
  signs and sends) — closes every connection of the user.

Every request is signed as Pusher signs it (Pusher docs, "Server API: authenticating
requests"; :func:`verify_request`, pure). Errors answer ``{"error": code, "message": text}``
with Pusher's statuses: 400 bad request, 401 a failed signature check (the message says which
part), 404 another app id, 413 a body or an event too large, 503 the registry or a setting
unavailable; never a 5xx for anything a caller sends.

Delivery goes through the one push engine (:mod:`chalicelib.delivery.push`), so both dialects
(native and Pusher protocol 7) receive the events. Sources: Pusher docs, "HTTP API reference"; the
``pusher`` library (``pusher/http.py``: how requests are signed); soketi
``src/http-handler.ts`` as reference behaviour.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from chalicelib import channels, jsonutil
from chalicelib.dialects.pusher import auth
from chalicelib.protocol import pusher
from chalicelib.errors import (AppError, BadRequest, NotFound, json_response,
                               log_error)
from chalicelib.settings import pusher_settings

log = logging.getLogger("realtime.pusher_http")

#: a request's ``auth_timestamp`` may be this far from the server's clock, seconds (Pusher
#: docs, "Server API: authenticating requests": 600 s)
MAX_TIMESTAMP_SKEW_SECONDS = 600
#: the only ``auth_version`` Pusher defines
AUTH_VERSION = "1.0"
#: largest accepted request body, bytes: 10 events of the largest data a frame holds
MAX_BODY_BYTES = 2 * 1024 * 1024
#: channels one event may name (Pusher's limit)
MAX_CHANNELS_PER_EVENT = 100
#: events one batch may hold (Pusher's limit)
MAX_BATCH_EVENTS = 10
#: longest event name, characters (Pusher's limit)
MAX_EVENT_NAME_LENGTH = 200
#: the channel the ``pusher`` libraries' ``send_to_user`` triggers on (pusher-js's user facade
#: listens to it once signed in)
SERVER_TO_USER_PREFIX = pusher.USER_CHANNEL_PREFIX
#: ``info`` attributes of events and channel queries (Pusher docs, "HTTP API reference")
INFO_ATTRIBUTES = ("subscription_count", "user_count")
SIGNATURE_PARAMETER = "auth_signature"
#: COUNT Queries in flight at once when listing channels
COUNT_WORKERS = 16

_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}", re.ASCII)
_MD5_RE = re.compile(r"[0-9a-f]{32}", re.ASCII)


class SignatureRefused(AppError):
    """A request whose signature check failed (401). The message says which part failed
    (the server holding the secret is the only one who can read it usefully); it never
    quotes the secret or the given signature."""

    status = 401
    code = "unauthorized"
    public_message = "Unauthorized"
    expose_message = True


# --- signatures (pure) ------------------------------------------------------------------------

def string_to_sign(method: str, path: str, query: Mapping[str, str]) -> str:
    """Pusher's string to sign: ``METHOD\\nPATH\\nQUERY``, QUERY the parameters other than
    ``auth_signature``, keys lower-cased, sorted by key, joined as ``key=value`` with ``&``
    (values as given, not percent-encoded) — what ``pusher.http.Request`` signs.

    Args:
        method: ``GET`` or ``POST`` (upper-cased here).
        path: the request path the client signed (``/apps/1/events``).
        query: one value per (already lower-cased) parameter name.
    """
    from pusher.http import make_query_string  # the library's own canonical form

    params = {name: value for name, value in query.items() if name != SIGNATURE_PARAMETER}
    return "\n".join([method.upper(), path, make_query_string(params)])


def sign(secret: str, text: str) -> str:
    """HMAC-SHA256 of ``text`` with ``secret``, lower-case hex (``pusher.signature.sign``)."""
    from pusher.signature import sign as library_sign

    return library_sign(secret, text)


def single_values(query: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    """Query parameters as ``{lower-cased name: value}``.

    Args:
        query: ``{name: value}`` or ``{name: [values]}`` (Chalice's ``MultiDict`` is read
            with ``getlist``).
    Raises:
        BadRequest: a parameter given more than once (also in two letter cases), or a value
            that is not a string.
    """
    result: Dict[str, str] = {}
    if not query:
        return result
    for name in list(query.keys()):
        values = query.getlist(name) if hasattr(query, "getlist") else query[name]
        if not isinstance(values, (list, tuple)):
            values = [values]
        lowered = str(name).lower()
        if len(values) != 1 or lowered in result:
            raise BadRequest(f"query parameter {lowered[:40]} must be given once")
        if not isinstance(values[0], str):
            raise BadRequest(f"query parameter {lowered[:40]} must be a string")
        result[lowered] = values[0]
    return result


def verify_request(method: str, paths: Sequence[str], query: Mapping[str, str], body: bytes,
                   key: str, secret: str, *, now: Optional[float] = None) -> None:
    """Check a signed HTTP API request as Pusher does (Pusher docs, "Server API:
    authenticating requests").

    Checks, in order: ``auth_key`` is the app key; ``auth_timestamp`` (epoch seconds) within
    :data:`MAX_TIMESTAMP_SKEW_SECONDS` of ``now``; ``auth_version`` is ``1.0``; ``body_md5``
    (lower-case hex MD5 of the raw body) is present when there is a body and matches it
    whenever given; ``auth_signature`` equals :func:`sign` of :func:`string_to_sign` for one
    of ``paths`` (compared with ``hmac.compare_digest``).

    Args:
        method: the HTTP method.
        paths: the paths the client may have signed: the path as received (with a stage or
            base-path prefix on API Gateway) and the route's own ``/apps/...`` path.
        query: :func:`single_values` of the query string.
        body: the raw body (``b""`` for none).
        key, secret: ``PUSHER_KEY``, ``PUSHER_SECRET``.
        now: epoch seconds (defaults to the clock).
    Raises:
        SignatureRefused: (401) the first check that failed, named in the message.
    """
    for name in ("auth_key", "auth_timestamp", "auth_version", SIGNATURE_PARAMETER):
        if not query.get(name):
            raise SignatureRefused(f"Missing {name} parameter")
    if not hmac.compare_digest(query["auth_key"].encode("utf-8"), key.encode("utf-8")):
        raise SignatureRefused("Unknown auth_key")
    timestamp = query["auth_timestamp"]
    current = int(time.time() if now is None else now)
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise SignatureRefused("auth_timestamp must be epoch seconds")
    if abs(current - int(timestamp)) > MAX_TIMESTAMP_SKEW_SECONDS:
        raise SignatureRefused(
            f"Timestamp expired: Given timestamp ({int(timestamp)}) not within "
            f"{MAX_TIMESTAMP_SKEW_SECONDS}s of server time ({current})")
    if query["auth_version"] != AUTH_VERSION:
        raise SignatureRefused(f"auth_version must be {AUTH_VERSION}")
    given_md5 = query.get("body_md5")
    if body and not given_md5:
        raise SignatureRefused("Missing body_md5 parameter (MD5 hex of the body)")
    if given_md5 is not None:
        expected_md5 = hashlib.md5(body).hexdigest()
        if not _MD5_RE.fullmatch(given_md5) or not hmac.compare_digest(given_md5, expected_md5):
            raise SignatureRefused("body_md5 does not match the body")
    given = query[SIGNATURE_PARAMETER].encode("utf-8")
    texts = [string_to_sign(method, path, query) for path in dict.fromkeys(paths) if path]
    matched = False
    for text in texts:  # every candidate is compared: the time taken does not say which
        matched |= hmac.compare_digest(given, sign(secret, text).encode("ascii"))
    if not matched:
        shown = texts[-1].replace("\n", "\\n") if texts else ""
        raise SignatureRefused(
            f'Invalid signature: expected HMAC-SHA256 hex of "{shown[:600]}" with the app '
            "secret")


def request_paths(request) -> List[str]:
    """The paths a client may have signed for a Chalice request.

    * ``requestContext.path``: the path as the client sent it — ``/apps/1/events`` under
      ``chalice local`` and on a custom domain mapped without a base path, ``/{stage}/apps/...``
      on the ``execute-api`` URL, ``/{base path}/apps/...`` on a mapped custom domain;
    * the route's own path (``resourcePath`` with its parameters filled in): what a library
      signs that knows nothing of a prefix while something in front adds one.
    """
    context = getattr(request, "context", None) or {}
    paths = []
    sent = context.get("path")
    if isinstance(sent, str) and sent:
        paths.append(sent)
    resource = context.get("resourcePath") or getattr(request, "path", "") or ""
    for name, value in (getattr(request, "uri_params", None) or {}).items():
        resource = resource.replace("{" + name + "}", str(value))
    if resource:
        paths.append(resource)
    return list(dict.fromkeys(paths))


# --- requests ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One event of ``POST /events`` or of a batch.

    Attributes:
        name: 1-200 characters.
        data: the event's data text (Pusher's HTTP API carries data as a string).
        channels: 1-100 channel names; ``#server-to-user-<user id>`` names a user.
        socket_id: the connection left out (Pusher's ``socket_id`` exclusion), or None.
        info: the attributes asked for (:data:`INFO_ATTRIBUTES`).
    """

    name: str
    data: str
    channels: Tuple[str, ...]
    socket_id: Optional[str] = None
    info: Tuple[str, ...] = ()


def parse_info(value: Any) -> Tuple[str, ...]:
    """An ``info`` value: comma-separated attributes of :data:`INFO_ATTRIBUTES`.

    Raises:
        BadRequest: not a string, or an attribute this API does not know.
    """
    if value is None or value == "":
        return ()
    if not isinstance(value, str):
        raise BadRequest("info must be a comma-separated string")
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [name for name in names if name not in INFO_ATTRIBUTES]
    if unknown:
        raise BadRequest("info attributes are " + ", ".join(INFO_ATTRIBUTES))
    return names


def validate_channel(name: Any) -> str:
    """A channel of an event: a channel name (:func:`chalicelib.channels.validate_channel_name`)
    or ``#server-to-user-<user id>``.

    Raises:
        BadRequest: anything else.
    """
    if isinstance(name, str) and name.startswith(SERVER_TO_USER_PREFIX):
        from chalicelib.auth.principal import validate_user_id

        validate_user_id(name[len(SERVER_TO_USER_PREFIX):], "channel's user id")
        return name
    return channels.validate_channel_name(name)


def parse_event(body: Any) -> Event:
    """An event object (``POST /events`` body, or one entry of a batch).

    Args:
        body: ``{"name", "data", "channels": [...] | "channel": str, "socket_id"?,
            "info"?}``.
    Raises:
        BadRequest: not an object, a missing or invalid field, both ``channel`` and
            ``channels``, more than :data:`MAX_CHANNELS_PER_EVENT` channels, a data that is
            not a string, an unknown ``info`` attribute.
    """
    if not isinstance(body, dict):
        raise BadRequest("an event must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest('"name" must be a non-empty string')
    if len(name) > MAX_EVENT_NAME_LENGTH:
        raise BadRequest(f'"name" must be at most {MAX_EVENT_NAME_LENGTH} characters')
    data = body.get("data")
    if not isinstance(data, str):
        raise BadRequest('"data" must be a string (JSON-encode objects, as Pusher\'s '
                         "libraries do)")
    if "channels" in body and "channel" in body:
        raise BadRequest('give "channels" or "channel", not both')
    names = body["channels"] if "channels" in body else (
        [body["channel"]] if "channel" in body else None)
    if not isinstance(names, list) or not names:
        raise BadRequest('"channels" must be a non-empty list of channel names')
    if len(names) > MAX_CHANNELS_PER_EVENT:
        raise BadRequest(f"at most {MAX_CHANNELS_PER_EVENT} channels per event")
    checked = tuple(dict.fromkeys(validate_channel(n) for n in names))
    socket_id = body.get("socket_id")
    if socket_id is not None:
        from chalicelib.dialects.pusher.auth import validate_socket_id

        socket_id = validate_socket_id(socket_id)
    return Event(name=name, data=data, channels=checked, socket_id=socket_id,
                 info=parse_info(body.get("info")))


# --- answers ----------------------------------------------------------------------------------

def _json(body: Any, status: int = 200):
    import json

    from chalice import Response

    return Response(body=json.dumps(body, separators=(",", ":")), status_code=status,
                    headers={"Content-Type": "application/json", "Cache-Control": "no-store"})


def authenticate(request, app_id: Optional[str]) -> Tuple[Dict[str, str], bytes]:
    """Check the app id and the request's signature.

    Args:
        request: the Chalice request.
        app_id: the ``{app_id}`` of the path, or None for a route without one.
    Returns:
        ``(query, body)``: :func:`single_values` of the query, the raw body.
    Raises:
        NotFound: (404) another app id.
        PayloadTooLarge: (413) a body over :data:`MAX_BODY_BYTES`.
        BadRequest: a repeated query parameter.
        SignatureRefused: (401) see :func:`verify_request`.
        ConfigError: (503) the ``PUSHER_*`` settings are missing or invalid.
    """
    config = pusher_settings()
    if app_id is not None and not hmac.compare_digest(app_id.encode("utf-8"),
                                                      config.app_id.encode("utf-8")):
        raise NotFound(f"The app {app_id[:40]} could not be found")
    body = auth.raw_body(request, MAX_BODY_BYTES)
    query = single_values(request.query_params)
    verify_request(request.method, request_paths(request), query, body, config.key,
                   config.secret)
    return query, body


def _json_body(body: bytes) -> Any:
    try:
        return jsonutil.loads(body)
    except jsonutil.JSONRejected as err:
        raise BadRequest(f"request body is not valid JSON: {err.reason}") from None


def handle(request, where: str, work, *args):
    """Run ``work(request, *args)`` and turn every :class:`AppError` into its JSON answer
    (logged by :func:`chalicelib.errors.log_error`); anything unexpected is logged and
    answered 500 ``internal_error``."""
    try:
        return _json(work(request, *args))
    except AppError as err:
        log_error(err, where)
        return json_response(err, {"Cache-Control": "no-store"})
    except Exception:  # a bug: logged with its traceback, answered without details
        log.exception("%s: unexpected failure", where)
        return json_response(AppError("unexpected failure"), {"Cache-Control": "no-store"})


# --- events -----------------------------------------------------------------------------------

def event_frame(event: Event, channel: Optional[str]) -> Dict[str, Any]:
    """The frame subscribers receive (:func:`chalicelib.delivery.push.encode_for` turns it into
    each dialect's form): ``{"type": "event", "channel"?, "event", "data"}``, ``data`` the text
    the server library sent, relayed as it is (encrypted channels' payloads included)."""
    frame: Dict[str, Any] = {"type": "event"}
    if channel is not None:
        frame["channel"] = channel
    frame.update(event=event.name, data=event.data)
    return frame


def _excluded(socket_id: Optional[str]) -> Optional[str]:
    """The connection id of a ``socket_id``
    (:func:`chalicelib.protocol.pusher.connection_id_for`); None when there is none, or
    it is not one of ours (then no connection of ours has it)."""
    if not socket_id:
        return None
    try:
        return pusher.connection_id_for(socket_id)
    except ValueError:
        return None


def check_size(event: Event) -> None:
    """Refuse an event whose frame would not fit a WebSocket message in either dialect.

    The rule: ``data`` may be as large as the frame holds — 128 KB (API Gateway's WebSocket
    message quota, :data:`chalicelib.delivery.post.MAX_FRAME_BYTES`) once encoded for the longest
    of its channels, in both the native and the Pusher form (the Pusher form carries ``data`` as an
    escaped JSON string, so it is the larger). Pusher itself stops at 10 KB.

    Raises:
        PayloadTooLarge: (413) naming the limit.
    """
    from chalicelib.registry import connections
    from chalicelib.delivery import push

    longest = max(event.channels, key=len)
    for dialect in connections.DIALECTS:
        push.encode_for(dialect, event_frame(event, longest))


def publish(event: Event) -> None:
    """Deliver an event to every channel it names, leaving out ``socket_id``'s connection.

    A channel goes through :func:`chalicelib.delivery.push.publish_to_channel` (both dialects); a
    ``#server-to-user-<user id>`` channel reaches every connection of that user (native ones
    receive ``{"type": "event", "event", "data"}``, signed-in Pusher ones the event on
    ``#server-to-user-<user id>``, where pusher-js's user facade listens).

    Raises:
        PayloadTooLarge: see :func:`check_size` (checked before anything is sent).
        RegistryUnavailable, ConfigError: (503) the registry or the management endpoint.
    """
    from chalicelib.delivery import push

    check_size(event)
    exclude = _excluded(event.socket_id)
    for channel in event.channels:
        if channel.startswith(SERVER_TO_USER_PREFIX):
            # native connections get {"type": "event", "event", "data", "id"?}; signed-in
            # Pusher ones the event on #server-to-user-<user id> (push._user_frames)
            push.send_to_user(channel[len(SERVER_TO_USER_PREFIX):], event_frame(event, None),
                              exclude=exclude)
        else:
            push.publish_to_channel(channel, event_frame(event, channel), exclude=exclude,
                                    server_event=True)


def channel_attributes(channel: str, info: Iterable[str]) -> Dict[str, int]:
    """The ``info`` attributes of one channel: ``subscription_count`` (live subscriptions,
    one COUNT Query), ``user_count`` (distinct user ids of the subscribers; presence channels
    only, left out for others).

    Raises:
        RegistryUnavailable: (503).
    """
    from chalicelib.registry import listing

    answer: Dict[str, int] = {}
    for name in info:
        if name == "subscription_count":
            answer[name] = listing.count_subscribers(channel)
        elif name == "user_count" and channels.channel_kind(channel) == channels.PRESENCE:
            answer[name] = len(listing.channel_user_ids(channel))
    return answer


def _event_info(event: Event) -> Dict[str, Dict[str, int]]:
    return {channel: channel_attributes(channel, event.info) for channel in event.channels
            if not channel.startswith(SERVER_TO_USER_PREFIX)}


def trigger(request, app_id: str) -> Dict[str, Any]:
    """``POST /apps/{app_id}/events``: answers ``{}``, or ``{"channels": {name:
    {attributes}}}`` when ``info`` was asked for (Pusher docs, "HTTP API reference" ->
    "Events")."""
    _, body = authenticate(request, app_id)
    event = parse_event(_json_body(body))
    publish(event)
    return {"channels": _event_info(event)} if event.info else {}


def trigger_batch(request, app_id: str) -> Dict[str, Any]:
    """``POST /apps/{app_id}/batch_events``: ``{"batch": [{"channel", "name", "data",
    "socket_id"?, "info"?}, ...]}``, at most :data:`MAX_BATCH_EVENTS`; every event is checked
    before any is sent. Answers ``{}``, or ``{"batch": [{attributes}, ...]}`` (one entry per
    event, in order) when an event asked for ``info``."""
    _, body = authenticate(request, app_id)
    data = _json_body(body)
    batch = data.get("batch") if isinstance(data, dict) else None
    if not isinstance(batch, list) or not batch:
        raise BadRequest('"batch" must be a non-empty list of events')
    if len(batch) > MAX_BATCH_EVENTS:
        raise BadRequest(f"Cannot batch-send more than {MAX_BATCH_EVENTS} events at once")
    events = [parse_event(entry) for entry in batch]
    for event in events:
        check_size(event)
    for event in events:
        publish(event)
    if not any(event.info for event in events):
        return {}
    return {"batch": [next(iter(_event_info(event).values()), {}) if event.info else {}
                      for event in events]}


# --- users ------------------------------------------------------------------------------------

#: what a signed-in Pusher connection is told before its user's connections are terminated
#: (``pusher:error`` 4009, "Connection is unauthorized", Pusher docs, "Pusher Channels
#: Protocol"; the code and text soketi sends)
TERMINATED_CODE = pusher.UNAUTHORIZED_CONNECTION
TERMINATED_MESSAGE = "You got disconnected by the app."


def terminate_user_connections(request, app_id: Optional[str], user_id: str) -> Dict[str, Any]:
    """``POST /apps/{app_id}/users/{user_id}/terminate_connections`` (also without
    ``/apps/{app_id}``, as the Python ``pusher`` library 3.3 sends it): every connection of
    the user — native and signed-in Pusher ones — is closed with the management API's
    ``DELETE @connections/{id}`` and removed from the registry. Answers ``{}``.

    Pusher connections first get ``pusher:error`` ``{"code": 4009, "message": "You got
    disconnected by the app."}``, as soketi sends it, so the app's ``connection.bind('error')``
    learns why. The close itself carries no code (DeleteConnection has none), so pusher-js
    reconnects after a second; Pusher docs, "Terminating user connections": the user can
    reconnect unless the app refuses to authenticate them again.

    Raises:
        BadRequest: not a user id.
        RegistryUnavailable, ConfigError: (503).
    """
    from chalicelib.auth.principal import validate_user_id

    authenticate(request, app_id)
    validate_user_id(user_id)
    from chalicelib.registry import connections, subscriptions
    from chalicelib.delivery import push

    groups = subscriptions.connections_of_user_by_dialect(user_id)
    pusher_ids = groups.get(connections.PUSHER, [])
    if pusher_ids:
        push.send_by_dialect({connections.PUSHER: pusher_ids},
                             pusher.error(TERMINATED_MESSAGE, TERMINATED_CODE))
    for connection_id in [cid for ids in groups.values() for cid in ids]:
        close_connection(connection_id)
        connections.remove_connection(connection_id)
    return {}


def close_connection(connection_id: str) -> bool:
    """``DELETE @connections/{id}`` on the management API (API Gateway closes the socket and
    runs ``$disconnect``).

    Returns:
        True when closed, False when it was already gone (410).
    Raises:
        ConfigError: (503) no management endpoint.
        ManagementUnavailable: (503) any other management API failure.
    """
    from chalicelib import aws
    from chalicelib.delivery import post
    from chalicelib.settings import websocket_settings

    client = aws.client("apigatewaymanagementapi", websocket_settings().region,
                        endpoint_url=post.management_endpoint(), max_attempts=3,
                        connect_timeout=2, read_timeout=5)
    try:
        client.delete_connection(ConnectionId=connection_id)
    except Exception as exc:  # botocore errors
        response = getattr(exc, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        if code == "GoneException":
            return False
        raise ManagementUnavailable(
            f"DeleteConnection failed: {code or type(exc).__name__}") from None
    return True


class ManagementUnavailable(AppError):
    """API Gateway's management API refused or did not answer (503)."""

    status = 503
    code = "management_unavailable"
    public_message = "WebSocket management API unavailable"


# --- channel queries --------------------------------------------------------------------------

def _query_info(query: Mapping[str, str]) -> Tuple[str, ...]:
    return parse_info(query.get("info"))


def list_channels(request, app_id: str) -> Dict[str, Any]:
    """``GET /apps/{app_id}/channels``: occupied channels, ``{"channels": {name:
    {attributes}}}`` (Pusher docs, "HTTP API reference" -> "Channels").

    Query: ``filter_by_prefix`` (channel names starting with it), ``info``:
    ``subscription_count`` and ``user_count`` (the latter only with a ``presence-`` prefix,
    as Pusher). Listed from the registry's channel occupancy items (one Query per shard,
    :func:`chalicelib.registry.listing.occupied_channels`), each checked with one COUNT Query
    (:data:`COUNT_WORKERS` at a time), so a channel vacated an instant ago is not listed.

    Raises:
        BadRequest: an unknown ``info`` attribute; ``user_count`` without a ``presence-``
            prefix; a prefix outside the channel charset.
    """
    from chalicelib.registry import listing

    query, _ = authenticate(request, app_id)
    info = _query_info(query)
    prefix = query.get("filter_by_prefix", "")
    if prefix:
        channels.validate_channel_name(prefix)
    if "user_count" in info and not prefix.startswith("presence-"):
        raise BadRequest("user_count may only be requested for presence channels: "
                         "give filter_by_prefix=presence-")
    from concurrent.futures import ThreadPoolExecutor

    names = listing.occupied_channels(prefix)
    with ThreadPoolExecutor(max_workers=max(1, min(COUNT_WORKERS, len(names))),
                            thread_name_prefix="channel-count") as pool:
        counts = list(pool.map(listing.count_subscribers, names))
    listed: Dict[str, Any] = {}
    for name, count in zip(names, counts):
        if count == 0:
            continue
        attributes: Dict[str, int] = {}
        if "subscription_count" in info:
            attributes["subscription_count"] = count
        if "user_count" in info:
            attributes.update(channel_attributes(name, ("user_count",)))
        listed[name] = attributes
    return {"channels": listed}


def channel_info(request, app_id: str, channel_name: str) -> Dict[str, Any]:
    """``GET /apps/{app_id}/channels/{channel_name}``: ``{"occupied": bool,
    "subscription_count"?: n, "user_count"?: n}``, the counts when asked for in ``info``
    (``user_count``: presence channels only, else 400, as Pusher)."""
    from chalicelib.registry import listing

    query, _ = authenticate(request, app_id)
    channel = channels.validate_channel_name(channel_name)
    info = _query_info(query)
    if "user_count" in info and channels.channel_kind(channel) != channels.PRESENCE:
        raise BadRequest("user_count may only be requested for presence channels")
    count = listing.count_subscribers(channel)
    answer: Dict[str, Any] = {"occupied": count > 0}
    if "subscription_count" in info:
        answer["subscription_count"] = count
    if "user_count" in info:
        answer["user_count"] = len(listing.channel_user_ids(channel)) if count else 0
    return answer


def channel_users(request, app_id: str, channel_name: str) -> Dict[str, Any]:
    """``GET /apps/{app_id}/channels/{channel_name}/users``: ``{"users": [{"id": user id},
    ...]}`` of a presence channel (400 for any other kind, as Pusher): the distinct user ids
    of its live subscribers (:func:`chalicelib.registry.listing.channel_user_ids`)."""
    from chalicelib.registry import listing

    authenticate(request, app_id)
    channel = channels.validate_channel_name(channel_name)
    if channels.channel_kind(channel) != channels.PRESENCE:
        raise BadRequest("users may only be listed for presence channels")
    return {"users": [{"id": user_id} for user_id in listing.channel_user_ids(channel)]}
