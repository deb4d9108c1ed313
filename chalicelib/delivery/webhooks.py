"""Pusher webhook events, dispatched by name to handlers registered here.

:func:`chalicelib.dialects.pusher.auth.webhooks` checks the signature and the age of a webhook
(through the ``pusher`` library) and hands its ``events`` to :data:`HANDLERS`. Register a handler::

    from chalicelib.delivery.webhooks import on

    @on("member_added")
    def remember_member(event, time_ms):
        ...  # event = {"name": "member_added", "channel": "presence-…", "user_id": "…"}

Event names and fields (Pusher docs, "Server API" -> "Webhooks"): ``channel_occupied`` and
``channel_vacated`` (``channel``), ``member_added`` and ``member_removed`` (``channel``,
``user_id``), ``client_event`` (``channel``, ``event``, ``data``, ``socket_id``, ``user_id`` on
presence channels), ``cache_miss`` (``channel``), ``subscription_count`` (``channel``,
``subscription_count``). An event name without a handler gets the logging default: one INFO line
with the event name, channel and user id — never ``data`` (it is user content). Every logged
value goes through :func:`chalicelib.logtext.for_log`, so a line break in a (signed) event or
channel name cannot start a forged log line.

A handler that raises is logged and counted as failed; the other events are still handled, and
the webhook is still answered 200 (Pusher retries non-2xx answers, which would replay the events
that did succeed). This module is pure: no I/O besides logging, no Pusher import, no AWS SDK.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence

from chalicelib import observability
from chalicelib.logtext import for_log

log = logging.getLogger("realtime.webhooks")

Handler = Callable[[Dict[str, Any], int], Any]

#: event names Pusher documents (others are still dispatched, to their handlers or the default)
KNOWN_EVENTS = ("channel_occupied", "channel_vacated", "member_added", "member_removed",
                "client_event", "cache_miss", "subscription_count")

#: fields safe to log (identifiers and counters; never ``data``)
_LOGGED_FIELDS = ("channel", "user_id", "event", "socket_id", "subscription_count")


@dataclass(frozen=True)
class DispatchResult:
    """What became of one webhook's events.

    Attributes:
        received: events in the webhook.
        handled: events whose handlers all returned.
        failed: events a handler raised on.
        skipped: entries that were not an object with a string ``name``.
    """

    received: int
    handled: int
    failed: int
    skipped: int

    def to_json(self) -> Dict[str, int]:
        return {"received": self.received, "handled": self.handled, "failed": self.failed,
                "skipped": self.skipped}


def log_event(event: Mapping[str, Any], time_ms: int) -> None:
    """The default handler: one INFO line, ``webhook <name> channel=… user_id=…``, every value
    escaped with :func:`chalicelib.logtext.for_log`."""
    details = " ".join(f"{name}={for_log(event[name])}" for name in _LOGGED_FIELDS
                       if isinstance(event.get(name), (str, int)))
    log.info("webhook %s %s time_ms=%s", for_log(event.get("name")), details, for_log(time_ms))


class WebhookHandlers:
    """Handlers by event name; names without handlers fall back to :func:`log_event`."""

    def __init__(self, default: Handler = log_event) -> None:
        self._handlers: Dict[str, List[Handler]] = {}
        self.default = default

    def register(self, event_name: str, handler: Handler) -> Handler:
        """Add ``handler(event, time_ms)`` for ``event_name``; returns the handler.

        Raises:
            ValueError: an empty event name or a non-callable handler.
        """
        if not isinstance(event_name, str) or not event_name:
            raise ValueError("a webhook handler needs a non-empty event name")
        if not callable(handler):
            raise ValueError("a webhook handler must be callable")
        self._handlers.setdefault(event_name, []).append(handler)
        return handler

    def on(self, event_name: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""
        return lambda handler: self.register(event_name, handler)

    def handlers_for(self, event_name: str) -> Sequence[Handler]:
        """The handlers ``event_name`` dispatches to (the default when none is registered)."""
        return tuple(self._handlers.get(event_name) or (self.default,))

    def dispatch(self, events: Sequence[Any], time_ms: int) -> DispatchResult:
        """Run every event through its handlers, in order.

        Args:
            events: the webhook's ``events`` list (already signature-checked).
            time_ms: the webhook's ``time_ms`` (milliseconds since the epoch).
        Returns:
            a :class:`DispatchResult`.
        """
        handled = failed = skipped = 0
        for event in events:
            if not isinstance(event, dict) or not isinstance(event.get("name"), str):
                skipped += 1
                log.warning("webhook entry without a string name skipped")
                continue
            ok = True
            for handler in self.handlers_for(event["name"]):
                try:
                    handler(event, time_ms)
                except Exception:  # one bad handler must not lose the other events
                    ok = False
                    log.exception("webhook handler %s failed on %s",
                                  getattr(handler, "__name__", "?"), for_log(event["name"]))
            if ok:
                handled += 1
            else:
                failed += 1
        observability.count("WebhooksReceived", len(events))
        observability.count("WebhooksFailed", failed)
        return DispatchResult(received=len(events), handled=handled, failed=failed,
                              skipped=skipped)


#: the service's webhook handlers
HANDLERS = WebhookHandlers()


def on(event_name: str) -> Callable[[Handler], Handler]:
    """Register a handler on :data:`HANDLERS` (decorator)."""
    return HANDLERS.on(event_name)
