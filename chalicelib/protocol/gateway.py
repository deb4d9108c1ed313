"""The shape of API Gateway's WebSocket events, read safely. Pure: no I/O.

An event reaches a handler as Chalice's ``WebsocketEvent`` (``to_dict()`` gives API Gateway's
event) or as that dict; its ``requestContext`` holds ``connectionId``, ``routeKey``,
``domainName``, ``stage``, ``apiId`` and the ``$connect`` authorizer's ``authorizer`` context
(AWS docs, "Setting up a WebSocket API integration request": the request context).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping


def raw_event(event: Any) -> Dict[str, Any]:
    """API Gateway's event as a dict: ``event.to_dict()`` for a Chalice event, the event itself
    when it is a dict, else ``{}``."""
    raw = event.to_dict() if hasattr(event, "to_dict") else event
    return raw if isinstance(raw, dict) else {}


def request_context(raw: Any) -> Mapping[str, Any]:
    """The ``requestContext`` of an event (a Chalice event or its dict), ``{}`` when absent or
    not a mapping."""
    if not isinstance(raw, Mapping):
        raw = raw_event(raw)
    context = raw.get("requestContext")
    return context if isinstance(context, Mapping) else {}
