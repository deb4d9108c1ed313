"""Pusher Channels protocol 7 on the wire: framing, socket ids, handshake checks and channel
signatures. Pure: no I/O, no AWS SDK (the handlers that use it are in
:mod:`chalicelib.dialects.pusher.socket`).

Sources: Pusher docs, "Pusher Channels Protocol" (connection, ``pusher:*`` events and error
codes), "Authentication and authorization signatures" (HMAC-SHA256 of
``socket_id:channel_name[:channel_data]`` with the app secret, hex, sent as ``key:signature``);
pusher-js 8 (``src/core/connection/protocol/protocol.ts``: what the client decodes) and soketi
(``src/ws-handler.ts``) as reference behaviour.

Frames: every message is a JSON object ``{"event": E, "channel"?: C, "data": D}``. What the
server sends carries ``data`` as a JSON-encoded *string*, as Pusher sends it (pusher-js parses a
string ``data`` once more; an event whose data is already a string is sent unchanged, as
Pusher's HTTP API does). What clients send (``pusher:subscribe``...) carries ``data`` as an
object.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from chalicelib import jsonutil
from chalicelib.errors import clip

#: the current protocol version (pusher-js 3+ speaks 7)
PROTOCOL_VERSION = 7
#: the versions served: those Pusher serves ("Pusher Channels Protocol": "Protocols 1, 2, and 3
#: are no longer supported"; soketi checks no version at all). Their changelog makes them one
#: protocol for this server: 4 added ``subscription_succeeded`` for public and private
#: channels (sent to all); 5 has clients answer a server's ``pusher:ping`` (this server sends
#: none, and takes an unasked ``pusher:pong`` silently); 6 closes a connection on error with a
#: close code and no ``pusher:error`` (API Gateway's DeleteConnection closes without a chosen
#: code, so every version gets the ``pusher:error``, then the close: pysher 1.0.8, which speaks
#: 6, reads its code); 7 only renamed Pusher to Channels. pysher 1.0.8 sends ``protocol=6``.
SUPPORTED_PROTOCOL_VERSIONS = (4, 5, 6, 7)
#: seconds of silence after which a client pings (pusher-js uses min(server's, its own
#: option)); API Gateway closes a socket idle for 10 minutes, so anything up to 120 s keeps
#: pusher-js's ping well inside it
ACTIVITY_TIMEOUT_SECONDS = 120
#: the query-string parameter that names the protocol version (pusher-js sends ``protocol=7``)
PROTOCOL_PARAMETER = "protocol"
#: where the app key is read when the path cannot be seen (see :func:`handshake_error`)
APP_KEY_PARAMETER = "app_key"

SOCKET_ID_RE = re.compile(r"[0-9]+\.[0-9]+", re.ASCII)
#: longest socket id made or accepted, characters
MAX_SOCKET_ID_LENGTH = 200
_VERSION_RE = re.compile(r"[0-9]{1,6}", re.ASCII)

# pusher:error codes (Pusher docs, "Pusher Channels Protocol" -> "Error Codes"): 4000-4099 the
# client must not reconnect as it is; 4100-4199 reconnect with back-off; 4200-4299 reconnect
# at once; 4300+ errors that do not close the connection (soketi uses 4301 for client events).
APP_DOES_NOT_EXIST = 4001
INVALID_VERSION_FORMAT = 4006
UNSUPPORTED_PROTOCOL_VERSION = 4007
NO_PROTOCOL_VERSION = 4008
UNAUTHORIZED_CONNECTION = 4009
OVER_CAPACITY = 4100
RECONNECT_NOW = 4200
CLIENT_EVENT_REJECTED = 4301

#: the channel of a signed-in user's events: ``#server-to-user-<user id>`` (the ``pusher``
#: libraries' ``send_to_user`` triggers on it; pusher-js's user facade subscribes to it after
#: ``pusher:signin``: pusher-js src/core/user.ts)
USER_CHANNEL_PREFIX = "#server-to-user-"

#: flag byte that starts the first number of a socket id: the connection id was canonical
#: base64 (API Gateway's form) and the number holds its decoded bytes; else its UTF-8 bytes
_FLAG_BASE64 = 1
_FLAG_TEXT = 2


class ProtocolError(ValueError):
    """A message or handshake the protocol refuses.

    Attributes:
        code: the ``pusher:error`` code, or None (Pusher sends errors without a code for
            problems that have none).
        message: human-readable reason (never quotes secrets; may name the field at fault).
    """

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- socket ids -------------------------------------------------------------------------------

def _canonical_base64(text: str) -> Optional[bytes]:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if raw and base64.b64encode(raw).decode("ascii") == text else None


def socket_id_for(connection_id: str) -> str:
    """Pusher's ``socket_id`` (``^\\d+\\.\\d+$``) of an API Gateway connection id, reversible
    without a lookup (:func:`connection_id_for`).

    The id's bytes (its base64 decoding when the id is canonical base64, as API Gateway's
    ``L0SM9cOFvHcCIhw=`` are; else its UTF-8 text) are cut in two halves; each half, behind a
    non-zero marker byte that keeps leading zero bytes, is read as one big-endian integer.
    An API Gateway id (11 bytes) gives two numbers of about 15 digits each.

    Args:
        connection_id: a non-empty connection id.
    Returns:
        ``"<digits>.<digits>"``, at most :data:`MAX_SOCKET_ID_LENGTH` characters (every id of
        up to 64 bytes fits).
    Raises:
        ValueError: an empty id, or one too long for a socket id.
    """
    if not isinstance(connection_id, str) or not connection_id:
        raise ValueError("connection id must be a non-empty string")
    raw = _canonical_base64(connection_id)
    flag = _FLAG_BASE64
    if raw is None:
        raw, flag = connection_id.encode("utf-8"), _FLAG_TEXT
    half = len(raw) // 2
    first = int.from_bytes(bytes([flag]) + raw[:half], "big")
    second = int.from_bytes(b"\x01" + raw[half:], "big")
    socket_id = f"{first}.{second}"
    if len(socket_id) > MAX_SOCKET_ID_LENGTH:  # an id of over ~80 bytes: never API Gateway's
        raise ValueError("connection id too long to make a socket id")
    return socket_id


def connection_id_for(socket_id: Any) -> str:
    """The connection id a :func:`socket_id_for` socket id was made from.

    Raises:
        ValueError: not a socket id of this form (wrong shape, marker or text encoding).
    """
    if not isinstance(socket_id, str) or len(socket_id) > MAX_SOCKET_ID_LENGTH \
            or not SOCKET_ID_RE.fullmatch(socket_id):
        raise ValueError("not a socket id")
    first_text, second_text = socket_id.split(".")
    first, second = int(first_text), int(second_text)
    head = first.to_bytes((first.bit_length() + 7) // 8, "big")
    tail = second.to_bytes((second.bit_length() + 7) // 8, "big")
    if not head or not tail or tail[0] != 1 or head[0] not in (_FLAG_BASE64, _FLAG_TEXT):
        raise ValueError("not a socket id of this server")
    raw = head[1:] + tail[1:]
    if head[0] == _FLAG_BASE64:
        return base64.b64encode(raw).decode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not a socket id of this server") from None


# --- handshake --------------------------------------------------------------------------------

def requests_pusher(query: Optional[Mapping[str, Any]]) -> bool:
    """True when a ``$connect`` query string asks for the Pusher protocol: it carries
    ``protocol`` (pusher-js always sends ``protocol=7``; native clients never send it)."""
    return isinstance(query, Mapping) and PROTOCOL_PARAMETER in query


def handshake_error(query: Optional[Mapping[str, Any]], app_key: str) -> Optional[ProtocolError]:
    """Check a Pusher ``$connect``: protocol version, then app key.

    The app key is in the URL path (``/app/{key}``) for pusher-js; API Gateway does not pass
    the path to Lambda, and a WebSocket API takes no multi-level API mapping, so the path is
    rewritten before it: on AWS by the custom domain's CloudFront Function
    (``/app/{key}?…`` → ``/{stage}?…&app_key={key}``, README "Custom domains"), locally by the
    local gateway. The key is read from the ``app_key`` query parameter (a client may also send
    it itself) and must equal ``PUSHER_KEY``.

    Args:
        query: ``queryStringParameters`` of the ``$connect`` event.
        app_key: ``PUSHER_KEY``.
    Returns:
        None when the connection may go on, else the :class:`ProtocolError` to send
        (4008 no version, 4006 a version that is not a number, 4007 a version outside
        :data:`SUPPORTED_PROTOCOL_VERSIONS` (4-7), 4001 another app key), as Pusher answers
        them.
    """
    query = query if isinstance(query, Mapping) else {}
    version = query.get(PROTOCOL_PARAMETER)
    if version is None or version == "":
        return ProtocolError("No protocol version supplied", NO_PROTOCOL_VERSION)
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        return ProtocolError("Invalid version string format", INVALID_VERSION_FORMAT)
    if int(version) not in SUPPORTED_PROTOCOL_VERSIONS:
        return ProtocolError(
            f"Unsupported protocol version {int(version)}; this server speaks "
            f"{SUPPORTED_PROTOCOL_VERSIONS[0]}-{SUPPORTED_PROTOCOL_VERSIONS[-1]}",
            UNSUPPORTED_PROTOCOL_VERSION)
    given = query.get(APP_KEY_PARAMETER)
    if given is not None and not hmac.compare_digest(str(given).encode("utf-8"),
                                                     app_key.encode("utf-8")):
        return ProtocolError("App key does not exist", APP_DOES_NOT_EXIST)
    return None


# --- frames -----------------------------------------------------------------------------------

def encode(event: str, data: Any = None, channel: Optional[str] = None,
           **extra: Any) -> str:
    """One server frame as text: ``{"event", "channel"?, "data": <JSON string>}``.

    Args:
        event: the event name.
        data: any JSON value; a ``str`` is sent as it is (already the event's data text),
            anything else JSON-encoded into a string (None gives ``"null"``).
        channel: the channel, when the event belongs to one.
        extra: other members (``user_id`` of a client event on a presence channel).
    Raises:
        TypeError, ValueError: ``data`` is not JSON-serializable.
    """
    frame: Dict[str, Any] = {"event": event}
    if channel is not None:
        frame["channel"] = channel
    frame["data"] = data if isinstance(data, str) else _compact(data)
    frame.update(extra)
    return _compact(frame)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def connection_established(socket_id: str,
                           activity_timeout: int = ACTIVITY_TIMEOUT_SECONDS) -> str:
    """``pusher:connection_established`` with ``{"socket_id", "activity_timeout"}``."""
    return encode("pusher:connection_established",
                  {"socket_id": socket_id, "activity_timeout": activity_timeout})


def error(message: str, code: Optional[int] = None) -> str:
    """``pusher:error`` with ``{"code", "message"}`` (``code`` may be null, as Pusher's
    protocol allows).

    The message is cut to :data:`chalicelib.errors.MAX_ECHO_CHARS` characters
    (:func:`chalicelib.errors.clip`): whatever input it quotes, the frame stays a few KB, far
    inside API Gateway's 128 KB message quota (a frame over it is dropped: silence).
    """
    return encode("pusher:error", {"code": code, "message": clip(message)})


def pong() -> str:
    """``pusher:pong`` (answer to ``pusher:ping``)."""
    return encode("pusher:pong", {})


def subscription_succeeded(channel: str, data: Any = None) -> str:
    """``pusher_internal:subscription_succeeded`` (``data`` ``{}`` except on presence
    channels)."""
    return encode("pusher_internal:subscription_succeeded", {} if data is None else data,
                  channel)


def subscription_error(channel: str, status: int, message: str,
                       error_type: str = "AuthError") -> str:
    """``pusher:subscription_error`` with ``{"type", "error", "status"}`` (pusher-js hands
    ``data`` to the channel's ``subscription_error`` callbacks; soketi sends the same
    shape).

    The channel and the message are each cut to :data:`chalicelib.errors.MAX_ECHO_CHARS`
    characters (:func:`chalicelib.errors.clip`, ending in ``…``): every valid channel name
    (164 characters at most) comes back exactly, so pusher-js finds its channel; a name of
    131,000 characters still gets an answer of a few KB instead of a frame over API Gateway's
    128 KB quota, which would be dropped.
    """
    return encode("pusher:subscription_error",
                  {"type": clip(error_type, 64), "error": clip(message), "status": status},
                  clip(channel))


def event_frame(event: str, data: Any, channel: Optional[str] = None,
                user_id: Optional[str] = None) -> str:
    """An application event as a Pusher client receives it (``user_id`` only for client
    events on presence channels)."""
    extra = {"user_id": user_id} if user_id is not None else {}
    return encode(event, data, channel, **extra)


def parse_message(text: Any) -> Tuple[str, Any, Optional[str]]:
    """Read one client frame.

    Args:
        text: the frame's text.
    Returns:
        ``(event, data, channel)``: ``data`` as sent (pusher-js sends objects; a string is
        parsed when it holds a JSON object, as Pusher accepts both), ``channel`` or None.
    Raises:
        ProtocolError: not strict JSON (:func:`chalicelib.jsonutil.loads`), not an object,
            no string ``event``, a ``channel`` that is not a string.
    """
    if not isinstance(text, str) or not text.strip():
        raise ProtocolError("Empty or binary message; send a JSON object with an \"event\"")
    try:
        frame = jsonutil.loads(text)
    except jsonutil.JSONRejected as err:
        raise ProtocolError(f"Message refused: {err.reason}") from None
    if not isinstance(frame, dict):
        raise ProtocolError("A message must be a JSON object")
    event = frame.get("event")
    if not isinstance(event, str) or not event or len(event) > 200:
        raise ProtocolError("A message needs an \"event\" string of 1-200 characters")
    channel = frame.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise ProtocolError("\"channel\" must be a string")
    data = frame.get("data")
    if isinstance(data, str) and data.lstrip().startswith("{"):
        try:
            parsed = jsonutil.loads(data)
        except jsonutil.JSONRejected:
            parsed = None
        if isinstance(parsed, dict):
            data = parsed
    return event, data, channel


# --- signatures -------------------------------------------------------------------------------

def channel_signature(secret: str, socket_id: str, channel_name: str,
                      channel_data: Optional[str] = None) -> str:
    """HMAC-SHA256 (hex) of ``socket_id:channel_name`` (``:channel_data`` for presence) with
    the app secret (Pusher docs, "Authentication and authorization signatures")."""
    text = f"{socket_id}:{channel_name}"
    if channel_data is not None:
        text += f":{channel_data}"
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def auth_valid(auth: Any, key: str, secret: str, socket_id: str, channel_name: str,
               channel_data: Optional[str] = None) -> bool:
    """Check a subscription's ``auth`` (``"<key>:<hex signature>"``) in constant time.

    Returns:
        True when the key is ``key`` and the signature is :func:`channel_signature` of these
        values; False for anything else (not a string, no ``:``, another key or signature).
    """
    if not isinstance(auth, str) or ":" not in auth or len(auth) > 512:
        return False
    given_key, _, signature = auth.rpartition(":")
    expected = channel_signature(secret, socket_id, channel_name, channel_data)
    key_ok = hmac.compare_digest(given_key.encode("utf-8"), key.encode("utf-8"))
    signature_ok = hmac.compare_digest(signature.encode("utf-8"), expected.encode("ascii"))
    return key_ok and signature_ok


def user_signature(secret: str, socket_id: str, user_data: str) -> str:
    """HMAC-SHA256 (hex) of ``socket_id::user::user_data`` with the app secret: the
    signature of ``pusher:signin`` (Pusher docs, "Authentication and authorization signatures",
    user authentication)."""
    text = f"{socket_id}::user::{user_data}"
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def signin_valid(auth: Any, key: str, secret: str, socket_id: str, user_data: str) -> bool:
    """Check a ``pusher:signin``'s ``auth`` (``"<key>:<hex>"``) in constant time."""
    if not isinstance(auth, str) or ":" not in auth or len(auth) > 512:
        return False
    given_key, _, signature = auth.rpartition(":")
    expected = user_signature(secret, socket_id, user_data)
    key_ok = hmac.compare_digest(given_key.encode("utf-8"), key.encode("utf-8"))
    signature_ok = hmac.compare_digest(signature.encode("utf-8"), expected.encode("ascii"))
    return key_ok and signature_ok
