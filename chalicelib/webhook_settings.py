"""Settings of the webhooks out to external URLs (``PUSHER_WEBHOOKS``), read and checked at
load: what :mod:`chalicelib.delivery.webhook_sender` may send, and where. Split from
:mod:`chalicelib.settings` (whose primitive readers it uses) to keep each room small.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Optional, Tuple
from urllib.parse import urlsplit

from chalicelib import addresses, settings
from chalicelib.errors import ConfigError
from chalicelib.settings import _check_url, _json_list, _raw, app_settings, url_scheme


# --- webhooks out to external URLs -------------------------------------------------------------

#: the webhook events this server sends (:mod:`chalicelib.delivery.webhooks_out`; Pusher docs, "Server
#: API" -> "Webhooks"); Pusher's ``subscription_count`` is not among them
WEBHOOK_EVENT_TYPES = ("channel_occupied", "channel_vacated", "member_added", "member_removed",
                       "client_event", "cache_miss")
#: targets at most: one ``SendMessageBatch`` (10 entries) carries an invocation's webhooks
MAX_WEBHOOK_TARGETS = 10
#: headers a target's ``headers`` may not set: the request's framing and Pusher's own
WEBHOOK_RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "connection",
                                      "transfer-encoding", "x-pusher-key",
                                      "x-pusher-signature"})
_WEBHOOK_FIELDS = ("url", "event_types", "filter", "headers")
_WEBHOOK_FILTERS = ("channel_name_starts_with", "channel_name_ends_with")
#: an HTTP header name (RFC 9110 §5.1: a token); ``fullmatch`` only (``$`` would let a final
#: newline through)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}", re.ASCII)


def _header_value_ok(value: object) -> bool:
    """A header value http.client can send as it is: a string of at most 4096 characters, all
    Latin-1 (it encodes values so: ``€`` or U+2028 would fail every delivery), no control
    character but tab (C0, DEL, C1)."""
    return isinstance(value, str) and len(value) <= 4096 and all(
        char == "\t" or (32 <= ord(char) < 127) or 160 <= ord(char) <= 255 for char in value)


@dataclass(frozen=True)
class WebhookTarget:
    """One external webhook target of ``PUSHER_WEBHOOKS`` (soketi's app ``webhooks`` entry:
    ``{"url", "event_types", "filter"?, "headers"?}``).

    Attributes:
        url: where the webhooks are POSTed (https; plain http to a loopback host on the dev
            stage only). May carry a secret path or query: never logged beyond scheme and host.
        event_types: names of :data:`WEBHOOK_EVENT_TYPES` this target receives.
        channel_name_starts_with, channel_name_ends_with: soketi's ``filter``: only events
            whose channel starts / ends so (None: any channel).
        headers: extra request headers ``((name, value), ...)``, e.g. the receiver's own
            ``Authorization``; never one of :data:`WEBHOOK_RESERVED_HEADERS` nor
            ``X-Pusher-*``; values Latin-1 without control characters.
    """

    url: str
    event_types: frozenset
    channel_name_starts_with: Optional[str] = None
    channel_name_ends_with: Optional[str] = None
    headers: Tuple[Tuple[str, str], ...] = ()


def _webhook_url(where: str, url: object, stage: str) -> str:
    """A target's URL, checked as :func:`_check_url` checks key-set URLs, plus: plain http on
    the dev stage only, no user info (credentials go in ``headers``), a valid port, and no
    link-local or instance-metadata address given literally
    (:func:`chalicelib.addresses.forbidden_host`)."""
    message = f"{where} must be an https URL (http only for localhost on the dev stage)"
    if not isinstance(url, str):
        raise ConfigError(message)
    _check_url(where, url)
    parts = urlsplit(url)
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{where} has an invalid port") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{where} must not carry user info; put credentials in 'headers'")
    if addresses.forbidden_host(parts.hostname):
        raise ConfigError(f"{where} must not be a link-local or instance-metadata address "
                          "(169.254.0.0/16, fe80::/10, fd00:ec2::/32, in any spelling)")
    if url_scheme(url) == "http" and stage != "dev":
        raise ConfigError(f"{where}: plain-http (local dev) targets are only allowed on the "
                          "dev stage")
    return url


def _webhook_target(where: str, entry: object, stage: str) -> WebhookTarget:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object with 'url' and 'event_types'")
    for name in entry:
        if name not in _WEBHOOK_FIELDS:
            raise ConfigError(f"{where}.{str(name)[:40]} is not supported (fields: "
                              f"{', '.join(_WEBHOOK_FIELDS)}; only URL targets)")
    url = _webhook_url(f"{where}.url", entry.get("url"), stage)
    types = entry.get("event_types")
    if not isinstance(types, list) or not types or not all(
            isinstance(name, str) and name in WEBHOOK_EVENT_TYPES for name in types):
        raise ConfigError(f"{where}.event_types must be a non-empty list of: "
                          f"{', '.join(WEBHOOK_EVENT_TYPES)}")
    filters = entry.get("filter") or {}
    if not isinstance(filters, dict) or not all(
            name in _WEBHOOK_FILTERS and isinstance(value, str)
            for name, value in filters.items()):
        raise ConfigError(f"{where}.filter must be an object of strings: "
                          f"{', '.join(_WEBHOOK_FILTERS)}")
    headers = entry.get("headers") or {}
    if not isinstance(headers, dict) or len(headers) > 20:
        raise ConfigError(f"{where}.headers must be an object of at most 20 name: value")
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in WEBHOOK_RESERVED_HEADERS \
                or name.lower().startswith("x-pusher-") or not _header_value_ok(value):
            raise ConfigError(f"{where}.headers: each name must be a header token other than "
                              "Content-Type, Content-Length, Host, Connection, "
                              "Transfer-Encoding, X-Pusher-*, and each value a string of "
                              "Latin-1 characters without control characters")
    return WebhookTarget(url=url, event_types=frozenset(types),
                         channel_name_starts_with=filters.get("channel_name_starts_with"),
                         channel_name_ends_with=filters.get("channel_name_ends_with"),
                         headers=tuple(headers.items()))


@functools.lru_cache(maxsize=None)
def webhook_targets() -> Tuple[WebhookTarget, ...]:
    """Load ``PUSHER_WEBHOOKS``: a JSON list of :class:`WebhookTarget` entries, e.g.
    ``[{"url": "https://hooks.example.com/pusher", "event_types": ["member_added"]}]``
    (soketi's app ``webhooks`` shape; its Lambda targets are not supported).

    Returns:
        the targets; ``()`` when unset or ``[]`` (webhooks out go to the app's own handlers
        only).
    Raises:
        ConfigError: invalid JSON, more than :data:`MAX_WEBHOOK_TARGETS` entries, an entry's
            field wrong (named as ``PUSHER_WEBHOOKS[i].field``; a URL is never echoed), an
            unknown event type, a URL listed twice, a link-local or metadata address, a header
            name that is not a token (a final newline included) or is ``X-Pusher-*``, a header
            value outside Latin-1 or with a control character.
    """
    name = "PUSHER_WEBHOOKS"
    raw = _raw(name)
    if raw is None:
        return ()
    entries = _json_list(name, raw)
    if len(entries) > MAX_WEBHOOK_TARGETS:
        raise ConfigError(f"{name} may list at most {MAX_WEBHOOK_TARGETS} targets")
    stage = app_settings().stage
    targets = []
    for index, entry in enumerate(entries):
        target = _webhook_target(f"{name}[{index}]", entry, stage)
        if any(other.url == target.url for other in targets):
            raise ConfigError(f"{name}[{index}].url is already listed; list each URL once")
        targets.append(target)
    return tuple(targets)


settings.OTHER_LOADERS.append(webhook_targets)
