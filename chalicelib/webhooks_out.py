"""Webhooks out (issue 10, section D): events of our own WebSocket API, in the shape Pusher
sends its webhooks (Pusher docs, "Server API" -> "Webhooks": ``{"time_ms", "events": [{"name",
"channel", ...}]}``), dispatched to the app's own handlers of :mod:`chalicelib.webhooks` — the
same handlers a Pusher (or soketi) webhook reaches through ``POST /pusher/webhooks``.

First slice: ``channel_occupied`` (a channel's first live subscription) and
``channel_vacated`` (its last one gone), from the registry's channel occupancy bookkeeping
(:data:`chalicelib.connections.OCCUPANCY_LISTENERS`, which this module joins when imported;
``app.py`` imports it). Handlers run inside the invocation that changed the subscription
(``$default``, ``$disconnect``, a GoneException cleanup); one that raises is logged and never
fails it. Not yet: ``member_added``/``member_removed``, ``client_event``, ``cache_miss``, and
POSTing to external URLs signed with ``X-Pusher-Key``/``X-Pusher-Signature`` with retries
through the queue.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional

from chalicelib import connections, webhooks

log = logging.getLogger("realtime.webhooks_out")


def emit(events: List[Dict[str, Any]], *, time_ms: Optional[int] = None) -> webhooks.DispatchResult:
    """Dispatch events to the app's handlers (:data:`chalicelib.webhooks.HANDLERS`).

    Args:
        events: Pusher webhook events (``{"name", "channel", ...}``).
        time_ms: the webhook's time, milliseconds since the epoch (defaults to now).
    Returns:
        the :class:`chalicelib.webhooks.DispatchResult`. Never raises for a handler's error.
    """
    when = int(time.time() * 1000) if time_ms is None else time_ms
    return webhooks.HANDLERS.dispatch(events, when)


def on_occupancy(channel_name: str, occupied: bool) -> None:
    """The occupancy listener: ``channel_occupied`` or ``channel_vacated`` for a channel."""
    emit([{"name": "channel_occupied" if occupied else "channel_vacated",
           "channel": channel_name}])


if on_occupancy not in connections.OCCUPANCY_LISTENERS:
    connections.OCCUPANCY_LISTENERS.append(on_occupancy)
