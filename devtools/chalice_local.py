"""``chalice local`` as the local stack runs it: the same CLI, with two differences from API
Gateway fixed (dev-only code; never deployed).

* **No secrets in the access log.** ``chalice local``'s request handler is
  ``http.server``'s, which logs every request line with its query string: the Pusher HTTP
  API's ``auth_signature``, the JWT of a JSONP ``/pusher/auth?token=…``. Every line it logs goes
  through :func:`redact` first (the request line, and the raw line ``send_error`` quotes).
* **A ``;`` in a path is part of the path, as on API Gateway.** ``chalice local`` matches routes
  with ``urllib.parse.urlparse``, which cuts ``;params`` off the last path segment (RFC 2396's
  parameters), so ``GET /apps/1/channels/c;x`` (the Node ``pusher`` library sends ``;``
  unescaped) answered for channel ``c``. API Gateway REST APIs treat ``;`` as a path character
  (``pathParameters.channel_name`` is ``c;x``; only a *query string*'s ``;`` splits data: API
  Gateway developer guide, "Amazon API Gateway important notes for REST APIs"; ``;`` is a
  Pusher channel character). Routes are matched here with ``urllib.parse.urlsplit``, which
  has no parameters.

Run as ``python -m devtools.chalice_local --project-dir … local --host 127.0.0.1 --port …
--stage dev --no-autoreload`` (the arguments of ``chalice``); :mod:`devtools.stack` does.
"""
from __future__ import annotations

import re
import sys
from typing import List, Optional

#: query parameters whose values never reach a log line: the Pusher HTTP API's signature, the
#: JWT a browser puts in a query (JSONP ``/pusher/auth``, a WebSocket ``$connect``: the names
#: :data:`chalicelib.auth.identity.QUERY_TOKEN_PARAMETERS` reads) and the usual credential
#: names; matched in any case
SENSITIVE_PARAMETERS = ("auth_signature", "token", "auth", "authorization", "access_token",
                        "id_token", "jwt", "signature", "secret", "password", "api_key")
REDACTED = "<redacted>"
_SENSITIVE = re.compile(
    r"(?P<key>(?<![\w%%.-])(?:%s)=)(?P<value>[^&;\s\"'\\]*)"
    % "|".join(re.escape(name) for name in SENSITIVE_PARAMETERS), re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the value of every :data:`SENSITIVE_PARAMETERS` query parameter replaced
    by ``<redacted>`` (``…?auth_key=k&auth_signature=<redacted>&…``). Other parameters stay:
    they are what a developer reads the log for.

    Args:
        text: a log line (a request line, or a message quoting one).
    Returns:
        the line, redacted; unchanged when it holds no such parameter.
    """
    return _SENSITIVE.sub(lambda m: m.group("key") + (REDACTED if m.group("value") else ""),
                          text)


def install() -> None:
    """Patch the ``chalice.local`` of this process: its request handler logs through
    :func:`redact`, and its route matcher keeps ``;`` in the path (see the module docstring).
    Idempotent."""
    import urllib.parse

    from chalice import local

    local.urlparse = urllib.parse.urlsplit  # RouteMatcher.match_route's only use of it
    handler = local.ChaliceRequestHandler
    if getattr(handler, "_redacting", False):
        return
    original = handler.log_message

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        original(self, "%s", redact(format % args))

    handler.log_message = log_message
    handler._redacting = True


def main(argv: Optional[List[str]] = None) -> int:
    """``chalice`` with :func:`install` applied; ``argv`` as for the ``chalice`` command."""
    from chalice.cli import main as chalice_main

    install()
    sys.argv = ["chalice", *(sys.argv[1:] if argv is None else argv)]
    return chalice_main()


if __name__ == "__main__":
    sys.exit(main())
