"""The native dialect of the WebSocket API: our JSON frames, a JWT at ``$connect``.

Frame protocol (text frames, JSON objects; every reply is sent with PostToConnection through
:mod:`chalicelib.delivery.push`, because a ``$default`` route's return value only reaches the
client when route responses are configured):

* ``{"action": "ping"}`` -> ``{"type": "pong"}``;
* ``{"action": "subscribe", "channel": C}`` -> ``{"type": "subscribed", "channel": C}``;
* ``{"action": "unsubscribe", "channel": C}`` -> ``{"type": "unsubscribed", "channel": C}``;
* ``{"action": "publish", "channel": C, "event": E, "data": D}`` ->
  ``{"type": "published", "channel": C, "event": E}``. A *client event* (``E`` = ``client-…``:
  Pusher's client-event model, :func:`chalicelib.channels.check_client_event`) goes to every
  other subscriber of the ``private-``/``presence-`` channel C the connection is subscribed
  to, as ``{"type": "event", "channel": C, "event": E, "data": D}`` plus ``"user_id"`` (the
  sender's) on presence channels, at most ``CLIENT_EVENT_RATE_LIMIT`` per second per
  connection, its ``data`` at most ``CLIENT_EVENT_MAX_BYTES`` (Pusher's 10 KB; else
  ``client_event_too_large``). Any other event needs the scope ``notifications:send`` and
  then behaves exactly like ``POST /notifications`` to C;
* ``{"action": "pushtowebsocket", "message": M}`` (the seeds' echo route) ->
  ``{"type": "message", "message": M}``.

A frame may carry an ``"id"`` (string of at most 64 characters, or integer); replies and error
frames repeat it. Anything wrong gets ``{"type": "error", "code", "message"}`` (plus ``id`` and
``action`` when known); the handler never raises. Channels are judged by
:func:`chalicelib.channels.authorize`, the same rules as Pusher, with the principal stored at
``$connect``; ``private-encrypted-`` channels are refused (their end-to-end encryption is a
Pusher feature).

Frames are read with :func:`chalicelib.jsonutil.loads` (strict RFC 8259: no ``NaN``/infinities,
no lone surrogates, no duplicate member names, at most 64 levels of nesting). Every frame gets
exactly one reply: ``unknown_action`` error frames repeat the ``id`` (it is read before the
action is judged), and ``invalid_frame`` ones do whenever the text parsed far enough to hold a
valid id (a value fault such as ``1e400`` elsewhere in the frame still lets the id be read).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional

from chalicelib import channels, jsonutil, observability
from chalicelib.auth.identity import authenticate_request, header
from chalicelib.auth.principal import Principal
from chalicelib.delivery import post, push, replay
from chalicelib.protocol.gateway import request_context
from chalicelib.errors import AppError, BadRequest, PayloadTooLarge, Unauthorized, log_error
from chalicelib.registry import connections, rates, subscriptions
from chalicelib.settings import history_settings, websocket_settings

log = logging.getLogger("realtime.ws")

#: the scope that lets a caller of ``POST /notifications`` address other users and channels
NOTIFY_SCOPE = "notifications:send"
MAX_FRAME_ID_LENGTH = 64

ACTIONS = ("ping", "subscribe", "unsubscribe", "publish", "pushtowebsocket")


class InvalidFrame(BadRequest):
    """A frame that is not a JSON object with an ``action`` (400).

    Attributes:
        salvaged: the values of a frame refused for a value-level fault (see
            :attr:`chalicelib.jsonutil.JSONRejected.document`), read only for its ``id`` and
            ``action``; None otherwise.
    """

    code = "invalid_frame"

    def __init__(self, message: str = "", *, salvaged: Any = None) -> None:
        super().__init__(message)
        self.salvaged = salvaged if isinstance(salvaged, dict) else None


class UnknownAction(BadRequest):
    """An ``action`` this server does not know (400)."""

    code = "unknown_action"


# --- $connect ---------------------------------------------------------------------------------

def connect_principal(raw: Mapping[str, Any]) -> Principal:
    """The principal of a ``$connect`` event.

    Uses ``requestContext.authorizer`` when the ``ws_authorizer`` ran (its context carries
    ``sub``); otherwise verifies the token of the request itself (``Authorization`` header, or
    the ``token``/``Auth``/``authorization`` query parameter), so an API deployed without the
    authorizer is still closed to strangers.

    Raises:
        Unauthorized: (and every TokenError) no valid credentials.
        ConfigError: the JWT settings are missing.
    """
    authorizer = request_context(raw).get("authorizer")
    if isinstance(authorizer, Mapping) and authorizer.get("sub"):
        return Principal.from_context(authorizer)
    return authenticate_request(raw.get("headers"), raw.get("queryStringParameters"))



def on_connect(raw: Mapping[str, Any]) -> Dict[str, int]:
    """``$connect`` of a native connection: authenticate, then register the connection.

    Args:
        raw: the API Gateway ``$connect`` event (a dict).
    Returns:
        ``{"statusCode": 200}``; ``401`` without valid credentials and ``503`` when the
        settings or the registry are unavailable — in both cases nothing is written and
        API Gateway refuses the handshake.
    """
    context = request_context(raw)
    connection_id = context.get("connectionId")
    try:
        if not isinstance(connection_id, str) or not connection_id:
            raise BadRequest("$connect event without requestContext.connectionId")
        principal = connect_principal(raw)
        observability.set_fields(user_id=principal.user_id)
        identity = context.get("identity") if isinstance(context.get("identity"), Mapping) \
            else {}
        user_agent = identity.get("userAgent") or header(raw.get("headers"), "user-agent")
        connected_at = context.get("connectedAt")
        connections.register(
            connection_id, principal, source_ip=identity.get("sourceIp"),
            user_agent=user_agent if isinstance(user_agent, str) else None,
            connected_at=(connected_at / 1000.0 if isinstance(connected_at, (int, float))
                          else None))
    except AppError as err:
        log_error(err, "$connect")
        return {"statusCode": err.status}
    except Exception:  # never a stack trace to API Gateway; the handshake is refused
        log.exception("$connect failed")
        return {"statusCode": 500}
    log.info("connected %s for %s", connection_id, principal.user_id)
    return {"statusCode": 200}

# --- $default ---------------------------------------------------------------------------------

def load_frame(raw: Mapping[str, Any]) -> Dict[str, Any]:
    """The JSON object of a ``$default`` event, its ``action`` not yet judged.

    Raises:
        InvalidFrame: a binary or empty frame, text :func:`chalicelib.jsonutil.loads` refuses
            (its reason is in the message; ``salvaged`` holds the values when it has them), or
            not an object.
    """
    if raw.get("isBase64Encoded"):
        raise InvalidFrame("binary frames are not supported; send JSON text")
    body = raw.get("body")
    if not isinstance(body, str) or not body.strip():
        raise InvalidFrame("empty frame; send a JSON object with an \"action\"")
    try:
        frame = jsonutil.loads(body)
    except jsonutil.JSONRejected as err:
        raise InvalidFrame(f"frame refused: {err.reason}", salvaged=err.document) from None
    if not isinstance(frame, dict):
        raise InvalidFrame("frame must be a JSON object")
    return frame


def check_action(frame: Mapping[str, Any]) -> str:
    """The frame's ``action``.

    Raises:
        InvalidFrame: no ``action``.
        UnknownAction: an action outside :data:`ACTIONS`.
    """
    action = frame.get("action")
    if action is None:
        raise InvalidFrame("frame has no \"action\"")
    if not isinstance(action, str) or action not in ACTIONS:
        raise UnknownAction("unknown action; use one of " + ", ".join(ACTIONS))
    return action


def _frame_id(frame: Mapping[str, Any]) -> Any:
    """The frame's ``id`` when it may be repeated: an integer (not a boolean) or a string of at
    most :data:`MAX_FRAME_ID_LENGTH` characters that UTF-8 can encode; else None."""
    value = frame.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and len(value) <= MAX_FRAME_ID_LENGTH:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in a salvaged frame
            return None
        return value
    return None


def on_message(raw: Mapping[str, Any], event: Any = None) -> Dict[str, int]:
    """``$default`` of a native connection: dispatch one frame on its ``action`` (see the
    module docstring).

    Args:
        raw: the API Gateway event (a dict).
        event: the Chalice event, handed to PostToConnection (its request context names the
            management endpoint).

    Every reply and error frame goes back through PostToConnection. Returns
    ``{"statusCode": 200}``; never raises.
    """
    connection_id = request_context(raw).get("connectionId")
    if not isinstance(connection_id, str) or not connection_id:
        log.warning("$default event without requestContext.connectionId")
        return {"statusCode": 200}
    frame: Dict[str, Any] = {}
    then = None
    try:
        frame = load_frame(raw)  # the id is known before the action is judged
        reply = _HANDLERS[check_action(frame)](connection_id, frame, event)
        if isinstance(reply, tuple):  # (reply, work once the reply is sent: a resume)
            reply, then = reply
    except AppError as err:
        if isinstance(err, InvalidFrame) and err.salvaged is not None:
            frame = err.salvaged
        action = frame.get("action")
        known = isinstance(action, str) and action in ACTIONS
        log_error(err, f"$default {action if known else '-'}")
        if action == "subscribe":
            observability.count("SubscriptionsRefused", dimension=err.code)
        reply = err.frame()
        if known:
            reply["action"] = action
    except Exception:
        log.exception("$default failed")
        reply = AppError().frame()
    frame_id = _frame_id(frame)
    if frame_id is not None:
        reply["id"] = frame_id
    _reply(connection_id, reply, event)
    if then is not None:
        then()
    return {"statusCode": 200}


def _reply(connection_id: str, reply: Dict[str, Any], event: Any) -> None:
    """Send ``reply``; if it cannot be sent as it is (over 128 KB, or, by a bug, not
    encodable), send the matching error frame with the reply's ``id`` instead."""
    try:
        try:
            post.send_to_connection(connection_id, reply, event=event)
        except PayloadTooLarge as err:  # an echo of a message near the limit
            post.send_to_connection(connection_id, {**err.frame(), **{
                k: reply[k] for k in ("id",) if k in reply}}, event=event)
        except (ValueError, TypeError):  # strict frames always encode: a bug, still answered
            log.exception("reply to %s could not be encoded", connection_id)
            post.send_to_connection(connection_id, {**AppError().frame(), **{
                k: reply[k] for k in ("id",) if k in reply}}, event=event)
    except Exception:
        log.exception("reply to %s failed", connection_id)


def _registered(connection_id: str) -> connections.Connection:
    connection = connections.get_connection(connection_id)
    if connection is None:
        raise Unauthorized(f"connection {connection_id} is not registered",
                           public_message="Connection not registered; reconnect")
    if connection.principal is None:  # not a native connection (the door dispatches by dialect)
        raise BadRequest(f"connection {connection_id} speaks {connection.dialect}",
                         public_message="This connection does not speak the native frames")
    observability.set_fields(user_id=connection.user_id)
    return connection


def _grant(principal: Principal, channel_name: Any) -> channels.ChannelGrant:
    if channel_name is None:
        raise BadRequest('"channel" is required')
    grant = channels.authorize(principal, channel_name)
    if grant.kind == channels.PRIVATE_ENCRYPTED:
        raise BadRequest("private-encrypted channels are only served through Pusher")
    return grant


def _ping(connection_id: str, frame: Mapping[str, Any], event: Any) -> Dict[str, Any]:
    return {"type": "pong"}


def _subscribe(connection_id: str, frame: Mapping[str, Any], event: Any):
    connection = _registered(connection_id)
    grant = _grant(connection.principal, frame.get("channel"))
    name = grant.channel_name
    after = _resume_id(frame)
    reply = {"type": "subscribed", "channel": name}
    if after is None:
        subscriptions.subscribe(connection, name)
        return reply
    if not history_settings().keeps_channel(name):
        subscriptions.subscribe(connection, name)
        return reply, lambda: _send_quietly(connection_id, {
            "type": "resume_failed", "channel": name, "reason": "no_history"}, event)
    if not subscriptions.subscribe(connection, name, gated=True):
        return reply  # subscribed already: it has been getting the channel's events live
    return reply, lambda: _resume(connection, name, after, event)


#: largest id a resume may name (JavaScript's safe integers: what a browser client holds)
MAX_EVENT_ID = 2 ** 53 - 1


def _resume_id(frame: Mapping[str, Any]) -> Optional[int]:
    """The ``after`` of a subscribe frame: the last event id the client has of the channel
    (an integer, 0 to 2**53 - 1), or None when it asks for no resume.

    Raises:
        BadRequest: ``after`` is not such an integer.
    """
    value = frame.get("after")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EVENT_ID:
        raise BadRequest('"after" must be the last event id received: an integer >= 0')
    return value


def _resume(connection: connections.Connection, name: str, after: int, event: Any) -> None:
    """Replay what the connection missed on ``name`` after ``after``, then let live events in
    (:func:`chalicelib.delivery.replay.replay`); a failed resume is told with
    ``{"type": "resume_failed", "channel", "reason", "id"}`` (live events follow after
    ``id``). Never raises: a registry failure drops the subscription and answers an error
    frame naming the channel, so the client subscribes again."""
    cid = connection.connection_id

    def failed(reason: str, head: int) -> None:
        _send_quietly(cid, {"type": "resume_failed", "channel": name, "reason": reason,
                            "id": head}, event)

    try:
        result = replay.replay(connection, name, after,
                               replay.poster(cid, replay.frame_of, event), on_failed=failed)
        log.info("resume of %s by %s: %d replayed, live after %d", name, cid, result.replayed,
                 result.head)
    except replay.ConnectionLost:
        log.info("resume of %s stopped: %s is gone", name, cid)
    except AppError as err:
        log_error(err, "$default subscribe (resume)")
        try:
            subscriptions.unsubscribe(cid, name)
        except AppError:
            pass  # expires with the connection
        _send_quietly(cid, {**err.frame(), "action": "subscribe", "channel": name}, event)
    except Exception:
        log.exception("resume of %s failed", name)
        _send_quietly(cid, {**AppError().frame(), "action": "subscribe", "channel": name}, event)


def _send_quietly(connection_id: str, frame: Dict[str, Any], event: Any) -> None:
    try:
        post.send_to_connection(connection_id, frame, event=event)
    except Exception:
        log.exception("a frame to %s could not be sent", connection_id)


def _unsubscribe(connection_id: str, frame: Mapping[str, Any], event: Any) -> Dict[str, Any]:
    channel = frame.get("channel")
    if channel is None:
        raise BadRequest('"channel" is required')
    name = channels.validate_channel_name(channel)
    subscriptions.unsubscribe(connection_id, name)
    return {"type": "unsubscribed", "channel": name}


def _publish(connection_id: str, frame: Mapping[str, Any], event: Any) -> Dict[str, Any]:
    event_name = push.validate_event_name(frame.get("event"))
    name_given = frame.get("channel")
    if name_given is None:
        raise BadRequest('"channel" is required')
    connection = _registered(connection_id)
    if not channels.is_client_event(event_name):
        if not connection.principal.has_scope(NOTIFY_SCOPE):
            raise channels.ClientEventNameRefused(
                f"{connection.user_id} published a non-client event without {NOTIFY_SCOPE}",
                public_message=f'Events published by clients must be named '
                               f'"{channels.CLIENT_EVENT_PREFIX}…"; other events need the '
                               f'scope {NOTIFY_SCOPE}')
        # a server event, exactly as POST /notifications to a channel
        notification = push.parse_notification(
            {"channel": name_given, "event": event_name, "data": frame.get("data")},
            targets=("channel",))
        summary = push.deliver(notification, event=event)
        log.info("server event by %s to %s: %s", connection.user_id, notification.address,
                 summary)
        return {"type": "published", "channel": notification.address, "event": event_name}
    channel = channels.check_client_event(name_given, event_name, connection.channels)
    outgoing: Dict[str, Any] = {"type": "event", "channel": channel, "event": event_name,
                                "data": frame.get("data")}
    if channels.channel_kind(channel) == channels.PRESENCE:
        outgoing["user_id"] = connection.user_id
    # 413 before the event counts against the rate limit
    channels.check_client_event_size(outgoing["data"],
                                     websocket_settings().client_event_max_bytes)
    post.encode_frame(outgoing)
    limit = websocket_settings().client_event_rate_limit
    if not rates.allow_client_event(connection_id, limit):
        raise channels.ClientEventRateLimited(
            f"at most {limit} client events per second per connection")
    summary = push.publish_to_channel(channel, outgoing, event=event, exclude=connection_id)
    from chalicelib.delivery import webhooks_out  # issue 10 D: client_event to the app's handlers

    webhooks_out.client_event(channel, event_name, outgoing["data"], connection_id,
                              outgoing.get("user_id"))
    log.info("client event by %s to %s: %s", connection.user_id, channel, summary)
    observability.count("ClientEvents")
    return {"type": "published", "channel": channel, "event": event_name}


def _echo(connection_id: str, frame: Mapping[str, Any], event: Any) -> Dict[str, Any]:
    if "message" not in frame:
        raise BadRequest('"message" is required')
    return {"type": "message", "message": frame["message"]}


_HANDLERS = {
    "ping": _ping,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "publish": _publish,
    "pushtowebsocket": _echo,
}
