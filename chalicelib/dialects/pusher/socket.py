"""The Pusher Channels protocol 7 dialect of the WebSocket API: pusher-js (and every Pusher
client) connects to API Gateway as it would to Pusher or soketi.

Framing and signature checks are in :mod:`chalicelib.protocol.pusher` (pure); this module
holds the handlers :mod:`chalicelib.dialects.native` dispatches to when a connection speaks this
dialect.

* ``$connect`` (:func:`on_connect`): chosen when the query string carries ``protocol``
  (pusher-js sends ``protocol=7``) and ``PUSHER_DIALECT`` is on. ``ws_authorizer`` lets such a
  connect in anonymously with the context ``{"dialect": "pusher"}`` (:func:`authorizer_answer`);
  rights come from signed subscriptions. The version and app key are checked
  (:func:`chalicelib.protocol.pusher.handshake_error`), the connection is registered with its
  dialect and no user, and the first frame is handed to :func:`hello`.
* First frame: API Gateway answers ``410 Gone`` to PostToConnection until ``$connect`` has
  returned (AWS re:Post, "410 Gone" on PostToConnection during ``$connect``), so ``$connect``
  cannot send ``pusher:connection_established`` itself. It invokes the ``pusher_hello``
  function asynchronously (Lambda ``Invoke`` with ``InvocationType=Event``: the call returns
  once Lambda has queued the event, ~10-30 ms), and :func:`hello` posts the frame, retrying a
  410 every 10 ms ten times, then doubling to 160 ms, for up to :data:`HELLO_DEADLINE_SECONDS`. A refused
  handshake (bad version, unknown key, registry down) gets its ``pusher:error`` the same way,
  and the socket is then closed (DeleteConnection), as Pusher closes it.
* ``$default`` (:func:`on_message`): ``pusher:ping`` -> ``pusher:pong`` (a ``pusher:pong``
  is taken silently);
  ``pusher:subscribe`` for public channels and, with a valid ``auth`` (constant-time HMAC
  check), ``private-`` and ``private-encrypted-`` channels ->
  ``pusher_internal:subscription_succeeded``, else ``pusher:subscription_error`` with its
  ``status``; ``pusher:unsubscribe``; anything else gets a ``pusher:error`` (never silence).
* Presence (signed ``channel_data``; member list in ``subscription_succeeded``;
  ``member_added``/``member_removed`` on a user's first/last connection, also on
  ``$disconnect`` and GoneException cleanup through ``connections.REMOVAL_HOOKS``; the cap and
  the member events exact under simultaneous joins: ``connections.presence_enter``), client
  events (the trust issue's rules and rate limit, 4301), ``pusher:signin``
  (``#server-to-user-<id>``), cache channels (last event 30 minutes, ``pusher:cache_miss``),
  encrypted channels (relayed as the server library encrypted them).

The registry keeps ``dialect = "pusher"`` on the connection's items, and
:mod:`chalicelib.delivery.push` encodes every event for the receiving connection's dialect, so
``POST /notifications`` and queue pushes reach Pusher clients as
``{"event", "channel", "data": <JSON string>}``.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Dict, Mapping, Optional

from chalicelib import channels
from chalicelib.dialects.pusher import resume
from chalicelib.protocol import pusher as protocol
from chalicelib.protocol.gateway import request_context
from chalicelib.registry import cache, connections, presence, rates, subscriptions, table
from chalicelib.errors import AppError, BadRequest
from chalicelib.logtext import for_log
from chalicelib.settings import pusher_settings, pusher_socket_settings, websocket_settings

log = logging.getLogger("realtime.pusher_socket")

DIALECT = connections.PUSHER
#: the authorizer context that marks a Pusher connection (nothing else: it is anonymous)
CONTEXT_KEY = "dialect"
#: principal id of the authorizer's answer for anonymous Pusher connections (API Gateway logs)
ANONYMOUS_PRINCIPAL = "pusher-anonymous"
#: how long :func:`hello` keeps retrying a 410 (``$connect`` not returned yet), seconds
HELLO_DEADLINE_SECONDS = 5.0
#: retry schedule of a 410: every :data:`HELLO_FIRST_DELAY` s for :data:`HELLO_FAST_RETRIES`
#: retries (``$connect`` returns within a few ms of registering, so the socket opens within
#: the first ones), then doubling up to :data:`HELLO_MAX_DELAY` s
HELLO_FIRST_DELAY = 0.01
HELLO_FAST_RETRIES = 10
HELLO_MAX_DELAY = 0.16
#: Lambda client bounds for the asynchronous invoke made inside ``$connect``
INVOKE_CONNECT_TIMEOUT = 1.0
INVOKE_READ_TIMEOUT = 2.0
INVOKE_MAX_ATTEMPTS = 2


def _query(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    query = raw.get("queryStringParameters")
    if not isinstance(query, Mapping):
        multi = raw.get("multiValueQueryStringParameters")
        query = {k: v[0] for k, v in multi.items() if isinstance(v, list) and v} \
            if isinstance(multi, Mapping) else {}
    return query


def enabled() -> bool:
    """``PUSHER_DIALECT``; an invalid value is logged and counts as off."""
    try:
        return pusher_socket_settings().enabled
    except AppError as err:
        log.error("PUSHER_DIALECT: %s", err.public_message)
        return False


def requested(raw: Mapping[str, Any]) -> bool:
    """True when a ``$connect`` (or its authorizer event) asks for the Pusher dialect and the
    stage serves it: ``protocol`` in the query string and ``PUSHER_DIALECT`` on."""
    return protocol.requests_pusher(_query(raw)) and enabled()


def is_pusher_event(raw: Mapping[str, Any]) -> bool:
    """True when a WebSocket event belongs to a Pusher connection: its authorizer context
    says so (API Gateway repeats the ``$connect`` context on every event of the connection)."""
    authorizer = request_context(raw).get("authorizer")
    return isinstance(authorizer, Mapping) and authorizer.get(CONTEXT_KEY) == DIALECT


def authorizer_answer(event: Mapping[str, Any], resources) -> Dict[str, Any]:
    """``ws_authorizer``'s answer for a Pusher connect: allow, anonymously.

    Args:
        event: the REQUEST authorizer event.
        resources: the policy's resources (:func:`chalicelib.doors.authorizer.policy_resources`).
    Returns:
        ``{"principalId": "pusher-anonymous", "policyDocument": Allow execute-api:Invoke,
        "context": {"dialect": "pusher"}}``.
    """
    return {
        "principalId": ANONYMOUS_PRINCIPAL,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow",
                           "Resource": resources}],
        },
        "context": {CONTEXT_KEY: DIALECT},
    }


# --- $connect ---------------------------------------------------------------------------------

def on_connect(raw: Mapping[str, Any]) -> Dict[str, int]:
    """``$connect`` of a Pusher connection.

    Checks the handshake, registers the connection (dialect ``pusher``, no user) and invokes
    :func:`hello` asynchronously with ``pusher:connection_established`` — or with the
    ``pusher:error`` of a refused handshake (4006/4007/4008 version: protocols 4-7 are
    served, :data:`chalicelib.protocol.pusher.SUPPORTED_PROTOCOL_VERSIONS`; 4001 app key, 4100
    registry unavailable), which then closes the socket.

    Returns:
        ``{"statusCode": 200}``; ``503`` when the first frame cannot be handed over (nothing
        stays registered) or the settings are broken.
    """
    context = request_context(raw)
    connection_id = context.get("connectionId")
    if not isinstance(connection_id, str) or not connection_id:
        log.warning("$connect (pusher) without requestContext.connectionId")
        return {"statusCode": 400}
    registered = False
    try:
        refusal = protocol.handshake_error(_query(raw), pusher_settings().key)
        if refusal is None:
            identity = context.get("identity") if isinstance(context.get("identity"), Mapping) \
                else {}
            connected_at = context.get("connectedAt")
            user_agent = identity.get("userAgent")
            try:
                connections.register(
                    connection_id, None, dialect=DIALECT, source_ip=identity.get("sourceIp"),
                    user_agent=user_agent if isinstance(user_agent, str) else None,
                    connected_at=(connected_at / 1000.0
                                  if isinstance(connected_at, (int, float)) else None))
                registered = True
            except table.RegistryUnavailable as err:
                log.error("$connect (pusher) %s: %s", connection_id, err)
                refusal = protocol.ProtocolError("Over capacity; reconnect later",
                                                 protocol.OVER_CAPACITY)
        socket_id = None
        if refusal is None:
            try:
                socket_id = protocol.socket_id_for(connection_id)
            except ValueError:  # an id far longer than API Gateway's: no socket id to give
                refusal = protocol.ProtocolError("Connection id unusable as a socket id")
        if socket_id is not None:
            frame, close = protocol.connection_established(socket_id), False
        else:
            log.info("$connect (pusher) %s refused: %s %s", connection_id, refusal.code,
                     refusal.message)
            frame, close = protocol.error(refusal.message, refusal.code), True
        invoke_hello(connection_id, frame, context, close=close)
    except AppError as err:
        log.error("$connect (pusher) %s: %s (%s)", connection_id, err.code, for_log(err))
        if registered:
            _forget(connection_id)
        return {"statusCode": err.status if err.status >= 400 else 503}
    except Exception:
        log.exception("$connect (pusher) failed")
        if registered:
            _forget(connection_id)
        return {"statusCode": 503}
    return {"statusCode": 200}


def _forget(connection_id: str) -> None:
    try:
        connections.remove_connection(connection_id)
    except AppError as err:
        log.warning("could not remove %s: %s", connection_id, err.code)


class HelloUnavailable(AppError):
    """The ``pusher_hello`` function could not be invoked (503)."""

    status = 503
    code = "hello_unavailable"
    public_message = "Service unavailable"


def invoke_hello(connection_id: str, frame: str, context: Mapping[str, Any], *,
                 close: bool = False) -> None:
    """Invoke ``PUSHER_HELLO_FUNCTION`` asynchronously (``InvocationType=Event``) with the
    first frame of a connection.

    The Lambda client is created lazily and cached (:func:`chalicelib.aws.client`, so
    ``AWS_ENDPOINT_URL_LAMBDA`` reaches a local gateway), with 1 s to connect, 2 s to answer
    and 2 attempts.

    Args:
        connection_id: the new connection.
        frame: the text to post.
        context: the ``$connect`` request context (its ``domainName``, ``stage``, ``apiId``
            name the management endpoint, as :func:`chalicelib.delivery.post.management_endpoint`
            reads them).
        close: close the socket once the frame is delivered.
    Raises:
        HelloUnavailable: Lambda refused or did not answer.
    """
    from chalicelib import aws

    payload = {"connection_id": connection_id, "frame": frame, "close": close,
               "requestContext": {k: context.get(k) for k in ("domainName", "stage", "apiId")}}
    name = pusher_socket_settings().hello_function
    try:
        client = aws.client("lambda", websocket_settings().region,
                            max_attempts=INVOKE_MAX_ATTEMPTS,
                            connect_timeout=INVOKE_CONNECT_TIMEOUT,
                            read_timeout=INVOKE_READ_TIMEOUT)
        client.invoke(FunctionName=name, InvocationType="Event",
                      Payload=json.dumps(payload).encode("utf-8"))
    except AppError:
        raise
    except Exception as exc:  # botocore errors, no credentials, timeouts
        response = getattr(exc, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        raise HelloUnavailable(f"invoking {name} failed: {code or type(exc).__name__}") \
            from None


def hello(event: Mapping[str, Any], *, sleep=time.sleep,
          clock=time.monotonic) -> Dict[str, Any]:
    """The ``pusher_hello`` function: post a connection's first frame once ``$connect`` has
    returned.

    Args:
        event: ``{"connection_id", "frame", "close", "requestContext"}`` from
            :func:`invoke_hello`.
        sleep, clock: for tests.
    Returns:
        ``{"delivered": bool, "attempts": int, "seconds": float}``. A 410 is retried (every
        10 ms ten times, then doubling to 160 ms) until :data:`HELLO_DEADLINE_SECONDS`; then
        the client is gone (or ``$connect`` failed) and the frame is dropped. Never raises.
    """
    from chalicelib.delivery import post, summary

    started = clock()
    attempts = 0
    delivered = False
    connection_id = event.get("connection_id") if isinstance(event, Mapping) else None
    frame = event.get("frame") if isinstance(event, Mapping) else None
    if not isinstance(connection_id, str) or not connection_id or not isinstance(frame, str):
        log.error("pusher_hello: malformed event")
        return {"delivered": False, "attempts": 0, "seconds": 0.0}
    try:
        data = post.encode_frame(frame)
        endpoint = post.management_endpoint(event)
        sender = post.management_client(endpoint)
        delay = HELLO_FIRST_DELAY
        while True:
            attempts += 1
            outcome = sender.post_many([connection_id], data,
                                       max_attempts=websocket_settings().push_max_attempts,
                                       on_gone=lambda _id: None, sleep=sleep)[connection_id]
            if outcome == summary.DELIVERED:
                delivered = True
                break
            if outcome != summary.GONE or clock() - started + delay > HELLO_DEADLINE_SECONDS:
                log.warning("pusher_hello: first frame to %s not delivered (%s after %d "
                            "attempts)", connection_id, outcome, attempts)
                break
            sleep(delay)
            if attempts >= HELLO_FAST_RETRIES:
                delay = min(delay * 2, HELLO_MAX_DELAY)
        if delivered and event.get("close"):
            _close(endpoint, connection_id)
    except AppError as err:
        log.error("pusher_hello %s: %s (%s)", connection_id, err.code, for_log(err))
    except Exception:
        log.exception("pusher_hello failed")
    seconds = clock() - started
    log.info("pusher_hello %s: delivered=%s attempts=%d in %.3f s", connection_id, delivered,
             attempts, seconds)
    return {"delivered": delivered, "attempts": attempts, "seconds": round(seconds, 4)}


def _close(endpoint: str, connection_id: str) -> None:
    """DeleteConnection (API Gateway closes the socket), as Pusher closes a refused one."""
    from chalicelib import aws

    try:
        client = aws.client("apigatewaymanagementapi", websocket_settings().region,
                            endpoint_url=endpoint, max_attempts=2, connect_timeout=1,
                            read_timeout=2)
        client.delete_connection(ConnectionId=connection_id)
    except Exception as exc:  # already gone, or the API refused: API Gateway's idle close
        log.warning("pusher_hello: closing %s failed (%s)", connection_id, type(exc).__name__)


# --- $default ---------------------------------------------------------------------------------

class SubscriptionRefused(Exception):
    """Internal: answer ``pusher:subscription_error`` with ``status``, ``error_type``."""

    def __init__(self, status: int, message: str, error_type: str = "AuthError") -> None:
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type


def on_message(raw: Mapping[str, Any], event: Any = None) -> Dict[str, int]:
    """``$default`` of a Pusher connection: one frame (see the module docstring).

    Every answer goes back through PostToConnection; a frame the server cannot take gets a
    ``pusher:error``. Returns ``{"statusCode": 200}``; never raises.
    """
    connection_id = request_context(raw).get("connectionId")
    if not isinstance(connection_id, str) or not connection_id:
        log.warning("$default (pusher) without requestContext.connectionId")
        return {"statusCode": 200}
    channel: Optional[str] = None
    try:
        if raw.get("isBase64Encoded"):
            raise protocol.ProtocolError("Binary messages are not supported; send JSON text")
        name, data, channel = protocol.parse_message(raw.get("body"))
        handler = _HANDLERS.get(name)
        if channels.is_client_event(name):
            reply = _client_event(connection_id, name, data, channel,
                                  event if event is not None else raw)
        elif handler is None:
            if name.startswith("pusher:") or name.startswith("pusher_internal:"):
                raise protocol.ProtocolError(f"Unsupported event {name[:64]}")
            raise protocol.ProtocolError(
                "Unknown event; clients send pusher:ping, pusher:subscribe, "
                "pusher:unsubscribe or client events")
        else:
            reply = handler(connection_id, data, channel, event if event is not None else raw)
    except protocol.ProtocolError as err:
        reply = protocol.error(err.message, err.code)
    except SubscriptionRefused as err:
        reply = protocol.subscription_error(channel or "", err.status, err.message,
                                            err.error_type)
    except AppError as err:
        log.warning("$default (pusher) %s: %s (%s)", connection_id, err.code, for_log(err))
        reply = protocol.error(err.public_message)
    except Exception:
        log.exception("$default (pusher) failed")
        reply = protocol.error("Internal error")
    then = None
    if isinstance(reply, _Answer):
        reply, then = reply.frames, reply.then
    for text in ([reply] if isinstance(reply, str) else reply or []):
        _send(connection_id, text, event if event is not None else raw)
    if then is not None:
        then()
    return {"statusCode": 200}


class _Answer:
    """A handler's reply frames, and work to do once they are sent (``then``: a callable that
    never raises): a presence joiner gets its ``subscription_succeeded`` before the
    ``member_added`` fan-out to the other members starts, instead of after it."""

    def __init__(self, frames, then) -> None:
        self.frames, self.then = frames, then


def _send(connection_id: str, text: str, event: Any) -> None:
    """Post one reply; one over 128 KB is answered with a ``pusher:error`` instead (never
    silence). Failures are logged, never raised."""
    from chalicelib.delivery import post
    from chalicelib.errors import PayloadTooLarge

    try:
        try:
            post.send_to_connection(connection_id, text, event=event)
        except PayloadTooLarge as err:
            log.warning("reply to %s too large: %s", connection_id, err)
            post.send_to_connection(connection_id, protocol.error(err.public_message),
                                    event=event)
    except Exception:
        log.exception("reply to %s failed", connection_id)


def _ping(connection_id: str, data: Any, channel: Optional[str], event: Any) -> str:
    return protocol.pong()


def _subscription_data(data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise protocol.ProtocolError("pusher:subscribe needs data {\"channel\", \"auth\"?}")
    return data


def _subscribe(connection_id: str, data: Any, channel: Optional[str], event: Any):
    data = _subscription_data(data)
    name = data.get("channel")
    if not isinstance(name, str):
        raise protocol.ProtocolError("pusher:subscribe needs data.channel")
    # errors below are about this channel: answered as its subscription_error
    try:
        return _join(connection_id, data, name, event)
    except SubscriptionRefused as err:
        return protocol.subscription_error(name, err.status, err.message, err.error_type)


#: largest ``channel_data`` accepted, bytes (Pusher limits ``user_info`` to 1 KB)
MAX_CHANNEL_DATA_BYTES = 2048


def presence_member(channel_data: Any) -> tuple:
    """``(user_id, user_info)`` of a presence subscription's signed ``channel_data``
    (``{"user_id": string or number, "user_info"?: any}``; Pusher docs, "Presence channels").

    Raises:
        SubscriptionRefused: (400) not such a JSON object, or over 2 KB.
    """
    from chalicelib import jsonutil

    if not isinstance(channel_data, str) or len(channel_data.encode("utf-8")) \
            > MAX_CHANNEL_DATA_BYTES:
        raise SubscriptionRefused(400, "channel_data must be a JSON text of at most 2 KB",
                                  "InvalidChannelData")
    try:
        member = jsonutil.loads(channel_data)
    except jsonutil.JSONRejected as err:
        raise SubscriptionRefused(400, f"channel_data is not valid JSON: {err.reason}",
                                  "InvalidChannelData") from None
    user_id = member.get("user_id") if isinstance(member, dict) else None
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 200:
        raise SubscriptionRefused(400, "channel_data needs a user_id (1-200 characters)",
                                  "InvalidChannelData")
    return user_id, member.get("user_info")


#: the channel pusher-js subscribes to after ``pusher:signin``: ``#server-to-user-<user id>``
USER_CHANNEL_PREFIX = protocol.USER_CHANNEL_PREFIX


def _join(connection_id: str, data: Mapping[str, Any], name: str, event: Any):
    if name.startswith(USER_CHANNEL_PREFIX):  # served by the user audience, no subscription
        connection = connections.get_connection(connection_id)
        if connection is None or not connection.user_id \
                or name != USER_CHANNEL_PREFIX + connection.user_id:
            raise SubscriptionRefused(403, "Sign in as this user first (pusher:signin)")
        then = resume.user_replayer(connection, event)  # events held or missed meanwhile
        answer = protocol.subscription_succeeded(name)
        return _Answer(answer, then) if then else answer
    try:
        name = channels.validate_channel_name(name)
    except BadRequest as err:
        raise SubscriptionRefused(400, err.public_message, "InvalidChannel") from None
    kind = channels.channel_kind(name)
    channel_data = data.get("channel_data") if kind == channels.PRESENCE else None
    if kind != channels.PUBLIC:
        config = pusher_settings()
        socket_id = protocol.socket_id_for(connection_id)
        signed = f"{socket_id}:{name}" + (":<channel_data>" if kind == channels.PRESENCE
                                          else "")
        if (kind == channels.PRESENCE and not isinstance(channel_data, str)) \
                or not protocol.auth_valid(data.get("auth"), config.key, config.secret,
                                           socket_id, name, channel_data):
            log.info("pusher subscribe %s to %s: invalid signature", connection_id,
                     for_log(name))
            raise SubscriptionRefused(
                401, f"Invalid signature: expected HMAC SHA256 hex digest of {signed}, "
                     f"signed with the app secret")
    member = presence_member(channel_data) if kind == channels.PRESENCE else None
    connection = connections.get_connection(connection_id)
    if connection is None or connection.dialect != DIALECT:
        raise protocol.ProtocolError("Connection not registered; reconnect",
                                     protocol.UNAUTHORIZED_CONNECTION)
    entry, after = None, resume.claim(connection, name)
    try:
        if member is not None:
            entry = presence.presence_enter(
                name, member[0], member[1], connection,
                max_members=pusher_socket_settings().presence_max_members)
        try:
            if not subscriptions.subscribe(connection, name, gated=after is not None,
                                           member_user_id=member[0] if member else None):
                after = None  # subscribed already: it has been getting the events live
        except AppError:
            if member is not None:
                presence.presence_leave(name, member[0], connection_id)
            raise
    except presence.PresenceFull as err:
        raise SubscriptionRefused(4100, err.public_message, "LimitReached") from None
    except subscriptions.SubscriptionLimit as err:
        raise SubscriptionRefused(400, err.public_message, "LimitReached") from None
    except table.RegistryUnavailable:
        raise SubscriptionRefused(503, "Connection registry unavailable; retry",
                                  "ServiceUnavailable") from None
    replay_then = resume.replayer(connection, name, after, event)
    if member is None:
        succeeded = _with_cache(name, protocol.subscription_succeeded(name))
        return _Answer(succeeded, replay_then) if replay_then else succeeded
    # Exact under simultaneous joins (connections.presence_enter): the list holds the members
    # that joined before this connection, member_added goes to the connections that joined
    # before this member, so of two joiners each learns of the other exactly once.
    members = entry.members
    succeeded = _with_cache(name, protocol.subscription_succeeded(name, {"presence": {
        "ids": list(members), "hash": members, "count": len(members)}}))

    def answered() -> None:
        """Once the answer is posted: mark it (later members then post their member_added
        here directly), take the member_added queued meanwhile, and announce a new member
        (to the earlier connections already answered; the others get it queued)."""
        try:
            late = presence.presence_answered(name, member[0], connection_id)
        except Exception:
            log.exception("presence answer on %s not marked", for_log(name))
            late = {}
        for other, info in late.items():
            _post([connection_id], protocol.encode(
                "pusher_internal:member_added", {"user_id": other, "user_info": info}, name),
                name, event)
        if not entry.first:
            return
        _webhooks_out().member_added(name, member[0])
        try:
            now = presence.presence_hold(name, member[0], entry.hold_for)
        except Exception:
            log.exception("member_added on %s not queued", for_log(name))
            now = [other for _, other in entry.hold_for]
        _post(list(entry.announce_to) + now,
              protocol.encode("pusher_internal:member_added",
                              {"user_id": member[0], "user_info": member[1]}, name),
              name, event)

    return _Answer(succeeded, answered if replay_then is None
                   else lambda: (answered(), replay_then()))


def _with_cache(name: str, succeeded: str):
    """A cache channel's subscriber also gets its last event (kept 30 minutes), or
    ``pusher:cache_miss`` (Pusher docs, "Cache channels")."""
    if not channels.is_cache_channel(name):
        return succeeded
    try:
        cached = cache.cache_get(name)
    except table.RegistryUnavailable:
        cached = None
    if cached is None:
        _webhooks_out().cache_miss(name)
        return [succeeded, protocol.encode("pusher:cache_miss", {}, name)]
    return [succeeded, protocol.event_frame(cached[0], cached[1], name)]


def _pusher_subscribers(channel: str, *, exclude: Optional[str]) -> list:
    """The channel's Pusher subscribers but ``exclude`` (native connections have no member
    events); ``[]`` when the registry fails (logged)."""
    try:
        return [cid for cid in subscriptions.subscribers_by_dialect(channel).get(DIALECT, [])
                if cid != exclude]
    except Exception:
        log.exception("member event on %s: subscribers not read", for_log(channel))
        return []


def _post(ids: list, text: str, channel: str, event: Any) -> None:
    """Send a ``pusher_internal:*`` frame to ``ids``; failures are logged, never raised."""
    from chalicelib.delivery import push

    try:
        push.send_by_dialect({DIALECT: ids}, text, event=event)
    except Exception:
        log.exception("member event on %s not sent", for_log(channel))


def _broadcast(channel: str, text: str, *, exclude: Optional[str], event: Any) -> None:
    """Send a ``pusher_internal:*`` frame to the channel's Pusher subscribers but ``exclude``;
    failures are logged, never raised."""
    _post(_pusher_subscribers(channel, exclude=exclude), text, channel, event)


def _webhooks_out():
    """:mod:`chalicelib.delivery.webhooks_out`, imported at first use (the authorizer, which loads
    this room for a Pusher ``$connect``, never needs it)."""
    from chalicelib.delivery import webhooks_out

    return webhooks_out


def _member_left(channel: str, user_id: str, connection_id: str, event: Any) -> None:
    if presence.presence_leave(channel, user_id, connection_id):
        _webhooks_out().member_removed(channel, user_id)
        _broadcast(channel, protocol.encode("pusher_internal:member_removed",
                                            {"user_id": user_id}, channel),
                   exclude=connection_id, event=event)


def _unsubscribe(connection_id: str, data: Any, channel: Optional[str],
                 event: Any) -> Optional[str]:
    data = _subscription_data(data)
    name = data.get("channel")
    try:
        name = channels.validate_channel_name(name)
    except BadRequest as err:
        raise protocol.ProtocolError(f"pusher:unsubscribe: {err.public_message}") from None
    old = subscriptions.unsubscribe_item(connection_id, name)
    member = old.get("member_user_id", {}).get("S")
    if member:
        _member_left(name, member, connection_id, event)
    return None  # Pusher answers nothing


def _presence_cleanup(connection_id: str, items) -> None:
    """:data:`chalicelib.registry.connections.REMOVAL_HOOKS`: a removed connection
    (``$disconnect``, GoneException cleanup) leaves its presence channels; ``member_removed`` goes
    out when it was the member's last connection."""
    prefix = table.CHANNEL_SK_PREFIX
    for item in items:
        sk = item.get("sk", {}).get("S", "")
        member = item.get("member_user_id", {}).get("S")
        if member and sk.startswith(prefix):
            try:
                _member_left(sk[len(prefix):], member, connection_id, None)
            except AppError as err:
                log.warning("presence cleanup of %s: %s", connection_id, err.code)


connections.REMOVAL_HOOKS.append(_presence_cleanup)


def _client_event(connection_id: str, name: str, data: Any, channel: Optional[str],
                  event: Any) -> None:
    """A ``client-…`` event: the rules of :func:`chalicelib.channels.check_client_event`
    (private or presence channel the connection is subscribed to), at most
    ``CLIENT_EVENT_RATE_LIMIT`` per second (else ``pusher:error`` 4301), its ``data`` at most
    ``CLIENT_EVENT_MAX_BYTES`` (Pusher's 10 KB; else 4301 as soketi), never echoed to the
    sender; on presence channels it carries the sender's member ``user_id`` (Pusher docs,
    "Client events"). Pusher answers nothing on success."""
    from chalicelib.delivery import post, push

    connection = connections.get_connection(connection_id)
    if connection is None or connection.dialect != DIALECT:
        raise protocol.ProtocolError("Connection not registered; reconnect",
                                     protocol.UNAUTHORIZED_CONNECTION)
    target = channels.check_client_event(channel, name, connection.channels)
    outgoing: Dict[str, Any] = {"type": "event", "channel": target, "event": name,
                                "data": data}
    if channels.channel_kind(target) == channels.PRESENCE:
        user_id = subscriptions.member_of(connection_id, target)
        if user_id:
            outgoing["user_id"] = user_id
    try:  # 4301 before the event counts against the rate limit, as soketi
        channels.check_client_event_size(data, websocket_settings().client_event_max_bytes)
    except channels.ClientEventTooLarge as err:
        raise protocol.ProtocolError(err.public_message, protocol.CLIENT_EVENT_REJECTED) \
            from None
    post.encode_frame(outgoing)
    limit = websocket_settings().client_event_rate_limit
    if not rates.allow_client_event(connection_id, limit):
        raise protocol.ProtocolError(
            f"Client event rejected: at most {limit} client events per second",
            protocol.CLIENT_EVENT_REJECTED)
    push.publish_to_channel(target, outgoing, event=event, exclude=connection_id)
    _webhooks_out().client_event(target, name, data, connection_id, outgoing.get("user_id"))
    return None


def _signin(connection_id: str, data: Any, channel: Optional[str], event: Any) -> str:
    """``pusher:signin`` ``{"auth", "user_data"}`` signed by ``/pusher/user-auth`` ->
    ``pusher:signin_success`` ``{"user_data"}``; the connection joins its user, so
    ``send_to_user`` reaches it. A bad signature or user data gets ``pusher:error`` 4009
    (Pusher closes such a connection; we leave it open and anonymous)."""
    from chalicelib import jsonutil

    if not isinstance(data, Mapping) or not isinstance(data.get("user_data"), str):
        raise protocol.ProtocolError("pusher:signin needs data {\"auth\", \"user_data\"}")
    user_data = data["user_data"]
    config = pusher_settings()
    socket_id = protocol.socket_id_for(connection_id)
    if not protocol.signin_valid(data.get("auth"), config.key, config.secret, socket_id,
                                 user_data):
        raise protocol.ProtocolError("Invalid signature for pusher:signin",
                                     protocol.UNAUTHORIZED_CONNECTION)
    try:
        user = jsonutil.loads(user_data)
    except jsonutil.JSONRejected as err:
        raise protocol.ProtocolError(f"user_data is not valid JSON: {err.reason}") from None
    user_id = user.get("id") if isinstance(user, dict) else None
    try:
        from chalicelib.auth.principal import validate_user_id

        user_id = validate_user_id(user_id, "user_data.id")
    except BadRequest as err:
        raise protocol.ProtocolError(err.public_message) from None
    connections.sign_in(connection_id, user_id,
                        resume_after=resume.claim_user(connection_id, user_id))
    log.info("pusher signin %s as %s", connection_id, for_log(user_id))
    return protocol.encode("pusher:signin_success", {"user_data": user_data})


def _pong(connection_id: str, data: Any, channel: Optional[str], event: Any) -> None:
    """``pusher:pong``: a client's answer to a ping (protocol 5+; pysher sends one for every
    ``pusher:ping``). This server sends no ``pusher:ping``; a pong is taken, unanswered."""
    return None


_HANDLERS = {
    "pusher:signin": _signin,
    "pusher:ping": _ping,
    "pusher:pong": _pong,
    "pusher:subscribe": _subscribe,
    "pusher:unsubscribe": _unsubscribe,
}


# --- TTL deletes (DynamoDB Streams) -----------------------------------------------------------

#: how DynamoDB Streams marks a delete made by TTL (DynamoDB Developer Guide, "DynamoDB Streams
#: and Time to Live")
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


def on_registry_stream(event: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``registry_stream`` function: TTL deletes of the registry become
    ``member_removed``, for connections API Gateway never reported closed (no ``$disconnect``)
    and no push ever met (no GoneException).

    Reads REMOVE records made by TTL (``userIdentity`` = ``{"type": "Service", "principalId":
    "dynamodb.amazonaws.com"}``; the event source mapping filters on it too) with the old image
    (``StreamViewType`` ``OLD_IMAGE``):

    * a presence subscription item (``member_user_id``): the connection leaves the member;
      ``member_removed`` when it was the member's last connection;
    * a member item: the roster's member count is recounted
      (:func:`chalicelib.registry.presence.presence_recount`: never below 0, and a record
      delivered twice counts once); ``member_removed`` when it still held connections.

    Other records are skipped. Returns ``{"batchItemFailures": []}`` (a record that fails is
    logged, never retried: the stream must not stall on it). Never raises.
    """
    records = event.get("Records") if isinstance(event, Mapping) else None
    handled = 0
    for record in records if isinstance(records, list) else []:
        try:
            if not isinstance(record, Mapping) or record.get("eventName") != "REMOVE" \
                    or record.get("userIdentity") != TTL_IDENTITY:
                continue
            old = (record.get("dynamodb") or {}).get("OldImage") or {}
            pk = old.get("connection_id", {}).get("S", "")
            sk = old.get("sk", {}).get("S", "")
            member = old.get("member_user_id", {}).get("S")
            if member and sk.startswith(table.CHANNEL_SK_PREFIX):
                _member_left(sk[len(table.CHANNEL_SK_PREFIX):], member, pk, None)
                handled += 1
            elif pk.startswith(presence.PRESENCE_PK_PREFIX) \
                    and sk.startswith(presence.MEMBER_SK_PREFIX):
                channel = pk[len(presence.PRESENCE_PK_PREFIX):]
                user_id = sk[len(presence.MEMBER_SK_PREFIX):]
                if old.get("connections", {}).get("SS"):
                    _webhooks_out().member_removed(channel, user_id)
                    _broadcast(channel, protocol.encode(
                        "pusher_internal:member_removed", {"user_id": user_id}, channel),
                        exclude=None, event=None)
                # the member item went without the leave's transaction: the roster's count
                # is set to the member items left (idempotent: a record seen twice counts once)
                presence.presence_recount(channel)
                handled += 1
        except Exception:
            log.exception("registry stream record %s not handled",
                          for_log(str(record.get("eventID")) if isinstance(record, Mapping)
                                  else "?"))
    if handled:
        log.info("registry stream: %d TTL deletes turned into member_removed", handled)
    return {"batchItemFailures": []}
