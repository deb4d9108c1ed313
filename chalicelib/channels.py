"""Who may join which channel: one set of rules for Pusher Channels and WebSocket subscriptions.

Rules are declared as channel-name patterns with named parameters, in the spirit of Laravel's
``Broadcast::channel('user.{id}', fn)``, and evaluated deny-by-default::

    from chalicelib.channels import channel

    @channel("private-team-{team_id}")
    def team_member(principal, team_id):
        return team_id in principal.claims.get("groups", [])

    # or, without a decorator
    rule("presence-lobby", lambda principal: True)

* A pattern is literal text with ``{name}`` placeholders. A placeholder matches one or more
  characters of Pusher's channel-name charset (``-`` included, so ``{user_id}`` matches a UUID);
  ``{name:REGEX}`` narrows it (``{room:[a-z0-9]+}``), which disambiguates patterns with several
  placeholders. The whole name must match.
* A predicate is called as ``predicate(principal, **params)`` and allows the channel only by
  returning ``True`` (exactly: a truthy non-bool is a bug and denies). A predicate that raises
  denies and is logged.
* A rule only applies to channels of its own kind: ``private-{x}`` never matches a
  ``private-encrypted-…`` channel. Rules are tried in registration order; the first one that
  allows wins.
* Public channels (no prefix) need no rule: any authenticated principal may join them.
  ``private-``, ``private-encrypted-`` and ``presence-`` channels are refused unless a rule allows.
* Users are named by :attr:`Principal.user_id` (unique across issuers), never by ``sub``.
* What a client may publish: :func:`check_client_event` (Pusher's client-event rules), shared by
  every transport.

Channel kinds and the charset/length limits follow Pusher's documentation, "Channels" ->
"Channel naming conventions" (names up to 164 characters of ``A-Z a-z 0-9 _ - = @ , . ;``) and
"Channel types" (prefixes ``private-``, ``private-encrypted-``, ``presence-``).

This module is pure: no I/O, no Pusher import, no AWS SDK (it is shared with the WebSocket side).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Pattern, Tuple

from chalicelib.errors import AppError, BadRequest, Forbidden, PayloadTooLarge, Unauthorized
from chalicelib.auth.principal import Principal

log = logging.getLogger("realtime.channels")

#: Pusher's channel-name charset (Pusher docs, "Channel naming conventions")
CHANNEL_CHARSET = r"A-Za-z0-9_\-=@,.;"
#: maximum channel name length, in characters (Pusher docs, "Channel naming conventions")
MAX_CHANNEL_NAME_LENGTH = 164
_CHANNEL_NAME_RE = re.compile(rf"[{CHANNEL_CHARSET}]+")
_DEFAULT_PARAM_RE = rf"[{CHANNEL_CHARSET}]+"
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]+))?\}")

PUBLIC = "public"
PRIVATE = "private"
PRIVATE_ENCRYPTED = "private-encrypted"
PRESENCE = "presence"
KINDS = (PUBLIC, PRIVATE, PRIVATE_ENCRYPTED, PRESENCE)

Predicate = Callable[..., Any]


@dataclass(frozen=True)
class ChannelGrant:
    """A principal's permission to join one channel.

    Attributes:
        channel_name: the validated channel name.
        kind: ``'public'``, ``'private'``, ``'private-encrypted'`` or ``'presence'``.
        params: the rule's named parameters taken from the name (``{"user_id": "alice"}``);
            empty for public channels.
        rule: the pattern of the rule that allowed it, or None for public channels.
    """

    channel_name: str
    kind: str
    params: Dict[str, str] = field(default_factory=dict)
    rule: Optional[str] = None


def validate_channel_name(name: Any) -> str:
    """Check a channel name against Pusher's naming rules.

    Args:
        name: the candidate (any type: it usually comes straight from a request).
    Returns:
        the name, unchanged.
    Raises:
        BadRequest: not a string, empty, longer than 164 characters, or with a character
            outside ``A-Z a-z 0-9 _ - = @ , . ;`` (Pusher docs, "Channel naming conventions").
            The message never repeats the name.
    """
    if not isinstance(name, str):
        raise BadRequest("channel_name must be a string")
    if not name:
        raise BadRequest("channel_name must not be empty")
    if len(name) > MAX_CHANNEL_NAME_LENGTH:
        raise BadRequest(f"channel_name must be at most {MAX_CHANNEL_NAME_LENGTH} characters")
    if not _CHANNEL_NAME_RE.fullmatch(name):
        raise BadRequest("channel_name may only contain A-Z a-z 0-9 _ - = @ , . ;")
    return name


def channel_kind(name: str) -> str:
    """The kind of a channel from its prefix: one of :data:`KINDS`.

    ``private-encrypted-`` is tested before ``private-`` (Pusher docs, "Channel types").
    """
    if name.startswith("private-encrypted-"):
        return PRIVATE_ENCRYPTED
    if name.startswith("private-"):
        return PRIVATE
    if name.startswith("presence-"):
        return PRESENCE
    return PUBLIC


@dataclass(frozen=True)
class Rule:
    """One compiled rule: a pattern, its kind, its regex and its predicate."""

    pattern: str
    kind: str
    regex: Pattern[str]
    params: Tuple[str, ...]
    predicate: Predicate

    def match(self, name: str) -> Optional[Dict[str, str]]:
        """The named parameters when ``name`` matches this rule's pattern, else None."""
        if channel_kind(name) != self.kind:
            return None
        found = self.regex.fullmatch(name)
        return found.groupdict() if found else None


def compile_pattern(pattern: str) -> Tuple[Pattern[str], Tuple[str, ...]]:
    """Compile ``private-user-{user_id}`` into an anchored regex with named groups.

    Returns:
        ``(regex, parameter names)``.
    Raises:
        ValueError: a malformed pattern (stray braces, a repeated or invalid parameter name,
            literal text outside the channel charset, an invalid parameter regex).
    """
    parts: List[str] = []
    names: List[str] = []
    position = 0
    for placeholder in _PLACEHOLDER_RE.finditer(pattern):
        literal = pattern[position:placeholder.start()]
        parts.append(_literal(pattern, literal))
        name, custom = placeholder.group(1), placeholder.group(2)
        if name in names:
            raise ValueError(f"channel pattern {pattern!r} repeats parameter {name!r}")
        names.append(name)
        if custom is not None:
            try:
                re.compile(custom)
            except re.error as exc:
                raise ValueError(f"channel pattern {pattern!r}: bad regex for {name!r}: {exc}") \
                    from None
        # names are validated against the charset before matching, so a custom regex cannot
        # widen what a parameter may contain
        parts.append(f"(?P<{name}>{custom if custom is not None else _DEFAULT_PARAM_RE})")
        position = placeholder.end()
    parts.append(_literal(pattern, pattern[position:]))
    return re.compile("".join(parts)), tuple(names)


def _literal(pattern: str, text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError(f"channel pattern {pattern!r} has a malformed placeholder")
    if text and not _CHANNEL_NAME_RE.fullmatch(text):
        raise ValueError(f"channel pattern {pattern!r} has characters outside the channel charset")
    return re.escape(text)


class ChannelRules:
    """An ordered set of channel rules, deny-by-default.

    The module keeps one instance, :data:`RULES`, used by :func:`authorize`; tests and other
    apps can build their own.
    """

    def __init__(self) -> None:
        self._rules: List[Rule] = []

    @property
    def rules(self) -> Tuple[Rule, ...]:
        """The registered rules, in evaluation order."""
        return tuple(self._rules)

    def rule(self, pattern: str, predicate: Predicate) -> Rule:
        """Register ``predicate`` for channels matching ``pattern``.

        Args:
            pattern: e.g. ``"private-user-{user_id}"``; must start with ``private-``,
                ``private-encrypted-`` or ``presence-`` (public channels need no rule).
            predicate: ``predicate(principal, **params) -> bool``.
        Returns:
            the compiled :class:`Rule`.
        Raises:
            ValueError: a malformed pattern or a public one; a non-callable predicate.
        """
        if not callable(predicate):
            raise ValueError("a channel rule needs a callable predicate")
        kind = channel_kind(pattern)
        if kind == PUBLIC:
            raise ValueError(
                f"channel pattern {pattern!r} is public: public channels are open to every "
                "authenticated principal and take no rule")
        regex, names = compile_pattern(pattern)
        compiled = Rule(pattern=pattern, kind=kind, regex=regex, params=names,
                        predicate=predicate)
        self._rules.append(compiled)
        return compiled

    def remove(self, compiled: Rule) -> None:
        """Unregister a rule returned by :meth:`rule` (tests, feature switches).

        Raises:
            ValueError: the rule is not registered here.
        """
        self._rules.remove(compiled)

    def channel(self, pattern: str) -> Callable[[Predicate], Predicate]:
        """Decorator form of :meth:`rule`; returns the function unchanged."""
        def register(predicate: Predicate) -> Predicate:
            self.rule(pattern, predicate)
            return predicate
        return register

    def authorize(self, principal: Optional[Principal], channel_name: Any) -> ChannelGrant:
        """Decide whether ``principal`` may join ``channel_name``.

        Args:
            principal: the verified caller.
            channel_name: the requested name (validated here).
        Returns:
            a :class:`ChannelGrant`.
        Raises:
            Unauthorized: no principal.
            BadRequest: an invalid channel name (see :func:`validate_channel_name`).
            Forbidden: a private, private-encrypted or presence channel no rule allows.
        """
        if principal is None:
            raise Unauthorized("channel authorization without a principal")
        name = validate_channel_name(channel_name)
        kind = channel_kind(name)
        if kind == PUBLIC:
            return ChannelGrant(channel_name=name, kind=kind)
        for candidate in self._rules:
            params = candidate.match(name)
            if params is None:
                continue
            try:
                allowed = candidate.predicate(principal, **params)
            except Exception:  # a buggy rule denies; the bug is logged, never answered
                log.exception("channel rule %r raised; denying", candidate.pattern)
                continue
            if allowed is True:
                return ChannelGrant(channel_name=name, kind=kind, params=params,
                                    rule=candidate.pattern)
        raise Forbidden(f"not allowed to join {kind} channel",
                        public_message="Not allowed to join this channel")


#: the service's rules (declared at the bottom of this module)
RULES = ChannelRules()


def rule(pattern: str, predicate: Predicate) -> Rule:
    """Register a rule on :data:`RULES`; see :meth:`ChannelRules.rule`."""
    return RULES.rule(pattern, predicate)


def channel(pattern: str) -> Callable[[Predicate], Predicate]:
    """Decorator registering a rule on :data:`RULES`; see :meth:`ChannelRules.channel`."""
    return RULES.channel(pattern)


def authorize(principal: Optional[Principal], channel_name: Any) -> ChannelGrant:
    """Decide with :data:`RULES`; see :meth:`ChannelRules.authorize` (BadRequest, Forbidden,
    Unauthorized)."""
    return RULES.authorize(principal, channel_name)


# --- client events ------------------------------------------------------------------------------

#: the prefix of every event a client may publish (Pusher docs, "Events": "Triggering client
#: events")
CLIENT_EVENT_PREFIX = "client-"


class ClientEventNameRefused(Forbidden):
    """An event published by a client that is not named ``client-…`` (403)."""

    code = "client_event_name"


class ClientEventChannelRefused(Forbidden):
    """A client event on a channel that takes none: only ``private-`` and ``presence-``
    channels do (403)."""

    code = "client_event_channel"


class NotSubscribed(Forbidden):
    """A client event on a channel the connection is not subscribed to (403)."""

    code = "not_subscribed"


class ClientEventRateLimited(AppError):
    """More client events than a connection may publish per second (429)."""

    status = 429
    code = "client_event_rate_limited"
    public_message = "Too many client events"
    expose_message = True


class ClientEventTooLarge(PayloadTooLarge):
    """A client event whose ``data`` is over ``CLIENT_EVENT_MAX_BYTES`` (413)."""

    code = "client_event_too_large"


def client_event_size(data: Any) -> int:
    """The size of a client event's ``data`` as Pusher and soketi count it: the bytes of its
    UTF-8 text, a string as it is, anything else as compact JSON (soketi
    ``Utils.dataToBytes``; Pusher docs, "What is the message size limit": the bytes of the data
    content).

    Args:
        data: the event's data (any JSON value).
    Returns:
        bytes (an int >= 0; ``None`` counts 4, ``null``).
    Raises:
        TypeError, ValueError: ``data`` is not JSON-serializable (never for parsed frames).
    """
    text = data if isinstance(data, str) else json.dumps(
        data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return len(text.encode("utf-8", "surrogatepass"))


def check_client_event_size(data: Any, limit: int) -> int:
    """Refuse a client event whose ``data`` is over ``limit`` bytes (:func:`client_event_size`);
    Pusher's limit is 10 KB per event (Pusher docs, "What is the message size limit when
    publishing an event in Channels?"), soketi answers ``pusher:error`` 4301 "The event data
    should be less than N KB.".

    Args:
        data: the event's data.
        limit: ``CLIENT_EVENT_MAX_BYTES``.
    Returns:
        the size, bytes.
    Raises:
        ClientEventTooLarge: over ``limit``; the message names the limit, not the data.
    """
    size = client_event_size(data)
    if size > limit:
        raise ClientEventTooLarge(f"The event data should be at most {limit} bytes; "
                                  f"it is {size} bytes")
    return size


def is_client_event(event_name: Any) -> bool:
    """True for an event name starting with ``client-``."""
    return isinstance(event_name, str) and event_name.startswith(CLIENT_EVENT_PREFIX)


def check_client_event(channel_name: Any, event_name: str,
                       subscribed: Iterable[str]) -> str:
    """Judge an event a client publishes on a channel, by Pusher's client-event rules (Pusher
    docs, "Events" -> "Triggering client events"; "Encrypted channels": no client events):

    * the event name starts with ``client-``;
    * the channel is a ``private-`` or ``presence-`` channel (not public, not
      ``private-encrypted-``);
    * the connection is subscribed to it.

    Not judged here (the caller's duty, since they need I/O): the per-connection rate limit,
    and leaving the sender out of the fan-out. On presence channels the delivered event
    carries the sender's user id.

    Args:
        channel_name: the target channel (validated here).
        event_name: the event name (already checked as a 1-200 character string).
        subscribed: the channel names the sending connection is subscribed to.
    Returns:
        the channel name.
    Raises:
        BadRequest: an invalid channel name.
        ClientEventNameRefused: the name does not start with ``client-``.
        ClientEventChannelRefused: a public or private-encrypted channel.
        NotSubscribed: the connection is not subscribed to the channel.
    """
    name = validate_channel_name(channel_name)
    if not is_client_event(event_name):
        raise ClientEventNameRefused(
            f'events published by clients must be named "{CLIENT_EVENT_PREFIX}…"')
    if channel_kind(name) not in (PRIVATE, PRESENCE):
        raise ClientEventChannelRefused(
            "client events are only allowed on private- and presence- channels")
    if name not in set(subscribed):
        raise NotSubscribed("subscribe to the channel before publishing client events on it")
    return name


# --- the service's rules ------------------------------------------------------------------------

@channel("private-user-{user_id}")
def own_user_channel(principal: Principal, user_id: str) -> bool:
    """A user's own private channel (``user_id``: :attr:`Principal.user_id`, which is unique
    across issuers)."""
    return user_id == principal.user_id


@channel("private-encrypted-user-{user_id}")
def own_encrypted_user_channel(principal: Principal, user_id: str) -> bool:
    """A user's own end-to-end encrypted channel."""
    return user_id == principal.user_id


@channel("presence-{room}")
def any_presence_room(principal: Principal, room: str) -> bool:
    """Presence rooms are open to every authenticated user."""
    return True


_CACHE_RE = re.compile(r"(?:private-encrypted-|private-|presence-)?cache-")


def is_cache_channel(name: Any) -> bool:
    """True for a cache channel: ``cache-…``, ``private-cache-…``, ``presence-cache-…`` or
    ``private-encrypted-cache-…`` (Pusher docs, "Cache channels"); its kind is still given by
    its first prefix."""
    return isinstance(name, str) and _CACHE_RE.match(name) is not None
