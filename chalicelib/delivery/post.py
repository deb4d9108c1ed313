"""Posting frames to connection ids through API Gateway's management API (PostToConnection):
the endpoint, the sender, and the removal of gone connections.

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
* throttling (429, ``LimitExceededException``, ``TooManyRequestsException``) slows the
  sender down (:class:`chalicelib.delivery.sender.SendRate`: additive increase, multiplicative
  decrease) and the post is sent again after a full-jitter back-off, without using up an
  attempt for ``PUSH_THROTTLE_WAIT_SECONDS`` from the start of the fan-out;
* 5xx answers and network errors (and throttling after that) are retried with full-jitter
  exponential back-off (base :data:`BACKOFF_BASE_SECONDS`, cap :data:`BACKOFF_CAP_SECONDS`) up
  to ``PUSH_MAX_ATTEMPTS`` attempts in all; then the post counts as ``failed`` and
  ``retryable``;
* other errors (403, 400 for an unknown connection id, ...) count as ``failed`` at once;
* fan-out keeps at most ``PUSH_MAX_WORKERS`` posts in flight, one keep-alive connection each,
  all driven by the calling thread (:mod:`chalicelib.delivery.sender`: botocore's SigV4 signer over
  ``http.client``, ~0.1 ms of CPU per post instead of ~1 ms through a boto3 client).

Every function returns a summary ``{"delivered": int, "gone": int, "failed": int,
"retryable": int}`` (``retryable`` counts the part of ``failed`` worth retrying later);
:func:`chalicelib.delivery.push.deliver` adds ``"queued"`` and ``"shards"`` when it sharded a
large audience through the push queue (:mod:`chalicelib.delivery.shards`, over
``PUSH_SHARD_THRESHOLD`` connections).

The management endpoint is ``WEBSOCKET_ENDPOINT_URL`` if set (local gateways: Chalice and this
module ignore ``AWS_ENDPOINT_URL``), else taken from the WebSocket event being handled, else
built from ``WEBSOCKET_API_ID`` or ``WEBSOCKET_DOMAIN`` with ``WEBSOCKET_STAGE`` and
``AWS_REGION``, else from the id of the WebSocket API named ``WEBSOCKET_API_NAME``, looked up
once per process (:func:`discover_api_id`): a plain ``chalice deploy`` resets the functions'
environment and drops ``WEBSOCKET_API_ID``, and pushes must survive that. botocore is imported
at the first post, boto3 only by the registry and the lookup.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, Iterable, List, Optional, Tuple

from chalicelib import aws, jsonutil, observability
from chalicelib.delivery.sender import Sender
from chalicelib.delivery.summary import Summary, empty_summary, tally
from chalicelib.errors import AppError, ConfigError, PayloadTooLarge
from chalicelib.protocol.gateway import request_context
from chalicelib.registry import connections, departures
from chalicelib.settings import history_settings, websocket_settings

log = logging.getLogger("realtime.push")

#: API Gateway WebSocket message payload limit, bytes (AWS docs, "Amazon API Gateway quotas
#: for configuring and running a WebSocket API": "WebSocket frame size ... Message payload
#: size 128 KB")
MAX_FRAME_BYTES = 128 * 1024
#: threads removing gone connections from the registry while a fan-out goes on
CLEANUP_WORKERS = 8


# --- frames -----------------------------------------------------------------------------------

def load_json(text: Any) -> Any:
    """Parse client- or producer-supplied JSON: :func:`chalicelib.jsonutil.loads`, the one
    strict reader (kept here for callers of this name).

    Raises:
        chalicelib.jsonutil.JSONRejected: (a ``ValueError``) anything but strict JSON.
    """
    return jsonutil.loads(text)


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

def _execute_api_url(api_id: str, region: str, stage: str) -> str:
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://{api_id}.execute-api.{region}.{suffix}/{stage}"


#: bounds of the WebSocket API lookup (:func:`discover_api_id`): per-request timeouts and
#: attempts (seconds), the whole lookup's deadline, the pages of GetApis read at most, and how
#: long a failed lookup is remembered before the next one is tried
DISCOVERY_CONNECT_TIMEOUT = 1.0
DISCOVERY_READ_TIMEOUT = 2.0
DISCOVERY_MAX_ATTEMPTS = 2
DISCOVERY_DEADLINE_SECONDS = 5.0
DISCOVERY_MAX_PAGES = 20
DISCOVERY_RETRY_SECONDS = 30.0

_discovery_lock = threading.Lock()
#: (region, name) -> API id, found once per process (cold start)
_discovered: Dict[Tuple[str, str], str] = {}
#: (region, name) -> (monotonic time of the failure, the ConfigError message)
_discovery_failures: Dict[Tuple[str, str], Tuple[float, str]] = {}

_NO_ENDPOINT = ("set WEBSOCKET_API_ID, WEBSOCKET_DOMAIN or WEBSOCKET_ENDPOINT_URL to push "
                "outside a WebSocket handler")


def discover_api_id(name: str, region: str) -> str:
    """The id of the WebSocket API called ``name`` in ``region``, found with API Gateway V2
    ``GetApis`` (IAM: ``apigateway:GET`` on ``arn:{partition}:apigateway:{region}::/apis``)
    and cached for the life of the process; a failure is remembered for
    :data:`DISCOVERY_RETRY_SECONDS` so a burst of pushes does not repeat it.

    Bounded: each request times out after :data:`DISCOVERY_CONNECT_TIMEOUT` /
    :data:`DISCOVERY_READ_TIMEOUT` seconds with at most :data:`DISCOVERY_MAX_ATTEMPTS`
    attempts, the whole lookup stops after :data:`DISCOVERY_DEADLINE_SECONDS` or
    :data:`DISCOVERY_MAX_PAGES` pages.

    Args:
        name: the API's name (``WEBSOCKET_API_NAME``; ``chalice deploy`` names it
            ``<app>-<stage>-websocket-api``).
        region: the AWS region to look in.
    Returns:
        the API id (``ApiId``), e.g. ``"a1b2c3d4e5"``.
    Raises:
        ConfigError: no WebSocket API has that name, several do, or the lookup failed
            (access denied, no network, timeout); the message names the settings to set.
    """
    key = (region, name)
    found = _discovered.get(key)
    if found:
        return found
    with _discovery_lock:
        found = _discovered.get(key)
        if found:
            return found
        failure = _discovery_failures.get(key)
        if failure and time.monotonic() - failure[0] < DISCOVERY_RETRY_SECONDS:
            raise ConfigError(failure[1])
        try:
            found = _get_api_id(name, region)
        except ConfigError as exc:
            _discovery_failures[key] = (time.monotonic(), exc.public_message)
            raise
        _discovery_failures.pop(key, None)
        _discovered[key] = found
        log.info("management endpoint: WebSocket API %s is %s", name, found)
        return found


def _get_api_id(name: str, region: str) -> str:
    client = aws.client("apigatewayv2", region, max_attempts=DISCOVERY_MAX_ATTEMPTS,
                        connect_timeout=DISCOVERY_CONNECT_TIMEOUT,
                        read_timeout=DISCOVERY_READ_TIMEOUT)
    deadline = time.monotonic() + DISCOVERY_DEADLINE_SECONDS
    matches: List[str] = []
    token: Optional[str] = None
    complete = False
    for _ in range(DISCOVERY_MAX_PAGES):
        if time.monotonic() > deadline:
            break
        try:
            page = client.get_apis(**({"NextToken": token} if token else {}))
        except Exception as exc:  # ClientError, timeouts, no credentials, no network
            response = getattr(exc, "response", None)
            reason = (response.get("Error", {}).get("Code") if isinstance(response, dict)
                      else None) or type(exc).__name__
            log.warning("management endpoint: looking up WebSocket API %s failed (%s)",
                        name, reason)
            raise ConfigError(f"WEBSOCKET_API_ID is not set and the WebSocket API {name} "
                              f"could not be looked up ({reason}): {_NO_ENDPOINT}") from None
        matches += [item["ApiId"] for item in page.get("Items", [])
                    if item.get("Name") == name and item.get("ProtocolType") == "WEBSOCKET"]
        token = page.get("NextToken")
        if not token:
            complete = True
            break
    if not complete and not matches:
        raise ConfigError(f"WEBSOCKET_API_ID is not set and the lookup of the WebSocket API "
                          f"{name} did not finish: {_NO_ENDPOINT}")
    if len(matches) != 1:
        what = "is no WebSocket API" if not matches else \
            f"are {len(matches)} WebSocket APIs"
        raise ConfigError(f"WEBSOCKET_API_ID is not set and there {what} named {name} in "
                          f"{region}: {_NO_ENDPOINT} (or WEBSOCKET_API_NAME)")
    return matches[0]


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
        built from ``WEBSOCKET_API_ID`` or ``https://{WEBSOCKET_DOMAIN}/{WEBSOCKET_STAGE}``;
        else built from the id of the API named ``WEBSOCKET_API_NAME``
        (:func:`discover_api_id`, once per process).
    Raises:
        ConfigError: none of these is available (the lookup found no API or failed).
    """
    ws = websocket_settings()
    if ws.endpoint_url:
        return ws.endpoint_url.rstrip("/")
    context = request_context(event)
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
    return _execute_api_url(discover_api_id(ws.api_name, ws.region), ws.region, ws.stage)


_senders: Dict[Tuple[str, str, int], Sender] = {}
_senders_lock = threading.Lock()


def management_client(endpoint: str) -> Sender:
    """The cached :class:`~chalicelib.delivery.sender.Sender` for ``endpoint`` (one per endpoint,
    region and ``PUSH_MAX_WORKERS``): keep-alive connections and signing keys survive between
    invocations of a warm function.

    It keeps up to ``PUSH_MAX_WORKERS`` posts in flight; connect timeout 2 s, read timeout
    5 s per answer; retries are :func:`send_to_connections`'s (``PUSH_MAX_ATTEMPTS``).
    """
    ws = websocket_settings()
    key = (endpoint, ws.region, ws.push_max_workers)
    found = _senders.get(key)
    if found is None:
        with _senders_lock:
            found = _senders.get(key)
            if found is None:
                found = _senders[key] = Sender(endpoint, ws.region,
                                               max_connections=ws.push_max_workers,
                                               connect_timeout=2.0, read_timeout=5.0)
    return found


def reset_clients() -> None:
    """Forget cached clients, the looked-up API id, senders (closing their connections) and
    credentials (tests; endpoint or credential changes)."""
    aws.reset_clients()
    with _discovery_lock:
        _discovered.clear()
        _discovery_failures.clear()
    with _senders_lock:
        senders = list(_senders.values())
        _senders.clear()
    for sender in senders:
        sender.close()
    signing = sys.modules.get("chalicelib.delivery.signing")
    if signing is not None:
        signing.reset()


# --- delivery ---------------------------------------------------------------------------------

#: sleep function used between attempts when nothing else is in flight (tests may replace it)
_sleep = time.sleep


#: ``(channel name, event id)`` of a fan-out's event, noted for a connection whose post came
#: back 410 (:func:`chalicelib.registry.departures.note_gone`)
GoneNote = Tuple[str, int]


def _forget(connection_id: str, gone_note: Optional[GoneNote] = None) -> None:
    """Delete a gone connection and its subscriptions; a registry failure is only logged (TTL
    removes the items later). With ``gone_note``, first note that the connection never got
    that event of that channel (a reconnecting Pusher client of the same user gets it)."""
    if gone_note is not None:
        try:
            departures.note_gone(connection_id, gone_note[0], gone_note[1],
                                 window_seconds=history_settings().window_seconds)
        except AppError as err:
            log.warning("gone note of %s not written: %s", connection_id, err.code)
    try:
        removed = connections.remove_connection(connection_id)
        log.info("connection %s is gone; removed %d registry items", connection_id, removed)
    except AppError as err:
        log.warning("connection %s is gone but could not be removed: %s", connection_id, err)


# --- public API -------------------------------------------------------------------------------

@observability.counts_deliveries
def send_to_connections(connection_ids: Iterable[str], frame: Any, *,
                        event: Any = None, gone_note: Optional[GoneNote] = None) -> Summary:
    """Post one frame to many connections, at most ``PUSH_MAX_WORKERS`` posts in flight.

    Gone connections (410) are removed from the registry by a few helper threads while the
    fan-out goes on; the call returns once they are removed.

    Args:
        connection_ids: target connection ids (duplicates and empty ids are dropped).
        frame: see :func:`encode_frame`.
        event: the WebSocket event being handled, if any (see :func:`management_endpoint`).
        gone_note: the channel and id of the event posted, noted for connections found gone
            (:func:`_forget`).
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
    summary = tally(post_outcomes(ids, data, event=event, gone_note=gone_note).values())
    if len(ids) > 1:
        log.info("pushed to %d connections: %s", len(ids), summary)
    return summary


def post_outcomes(connection_ids: List[str], data: bytes, *, event: Any = None,
                  gone_note: Optional[GoneNote] = None) -> Dict[str, str]:
    """:func:`send_to_connections` for encoded, distinct ids, answering per connection.

    Args:
        connection_ids: distinct, non-empty connection ids.
        data: the payload (:func:`encode_frame`).
        event: as :func:`send_to_connections`.
    Returns:
        ``{connection_id: "delivered" | "gone" | "failed" | "retryable"}``; gone connections
        have been removed from the registry.
    Raises:
        ConfigError: no management endpoint is configured.
    """
    if not connection_ids:
        return {}
    ws = websocket_settings()
    sender = management_client(management_endpoint(event))
    cleanup: Optional[ThreadPoolExecutor] = None
    removals: List[Future] = []

    def on_gone(connection_id: str) -> None:
        nonlocal cleanup
        if cleanup is None:
            cleanup = ThreadPoolExecutor(max_workers=CLEANUP_WORKERS,
                                         thread_name_prefix="push-cleanup")
        removals.append(cleanup.submit(_forget, connection_id, gone_note))

    try:
        return sender.post_many(connection_ids, data, max_attempts=ws.push_max_attempts,
                                throttle_seconds=ws.push_throttle_seconds,
                                on_gone=on_gone, sleep=lambda seconds: _sleep(seconds))
    finally:
        if cleanup is not None:
            cleanup.shutdown(wait=True)


def send_to_connection(connection_id: str, frame: Any, *, event: Any = None) -> Summary:
    """Post one frame to one connection (see :func:`send_to_connections`; same errors)."""
    return send_to_connections([connection_id], frame, event=event)
