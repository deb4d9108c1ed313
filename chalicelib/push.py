"""Server push to WebSocket connections through API Gateway's management API (PostToConnection).

Every frame the service sends goes through here — pushes from APIs and the SQS worker, and the
replies inside WebSocket handlers (pong, error frames, echo): a ``$default`` route's return
value is only delivered when route responses are configured, and Chalice's own
``websocket_api.send`` builds ``https://{domainName}/{stage}``, which cannot reach a local
gateway.

Delivery rules (AWS docs, "Use @connections commands in your backend service" and the
``PostToConnection`` API reference):

* a frame is at most :data:`MAX_FRAME_BYTES` (128 KB, API Gateway's WebSocket message payload
  quota); larger frames are refused with :class:`~chalicelib.errors.PayloadTooLarge` before
  anything is sent;
* ``GoneException`` (410): the connection is closed; its registry items (connection and
  subscriptions) are deleted and it counts as ``gone``;
* throttling (429, ``LimitExceededException``, ``TooManyRequestsException``), 5xx answers and
  network errors are retried with full-jitter exponential back-off (base
  :data:`BACKOFF_BASE_SECONDS`, cap :data:`BACKOFF_CAP_SECONDS`) up to ``PUSH_MAX_ATTEMPTS``
  attempts in all; then the post counts as ``failed`` and ``retryable``;
* other errors (403, 400 for an unknown connection id, ...) count as ``failed`` at once;
* fan-out runs on a thread pool of at most ``PUSH_MAX_WORKERS`` threads sharing one client
  whose HTTP pool has as many connections.

Every function returns a summary ``{"delivered": int, "gone": int, "failed": int,
"retryable": int}`` (``retryable`` counts the part of ``failed`` worth retrying later).

The management endpoint is ``WEBSOCKET_ENDPOINT_URL`` if set (local gateways: Chalice and this
module ignore ``AWS_ENDPOINT_URL``), else taken from the WebSocket event being handled, else
built from ``WEBSOCKET_API_ID`` or ``WEBSOCKET_DOMAIN`` with ``WEBSOCKET_STAGE`` and
``AWS_REGION``. boto3 is imported lazily.
"""
from __future__ import annotations

import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from chalicelib import aws, channels, connections
from chalicelib.errors import AppError, BadRequest, ConfigError, PayloadTooLarge
from chalicelib.principal import validate_user_id
from chalicelib.settings import websocket_settings

log = logging.getLogger("realtime.push")

#: API Gateway WebSocket message payload limit, bytes (AWS docs, "Amazon API Gateway quotas
#: for configuring and running a WebSocket API": "WebSocket frame size ... Message payload
#: size 128 KB")
MAX_FRAME_BYTES = 128 * 1024
#: first back-off ceiling and the largest one, seconds (full jitter: AWS Architecture Blog,
#: "Exponential Backoff And Jitter")
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 2.0

THROTTLING_CODES = frozenset({"LimitExceededException", "TooManyRequestsException",
                              "ThrottlingException", "Throttling", "ThrottledException"})

DELIVERED, GONE, FAILED, RETRYABLE = "delivered", "gone", "failed", "retryable"

Summary = Dict[str, int]


def empty_summary() -> Summary:
    """``{"delivered": 0, "gone": 0, "failed": 0, "retryable": 0}``."""
    return {DELIVERED: 0, GONE: 0, FAILED: 0, RETRYABLE: 0}


def merge(*summaries: Mapping[str, int]) -> Summary:
    """Add summaries key by key."""
    total = empty_summary()
    for summary in summaries:
        for key in total:
            total[key] += int(summary.get(key, 0))
    return total


# --- frames -----------------------------------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(text: Any) -> Any:
    """Parse client- or producer-supplied JSON strictly (RFC 8259: no ``NaN``/``Infinity``).

    Used for WebSocket frames, ``POST /notifications`` bodies and push-queue messages.

    Args:
        text: ``str`` or UTF-8 ``bytes``.
    Returns:
        the parsed value.
    Raises:
        ValueError: not valid JSON (``json.JSONDecodeError`` and non-UTF-8 bytes included).
    """
    return json.loads(text, parse_constant=_reject_constant)


def encode_frame(frame: Any) -> bytes:
    """The bytes posted for ``frame``.

    Args:
        frame: a JSON value (dict, list, ...) — encoded as compact UTF-8 JSON; ``str`` — sent
            as UTF-8 text as is; ``bytes`` — sent as is.
    Returns:
        the payload (at most :data:`MAX_FRAME_BYTES` bytes).
    Raises:
        PayloadTooLarge: the payload is over :data:`MAX_FRAME_BYTES`.
        TypeError, ValueError: ``frame`` is not JSON-serializable (NaN included): a
            programming error, since callers pass parsed JSON.
    """
    if isinstance(frame, bytes):
        data = frame
    elif isinstance(frame, str):
        data = frame.encode("utf-8")
    else:
        data = json.dumps(frame, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    if len(data) > MAX_FRAME_BYTES:
        raise PayloadTooLarge(
            f"frame is {len(data)} bytes; the WebSocket limit is {MAX_FRAME_BYTES} bytes")
    return data


# --- endpoint and client ----------------------------------------------------------------------

def _request_context(event: Any) -> Mapping[str, Any]:
    if event is None:
        return {}
    raw = event.to_dict() if hasattr(event, "to_dict") else event
    if not isinstance(raw, Mapping):
        return {}
    context = raw.get("requestContext")
    return context if isinstance(context, Mapping) else {}


def _execute_api_url(api_id: str, region: str, stage: str) -> str:
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://{api_id}.execute-api.{region}.{suffix}/{stage}"


def management_endpoint(event: Any = None) -> str:
    """The management API endpoint (no trailing slash) that PostToConnection is sent to.

    Args:
        event: the WebSocket event being handled (Chalice ``WebsocketEvent`` or its dict), or
            None outside a WebSocket handler.
    Returns:
        ``WEBSOCKET_ENDPOINT_URL`` when set; else, from the event,
        ``https://{domainName}/{stage}`` for an ``execute-api`` domain, or
        ``https://{apiId}.execute-api.{region}.amazonaws.com/{stage}`` when the client came in
        through a custom domain name (whose base path need not be the stage); else the same
        built from ``WEBSOCKET_API_ID`` or ``https://{WEBSOCKET_DOMAIN}/{WEBSOCKET_STAGE}``.
    Raises:
        ConfigError: none of these is available.
    """
    ws = websocket_settings()
    if ws.endpoint_url:
        return ws.endpoint_url.rstrip("/")
    context = _request_context(event)
    domain, stage, api_id = (context.get("domainName"), context.get("stage"),
                             context.get("apiId"))
    if isinstance(domain, str) and domain and isinstance(stage, str) and stage:
        if ".execute-api." in domain or not (isinstance(api_id, str) and api_id):
            return f"https://{domain}/{stage}"
        return _execute_api_url(api_id, ws.region, stage)
    if ws.api_id:
        return _execute_api_url(ws.api_id, ws.region, ws.stage)
    if ws.domain:
        return f"https://{ws.domain}/{ws.stage}"
    raise ConfigError("WEBSOCKET_API_ID, WEBSOCKET_DOMAIN or WEBSOCKET_ENDPOINT_URL is required "
                      "to push outside a WebSocket handler")


def management_client(endpoint: str):
    """A cached ``apigatewaymanagementapi`` client for ``endpoint`` (see :mod:`chalicelib.aws`).

    Its HTTP pool holds ``PUSH_MAX_WORKERS`` connections (botocore's default of 10 would
    serialize a larger fan-out) and botocore's own retries are off: :func:`_post` retries with
    jitter and counts attempts itself.
    """
    ws = websocket_settings()
    return aws.client("apigatewaymanagementapi", ws.region, endpoint_url=endpoint,
                      max_pool_connections=max(10, ws.push_max_workers), max_attempts=1)


def reset_clients() -> None:
    """Forget cached clients (tests; endpoint changes)."""
    aws.reset_clients()


# --- one post ---------------------------------------------------------------------------------

#: sleep function used between attempts (tests may replace it)
_sleep = time.sleep


def backoff_seconds(attempt: int) -> float:
    """Full-jitter delay after failed attempt number ``attempt`` (1-based), seconds:
    uniform in ``[0, min(cap, base * 2 ** (attempt - 1))]``."""
    return random.uniform(0, min(BACKOFF_CAP_SECONDS,
                                 BACKOFF_BASE_SECONDS * (2 ** (attempt - 1))))


def _classify(exc: Exception) -> str:
    """``GONE``, ``RETRYABLE`` or ``FAILED`` for an exception raised by PostToConnection."""
    from botocore.exceptions import (ClientError, ConnectionClosedError,
                                     EndpointConnectionError, ConnectTimeoutError,
                                     ReadTimeoutError)

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "GoneException" or status == 410:
            return GONE
        if code in THROTTLING_CODES or status == 429 or status >= 500:
            return RETRYABLE
        return FAILED
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError,
                        ReadTimeoutError)):
        return RETRYABLE
    return FAILED


def _post(client, connection_id: str, data: bytes, max_attempts: int) -> str:
    """Post one frame with retries; clean up a gone connection.

    Returns:
        ``DELIVERED``, ``GONE``, ``FAILED`` (permanent) or ``RETRYABLE`` (transient failure on
        every attempt). Never raises.
    """
    for attempt in range(1, max_attempts + 1):
        try:
            client.post_to_connection(ConnectionId=connection_id, Data=data)
            return DELIVERED
        except Exception as exc:  # classified below; nothing escapes a fan-out thread
            outcome = _classify(exc)
            reason = _reason(exc)
        if outcome == GONE:
            _forget(connection_id)
            return GONE
        if outcome == FAILED:
            log.warning("PostToConnection %s failed: %s", connection_id, reason)
            return FAILED
        if attempt < max_attempts:
            _sleep(backoff_seconds(attempt))
    log.warning("PostToConnection %s failed after %d attempts: %s",
                connection_id, max_attempts, reason)
    return RETRYABLE


def _reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code") or type(exc).__name__
    return type(exc).__name__


def _forget(connection_id: str) -> None:
    """Delete a gone connection and its subscriptions; a registry failure is only logged (TTL
    removes the items later)."""
    try:
        removed = connections.remove_connection(connection_id)
        log.info("connection %s is gone; removed %d registry items", connection_id, removed)
    except AppError as err:
        log.warning("connection %s is gone but could not be removed: %s", connection_id, err)


def _tally(outcomes: Iterable[str]) -> Summary:
    summary = empty_summary()
    for outcome in outcomes:
        if outcome == RETRYABLE:
            summary[FAILED] += 1
            summary[RETRYABLE] += 1
        else:
            summary[outcome] += 1
    return summary


# --- public API -------------------------------------------------------------------------------

def send_to_connections(connection_ids: Iterable[str], frame: Any, *,
                        event: Any = None) -> Summary:
    """Post one frame to many connections on a bounded thread pool.

    Args:
        connection_ids: target connection ids (duplicates and empty ids are dropped).
        frame: see :func:`encode_frame`.
        event: the WebSocket event being handled, if any (see :func:`management_endpoint`).
    Returns:
        the delivery summary.
    Raises:
        PayloadTooLarge: the frame is over 128 KB (nothing is sent).
        ConfigError: no management endpoint is configured.
    """
    data = encode_frame(frame)
    ids = [cid for cid in dict.fromkeys(connection_ids) if isinstance(cid, str) and cid]
    if not ids:
        return empty_summary()
    ws = websocket_settings()
    client = management_client(management_endpoint(event))
    attempts = ws.push_max_attempts
    workers = min(ws.push_max_workers, len(ids))
    if workers == 1:
        return _tally(_post(client, cid, data, attempts) for cid in ids)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="push") as pool:
        outcomes: List[str] = list(pool.map(lambda cid: _post(client, cid, data, attempts),
                                            ids))
    summary = _tally(outcomes)
    log.info("pushed to %d connections: %s", len(ids), summary)
    return summary


def send_to_connection(connection_id: str, frame: Any, *, event: Any = None) -> Summary:
    """Post one frame to one connection (see :func:`send_to_connections`; same errors)."""
    return send_to_connections([connection_id], frame, event=event)


def send_to_user(user_id: str, frame: Any, *, event: Any = None) -> Summary:
    """Post one frame to every live connection of a user (one registry Query, then fan-out).

    Raises:
        PayloadTooLarge: checked before the registry is read.
        RegistryUnavailable: the registry could not be read.
        ConfigError: no management endpoint is configured.
    """
    data = encode_frame(frame)
    return send_to_connections(connections.connections_of_user(user_id), data, event=event)


def publish_to_channel(channel_name: str, frame: Any, *, event: Any = None,
                       exclude: Optional[str] = None) -> Summary:
    """Post one frame to every live subscriber of a channel (one registry Query, then
    fan-out). The channel name is not judged here: callers authorize first.

    Args:
        exclude: a connection id left out (the sender of a client event, which Pusher never
            echoes: Pusher docs, "Events" -> "Triggering client events").

    Raises:
        PayloadTooLarge: checked before the registry is read.
        RegistryUnavailable: the registry could not be read.
        ConfigError: no management endpoint is configured.
    """
    data = encode_frame(frame)
    targets = [cid for cid in connections.subscribers_of_channel(channel_name)
               if cid != exclude]
    return send_to_connections(targets, data, event=event)


# --- notifications: the message shape shared by POST /notifications and the SQS worker --------

#: longest event name, characters (Pusher's limit for event names, "Events" docs)
MAX_EVENT_NAME_LENGTH = 200
TARGETS = ("connection_id", "user_id", "channel")


class Notification:
    """One message to deliver: ``{"<target>": ..., "event": str, "data": any JSON}``.

    Attributes:
        target: ``"connection_id"``, ``"user_id"`` or ``"channel"``.
        address: the connection id, user id or channel name.
        event: the event name (1-200 characters).
        data: any JSON value (None when absent).
    """

    __slots__ = ("target", "address", "event", "data")

    def __init__(self, target: str, address: str, event: str, data: Any) -> None:
        self.target, self.address, self.event, self.data = target, address, event, data

    def frame(self) -> Dict[str, Any]:
        """The frame subscribers receive: ``{"type": "event", "channel"?, "event", "data"}``
        (``channel`` only for channel messages)."""
        frame: Dict[str, Any] = {"type": "event"}
        if self.target == "channel":
            frame["channel"] = self.address
        frame.update(event=self.event, data=self.data)
        return frame


def validate_event_name(name: Any) -> str:
    """An event name: a non-empty string of at most :data:`MAX_EVENT_NAME_LENGTH` characters.

    Raises:
        BadRequest: otherwise (the message does not repeat the value).
    """
    if not isinstance(name, str) or not name:
        raise BadRequest('"event" must be a non-empty string')
    if len(name) > MAX_EVENT_NAME_LENGTH:
        raise BadRequest(f'"event" must be at most {MAX_EVENT_NAME_LENGTH} characters')
    return name


def parse_notification(body: Any, targets: Tuple[str, ...] = TARGETS) -> Notification:
    """Validate a notification body.

    Args:
        body: the parsed JSON body.
        targets: the target keys allowed here (``POST /notifications`` allows ``user_id`` and
            ``channel``; the SQS worker also ``connection_id``).
    Returns:
        a :class:`Notification`; channel names are checked with
        :func:`chalicelib.channels.validate_channel_name`, user ids with
        :func:`chalicelib.principal.validate_user_id`.
    Raises:
        BadRequest: not an object, not exactly one target, a bad target value or event name.
    """
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    present = [key for key in targets if key in body]
    if len(present) != 1:
        raise BadRequest("give exactly one of " + ", ".join(f'"{t}"' for t in targets))
    target = present[0]
    address = body[target]
    if target == "channel":
        address = channels.validate_channel_name(address)
        if channels.channel_kind(address) == channels.PRIVATE_ENCRYPTED:
            raise BadRequest("private-encrypted channels are only served through Pusher")
    elif target == "user_id":  # a user id (chalicelib.principal), within DynamoDB key limits
        address = validate_user_id(address)
    elif not isinstance(address, str) or not address or len(address) > 1024:
        raise BadRequest(f'"{target}" must be a non-empty string of at most 1024 characters')
    return Notification(target, address, validate_event_name(body.get("event")),
                        body.get("data"))


def deliver(notification: Notification, *, event: Any = None) -> Summary:
    """Deliver a :class:`Notification` to its connection, user or channel.

    Returns:
        the delivery summary.
    Raises:
        PayloadTooLarge: the frame is over 128 KB (nothing is sent).
        RegistryUnavailable, ConfigError: as :func:`send_to_user` / :func:`publish_to_channel`.
    """
    frame = notification.frame()
    if notification.target == "connection_id":
        return send_to_connection(notification.address, frame, event=event)
    if notification.target == "user_id":
        return send_to_user(notification.address, frame, event=event)
    return publish_to_channel(notification.address, frame, event=event)
