"""The WebSocket door: ``$connect``, ``$default`` and ``$disconnect`` dispatched by the
connection's dialect to :mod:`chalicelib.dialects.native` or
:mod:`chalicelib.dialects.pusher.socket`. Both dialects leave through the same
``$disconnect``: the connection and its subscriptions are removed from the registry (the Pusher
dialect's removal hook turns presence memberships into ``member_removed``).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping

from chalicelib.dialects import native
from chalicelib.dialects.pusher import socket as pusher_socket
from chalicelib.errors import AppError, log_error
from chalicelib.protocol.gateway import raw_event, request_context
from chalicelib.registry import connections

log = logging.getLogger("realtime.ws")



def dialect_of(raw: Mapping[str, Any], connecting: bool = False) -> str:
    """The dialect of the connection an event belongs to: ``connections.NATIVE`` or
    ``connections.PUSHER``; never judged from a frame's shape.

    API Gateway repeats the ``$connect`` authorizer's context on every event of a connection
    (AWS docs, "Controlling access to WebSocket APIs with AWS Lambda REQUEST authorizers"):
    ``ws_authorizer`` marks a Pusher connect ``{"dialect": "pusher"}``
    (:func:`chalicelib.dialects.pusher.socket.authorizer_answer`) and gives a native one its
    principal (``sub``). Without an authorizer context (an API deployed without
    ``ws_authorizer``) a ``$connect`` is Pusher when its query string carries ``protocol`` and
    the stage serves it (:func:`chalicelib.dialects.pusher.socket.requested`); a later event
    takes the dialect the registry recorded for the connection (one Query), native when
    unknown (the native handler then refuses an unregistered connection).
    """
    authorizer = request_context(raw).get("authorizer")
    if isinstance(authorizer, Mapping):
        if pusher_socket.is_pusher_event(raw):
            return connections.PUSHER
        if authorizer.get("sub"):
            return connections.NATIVE
    if connecting:
        return connections.PUSHER if pusher_socket.requested(raw) else connections.NATIVE
    connection_id = request_context(raw).get("connectionId")
    if not isinstance(connection_id, str) or not connection_id:
        return connections.NATIVE
    try:
        return connections.dialect_of(connection_id) or connections.NATIVE
    except AppError as err:
        log_error(err, "$default dialect")
        return connections.NATIVE


def on_connect(event: Any, app: Any = None) -> Dict[str, int]:
    """``$connect``: handed to the connection's dialect.

    Args:
        event: Chalice ``WebsocketEvent`` (or the raw API Gateway event dict).
        app: the Chalice app (unused; kept for a uniform handler signature).
    Returns:
        ``{"statusCode": 200}``, or the refusal's status (401, 503...): API Gateway then
        refuses the handshake (:func:`chalicelib.dialects.native.on_connect`,
        :func:`chalicelib.dialects.pusher.socket.on_connect`).
    """
    raw = raw_event(event)
    if dialect_of(raw, connecting=True) == connections.PUSHER:
        return pusher_socket.on_connect(raw)
    return native.on_connect(raw)


def on_message(event: Any, app: Any = None) -> Dict[str, int]:
    """``$default``: one frame, handed to the connection's dialect. Returns
    ``{"statusCode": 200}``; never raises."""
    raw = raw_event(event)
    if dialect_of(raw) == connections.PUSHER:
        return pusher_socket.on_message(raw, event)
    return native.on_message(raw, event)


def on_disconnect(event: Any, app: Any = None) -> Dict[str, int]:
    """``$disconnect``: remove the connection and its subscriptions. Idempotent; a registry
    failure is logged (the TTL removes the items later). Returns ``{"statusCode": 200}``."""
    connection_id = request_context(raw_event(event)).get("connectionId")
    if isinstance(connection_id, str) and connection_id:
        try:
            removed = connections.remove_connection(connection_id)
            log.info("disconnected %s; removed %d registry items", connection_id, removed)
        except AppError as err:
            log_error(err, "$disconnect")
    return {"statusCode": 200}
