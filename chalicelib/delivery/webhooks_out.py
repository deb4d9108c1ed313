"""Webhooks out (issue 10, section D): events of our own WebSocket API, in the shape Pusher
sends its webhooks (Pusher docs, "Server API" -> "Webhooks": ``{"time_ms", "events": [{"name",
"channel", ...}]}``), dispatched to the app's own handlers of :mod:`chalicelib.delivery.webhooks` —
the same handlers a Pusher (or soketi) webhook reaches through ``POST /pusher/webhooks``.

* ``channel_occupied`` (a channel's first live subscription) and ``channel_vacated`` (its last
  one gone), from the registry's channel occupancy bookkeeping
  (:data:`chalicelib.registry.occupancy.OCCUPANCY_LISTENERS`, which this module joins when
  imported; ``app.py`` imports it);
* ``member_added``/``member_removed`` (:func:`member_added`, :func:`member_removed`), called by
  :mod:`chalicelib.dialects.pusher.socket` where presence members come and go (subscribe, unsubscribe,
  ``$disconnect``, GoneException cleanup, TTL deletes from the registry stream);
* ``client_event`` (:func:`client_event`), called by both dialects once a client event is
  relayed;
* ``cache_miss`` (:func:`cache_miss`), when a cache channel's subscriber finds no cached event.

Handlers run inside the invocation where the event happened; one that raises is logged and never
fails it, and :func:`emit` never raises. When ``PUSHER_WEBHOOKS`` names external targets, the
events are also POSTed to them, signed with ``X-Pusher-Key``/``X-Pusher-Signature``, through
the push queue (:mod:`chalicelib.delivery.webhook_sender`): the socket operation never waits on them.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Dict, List, Optional

from chalicelib.delivery import webhook_sender, webhooks
from chalicelib.registry import occupancy

log = logging.getLogger("realtime.webhooks_out")


def emit(events: List[Dict[str, Any]], *, time_ms: Optional[int] = None) -> webhooks.DispatchResult:
    """Dispatch events to the app's handlers (:data:`chalicelib.delivery.webhooks.HANDLERS`), and
    queue them for the external targets that want them
    (:func:`chalicelib.delivery.webhook_sender.submit`).

    Args:
        events: Pusher webhook events (``{"name", "channel", ...}``).
        time_ms: the webhook's time, milliseconds since the epoch (defaults to now).
    Returns:
        the :class:`chalicelib.delivery.webhooks.DispatchResult` (all zero but ``received`` when the
        dispatch itself failed). Never raises: the socket operation that raised the event
        must not fail because of a webhook.
    """
    when = int(time.time() * 1000) if time_ms is None else time_ms
    try:
        webhook_sender.submit(events, when)
    except Exception:  # submit never raises; a bug there must not fail the socket operation
        log.exception("webhooks out to external targets failed")
    try:
        return webhooks.HANDLERS.dispatch(events, when)
    except Exception:  # e.g. the metrics line; handlers' own errors are caught by dispatch
        log.exception("webhook dispatch failed")
        return webhooks.DispatchResult(received=len(events), handled=0, failed=len(events),
                                       skipped=0)


def member_added(channel_name: str, user_id: str) -> None:
    """``member_added`` ``{"channel", "user_id"}``: a user's first connection joined a presence
    channel (Pusher docs, "Webhooks" -> "Presence events")."""
    emit([{"name": "member_added", "channel": channel_name, "user_id": user_id}])


def member_removed(channel_name: str, user_id: str) -> None:
    """``member_removed`` ``{"channel", "user_id"}``: a user's last connection left a presence
    channel (Pusher docs, "Webhooks" -> "Presence events")."""
    emit([{"name": "member_removed", "channel": channel_name, "user_id": user_id}])


def client_event(channel_name: str, event_name: str, data: Any, connection_id: str,
                 user_id: Optional[str] = None) -> None:
    """``client_event`` ``{"channel", "event", "data", "socket_id", "user_id"?}`` (Pusher docs,
    "Webhooks" -> "Client events"): a client event relayed to a channel.

    Args:
        channel_name: the private or presence channel.
        event_name: the ``client-…`` event name.
        data: the event's data; sent as Pusher does, a string (a non-string value as its
            compact JSON text).
        connection_id: the sender's connection id; the event carries its Pusher
            ``socket_id`` (:func:`chalicelib.protocol.pusher.socket_id_for`), for native
            connections too.
        user_id: the sender's member user id; given only on presence channels.
    """
    from chalicelib.protocol import pusher

    try:
        socket_id = pusher.socket_id_for(connection_id)
    except ValueError:  # an id too long for a socket id: never API Gateway's
        socket_id = ""
    event: Dict[str, Any] = {
        "name": "client_event", "channel": channel_name, "event": event_name,
        "data": data if isinstance(data, str) else json.dumps(
            data, separators=(",", ":"), ensure_ascii=False),
        "socket_id": socket_id}
    if user_id:
        event["user_id"] = user_id
    emit([event])


def cache_miss(channel_name: str) -> None:
    """``cache_miss`` ``{"channel"}``: a cache channel was subscribed to with no cached event
    (Pusher docs, "Webhooks" -> "Cache miss")."""
    emit([{"name": "cache_miss", "channel": channel_name}])


def on_occupancy(channel_name: str, occupied: bool) -> None:
    """The occupancy listener: ``channel_occupied`` or ``channel_vacated`` for a channel."""
    emit([{"name": "channel_occupied" if occupied else "channel_vacated",
           "channel": channel_name}])


if on_occupancy not in occupancy.OCCUPANCY_LISTENERS:
    occupancy.OCCUPANCY_LISTENERS.append(on_occupancy)
