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
from chalicelib.registry import connections

log = logging.getLogger("realtime.ws")


def _raw(event: Any) -> Dict[str, Any]:
    raw = event.to_dict() if hasattr(event, "to_dict") else event
    return raw if isinstance(raw, dict) else {}


def _context(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    context = raw.get("requestContext")
    return context if isinstance(context, Mapping) else {}

def _speaks_pusher(raw: Mapping[str, Any], connecting: bool = False) -> bool:
    """Dispatch by dialect (:mod:`chalicelib.dialects.pusher.socket`): the authorizer context marks a
    Pusher connection on every event; without ``ws_authorizer`` a ``$connect`` is Pusher when
    its query asks for it (and the stage serves it), a frame when it has ``event`` and no
    ``action`` (its handler then checks the registry's dialect)."""
    if pusher_socket.is_pusher_event(raw):
        return True
    authorizer = _context(raw).get("authorizer")
    if isinstance(authorizer, Mapping) and authorizer.get("sub"):
        return False
    if connecting:
        return pusher_socket.requested(raw)
    body = raw.get("body")
    if isinstance(body, str) and '"event"' in body and '"action"' not in body:
        return pusher_socket.enabled()
    return False


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
    raw = _raw(event)
    if _speaks_pusher(raw, connecting=True):
        return pusher_socket.on_connect(raw)
    return native.on_connect(raw)


def on_message(event: Any, app: Any = None) -> Dict[str, int]:
    """``$default``: one frame, handed to the connection's dialect. Returns
    ``{"statusCode": 200}``; never raises."""
    raw = _raw(event)
    if _speaks_pusher(raw):
        return pusher_socket.on_message(raw, event)
    return native.on_message(raw, event)


def on_disconnect(event: Any, app: Any = None) -> Dict[str, int]:
    """``$disconnect``: remove the connection and its subscriptions. Idempotent; a registry
    failure is logged (the TTL removes the items later). Returns ``{"statusCode": 200}``."""
    connection_id = _context(_raw(event)).get("connectionId")
    if isinstance(connection_id, str) and connection_id:
        try:
            removed = connections.remove_connection(connection_id)
            log.info("disconnected %s; removed %d registry items", connection_id, removed)
        except AppError as err:
            log_error(err, "$disconnect")
    return {"statusCode": 200}
